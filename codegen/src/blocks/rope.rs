//! Partial NeoX RoPE on a head held 32 lanes x ATT_EPL values: dims
//! [0, ROT_DIM) rotate in pairs (i, i + ROT_DIM/2); the partner lives
//! ROPE_LANE_OFS lanes away.

pub const ROPE: &str = r#"// ---- rope (partial, NeoX pairs) ----
// v[e] is dim lane*ATT_EPL + e of one head. Angle of pair i: pos * theta^(-2i/ROT_DIM),
// computed in f32 like HF's inv_freq.
__device__ __forceinline__ void rope_partial(float* v, u32 pos) {
    const int lane = threadIdx.x & 31;
    float partner[ATT_EPL];
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) partner[e] = __shfl_xor_sync(FULL_MASK, v[e], ROPE_LANE_OFS);
    if (lane * ATT_EPL < ROT_DIM) {
        const bool first_half = lane * ATT_EPL < ROT_DIM / 2;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) {
            const int d = lane * ATT_EPL + e;
            const int i = first_half ? d : d - ROT_DIM / 2;
            const float inv_freq = 1.0f / powf(ROPE_THETA, (float)(2 * i) / (float)ROT_DIM);
            float s, c;
            sincosf((float)pos * inv_freq, &s, &c);
            // x_rot = x*cos + rotate_half(x)*sin, rotate_half([a, b]) = [-b, a]
            v[e] = first_half ? v[e] * c - partner[e] * s : v[e] * c + partner[e] * s;
        }
    }
}
"#;
