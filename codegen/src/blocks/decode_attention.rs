//! Decode attention split over (query head, KV chunk) work items, one warp
//! each, spread round-robin over the grid's blocks. A chunk is scored in
//! slices of up to 32 positions: ATT_LPP lanes share one position and split
//! its K row (for an 8-position chunk and head_dim 256, each lane issues one
//! round of eight 16-byte loads), so a slice costs one max and one sum
//! reduction instead of a warp reduction per position; the P.V pass gives
//! each lane ATT_EPL dims. Each item normalises and rotates its own copy of
//! the new q/k (cheap) so no extra sync is needed; the item whose chunk holds
//! the current position appends K/V (one writer per kv head) and uses the
//! new k/v from shared memory/registers. Partials merge in two levels, each
//! run by a last arrival (flash-decoding log-sum-exp): every ATT_SUPER
//! chunks into one partial, then those into the head's output, which gets
//! the sigmoid output gate. Short merges keep the per-head critical path
//! short however long the context.

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

pub const DECODE_ATTENTION: &str = r#"// ---- decode_attention: (q-head, KV chunk) items, two-level merge by last arrivals ----
// Merge `n` partials (m, l at ml[2 i * stride], unnormalised acc at acc[i * stride * ATT_HD + d0])
// into one: returns m, l and this lane's ATT_EPL dims of acc. One online pass
// (running max, rescaled sums): the loads of 4 partials go out together, so a
// merge of 8 costs 2 round trips to L2 instead of 3 passes over the partials.
__device__ __forceinline__ void att_merge(const float* ml, const float* acc, int n, int stride, int d0,
                                          float& m_out, float& l_out, float (&o)[ATT_EPL]) {
    float mx = NEG_INF, den = 0.0f;
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) o[e] = 0.0f;
#pragma unroll 4
    for (int i = 0; i < n; ++i) {
        const float mi = ld_shared_f32(ml + 2 * i * stride);
        const float li = ld_shared_f32(ml + 2 * i * stride + 1);
        const float* pc = acc + (size_t)i * stride * ATT_HD + d0;
        float a[ATT_EPL];
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) a[e] = ld_shared_f32(pc + e);
        const float mn = fmaxf(mx, mi);  // finite: every partial scored a position
        const float c_old = expf(mx - mn), c_new = expf(mi - mn);  // first: expf(-inf) = 0
        den = fmaf(den, c_old, li * c_new);
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) o[e] = fmaf(o[e], c_old, a[e] * c_new);
        mx = mn;
    }
    m_out = mx;
    l_out = den;
}

// qg: q_proj output, per head [query (ATT_HD) | gate (ATT_HD)]; kraw/vraw: k/v_proj outputs.
// k_cache/v_cache: this layer's [ATT_HKV][MAX_CTX][ATT_HD] bf16. att_s: this warp's
// 2 * ATT_HD floats of shared memory (the query, then the new k). counters: [ATT_H]
// head counters, then [ATT_H][ATT_MAX_SUPERS] super-chunk counters. ready: the
// projection rows' per-head counters (read only with ATT_HEAD_COUNTERS, see attn_layer).
// (qg/kraw/vraw are never written here: __restrict__ lets their loads move
// ahead of the cache and shared-memory stores.)
__device__ void decode_attention(const float* __restrict__ qg, const float* __restrict__ kraw,
                                 const float* __restrict__ vraw,
                                 const float* q_norm_w, const float* k_norm_w,
                                 u16* k_cache, u16* v_cache, float* part_acc, float* part_ml,
                                 u32* counters, float* attn_out, u32 pos, float* att_s, const u32* ready) {
    constexpr int SLICE = ATT_CHUNK < 32 ? ATT_CHUNK : 32;  // positions scored together
    constexpr int LPP = 32 / SLICE;                         // lanes per position
    constexpr int CH = ATT_HD / 8;                          // 16-byte chunks per K row
    constexpr int CPL = CH / LPP;                           // chunks per lane
    constexpr int GROUP = CPL < 8 ? CPL : 8;                // loads in flight per lane
    constexpr bool HOIST = ATT_CHUNK <= SLICE && CPL <= GROUP;  // one slice, one load round
    const int lane = threadIdx.x & 31;
    const int n_chunks = (int)(pos / ATT_CHUNK) + 1;
    const int n_supers = (n_chunks + ATT_SUPER - 1) / ATT_SUPER;
    const int n_items = ATT_H * n_chunks;
    const int d0 = lane * ATT_EPL;
    float* qs = att_s;
    float* ks = att_s + ATT_HD;
    // The last warps of each block take items first (they have the fewest projection items).
    for (int item = (WARPS - 1 - (threadIdx.x >> 5)) * GRID_BLOCKS + blockIdx.x; item < n_items; item += GRID_BLOCKS * WARPS) {
        const int hq = item / n_chunks, chunk = item % n_chunks;
        const int kvh = hq / ATT_G;
        const bool holds_pos = chunk == n_chunks - 1;
        const u16* kc = k_cache + (size_t)kvh * MAX_CTX * ATT_HD;
        const u16* vc = v_cache + (size_t)kvh * MAX_CTX * ATT_HD + d0;
        const int p_begin = chunk * ATT_CHUNK;
        const int p_end = min(p_begin + ATT_CHUNK, (int)pos + 1);
        // Lanes [j*LPP, (j+1)*LPP) score position p0 + j over chunks [part*CPL, (part+1)*CPL).
        const int part = lane % LPP;
        // A chunk of one slice and one load round: issue its K row now (the
        // address depends only on the position), so the loads overlap the q/k
        // preparation below. (Hoisting V rows too costs spills.)
        uint4 kpre[GROUP];
        if constexpr (HOIST) {
            const int pj = p_begin + lane / LPP;
            if (pj < p_end && pj != (int)pos) {
                const uint4* k4 = reinterpret_cast<const uint4*>(kc + (size_t)pj * ATT_HD) + part * CPL;
#pragma unroll
                for (int c = 0; c < GROUP; ++c) kpre[c] = __ldcg(k4 + c);
            }
        }
        // The rotation angles at `pos`, for the new key and the query.
        const RopeAngles ang = rope_angles(pos);
        if constexpr (ATT_HEAD_COUNTERS) {
            // The cache loads above are out; now wait for this head's query
            // and gate rows (and the new k and v for the chunk holding `pos`).
            wait_ready(ready + hq * READY_STRIDE, ATT_READY_ROWS,
                       holds_pos ? ready + (ATT_H + kvh) * READY_STRIDE : nullptr, ATT_READY_ROWS);
        }
        // The new token's k and v (k_norm, RoPE, rounded to the cache's bf16),
        // needed only by the chunk that holds `pos`: k to shared memory for the
        // lanes that score `pos`, v in registers for the P.V pass.
        float vn[ATT_EPL];
        if (holds_pos) {
            float kn[ATT_EPL];
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) {
                kn[e] = ld_shared_f32(kraw + kvh * ATT_HD + d0 + e);
                vn[e] = bf16_round(ld_shared_f32(vraw + kvh * ATT_HD + d0 + e));
            }
            head_rms_norm(kn, k_norm_w);
            rope_apply(kn, ang);
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) {
                kn[e] = bf16_round(kn[e]);
                ks[d0 + e] = kn[e];
            }
            if (hq % ATT_G == 0) {  // one writer per kv head appends to the cache
                store_bf16_vec<ATT_EPL>(k_cache + ((size_t)kvh * MAX_CTX + pos) * ATT_HD + d0, kn);
                store_bf16_vec<ATT_EPL>(v_cache + ((size_t)kvh * MAX_CTX + pos) * ATT_HD + d0, vn);
            }
        } else {
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) vn[e] = 0.0f;
        }
        // This head's query: q_norm, RoPE, pre-scaled by 1/sqrt(head_dim), to shared memory.
        {
            float q[ATT_EPL];
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) q[e] = ld_shared_f32(qg + hq * 2 * ATT_HD + d0 + e);
            head_rms_norm(q, q_norm_w);
            rope_apply(q, ang);
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) qs[d0 + e] = q[e] * ATT_SCALE;
        }
        __syncwarp();
        const float4* q4 = reinterpret_cast<const float4*>(qs) + 2 * part * CPL;
        float m = NEG_INF, l = 0.0f, acc[ATT_EPL];
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) acc[e] = 0.0f;
        for (int p0 = p_begin; p0 < p_end; p0 += SLICE) {
            const int pj = p0 + lane / LPP;
            float s = 0.0f;
            if (pj == (int)pos) {
                const float4* k4 = reinterpret_cast<const float4*>(ks) + 2 * part * CPL;
#pragma unroll 8
                for (int c = 0; c < 2 * CPL; ++c) {
                    const float4 a = q4[c], b = k4[c];
                    s = fmaf(a.x, b.x, fmaf(a.y, b.y, fmaf(a.z, b.z, fmaf(a.w, b.w, s))));
                }
            } else if (pj < p_end) {
                if constexpr (HOIST) {
#pragma unroll
                    for (int c = 0; c < GROUP; ++c) s += dot_bf16x8(kpre[c], q4[2 * c], q4[2 * c + 1]);
                } else {
                    const uint4* k4 = reinterpret_cast<const uint4*>(kc + (size_t)pj * ATT_HD) + part * CPL;
#pragma unroll 1
                    for (int c0 = 0; c0 < CPL; c0 += GROUP) {
                        uint4 w[GROUP];
#pragma unroll
                        for (int c = 0; c < GROUP; ++c) w[c] = __ldcg(k4 + c0 + c);
#pragma unroll
                        for (int c = 0; c < GROUP; ++c) s += dot_bf16x8(w[c], q4[2 * (c0 + c)], q4[2 * (c0 + c) + 1]);
                    }
                }
            }
#pragma unroll
            for (int o = 1; o < LPP; o <<= 1) s += __shfl_xor_sync(FULL_MASK, s, o);
            if (pj >= p_end) s = NEG_INF;
            const float m_new = fmaxf(m, warp_max(s));  // finite: lanes 0..LPP-1 always score a position
            const float corr = expf(m - m_new);
            const float pw = pj < p_end ? expf(s - m_new) : 0.0f;
            l = l * corr + warp_sum(part == 0 ? pw : 0.0f);
            m = m_new;
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) acc[e] *= corr;
            // P.V: every lane walks the slice's rows over its own dims.
            const int n = min(SLICE, p_end - p0);
            for (int j0 = 0; j0 < n; j0 += ATT_BATCH) {
                u32 vb[ATT_BATCH][ATT_EPL / 2];
#pragma unroll
                for (int b = 0; b < ATT_BATCH; ++b) {
                    const int p = p0 + j0 + b;
                    if (j0 + b < n && p < (int)pos) load_bf16_packed<ATT_EPL>(vc + (size_t)p * ATT_HD, vb[b]);
                }
#pragma unroll
                for (int b = 0; b < ATT_BATCH; ++b) {
                    if (j0 + b >= n) break;
                    const float w = __shfl_sync(FULL_MASK, pw, (j0 + b) * LPP);
                    if (p0 + j0 + b == (int)pos) {
#pragma unroll
                        for (int e = 0; e < ATT_EPL; ++e) acc[e] = fmaf(w, vn[e], acc[e]);
                    } else {
#pragma unroll
                        for (int e = 0; e < ATT_EPL / 2; ++e) {
                            acc[2 * e] = fmaf(w, bf16_lo(vb[b][e]), acc[2 * e]);
                            acc[2 * e + 1] = fmaf(w, bf16_hi(vb[b][e]), acc[2 * e + 1]);
                        }
                    }
                }
            }
        }
        __syncwarp();  // qs/ks are rewritten by this warp's next item
        float* pa = part_acc + (size_t)hq * ATT_MAX_CHUNKS * ATT_HD;
        float* pm = part_ml + (size_t)hq * ATT_MAX_CHUNKS * 2;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) pa[(size_t)chunk * ATT_HD + d0 + e] = acc[e];
        if (lane == 0) { pm[2 * chunk] = m; pm[2 * chunk + 1] = l; }
        __syncwarp();
        // Level 1: the last chunk of super-chunk `sup` merges its chunks into slot sup * ATT_SUPER.
        const int sup = chunk / ATT_SUPER;
        const int first = sup * ATT_SUPER;
        const int n_in_sup = min(ATT_SUPER, n_chunks - first);
        u32 last = 0;
        if (lane == 0) last = tile_arrive_is_last(counters + ATT_H + hq * ATT_MAX_SUPERS + sup, (u32)n_in_sup) ? 1u : 0u;
        if (!__shfl_sync(FULL_MASK, last, 0)) continue;
        if (n_in_sup > 1) {
            float o[ATT_EPL];
            att_merge(pm + 2 * first, pa + (size_t)first * ATT_HD, n_in_sup, 1, d0, m, l, o);
            __syncwarp();  // every lane has read the slot before it is overwritten
#pragma unroll
            for (int e = 0; e < ATT_EPL; ++e) pa[(size_t)first * ATT_HD + d0 + e] = o[e];
            if (lane == 0) { pm[2 * first] = m; pm[2 * first + 1] = l; }
            __syncwarp();
        }
        // Level 2: the last super-chunk of the head merges them, normalises and gates.
        last = 0;
        if (lane == 0) last = tile_arrive_is_last(counters + hq, (u32)n_supers) ? 1u : 0u;
        if (!__shfl_sync(FULL_MASK, last, 0)) continue;
        float o[ATT_EPL], mx, den;
        att_merge(pm, pa, n_supers, ATT_SUPER, d0, mx, den, o);
        const float inv = 1.0f / den;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) {
            const float gate = ld_shared_f32(qg + hq * 2 * ATT_HD + ATT_HD + d0 + e);
            attn_out[hq * ATT_HD + d0 + e] = o[e] * inv * sigmoid_f(gate);
        }
    }
}
"#;
