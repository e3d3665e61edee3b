//! The prefill launch sequence: which kernel runs when, on what grid, over
//! which weights and buffers. The runtime walks [`PrefillPlan::launches`] in
//! order; every argument is typed ([`Arg`]) and grids are functions of the
//! prompt length ([`Grid::dims`]).

use lucebox_models::config::{LayerType, Qwen35Config};
use lucebox_schedules::Schedule;

use super::{CONV_SEG, GDN_OCOLS, GDN_THREADS, ROW_THREADS, geometry};
use crate::CodegenError;

/// A launch grid as a function of the prompt length T.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// GEMM: `[ceil(n / cols_per_block) rounded up to whole clusters,
    /// ceil(T / rows_per_block), splits]`.
    GemmTiles {
        n: u32,
        cols_per_block: u32,
        rows_per_block: u32,
        /// Blocks per cluster along x (the kernel's `__cluster_dims__`).
        cluster: u32,
        /// Split-K factor (blockIdx.z; the kernel reads it from gridDim.z).
        splits: SplitK,
    },
    /// One block per token: `[T, 1, 1]`.
    PerToken,
    /// `ceil(T * items_per_token / items_per_block)` blocks.
    PerTokenItems {
        items_per_token: u32,
        items_per_block: u32,
    },
    /// Conv: `[ceil(channels / threads), ceil(T / tokens_per_thread), 1]`.
    ChannelSegments {
        channels: u32,
        threads: u32,
        tokens_per_thread: u32,
    },
    /// Independent of T.
    Fixed(u32),
    /// `[heads, ceil(T / tokens_per_block), 1]`: attention (tokens per
    /// block), GDN prep and output (one block per chunk).
    HeadsByTokens { heads: u32, tokens_per_block: u32 },
}

impl Grid {
    pub fn dims(&self, t: u32) -> [u32; 3] {
        match *self {
            Grid::GemmTiles {
                n,
                cols_per_block,
                rows_per_block,
                splits,
                cluster,
            } => {
                let tiles = [
                    n.div_ceil(cols_per_block).next_multiple_of(cluster.max(1)),
                    t.div_ceil(rows_per_block),
                ];
                [tiles[0], tiles[1], splits.for_tiles(tiles[0] * tiles[1])]
            }
            Grid::PerToken => [t, 1, 1],
            Grid::PerTokenItems {
                items_per_token,
                items_per_block,
            } => [
                (t as u64 * items_per_token as u64).div_ceil(items_per_block as u64) as u32,
                1,
                1,
            ],
            Grid::ChannelSegments {
                channels,
                threads,
                tokens_per_thread,
            } => [channels.div_ceil(threads), t.div_ceil(tokens_per_thread), 1],
            Grid::Fixed(n) => [n, 1, 1],
            Grid::HeadsByTokens {
                heads,
                tokens_per_block,
            } => [heads, t.div_ceil(tokens_per_block), 1],
        }
    }
}

/// How a GEMM splits K over blockIdx.z.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitK {
    /// The same split at every prompt length.
    Fixed(u32),
    /// Chosen per prompt from the output tiles it has: the split of at most
    /// `max` that finishes soonest when `slots` blocks run at once, each
    /// costing its k tiles plus a fixed start-up and epilogue (and the
    /// partial tiles' round trip when split). For kernels that fill an SM
    /// with one block, where a few blocks past a full wave cost a whole wave.
    PerPrompt { k_tiles: u32, max: u32, slots: u32 },
}

impl SplitK {
    /// Start-up (pipeline fill) and epilogue of a block, in k tiles.
    const BLOCK_OVERHEAD: u32 = 3;
    /// Storing and summing partial tiles, in k tiles.
    const SPLIT_OVERHEAD: u32 = 2;

    /// The split for a GEMM of `tiles` output tiles.
    pub fn for_tiles(&self, tiles: u32) -> u32 {
        match *self {
            SplitK::Fixed(s) => s.max(1),
            SplitK::PerPrompt {
                k_tiles,
                max,
                slots,
            } => (1..=max.max(1))
                .min_by_key(|&s| {
                    let waves = (tiles * s).div_ceil(slots.max(1));
                    let per_block = k_tiles.div_ceil(s)
                        + Self::BLOCK_OVERHEAD
                        + if s > 1 { Self::SPLIT_OVERHEAD } else { 0 };
                    waves * per_block
                })
                .unwrap_or(1),
        }
    }

    /// The largest split at any prompt length (sizes the partial tiles).
    pub fn max(&self) -> u32 {
        match *self {
            SplitK::Fixed(s) => s.max(1),
            SplitK::PerPrompt { max, .. } => max.max(1),
        }
    }
}

/// One kernel argument, in the kernel's parameter order.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A weight by canonical name (`layers.3.self_attn.q_proj.weight`), in the
    /// decode ABI's dtype (bf16 matrices, f32 vectors).
    Weight(String),
    /// Matrices with the same column count whose rows the runtime stores back
    /// to back, in this order (one of [`contiguous_weight_groups`]): the
    /// address of the first, read as one matrix of all their rows.
    Weights(Vec<String>),
    /// A per-prompt scratch buffer ([`PrefillPlan::scratch`]).
    Scratch(&'static str),
    /// Column `col` of a row-major f32 scratch buffer: the buffer's address
    /// plus `4 * col` bytes (a kernel reads its slice with the full row stride).
    ScratchCol { name: &'static str, col: u32 },
    /// A slice of a decode-ABI state buffer (`k_cache`, `v_cache`,
    /// `gdn_state`, `conv_state`) for the layer's slot of that type.
    State { buffer: &'static str, slot: usize },
    /// The prompt's token ids (u32 [T]).
    Tokens,
    /// T (int).
    PromptLen,
    /// Position of the first prompt token (int).
    StartPos,
    /// A whole decode-ABI buffer by name (`token_counts`).
    DecodeBuffer(&'static str),
    /// A literal int (GEMM dims, epilogue selector).
    Int(i32),
    /// A null pointer (unused operand).
    Null,
    /// The device address of a TMA descriptor of a bf16 matrix (the sm_90
    /// GEMM's operands), which the runtime encodes once.
    TensorMap(TmaOperand),
}

impl Arg {
    /// The matrix behind a GEMM operand: a [`Arg::TensorMap`]'s, or the
    /// argument itself.
    pub fn matrix(&self) -> &Arg {
        match self {
            Arg::TensorMap(op) => &op.matrix,
            a => a,
        }
    }
}

/// A row-major bf16 matrix as TMA reads it: a 2-D `CUtensorMap` with the
/// 128-byte swizzle that wgmma's descriptors expect, rows past `rows` read
/// as zeros.
#[derive(Debug, Clone, PartialEq)]
pub struct TmaOperand {
    /// The matrix: an [`Arg::Weight`], [`Arg::Weights`] or [`Arg::Scratch`].
    pub matrix: Box<Arg>,
    /// Rows of the matrix; `None`: the scratch buffer's token capacity
    /// (rows past the prompt are read but their results never stored).
    pub rows: Option<u32>,
    /// bf16 elements per row, which is also the row stride.
    pub cols: u32,
    /// The box one copy moves: `box_cols` (64: one 128-byte swizzle row) x
    /// `box_rows`.
    pub box_cols: u32,
    pub box_rows: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    pub kernel: &'static str,
    pub grid: Grid,
    pub block: u32,
    /// Dynamic shared memory; above 48 KiB the runtime must raise the
    /// kernel's `MAX_DYNAMIC_SHARED_SIZE_BYTES` attribute first.
    pub dynamic_smem: u32,
    /// Decoder layer, or None for the embedding / final norm.
    pub layer: Option<usize>,
    pub args: Vec<Arg>,
}

/// A scratch buffer, sized per prompt token.
#[derive(Debug, Clone, PartialEq)]
pub struct ScratchBuffer {
    pub name: &'static str,
    pub bytes_per_token: u64,
    pub what: &'static str,
    /// Zeroed once at allocation (counters that reset themselves); other
    /// scratch is poisoned instead.
    pub zeroed: bool,
}

/// How prefill hands over to the decode megakernel: after the launches the
/// runtime copies the last prompt row of `scratch` (the residual stream after
/// the last layer) into the decode ABI buffer `decode_buffer`; a decode
/// launch with `FLAG_RESID_READY` then starts that token at the final norm,
/// LM head and sampler.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    pub scratch: &'static str,
    pub decode_buffer: &'static str,
    pub row_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrefillPlan {
    pub scratch: Vec<ScratchBuffer>,
    pub launches: Vec<Launch>,
    pub handoff: Handoff,
    /// Launch every kernel as a programmatic dependent of the one before
    /// (`prefill.programmatic_launch`: each kernel waits for its predecessor
    /// in `prefill_entry`, so the runtime may let it start early).
    pub programmatic_launch: bool,
}

/// GEMM epilogue selectors (`EPI_*` in the generated file).
pub const EPI_STORE_F32: i32 = 0;
pub const EPI_ADD_F32: i32 = 1;
pub const EPI_STORE_BF16: i32 = 2;
pub const EPI_SWIGLU_BF16: i32 = 3;

/// Columns of an attention layer's fused input projection: [q+gate | k | v].
pub fn att_proj_cols(cfg: &Qwen35Config) -> u32 {
    (cfg.q_proj_out() + 2 * cfg.kv_dim()) as u32
}

/// Columns of a GDN layer's fused input projection: [qkv | z | b | a].
pub fn gdn_proj_cols(cfg: &Qwen35Config) -> u32 {
    (cfg.conv_dim() + cfg.linear_value_dim() + 2 * cfg.linear_num_value_heads) as u32
}

/// The input projections of layer `layer`, in the row order of its fused
/// projection: one GEMM reads them as one matrix, so the runtime must store
/// them back to back ([`contiguous_weight_groups`]).
pub fn contiguous_weight_group(cfg: &Qwen35Config, layer: usize) -> Vec<String> {
    let names: &[&str] = match cfg.layer_types[layer] {
        LayerType::FullAttention => &[
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
        ],
        LayerType::LinearAttention => &[
            "linear_attn.in_proj_qkv.weight",
            "linear_attn.in_proj_z.weight",
            "linear_attn.in_proj_b.weight",
            "linear_attn.in_proj_a.weight",
        ],
    };
    names
        .iter()
        .map(|n| format!("layers.{layer}.{n}"))
        .collect()
}

/// Every layer's [`contiguous_weight_group`]: weights the engine must upload
/// back to back, in this order, for the prefill GEMMs that read them as one.
pub fn contiguous_weight_groups(cfg: &Qwen35Config) -> Vec<Vec<String>> {
    (0..cfg.layer_types.len())
        .map(|i| contiguous_weight_group(cfg, i))
        .collect()
}

/// The ordered launches that prefill a prompt for (cfg, sched).
pub fn prefill_plan(cfg: &Qwen35Config, sched: &Schedule) -> Result<PrefillPlan, CodegenError> {
    let g = geometry(cfg, sched)?;
    let u = |v: usize| v as u32;
    let (d, inter) = (u(cfg.hidden_size), u(cfg.intermediate_size));
    let act = g.act_parts as u64;
    let (hv, dk, dv, g_chunk) = (
        u(cfg.linear_num_value_heads),
        u(cfg.linear_key_head_dim),
        u(cfg.linear_value_head_dim),
        sched.prefill.gdn_chunk,
    );
    let mut scratch = vec![
        ScratchBuffer {
            name: "resid",
            bytes_per_token: d as u64 * 4,
            what: "f32 [T][hidden] residual stream",
            zeroed: false,
        },
        ScratchBuffer {
            name: "xnorm",
            bytes_per_token: d as u64 * 2 * act,
            what: "bf16 [T][ACT_PARTS x hidden] normed GEMM input",
            zeroed: false,
        },
        ScratchBuffer {
            name: "in_proj",
            bytes_per_token: gdn_proj_cols(cfg).max(att_proj_cols(cfg)) as u64 * 4,
            what: "f32: the fused input projection of a layer, [q+gate | k | v] (attention) or \
                   [qkv | z | b | a] (GDN)",
            zeroed: false,
        },
        ScratchBuffer {
            name: "mixed",
            bytes_per_token: cfg.attn_out_dim().max(cfg.conv_dim()) as u64 * 4,
            what: "f32: roped q (attention) or conv output (GDN, unless the prep computes the conv)",
            zeroed: false,
        },
        ScratchBuffer {
            name: "gdn_o",
            bytes_per_token: cfg.linear_value_dim() as u64 * 4,
            what: "f32 [T][value_dim] delta-rule output",
            zeroed: false,
        },
        // Chunked GDN scratch, chunk-major ([chunk][Hv][...]); the runtime sizes
        // every buffer for round_up(T_max, gdn_chunk) tokens.
        ScratchBuffer {
            name: "gdn_u",
            bytes_per_token: cfg.linear_value_dim() as u64 * 4,
            what: "f32 [chunk][Hv][C][dv] GDN U = (I+A)^-1 beta V, then V_new",
            zeroed: false,
        },
        ScratchBuffer {
            name: "gdn_w",
            bytes_per_token: (hv * dk) as u64 * 4,
            what: "f32 [chunk][Hv][C][dk] GDN W = (I+A)^-1 beta e^gamma K",
            zeroed: false,
        },
        ScratchBuffer {
            name: "gdn_kd",
            bytes_per_token: (hv * dk) as u64 * 4,
            what: "f32 [chunk][Hv][C][dk] GDN K e^(gamma_C - gamma)",
            zeroed: false,
        },
        ScratchBuffer {
            name: "gdn_qg",
            bytes_per_token: (hv * dk) as u64 * 4,
            what: "f32 [chunk][Hv][C][dk] GDN scaled Q e^gamma",
            zeroed: false,
        },
        ScratchBuffer {
            name: "gdn_p",
            bytes_per_token: (hv * g_chunk) as u64 * 4,
            what: "f32 [chunk][Hv][C][C] GDN P = (Q K^T) D, lower incl. diagonal",
            zeroed: false,
        },
        ScratchBuffer {
            name: "gdn_gam",
            bytes_per_token: hv as u64 * 4,
            what: "f32 [chunk][Hv][C] GDN cumulative log-decay in the chunk",
            zeroed: false,
        },
        ScratchBuffer {
            name: "gdn_sc",
            // dk * dv is a multiple of the chunk (checked in geometry())
            bytes_per_token: (hv * dk * dv / g_chunk) as u64 * 4,
            what: "f32 [chunk][Hv][dv][dk] GDN state at each chunk's start (transposed); \
                   Hv*dk*dv floats per chunk, declared per token as that / chunk",
            zeroed: false,
        },
        ScratchBuffer {
            name: "mixer_out",
            bytes_per_token: cfg.attn_out_dim().max(cfg.linear_value_dim()) as u64 * 2 * act,
            what: "bf16 x ACT_PARTS: gated attention / gated-norm output (o_proj, out_proj input)",
            zeroed: false,
        },
        ScratchBuffer {
            name: "mlp_act",
            bytes_per_token: inter as u64 * 2 * act,
            what: "bf16 [T][ACT_PARTS x intermediate] silu(gate) * up",
            zeroed: false,
        },
    ];
    // Split-K, with at least 8 k tiles per split. mma.sync / FMA: so that a
    // GEMM at a typical prompt (512 tokens) gives every SM about 4 blocks.
    // wgmma (one block fills an SM's shared memory): per prompt, so that the
    // blocks fill whole waves.
    let nominal_t = 512u32;
    let split_for = |col_blocks: u32, k: u32| -> SplitK {
        let max = (k / g.gemm_bk / 8).clamp(1, 8);
        if sched.prefill.gemm_wgmma {
            return SplitK::PerPrompt {
                k_tiles: k / g.gemm_bk,
                max,
                slots: sched.sm_count,
            };
        }
        let tiles = col_blocks * nominal_t.div_ceil(g.gemm_bm);
        SplitK::Fixed((4 * sched.sm_count).div_ceil(tiles).clamp(1, max))
    };
    // Operands: plain addresses, or TMA descriptors for the wgmma kernel.
    let act_parts = g.act_parts;
    let tma = sched.prefill.gemm_wgmma;
    let operand = |matrix: Arg, rows: Option<u32>, cols: u32, box_rows: u32| {
        if tma {
            Arg::TensorMap(TmaOperand {
                matrix: Box::new(matrix),
                rows,
                cols,
                box_cols: g.gemm_bk,
                box_rows,
            })
        } else {
            matrix
        }
    };
    let gemm = |layer: usize,
                w: Arg,
                w2: Option<String>,
                x: &'static str,
                n: u32,
                k: u32,
                epi: i32,
                yf: Option<&'static str>,
                yb: Option<&'static str>| {
        let swiglu = epi == EPI_SWIGLU_BF16;
        let cols_per_block = if swiglu { g.gemm_bn / 2 } else { g.gemm_bn };
        let splits = split_for(n.div_ceil(cols_per_block), k);
        Launch {
            kernel: "prefill_gemm",
            grid: Grid::GemmTiles {
                n,
                cols_per_block,
                rows_per_block: g.gemm_bm,
                cluster: sched.prefill.gemm_cluster,
                splits,
            },
            block: g.gemm_threads,
            dynamic_smem: g.gemm_smem_bytes,
            layer: Some(layer),
            args: vec![
                // (each block of a cluster loads its share of the activation rows)
                operand(
                    Arg::Scratch(x),
                    None,
                    act_parts * k,
                    g.gemm_bm / sched.prefill.gemm_cluster.max(1),
                ),
                operand(w, Some(n), k, cols_per_block),
                w2.map(|w2| operand(Arg::Weight(w2), Some(n), k, cols_per_block))
                    .unwrap_or(Arg::Null),
                Arg::PromptLen,
                Arg::Int(n as i32),
                Arg::Int(k as i32),
                Arg::Int(epi),
                Arg::Scratch("gemm_partials"),
                Arg::Scratch("gemm_counters"),
                yf.map(Arg::Scratch).unwrap_or(Arg::Null),
                yb.map(Arg::Scratch).unwrap_or(Arg::Null),
            ],
        }
    };
    let rms = |layer: Option<usize>, w: String| Launch {
        kernel: "prefill_rms_norm",
        grid: Grid::PerToken,
        block: ROW_THREADS,
        dynamic_smem: 0,
        layer,
        args: vec![
            Arg::Scratch("resid"),
            Arg::Weight(w),
            Arg::PromptLen,
            Arg::Scratch("xnorm"),
        ],
    };
    let mut l = vec![Launch {
        kernel: "prefill_mark_inputs",
        grid: Grid::PerTokenItems {
            items_per_token: 1,
            items_per_block: ROW_THREADS,
        },
        block: ROW_THREADS,
        dynamic_smem: 0,
        layer: None,
        args: vec![
            Arg::Tokens,
            Arg::PromptLen,
            Arg::DecodeBuffer("token_counts"),
        ],
    }];
    l.push(Launch {
        kernel: "prefill_embed",
        grid: Grid::PerTokenItems {
            items_per_token: d,
            items_per_block: ROW_THREADS,
        },
        block: ROW_THREADS,
        dynamic_smem: 0,
        layer: None,
        args: vec![
            Arg::Tokens,
            Arg::PromptLen,
            Arg::Weight("embed_tokens.weight".into()),
            Arg::Scratch("resid"),
        ],
    });
    for (i, ty) in cfg.layer_types.iter().enumerate() {
        let w = |n: &str| format!("layers.{i}.{n}");
        let slot = cfg.slot_of_layer(i);
        l.push(rms(Some(i), w("input_layernorm.weight")));
        match ty {
            LayerType::FullAttention => {
                let (qg, kv, ao) = (u(cfg.q_proj_out()), u(cfg.kv_dim()), u(cfg.attn_out_dim()));
                let group = contiguous_weight_group(cfg, i);
                let cols = att_proj_cols(cfg);
                l.push(gemm(
                    i,
                    Arg::Weights(group),
                    None,
                    "xnorm",
                    cols,
                    d,
                    EPI_STORE_F32,
                    Some("in_proj"),
                    None,
                ));
                l.push(Launch {
                    kernel: "prefill_qk_norm_rope",
                    grid: Grid::PerTokenItems {
                        items_per_token: u(cfg.num_attention_heads + cfg.num_key_value_heads),
                        items_per_block: ROW_THREADS / 32,
                    },
                    block: ROW_THREADS,
                    dynamic_smem: 0,
                    layer: Some(i),
                    args: vec![
                        Arg::Scratch("in_proj"),
                        Arg::ScratchCol {
                            name: "in_proj",
                            col: qg,
                        },
                        Arg::ScratchCol {
                            name: "in_proj",
                            col: qg + kv,
                        },
                        Arg::PromptLen,
                        Arg::StartPos,
                        Arg::Weight(w("self_attn.q_norm.weight")),
                        Arg::Weight(w("self_attn.k_norm.weight")),
                        Arg::Scratch("mixed"),
                        Arg::State {
                            buffer: "k_cache",
                            slot,
                        },
                        Arg::State {
                            buffer: "v_cache",
                            slot,
                        },
                    ],
                });
                // Tensor cores: blocks of attn_tc_heads query heads x 16 tokens.
                let tc_blocks = u(cfg.num_attention_heads).checked_div(g.attn_tc_heads);
                let (grid, block, dynamic_smem) = if let Some(heads) = tc_blocks {
                    (
                        Grid::HeadsByTokens {
                            heads,
                            tokens_per_block: 16,
                        },
                        32 * g.attn_tc_heads,
                        g.attn_smem_bytes,
                    )
                } else {
                    (
                        Grid::HeadsByTokens {
                            heads: u(cfg.num_attention_heads),
                            tokens_per_block: g.attn_threads / 32,
                        },
                        g.attn_threads,
                        0,
                    )
                };
                l.push(Launch {
                    kernel: "prefill_attention",
                    grid,
                    block,
                    dynamic_smem,
                    layer: Some(i),
                    args: vec![
                        Arg::Scratch("mixed"),
                        Arg::Scratch("in_proj"),
                        Arg::PromptLen,
                        Arg::StartPos,
                        Arg::State {
                            buffer: "k_cache",
                            slot,
                        },
                        Arg::State {
                            buffer: "v_cache",
                            slot,
                        },
                        Arg::Scratch("mixer_out"),
                    ],
                });
                l.push(gemm(
                    i,
                    Arg::Weight(w("self_attn.o_proj.weight")),
                    None,
                    "mixer_out",
                    d,
                    ao,
                    EPI_ADD_F32,
                    Some("resid"),
                    None,
                ));
            }
            LayerType::LinearAttention => {
                let (cd, vd, hv) = (
                    u(cfg.conv_dim()),
                    u(cfg.linear_value_dim()),
                    u(cfg.linear_num_value_heads),
                );
                l.push(gemm(
                    i,
                    Arg::Weights(contiguous_weight_group(cfg, i)),
                    None,
                    "xnorm",
                    gdn_proj_cols(cfg),
                    d,
                    EPI_STORE_F32,
                    Some("in_proj"),
                    None,
                ));
                let conv_state = Arg::State {
                    buffer: "conv_state",
                    slot,
                };
                let fused_conv = sched.prefill.conv_in_prep();
                if !fused_conv {
                    l.push(Launch {
                        kernel: "prefill_causal_conv",
                        grid: Grid::ChannelSegments {
                            channels: cd,
                            threads: ROW_THREADS,
                            tokens_per_thread: CONV_SEG,
                        },
                        block: ROW_THREADS,
                        dynamic_smem: 0,
                        layer: Some(i),
                        args: vec![
                            Arg::Scratch("in_proj"),
                            Arg::PromptLen,
                            Arg::Weight(w("linear_attn.conv1d.weight")),
                            conv_state.clone(),
                            Arg::Scratch("mixed"),
                        ],
                    });
                }
                // The prep reads the conv's output, or computes the conv from the input
                // projection; the state pass then advances the conv state.
                l.push(Launch {
                    kernel: "prefill_gdn_chunked_prep",
                    grid: Grid::HeadsByTokens {
                        heads: hv,
                        tokens_per_block: g_chunk,
                    },
                    block: GDN_THREADS,
                    dynamic_smem: g.gdn_smem_bytes,
                    layer: Some(i),
                    args: vec![
                        Arg::Scratch(if fused_conv { "in_proj" } else { "mixed" }),
                        Arg::Weight(w("linear_attn.conv1d.weight")),
                        conv_state.clone(),
                        Arg::ScratchCol {
                            name: "in_proj",
                            col: cd + vd,
                        },
                        Arg::ScratchCol {
                            name: "in_proj",
                            col: cd + vd + hv,
                        },
                        Arg::Weight(w("linear_attn.A_log")),
                        Arg::Weight(w("linear_attn.dt_bias")),
                        Arg::PromptLen,
                        Arg::Scratch("gdn_u"),
                        Arg::Scratch("gdn_w"),
                        Arg::Scratch("gdn_kd"),
                        Arg::Scratch("gdn_qg"),
                        Arg::Scratch("gdn_p"),
                        Arg::Scratch("gdn_gam"),
                    ],
                });
                l.push(Launch {
                    kernel: "prefill_gdn_chunked_state",
                    grid: Grid::Fixed(hv * dv / sched.prefill.gdn_state_cols),
                    block: g.gdn_state_threads,
                    dynamic_smem: g.gdn_state_smem_bytes,
                    layer: Some(i),
                    args: vec![
                        Arg::PromptLen,
                        Arg::Scratch("gdn_u"),
                        Arg::Scratch("gdn_w"),
                        Arg::Scratch("gdn_kd"),
                        Arg::Scratch("gdn_gam"),
                        Arg::State {
                            buffer: "gdn_state",
                            slot,
                        },
                        Arg::Scratch("gdn_sc"),
                        Arg::Scratch("in_proj"),
                        conv_state,
                    ],
                });
                l.push(Launch {
                    kernel: "prefill_gdn_chunked_output",
                    grid: Grid::HeadsByTokens {
                        heads: hv * dv / GDN_OCOLS,
                        tokens_per_block: g_chunk,
                    },
                    block: g.gdn_out_threads,
                    dynamic_smem: g.gdn_out_smem_bytes,
                    layer: Some(i),
                    args: vec![
                        Arg::PromptLen,
                        Arg::Scratch("gdn_qg"),
                        Arg::Scratch("gdn_p"),
                        Arg::Scratch("gdn_u"),
                        Arg::Scratch("gdn_sc"),
                        Arg::Scratch("gdn_o"),
                    ],
                });
                l.push(Launch {
                    kernel: "prefill_gated_rms_norm",
                    grid: Grid::PerTokenItems {
                        items_per_token: hv,
                        items_per_block: ROW_THREADS / 32,
                    },
                    block: ROW_THREADS,
                    dynamic_smem: 0,
                    layer: Some(i),
                    args: vec![
                        Arg::Scratch("gdn_o"),
                        Arg::ScratchCol {
                            name: "in_proj",
                            col: cd,
                        },
                        Arg::Weight(w("linear_attn.norm.weight")),
                        Arg::PromptLen,
                        Arg::Scratch("mixer_out"),
                    ],
                });
                l.push(gemm(
                    i,
                    Arg::Weight(w("linear_attn.out_proj.weight")),
                    None,
                    "mixer_out",
                    d,
                    vd,
                    EPI_ADD_F32,
                    Some("resid"),
                    None,
                ));
            }
        }
        l.push(rms(Some(i), w("post_attention_layernorm.weight")));
        l.push(gemm(
            i,
            Arg::Weight(w("mlp.gate_proj.weight")),
            Some(w("mlp.up_proj.weight")),
            "xnorm",
            inter,
            d,
            EPI_SWIGLU_BF16,
            None,
            Some("mlp_act"),
        ));
        l.push(gemm(
            i,
            Arg::Weight(w("mlp.down_proj.weight")),
            None,
            "mlp_act",
            d,
            inter,
            EPI_ADD_F32,
            Some("resid"),
            None,
        ));
    }
    // Split-K partial tiles and their counters, sized for the largest GEMM
    // (per token: the runtime allocates whole multiples of 128 tokens, so
    // ceil(T / BM) * BM rows always fit for BM <= 128).
    let (mut partial_bytes, mut counter_bytes) = (0u64, 4u64);
    for launch in l.iter().filter(|l| l.kernel == "prefill_gemm") {
        if let Grid::GemmTiles {
            n,
            cols_per_block,
            cluster,
            splits,
            ..
        } = launch.grid
        {
            let col_blocks = n.div_ceil(cols_per_block).next_multiple_of(cluster.max(1)) as u64;
            if splits.max() > 1 {
                partial_bytes =
                    partial_bytes.max(col_blocks * splits.max() as u64 * g.gemm_bn as u64 * 4);
            }
            counter_bytes = counter_bytes.max(col_blocks * 4);
        }
    }
    scratch.push(ScratchBuffer {
        name: "gemm_partials",
        bytes_per_token: partial_bytes.max(4),
        what: "f32 split-K partial tiles [tile][split][BM x BN]",
        zeroed: false,
    });
    scratch.push(ScratchBuffer {
        name: "gemm_counters",
        bytes_per_token: counter_bytes,
        what: "u32 split-K arrival counter per output tile (reset by the last arrival)",
        zeroed: true,
    });
    // The final norm, LM head and sampling of the last row run in the decode
    // megakernel (FLAG_RESID_READY), which then goes on generating.
    Ok(PrefillPlan {
        scratch,
        launches: l,
        handoff: Handoff {
            scratch: "resid",
            decode_buffer: "resid",
            row_bytes: d as u64 * 4,
        },
        programmatic_launch: sched.prefill.programmatic_launch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_every_layer_and_names_real_weights_wgmma() {
        check_plan("h100");
    }

    #[test]
    fn plan_covers_every_layer_and_names_real_weights_mma() {
        check_plan("rtx3090");
    }

    fn check_plan(preset: &str) {
        let cfg = Qwen35Config::qwen35_0_8b();
        let s = Schedule::preset(preset).expect("preset");
        let plan = prefill_plan(&cfg, &s).expect("plan");
        let (slots, _) = crate::decode::abi::weight_slots(&cfg);
        for launch in &plan.launches {
            for a in launch.args.iter().map(Arg::matrix) {
                if let Arg::Weight(name) = a {
                    assert!(
                        slots.iter().any(|w| &w.canonical_name == name),
                        "unknown weight {name}"
                    );
                }
                if let Arg::Weights(names) = a {
                    // one matrix of all their rows: same columns, rows summing to the GEMM's N
                    let ws: Vec<_> = names
                        .iter()
                        .map(|n| {
                            slots
                                .iter()
                                .find(|w| &w.canonical_name == n)
                                .unwrap_or_else(|| panic!("unknown weight {n}"))
                        })
                        .collect();
                    let Arg::Int(n) = launch.args[4] else {
                        panic!("n")
                    };
                    assert_eq!(ws.iter().map(|w| w.shape[0]).sum::<usize>(), n as usize);
                    assert!(ws.iter().all(|w| w.shape[1] == cfg.hidden_size));
                    assert!(contiguous_weight_groups(&cfg).contains(names));
                }
                if let Arg::Scratch(n) | Arg::ScratchCol { name: n, .. } = a {
                    assert!(
                        plan.scratch.iter().any(|b| b.name == *n),
                        "unknown scratch {n}"
                    );
                }
            }
            assert!(
                super::super::entry_points(&s).contains(&launch.kernel),
                "{}",
                launch.kernel
            );
        }
        // mark inputs + embed + per layer (2 norms + 2 MLP GEMMs + mixer)
        let gdn = cfg.num_linear_attention_layers();
        let full = cfg.num_full_attention_layers();
        // GDN mixer: the fused input projection, the conv (unless the prep computes it), 3
        // delta-rule launches, the gated norm, out_proj; attention: the fused input projection,
        // q/k norm + RoPE, attention, o_proj
        let gdn_mixer = if s.prefill.conv_in_prep() { 6 } else { 7 };
        assert_eq!(
            plan.launches.len(),
            2 + gdn * (4 + gdn_mixer) + full * (4 + 4)
        );
        conv_state_is_read_then_advanced(&plan, s.prefill.conv_in_prep());
        let bufs = crate::decode::abi::buffer_slots(&cfg, &s);
        for launch in &plan.launches {
            for a in &launch.args {
                if let Arg::DecodeBuffer(n) = a {
                    assert!(bufs.iter().any(|b| b.name == *n), "unknown buffer {n}");
                }
            }
        }
        // The handoff fills the decode buffer's first row (the fused MLP's
        // `resid` holds a second: its input copy).
        assert!(bufs.iter().any(|b| b.name == plan.handoff.decode_buffer
            && (b.bytes == plan.handoff.row_bytes || b.bytes == 2 * plan.handoff.row_bytes)));
        assert!(plan.scratch.iter().any(|b| b.name == plan.handoff.scratch));
        // every GEMM's K is a multiple of the k tile (the kernel requires it);
        // each split gets k tiles, at every prompt length; operands are TMA
        // descriptors exactly on the wgmma path, with the block tile's boxes
        let g = geometry(&cfg, &s).expect("geometry");
        for launch in plan.launches.iter().filter(|l| l.kernel == "prefill_gemm") {
            let (Arg::Int(n), Arg::Int(k)) = (&launch.args[4], &launch.args[5]) else {
                panic!("n, k")
            };
            let (n, k) = (*n as u32, *k as u32);
            assert_eq!(k % s.prefill.gemm_tile_k, 0);
            let kt = k / s.prefill.gemm_tile_k;
            for t in [1, 64, 520, 2048] {
                let gs = launch.grid.dims(t)[2];
                assert!(
                    gs >= 1 && kt.div_ceil(gs) * (gs - 1) < kt,
                    "an empty split: {kt} tiles / {gs}"
                );
            }
            let Grid::GemmTiles {
                cols_per_block,
                splits,
                ..
            } = launch.grid
            else {
                panic!("grid")
            };
            assert_eq!(
                matches!(splits, SplitK::PerPrompt { .. }),
                s.prefill.gemm_wgmma
            );
            for (i, a) in launch.args[..3].iter().enumerate() {
                match a {
                    Arg::TensorMap(op) => {
                        assert!(s.prefill.gemm_wgmma);
                        assert_eq!(op.box_cols, 64);
                        if i == 0 {
                            assert_eq!((op.rows, op.cols), (None, g.act_parts * k));
                            assert_eq!(op.box_rows, g.gemm_bm);
                        } else {
                            assert_eq!((op.rows, op.cols), (Some(n), k));
                            assert_eq!(op.box_rows, cols_per_block);
                        }
                    }
                    Arg::Null => assert_eq!(i, 2),
                    _ => assert!(!s.prefill.gemm_wgmma, "{a:?}"),
                }
            }
        }
        // small-N GEMMs are split, the wide ones are not
        let split_of = |w: &str| {
            plan.launches
                .iter()
                .find(|l| {
                    l.args.iter().map(Arg::matrix).any(|a| match a {
                        Arg::Weight(n) => n == w,
                        Arg::Weights(ns) => ns[0] == w,
                        _ => false,
                    })
                })
                .map(|l| l.grid.dims(520)[2])
                .expect("gemm")
        };
        // at T = 520
        assert!(split_of("layers.0.mlp.down_proj.weight") > 1);
        assert_eq!(split_of("layers.0.linear_attn.in_proj_qkv.weight"), 1);
    }

    /// Per GDN layer, the conv state is read by the conv (its own kernel, or the
    /// prep with the conv fused) and advanced by the state pass, the last launch
    /// that takes it: advancing it earlier would feed the conv the new state.
    fn conv_state_is_read_then_advanced(plan: &PrefillPlan, fused_conv: bool) {
        let takes_conv_state = |l: &Launch| {
            l.args.iter().find_map(|a| match a {
                Arg::State {
                    buffer: "conv_state",
                    slot,
                } => Some(*slot),
                _ => None,
            })
        };
        let mut layers = 0;
        for layer in plan.launches.iter().filter_map(|l| l.layer) {
            let users: Vec<_> = plan
                .launches
                .iter()
                .filter(|l| l.layer == Some(layer) && takes_conv_state(l).is_some())
                .collect();
            if users.is_empty() {
                continue;
            }
            let kernels: Vec<_> = users.iter().map(|l| l.kernel).collect();
            let want: &[&str] = if fused_conv {
                &["prefill_gdn_chunked_prep", "prefill_gdn_chunked_state"]
            } else {
                &[
                    "prefill_causal_conv",
                    "prefill_gdn_chunked_prep",
                    "prefill_gdn_chunked_state",
                ]
            };
            assert_eq!(kernels, want, "layer {layer}");
            let slots: Vec<_> = users.iter().filter_map(|l| takes_conv_state(l)).collect();
            assert!(slots.windows(2).all(|w| w[0] == w[1]), "layer {layer}");
            // with the conv fused, the prep reads the input projection, not the conv's output
            let prep = users[users.len() - 2];
            let want_src = if fused_conv { "in_proj" } else { "mixed" };
            assert_eq!(prep.args[0], Arg::Scratch(want_src), "layer {layer}");
            layers += 1;
        }
        assert!(layers > 0);
    }

    #[test]
    fn attention_launch_follows_the_schedule() {
        let cfg = Qwen35Config::qwen35_0_8b();
        let attention =
            |s: &Schedule| launch_shape(&prefill_plan(&cfg, s).expect("plan"), "prefill_attention");
        // tensor cores (sm_80+): 8 query heads in pairs x 16-token tiles, 2 warps, Q rows and a
        // 2-stage ring of 32-key K/V tiles (rows of 256 + 8 bf16)
        let h100 = Schedule::preset("h100").expect("preset");
        assert_eq!(
            attention(&h100),
            ([4, 33, 1], 64, (2 * 16 + 4 * 32) * 264 * 2)
        );
        assert_eq!(
            attention(&Schedule::preset("rtx3090").expect("preset")).1,
            64
        );
        // CUDA cores (sm_75, or switched off): one warp per token, 4 tokens per block
        let cuda_cores = h100
            .patched(r#"{"prefill": {"attn_tensor_cores": false}}"#)
            .expect("patch");
        assert_eq!(attention(&cuda_cores), ([8, 130, 1], 128, 0));
        let turing = Schedule::preset("rtx2080ti").expect("preset");
        assert_eq!(attention(&turing), ([8, 130, 1], 128, 0));
        // the GDN state pass follows gdn_state_cols (16 threads per column)
        let state = |s: &Schedule| {
            let (grid, block, _) = launch_shape(
                &prefill_plan(&cfg, s).expect("plan"),
                "prefill_gdn_chunked_state",
            );
            (grid, block)
        };
        // tensor cores (the sm_80+ default, 16 columns): 4 warps whatever the columns
        assert_eq!(state(&h100), ([128, 1, 1], 128));
        let tc_wide = h100
            .patched(r#"{"prefill": {"gdn_state_cols": 32}}"#)
            .expect("patch");
        assert_eq!(state(&tc_wide), ([64, 1, 1], 128));
        for (cols, want) in [(8, ([256, 1, 1], 128)), (16, ([128, 1, 1], 256))] {
            let cc = h100
                .patched(&format!(
                    r#"{{"prefill": {{"gdn_tensor_cores": false, "gdn_state_cols": {cols}}}}}"#
                ))
                .expect("patch");
            assert_eq!(state(&cc), want, "{cols}");
        }
        assert_eq!(state(&turing), ([256, 1, 1], 128));
    }

    #[test]
    fn gdn_launches_for_0_8b() {
        let cfg = Qwen35Config::qwen35_0_8b();
        let h100 = Schedule::preset("h100").expect("preset");
        let cuda_cores = h100
            .patched(r#"{"prefill": {"gdn_tensor_cores": false, "gdn_state_cols": 8}}"#)
            .expect("patch");
        // Hv = 16, dk = dv = 128, chunk 64: 9 chunks at T = 520. Tensor cores (floats of smem):
        // prep K [64][132], M [64][67] + X [64][68] (Q [64][132] before them), the post-conv V
        // [64][136] (the conv fused, the h100 default), 4 x 64 row scalars; state W [64][132],
        // Kd [64][136], 2 x U [64][24], S_c [16][132]; output Qg [64][132], P [64][68],
        // S_c [32][132], V [64][40].
        assert!(h100.prefill.gdn_fused_conv);
        let unfused = h100
            .patched(r#"{"prefill": {"gdn_fused_conv": false}}"#)
            .expect("patch");
        assert_eq!(
            launch_shape(
                &prefill_plan(&cfg, &unfused).expect("plan"),
                "prefill_gdn_chunked_prep"
            ),
            ([16, 9, 1], 256, (64 * 132 + 64 * 67 + 64 * 68 + 4 * 64) * 4)
        );
        gdn_launches(
            &cfg,
            &h100,
            [
                (
                    [16, 9, 1],
                    256,
                    (64 * 132 + 64 * 67 + 64 * 68 + 64 * 136 + 4 * 64) * 4,
                ),
                (
                    [128, 1, 1],
                    128,
                    (64 * 132 + 64 * 136 + 2 * 64 * 24 + 16 * 132) * 4,
                ),
                (
                    [64, 9, 1],
                    128,
                    (64 * 132 + 64 * 68 + 32 * 132 + 64 * 40) * 4,
                ),
            ],
        );
        // CUDA cores: prep K [64][129], M [64][67], row scalars; state and output static smem
        gdn_launches(
            &cfg,
            &cuda_cores,
            [
                ([16, 9, 1], 256, (64 * 129 + 64 * 67 + 4 * 64) * 4),
                ([256, 1, 1], 128, 0),
                ([64, 9, 1], 256, 0),
            ],
        );
    }

    /// (grid at T = 520, block, dynamic smem) of the first launch of `kernel`
    /// (every layer of a type launches it alike).
    fn launch_shape(plan: &PrefillPlan, kernel: &str) -> ([u32; 3], u32, u32) {
        let l = plan
            .launches
            .iter()
            .find(|l| l.kernel == kernel)
            .expect(kernel);
        (l.grid.dims(520), l.block, l.dynamic_smem)
    }

    /// (grid at T = 520, block, dynamic smem) of a GDN layer's prep, state
    /// and output launches, and the per-token sizes of the scratch.
    fn gdn_launches(cfg: &Qwen35Config, s: &Schedule, want: [([u32; 3], u32, u32); 3]) {
        let plan = prefill_plan(cfg, s).expect("plan");
        assert_eq!(launch_shape(&plan, "prefill_gdn_chunked_prep"), want[0]);
        assert_eq!(launch_shape(&plan, "prefill_gdn_chunked_state"), want[1]);
        assert_eq!(launch_shape(&plan, "prefill_gdn_chunked_output"), want[2]);
        let bytes = |n: &str| {
            plan.scratch
                .iter()
                .find(|b| b.name == n)
                .expect(n)
                .bytes_per_token
        };
        // per chunk: Hv * dk * dv floats of state snapshot, Hv * C * C of P
        assert_eq!(bytes("gdn_sc") * 64, 16 * 128 * 128 * 4);
        assert_eq!(bytes("gdn_p") * 64, 16 * 64 * 64 * 4);
    }

    #[test]
    fn grids_scale_with_prompt_length() {
        let g = Grid::GemmTiles {
            n: 4096,
            cols_per_block: 64,
            rows_per_block: 64,
            cluster: 1,
            splits: SplitK::Fixed(3),
        };
        assert_eq!(g.dims(520), [64, 9, 3]);
        assert_eq!(g.dims(1), [64, 1, 3]);
        // per prompt: the split that fills whole waves of 132 one-block SMs
        let tiles = |n, cols_per_block, cluster, splits| Grid::GemmTiles {
            n,
            cols_per_block,
            rows_per_block: 128,
            cluster,
            splits,
        };
        let per_prompt = |k_tiles, max| SplitK::PerPrompt {
            k_tiles,
            max,
            slots: 132,
        };
        let down = |t: u32| tiles(1024, 256, 1, per_prompt(56, 7)).dims(t);
        // 20 tiles: 6 splits (120 blocks, one wave); 7 would need a second wave
        assert_eq!(down(520), [4, 5, 6]);
        // 64 tiles: 2 splits (128 blocks)
        assert_eq!(down(2048), [4, 16, 2]);
        // one tile: all 7 splits
        assert_eq!(down(1), [4, 1, 7]);
        // 140 tiles: two waves either way, unsplit is cheaper
        assert_eq!(tiles(3584, 128, 1, per_prompt(16, 2)).dims(520), [28, 5, 1]);
        // clusters of 2 along N: an odd column count gets one more (idle) block
        assert_eq!(tiles(8224, 128, 2, SplitK::Fixed(1)).dims(520), [66, 5, 1]);
        let c = Grid::ChannelSegments {
            channels: 6144,
            threads: 256,
            tokens_per_thread: 64,
        };
        assert_eq!(c.dims(65), [24, 2, 1]);
        // GDN prep / output: one block per (head or head slice, chunk of 64)
        let h = Grid::HeadsByTokens {
            heads: 16,
            tokens_per_block: 64,
        };
        assert_eq!(h.dims(520), [16, 9, 1]);
        assert_eq!(h.dims(512), [16, 8, 1]);
        assert_eq!(h.dims(1), [16, 1, 1]);
        assert_eq!(
            Grid::PerTokenItems {
                items_per_token: 10,
                items_per_block: 8
            }
            .dims(3),
            [4, 1, 1]
        );
    }
}
