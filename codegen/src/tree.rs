//! DDTree verify kernels (spec §5.5): the target model verifies a token tree
//! in one pass. Recurrent layers need parent-aware processing:
//!
//! * `tree_causal_conv`: node i's conv window follows the parent chain
//!   `[x(anc_{K-1}(i)), ..., x(parent(i)), x(i)]`, falling back into the
//!   committed conv state when the chain passes the root.
//! * `tree_gated_delta_rule`: `S_in(i) = S_out(parent(i))` (the root starts
//!   from the committed state), one decode step per node in node order
//!   (parents precede children), every `S_out(i)` persisted so the commit can
//!   copy the last accepted node's state.
//! * `tree_qk_norm_rope` + `tree_attention`: attention of every node over the
//!   committed prefix plus its ancestors (and itself), GQA, with the tree's K/V
//!   written at cache slots `prefix_len + node`, positions `prefix_len + depth`.
//!
//! The projections around these kernels are plain GEMMs (the prefill GEMM).

use std::fmt::Write;

use lucebox_models::config::Qwen35Config;
use lucebox_schedules::Schedule;

use crate::blocks;
use crate::cuda::{Constant, HeaderInfo, header, write_constants};
use crate::{CodegenError, GeneratedKernel, KernelKind};

pub const ENTRY_POINTS: [&str; 4] = [
    "tree_causal_conv",
    "tree_gated_delta_rule",
    "tree_qk_norm_rope",
    "tree_attention",
];

const TREE_KERNELS: &str = r#"// ---- tree_causal_conv ----
// x: [n_nodes][CONV_DIM] pre-conv in_proj_qkv outputs (f32); parent[i] < i, -1 for the root.
// conv_state: [CONV_DIM][CONV_K-1] committed (oldest first); w: [CONV_DIM][CONV_K] f32.
// y: [n_nodes][CONV_DIM] = silu(conv). One thread per (node, channel).
extern "C" __global__ void __launch_bounds__(TREE_THREADS)
tree_causal_conv(const float* __restrict__ x, const int* __restrict__ parent, int n_nodes,
                 const float* __restrict__ conv_state, const float* __restrict__ w, float* __restrict__ y) {
    const long long idx = (long long)blockIdx.x * TREE_THREADS + threadIdx.x;
    if (idx >= (long long)n_nodes * CONV_DIM) return;
    const int node = (int)(idx / CONV_DIM), c = (int)(idx % CONV_DIM);
    const float* wc = w + (size_t)c * CONV_K;
    float acc = wc[CONV_K - 1] * x[(size_t)node * CONV_DIM + c];
    int cur = node, into_state = 0;
#pragma unroll
    for (int s = 1; s < CONV_K; ++s) {
        if (cur >= 0) cur = parent[cur];
        float xv;
        if (cur >= 0) {
            xv = x[(size_t)cur * CONV_DIM + c];
        } else {
            ++into_state;  // the chain passed the root: committed inputs, newest last
            xv = conv_state[(size_t)c * (CONV_K - 1) + (CONV_K - 1 - into_state)];
        }
        acc = fmaf(wc[CONV_K - 1 - s], xv, acc);
    }
    y[(size_t)node * CONV_DIM + c] = silu_f(acc);
}

// ---- tree_gated_delta_rule ----
// qkv: [n_nodes][CONV_DIM] post-conv; beta, g: [n_nodes][GDN_HV]; state_in: committed
// [GDN_HV][GDN_DK][GDN_DV]; states_out: [n_nodes][GDN_HV][GDN_DK][GDN_DV] (S_out per node);
// o: [n_nodes][VALUE_DIM]. One warp per (v-head, column slice), looping over nodes in order.
extern "C" __global__ void __launch_bounds__(TREE_THREADS)
tree_gated_delta_rule(const float* __restrict__ qkv, const float* __restrict__ beta, const float* __restrict__ g,
                      const int* __restrict__ parent, int n_nodes, const float* __restrict__ state_in,
                      float* __restrict__ states_out, float* __restrict__ o) {
    constexpr int ITEMS_PER_HEAD = GDN_DV / GDN_COLS;
    constexpr int KPL = GDN_DK / GDN_KEY_GROUPS;
    constexpr size_t STATE = (size_t)GDN_HV * GDN_DK * GDN_DV;
    const int lane = threadIdx.x & 31;
    const int item = blockIdx.x * (TREE_THREADS / 32) + (threadIdx.x >> 5);
    if (item >= GDN_HV * ITEMS_PER_HEAD) return;
    const int h = item / ITEMS_PER_HEAD, col0 = (item % ITEMS_PER_HEAD) * GDN_COLS;
    const int kg = lane / GDN_COLS, col = lane % GDN_COLS;
    const int kh = h / GDN_V_PER_K;
    const size_t head_off = (size_t)h * GDN_DK * GDN_DV + col0 + col;
    for (int i = 0; i < n_nodes; ++i) {
        const float* q = qkv + (size_t)i * CONV_DIM + kh * GDN_DK;
        const float* k = qkv + (size_t)i * CONV_DIM + KEY_DIM + kh * GDN_DK;
        float sq = 0.0f, sk = 0.0f;
        for (int t = lane; t < GDN_DK; t += 32) { sq = fmaf(q[t], q[t], sq); sk = fmaf(k[t], k[t], sk); }
        const float q_scale = rsqrtf(warp_sum(sq) + 1e-6f) * GDN_Q_SCALE;
        const float k_scale = rsqrtf(warp_sum(sk) + 1e-6f);
        const int par = parent[i];
        // S_in(i) = S_out(parent(i)); the root reads the committed state. Written
        // by this same warp (earlier iteration), so plain loads are coherent.
        const float* S_in = (par < 0 ? state_in : states_out + (size_t)par * STATE) + head_off;
        float* S_out = states_out + (size_t)i * STATE + head_off;
        const float decay = expf(g[(size_t)i * GDN_HV + h]);
        const float b = beta[(size_t)i * GDN_HV + h];
        const float v = qkv[(size_t)i * CONV_DIM + 2 * KEY_DIM + h * GDN_DV + col0 + col];
        float s[KPL];
        float kd = 0.0f;
#pragma unroll
        for (int t = 0; t < KPL; ++t) {
            const int key = kg + GDN_KEY_GROUPS * t;
            s[t] = S_in[(size_t)key * GDN_DV] * decay;
            kd = fmaf(s[t], k[key] * k_scale, kd);
        }
#pragma unroll
        for (int off = GDN_COLS; off < 32; off <<= 1) kd += __shfl_xor_sync(FULL_MASK, kd, off);
        const float u = b * (v - kd);
        float od = 0.0f;
#pragma unroll
        for (int t = 0; t < KPL; ++t) {
            const int key = kg + GDN_KEY_GROUPS * t;
            s[t] = fmaf(k[key] * k_scale, u, s[t]);
            od = fmaf(s[t], q[key] * q_scale, od);
            S_out[(size_t)key * GDN_DV] = s[t];
        }
#pragma unroll
        for (int off = GDN_COLS; off < 32; off <<= 1) od += __shfl_xor_sync(FULL_MASK, od, off);
        if (kg == 0) o[(size_t)i * VALUE_DIM + h * GDN_DV + col0 + col] = od;
        __syncwarp();
    }
}

// ---- tree_qk_norm_rope ----
// qg: [n_nodes][ATT_QG_DIM] q_proj outputs (per head [query | gate]); kv: [n_nodes][2][ATT_KV_DIM]
// k/v_proj outputs. Writes q (normed, roped, scaled) to q_out [n_nodes][ATT_H][ATT_HD] and K/V
// (bf16) to the cache at slot prefix_len + node. Position of a node = prefix_len + depth.
// One warp per (node, head) over ATT_H + ATT_HKV heads.
extern "C" __global__ void __launch_bounds__(TREE_THREADS)
tree_qk_norm_rope(const float* __restrict__ qg, const float* __restrict__ kv, const int* __restrict__ depth,
                  int n_nodes, int prefix_len, const float* __restrict__ q_norm_w, const float* __restrict__ k_norm_w,
                  float* __restrict__ q_out, u16* __restrict__ k_cache, u16* __restrict__ v_cache) {
    const int gw = blockIdx.x * (TREE_THREADS / 32) + (threadIdx.x >> 5);
    if (gw >= n_nodes * (ATT_H + ATT_HKV)) return;
    const int node = gw / (ATT_H + ATT_HKV), head = gw % (ATT_H + ATT_HKV);
    const int lane = threadIdx.x & 31, d0 = lane * ATT_EPL;
    const u32 pos = (u32)(prefix_len + depth[node]);
    const int slot = prefix_len + node;
    float v[ATT_EPL];
    if (head < ATT_H) {
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) v[e] = qg[(size_t)node * ATT_QG_DIM + head * 2 * ATT_HD + d0 + e];
        head_rms_norm(v, q_norm_w);
        rope_partial(v, pos);
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) q_out[((size_t)node * ATT_H + head) * ATT_HD + d0 + e] = v[e] * ATT_SCALE;
    } else {
        const int kvh = head - ATT_H;
        const float* kp = kv + (size_t)node * 2 * ATT_KV_DIM + kvh * ATT_HD + d0;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) v[e] = kp[e];
        head_rms_norm(v, k_norm_w);
        rope_partial(v, pos);
        store_bf16_vec<ATT_EPL>(k_cache + ((size_t)kvh * MAX_CTX + slot) * ATT_HD + d0, v);
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) v[e] = kp[ATT_KV_DIM + e];
        store_bf16_vec<ATT_EPL>(v_cache + ((size_t)kvh * MAX_CTX + slot) * ATT_HD + d0, v);
    }
}

// ---- tree_attention ----
// One warp per (node, query head): softmax over the committed prefix [0, prefix_len) and the
// node's ancestors-or-self among the tree slots (ancestor mask from the parent chain).
// qg gives the output gate; out: [n_nodes][ATT_OUT_DIM] = attention * sigmoid(gate).
extern "C" __global__ void __launch_bounds__(TREE_THREADS)
tree_attention(const float* __restrict__ q, const float* __restrict__ qg, const int* __restrict__ parent,
               int n_nodes, int prefix_len, const u16* __restrict__ k_cache, const u16* __restrict__ v_cache,
               float* __restrict__ out) {
    const int gw = blockIdx.x * (TREE_THREADS / 32) + (threadIdx.x >> 5);
    if (gw >= n_nodes * ATT_H) return;
    const int node = gw / ATT_H, hq = gw % ATT_H, kvh = hq / ATT_G;
    const int lane = threadIdx.x & 31, d0 = lane * ATT_EPL;
    if (prefix_len + n_nodes > MAX_CTX) return;
    float qv[ATT_EPL], acc[ATT_EPL];
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) { qv[e] = q[((size_t)node * ATT_H + hq) * ATT_HD + d0 + e]; acc[e] = 0.0f; }
    float m = NEG_INF, l = 0.0f;
    const u16* kc = k_cache + (size_t)kvh * MAX_CTX * ATT_HD + d0;
    const u16* vc = v_cache + (size_t)kvh * MAX_CTX * ATT_HD + d0;
    auto visit = [&](int p) {
        float kf[ATT_EPL], vf[ATT_EPL];
        load_bf16_vec<ATT_EPL>(kc + (size_t)p * ATT_HD, kf);
        load_bf16_vec<ATT_EPL>(vc + (size_t)p * ATT_HD, vf);
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) s = fmaf(qv[e], kf[e], s);
        s = warp_sum(s);
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new), pw = expf(s - m_new);
        l = l * corr + pw;
#pragma unroll
        for (int e = 0; e < ATT_EPL; ++e) acc[e] = fmaf(acc[e], corr, pw * vf[e]);
        m = m_new;
    };
    for (int p = 0; p < prefix_len; ++p) visit(p);
    for (int a = node; a >= 0; a = parent[a]) visit(prefix_len + a);  // self, then ancestors
    const float inv = 1.0f / l;
#pragma unroll
    for (int e = 0; e < ATT_EPL; ++e) {
        const float gate = qg[(size_t)node * ATT_QG_DIM + hq * 2 * ATT_HD + ATT_HD + d0 + e];
        out[(size_t)node * ATT_OUT_DIM + hq * ATT_HD + d0 + e] = acc[e] * inv * sigmoid_f(gate);
    }
}
"#;

pub fn generate_tree(
    cfg: &Qwen35Config,
    sched: &Schedule,
) -> Result<GeneratedKernel, CodegenError> {
    cfg.validate()
        .map_err(|e| CodegenError::Config(e.to_string()))?;
    sched.validate(Some(&crate::model_dims(cfg)))?;
    let t = &sched.tree;
    let notes = vec![
        format!(
            "tree budget {} (max {}), top-k {} per depth",
            t.budget, t.max_budget, t.top_k
        ),
        format!("kernels: {}", ENTRY_POINTS.join(", ")),
    ];
    let mut src = header(&HeaderInfo {
        title: "Qwen3.5 DDTree verify kernels",
        cfg,
        sched,
        grid: "per launch, sized by the number of tree nodes".into(),
        threads: t.threads,
        sync_points_per_token: None,
        notes: &notes,
    })?;
    src.push_str(blocks::prelude::PRELUDE);
    src.push('\n');
    write_constants(
        &mut src,
        "schedule",
        &[
            Constant::int("TREE_THREADS", t.threads, "threads per block"),
            Constant::int("TREE_MAX_NODES", t.max_budget + 1, "budget + root"),
            Constant::int(
                "GDN_COLS",
                sched.decode.gdn_value_cols_per_warp,
                "value columns per warp",
            ),
            Constant::int(
                "GDN_KEY_GROUPS",
                32 / sched.decode.gdn_value_cols_per_warp,
                "",
            ),
            Constant::int("MAX_CTX", sched.max_context, "KV cache positions"),
        ],
    )?;
    write_constants(
        &mut src,
        "model",
        &crate::model_constants::head_constants(cfg, ""),
    )?;
    src.push_str(blocks::rope::ROPE);
    src.push('\n');
    src.push_str(blocks::decode_attention::HEAD_HELPERS);
    src.push('\n');
    src.push_str(TREE_KERNELS);
    writeln!(src)?;
    Ok(GeneratedKernel {
        kind: KernelKind::Tree,
        file_name: format!(
            "{}_tree_{}.cu",
            crate::decode::sanitize(&cfg.name),
            sched.preset
        ),
        source: src,
        entry_points: ENTRY_POINTS.iter().map(|s| s.to_string()).collect(),
        arch: sched.arch,
        sync_points_per_token: None,
    })
}
