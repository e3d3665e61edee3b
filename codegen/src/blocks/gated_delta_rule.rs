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
__device__ void gated_delta_rule_step(const float* qkv, const float* beta_buf, const float* g_buf,
                                      float* state, float* o_buf, float* qk_s, const u32* ready) {
    constexpr int ITEMS_PER_HEAD = GDN_DV / GDN_COLS;
    constexpr int ITEMS = GDN_HV * ITEMS_PER_HEAD;
    constexpr int KPL = GDN_DK / GDN_KEY_GROUPS;  // state values per lane
    const int lane = threadIdx.x & 31;
    const int kg = lane / GDN_COLS, col = lane % GDN_COLS;
    // Items round-robin over blocks first, so every SM shares the state traffic;
    // the last warps of each block take them first (they have the fewest in_proj items).
    for (int item = (WARPS - 1 - (threadIdx.x >> 5)) * GRID_BLOCKS + blockIdx.x; item < ITEMS; item += GRID_BLOCKS * WARPS) {
        const int h = item / ITEMS_PER_HEAD;
        const int col0 = (item % ITEMS_PER_HEAD) * GDN_COLS;
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
