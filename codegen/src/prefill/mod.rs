//! Prefill kernels (prompt processing, spec §2 and §3): a T-token prompt at
//! positions `start..start+T` runs layer by layer through a few kernels and
//! leaves the KV cache, GDN recurrent state and conv state in the decode
//! ABI's layouts (see [`crate::decode::abi`]), so the decode megakernel
//! continues from them.
//!
//! * `prefill_embed`, `prefill_rms_norm`: embedding gather; zero-centred
//!   RMSNorm over T rows (bf16 out, the GEMM input).
//! * `prefill_gemm`: `Y = X Wᵀ`, bf16 in, f32 accumulate; `mma.sync`
//!   m16n8k16 with a `cp.async` smem ring on sm_80+, FMA with plain copies on
//!   sm_75; epilogues store f32 / bf16, add into the residual, or SwiGLU a
//!   (gate, up) pair.
//! * `prefill_causal_conv`: depthwise conv over the prompt continuing the
//!   cached inputs (not run with `prefill.gdn_fused_conv`, where the delta
//!   rule's prep computes it).
//! * `prefill_gdn_chunked_prep` / `_state` / `_output` + `prefill_gated_rms_norm`:
//!   chunked gated delta rule (chunk 64, WY form) from the cached state: per-chunk
//!   WY factors in parallel, a short sequential state pass (which also
//!   advances the conv state), outputs in parallel; then the gated norm.
//! * `prefill_qk_norm_rope` + `prefill_attention`: q/k norm, partial RoPE,
//!   KV append, causal online-softmax attention with GQA and the output gate.
//!
//! [`PrefillPlan`] lists the launches in order for the runtime.

mod kernels;
pub mod plan;

use lucebox_models::config::Qwen35Config;
use lucebox_schedules::{
    GDN_PREP_THREADS, GDN_TC_STATE_WARPS, Schedule, gdn_kn_stride, gdn_solve_stride,
    gdn_tc_prep_smem_bytes, gdn_tensor_core_tiles_fit,
};

use crate::blocks;
use crate::cuda::{Constant, HeaderInfo, header, write_constants};
use crate::{CodegenError, GeneratedKernel, KernelKind};

pub use plan::{
    Arg, Grid, Handoff, Launch, PrefillPlan, ScratchBuffer, SplitK, TmaOperand, att_proj_cols,
    contiguous_weight_group, contiguous_weight_groups, gdn_proj_cols, prefill_plan,
};

/// Every prefill kernel a schedule can generate; [`entry_points`] lists those
/// one schedule does.
pub const ENTRY_POINTS: [&str; 11] = [
    "prefill_mark_inputs",
    "prefill_embed",
    "prefill_rms_norm",
    "prefill_gemm",
    "prefill_causal_conv",
    "prefill_gdn_chunked_prep",
    "prefill_gdn_chunked_state",
    "prefill_gdn_chunked_output",
    "prefill_gated_rms_norm",
    "prefill_qk_norm_rope",
    "prefill_attention",
];

/// The kernels generated for `sched`: the conv kernel only when the prep
/// does not compute the conv itself.
pub fn entry_points(sched: &Schedule) -> Vec<&'static str> {
    ENTRY_POINTS
        .into_iter()
        .filter(|k| *k != "prefill_causal_conv" || !sched.prefill.conv_in_prep())
        .collect()
}

/// Threads of the row-wise kernels (embed, norms, conv, qk norm).
pub const ROW_THREADS: u32 = 256;
/// Tokens per thread of the conv kernel (one thread per channel and segment).
pub const CONV_SEG: u32 = 16;
/// Threads of `prefill_gdn_chunked_prep` (both math paths) and of the CUDA-core `_output`.
pub const GDN_THREADS: u32 = GDN_PREP_THREADS;
/// GDN state pass: threads per value column of a block (the schedule's
/// `gdn_state_cols` columns per block).
pub const GDN_ST_THREADS_PER_COL: u32 = 16;
/// Value columns per block of `prefill_gdn_chunked_output`.
pub const GDN_OCOLS: u32 = 32;
/// Keys scored together per step of the attention loop.
pub const ATT_KEYS_PER_STEP: u32 = 4;

/// Derived launch geometry of the prefill kernels for one (config, schedule).
#[derive(Debug, Clone, PartialEq)]
pub struct PrefillGeometry {
    pub gemm_bm: u32,
    pub gemm_bn: u32,
    pub gemm_bk: u32,
    /// Ring depth actually generated (at least 2: one stage loads while one computes).
    pub gemm_stages: u32,
    pub gemm_threads: u32,
    pub gemm_warps_m: u32,
    pub gemm_warps_n: u32,
    pub gemm_smem_bytes: u32,
    /// Row stride of the C x C matrix in `prefill_gdn_chunked_prep`'s smem.
    pub gdn_ms: u32,
    /// Dynamic smem of `prefill_gdn_chunked_prep`.
    pub gdn_smem_bytes: u32,
    /// Threads of a `prefill_gdn_chunked_state` block.
    pub gdn_state_threads: u32,
    /// Dynamic smem of `prefill_gdn_chunked_state` (0: static, CUDA cores).
    pub gdn_state_smem_bytes: u32,
    /// Threads of a `prefill_gdn_chunked_output` block.
    pub gdn_out_threads: u32,
    /// Dynamic smem of `prefill_gdn_chunked_output` (0: static, CUDA cores).
    pub gdn_out_smem_bytes: u32,
    pub attn_threads: u32,
    /// Tensor-core attention: query heads (warps) per block, or 0 for the
    /// CUDA-core kernel.
    pub attn_tc_heads: u32,
    /// Dynamic smem of the tensor-core attention (Q rows + a 2-stage K/V ring).
    pub attn_smem_bytes: u32,
    /// bf16 parts per GEMM input value: 2 splits it into hi + remainder.
    pub act_parts: u32,
}

/// Warp grid of the mma path: the split of the block tile whose warp tiles
/// need the fewest 32-bit fragment loads per k step (4 per 16-row A
/// fragment, 2 per 8-column B fragment).
fn warp_grid(bm: u32, bn: u32, warps: u32) -> Option<(u32, u32)> {
    (1..=warps)
        .filter(|wm| warps.is_multiple_of(*wm))
        .map(|wm| (wm, warps / wm))
        .filter(|(wm, wn)| (bm / 16).is_multiple_of(*wm) && (bn / 8).is_multiple_of(*wn))
        .min_by_key(|(wm, wn)| 4 * (bm / 16 / wm) + 2 * (bn / 8 / wn))
}

pub fn geometry(cfg: &Qwen35Config, sched: &Schedule) -> Result<PrefillGeometry, CodegenError> {
    let p = &sched.prefill;
    let stages = p.gemm_ring_stages();
    let warps = p.gemm_threads / 32;
    // wgmma: each consumer warpgroup owns 64 whole rows (no warp grid).
    let (wm, wn) = if p.gemm_wgmma {
        (p.gemm_tile_m / 64, 1)
    } else {
        warp_grid(p.gemm_tile_m, p.gemm_tile_n, warps).ok_or_else(|| {
            CodegenError::Config(format!(
                "prefill GEMM: {warps} warps cannot tile a {}x{} block with 16x8 mma tiles",
                p.gemm_tile_m, p.gemm_tile_n
            ))
        })?
    };
    if !128u32.is_multiple_of(p.gemm_tile_m) {
        return Err(CodegenError::Config(format!(
            "prefill GEMM: tile_m {} must divide 128 (the runtime sizes scratch in 128-token steps)",
            p.gemm_tile_m
        )));
    }
    let act_parts = if p.split_activations { 2 } else { 1 };
    // The mma.sync / FMA epilogue reuses the ring as its f32 staging tile; the wgmma one works
    // from registers.
    let staging = p.gemm_tile_m * (p.gemm_tile_n + 4) * 4;
    let gemm_smem = if p.gemm_wgmma {
        p.gemm_ring_bytes()
    } else {
        p.gemm_ring_bytes().max(staging)
    };
    if gemm_smem > sched.limits.shared_mem_per_block_optin {
        return Err(CodegenError::Config(format!(
            "prefill GEMM needs {gemm_smem} B of shared memory, above the {} B opt-in limit: lower prefill.gemm_stages or tiles",
            sched.limits.shared_mem_per_block_optin
        )));
    }
    if !p.use_tensor_cores && !(p.gemm_tile_m * p.gemm_tile_n).is_multiple_of(p.gemm_threads) {
        return Err(CodegenError::Config(
            "prefill GEMM (FMA): tile_m * tile_n must be a multiple of gemm_threads".into(),
        ));
    }
    let chunk = p.gdn_chunk;
    let dk = cfg.linear_key_head_dim as u32;
    let dv = cfg.linear_value_head_dim as u32;
    if !dv.is_multiple_of(GDN_OCOLS) || !dk.is_multiple_of(32) {
        return Err(CodegenError::Config(format!(
            "prefill GDN: dv {dv} must be a multiple of {GDN_OCOLS} and dk {dk} of 32"
        )));
    }
    // The solve gives each warp chunk / warps columns of X, 32 / that lanes per column.
    let warps = GDN_THREADS / 32;
    if !chunk.is_multiple_of(4 * warps) || !32u32.is_multiple_of(chunk / warps) {
        return Err(CodegenError::Config(format!(
            "prefill GDN: chunk {chunk} must be a multiple of {} with chunk / {warps} dividing 32",
            4 * warps
        )));
    }
    // The per-chunk state snapshots are declared per token: dk * dv floats per chunk.
    if !(dk * dv).is_multiple_of(chunk) {
        return Err(CodegenError::Config(format!(
            "prefill GDN: dk * dv = {} must be a multiple of the chunk {chunk}",
            dk * dv
        )));
    }
    let gdn_ms = gdn_solve_stride(chunk);
    let st_cols = p.gdn_state_cols;
    let gdn = if p.gdn_tensor_cores {
        gdn_tensor_core_geometry(chunk, dk, dv, st_cols, p.conv_in_prep())?
    } else {
        let out_smem = dk * (GDN_OCOLS + 1) * 4;
        if out_smem > 48 * 1024 {
            return Err(CodegenError::Config(format!(
                "prefill GDN output needs {out_smem} B of static shared memory (limit 49152)"
            )));
        }
        let state_smem = (chunk * (dk + 4) + dk * st_cols + chunk * st_cols) * 4;
        if state_smem > 48 * 1024 {
            return Err(CodegenError::Config(format!(
                "prefill GDN state pass needs {state_smem} B of static shared memory (limit 49152): dk {dk} is too large for chunk {chunk}"
            )));
        }
        GdnGeometry {
            prep_smem: (chunk * (dk + 1) + chunk * gdn_ms + 4 * chunk) * 4,
            state_threads: st_cols * GDN_ST_THREADS_PER_COL,
            state_smem: 0,
            out_threads: GDN_THREADS,
            out_smem: 0,
        }
    };
    for (kernel, bytes) in [
        ("prep", gdn.prep_smem),
        ("state pass", gdn.state_smem),
        ("output", gdn.out_smem),
    ] {
        if bytes > sched.limits.shared_mem_per_block_optin {
            return Err(CodegenError::Config(format!(
                "prefill GDN {kernel} needs {bytes} B of shared memory, above the {} B opt-in limit{}",
                sched.limits.shared_mem_per_block_optin,
                if p.conv_in_prep() && kernel == "prep" {
                    ": set prefill.gdn_fused_conv false"
                } else if p.gdn_tensor_cores {
                    ": lower prefill.gdn_state_cols or set gdn_tensor_cores false"
                } else {
                    ""
                }
            )));
        }
    }
    if !cfg.head_dim.is_multiple_of(32) || ![2, 4, 8].contains(&(cfg.head_dim / 32)) {
        return Err(CodegenError::Config(format!(
            "prefill attention: head_dim {} must be 64, 128 or 256",
            cfg.head_dim
        )));
    }
    // Tensor-core attention: a block is up to 2 query heads of one kv head (more blocks than
    // SMs at typical prompts: 2 kv heads x 2 x 32 token tiles at 512 tokens for 0.8B) x 16 tokens.
    let (attn_tc_heads, attn_smem) = if p.attn_tensor_cores {
        let group = (cfg.num_attention_heads / cfg.num_key_value_heads) as u32;
        let heads = if group.is_multiple_of(2) { 2 } else { 1 };
        let row = cfg.head_dim as u32 + 8;
        let smem = (heads * 16 + 4 * p.attn_kv_tile) * row * 2;
        if !cfg.head_dim.is_multiple_of(16) {
            return Err(CodegenError::Config(format!(
                "prefill tensor-core attention: head_dim {} must be a multiple of 16",
                cfg.head_dim
            )));
        }
        if smem > sched.limits.shared_mem_per_block_optin {
            return Err(CodegenError::Config(format!(
                "prefill tensor-core attention needs {smem} B of shared memory, above the {} B opt-in limit: lower prefill.attn_kv_tile or set attn_tensor_cores false",
                sched.limits.shared_mem_per_block_optin
            )));
        }
        (heads, smem)
    } else {
        (0, 0)
    };
    Ok(PrefillGeometry {
        gemm_bm: p.gemm_tile_m,
        gemm_bn: p.gemm_tile_n,
        gemm_bk: p.gemm_tile_k,
        gemm_stages: stages,
        gemm_threads: p.gemm_threads,
        gemm_warps_m: wm,
        gemm_warps_n: wn,
        gemm_smem_bytes: gemm_smem,
        gdn_ms,
        gdn_smem_bytes: gdn.prep_smem,
        gdn_state_threads: gdn.state_threads,
        gdn_state_smem_bytes: gdn.state_smem,
        gdn_out_threads: gdn.out_threads,
        gdn_out_smem_bytes: gdn.out_smem,
        attn_threads: p.attn_threads,
        attn_tc_heads,
        attn_smem_bytes: attn_smem,
        act_parts,
    })
}

fn smem_note(bytes: u32) -> String {
    if bytes == 0 {
        String::new()
    } else {
        format!(" ({bytes} B dynamic smem)")
    }
}

/// Block sizes and shared memory of the delta rule's three kernels.
struct GdnGeometry {
    prep_smem: u32,
    state_threads: u32,
    state_smem: u32,
    out_threads: u32,
    out_smem: u32,
}

/// The tensor-core delta rule (`kernels::GDN_TENSOR_CORES`; its static_asserts
/// check these sizes): warps own 16-row m16n8k8 tiles (the output block has
/// chunk / 16 warps, the state pass `GDN_TC_STATE_WARPS`, the prep 8); tiles
/// read along k have rows padded to 4 (mod 32) floats, tiles read across k to
/// 8 or 24 (mod 32).
fn gdn_tensor_core_geometry(
    chunk: u32,
    dk: u32,
    dv: u32,
    st_cols: u32,
    fused_conv: bool,
) -> Result<GdnGeometry, CodegenError> {
    if chunk != 64 || !gdn_tensor_core_tiles_fit(dk, dv, st_cols) {
        return Err(CodegenError::Config(format!(
            "prefill GDN on tensor cores: the warp tiles do not fit chunk {chunk}, dk {dk}, dv {dv} with {st_cols} state columns per block (Schedule::fitted_to_model picks a fitting gdn_state_cols or CUDA cores)"
        )));
    }
    let ks = dk + 4;
    Ok(GdnGeometry {
        prep_smem: gdn_tc_prep_smem_bytes(chunk, dk, dv, fused_conv),
        state_threads: 32 * GDN_TC_STATE_WARPS,
        state_smem: (chunk * ks
            + chunk * gdn_kn_stride(dk)
            + 2 * chunk * gdn_kn_stride(st_cols)
            + st_cols * ks)
            * 4,
        out_threads: 2 * chunk,
        out_smem: (chunk * ks
            + chunk * (chunk + 4)
            + GDN_OCOLS * ks
            + chunk * gdn_kn_stride(GDN_OCOLS))
            * 4,
    })
}

pub fn generate_prefill(
    cfg: &Qwen35Config,
    sched: &Schedule,
) -> Result<GeneratedKernel, CodegenError> {
    cfg.validate()
        .map_err(|e| CodegenError::Config(e.to_string()))?;
    sched.validate(Some(&crate::model_dims(cfg)))?;
    let g = geometry(cfg, sched)?;
    let p = &sched.prefill;
    let notes = vec![
        format!(
            "GEMM              : {}x{}x{} tiles, {} stages, {} threads ({}), {}, {} ({} B smem)",
            g.gemm_bm,
            g.gemm_bn,
            g.gemm_bk,
            g.gemm_stages,
            g.gemm_threads,
            if p.gemm_wgmma {
                format!("{} math warpgroups + 1 producer", g.gemm_warps_m)
            } else {
                format!("{}x{} warps", g.gemm_warps_m, g.gemm_warps_n)
            },
            if p.gemm_wgmma {
                "wgmma m64nNk16 bf16 (sm_90a)"
            } else if p.use_tensor_cores {
                "mma.sync m16n8k16 bf16"
            } else {
                "FMA"
            },
            if p.gemm_wgmma && p.gemm_cluster > 1 {
                "TMA into an mbarrier ring, activation tiles multicast to clusters of 2"
            } else if p.gemm_wgmma {
                "TMA into an mbarrier ring"
            } else if p.use_cp_async {
                "cp.async ring"
            } else {
                "plain copies"
            },
            g.gemm_smem_bytes
        ),
        format!(
            "gated delta rule  : chunk {}, {}{}; prep {} threads, {} B dynamic smem; state pass {} threads, {} columns per block{}; output {} threads, {} columns per block{}",
            p.gdn_chunk,
            if p.gdn_tensor_cores {
                "mma.sync m16n8k8 tf32 with split operands (3xTF32)"
            } else {
                "FMA"
            },
            if p.conv_in_prep() {
                ", the causal conv computed in the prep"
            } else {
                ""
            },
            GDN_THREADS,
            g.gdn_smem_bytes,
            g.gdn_state_threads,
            p.gdn_state_cols,
            smem_note(g.gdn_state_smem_bytes),
            g.gdn_out_threads,
            GDN_OCOLS,
            smem_note(g.gdn_out_smem_bytes),
        ),
        if p.attn_tensor_cores {
            format!(
                "attention         : mma.sync flash attention, {} query heads x 16 tokens per block, {}-key K/V tiles in a 2-stage ring ({} B smem)",
                g.attn_tc_heads, p.attn_kv_tile, g.attn_smem_bytes
            )
        } else {
            format!(
                "attention         : {} threads (one warp per token), {} keys per step, online softmax",
                g.attn_threads, ATT_KEYS_PER_STEP
            )
        },
        format!("kernels: {}", entry_points(sched).join(", ")),
    ];
    // The header names the target the file is compiled for (sm_90a with wgmma).
    let mut target = sched.clone();
    target.arch.arch_specific |= p.gemm_wgmma;
    let mut src = header(&HeaderInfo {
        title: "Qwen3.5 prefill kernels",
        cfg,
        sched: &target,
        grid: "per launch, sized by the prompt length T (see PrefillPlan)".into(),
        threads: g.gemm_threads,
        sync_points_per_token: None,
        notes: &notes,
    })?;
    src.push_str(blocks::prelude::PRELUDE);
    src.push('\n');
    let i = |v: usize| v as i64;
    write_constants(
        &mut src,
        "schedule",
        &[
            Constant::int("GEMM_BM", g.gemm_bm, "GEMM block tile rows (tokens)"),
            Constant::int("GEMM_BN", g.gemm_bn, "GEMM block tile columns (outputs)"),
            Constant::int("GEMM_BK", g.gemm_bk, "GEMM k step"),
            Constant::int("GEMM_STAGES", g.gemm_stages, "smem ring depth"),
            Constant::int(
                "GEMM_CLUSTER",
                p.gemm_cluster,
                "blocks along N sharing activation tiles (TMA multicast)",
            ),
            Constant::int("GEMM_THREADS", g.gemm_threads, ""),
            Constant::int(
                "GEMM_DYN_SMEM",
                g.gemm_smem_bytes,
                "dynamic smem of prefill_gemm (opt-in above 48 KiB)",
            ),
            Constant::int(
                "ACT_PARTS",
                g.act_parts,
                "bf16 parts per GEMM input value (2: hi + remainder)",
            ),
            Constant::int("ROW_THREADS", ROW_THREADS, "row-wise kernels"),
            Constant::int("GDN_CHUNK", p.gdn_chunk, "chunk of the delta rule"),
            Constant::int("GDN_THREADS", GDN_THREADS, "GDN prep block"),
            Constant::int("GDN_OUT_THREADS", g.gdn_out_threads, "GDN output block"),
            Constant::int("GDN_MS", g.gdn_ms, "GDN prep: C x C matrix row stride"),
            Constant::int(
                "GDN_SMEM_BYTES",
                g.gdn_smem_bytes,
                "GDN prep dynamic smem (opt-in above 48 KiB)",
            ),
            Constant::int(
                "GDN_ST_THREADS",
                g.gdn_state_threads,
                "GDN state pass block",
            ),
            Constant::int(
                "GDN_ST_COLS",
                p.gdn_state_cols,
                "GDN state pass: value columns per block",
            ),
            Constant::int(
                "GDN_OCOLS",
                GDN_OCOLS,
                "GDN output: value columns per block",
            ),
            Constant::int("MAX_CTX", sched.max_context, "KV cache positions"),
        ],
    )?;
    if !p.conv_in_prep() {
        write_constants(
            &mut src,
            "conv kernel",
            &[Constant::int(
                "CONV_SEG",
                CONV_SEG,
                "tokens per conv thread",
            )],
        )?;
    }
    if p.gdn_tensor_cores {
        write_constants(
            &mut src,
            "tensor-core delta rule",
            &[
                Constant::int(
                    "GDN_FUSED_CONV",
                    u32::from(p.conv_in_prep()),
                    "1: the prep computes the causal conv (no conv kernel)",
                ),
                Constant::int(
                    "GDN_ST_SMEM_BYTES",
                    g.gdn_state_smem_bytes,
                    "dynamic smem of prefill_gdn_chunked_state",
                ),
                Constant::int(
                    "GDN_OUT_SMEM_BYTES",
                    g.gdn_out_smem_bytes,
                    "dynamic smem of prefill_gdn_chunked_output",
                ),
            ],
        )?;
    }
    if !p.attn_tensor_cores {
        write_constants(
            &mut src,
            "CUDA-core attention",
            &[
                Constant::int("ATT_THREADS", g.attn_threads, ""),
                Constant::int("ATT_WARPS", g.attn_threads / 32, "tokens per block"),
                Constant::int("ATT_KEYS_PER_STEP", ATT_KEYS_PER_STEP, ""),
            ],
        )?;
    }
    if p.attn_tensor_cores {
        write_constants(
            &mut src,
            "tensor-core attention",
            &[
                Constant::int(
                    "ATT_TC_HEADS",
                    g.attn_tc_heads,
                    "query heads (warps) per block",
                ),
                Constant::int("ATT_KT", p.attn_kv_tile, "keys per K/V tile"),
                Constant::int(
                    "ATT_DYN_SMEM",
                    g.attn_smem_bytes,
                    "dynamic smem of prefill_attention",
                ),
            ],
        )?;
    }
    if p.use_tensor_cores && !p.gemm_wgmma {
        write_constants(
            &mut src,
            "mma.sync warp grid",
            &[
                Constant::int("GEMM_WARPS_N", g.gemm_warps_n, "warp grid columns"),
                Constant::int("GEMM_WTM", g.gemm_bm / g.gemm_warps_m, "warp tile rows"),
                Constant::int("GEMM_WTN", g.gemm_bn / g.gemm_warps_n, "warp tile columns"),
            ],
        )?;
    }
    let mut model = vec![
        Constant::int("HIDDEN", i(cfg.hidden_size), ""),
        Constant::int(
            "GDN_PROJ_COLS",
            gdn_proj_cols(cfg),
            "row of a GDN layer's fused input projection [qkv | z | b | a]",
        ),
        Constant::int(
            "ATT_PROJ_COLS",
            att_proj_cols(cfg),
            "row of an attention layer's fused input projection [q+gate | k | v]",
        ),
    ];
    model.extend(crate::model_constants::head_constants(
        cfg,
        "head dims per lane",
    ));
    write_constants(&mut src, "model", &model)?;
    let wgmma = kernels::gemm_wgmma(g.gemm_bn, p.gemm_cluster);
    // Each path brings only what it runs: the wgmma GEMM loads by TMA and
    // stores from registers; mma.sync pieces serve its GEMM and the attention.
    let copies = if p.use_cp_async {
        kernels::COPY_CP_ASYNC
    } else {
        kernels::COPY_PLAIN
    };

    let gemm_math: &[&str] = if p.gemm_wgmma {
        &[&wgmma]
    } else if p.use_tensor_cores {
        &[
            kernels::GEMM_STAGED_EPILOGUE,
            kernels::GEMM_PADDED_RING,
            kernels::GEMM_MMA,
        ]
    } else {
        &[
            kernels::GEMM_STAGED_EPILOGUE,
            kernels::GEMM_PADDED_RING,
            kernels::GEMM_FMA,
        ]
    };
    let attention = if p.attn_tensor_cores {
        kernels::ATTENTION_TC
    } else {
        kernels::ATTENTION_CUDA_CORES
    };
    let entry = if p.programmatic_launch {
        kernels::ENTRY_PROGRAMMATIC
    } else {
        kernels::ENTRY_STREAM_ORDER
    };
    let mut blocks_before = vec![
        entry,
        blocks::rope::ROPE,
        blocks::decode_attention::HEAD_HELPERS,
        kernels::ACT_STORE,
        kernels::ROWWISE,
        copies,
    ];
    if p.use_tensor_cores {
        blocks_before.push(kernels::MMA_HELPERS);
    }
    blocks_before.extend([blocks::sync::TILE_COUNTER, kernels::GEMM_COMMON]);
    let gdn_math = if p.gdn_tensor_cores {
        kernels::GDN_TENSOR_CORES
    } else {
        kernels::GDN_CUDA_CORES
    };
    let conv: &[&str] = if p.conv_in_prep() {
        &[]
    } else {
        &[kernels::CONV]
    };
    for text in blocks_before.iter().chain(gemm_math).chain(conv).chain(&[
        kernels::GDN_CHUNKED,
        gdn_math,
        kernels::GATED_RMS_NORM,
        kernels::QK_NORM_ROPE,
        attention,
    ]) {
        src.push_str(text);
        src.push('\n');
    }
    Ok(GeneratedKernel {
        kind: KernelKind::Prefill,
        file_name: format!(
            "{}_prefill_{}.cu",
            crate::decode::sanitize(&cfg.name),
            sched.preset
        ),
        source: src,
        entry_points: entry_points(sched)
            .into_iter()
            .map(str::to_string)
            .collect(),
        // wgmma exists only in the arch-specific sm_90a target.
        arch: target.arch,
        sync_points_per_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucebox_schedules::list_presets;

    /// The body of every `__global__` function in `src`, from its opening brace.
    fn kernel_bodies(src: &str) -> Vec<(String, &str)> {
        src.match_indices("extern \"C\" __global__")
            .map(|(at, _)| {
                let rest = &src[at..];
                let open = rest.find('{').expect("kernel body");
                let name = rest[..open]
                    .split('(')
                    .rev()
                    .nth(1)
                    .and_then(|s| s.split_whitespace().last())
                    .unwrap_or("?")
                    .to_string();
                (name, &rest[open + 1..])
            })
            .collect()
    }

    /// A kernel launched as a programmatic dependent that touched memory before
    /// `griddepcontrol.wait` would race with its predecessor, so every prefill
    /// kernel must start with `prefill_entry()`, on every preset and both ways.
    #[test]
    fn every_prefill_kernel_starts_with_the_entry_wait() {
        let cfg = Qwen35Config::qwen35_0_8b();
        for (name, _, _) in list_presets() {
            let preset = Schedule::preset(name).expect("preset");
            for on in [false, true] {
                if on && preset.arch.number() < 90 {
                    continue;
                }
                let s = preset
                    .clone()
                    .patched(&format!(
                        r#"{{"prefill": {{"programmatic_launch": {on}}}}}"#
                    ))
                    .expect("patch");
                let src = generate_prefill(&cfg, &s).expect("generate").source;
                let bodies = kernel_bodies(&src);
                let mut names: Vec<_> = bodies.iter().map(|(n, _)| n.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                let mut want = entry_points(&s);
                want.sort_unstable();
                assert_eq!(names, want, "{name}");
                for (kernel, body) in &bodies {
                    assert!(
                        body.trim_start().starts_with("prefill_entry();"),
                        "{name}: {kernel} does not start with prefill_entry()"
                    );
                }
                assert_eq!(src.contains("griddepcontrol.wait;"), on, "{name}");
                assert_eq!(
                    prefill_plan(&cfg, &s).expect("plan").programmatic_launch,
                    on
                );
            }
        }
    }
}
