//! Decode attention split over (query head, KV chunk) work items, one warp
//! each, over every warp of the grid. Each item normalises and rotates its
//! own copy of the new q/k (cheap) so no extra sync is needed before the
//! attention; the item whose chunk holds the current position appends K/V
//! (one writer per kv head) and uses the new k/v from registers. The
//! last-arriving item of a head merges the chunk partials (flash-decoding
//! log-sum-exp merge) and applies the sigmoid output gate.

/// bf16 vector loads/stores and the per-head RMSNorm (shared with the tree kernels).
pub const HEAD_HELPERS: &str = r#"// ---- head helpers: bf16 vectors, per-head RMSNorm ----
template <int N>
__device__ __forceinline__ void load_bf16_vec(const u16* p, float* o) {
    if constexpr (N == 8) {
        unpack_bf16x8(__ldcg(reinterpret_cast<const uint4*>(p)), o);
    } else if constexpr (N == 4) {
        const uint2 v = __ldcg(reinterpret_cast<const uint2*>(p));
        o[0] = __uint_as_float(v.x << 16); o[1] = __uint_as_float(v.x & 0xffff0000u);
        o[2] = __uint_as_float(v.y << 16); o[3] = __uint_as_float(v.y & 0xffff0000u);
    } else {
        const u32 v = __ldcg(reinterpret_cast<const unsigned int*>(p));
        o[0] = __uint_as_float(v << 16); o[1] = __uint_as_float(v & 0xffff0000u);
    }
}
// N bf16 as N/2 packed words (half the registers of floats).
template <int N>
__device__ __forceinline__ void load_bf16_packed(const u16* p, u32* o) {
    if constexpr (N == 8) {
        const uint4 v = __ldcg(reinterpret_cast<const uint4*>(p));
        o[0] = v.x; o[1] = v.y; o[2] = v.z; o[3] = v.w;
    } else if constexpr (N == 4) {
        const uint2 v = __ldcg(reinterpret_cast<const uint2*>(p));
        o[0] = v.x; o[1] = v.y;
    } else {
        o[0] = __ldcg(reinterpret_cast<const unsigned int*>(p));
    }
}
__device__ __forceinline__ float bf16_lo(u32 w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(u32 w) { return __uint_as_float(w & 0xffff0000u); }
template <int N>
__device__ __forceinline__ void store_bf16_vec(u16* p, const float* v) {
#pragma unroll
    for (int e = 0; e < N; e += 2) *reinterpret_cast<u32*>(p + e) = pack_bf16x2(v[e], v[e + 1]);
}

// Zero-centred RMSNorm of one head held ATT_EPL values per lane.
__device__ __forceinline__ void head_rms_norm(float* v, const float* w) {
    const int lane = threadIdx.x & 31;
    float ss = 0.0f;
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) ss = fmaf(v[e], v[e], ss);
    const float inv = rsqrtf(warp_sum(ss) / (float)ATT_HD + RMS_EPS);
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) v[e] = v[e] * inv * (1.0f + w[lane * ATT_EPL + e]);
}

"#;

pub const DECODE_ATTENTION: &str = r#"// ---- decode_attention: (kv-head, KV chunk) items, merge by the last arrival ----
// qg: q_proj output, per head [query (ATT_HD) | gate (ATT_HD)]; kraw/vraw: k/v_proj outputs.
// k_cache/v_cache: this layer's [ATT_HKV][MAX_CTX][ATT_HD] bf16. Items are (query head,
// chunk): one query per warp keeps registers low; the GQA group re-reads K/V from L2.
__device__ void decode_attention(const float* qg, const float* kraw, const float* vraw,
                                 const float* q_norm_w, const float* k_norm_w,
                                 u16* k_cache, u16* v_cache, float* part_acc, float* part_ml,
                                 u32* merge_counters, float* attn_out, u32 pos) {
    const int lane = threadIdx.x & 31;
    const int gwarp = blockIdx.x * WARPS + (threadIdx.x >> 5);
    const int n_chunks = (int)(pos / ATT_CHUNK) + 1;
    const int n_items = ATT_H * n_chunks;
    const int d0 = lane * ATT_EPL;
    for (int item = gwarp; item < n_items; item += GRID_BLOCKS * WARPS) {
        const int hq = item / n_chunks, chunk = item % n_chunks;
        const int kvh = hq / ATT_G;
        const bool holds_pos = chunk == n_chunks - 1;
        // The new token's k and v (k_norm, RoPE, rounded to the cache's bf16),
        // needed only by the chunk that holds `pos`.
        u32 kn_p[ATT_EPL / 2], vn_p[ATT_EPL / 2];
        if (holds_pos) {
            float kn[ATT_EPL], vn[ATT_EPL];
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) {
                kn[e] = ld_shared_f32(kraw + kvh * ATT_HD + d0 + e);
                vn[e] = ld_shared_f32(vraw + kvh * ATT_HD + d0 + e);
            }
            head_rms_norm(kn, k_norm_w);
            rope_partial(kn, pos);
#pragma unroll
            for (int e = 0; e < ATT_EPL / 2; ++e) {
                kn_p[e] = pack_bf16x2(kn[2 * e], kn[2 * e + 1]);
                vn_p[e] = pack_bf16x2(vn[2 * e], vn[2 * e + 1]);
            }
            if (hq % ATT_G == 0) {  // one writer per kv head appends to the cache
                u32* kd = reinterpret_cast<u32*>(k_cache + ((size_t)kvh * MAX_CTX + pos) * ATT_HD + d0);
                u32* vd = reinterpret_cast<u32*>(v_cache + ((size_t)kvh * MAX_CTX + pos) * ATT_HD + d0);
#pragma unroll
                for (int e = 0; e < ATT_EPL / 2; ++e) { kd[e] = kn_p[e]; vd[e] = vn_p[e]; }
            }
        } else {
#pragma unroll
            for (int e = 0; e < ATT_EPL / 2; ++e) { kn_p[e] = 0u; vn_p[e] = 0u; }
        }
        // This head's query: q_norm, RoPE, pre-scaled by 1/sqrt(head_dim).
        float q[ATT_EPL];
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) q[e] = ld_shared_f32(qg + hq * 2 * ATT_HD + d0 + e);
        head_rms_norm(q, q_norm_w);
        rope_partial(q, pos);
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) q[e] *= ATT_SCALE;
        const u16* kc = k_cache + (size_t)kvh * MAX_CTX * ATT_HD + d0;
        const u16* vc = v_cache + (size_t)kvh * MAX_CTX * ATT_HD + d0;
        const int p_begin = chunk * ATT_CHUNK;
        const int p_end = min(p_begin + ATT_CHUNK, (int)pos + 1);
        float m = NEG_INF, l = 0.0f, acc[ATT_EPL];
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) acc[e] = 0.0f;
        for (int p0 = p_begin; p0 < p_end; p0 += ATT_BATCH) {
            // Issue the batch's loads first so they are in flight together.
            u32 kb[ATT_BATCH][ATT_EPL / 2], vb[ATT_BATCH][ATT_EPL / 2];
#pragma unroll
            for (int b = 0; b < ATT_BATCH; ++b) {
                const int p = p0 + b;
                if (p < (int)pos) {
                    load_bf16_packed<ATT_EPL>(kc + (size_t)p * ATT_HD, kb[b]);
                    load_bf16_packed<ATT_EPL>(vc + (size_t)p * ATT_HD, vb[b]);
                } else {
#pragma unroll
                    for (int e = 0; e < ATT_EPL / 2; ++e) { kb[b][e] = kn_p[e]; vb[b][e] = vn_p[e]; }
                }
            }
#pragma unroll
            for (int b = 0; b < ATT_BATCH; ++b) {
                if (p0 + b >= p_end) break;
                float s = 0.0f;
#pragma unroll
                for (int e = 0; e < ATT_EPL / 2; ++e) {
                    s = fmaf(q[2 * e], bf16_lo(kb[b][e]), s);
                    s = fmaf(q[2 * e + 1], bf16_hi(kb[b][e]), s);
                }
                s = warp_sum(s);
                const float m_new = fmaxf(m, s);
                const float corr = expf(m - m_new);
                const float pw = expf(s - m_new);
                l = l * corr + pw;
#pragma unroll
                for (int e = 0; e < ATT_EPL / 2; ++e) {
                    acc[2 * e] = fmaf(acc[2 * e], corr, pw * bf16_lo(vb[b][e]));
                    acc[2 * e + 1] = fmaf(acc[2 * e + 1], corr, pw * bf16_hi(vb[b][e]));
                }
                m = m_new;
            }
        }
        float* pa = part_acc + ((size_t)hq * ATT_MAX_CHUNKS + chunk) * ATT_HD + d0;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) pa[e] = acc[e];
        if (lane == 0) {
            part_ml[((size_t)hq * ATT_MAX_CHUNKS + chunk) * 2 + 0] = m;
            part_ml[((size_t)hq * ATT_MAX_CHUNKS + chunk) * 2 + 1] = l;
        }
        __syncwarp();
        u32 last = 0;
        if (lane == 0) last = tile_arrive_is_last(merge_counters + hq, (u32)n_chunks) ? 1u : 0u;
        last = __shfl_sync(FULL_MASK, last, 0);
        if (!last) continue;
        // Last chunk of this head to finish: log-sum-exp merge, then the sigmoid output gate.
        const float* ml = part_ml + (size_t)hq * ATT_MAX_CHUNKS * 2;
        float mx = NEG_INF;
        for (int c = 0; c < n_chunks; ++c) mx = fmaxf(mx, ld_shared_f32(ml + 2 * c));
        float den = 0.0f, o[ATT_EPL];
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) o[e] = 0.0f;
        for (int c = 0; c < n_chunks; ++c) {
            const float wgt = expf(ld_shared_f32(ml + 2 * c) - mx);
            den = fmaf(ld_shared_f32(ml + 2 * c + 1), wgt, den);
            const float* pc = part_acc + ((size_t)hq * ATT_MAX_CHUNKS + c) * ATT_HD + d0;
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) o[e] = fmaf(ld_shared_f32(pc + e), wgt, o[e]);
        }
        const float inv = 1.0f / den;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) {
            const float gate = ld_shared_f32(qg + hq * 2 * ATT_HD + ATT_HD + d0 + e);
            attn_out[hq * ATT_HD + d0 + e] = o[e] * inv * sigmoid_f(gate);
        }
    }
}
"#;
