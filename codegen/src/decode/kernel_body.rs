//! The decode megakernel's layer programs and token loop as CUDA text.
//! Sync points are printed by `mod.rs` into the `SYNC_*` markers below so the
//! schedule decides them (and the header counts them).

/// What the layer programs share: the buffer table, the matvec row maps,
/// the residual epilogue, the prefetch of a layer's first phase, the input
/// norm. The text runs on into one of the MLP variants, then `LAYER_TYPES`.
pub const LAYER_HELPERS: &str = r#"// ---- layer programs ----
struct Bufs {
    u16* k_cache; u16* v_cache; float* gdn_state; float* conv_state; u32* counts;
    const u32* prompt_ids; u32* out_tokens; u32* status; float* logits; u32* next_token;
    unsigned long long* barrier; u32* counters;
    float* resid; float* qkv; float* z; float* beta; float* g; float* gdn_o;
    float* qg; float* k; float* v; float* part_acc; float* part_ml; float* att_out; float* mlp_h;
    float* cand_v; u32* cand_i; float* lm_stats; unsigned long long* draws;
};

__device__ __forceinline__ Bufs bind_buffers(void* const* b) {
    Bufs B;
    B.k_cache = (u16*)b[BUF_K_CACHE]; B.v_cache = (u16*)b[BUF_V_CACHE];
    B.gdn_state = (float*)b[BUF_GDN_STATE]; B.conv_state = (float*)b[BUF_CONV_STATE];
    B.counts = (u32*)b[BUF_TOKEN_COUNTS]; B.prompt_ids = (const u32*)b[BUF_PROMPT_IDS];
    B.out_tokens = (u32*)b[BUF_OUT_TOKENS]; B.status = (u32*)b[BUF_STATUS]; B.logits = (float*)b[BUF_LOGITS];
    B.next_token = (u32*)b[BUF_NEXT_TOKEN]; B.barrier = (unsigned long long*)b[BUF_GRID_BARRIER];
    B.counters = (u32*)b[BUF_TILE_COUNTERS]; B.resid = (float*)b[BUF_RESID];
    B.qkv = (float*)b[BUF_GDN_QKV]; B.z = (float*)b[BUF_GDN_Z]; B.beta = (float*)b[BUF_GDN_BETA];
    B.g = (float*)b[BUF_GDN_G]; B.gdn_o = (float*)b[BUF_GDN_O]; B.qg = (float*)b[BUF_ATT_QG];
    B.k = (float*)b[BUF_ATT_K]; B.v = (float*)b[BUF_ATT_V]; B.part_acc = (float*)b[BUF_ATT_PART_ACC];
    B.part_ml = (float*)b[BUF_ATT_PART_ML]; B.att_out = (float*)b[BUF_ATT_OUT]; B.mlp_h = (float*)b[BUF_MLP_H];
    B.cand_v = (float*)b[BUF_LM_CAND_V]; B.cand_i = (u32*)b[BUF_LM_CAND_I]; B.lm_stats = (float*)b[BUF_LM_BLOCK_STATS];
    B.draws = (unsigned long long*)b[BUF_SAMPLER_DRAWS];
    return B;
}

#define WPTR(T, i) (reinterpret_cast<const T*>(Wt[(i)]))

// Row maps of every matvec phase (shared by the phase and its prefetch).
// GDN in_proj rows in decode order: beta (b) and decay (a) rows, q|k|v, then
// z. The recurrence reads all but z, so its inputs are done first; with
// per-head ready counters it starts while warps still compute z rows.
constexpr int GDN_ROW_A = GDN_HV;
constexpr int GDN_ROW_QKV = 2 * GDN_HV;
constexpr int GDN_ROW_Z = 2 * GDN_HV + CONV_DIM;
__device__ __forceinline__ auto gdn_in_rows(const void* const* Wt, int wb) {
    const u16* qkv = WPTR(u16, wb + W_GDN_IN_QKV);
    const u16* z = WPTR(u16, wb + W_GDN_IN_Z);
    const u16* b = WPTR(u16, wb + W_GDN_IN_B);
    const u16* a = WPTR(u16, wb + W_GDN_IN_A);
    return [=](int item, int r) -> const u16* {
        const int row = item * MV_R + r;
        if (row < GDN_ROW_A) return b + (size_t)row * HIDDEN;
        if (row < GDN_ROW_QKV) return a + (size_t)(row - GDN_ROW_A) * HIDDEN;
        if (row < GDN_ROW_Z) return qkv + (size_t)(row - GDN_ROW_QKV) * HIDDEN;
        return z + (size_t)(row - GDN_ROW_Z) * HIDDEN;
    };
}
constexpr int GDN_IN_ITEMS = (CONV_DIM + VALUE_DIM + 2 * GDN_HV) / MV_R;

__device__ __forceinline__ auto att_qkv_rows(const void* const* Wt, int wb) {
    const u16* q = WPTR(u16, wb + W_ATT_Q);
    const u16* k = WPTR(u16, wb + W_ATT_K);
    const u16* v = WPTR(u16, wb + W_ATT_V);
    return [=](int item, int r) -> const u16* {
        int row = item * MV_R + r;
        if (row < ATT_QG_DIM) return q + (size_t)row * HIDDEN;
        row -= ATT_QG_DIM;
        if (row < ATT_KV_DIM) return k + (size_t)row * HIDDEN;
        return v + (size_t)(row - ATT_KV_DIM) * HIDDEN;
    };
}
constexpr int ATT_QKV_ITEMS = (ATT_QG_DIM + 2 * ATT_KV_DIM) / MV_R;

// Rows of a [rows, K] matrix, R per item.
template <int K>
__device__ __forceinline__ auto plain_rows(const u16* w) {
    return [=](int item, int r) -> const u16* { return w + (size_t)(item * MV_R + r) * K; };
}
// gate rows then up rows of one item: 2R rows, paired in the epilogue.
__device__ __forceinline__ auto mlp_up_rows(const void* const* Wt, int wb) {
    const u16* gate = WPTR(u16, wb + W_MLP_GATE);
    const u16* up = WPTR(u16, wb + W_MLP_UP);
    return [=](int item, int r) -> const u16* {
        return r < MLP_R ? gate + (size_t)(item * MLP_R + r) * HIDDEN
                         : up + (size_t)(item * MLP_R + r - MLP_R) * HIDDEN;
    };
}
constexpr int MLP_UP_ITEMS = INTER / MLP_R;
constexpr int HIDDEN_ITEMS = HIDDEN / MV_R;

// Out-projection epilogue: the row's residual loads before the dot product
// (resid_load) and the sum is stored after it (resid_add).
__device__ __forceinline__ auto resid_load(const Bufs& B) {
    const float* resid = B.resid;
    return [=](int item, int r) { return ld_shared_f32(resid + item * MV_R + r); };
}
// With the fused MLP the sum also goes to resid[HIDDEN..]: the MLP phase
// normalises that copy while its blocks add their shares into resid.
__device__ __forceinline__ auto resid_add(const Bufs& B) {
    float* resid = B.resid;
    return [=](int item, int r, const float (&acc)[MV_R], float old) {
        const float v = old + pick(acc, r);
        resid[item * MV_R + r] = v;
        if constexpr (MLP_FUSED) resid[HIDDEN + item * MV_R + r] = v;
    };
}

// Move the first phase of `layer` ahead of the sync point before it (see
// matvec_phase_ahead). After the last layer: the LM head when this step runs
// it (L2 prefetch only; it has no first-item slot), else the next step's
// layer 0.
__device__ void prefetch_layer_entry(const void* const* Wt, int layer, bool want_lm) {
    if (layer >= N_LAYERS) {
        if (want_lm) {
            if constexpr (PREFETCH)
                matvec_phase_prefetch<MV_R, HIDDEN, 1>(VOCAB / MV_R, plain_rows<HIDDEN>(WPTR(u16, W_LM_HEAD)));
            return;
        }
        if (!FIRST_ITEM_SMEM) return;
        layer = 0;
    }
    if (LAYER_IS_ATTN[layer]) {
        matvec_phase_ahead<MV_R, HIDDEN, KS_ATT_QKV>(ATT_QKV_ITEMS, att_qkv_rows(Wt, LAYER_WBASE[layer]));
    } else {
        matvec_phase_ahead<MV_R, HIDDEN, KS_GDN_IN>(GDN_IN_ITEMS, gdn_in_rows(Wt, LAYER_WBASE[layer]));
    }
}

// Norm input of a layer's first phase: the residual, or for layer 0 the
// embedding row (block 0 also seeds the residual with it).
__device__ void layer_input_norm(const Bufs& B, const void* const* Wt, int layer, int wb, u32 token,
                                 float* xs, float* red) {
    if (layer == 0) {
        embedding_to_smem(xs, WPTR(u16, W_EMBED), token, B.resid, blockIdx.x == 0);
        rms_norm_to_smem<HIDDEN>(xs, nullptr, WPTR(float, wb + W_LN_IN), red);
    } else {
        rms_norm_to_smem<HIDDEN>(xs, B.resid, WPTR(float, wb + W_LN_IN), red);
    }
}

"#;

/// The MLP in two phases (`decode.mlp = two_phases`): gate/up with SwiGLU,
/// a grid barrier, the down projection.
pub const MLP_TWO_PHASES: &str = r#"// MLP: post-attention norm, gate/up (SwiGLU fused), down (+ residual).
__device__ void mlp_block(const Bufs& B, const void* const* Wt, int layer, int wb, float* xs, float* red, bool want_lm) {
    rms_norm_to_smem<HIDDEN>(xs, B.resid, WPTR(float, wb + W_LN_POST), red);
    matvec_phase<2 * MLP_R, HIDDEN, KS_MLP_UP, MLP_R>(MLP_UP_ITEMS, xs, red, mlp_up_rows(Wt, wb),
        [&](int item, int r, const float (&acc)[2 * MLP_R]) {
            B.mlp_h[item * MLP_R + r] = silu_f(pick(acc, r)) * pick(acc, r + MLP_R);
        });
    matvec_phase_ahead<MV_R, INTER, KS_MLP_DOWN>(HIDDEN_ITEMS, plain_rows<INTER>(WPTR(u16, wb + W_MLP_DOWN)));
    SYNC_MLP_UP
    load_vec_to_smem<INTER>(xs, B.mlp_h);
    matvec_phase_pre<MV_R, INTER, KS_MLP_DOWN, MV_R>(HIDDEN_ITEMS, xs, red, plain_rows<INTER>(WPTR(u16, wb + W_MLP_DOWN)),
        resid_load(B), resid_add(B));
    if (PREFETCH || FIRST_ITEM_SMEM) prefetch_layer_entry(Wt, layer + 1, want_lm);
    SYNC_MLP_DOWN
}

"#;

/// The MLP in one phase (`decode.mlp = fused_split_k`, see
/// `blocks::fused_mlp`).
pub const MLP_FUSED: &str = r#"// MLP in one phase: post-attention norm of the mid-layer residual, then
// gate/up, SwiGLU and the down projection split over the intermediate; the
// blocks add their shares into resid (fused_mlp_phase).
__device__ void mlp_block(const Bufs& B, const void* const* Wt, int layer, int wb, float* xs, float* red, bool want_lm) {
    rms_norm_to_smem<HIDDEN>(xs, B.resid + HIDDEN, WPTR(float, wb + W_LN_POST), red);
    fused_mlp_phase<MLP_R, KS_MLP_UP>(MLP_UP_ITEMS, xs, red, mlp_up_rows(Wt, wb), WPTR(u16, LAYER_W_DOWN_T[layer]), B.resid);
    if (PREFETCH || FIRST_ITEM_SMEM) prefetch_layer_entry(Wt, layer + 1, want_lm);
    SYNC_MLP
}

"#;

/// The GDN layer's helpers and its program up to the in_proj sync point;
/// one of the two out_proj variants below completes it.
pub const GDN_LAYER_HEAD: &str = r#"// Epilogue operands of the GDN in_proj rows, loaded before the dot products.
struct GdnInOperands {
    ConvTaps conv;        // q/k/v rows
    float a_log, dt_bias; // decay (a) rows
};

// ---- per-head ready counters (GDN_HEAD_COUNTERS, ATT_HEAD_COUNTERS) ----
// Instead of a grid barrier after a projection phase, each consumer item
// waits until the rows it reads are published. A warp publishes once, after
// its team's last item holding counted rows: one fence, then one relaxed add
// per run of rows with the same counter. Called by the lane that wrote row
// `item * MV_R + r`, after the write; `step` is the team's item stride, rows
// from `counted_rows` on are not counted, slot_of(row) names the row's
// counter (-1: none). Counters sit READY_STRIDE words apart (one 128-byte
// line each: adds and polls on one line would queue at one L2 slice). They
// are zeroed after the consumers' grid barrier, for the next layer.
template <class SlotOf>
__device__ __forceinline__ void publish_ready_rows(u32* ready, int item, int r, int step, int n_items,
                                                   int counted_rows, SlotOf slot_of) {
    const int next = item + step;
    if (item * MV_R >= counted_rows || (next < n_items && next * MV_R < counted_rows)) return;
    __threadfence();  // this lane's row writes before the counts
    int run_slot = -1;
    u32 run = 0;
    for (int it = item; it >= 0; it -= step) {  // exactly this team's items so far
        const int row = it * MV_R + r;
        const int slot = row < counted_rows ? slot_of(row) : -1;
        if (slot != run_slot) {
            if (run_slot >= 0) atomicAdd(ready + run_slot * READY_STRIDE, run);
            run_slot = slot;
            run = 0;
        }
        ++run;
    }
    if (run_slot >= 0) atomicAdd(ready + run_slot * READY_STRIDE, run);
}
__device__ __forceinline__ void reset_ready(u32* ready, int n) {
    if (blockIdx.x == GRID_BLOCKS - 1)
        for (int i = threadIdx.x; i < n; i += THREADS) ready[i * READY_STRIDE] = 0u;
}

// GDN: ready[kh] counts the q and k rows of k-head kh (GDN_READY_K),
// ready[GDN_HK + h] the v, b and a rows of v-head h (GDN_READY_V).
__device__ __forceinline__ int gdn_ready_slot(int row) {
    if (row < GDN_ROW_QKV) return GDN_HK + row % GDN_HV;  // b, a: their v-head
    row -= GDN_ROW_QKV;
    if (row < 2 * KEY_DIM) return (row % KEY_DIM) / GDN_DK;  // q, k: their k-head
    row -= 2 * KEY_DIM;
    return row < VALUE_DIM ? GDN_HK + row / GDN_DV : -1;
}
// Attention: ready[hq] counts the query and gate rows of q-head hq, ready[ATT_H + g]
// the k and v rows of kv-head g (ATT_READY_ROWS each).
__device__ __forceinline__ int att_ready_slot(int row) {
    if (row < ATT_QG_DIM) return row / (2 * ATT_HD);
    return ATT_H + ((row - ATT_QG_DIM) % ATT_KV_DIM) / ATT_HD;
}

__device__ void gdn_layer(const Bufs& B, const void* const* Wt, int layer, u32 token, float* xs, float* red, bool want_lm) {
    const int wb = LAYER_WBASE[layer];
    const int slot = LAYER_SLOT[layer];
    u32* ready = B.counters + CNT_GDN_READY;
    // Phase 1: in_proj b|a|qkv|z; epilogues: beta, g, conv step + SiLU, z.
    layer_input_norm(B, Wt, layer, wb, token, xs, red);
    // With both split-K phases the recurrence adds into resid and its copy:
    // the copy must start from the layer's input (block 0 wrote layer 0's).
    if constexpr (GDN_OUT_FUSED && MLP_FUSED)
        if (blockIdx.x == 0)
            for (int i = threadIdx.x; i < HIDDEN; i += THREADS) B.resid[HIDDEN + i] = ld_shared_f32(B.resid + i);
    {
        const float* conv_w = WPTR(float, wb + W_GDN_CONV);
        const float* dt_bias = WPTR(float, wb + W_GDN_DT_BIAS);
        const float* a_log = WPTR(float, wb + W_GDN_A_LOG);
        float* conv_state = B.conv_state + (size_t)slot * CONV_DIM * (CONV_K - 1);
        matvec_phase_pre<MV_R, HIDDEN, KS_GDN_IN, MV_R>(GDN_IN_ITEMS, xs, red, gdn_in_rows(Wt, wb),
            // A q/k/v row's conv taps, or a decay row's A_log and dt_bias, load
            // while the row's dot product runs.
            [&](int item, int r) {
                const int row = item * MV_R + r;
                GdnInOperands o{};
                if (row >= GDN_ROW_QKV && row < GDN_ROW_Z) {
                    const int c = row - GDN_ROW_QKV;
                    o.conv = load_conv_taps(conv_w + c * CONV_K, conv_state + c * (CONV_K - 1));
                } else if (row >= GDN_ROW_A && row < GDN_ROW_QKV) {
                    o.a_log = a_log[row - GDN_ROW_A];
                    o.dt_bias = dt_bias[row - GDN_ROW_A];
                }
                return o;
            },
            [&](int item, int r, const float (&acc)[MV_R], const GdnInOperands& o) {
                const float v = pick(acc, r);
                const int row = item * MV_R + r;
                if (row < GDN_ROW_A) {
                    B.beta[row] = sigmoid_f(v);
                } else if (row < GDN_ROW_QKV) {
                    B.g[row - GDN_ROW_A] = -expf(o.a_log) * softplus_f(v + o.dt_bias);
                } else if (row < GDN_ROW_Z) {
                    const int c = row - GDN_ROW_QKV;
                    B.qkv[c] = causal_conv_step(v, o.conv, conv_state + c * (CONV_K - 1));
                } else {
                    B.z[row - GDN_ROW_Z] = v;
                }
                if constexpr (GDN_HEAD_COUNTERS)
                    publish_ready_rows(ready, item, r, GRID_BLOCKS * (WARPS / KS_GDN_IN), GDN_IN_ITEMS, GDN_ROW_Z,
                                       gdn_ready_slot);
            });
    }
    SYNC_GDN_IN
"#;

/// The rest of the GDN layer with its out_proj as its own phase
/// (`decode.gdn_out = separate_phase`).
pub const GDN_OUT_SEPARATE: &str = r#"    // Phase 2: recurrence over (v-head, value-column slice) items; its
    // per-warp q/k vectors sit after the in_proj input (other warps of the
    // block may still read that when there is no barrier in between).
    gated_delta_rule_step(B.qkv, B.beta, B.g, B.gdn_state + (size_t)slot * GDN_HV * GDN_DK * GDN_DV, B.gdn_o,
                          xs + HIDDEN + (threadIdx.x >> 5) * 2 * GDN_DK, ready);
    matvec_phase_ahead<MV_R, VALUE_DIM, KS_GDN_OUT>(HIDDEN_ITEMS, plain_rows<VALUE_DIM>(WPTR(u16, wb + W_GDN_OUT)));
    SYNC_GDN_REC
    if constexpr (GDN_HEAD_COUNTERS) reset_ready(ready, GDN_HK + GDN_HV);
    // Phase 3: gated RMSNorm (per block, per head) + out_proj + residual.
    gated_rms_norm_to_smem<PROLOGUE_BATCHED>(xs, B.gdn_o, B.z, WPTR(float, wb + W_GDN_NORM));
    matvec_phase_pre<MV_R, VALUE_DIM, KS_GDN_OUT, MV_R>(HIDDEN_ITEMS, xs, red, plain_rows<VALUE_DIM>(WPTR(u16, wb + W_GDN_OUT)),
        resid_load(B), resid_add(B));
    matvec_phase_ahead<2 * MLP_R, HIDDEN, KS_MLP_UP>(MLP_UP_ITEMS, mlp_up_rows(Wt, wb));
    SYNC_GDN_OUT
    mlp_block(B, Wt, layer, wb, xs, red, want_lm);
}

"#;

/// The rest of the GDN layer with the out_proj in the recurrence phase
/// (`decode.gdn_out = with_recurrence`, see `gated_delta_rule_out_step`).
pub const GDN_OUT_WITH_RECURRENCE: &str = r#"    // Phase 2: recurrence over (v-head, value-column slice) items, each then
    // applying the gated norm to its columns (once its head's sum of squares
    // is complete) and adding their out_proj contribution to the residual.
    gated_delta_rule_out_step(B.qkv, B.beta, B.g, B.gdn_state + (size_t)slot * GDN_HV * GDN_DK * GDN_DV, B.z,
                              WPTR(float, wb + W_GDN_NORM), WPTR(u16, LAYER_W_GDN_OUT_T[layer]), B.resid,
                              xs + HIDDEN + (threadIdx.x >> 5) * 2 * GDN_DK, ready + GDN_HK * READY_STRIDE);
    matvec_phase_ahead<2 * MLP_R, HIDDEN, KS_MLP_UP>(MLP_UP_ITEMS, mlp_up_rows(Wt, wb));
    SYNC_GDN_REC_OUT
    reset_head_sums(ready + GDN_HK * READY_STRIDE);
    mlp_block(B, Wt, layer, wb, xs, red, want_lm);
}

"#;

/// The attention layer.
pub const ATTN_LAYER: &str = r#"__device__ void attn_layer(const Bufs& B, const void* const* Wt, int layer, u32 token, u32 pos, float* xs, float* red, bool want_lm) {
    const int wb = LAYER_WBASE[layer];
    const int slot = LAYER_SLOT[layer];
    u32* ready = B.counters + CNT_ATT_READY;
    // Phase 1: q (with gate) / k / v projections.
    layer_input_norm(B, Wt, layer, wb, token, xs, red);
    matvec_phase<MV_R, HIDDEN, KS_ATT_QKV, MV_R>(ATT_QKV_ITEMS, xs, red, att_qkv_rows(Wt, wb),
        [&](int item, int r, const float (&acc)[MV_R]) {
            const float v = pick(acc, r);
            const int row = item * MV_R + r;
            if (row < ATT_QG_DIM) B.qg[row] = v;
            else if (row < ATT_QG_DIM + ATT_KV_DIM) B.k[row - ATT_QG_DIM] = v;
            else B.v[row - ATT_QG_DIM - ATT_KV_DIM] = v;
            if constexpr (ATT_HEAD_COUNTERS)
                publish_ready_rows(ready, item, r, GRID_BLOCKS * (WARPS / KS_ATT_QKV), ATT_QKV_ITEMS,
                                   ATT_QKV_ITEMS * MV_R, att_ready_slot);
        });
    SYNC_ATT_QKV
    // Phase 2: q/k norm + RoPE, KV append, attention over (q-head, chunk), two-level merge + gate.
    // Its per-warp vectors sit after the projection input (other warps of the
    // block may still read that when there is no barrier in between).
    const size_t cache_layer = (size_t)slot * ATT_HKV * MAX_CTX * ATT_HD;
    decode_attention(B.qg, B.k, B.v, WPTR(float, wb + W_ATT_Q_NORM), WPTR(float, wb + W_ATT_K_NORM),
                     B.k_cache + cache_layer, B.v_cache + cache_layer, B.part_acc, B.part_ml,
                     B.counters + CNT_ATT_MERGE, B.att_out, pos, xs + HIDDEN + (threadIdx.x >> 5) * 2 * ATT_HD,
                     ready);
    matvec_phase_ahead<MV_R, ATT_OUT_DIM, KS_ATT_O>(HIDDEN_ITEMS, plain_rows<ATT_OUT_DIM>(WPTR(u16, wb + W_ATT_O)));
    SYNC_ATT_CORE
    if constexpr (ATT_HEAD_COUNTERS) reset_ready(ready, ATT_H + ATT_HKV);
    // Phase 3: o_proj + residual.
    load_vec_to_smem<ATT_OUT_DIM>(xs, B.att_out);
    matvec_phase_pre<MV_R, ATT_OUT_DIM, KS_ATT_O, MV_R>(HIDDEN_ITEMS, xs, red, plain_rows<ATT_OUT_DIM>(WPTR(u16, wb + W_ATT_O)),
        resid_load(B), resid_add(B));
    matvec_phase_ahead<2 * MLP_R, HIDDEN, KS_MLP_UP>(MLP_UP_ITEMS, mlp_up_rows(Wt, wb));
    SYNC_ATT_OUT
    mlp_block(B, Wt, layer, wb, xs, red, want_lm);
}
"#;

/// The weight stream's cursor (`prefetch: shared_ring` only): the matvec
/// phases of the layer programs above and the LM head, in the order the
/// token loop runs them, step after step.
pub const STREAM_CURSOR: &str = r#"// ---- weight stream cursor: the token program's weight reads in order, step after step ----
// The LM head runs on the steps that produce a token (as in the token loop).
__device__ __forceinline__ bool ws_step_has_lm_head(u32 step) {
    const WsLaunch& l = ws_launch();
    return l.max_new_tokens > 0u && step + 1u >= l.n_input;
}

__device__ __noinline__ bool ws_issue_next(WarpStream& s) {
    const void* const* Wt = ws_launch().weights;
    // A warp with no item in a whole token's phases has nothing to stream.
    for (int idle = 0; idle <= 4 * N_LAYERS + 2; ++idle) {
        WsIssue r;
        if (s.layer == N_LAYERS) {
            r = ws_step_has_lm_head(s.step) ? ws_try_issue_lm(s) : WS_PHASE_DONE;
            if (r == WS_PHASE_DONE) {
                s.k = 0;
                s.layer = 0;
                ++s.step;
                continue;
            }
            return r == WS_ISSUED;
        }
        const int wb = LAYER_WBASE[s.layer];
        const bool attn = LAYER_IS_ATTN[s.layer];
        switch (s.phase) {
        case 0:  // GDN_IN | ATT_QKV
            r = attn ? ws_try_issue<MV_R, HIDDEN, KS_ATT_QKV>(s, ATT_QKV_ITEMS, att_qkv_rows(Wt, wb))
                     : ws_try_issue<MV_R, HIDDEN, KS_GDN_IN>(s, GDN_IN_ITEMS, gdn_in_rows(Wt, wb));
            break;
        case 1:  // GDN_OUT | ATT_OUT
            r = attn ? ws_try_issue<MV_R, ATT_OUT_DIM, KS_ATT_O>(s, HIDDEN_ITEMS, plain_rows<ATT_OUT_DIM>(WPTR(u16, wb + W_ATT_O)))
                     : ws_try_issue<MV_R, VALUE_DIM, KS_GDN_OUT>(s, HIDDEN_ITEMS, plain_rows<VALUE_DIM>(WPTR(u16, wb + W_GDN_OUT)));
            break;
        case 2:  // MLP_UP
            r = ws_try_issue<2 * MLP_R, HIDDEN, KS_MLP_UP>(s, MLP_UP_ITEMS, mlp_up_rows(Wt, wb));
            break;
        default:  // MLP_DOWN
            r = ws_try_issue<MV_R, INTER, KS_MLP_DOWN>(s, HIDDEN_ITEMS, plain_rows<INTER>(WPTR(u16, wb + W_MLP_DOWN)));
            break;
        }
        if (r != WS_PHASE_DONE) return r == WS_ISSUED;
        s.k = 0;
        if (++s.phase == 4) {
            s.phase = 0;
            ++s.layer;  // N_LAYERS: the LM head
        }
    }
    return false;
}
"#;

/// The kernel entry: token loop with on-device feedback.
pub const ENTRY: &str = r#"// ---- the megakernel: a loop over tokens, one persistent grid ----
__device__ __forceinline__ bool is_eos(u32 t, const DecodeParams& p) {
    for (u32 i = 0; i < p.n_eos && i < MAX_EOS; ++i) if (p.eos_ids[i] == t) return true;
    return false;
}

extern "C" __global__ void __launch_bounds__(THREADS, BLOCKS_PER_SM)
KERNEL_NAME(const void* const* __restrict__ Wt, void* const* __restrict__ Bt, const DecodeParams p) {
    extern __shared__ __align__(16) float smem[];
    __shared__ float red[WARPS * 16];
    __shared__ float smem_stats[2 * WARPS];
    __shared__ u32 smem_flag;
    float* xs = smem;
    // The buffer pointers live in shared memory, not in ~60 registers across the token loop.
    __shared__ Bufs B_shared;
    if (threadIdx.x == 0) B_shared = bind_buffers(Bt);
    PROFILE_BIND
    __syncthreads();
    grid_barrier_init(B_shared.barrier);
    ws_start(Wt, p);
    const Bufs& B = B_shared;
    u32 err = ERR_NONE, stop = STOP_INPUT_DONE, n_gen = 0, processed = 0;
    if (p.n_input == 0u) { err = ERR_NO_INPUT; stop = STOP_ERROR; }
    // Layer 0's first items, for the first step (FIRST_ITEM_SMEM; later
    // steps get theirs before the sync point that ends the step).
    if constexpr (FIRST_ITEM_SMEM) prefetch_layer_entry(Wt, 0, false);
    for (u32 step = 0; err == ERR_NONE; ++step) {
        PROFILE_STEP_START
        // Every decision below reads values all blocks agree on, so all
        // blocks take the same path through every grid barrier.
        const u32 pos = p.start_pos + step;
        if (pos >= (u32)MAX_CTX) { err = ERR_CONTEXT_FULL; stop = STOP_ERROR; break; }
        const bool is_input = step < p.n_input;
        const u32 token = is_input ? ld_shared_u32(B.prompt_ids + step) : ld_shared_u32(B.next_token);
        if (token >= (u32)VOCAB) { err = ERR_BAD_TOKEN; stop = STOP_ERROR; break; }
        if (is_input && (p.flags & FLAG_COUNT_INPUT) && blockIdx.x == 0 && threadIdx.x == 0) B.counts[token] |= 0x80000000u;
        const bool want_token = p.max_new_tokens > 0u && step + 1u >= p.n_input;
        // After prefill the first step's layers already ran: resid is ready.
        const bool resid_ready = step == 0u && (p.flags & FLAG_RESID_READY);
        for (int layer = 0; layer < N_LAYERS && !resid_ready; ++layer) {
            if (LAYER_IS_ATTN[layer]) attn_layer(B, Wt, layer, token, pos, xs, red, want_token);
            else gdn_layer(B, Wt, layer, token, xs, red, want_token);
        }
        processed = step + 1;
        if (!want_token) {
            if (step + 1u >= p.n_input) { stop = STOP_INPUT_DONE; break; }
            continue;
        }
        // Final norm + LM head + sampler; the last block publishes the token.
        rms_norm_to_smem<HIDDEN>(xs, B.resid, WPTR(float, W_FINAL_NORM), red);
        float* pool_v = smem + HIDDEN;  // after the normed hidden state
        u32* pool_i = reinterpret_cast<u32*>(pool_v + SAMPLE_POOL_POW2);
        const bool last = lm_head_logits(WPTR(u16, W_LM_HEAD), xs, B.counts, p, B.logits, B.cand_v, B.cand_i,
                                         B.lm_stats, B.counters + CNT_LM_HEAD, pool_v, pool_i, smem_stats, &smem_flag);
        if (last) sample_token(p, n_gen, B.cand_v, B.cand_i, B.lm_stats, pool_v, pool_i, &smem_flag, B.counts,
                               B.out_tokens, B.next_token, B.draws);
        if (PREFETCH || FIRST_ITEM_SMEM) prefetch_layer_entry(Wt, 0, false);
        SYNC_LM_HEAD
        const u32 next = ld_shared_u32(B.next_token);
        ++n_gen;
        if (is_eos(next, p)) { stop = STOP_EOS; break; }
        if (n_gen >= p.max_new_tokens) { stop = STOP_MAX_TOKENS; break; }
    }
    ws_drain();
    if constexpr (FIRST_ITEM_SMEM) cp_async_wait_all();  // copies for a step that did not run
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        B.status[STATUS_N_GENERATED] = n_gen;
        B.status[STATUS_ERROR] = err;
        B.status[STATUS_NEXT_POS] = p.start_pos + processed;
        B.status[STATUS_STOP_REASON] = stop;
        B.status[STATUS_LAST_TOKEN] = n_gen > 0u ? ld_shared_u32(B.next_token) : 0u;
    }
}
"#;
