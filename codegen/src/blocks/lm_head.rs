//! LM head over every warp of the grid with the sampler fused in.
//!
//! Each warp computes rows of `logits = W x` (W = lm_head or the tied
//! embedding), applies the repetition / presence / frequency penalties from
//! the on-device token counts, and keeps (a) its top SAMPLE_CAND_PER_BLOCK
//! candidates and (b) online softmax statistics of logits/T over all its
//! rows. Blocks merge their warps; the last-arriving block (atomic ticket)
//! picks the token: greedy = exact argmax over every block's candidates
//! (ties -> lowest id); otherwise it merges them with a bitonic sort and applies temperature, top-k,
//! top-p with probabilities normalised over the *whole* vocabulary (from the
//! merged statistics), drawing from the candidate pool (documented cap: the
//! union of per-block top-SAMPLE_CAND_PER_BLOCK, at most SAMPLE_CAND_MAX).
//! Semantics and RNG follow the CPU sampler (`lucebox_models::sampling`);
//! differences: top-k keeps exactly k (the CPU keeps ties at the k-th value),
//! and tokens outside the candidate pool are never drawn.

pub const LM_HEAD: &str = r#"// ---- lm_head: logits, penalties, per-block top candidates, last-block sampler ----
// Ordering of candidates: larger logit first, then lower token id.
__device__ __forceinline__ bool cand_before(float av, u32 ai, float bv, u32 bi) {
    return av > bv || (av == bv && ai < bi);
}

// SplitMix64, the CPU sampler's generator: draw k (0-based, counted per request
// in `draws`) is splitmix64(seed + 0x9E3779B97F4A7C15 * (k + 1)), as a 53-bit double.
__device__ __forceinline__ double sample_uniform(u64 seed, u64 k) {
    u64 z = seed + 0x9E3779B97F4A7C15ull * (k + 1ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

// counts[t]: bit 31 = t appeared in the input (prompt), bits 0..30 = times t was
// generated. Repetition penalty (HF) applies to both, presence/frequency
// (OpenAI/vLLM) to generated tokens only -- as the CPU sampler does.
__device__ __forceinline__ float apply_penalties(float logit, u32 count, const DecodeParams& p) {
    if (count == 0u) return logit;
    if (p.repetition_penalty != 1.0f)
        logit = logit > 0.0f ? logit / p.repetition_penalty : logit * p.repetition_penalty;
    const u32 generated = count & 0x7fffffffu;
    if (generated > 0u) logit -= p.presence_penalty + p.frequency_penalty * (float)generated;
    return logit;
}

// Block-wide bitonic sort of n (power of two) (value, id) pairs: best first,
// or (by_id) ascending token id.
__device__ void bitonic_sort(float* v, u32* id, int n, bool by_id) {
    for (int k = 2; k <= n; k <<= 1) {
        for (int j = k >> 1; j > 0; j >>= 1) {
            for (int i = threadIdx.x; i < n; i += THREADS) {
                const int ixj = i ^ j;
                if (ixj > i) {
                    const bool desc = (i & k) == 0;
                    const bool ixj_first = by_id ? id[ixj] < id[i] : cand_before(v[ixj], id[ixj], v[i], id[i]);
                    const bool i_first = by_id ? id[i] < id[ixj] : cand_before(v[i], id[i], v[ixj], id[ixj]);
                    const bool swap = desc ? ixj_first : i_first;
                    if (swap) {
                        const float tv = v[i]; v[i] = v[ixj]; v[ixj] = tv;
                        const u32 ti = id[i]; id[i] = id[ixj]; id[ixj] = ti;
                    }
                }
            }
            __syncthreads();
        }
    }
}

// Logits for all rows + candidate/statistics reduction. Returns true in the
// one block that arrived last (it then runs sample_token). `smem` needs
// SAMPLE_POOL_POW2 * 8 bytes; xs (the normed hidden state) lives elsewhere.
__device__ bool lm_head_logits(const u16* W, const float* xs, const u32* counts, const DecodeParams& p,
                               float* logits_out, float* cand_v, u32* cand_i, float* block_stats,
                               u32* lm_counter, float* smem_v, u32* smem_i, float* smem_stats, u32* smem_flag) {
    constexpr int R = MV_R;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const bool write_logits = (p.flags & FLAG_WRITE_LOGITS) != 0u;
    const float inv_t = p.temperature > 0.0f ? 1.0f / p.temperature : 1.0f;
    float tv[SAMPLE_CAND_PER_BLOCK];
    u32 ti[SAMPLE_CAND_PER_BLOCK];
#pragma unroll
    for (int j = 0; j < SAMPLE_CAND_PER_BLOCK; ++j) { tv[j] = NEG_INF; ti[j] = 0xffffffffu; }
    float run_m = NEG_INF, run_s = 0.0f;  // online softmax of logits/T over this warp's rows
    constexpr int ITEMS = VOCAB / R;
    for (int item = blockIdx.x * WARPS + warp; item < ITEMS; item += GRID_BLOCKS * WARPS) {
        const uint4* rows[R];
#pragma unroll
        for (int r = 0; r < R; ++r) rows[r] = reinterpret_cast<const uint4*>(W + (size_t)(item * R + r) * HIDDEN);
        // The rows' token counts load with the weights, not after the dot products.
        u32 cnt[R];
#pragma unroll
        for (int r = 0; r < R; ++r) cnt[r] = ld_shared_u32(counts + item * R + r);
        float acc[R];
        if constexpr (WEIGHT_STREAM) {
            // The rows arrive through the warp's ring (the cursor's LM head phase).
            matvec_rows_partial_ring<R, HIDDEN, 1>(ws_acquire<false>(), xs, 0, acc);
            ws_release_lm();
        } else {
            matvec_rows_partial<R, HIDDEN, 1>(rows, xs, 0, acc);
        }
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const u32 row = (u32)(item * R + r);
            if (write_logits && lane == r) logits_out[row] = acc[r];
            float v = apply_penalties(acc[r], cnt[r], p);
            if (!(v == v)) v = NEG_INF;  // NaN never wins
            if (v != NEG_INF) {
                const float sv = v * inv_t;
                if (sv > run_m) { run_s = run_s * expf(run_m - sv) + 1.0f; run_m = sv; }
                else run_s += expf(sv - run_m);
            }
            // Rows arrive in increasing id order, so `>` keeps the lower id on ties.
            if (v > tv[SAMPLE_CAND_PER_BLOCK - 1]) {
                tv[SAMPLE_CAND_PER_BLOCK - 1] = v;
                ti[SAMPLE_CAND_PER_BLOCK - 1] = row;
#pragma unroll
                for (int j = SAMPLE_CAND_PER_BLOCK - 1; j > 0; --j) {
                    if (tv[j] > tv[j - 1]) {
                        const float a = tv[j]; tv[j] = tv[j - 1]; tv[j - 1] = a;
                        const u32 b = ti[j]; ti[j] = ti[j - 1]; ti[j - 1] = b;
                    }
                }
            }
        }
    }
    ws_top_up();  // the next step's first weights stream while the token is picked
    // Block merge: warps -> shared -> warp 0 selects the block's best.
    if (lane == 0) {
#pragma unroll
        for (int j = 0; j < SAMPLE_CAND_PER_BLOCK; ++j) {
            smem_v[warp * SAMPLE_CAND_PER_BLOCK + j] = tv[j];
            smem_i[warp * SAMPLE_CAND_PER_BLOCK + j] = ti[j];
        }
        smem_stats[2 * warp] = run_m;
        smem_stats[2 * warp + 1] = run_s;
    }
    __syncthreads();
    if (warp == 0) {
        constexpr int N = WARPS * SAMPLE_CAND_PER_BLOCK;
        for (int j = 0; j < SAMPLE_CAND_PER_BLOCK; ++j) {
            float bv = NEG_INF; u32 bi = 0xffffffffu; int bslot = -1;
            for (int s = lane; s < N; s += 32)
                if (smem_i[s] != 0xfffffffeu && cand_before(smem_v[s], smem_i[s], bv, bi)) { bv = smem_v[s]; bi = smem_i[s]; bslot = s; }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
                const u32 oi = __shfl_xor_sync(FULL_MASK, bi, o);
                const int os = __shfl_xor_sync(FULL_MASK, bslot, o);
                if (cand_before(ov, oi, bv, bi)) { bv = ov; bi = oi; bslot = os; }
            }
            __syncwarp();  // every lane's scan of smem_i is done before lane 0 marks a slot
            if (lane == 0) {
                cand_v[blockIdx.x * SAMPLE_CAND_PER_BLOCK + j] = bv;
                cand_i[blockIdx.x * SAMPLE_CAND_PER_BLOCK + j] = bi;
                if (bslot >= 0) smem_i[bslot] = 0xfffffffeu;  // taken
            }
            __syncwarp();
        }
        if (lane == 0) {
            float m = NEG_INF, s = 0.0f;
            for (int w = 0; w < WARPS; ++w) {
                const float wm = smem_stats[2 * w], ws = smem_stats[2 * w + 1];
                if (wm == NEG_INF) continue;
                if (wm > m) { s = s * expf(m - wm) + ws; m = wm; } else s += ws * expf(wm - m);
            }
            block_stats[2 * blockIdx.x] = m;
            block_stats[2 * blockIdx.x + 1] = s;
            *smem_flag = tile_arrive_is_last(lm_counter, GRID_BLOCKS) ? 1u : 0u;
        }
    }
    __syncthreads();
    return *smem_flag != 0u;
}

// Thread 0 of the sampling block: record the token, count it, feed it back.
__device__ __forceinline__ void publish_token(u32 tok, u32 n_generated, u32* counts, u32* out_tokens, u32* token_slot) {
    out_tokens[n_generated] = tok;
    if (tok < (u32)VOCAB) counts[tok] += 1u;  // no candidate at all: the next step reports ERR_BAD_TOKEN
    *token_slot = tok;
    __threadfence();
}

// Run by the last block only: pick the token and publish it. Mirrors the CPU
// sampler (lucebox_models::sampling::Sampler): greedy = argmax; otherwise
// logits/T, top-k, softmax, top-p (descending probability, lower id first on
// ties, the crossing token kept), then a draw walked in ascending id order.
__device__ void sample_token(const DecodeParams& p, u32 n_generated, const float* cand_v, const u32* cand_i,
                             const float* block_stats, float* smem_v, u32* smem_i, u32* smem_keep, u32* counts,
                             u32* out_tokens, u32* token_slot, unsigned long long* draws) {
    if (!(p.temperature > 0.0f)) {
        // Greedy: the pool's first candidate under cand_before is what the sort
        // below would put first; a block argmax finds it without the sort's
        // ~66 block barriers.
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        float bv = NEG_INF; u32 bi = 0xffffffffu;
        for (int i = threadIdx.x; i < SAMPLE_POOL; i += THREADS) {
            const float v = ld_shared_f32(cand_v + i);
            const u32 id = ld_shared_u32(cand_i + i);
            if (cand_before(v, id, bv, bi)) { bv = v; bi = id; }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(FULL_MASK, bv, o);
            const u32 oi = __shfl_xor_sync(FULL_MASK, bi, o);
            if (cand_before(ov, oi, bv, bi)) { bv = ov; bi = oi; }
        }
        if (lane == 0) { smem_v[warp] = bv; smem_i[warp] = bi; }
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < WARPS; ++w)
                if (cand_before(smem_v[w], smem_i[w], bv, bi)) { bv = smem_v[w]; bi = smem_i[w]; }
            publish_token(bi, n_generated, counts, out_tokens, token_slot);
        }
        return;
    }
    for (int i = threadIdx.x; i < SAMPLE_POOL_POW2; i += THREADS) {
        if (i < SAMPLE_POOL) { smem_v[i] = ld_shared_f32(cand_v + i); smem_i[i] = ld_shared_u32(cand_i + i); }
        else { smem_v[i] = NEG_INF; smem_i[i] = 0xffffffffu; }
    }
    __syncthreads();
    bitonic_sort(smem_v, smem_i, SAMPLE_POOL_POW2, false);
    const bool greedy = !(p.temperature > 0.0f);
    const float inv_t = greedy ? 1.0f : 1.0f / p.temperature;
    const float top = smem_v[0] * inv_t;
    if (threadIdx.x == 0) {
        int keep = 1;
        if (!greedy) {
            // Whole-vocabulary normaliser from the per-block statistics.
            float z = 0.0f;
            for (int b = 0; b < GRID_BLOCKS; ++b) {
                const float bm = ld_shared_f32(block_stats + 2 * b);
                if (bm != NEG_INF) z += ld_shared_f32(block_stats + 2 * b + 1) * expf(bm - top);
            }
            int k = SAMPLE_CAND_MAX;
            while (k > 1 && smem_v[k - 1] == NEG_INF) --k;
            float zk = z;
            if (p.top_k > 0u && (int)p.top_k < k) {
                k = (int)p.top_k;
                zk = 0.0f;
                for (int i = 0; i < k; ++i) zk += expf(smem_v[i] * inv_t - top);
            }
            keep = k;
            if (p.top_p < 1.0f) {
                float cum = 0.0f;
                for (int i = 0; i < k; ++i) {
                    cum += expf(smem_v[i] * inv_t - top) / zk;
                    if (cum >= p.top_p) { keep = i + 1; break; }
                }
            }
        }
        *smem_keep = (u32)keep;
    }
    __syncthreads();
    const int keep = (int)*smem_keep;
    u32 tok = smem_i[0];
    if (keep > 1) {
        // Walk the kept candidates in ascending id order (the CPU sampler's order).
        int n = 1;
        while (n < keep) n <<= 1;
        for (int i = keep + threadIdx.x; i < n; i += THREADS) { smem_v[i] = NEG_INF; smem_i[i] = 0xffffffffu; }
        __syncthreads();
        bitonic_sort(smem_v, smem_i, n, true);
        if (threadIdx.x == 0) {
            double mass = 0.0;
            for (int i = 0; i < keep; ++i) mass += exp((double)(smem_v[i] * inv_t - top));
            const unsigned long long k = *draws;
            *draws = k + 1ull;
            const double u = sample_uniform(p.seed, k) * mass;
            double run = 0.0;
            tok = smem_i[keep - 1];
            for (int i = 0; i < keep; ++i) {
                run += exp((double)(smem_v[i] * inv_t - top));
                if (u < run) { tok = smem_i[i]; break; }
            }
        }
    }
    if (threadIdx.x == 0) publish_token(tok, n_generated, counts, out_tokens, token_slot);
}
"#;
