//! Partial NeoX RoPE on a head held 32 lanes x ATT_EPL values: dims
//! [0, ROT_DIM) rotate in pairs (i, i + ROT_DIM/2); the partner lives
//! ROPE_LANE_OFS lanes away.

pub const ROPE: &str = r#"// ---- rope (partial, NeoX pairs) ----
// v[e] is dim lane*ATT_EPL + e of one head. Angle of pair i: pos * theta^(-2i/ROT_DIM),
// computed in f32 like HF's inv_freq.
// Each lane evaluates the angle of its own pairs (i = lane + 32 j) once, and
// the lanes that rotate dims fetch theirs with shuffles: one powf and one
// sincosf per lane instead of ATT_EPL of each in a row (the attention phase
// waits on this chain). Values are bit-identical to evaluating per dim.
constexpr int ROPE_PAIRS = ROT_DIM / 2;
constexpr int ROPE_PAIRS_PER_LANE = (ROPE_PAIRS + 31) / 32;
struct RopeAngles {
    float c[ATT_EPL], s[ATT_EPL];  // cos and sin of this lane's dims (identity past ROT_DIM)
};
// Every lane of the warp must call this (shuffles).
__device__ __forceinline__ RopeAngles rope_angles(u32 pos) {
    const int lane = threadIdx.x & 31;
    float pc[ROPE_PAIRS_PER_LANE], ps[ROPE_PAIRS_PER_LANE];
#pragma unroll
    for (int j = 0; j < ROPE_PAIRS_PER_LANE; ++j) {
        const int i = lane + 32 * j;
        const float inv_freq = 1.0f / powf(ROPE_THETA, (float)(2 * i) / (float)ROT_DIM);
        sincosf((float)pos * inv_freq, &ps[j], &pc[j]);
    }
    RopeAngles a;
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) {
        const int d = lane * ATT_EPL + e;
        const int i = d % ROPE_PAIRS;  // meaningful for d < ROT_DIM only
        a.c[e] = 1.0f;
        a.s[e] = 0.0f;
#pragma unroll
        for (int j = 0; j < ROPE_PAIRS_PER_LANE; ++j) {
            const float c = __shfl_sync(FULL_MASK, pc[j], i & 31);
            const float s = __shfl_sync(FULL_MASK, ps[j], i & 31);
            if (d < ROT_DIM && i / 32 == j) { a.c[e] = c; a.s[e] = s; }
        }
    }
    return a;
}
__device__ __forceinline__ void rope_apply(float* v, const RopeAngles& a) {
    const int lane = threadIdx.x & 31;
    float partner[ATT_EPL];
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) partner[e] = __shfl_xor_sync(FULL_MASK, v[e], ROPE_LANE_OFS);
    if (lane * ATT_EPL < ROT_DIM) {
        const bool first_half = lane * ATT_EPL < ROT_DIM / 2;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) {
            // x_rot = x*cos + rotate_half(x)*sin, rotate_half([a, b]) = [-b, a]
            v[e] = first_half ? v[e] * a.c[e] - partner[e] * a.s[e] : v[e] * a.c[e] + partner[e] * a.s[e];
        }
    }
}
__device__ __forceinline__ void rope_partial(float* v, u32 pos) { rope_apply(v, rope_angles(pos)); }
"#;
