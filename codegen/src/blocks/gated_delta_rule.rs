//! Gated delta rule, one decode step, split over (v-head, value-column slice)
//! across every warp of the grid. Each column of a head's state S[key, :] is
//! independent: S_col = a S_col; u = beta (v - S_col.k); S_col += k u;
//! o = S_col.q. A warp owns GDN_COLS columns; its lanes split the keys into
//! GDN_KEY_GROUPS interleaved groups and reduce the two dot products with
//! shuffles.

pub const GATED_DELTA_RULE_STEP: &str = r#"// ---- gated_delta_rule_step ----
// qkv: post-conv activations [q (KEY_DIM) | k (KEY_DIM) | v (VALUE_DIM)];
// state: this layer's [GDN_HV][GDN_DK][GDN_DV] f32 (HF layout S[h, key, value]).
// qk_s: 2*GDN_DK floats of this warp's shared memory. ready: the in_proj
// rows' per-head counters (read only with GDN_HEAD_COUNTERS, see gdn_layer).
// One (v-head h, value columns col0..) item of one warp: updates its state
// columns and returns o for this lane's column (every key group of the lane's
// column holds it).
// lane = kg * GDN_COLS + col.
__device__ __forceinline__ float gated_delta_rule_item(int h, int col0, int lane, int kg, int col, const float* qkv,
                                                       const float* beta_buf, const float* g_buf, float* state,
                                                       float* qk_s, const u32* ready) {
    constexpr int KPL = GDN_DK / GDN_KEY_GROUPS;  // state values per lane
    const int kh = h / GDN_V_PER_K;  // v-head h uses k-head h / r (interleaved repeat)
    const float* q = qkv + kh * GDN_DK;
    const float* k = qkv + KEY_DIM + kh * GDN_DK;
    // The state column loads first: it does not depend on this token, so
    // the loads overlap the q/k normalisation below.
    float* S = state + (size_t)h * GDN_DK * GDN_DV + col0 + col;
    float s[KPL];
#pragma unroll
    for (int t = 0; t < KPL; ++t) s[t] = ld_shared_f32(S + (size_t)(kg + GDN_KEY_GROUPS * t) * GDN_DV);
    if constexpr (GDN_HEAD_COUNTERS)
        wait_ready(ready + kh * READY_STRIDE, GDN_READY_K, ready + (GDN_HK + h) * READY_STRIDE, GDN_READY_V);
    const float beta = ld_shared_f32(beta_buf + h);
    const float g = ld_shared_f32(g_buf + h);
    const float v = ld_shared_f32(qkv + 2 * KEY_DIM + h * GDN_DV + col0 + col);
    // L2-normalise q and k (x * rsqrt(sum x^2 + 1e-6)), scale q by dk^-1/2.
    // Every q/k load is issued before the first store to shared memory
    // (a load after a store through a generic pointer waits for it).
    constexpr int QKL = (GDN_DK + 31) / 32;  // q (and k) values per lane
    float qa[QKL], ka[QKL];
#pragma unroll
    for (int t = 0; t < QKL; ++t) {
        const int i = lane + 32 * t;
        qa[t] = i < GDN_DK ? ld_shared_f32(q + i) : 0.0f;
        ka[t] = i < GDN_DK ? ld_shared_f32(k + i) : 0.0f;
    }
    float sq = 0.0f, sk = 0.0f;
#pragma unroll
    for (int t = 0; t < QKL; ++t) {
        const int i = lane + 32 * t;
        if (i < GDN_DK) {
            qk_s[i] = qa[t];
            qk_s[GDN_DK + i] = ka[t];
        }
        sq = fmaf(qa[t], qa[t], sq);
        sk = fmaf(ka[t], ka[t], sk);
    }
    const float q_scale = rsqrtf(warp_sum(sq) + 1e-6f) * GDN_Q_SCALE;
    const float k_scale = rsqrtf(warp_sum(sk) + 1e-6f);
    __syncwarp();
    const float decay = expf(g);
    float kd = 0.0f;
#pragma unroll
    for (int t = 0; t < KPL; ++t) {
        const int i = kg + GDN_KEY_GROUPS * t;
        s[t] *= decay;
        kd = fmaf(s[t], qk_s[GDN_DK + i] * k_scale, kd);
    }
#pragma unroll
    for (int o = GDN_COLS; o < 32; o <<= 1) kd += __shfl_xor_sync(FULL_MASK, kd, o);
    const float u = beta * (v - kd);
    float od = 0.0f;
#pragma unroll
    for (int t = 0; t < KPL; ++t) {
        const int i = kg + GDN_KEY_GROUPS * t;
        s[t] = fmaf(qk_s[GDN_DK + i] * k_scale, u, s[t]);
        od = fmaf(s[t], qk_s[i] * q_scale, od);
        S[(size_t)i * GDN_DV] = s[t];
    }
#pragma unroll
    for (int o = GDN_COLS; o < 32; o <<= 1) od += __shfl_xor_sync(FULL_MASK, od, o);
    return od;
}

__device__ void gated_delta_rule_step(const float* qkv, const float* beta_buf, const float* g_buf,
                                      float* state, float* o_buf, float* qk_s, const u32* ready) {
    constexpr int ITEMS_PER_HEAD = GDN_DV / GDN_COLS;
    constexpr int ITEMS = GDN_HV * ITEMS_PER_HEAD;
    const int lane = threadIdx.x & 31;
    const int kg = lane / GDN_COLS, col = lane % GDN_COLS;
    // Items round-robin over blocks first, so every SM shares the state traffic;
    // the last warps of each block take them first (they have the fewest in_proj items).
    for (int item = (WARPS - 1 - (threadIdx.x >> 5)) * GRID_BLOCKS + blockIdx.x; item < ITEMS; item += GRID_BLOCKS * WARPS) {
        const int h = item / ITEMS_PER_HEAD;
        const int col0 = (item % ITEMS_PER_HEAD) * GDN_COLS;
        const float od = gated_delta_rule_item(h, col0, lane, kg, col, qkv, beta_buf, g_buf, state, qk_s, ready);
        if (kg == 0) o_buf[h * GDN_DV + col0 + col] = od;
        __syncwarp();
    }
}

// Gated RMSNorm of every GDN head into shared memory (the out_proj input),
// recomputed by each block: xs[h*dv + j] = w[j] * o/rms(o_h) * silu(z) (w not zero-centred).
// BATCHED (PROLOGUE_BATCHED, sm_90): every load of the warp's heads (o, z)
// is issued before any is used, one round trip to L2 for the prologue.
// Otherwise one head at a time.
template <bool BATCHED>
__device__ void gated_rms_norm_to_smem(float* xs, const float* o_buf, const float* z_buf, const float* w) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if constexpr (BATCHED) {
        constexpr int HPW = (GDN_HV + WARPS - 1) / WARPS;  // heads per warp
        constexpr int EPL = (GDN_DV + 31) / 32;            // values per lane of a head
        float o[HPW][EPL], z[HPW][EPL];
#pragma unroll
        for (int t = 0; t < HPW; ++t) {
            const int h = warp + t * WARPS;
#pragma unroll
            for (int e = 0; e < EPL; ++e) {
                const int j = lane + 32 * e;
                const bool ok = h < GDN_HV && j < GDN_DV;
                o[t][e] = ok ? ld_shared_f32(o_buf + h * GDN_DV + j) : 0.0f;
                z[t][e] = ok ? ld_shared_f32(z_buf + h * GDN_DV + j) : 0.0f;
            }
        }
#pragma unroll
        for (int t = 0; t < HPW; ++t) {
            const int h = warp + t * WARPS;
            if (h >= GDN_HV) break;  // warp-uniform
            float ss = 0.0f;
#pragma unroll
            for (int e = 0; e < EPL; ++e) ss = fmaf(o[t][e], o[t][e], ss);
            const float inv = rsqrtf(warp_sum(ss) / (float)GDN_DV + RMS_EPS);
#pragma unroll
            for (int e = 0; e < EPL; ++e) {
                const int j = lane + 32 * e;
                if (j < GDN_DV) xs[h * GDN_DV + j] = w[j] * (o[t][e] * inv) * silu_f(z[t][e]);
            }
        }
    } else {
        for (int h = warp; h < GDN_HV; h += WARPS) {
            float ss = 0.0f;
            for (int j = lane; j < GDN_DV; j += 32) {
                const float o = ld_shared_f32(o_buf + h * GDN_DV + j);
                xs[h * GDN_DV + j] = o;
                ss = fmaf(o, o, ss);
            }
            const float inv = rsqrtf(warp_sum(ss) / (float)GDN_DV + RMS_EPS);
            for (int j = lane; j < GDN_DV; j += 32)
                xs[h * GDN_DV + j] = w[j] * (xs[h * GDN_DV + j] * inv) * silu_f(ld_shared_f32(z_buf + h * GDN_DV + j));
        }
    }
    __syncthreads();
}
"#;

/// `decode.gdn_out = with_recurrence`: the recurrence items also apply the
/// gated RMSNorm and the out_proj. A head's norm needs the sum of squares of
/// all its columns, which other items compute: each item adds its share to
/// its head's sum, counts itself in, and waits until every item of the head
/// has (the schedule guarantees all items are resident at once: at most one
/// per warp). Its columns then multiply its rows of a transposed out_proj
/// copy, staged in shared memory with `cp.async` at the start of the item so
/// the load overlaps the recurrence and the wait, and the products go to the
/// residual with float reductions.
pub const GATED_DELTA_RULE_OUT_STEP: &str = r#"// ---- gated_delta_rule_out_step: recurrence, gated norm and out_proj in one phase ----
// heads: per v-head [items counted in, sum of squares (f32 bits)], READY_STRIDE
// words apart, zero at entry (reset_head_sums after the phase's barrier).
// out_t: [VALUE_DIM][HIDDEN] bf16 (out_proj transposed). resid += the out_proj
// output (with MLP_FUSED also its mid-layer copy resid[HIDDEN..]).
__device__ void gated_delta_rule_out_step(const float* qkv, const float* beta_buf, const float* g_buf, float* state,
                                          const float* z_buf, const float* norm_w, const u16* __restrict__ out_t,
                                          float* resid, float* qk_s, u32* heads) {
    constexpr int ITEMS_PER_HEAD = GDN_DV / GDN_COLS;
    constexpr int ITEMS = GDN_HV * ITEMS_PER_HEAD;
    constexpr int OUT_CHUNKS = HIDDEN / 8;                // 16-byte chunks of an out_proj row
    constexpr int OUT_ITERS = (OUT_CHUNKS + 31) / 32;
    static_assert(OUT_ITERS * GDN_COLS * 512 <= GDN_OUT_STAGE_WARP_BYTES, "a stage holds one item's rows");
    const int lane = threadIdx.x & 31;
    const int kg = lane / GDN_COLS, col = lane % GDN_COLS;
    const int rw = WARPS - 1 - (threadIdx.x >> 5);  // the last warps take the items, as in gated_delta_rule_step
    const int item = rw * GRID_BLOCKS + blockIdx.x;
    if (rw >= GDN_REC_WARPS || item >= ITEMS) return;  // one item per warp at most (schedule validation)
    const int h = item / ITEMS_PER_HEAD;
    const int col0 = (item % ITEMS_PER_HEAD) * GDN_COLS;
    extern __shared__ __align__(16) unsigned char go_dynamic_smem[];  // the kernel's `smem`
    uint4* const stage = reinterpret_cast<uint4*>(go_dynamic_smem + GDN_OUT_STAGE_OFFSET) + rw * (GDN_OUT_STAGE_WARP_BYTES / 16);
#pragma unroll
    for (int it = 0; it < OUT_ITERS; ++it) {
        const int c = it * 32 + lane;
        if (OUT_CHUNKS % 32 == 0 || c < OUT_CHUNKS) {
#pragma unroll
            for (int j = 0; j < GDN_COLS; ++j)
                cp_async16(stage + (it * GDN_COLS + j) * 32 + lane,
                           reinterpret_cast<const uint4*>(out_t + (size_t)(h * GDN_DV + col0 + j) * HIDDEN) + c);
        }
    }
    cp_async_commit();
    const float z = ld_shared_f32(z_buf + h * GDN_DV + col0 + col);
    const float w = norm_w[col0 + col];
    const float od = gated_delta_rule_item(h, col0, lane, kg, col, qkv, beta_buf, g_buf, state, qk_s, nullptr);
    // The head's sum of squares: this item's columns (key group 0 holds each once).
    const float sq = warp_sum(kg == 0 ? od * od : 0.0f);
    u32* const head = heads + h * READY_STRIDE;
    float ss = 0.0f;
    if (lane == 0) {
        atomicAdd(reinterpret_cast<float*>(head + 1), sq);
        __threadfence();  // the share before the count
        atomicAdd(head, 1u);
        while (ld_acquire_u32(head) < (u32)ITEMS_PER_HEAD) { }
        ss = __ldcg(reinterpret_cast<const float*>(head + 1));
    }
    ss = __shfl_sync(FULL_MASK, ss, 0);
    const float inv = rsqrtf(ss / (float)GDN_DV + RMS_EPS);
    const float y = w * (od * inv) * silu_f(z);
    float yc[GDN_COLS];  // the item's normed columns, on every lane
#pragma unroll
    for (int j = 0; j < GDN_COLS; ++j) yc[j] = __shfl_sync(FULL_MASK, y, j);
    cp_async_wait_all();  // this lane's stage chunks
#pragma unroll
    for (int it = 0; it < OUT_ITERS; ++it) {
        const int c = it * 32 + lane;
        if (OUT_CHUNKS % 32 == 0 || c < OUT_CHUNKS) {
            float o[8];
            combine_staged_rows<GDN_COLS>(stage, it, yc, o);
            const float4 lo = make_float4(o[0], o[1], o[2], o[3]), hi = make_float4(o[4], o[5], o[6], o[7]);
            red_add_f32x4(resid + 8 * c, lo);
            red_add_f32x4(resid + 8 * c + 4, hi);
            if constexpr (MLP_FUSED) {
                red_add_f32x4(resid + HIDDEN + 8 * c, lo);
                red_add_f32x4(resid + HIDDEN + 8 * c + 4, hi);
            }
        }
    }
}

// After the barrier that ends the phase: the last block zeroes the head sums
// for the next GDN layer (the phases in between do not touch them).
__device__ __forceinline__ void reset_head_sums(u32* heads) {
    if (blockIdx.x == GRID_BLOCKS - 1)
        for (int i = threadIdx.x; i < GDN_HV; i += THREADS) {
            heads[i * READY_STRIDE] = 0u;
            heads[i * READY_STRIDE + 1] = 0u;
        }
}
"#;
