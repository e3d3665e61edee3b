//! The decode megakernel: one persistent cooperative kernel runs whole
//! tokens (embedding, every layer, final norm, LM head, sampling) and loops
//! over tokens with on-device feedback. See `README.md` in this directory for
//! the launch protocol.
//!
//! A token is a fixed program of phases; each phase spreads its work over
//! every warp of the grid and ends at a sync point (a grid barrier where the
//! next phase has an all-to-all dependency). Row ownership is static, so
//! weights can move ahead of the sync points: on sm_90 every warp streams
//! the rows it owns through its own shared-memory ring (`weight_stream`),
//! elsewhere it prefetches (L2) its next phase's rows before waiting.

pub mod abi;
mod kernel_body;

use std::fmt::Write;

use lucebox_models::config::{LayerType, Qwen35Config};
use lucebox_schedules::{GdnOutMode, MlpMode, PrefetchMode, Schedule, SyncMode};

pub use abi::{
    BufferInit, BufferSlot, DecodeAbi, DecodeParams, ParamField, ParamType, ParamsLayout,
    WeightDType, WeightSlot,
};

use crate::blocks;
use crate::cuda::{Constant, HeaderInfo, header, write_constants};
use crate::error::CodegenError;
use crate::{GeneratedKernel, KernelKind};

/// Name of the decode entry point.
pub const KERNEL_NAME: &str = "qwen35_decode";

/// Where a phase's results go before the next phase may read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPoint {
    /// Grid-wide barrier (all-to-all dependency).
    GridBarrier,
}

/// Whether the GDN recurrence waits on per-head ready counters of the
/// in_proj rows instead of a grid barrier (`decode.sync_gdn_in_proj:
/// tile_counters` with `barrier_per_phase` off). The in_proj and recurrence
/// phases then form one phase of the token program.
pub fn gdn_head_counters(s: &Schedule) -> bool {
    s.decode.sync_gdn_in_proj == SyncMode::TileCounters && !s.decode.barrier_per_phase
}

/// Whether attention waits on per-head ready counters of the q/k/v
/// projection rows instead of a grid barrier (`decode.sync_attn_qkv:
/// tile_counters` with `barrier_per_phase` off); the two phases then form
/// one phase of the token program.
pub fn attn_head_counters(s: &Schedule) -> bool {
    s.decode.sync_attn_qkv == SyncMode::TileCounters && !s.decode.barrier_per_phase
}

/// One phase of the token program.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// Marker in the kernel text (`SYNC_<marker>`).
    pub marker: &'static str,
    pub what: String,
    /// Work items and how they are split (for the header).
    pub split: String,
    pub sync_after: SyncPoint,
    /// Weights the phase streams (layer-relative canonical names for layer
    /// phases, global names for the LM head).
    pub weights: Vec<&'static str>,
}

/// Warps of a team sharing one matvec work item: the largest power of two
/// that still gives every team an item (phases with few rows split K).
pub fn ksplit_for(items: u64, sched: &Schedule) -> u32 {
    let warps = sched.warps_per_block();
    let total = sched.total_warps() as u64;
    let mut k = 1;
    while k * 2 <= warps && warps.is_multiple_of(k * 2) && items * (k as u64 * 2) <= total {
        k *= 2;
    }
    // Named barriers 1..=15 identify the teams of a block.
    while k > 1 && warps / k > 15 {
        k *= 2;
    }
    k
}

struct Splits {
    r: u64,
    ks_gdn_in: u32,
    ks_gdn_out: u32,
    ks_att_qkv: u32,
    ks_att_o: u32,
    ks_mlp_up: u32,
    ks_mlp_down: u32,
}

fn splits(cfg: &Qwen35Config, s: &Schedule) -> Splits {
    let r = s.decode.matvec_rows_per_warp as u64;
    let hv = cfg.linear_num_value_heads as u64;
    let gdn_in = (cfg.conv_dim() as u64 + cfg.linear_value_dim() as u64 + 2 * hv) / r;
    let att_qkv = (cfg.q_proj_out() as u64 + 2 * cfg.kv_dim() as u64) / r;
    let hidden_items = cfg.hidden_size as u64 / r;
    Splits {
        r,
        ks_gdn_in: ksplit_for(gdn_in, s),
        ks_gdn_out: ksplit_for(hidden_items, s),
        ks_att_qkv: ksplit_for(att_qkv, s),
        ks_att_o: ksplit_for(hidden_items, s),
        ks_mlp_up: ksplit_for(cfg.intermediate_size as u64 / s.mlp_rows() as u64, s),
        ks_mlp_down: ksplit_for(hidden_items, s),
    }
}

/// The phases of one layer of each type, the MLP included.
pub fn layer_program(cfg: &Qwen35Config, s: &Schedule, ty: LayerType) -> Vec<Phase> {
    let sp = splits(cfg, s);
    let r = sp.r;
    let hv = cfg.linear_num_value_heads as u64;
    let mv = |rows: u64, ks: u32| format!("{} items of {r} rows, {ks} warp(s)/item", rows / r);
    let mut v = match ty {
        LayerType::LinearAttention => {
            let gdn_in = Phase {
                marker: "GDN_IN",
                what: "norm + in_proj b|a|qkv|z, beta, g, conv step + SiLU".into(),
                split: mv(
                    cfg.conv_dim() as u64 + cfg.linear_value_dim() as u64 + 2 * hv,
                    sp.ks_gdn_in,
                ),
                sync_after: SyncPoint::GridBarrier,
                weights: vec![
                    "input_layernorm.weight",
                    "linear_attn.in_proj_qkv.weight",
                    "linear_attn.in_proj_z.weight",
                    "linear_attn.in_proj_b.weight",
                    "linear_attn.in_proj_a.weight",
                    "linear_attn.conv1d.weight",
                    "linear_attn.dt_bias",
                    "linear_attn.A_log",
                ],
            };
            let gdn_rec = Phase {
                marker: "GDN_REC",
                what: "gated delta rule over (v-head, column slice)".into(),
                split: format!(
                    "{} warp items of {} value columns",
                    hv * (cfg.linear_value_head_dim as u64
                        / s.decode.gdn_value_cols_per_warp as u64),
                    s.decode.gdn_value_cols_per_warp
                ),
                sync_after: SyncPoint::GridBarrier,
                weights: vec![],
            };
            let gdn_out = Phase {
                marker: "GDN_OUT",
                what: "gated RMSNorm (per block) + out_proj + residual".into(),
                split: mv(cfg.hidden_size as u64, sp.ks_gdn_out),
                sync_after: SyncPoint::GridBarrier,
                weights: vec!["linear_attn.norm.weight", "linear_attn.out_proj.weight"],
            };
            if gdn_out_fused(s) {
                // Schedule validation keeps the ready counters off here.
                let rec_out = Phase {
                    marker: "GDN_REC_OUT",
                    what: format!(
                        "{}; per item, once its head's sum of squares is complete (head counter): gated RMSNorm of its columns x its rows of the transposed out_proj, added to the residual",
                        gdn_rec.what
                    ),
                    weights: vec!["linear_attn.norm.weight", TRANSPOSED_GDN_OUT],
                    ..gdn_rec
                };
                vec![gdn_in, rec_out]
            } else if gdn_head_counters(s) {
                vec![merged("GDN_IN_REC", gdn_in, gdn_rec), gdn_out]
            } else {
                vec![gdn_in, gdn_rec, gdn_out]
            }
        }
        LayerType::FullAttention => {
            let att_qkv = Phase {
                marker: "ATT_QKV",
                what: "norm + q_proj (query|gate) / k_proj / v_proj".into(),
                split: mv(
                    cfg.q_proj_out() as u64 + 2 * cfg.kv_dim() as u64,
                    sp.ks_att_qkv,
                ),
                sync_after: SyncPoint::GridBarrier,
                weights: vec![
                    "input_layernorm.weight",
                    "self_attn.q_proj.weight",
                    "self_attn.k_proj.weight",
                    "self_attn.v_proj.weight",
                ],
            };
            let att_core = Phase {
                marker: "ATT_CORE",
                what: "q/k norm + RoPE, KV append, attention over (q-head, chunk), two-level last-arrival merge + gate".into(),
                split: format!(
                    "{} q heads x ceil((pos+1)/{}) chunk items, merged {} at a time",
                    cfg.num_attention_heads,
                    s.decode.attn_kv_chunk,
                    abi::ATT_SUPER
                ),
                sync_after: SyncPoint::GridBarrier,
                weights: vec!["self_attn.q_norm.weight", "self_attn.k_norm.weight"],
            };
            let att_out = Phase {
                marker: "ATT_OUT",
                what: "o_proj + residual".into(),
                split: mv(cfg.hidden_size as u64, sp.ks_att_o),
                sync_after: SyncPoint::GridBarrier,
                weights: vec!["self_attn.o_proj.weight"],
            };
            if attn_head_counters(s) {
                vec![merged("ATT_QKV_CORE", att_qkv, att_core), att_out]
            } else {
                vec![att_qkv, att_core, att_out]
            }
        }
    };
    let mlp_up = Phase {
        marker: "MLP_UP",
        what: "norm + gate/up, SwiGLU".into(),
        split: {
            let r = s.mlp_rows() as u64;
            let (items, ks) = (cfg.intermediate_size as u64 / r, sp.ks_mlp_up);
            format!("{items} items of {r} intermediate row(s), {ks} warp(s)/item")
        },
        sync_after: SyncPoint::GridBarrier,
        weights: vec![
            "post_attention_layernorm.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
        ],
    };
    if fused_mlp(s) {
        // The same items, each also scaling its rows of the transposed down_proj.
        let mut weights = mlp_up.weights;
        weights.push(TRANSPOSED_DOWN);
        v.push(Phase {
            marker: "MLP",
            what: format!(
                "{}, down_proj split over the intermediate, block shares added to the residual",
                mlp_up.what
            ),
            weights,
            ..mlp_up
        });
    } else {
        v.push(mlp_up);
        v.push(Phase {
            marker: "MLP_DOWN",
            what: "down_proj + residual".into(),
            split: mv(cfg.hidden_size as u64, sp.ks_mlp_down),
            sync_after: SyncPoint::GridBarrier,
            weights: vec!["mlp.down_proj.weight"],
        });
    }
    v
}

/// How a phase names the transposed copy of `mlp.down_proj.weight` (the
/// fused MLP reads it; `abi::weight_slots_for`): the name, then
/// `TRANSPOSED_SUFFIX`.
const TRANSPOSED_DOWN: &str = "mlp.down_proj.weight (transposed)";
const TRANSPOSED_SUFFIX: &str = " (transposed)";
/// The same for the GDN `out_proj` (`decode.gdn_out = with_recurrence`).
const TRANSPOSED_GDN_OUT: &str = "linear_attn.out_proj.weight (transposed)";

/// A producer phase and its consumer as one phase: no grid barrier between
/// them, each consumer item waits on per-head ready counters of the rows it
/// reads.
fn merged(marker: &'static str, producer: Phase, consumer: Phase) -> Phase {
    Phase {
        marker,
        what: format!(
            "{}; then, each item once its heads' rows are published (ready counters): {}",
            producer.what, consumer.what
        ),
        split: format!("{}; then {}", producer.split, consumer.split),
        sync_after: consumer.sync_after,
        weights: [producer.weights, consumer.weights].concat(),
    }
}

/// The phase after the last layer.
pub fn lm_head_phase(cfg: &Qwen35Config, s: &Schedule) -> Phase {
    Phase {
        marker: "LM_HEAD",
        what: "final norm + LM head + penalties + per-block top candidates; last block samples"
            .into(),
        split: format!(
            "{} items of {} rows, 1 warp/item",
            cfg.vocab_size as u64 / s.decode.matvec_rows_per_warp as u64,
            s.decode.matvec_rows_per_warp
        ),
        sync_after: SyncPoint::GridBarrier,
        weights: vec![
            "norm.weight",
            if cfg.tie_word_embeddings {
                "embed_tokens.weight"
            } else {
                "lm_head.weight"
            },
        ],
    }
}

/// Grid-wide sync points per generated token.
pub fn sync_points_per_token(cfg: &Qwen35Config, s: &Schedule) -> u32 {
    let per = |ty| layer_program(cfg, s, ty).len() as u32;
    cfg.num_linear_attention_layers() as u32 * per(LayerType::LinearAttention)
        + cfg.num_full_attention_layers() as u32 * per(LayerType::FullAttention)
        + 1
}

/// One phase instance of the token program, in execution order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhaseInfo {
    /// `L<layer>.<kind>` or `LM_HEAD`.
    pub name: String,
    /// Decoder layer, `None` for the LM head.
    pub layer: Option<usize>,
    /// The phase's marker (`GDN_IN`, `MLP_UP`, ..., `LM_HEAD`).
    pub kind: String,
    /// Indices into `DecodeAbi::weights` of the weights the phase streams.
    pub weight_slots: Vec<usize>,
    /// Bytes of those weights (one pass over each).
    pub weight_bytes: u64,
    /// Recurrent state read and written per token (GDN state; the KV cache
    /// grows with the position and is not counted).
    pub state_bytes: u64,
}

/// The phases one generated token runs, in order: the same description the
/// kernel's sync points come from (phase `i` of a step ends at sync point
/// `i`; profiling slot `i + 1` of `phase_times`).
pub fn token_program(cfg: &Qwen35Config, s: &Schedule) -> Vec<PhaseInfo> {
    let abi_weights = abi::weight_slots_for(cfg, s).0;
    let slot_of = |name: &str| match name.strip_suffix(TRANSPOSED_SUFFIX) {
        Some(name) => abi_weights
            .iter()
            .find(|w| w.transposed && w.canonical_name == name),
        None => abi_weights.iter().find(|w| w.canonical_name == name),
    };
    let gdn_state = cfg.linear_num_value_heads as u64
        * cfg.linear_key_head_dim as u64
        * cfg.linear_value_head_dim as u64
        * 4
        * 2;
    let info = |name: String, layer: Option<usize>, p: &Phase| {
        let slots: Vec<&WeightSlot> = p
            .weights
            .iter()
            .filter_map(|w| match layer {
                Some(l) => slot_of(&format!("layers.{l}.{w}")),
                None => slot_of(w),
            })
            .collect();
        PhaseInfo {
            name,
            layer,
            kind: p.marker.to_string(),
            weight_slots: slots.iter().map(|w| w.index).collect(),
            weight_bytes: slots.iter().map(|w| w.bytes()).sum(),
            state_bytes: if matches!(p.marker, "GDN_REC" | "GDN_IN_REC" | "GDN_REC_OUT") {
                gdn_state
            } else {
                0
            },
        }
    };
    let mut out = Vec::new();
    for (l, ty) in cfg.layer_types.iter().enumerate() {
        for p in layer_program(cfg, s, *ty) {
            out.push(info(format!("L{l}.{}", p.marker), Some(l), &p));
        }
    }
    let lm = lm_head_phase(cfg, s);
    out.push(info(lm.marker.to_string(), None, &lm));
    out
}

/// Profiling helpers (only emitted with `decode.profile_phases`): block 0
/// stamps `%globaltimer` after every barrier, every block records its wait.
const PROFILE: &str = r#"// ---- profiling (decode.profile_phases): phase end stamps and barrier waits ----
// Only thread 0 of each block touches these.
__shared__ unsigned long long* prof_times;
__shared__ unsigned long long* prof_waits;
__shared__ u32 prof_step;
__shared__ unsigned long long prof_arrived;

__device__ __forceinline__ unsigned long long globaltimer_ns() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t) :: "memory");
    return t;
}

__device__ __forceinline__ void profile_step_start(u32 step) {
    if (threadIdx.x == 0) {
        prof_step = step;
        if (blockIdx.x == 0 && step < PROFILE_MAX_STEPS) prof_times[(size_t)step * (N_PHASES + 1)] = globaltimer_ns();
    }
}

// grid_barrier that also records, for phase `phase` of the current step, the
// block's wait (arrival to release: max and sum over blocks) and block 0's
// release time. With weight rings it is not inlined (inlined at every sync
// point, with the ring top-up, it spills registers); without, it is.
__device__ PROFILED_BARRIER_INLINING void profiled_grid_barrier(unsigned long long* counter, int phase) {
    __syncthreads();
    if (threadIdx.x == 0) {
        prof_arrived = globaltimer_ns();  // in shared memory: no register held across the ring top-up
        grid_barrier_arrive(counter);
    }
    WsTopUp{}();
    if (threadIdx.x == 0) {
        grid_barrier_wait(counter);
        const unsigned long long t1 = globaltimer_ns();
        const unsigned long long t0 = prof_arrived;
        const u32 step = prof_step;
        if (step < PROFILE_MAX_STEPS) {
            unsigned long long* w = prof_waits + ((size_t)step * N_PHASES + phase) * 2;
            atomicMax(w, t1 - t0);
            atomicAdd(w + 1, t1 - t0);
            if (blockIdx.x == 0) prof_times[(size_t)step * (N_PHASES + 1) + phase + 1] = t1;
        }
    }
    __syncthreads();
}
"#;

fn profile_constants(cfg: &Qwen35Config, s: &Schedule) -> Result<String, CodegenError> {
    let mut out = String::new();
    write_constants(
        &mut out,
        "profiling",
        &[
            Constant::int(
                "PROFILE_MAX_STEPS",
                abi::PROFILE_MAX_STEPS,
                "launch steps recorded",
            ),
            Constant::int(
                "N_PHASES",
                sync_points_per_token(cfg, s),
                "phases (sync points) per token",
            ),
        ],
    )?;
    let mut first = Vec::new();
    let mut n = 0usize;
    for ty in &cfg.layer_types {
        first.push(n.to_string());
        n += layer_program(cfg, s, *ty).len();
    }
    writeln!(
        out,
        "__constant__ int LAYER_PHASE0[N_LAYERS]  = {{{}}};  // profiling slot of each layer's first phase",
        first.join(", ")
    )?;
    writeln!(out)?;
    Ok(out)
}

fn check_lowerable(cfg: &Qwen35Config, s: &Schedule) -> Result<(), CodegenError> {
    cfg.validate()
        .map_err(|e| CodegenError::Config(e.to_string()))?;
    s.validate(Some(&crate::model_dims(cfg)))?;
    if cfg.linear_conv_kernel_dim < 2 {
        return Err(CodegenError::Config(
            "linear_conv_kernel_dim must be at least 2".into(),
        ));
    }
    let rot_half = cfg.rotary_dim() / 2;
    let epl = cfg.head_dim / 32;
    if !rot_half.is_multiple_of(epl) || !(rot_half / epl).is_power_of_two() {
        return Err(CodegenError::Config(format!(
            "rotary dim {} does not map onto lane pairs for head_dim {} (need (rot/2)/(head_dim/32) a power of two)",
            cfg.rotary_dim(),
            cfg.head_dim
        )));
    }
    if cfg.num_key_value_heads + 2 > 64 {
        return Err(CodegenError::Config(
            "more than 62 kv heads (tile counter table)".into(),
        ));
    }
    if weight_stream(s) {
        let need = largest_ring_item_bytes(cfg, s);
        if s.decode.ring_bytes_per_warp < need {
            return Err(lucebox_schedules::ScheduleError::Invalid {
                field: "decode.ring_bytes_per_warp",
                value: s.decode.ring_bytes_per_warp.to_string(),
                limit: format!("must hold a warp's largest matvec item ({need} bytes)"),
            }
            .into());
        }
    }
    if cfg.eos_token_ids.len() > abi::MAX_EOS_IDS {
        return Err(CodegenError::Config(format!(
            "more than {} eos ids",
            abi::MAX_EOS_IDS
        )));
    }
    Ok(())
}

/// Shared-memory slots of the sampler: the grid's candidate pool, at least
/// one block's warp candidates (the block merge reuses the space), as a power
/// of two for the bitonic sort.
fn sample_pool_pow2(s: &Schedule) -> u32 {
    let c = s.decode.sample_candidates_per_block;
    (s.grid_blocks() * c)
        .max(s.warps_per_block() * c)
        .next_power_of_two()
}

/// Whether the schedule streams matvec weights through per-warp rings.
fn weight_stream(s: &Schedule) -> bool {
    s.decode.prefetch == PrefetchMode::SharedRing
}

/// Whether each warp's first item of a matvec phase moves ahead of the sync
/// point into a shared-memory slot.
fn first_item_smem(s: &Schedule) -> bool {
    s.decode.prefetch == PrefetchMode::SharedFirstItem
}

/// Whether each layer's MLP runs as one phase (`decode.mlp = fused_split_k`).
fn fused_mlp(s: &Schedule) -> bool {
    s.decode.mlp == MlpMode::FusedSplitK
}

/// The fused MLP's shared memory per warp: its f32 accumulator of the
/// hidden outputs, then its stage for one item's transposed down rows.
fn fused_mlp_warp_bytes(cfg: &Qwen35Config, s: &Schedule) -> (u32, u32) {
    let sp = splits(cfg, s);
    let iters = (cfg.hidden_size as u32 / 8).div_ceil(32 * sp.ks_mlp_up);
    (cfg.hidden_size as u32 * 4, s.mlp_rows() * iters * 512)
}

/// Whether the GDN out_proj runs in the recurrence phase
/// (`decode.gdn_out = with_recurrence`).
fn gdn_out_fused(s: &Schedule) -> bool {
    s.decode.gdn_out == GdnOutMode::WithRecurrence
}

/// The decode kernel's dynamic shared memory: the working space, then
/// (each region 128-byte aligned, present only where the schedule asks)
/// the fused MLP's per-warp accumulators and stages, the GDN out_proj
/// stages, and the weight rings or first-item slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SmemLayout {
    mlp_acc: u32,
    mlp_stage: u32,
    gdn_out_stage: u32,
    /// Weight rings or first-item slots.
    slots: u32,
    total: u32,
}

fn smem_layout(cfg: &Qwen35Config, s: &Schedule) -> SmemLayout {
    let align = |b: u32| b.div_ceil(128) * 128;
    let warps = s.warps_per_block();
    let working = working_smem_bytes(cfg, s);
    let mlp_acc = align(working);
    let (mut mlp_stage, mut end) = (mlp_acc, working);
    if fused_mlp(s) {
        let (acc, stage) = fused_mlp_warp_bytes(cfg, s);
        mlp_stage = mlp_acc + warps * acc;
        end = mlp_stage + warps * stage;
    }
    let gdn_out_stage = align(end);
    if gdn_out_fused(s) {
        let m = crate::model_dims(cfg);
        end = gdn_out_stage + s.gdn_recurrence_items(&m).1 * s.gdn_out_stage_warp_bytes(&m);
    }
    let slots = align(end);
    if weight_stream(s) {
        end = slots + warps * s.decode.ring_bytes_per_warp;
    } else if first_item_smem(s) {
        end = slots + warps * s.first_item_slot_bytes();
    }
    SmemLayout {
        mlp_acc,
        mlp_stage,
        gdn_out_stage,
        slots,
        total: end,
    }
}

/// Dynamic shared memory of the decode kernel (bytes).
pub fn dynamic_smem_bytes(cfg: &Qwen35Config, s: &Schedule) -> u32 {
    smem_layout(cfg, s).total
}

/// The bytes one warp's largest matvec item takes in its ring (its K slice
/// of R rows, 2R for the fused MLP gate/up).
pub fn largest_ring_item_bytes(cfg: &Qwen35Config, s: &Schedule) -> u32 {
    let sp = splits(cfg, s);
    let r = sp.r as u32;
    let slice = |k: u64, ks: u32| (k as u32 / 8).div_ceil(ks) * 16;
    [
        r * slice(cfg.hidden_size as u64, sp.ks_gdn_in),
        r * slice(cfg.linear_value_dim() as u64, sp.ks_gdn_out),
        r * slice(cfg.hidden_size as u64, sp.ks_att_qkv),
        r * slice(cfg.attn_out_dim() as u64, sp.ks_att_o),
        2 * s.mlp_rows() * slice(cfg.hidden_size as u64, sp.ks_mlp_up),
        r * slice(cfg.intermediate_size as u64, sp.ks_mlp_down),
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// Dynamic shared memory besides the rings: the matvec input vector, the
/// recurrence's and attention's per-warp vectors, the sampler pool.
fn working_smem_bytes(cfg: &Qwen35Config, s: &Schedule) -> u32 {
    let pool_pow2 = sample_pool_pow2(s);
    let widest = cfg
        .hidden_size
        .max(cfg.intermediate_size)
        .max(cfg.linear_value_dim())
        .max(cfg.attn_out_dim()) as u32;
    // the recurrence's per-warp q/k, after the in_proj input it may overlap in time
    let gdn = cfg.hidden_size as u32 + s.warps_per_block() * 2 * cfg.linear_key_head_dim as u32;
    // decode attention: each warp's query and new key
    let attention = cfg.hidden_size as u32 + s.warps_per_block() * 2 * cfg.head_dim as u32;
    let lm = cfg.hidden_size as u32 + pool_pow2 * 2;
    widest.max(gdn).max(attention).max(lm) * 4
}

/// The runtime's view of the kernel.
pub fn decode_abi(cfg: &Qwen35Config, sched: &Schedule) -> DecodeAbi {
    let (weights, layer_weight_base) = abi::weight_slots_for(cfg, sched);
    DecodeAbi {
        kernel_name: KERNEL_NAME.into(),
        grid_blocks: sched.grid_blocks(),
        threads_per_block: sched.threads_per_block,
        dynamic_smem_bytes: dynamic_smem_bytes(cfg, sched),
        cooperative: true,
        weights,
        buffers: abi::buffer_slots(cfg, sched),
        params_layout: abi::params_layout(),
        layer_weight_base,
        max_context: sched.max_context,
        sync_points_per_token: sync_points_per_token(cfg, sched),
    }
}

fn constants(cfg: &Qwen35Config, s: &Schedule, abi: &DecodeAbi) -> Result<String, CodegenError> {
    let sp = splits(cfg, s);
    let smem = smem_layout(cfg, s);
    let sizes = abi::decode_sizes(cfg, s);
    let i = |v: usize| v as i64;
    let mut out = String::new();
    write_constants(
        &mut out,
        "schedule",
        &[
            Constant::int(
                "GRID_BLOCKS",
                s.grid_blocks(),
                "persistent grid: SMs x blocks per SM",
            ),
            Constant::int("BLOCKS_PER_SM", s.blocks_per_sm, ""),
            Constant::int("THREADS", s.threads_per_block, "threads per block"),
            Constant::int("WARPS", s.warps_per_block(), "warps per block"),
            Constant::int(
                "MV_R",
                s.decode.matvec_rows_per_warp,
                "matvec rows per work item",
            ),
            Constant::int(
                "MLP_R",
                s.mlp_rows(),
                "intermediate indices per MLP work item",
            ),
            Constant::int(
                "KS_GDN_IN",
                sp.ks_gdn_in,
                "warps per item (K split): GDN in_proj",
            ),
            Constant::int("KS_GDN_OUT", sp.ks_gdn_out, "GDN out_proj"),
            Constant::int("KS_ATT_QKV", sp.ks_att_qkv, "attention q/k/v_proj"),
            Constant::int("KS_ATT_O", sp.ks_att_o, "attention o_proj"),
            Constant::int("KS_MLP_UP", sp.ks_mlp_up, "MLP gate/up"),
            Constant::int("KS_MLP_DOWN", sp.ks_mlp_down, "MLP down"),
            Constant::int(
                "GDN_COLS",
                s.decode.gdn_value_cols_per_warp,
                "GDN value columns per warp item",
            ),
            Constant::int(
                "GDN_KEY_GROUPS",
                32 / s.decode.gdn_value_cols_per_warp,
                "lanes splitting the keys of a column",
            ),
            Constant::int(
                "ATT_CHUNK",
                s.decode.attn_kv_chunk,
                "KV positions per attention item",
            ),
            Constant::int(
                "ATT_BATCH",
                s.decode.attn_v_batch,
                "V rows loaded together in the P.V pass",
            ),
            Constant::int(
                "ATT_SUPER",
                abi::ATT_SUPER as i64,
                "chunks merged by one level-1 last arrival",
            ),
            Constant::bool(
                "PROLOGUE_BATCHED",
                s.arch.number() >= 90,
                "phase prologues issue all their loads at once (spills registers before sm_90)",
            ),
            Constant::bool(
                "GDN_HEAD_COUNTERS",
                gdn_head_counters(s),
                "the recurrence waits on per-head ready counters of the in_proj rows, not a grid barrier",
            ),
            Constant::bool(
                "ATT_HEAD_COUNTERS",
                attn_head_counters(s),
                "attention waits on per-head ready counters of the q/k/v rows, not a grid barrier",
            ),
            Constant::bool(
                "WEIGHT_STREAM",
                weight_stream(s),
                "matvec rows stream through per-warp shared-memory rings",
            ),
            Constant::bool(
                "PREFETCH",
                s.decode.prefetch == PrefetchMode::L2 && s.decode.prefetch_bytes_per_warp > 0,
                "L2-prefetch next-phase rows before each sync point",
            ),
            Constant::int(
                "PREFETCH_BYTES_PER_WARP",
                s.decode.prefetch_bytes_per_warp,
                "",
            ),
            Constant::bool(
                "FIRST_ITEM_SMEM",
                first_item_smem(s),
                "each warp copies its first item of the next matvec phase into its shared-memory slot before each sync point",
            ),
            Constant::int(
                "FIRST_ITEM_CHUNKS",
                if first_item_smem(s) {
                    s.decode.first_item_chunks_per_lane
                } else {
                    1
                },
                "16-byte chunks per lane in a warp's first-item slot",
            ),
            Constant::int(
                "FIRST_ITEM_OFFSET",
                smem.slots,
                "byte offset of the first-item slots in dynamic shared memory",
            ),
            Constant::bool(
                "GDN_OUT_FUSED",
                gdn_out_fused(s),
                "each GDN recurrence item applies the gated norm and its rows of out_proj (no separate out_proj phase)",
            ),
            Constant::bool(
                "MLP_FUSED",
                fused_mlp(s),
                "each layer's MLP is one phase: down_proj split over the intermediate, block shares added to the residual",
            ),
            Constant::int(
                "SAMPLE_CAND_PER_BLOCK",
                s.decode.sample_candidates_per_block,
                "sampler candidates per block",
            ),
            Constant::int(
                "SAMPLE_POOL",
                s.grid_blocks() * s.decode.sample_candidates_per_block,
                "grid x candidates",
            ),
            Constant::int(
                "SAMPLE_POOL_POW2",
                sample_pool_pow2(s),
                "sort slots (power of two)",
            ),
            Constant::int(
                "SAMPLE_CAND_MAX",
                s.decode.sample_candidates_max,
                "cap on the sampling candidate set",
            ),
            Constant::int("MAX_CTX", s.max_context, "KV cache positions"),
            Constant::int("ATT_MAX_CHUNKS", sizes.att_max_chunks as i64, ""),
            Constant::int("ATT_MAX_SUPERS", sizes.att_max_supers as i64, ""),
        ],
    )?;
    if weight_stream(s) {
        write_constants(
            &mut out,
            "weight rings",
            &[
                Constant::int(
                    "WS_RING_OFFSET",
                    smem.slots,
                    "bytes: the rings' place in dynamic shared memory",
                ),
                Constant::int(
                    "WS_RING_BYTES",
                    s.decode.ring_bytes_per_warp,
                    "bytes of each warp's ring",
                ),
            ],
        )?;
    }
    if fused_mlp(s) {
        let (_, stage) = fused_mlp_warp_bytes(cfg, s);
        write_constants(
            &mut out,
            "fused MLP",
            &[
                Constant::int(
                    "MLP_ACC_OFFSET",
                    smem.mlp_acc,
                    "bytes: per-warp f32 accumulators of the hidden outputs (HIDDEN floats each) in dynamic shared memory",
                ),
                Constant::int(
                    "MLP_STAGE_OFFSET",
                    smem.mlp_stage,
                    "bytes: per-warp stages of one item's transposed down rows, after the accumulators",
                ),
                Constant::int(
                    "MLP_STAGE_WARP_BYTES",
                    stage,
                    "bytes of one warp's stage (MLP_R rows, this warp's K share)",
                ),
            ],
        )?;
    }
    if gdn_out_fused(s) {
        let (_, warps) = s.gdn_recurrence_items(&crate::model_dims(cfg));
        write_constants(
            &mut out,
            "GDN out_proj in the recurrence phase",
            &[
                Constant::int(
                    "GDN_OUT_STAGE_OFFSET",
                    smem.gdn_out_stage,
                    "bytes: stages of the recurrence items' transposed out_proj rows in dynamic shared memory",
                ),
                Constant::int(
                    "GDN_OUT_STAGE_WARP_BYTES",
                    s.gdn_out_stage_warp_bytes(&crate::model_dims(cfg)),
                    "bytes of one recurrence warp's stage (GDN_COLS rows x HIDDEN bf16)",
                ),
                Constant::int(
                    "GDN_REC_WARPS",
                    warps,
                    "warps per block holding a recurrence item (the last ones)",
                ),
            ],
        )?;
    }
    let epl = cfg.head_dim / 32;
    write_constants(
        &mut out,
        "model",
        &[
            Constant::int("HIDDEN", i(cfg.hidden_size), ""),
            Constant::int("INTER", i(cfg.intermediate_size), "MLP intermediate size"),
            Constant::int("VOCAB", i(cfg.vocab_size), ""),
            Constant::int("N_LAYERS", i(cfg.num_hidden_layers), ""),
            Constant::float("RMS_EPS", cfg.rms_norm_eps, ""),
            Constant::int("GDN_HK", i(cfg.linear_num_key_heads), ""),
            Constant::int("GDN_HV", i(cfg.linear_num_value_heads), ""),
            Constant::int("GDN_DK", i(cfg.linear_key_head_dim), ""),
            Constant::int("GDN_DV", i(cfg.linear_value_head_dim), ""),
            Constant::int(
                "GDN_V_PER_K",
                i(cfg.v_heads_per_k_head()),
                "v-head h uses k-head h / GDN_V_PER_K",
            ),
            Constant::float(
                "GDN_Q_SCALE",
                1.0 / (cfg.linear_key_head_dim as f64).sqrt(),
                "dk^-1/2",
            ),
            Constant::int("KEY_DIM", i(cfg.linear_key_dim()), "Hk * dk"),
            Constant::int("VALUE_DIM", i(cfg.linear_value_dim()), "Hv * dv"),
            Constant::int("CONV_DIM", i(cfg.conv_dim()), "2 KEY_DIM + VALUE_DIM"),
            Constant::int("CONV_K", i(cfg.linear_conv_kernel_dim), "conv taps"),
            Constant::int(
                "GDN_READY_K",
                2 * i(cfg.linear_key_head_dim),
                "in_proj rows a k-head's ready counter counts (q and k)",
            ),
            Constant::int(
                "GDN_READY_V",
                i(cfg.linear_value_head_dim) + 2,
                "in_proj rows a v-head's ready counter counts (v, b and a)",
            ),
            Constant::int("ATT_H", i(cfg.num_attention_heads), ""),
            Constant::int("ATT_HKV", i(cfg.num_key_value_heads), ""),
            Constant::int("ATT_G", i(cfg.gqa_group()), "query heads per kv head"),
            Constant::int("ATT_HD", i(cfg.head_dim), "head dim"),
            Constant::int("ATT_EPL", i(epl), "head dims per lane"),
            Constant::int(
                "ATT_READY_ROWS",
                2 * i(cfg.head_dim),
                "projection rows an attention ready counter counts",
            ),
            Constant::int(
                "ATT_QG_DIM",
                i(cfg.q_proj_out()),
                "q_proj rows: per head [query | gate]",
            ),
            Constant::int("ATT_KV_DIM", i(cfg.kv_dim()), ""),
            Constant::int("ATT_OUT_DIM", i(cfg.attn_out_dim()), ""),
            Constant::float("ATT_SCALE", 1.0 / (cfg.head_dim as f64).sqrt(), ""),
            Constant::int(
                "ROT_DIM",
                i(cfg.rotary_dim()),
                "rotated dims per head (NeoX pairs i, i+ROT_DIM/2)",
            ),
            Constant::int(
                "ROPE_LANE_OFS",
                i(cfg.rotary_dim() / 2 / epl),
                "lane distance of a rotation pair",
            ),
            Constant::float("ROPE_THETA", cfg.rope_theta, ""),
        ],
    )?;
    // Weight table indices.
    let mut w = vec![
        Constant::int("W_EMBED", 0, "embed_tokens.weight"),
        Constant::int("W_FINAL_NORM", 1, "norm.weight"),
        Constant::int(
            "W_LM_HEAD",
            if cfg.tie_word_embeddings { 0 } else { 2 },
            if cfg.tie_word_embeddings {
                "tied: the embedding"
            } else {
                "lm_head.weight"
            },
        ),
    ];
    let names: [&'static str; 5] = [
        "W_LN_IN",
        "W_LN_POST",
        "W_MLP_GATE",
        "W_MLP_UP",
        "W_MLP_DOWN",
    ];
    for (k, (n, doc)) in names.iter().zip(abi::LAYER_COMMON).enumerate() {
        w.push(Constant::int(n, k as i64, doc));
    }
    let gdn: [&'static str; 9] = [
        "W_GDN_IN_QKV",
        "W_GDN_IN_Z",
        "W_GDN_IN_B",
        "W_GDN_IN_A",
        "W_GDN_CONV",
        "W_GDN_DT_BIAS",
        "W_GDN_A_LOG",
        "W_GDN_NORM",
        "W_GDN_OUT",
    ];
    for (k, (n, doc)) in gdn.iter().zip(abi::LAYER_GDN).enumerate() {
        w.push(Constant::int(n, (abi::LAYER_COMMON.len() + k) as i64, doc));
    }
    let att: [&'static str; 6] = [
        "W_ATT_Q",
        "W_ATT_K",
        "W_ATT_V",
        "W_ATT_O",
        "W_ATT_Q_NORM",
        "W_ATT_K_NORM",
    ];
    for (k, (n, doc)) in att.iter().zip(abi::LAYER_ATTN).enumerate() {
        w.push(Constant::int(n, (abi::LAYER_COMMON.len() + k) as i64, doc));
    }
    write_constants(
        &mut out,
        "weight table (index into `Wt`; per-layer entries are offsets from LAYER_WBASE)",
        &w,
    )?;
    writeln!(out, "// ---- buffer table (index into `Bt`) ----")?;
    for b in &abi.buffers {
        writeln!(
            out,
            "constexpr int BUF_{:<16} = {:>2};  // {} B: {}",
            b.name.to_ascii_uppercase(),
            b.index,
            b.bytes,
            b.doc
        )?;
    }
    writeln!(out)?;
    write_constants(
        &mut out,
        "tile counters, flags, status",
        &[
            Constant::int("CNT_LM_HEAD", 0, "last-arrival counter of the LM head"),
            Constant::int(
                "CNT_ATT_MERGE",
                1,
                "attention merge counters: ATT_H (level 2), then ATT_H x ATT_MAX_SUPERS (level 1)",
            ),
            Constant::int(
                "READY_STRIDE",
                abi::READY_STRIDE as i64,
                "words between ready counters (one 128-byte line each)",
            ),
            Constant::int(
                "CNT_GDN_READY",
                abi::gdn_ready_counter_offset(cfg, &sizes) as i64,
                "GDN in_proj ready counters (READY_STRIDE apart, 128-byte aligned): GDN_HK (q, k rows), then GDN_HV (v, b, a rows)",
            ),
            Constant::int(
                "CNT_ATT_READY",
                abi::att_ready_counter_offset(cfg, &sizes) as i64,
                "attention projection ready counters (READY_STRIDE apart): ATT_H (query, gate rows), then ATT_HKV (k, v rows)",
            ),
            Constant::int("FLAG_WRITE_LOGITS", abi::FLAG_WRITE_LOGITS, ""),
            Constant::int("FLAG_COUNT_INPUT", abi::FLAG_COUNT_INPUT, ""),
            Constant::int(
                "FLAG_RESID_READY",
                abi::FLAG_RESID_READY,
                "step 0 starts at the final norm (prefill wrote resid)",
            ),
            Constant::int("MAX_EOS", abi::MAX_EOS_IDS as i64, ""),
            Constant::int("STATUS_N_GENERATED", abi::STATUS_N_GENERATED as i64, ""),
            Constant::int("STATUS_ERROR", abi::STATUS_ERROR as i64, ""),
            Constant::int("STATUS_NEXT_POS", abi::STATUS_NEXT_POS as i64, ""),
            Constant::int("STATUS_STOP_REASON", abi::STATUS_STOP_REASON as i64, ""),
            Constant::int("STATUS_LAST_TOKEN", abi::STATUS_LAST_TOKEN as i64, ""),
            Constant::int("ERR_NONE", abi::ERR_NONE, ""),
            Constant::int(
                "ERR_CONTEXT_FULL",
                abi::ERR_CONTEXT_FULL,
                "position reached MAX_CTX",
            ),
            Constant::int("ERR_NO_INPUT", abi::ERR_NO_INPUT, "n_input == 0"),
            Constant::int("ERR_BAD_TOKEN", abi::ERR_BAD_TOKEN, "input id >= VOCAB"),
            Constant::int("STOP_INPUT_DONE", abi::STOP_INPUT_DONE, ""),
            Constant::int("STOP_EOS", abi::STOP_EOS, ""),
            Constant::int("STOP_MAX_TOKENS", abi::STOP_MAX_TOKENS, ""),
            Constant::int("STOP_ERROR", abi::STOP_ERROR, ""),
        ],
    )?;
    // Per-layer tables.
    let list = |v: Vec<String>| v.join(", ");
    writeln!(
        out,
        "// ---- layers: type, slot among layers of its type, first weight index ----"
    )?;
    writeln!(
        out,
        "__constant__ u8  LAYER_IS_ATTN[N_LAYERS] = {{{}}};",
        list(
            cfg.layer_types
                .iter()
                .map(|t| u8::from(*t == LayerType::FullAttention).to_string())
                .collect()
        )
    )?;
    writeln!(
        out,
        "__constant__ int LAYER_SLOT[N_LAYERS]    = {{{}}};",
        list(
            (0..cfg.num_hidden_layers)
                .map(|l| cfg.slot_of_layer(l).to_string())
                .collect()
        )
    )?;
    writeln!(
        out,
        "__constant__ int LAYER_WBASE[N_LAYERS]   = {{{}}};",
        list(
            abi.layer_weight_base
                .iter()
                .map(|b| b.to_string())
                .collect()
        )
    )?;
    // Per layer: the index of a transposed copy, -1 where the layer has none.
    let transposed_table = |weight: &str| -> Vec<String> {
        (0..cfg.num_hidden_layers)
            .map(|l| {
                let name = format!("layers.{l}.{weight}");
                abi.weights
                    .iter()
                    .find(|w| w.transposed && w.canonical_name == name)
                    .map_or("-1".to_string(), |w| w.index.to_string())
            })
            .collect()
    };
    if fused_mlp(s) {
        writeln!(
            out,
            "__constant__ int LAYER_W_DOWN_T[N_LAYERS] = {{{}}};  // transposed mlp.down_proj.weight [INTER][HIDDEN]",
            list(transposed_table("mlp.down_proj.weight"))
        )?;
    }
    if gdn_out_fused(s) {
        writeln!(
            out,
            "__constant__ int LAYER_W_GDN_OUT_T[N_LAYERS] = {{{}}};  // transposed linear_attn.out_proj.weight [VALUE_DIM][HIDDEN]; -1: attention layer",
            list(transposed_table("linear_attn.out_proj.weight"))
        )?;
    }
    writeln!(out)?;
    Ok(out)
}

/// Generate the decode megakernel.
pub fn generate_decode(
    cfg: &Qwen35Config,
    sched: &Schedule,
) -> Result<GeneratedKernel, CodegenError> {
    check_lowerable(cfg, sched)?;
    let abi = decode_abi(cfg, sched);
    let sync = sync_points_per_token(cfg, sched);
    let gdn = layer_program(cfg, sched, LayerType::LinearAttention);
    let att = layer_program(cfg, sched, LayerType::FullAttention);
    let lm = lm_head_phase(cfg, sched);
    let mut notes = vec![
        format!(
            "sync points: {} per GDN layer x {} + {} per attention layer x {} + 1 after the LM head; all grid barriers",
            gdn.len(),
            cfg.num_linear_attention_layers(),
            att.len(),
            cfg.num_full_attention_layers()
        ),
        format!(
            "dynamic smem {} B/block; {}; sampler pool {} (cap {})",
            abi.dynamic_smem_bytes,
            match sched.decode.prefetch {
                PrefetchMode::L2 => format!(
                    "L2 prefetch {} B/warp before each sync",
                    sched.decode.prefetch_bytes_per_warp
                ),
                PrefetchMode::SharedRing => format!(
                    "weights stream through a {} B shared-memory ring per warp (bulk async copies, largest item {} B)",
                    sched.decode.ring_bytes_per_warp,
                    largest_ring_item_bytes(cfg, sched)
                ),
                PrefetchMode::SharedFirstItem => format!(
                    "first item of the next phase copied to a {} B shared slot per warp before each sync",
                    sched.first_item_slot_bytes()
                ),
                PrefetchMode::None => "no weight prefetch".to_string(),
            },
            sched.grid_blocks() * sched.decode.sample_candidates_per_block,
            sched.decode.sample_candidates_max
        ),
        "token program:".to_string(),
    ];
    if sched.decode.profile_phases {
        notes.insert(
            2,
            "PROFILING BUILD: block 0 stamps %globaltimer after every barrier into `phase_times`, every block its wait into `phase_waits`".to_string(),
        );
    }
    for (title, prog) in [("GDN layer", &gdn), ("attention layer", &att)] {
        notes.push(format!("  {title}:"));
        for p in prog.iter() {
            notes.push(format!(
                "    {:<9} {} [{}] -> grid barrier",
                p.marker, p.what, p.split
            ));
        }
    }
    notes.push(format!(
        "  after the last layer:\n//    {:<9} {} [{}] -> grid barrier",
        lm.marker, lm.what, lm.split
    ));
    let mut src = header(&HeaderInfo {
        title: "Qwen3.5 decode megakernel",
        cfg,
        sched,
        grid: format!("{} blocks (persistent, cooperative)", sched.grid_blocks()),
        threads: sched.threads_per_block,
        sync_points_per_token: Some(format!("{sync} grid barriers")),
        notes: &notes,
    })?;
    src.push_str(blocks::prelude::PRELUDE);
    src.push('\n');
    src.push_str(&constants(cfg, sched, &abi)?);
    src.push_str(&abi.params_layout.cuda());
    src.push('\n');
    for part in [
        if weight_stream(sched) {
            blocks::weight_stream::WEIGHT_STREAM
        } else {
            blocks::weight_stream::WEIGHT_STREAM_OFF
        },
        blocks::sync::SYNC,
        blocks::sync::TILE_COUNTER,
        blocks::rms_norm::RMS_NORM,
        blocks::embedding::EMBEDDING,
        blocks::matvec::MATVEC,
        if fused_mlp(sched) || gdn_out_fused(sched) {
            blocks::split_k::SPLIT_K_SHARES
        } else {
            ""
        },
        if fused_mlp(sched) {
            blocks::fused_mlp::FUSED_MLP
        } else {
            ""
        },
        blocks::causal_conv::CAUSAL_CONV_STEP,
        blocks::gated_delta_rule::GATED_DELTA_RULE_STEP,
        if gdn_out_fused(sched) {
            blocks::gated_delta_rule::GATED_DELTA_RULE_OUT_STEP
        } else {
            ""
        },
        blocks::rope::ROPE,
        blocks::decode_attention::HEAD_HELPERS,
        blocks::decode_attention::DECODE_ATTENTION,
        blocks::lm_head::LM_HEAD,
    ]
    .into_iter()
    .filter(|part| !part.is_empty())
    {
        src.push_str(part);
        src.push('\n');
    }
    let profile = sched.decode.profile_phases;
    if profile {
        src.push_str(&profile_constants(cfg, sched)?);
        src.push_str(&PROFILE.replace(
            "PROFILED_BARRIER_INLINING",
            if weight_stream(sched) {
                "__noinline__"
            } else {
                "__forceinline__"
            },
        ));
        src.push('\n');
    }
    let mut body = [
        kernel_body::LAYER_HELPERS,
        if fused_mlp(sched) {
            kernel_body::MLP_FUSED
        } else {
            kernel_body::MLP_TWO_PHASES
        },
        kernel_body::GDN_LAYER_HEAD,
        if gdn_out_fused(sched) {
            kernel_body::GDN_OUT_WITH_RECURRENCE
        } else {
            kernel_body::GDN_OUT_SEPARATE
        },
        kernel_body::ATTN_LAYER,
        "\n",
    ]
    .concat();
    if weight_stream(sched) {
        body += kernel_body::STREAM_CURSOR;
        body += "\n";
    }
    body += kernel_body::ENTRY;
    // A merged phase: the producer's sync marker becomes a note, the
    // consumer's ends the merged phase.
    for (on, producer, consumer, merged, who) in [
        (
            gdn_head_counters(sched),
            "GDN_IN",
            "GDN_REC",
            "GDN_IN_REC",
            "recurrence item",
        ),
        (
            attn_head_counters(sched),
            "ATT_QKV",
            "ATT_CORE",
            "ATT_QKV_CORE",
            "attention item",
        ),
    ] {
        if on {
            body = body
                .replace(
                    &format!("    SYNC_{producer}\n"),
                    &format!(
                        "    // no grid barrier: each {who} waits on its heads' ready counters\n"
                    ),
                )
                .replace(&format!("SYNC_{consumer}\n"), &format!("SYNC_{merged}\n"));
        }
    }
    // A phase's profiling slot is its index in its layer program; the MLP
    // phases (one mlp_block for both layer types) may sit at different
    // indices when only one type merges phases.
    let index_in = |prog: &[Phase], m: &str| prog.iter().position(|x| x.marker == m);
    let layer_phases = gdn.iter().chain(att.iter()).map(|p| {
        let slot = match (index_in(&gdn, p.marker), index_in(&att, p.marker)) {
            (Some(g), Some(a)) if g != a => {
                format!("LAYER_PHASE0[layer] + (LAYER_IS_ATTN[layer] ? {a} : {g})")
            }
            (Some(k), _) | (None, Some(k)) => format!("LAYER_PHASE0[layer] + {k}"),
            (None, None) => unreachable!("a phase of one of the two programs"),
        };
        (p, slot)
    });
    for (p, slot) in layer_phases.chain(std::iter::once((&lm, "N_PHASES - 1".to_string()))) {
        let SyncPoint::GridBarrier = p.sync_after;
        let call = if profile {
            format!("profiled_grid_barrier(B.barrier, {slot})")
        } else {
            "grid_barrier(B.barrier, WsTopUp{})".to_string()
        };
        body = body.replace(
            &format!("SYNC_{}\n", p.marker),
            &format!("{call};  // sync: {} done\n", p.what),
        );
    }
    let (bind, step) = if profile {
        (
            "    if (threadIdx.x == 0) { prof_times = (unsigned long long*)Bt[BUF_PHASE_TIMES]; prof_waits = (unsigned long long*)Bt[BUF_PHASE_WAITS]; }\n",
            "        profile_step_start(step);\n",
        )
    } else {
        ("", "")
    };
    body = body.replace("    PROFILE_BIND\n", bind);
    body = body.replace("        PROFILE_STEP_START\n", step);
    body = body.replace("KERNEL_NAME", KERNEL_NAME);
    src.push_str(&body);
    Ok(GeneratedKernel {
        kind: KernelKind::Decode,
        file_name: format!("{}_decode_{}.cu", sanitize(&cfg.name), sched.preset),
        source: src,
        entry_points: vec![KERNEL_NAME.to_string()],
        arch: sched.arch,
        sync_points_per_token: Some(sync),
    })
}

pub(crate) fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_points_for_0_8b() {
        let c = Qwen35Config::qwen35_0_8b();
        // Grid barriers everywhere: 5 per layer + 1 after the LM head.
        let s = Schedule::preset("a100").unwrap();
        assert_eq!(sync_points_per_token(&c, &s), 24 * 5 + 1);
        let k = generate_decode(&c, &s).unwrap();
        assert!(k.source.contains("sync points/token : 121 grid barriers"));
        assert!(!k.source.contains("SYNC_"), "unreplaced sync marker");
        assert!(!k.source.contains("#include"));
        // sm_90: attention waits on ready counters, one barrier less per
        // attention layer, and the MLP is one phase, one less per layer.
        let s = Schedule::preset("h100").unwrap();
        assert!(attn_head_counters(&s) && !gdn_head_counters(&s) && fused_mlp(&s));
        assert_eq!(sync_points_per_token(&c, &s), 18 * 4 + 6 * 3 + 1);
        let k = generate_decode(&c, &s).unwrap();
        assert!(k.source.contains("sync points/token : 91 grid barriers"));
        let two = h100_two_phase_mlp();
        assert_eq!(sync_points_per_token(&c, &two), 18 * 5 + 6 * 4 + 1);
        assert!(!k.source.contains("SYNC_"), "unreplaced sync marker");
    }

    /// How many phases of `prog` read each of `slots` weight slots.
    fn reads_per_slot(prog: &[PhaseInfo], slots: usize) -> Vec<usize> {
        let mut seen = vec![0; slots];
        for i in prog.iter().flat_map(|p| p.weight_slots.iter()) {
            seen[*i] += 1;
        }
        seen
    }

    /// The h100 preset with every sync point a grid barrier.
    fn h100_barriers() -> Schedule {
        let mut s = h100_two_phase_mlp();
        s.decode.barrier_per_phase = true;
        s
    }

    /// The h100 preset with the MLP in two phases (sm_90 fuses it by
    /// default), for tests of the other phases and opt-ins.
    fn h100_two_phase_mlp() -> Schedule {
        let mut s = Schedule::preset("h100").unwrap();
        s.decode.mlp = MlpMode::TwoPhases;
        s.decode.mlp_rows_per_warp = 0;
        s
    }

    #[test]
    fn token_program_matches_sync_points_and_covers_every_weight_once() {
        let c = Qwen35Config::qwen35_0_8b();
        let s = h100_two_phase_mlp();
        let prog = token_program(&c, &s);
        assert_eq!(prog.len() as u32, sync_points_per_token(&c, &s));
        assert_eq!(prog[0].name, "L0.GDN_IN");
        assert_eq!(prog.last().map(|p| p.kind.as_str()), Some("LM_HEAD"));
        let abi = decode_abi(&c, &s);
        let seen = reads_per_slot(&prog, abi.weights.len());
        // Tied embeddings: the LM head streams the embedding, so every slot
        // is read by exactly one phase.
        assert!(c.tie_word_embeddings);
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
        let total: u64 = prog.iter().map(|p| p.weight_bytes).sum();
        assert_eq!(total, abi.weights.iter().map(|w| w.bytes()).sum::<u64>());
        assert!(
            prog.iter()
                .any(|p| p.kind == "GDN_REC" && p.state_bytes > 0)
        );
    }

    fn counters(s: &mut Schedule, gdn: bool, attn: bool) {
        s.decode.barrier_per_phase = false;
        let mode = |on| {
            if on {
                SyncMode::TileCounters
            } else {
                SyncMode::GridBarrier
            }
        };
        s.decode.sync_gdn_in_proj = mode(gdn);
        s.decode.sync_attn_qkv = mode(attn);
    }

    #[test]
    fn ready_counters_replace_the_projection_barriers() {
        let c = Qwen35Config::qwen35_0_8b();
        let mut s = h100_barriers();
        // Asking for counters without turning the fallback off keeps barriers.
        s.decode.sync_gdn_in_proj = SyncMode::TileCounters;
        assert!(!gdn_head_counters(&s));
        assert_eq!(sync_points_per_token(&c, &s), 121);
        for (gdn, attn, syncs) in [(true, false, 103), (false, true, 115), (true, true, 97)] {
            counters(&mut s, gdn, attn);
            assert_eq!(sync_points_per_token(&c, &s), syncs);
            let prog = token_program(&c, &s);
            assert_eq!(prog.len() as u32, syncs);
            let abi = decode_abi(&c, &s);
            let seen = reads_per_slot(&prog, abi.weights.len());
            assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
            assert_eq!(prog[0].kind, if gdn { "GDN_IN_REC" } else { "GDN_IN" });
            assert!(prog[0].state_bytes > 0 || !gdn);
            let k = generate_decode(&c, &s).unwrap().source;
            assert!(!k.contains("SYNC_"), "unreplaced sync marker");
            assert_eq!(
                k.matches("no grid barrier: each").count(),
                gdn as usize + attn as usize
            );
            assert!(k.contains(&format!("GDN_HEAD_COUNTERS       = {gdn}")));
            assert!(k.contains(&format!("ATT_HEAD_COUNTERS       = {attn}")));
            // The counter table holds both sets after the attention merge counters.
            let z = abi::decode_sizes(&c, &s);
            let gdn_at = abi::gdn_ready_counter_offset(&c, &z);
            let att_at = abi::att_ready_counter_offset(&c, &z);
            let line = abi::READY_STRIDE;
            assert!(gdn_at >= 1 + 8 + 8 * z.att_max_supers && gdn_at.is_multiple_of(line));
            assert_eq!(att_at, gdn_at + 32 * line);
            assert_eq!(abi::tile_counter_words(&c, &z), att_at + (8 + 2) * line);
        }
    }

    #[test]
    fn profiled_mlp_slots_follow_each_layer_program() {
        let c = Qwen35Config::qwen35_0_8b();
        let mut s = h100_barriers();
        s.decode.profile_phases = true;
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(k.contains("profiled_grid_barrier(B.barrier, LAYER_PHASE0[layer] + 3);"));
        // GDN layers merge two phases, attention layers do not: the MLP's
        // slot depends on the layer type.
        counters(&mut s, true, false);
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(k.contains(
            "profiled_grid_barrier(B.barrier, LAYER_PHASE0[layer] + (LAYER_IS_ATTN[layer] ? 3 : 2));"
        ));
        assert!(k.contains(
            "profiled_grid_barrier(B.barrier, LAYER_PHASE0[layer] + (LAYER_IS_ATTN[layer] ? 4 : 3));"
        ));
    }

    #[test]
    fn profiling_is_opt_in_and_instruments_every_barrier() {
        let c = Qwen35Config::qwen35_0_8b();
        let mut s = h100_barriers();
        let plain = generate_decode(&c, &s).unwrap().source;
        assert!(!plain.contains("prof_") && !plain.contains("PROFILE"));
        assert_eq!(decode_abi(&c, &s).buffers.len() + 2, {
            s.decode.profile_phases = true;
            decode_abi(&c, &s).buffers.len()
        });
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(!k.contains("PROFILE_BIND") && !k.contains("PROFILE_STEP_START"));
        assert!(!k.contains("SYNC_"));
        // Every barrier call site is the profiled one (8 in the layer
        // programs + 1 after the LM head), none plain.
        assert_eq!(k.matches("profiled_grid_barrier(B.barrier,").count(), 9);
        assert!(!k.contains(" grid_barrier(B.barrier"));
        assert!(k.contains("profile_step_start(step);"));
        assert!(k.contains("BUF_PHASE_TIMES") && k.contains("BUF_PHASE_WAITS"));
        assert!(k.contains("%%globaltimer"));
        assert!(k.contains("LAYER_PHASE0[N_LAYERS]  = {0, 5, 10,"));
        // The schedule round-trips without the field when it is off.
        s.decode.profile_phases = false;
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("profile_phases"));
    }

    /// `KS_*` split constants of the matvec phases in `text`, in order.
    fn matvec_splits(text: &str, call: &str) -> Vec<String> {
        text.match_indices(call)
            .filter_map(|(i, _)| {
                let args = &text[i..text[i..].find('>')? + i];
                args.split(',')
                    .map(str::trim)
                    .find(|a| a.starts_with("KS_"))
                    .map(str::to_string)
            })
            .collect()
    }

    /// The text of the function that starts at `name` in `text`.
    fn function_in(text: &'static str, name: &str) -> &'static str {
        let start = text.find(name).expect(name);
        let end = text[start..].find("\n}\n").expect("end") + start;
        &text[start..end]
    }

    /// The text of the function in the layer programs (with the two-phase
    /// MLP) that starts at `name`.
    fn layer_program_fn(name: &str) -> &'static str {
        static LAYERS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let layers = LAYERS.get_or_init(|| {
            [
                kernel_body::LAYER_HELPERS,
                kernel_body::MLP_TWO_PHASES,
                kernel_body::GDN_LAYER_HEAD,
                kernel_body::GDN_OUT_SEPARATE,
                kernel_body::ATTN_LAYER,
            ]
            .concat()
        });
        function_in(layers, name)
    }

    #[test]
    fn stream_cursor_walks_the_layer_programs_matvecs_in_order() {
        let body = layer_program_fn;
        let calls = |f: &str| {
            let mut v = matvec_splits(body(f), "matvec_phase<");
            v.extend(matvec_splits(body(f), "matvec_phase_pre<"));
            // order of appearance, not of call kind
            v.sort_by_key(|ks| body(f).find(&format!(", {ks}")).unwrap_or(usize::MAX));
            v
        };
        let mlp = calls("__device__ void mlp_block(");
        let mut gdn = calls("__device__ void gdn_layer(");
        gdn.extend(mlp.clone());
        let mut att = calls("__device__ void attn_layer(");
        att.extend(mlp);
        assert_eq!(gdn, ["KS_GDN_IN", "KS_GDN_OUT", "KS_MLP_UP", "KS_MLP_DOWN"]);
        assert_eq!(att, ["KS_ATT_QKV", "KS_ATT_O", "KS_MLP_UP", "KS_MLP_DOWN"]);
        // The cursor's cases 0..3; cases 0 and 1 name the attention variant
        // before the GDN one, 2 and 3 (the MLP) serve both.
        let cursor = matvec_splits(kernel_body::STREAM_CURSOR, "ws_try_issue<");
        assert_eq!(
            cursor,
            [&att[0], &gdn[0], &att[1], &gdn[1], &gdn[2], &gdn[3]].map(String::as_str)
        );
    }

    /// `(call, first three template args)` of every matvec phase call and
    /// first-item copy (`matvec_phase_ahead`) in `body`, in order.
    fn matvec_calls(body: &str) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for name in ["matvec_phase_ahead<", "matvec_phase<", "matvec_phase_pre<"] {
            for (at, _) in body.match_indices(name) {
                let args = &body[at + name.len()..];
                let args = &args[..args.find(">(").expect("template args")];
                let shape: Vec<&str> = args.split(',').map(str::trim).take(3).collect();
                let kind = if name == "matvec_phase_ahead<" {
                    "ahead"
                } else {
                    "phase"
                };
                out.push((at, kind, shape.join(", ")));
            }
        }
        out.sort();
        out.into_iter().map(|(_, k, a)| (k, a)).collect()
    }

    #[test]
    fn every_first_item_copy_matches_the_phase_after_its_sync_point() {
        // With `prefetch: shared_first_item` a phase's first item reads the
        // slot the code before its sync point filled: both must name the
        // same rows (R), width (K) and K split, or the dot products use
        // other rows' weights.
        let body = layer_program_fn;
        let mlp = matvec_calls(body("__device__ void mlp_block("));
        let entry = matvec_calls(body("void prefetch_layer_entry("));
        for (layer, entry_copy) in [
            ("__device__ void gdn_layer(", &entry[1]),
            ("__device__ void attn_layer(", &entry[0]),
        ] {
            let mut program = matvec_calls(body(layer));
            program.extend(mlp.iter().cloned());
            // phase, then (copy, phase) per sync point; the layer's first
            // phase is copied at the end of the layer before it.
            assert_eq!(program.len(), 7, "{layer}: {program:?}");
            assert_eq!(program[0].0, "phase");
            assert_eq!(entry_copy.0, "ahead");
            assert_eq!(entry_copy.1, program[0].1, "{layer}: entry copy");
            for pair in program[1..].chunks(2) {
                assert_eq!(pair[0].0, "ahead", "{layer}: {pair:?}");
                assert_eq!(pair[1].0, "phase", "{layer}: {pair:?}");
                assert_eq!(pair[0].1, pair[1].1, "{layer}: copy and phase differ");
            }
        }
        // The last layer's MLP and the LM head hand over to layer 0, and
        // the kernel starts with layer 0's copies.
        assert!(body("__device__ void mlp_block(").contains(
            "if (PREFETCH || FIRST_ITEM_SMEM) prefetch_layer_entry(Wt, layer + 1, want_lm);"
        ));
        assert!(kernel_body::ENTRY.contains(
            "if (PREFETCH || FIRST_ITEM_SMEM) prefetch_layer_entry(Wt, 0, false);\n        SYNC_LM_HEAD"
        ));
        assert!(
            kernel_body::ENTRY
                .contains("if constexpr (FIRST_ITEM_SMEM) prefetch_layer_entry(Wt, 0, false);")
        );
    }

    #[test]
    fn fused_mlp_first_item_copy_matches_its_gate_up_rows() {
        // The fused MLP's first item reads its gate/up rows (2 R rows of
        // HIDDEN, the MLP_UP split) from the slot the out-projection phases
        // fill; its down rows go through the phase's own stage.
        let mlp = kernel_body::MLP_FUSED;
        assert!(mlp.contains(
            "fused_mlp_phase<MLP_R, KS_MLP_UP>(MLP_UP_ITEMS, xs, red, mlp_up_rows(Wt, wb),"
        ));
        assert!(
            blocks::fused_mlp::FUSED_MLP.contains("using GU = MatvecSteps<2 * R, HIDDEN, KSPLIT>;")
        );
        for layer in ["__device__ void gdn_layer(", "__device__ void attn_layer("] {
            let calls = matvec_calls(layer_program_fn(layer));
            assert_eq!(
                calls.last(),
                Some(&("ahead", "2 * MLP_R, HIDDEN, KS_MLP_UP".to_string())),
                "{layer}"
            );
        }
        let entry = function_in(mlp, "__device__ void mlp_block(");
        assert!(entry.ends_with(
            "if (PREFETCH || FIRST_ITEM_SMEM) prefetch_layer_entry(Wt, layer + 1, want_lm);\n    SYNC_MLP"
        ));
    }

    #[test]
    fn fused_mlp_is_one_opt_in_phase_reading_the_transposed_down_copy() {
        let c = Qwen35Config::qwen35_0_8b();
        let mut s = h100_two_phase_mlp();
        let plain = generate_decode(&c, &s).unwrap().source;
        assert!(plain.contains("constexpr bool  MLP_FUSED               = false;"));
        assert!(!plain.contains("fused_mlp_phase") && !plain.contains("LAYER_W_DOWN_T"));
        let plain_abi = decode_abi(&c, &s);
        s.decode.mlp = MlpMode::FusedSplitK;
        // One sync point per layer fewer: 115 - 24.
        assert_eq!(sync_points_per_token(&c, &s), 91);
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(k.contains("sync points/token : 91 grid barriers"));
        assert!(k.contains("constexpr bool  MLP_FUSED               = true;"));
        assert!(!k.contains("SYNC_"), "unreplaced sync marker");
        assert!(
            !k.contains("B.mlp_h["),
            "the fused MLP keeps no activation vector"
        );
        assert!(k.contains("red.global.add.v4.f32"));
        // Weights: the 320 of the checkpoint, then 24 transposed down copies.
        let abi = decode_abi(&c, &s);
        assert_eq!(abi.weights[..320], plain_abi.weights[..]);
        let down_t = &abi.weights[320..];
        assert_eq!(down_t.len(), 24);
        for (l, w) in down_t.iter().enumerate() {
            assert!(w.transposed);
            assert_eq!(w.canonical_name, format!("layers.{l}.mlp.down_proj.weight"));
            assert_eq!(w.shape, [3584, 1024]);
            let plain = abi.weight(&w.canonical_name).unwrap();
            assert!(!plain.transposed && plain.shape == [1024, 3584]);
        }
        let table: Vec<String> = (320..344).map(|i| i.to_string()).collect();
        assert!(k.contains(&format!(
            "LAYER_W_DOWN_T[N_LAYERS] = {{{}}};",
            table.join(", ")
        )));
        // The residual and its mid-layer copy.
        assert_eq!(abi.buffer("resid").unwrap().bytes, 2 * 1024 * 4);
        assert_eq!(plain_abi.buffer("resid").unwrap().bytes, 1024 * 4);
        // Shared memory: per warp a 4 KiB accumulator and a 4 KiB stage (2 rows x 4 steps x 512 B).
        let words = k.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains("constexpr int MLP_STAGE_WARP_BYTES = 4096;"));
        let off = smem_layout(&c, &s).mlp_acc;
        assert!(off >= working_smem_bytes(&c, &s) && off.is_multiple_of(128));
        assert!(words.contains(&format!("constexpr int MLP_ACC_OFFSET = {off};")));
        assert!(words.contains(&format!(
            "constexpr int MLP_STAGE_OFFSET = {};",
            off + 12 * 4096
        )));
        assert_eq!(abi.dynamic_smem_bytes, off + 12 * 8192);
        assert!(abi.dynamic_smem_bytes <= s.decode_smem_estimate(Some(&crate::model_dims(&c))));
        // The token program reads every weight once: the transposed down
        // copies, not the row-major ones (those serve the prefill).
        let prog = token_program(&c, &s);
        assert_eq!(prog.len(), 91);
        assert_eq!(prog.iter().filter(|p| p.kind == "MLP").count(), 24);
        let seen = reads_per_slot(&prog, abi.weights.len());
        for w in &abi.weights {
            let row_major_down =
                !w.transposed && w.canonical_name.ends_with("mlp.down_proj.weight");
            assert_eq!(
                seen[w.index],
                usize::from(!row_major_down),
                "{}",
                w.canonical_name
            );
        }
        let total: u64 = prog.iter().map(|p| p.weight_bytes).sum();
        assert_eq!(
            total,
            plain_abi.weights.iter().map(|w| w.bytes()).sum::<u64>()
        );
        // With the first-item slots, they follow the MLP's space.
        s.decode.prefetch = PrefetchMode::SharedFirstItem;
        let abi = decode_abi(&c, &s);
        assert_eq!(smem_layout(&c, &s).slots, off + 12 * 8192);
        assert_eq!(abi.dynamic_smem_bytes, off + 12 * 8192 + 12 * 4096);
        assert!(abi.dynamic_smem_bytes <= s.decode_smem_estimate(Some(&crate::model_dims(&c))));
        assert!(
            generate_decode(&c, &s)
                .unwrap()
                .source
                .contains("fused_mlp_phase")
        );
    }

    #[test]
    fn mlp_items_take_their_own_row_count() {
        let c = Qwen35Config::qwen35_0_8b();
        let mut s = Schedule::preset("h100").unwrap();
        s.decode.mlp_rows_per_warp = 0;
        let two = generate_decode(&c, &s).unwrap().source;
        assert!(two.contains("constexpr int   MLP_R                   = 2;"));
        // The sm_90 default.
        s.decode.mlp_rows_per_warp = 1;
        assert_eq!(s, Schedule::preset("h100").unwrap());
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(k.contains("constexpr int   MLP_R                   = 1;"));
        assert!(k.contains("constexpr int   MV_R                    = 2;"));
        assert!(k.contains("3584 items of 1 intermediate row(s), 1 warp(s)/item"));
        // The stage holds one down row per warp; the other phases keep 2 rows.
        assert!(k.contains("MLP_STAGE_WARP_BYTES = 2048;"));
        assert!(k.contains("fused_mlp_phase<MLP_R, KS_MLP_UP>(MLP_UP_ITEMS"));
        let prog = token_program(&c, &s);
        assert_eq!(prog.len() as u32, sync_points_per_token(&c, &s));
        let abi = decode_abi(&c, &s);
        let seen = reads_per_slot(&prog, abi.weights.len());
        assert_eq!(
            seen.iter().filter(|&&n| n == 1).count(),
            abi.weights.len() - 24,
            "every weight once but the row-major down copies"
        );
        // Two phases: the gate/up items and the SwiGLU epilogue take MLP_R.
        s.decode.mlp = MlpMode::TwoPhases;
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(k.contains("matvec_phase<2 * MLP_R, HIDDEN, KS_MLP_UP, MLP_R>(MLP_UP_ITEMS"));
        assert!(
            k.contains("B.mlp_h[item * MLP_R + r] = silu_f(pick(acc, r)) * pick(acc, r + MLP_R);")
        );
    }

    #[test]
    fn gdn_out_with_recurrence_drops_the_out_proj_phase() {
        let c = Qwen35Config::qwen35_0_8b();
        let mut s = h100_two_phase_mlp();
        let plain = generate_decode(&c, &s).unwrap().source;
        assert!(plain.contains("constexpr bool  GDN_OUT_FUSED           = false;"));
        assert!(
            !plain.contains("gated_delta_rule_out_step") && !plain.contains("LAYER_W_GDN_OUT_T")
        );
        s.decode.gdn_out = GdnOutMode::WithRecurrence;
        // One sync point per GDN layer fewer: 115 - 18, and 73 with the one-phase MLP.
        assert_eq!(sync_points_per_token(&c, &s), 97);
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(k.contains("sync points/token : 97 grid barriers"));
        assert!(!k.contains("SYNC_"), "unreplaced sync marker");
        assert!(!k.contains("B.gdn_o,"), "no separate out_proj input");
        assert!(k.contains("constexpr bool  GDN_OUT_FUSED           = true;"));
        let gdn = layer_program(&c, &s, LayerType::LinearAttention);
        let markers: Vec<&str> = gdn.iter().map(|p| p.marker).collect();
        assert_eq!(markers, ["GDN_IN", "GDN_REC_OUT", "MLP_UP", "MLP_DOWN"]);
        // Weights: the checkpoint's 320, then a transposed out_proj per GDN layer.
        let abi = decode_abi(&c, &s);
        assert_eq!(abi.weights.len(), 320 + 18);
        let mut table = Vec::new();
        let mut next = 320;
        for (l, ty) in c.layer_types.iter().enumerate() {
            if *ty == LayerType::LinearAttention {
                let w = &abi.weights[next];
                assert!(w.transposed);
                assert_eq!(
                    w.canonical_name,
                    format!("layers.{l}.linear_attn.out_proj.weight")
                );
                assert_eq!(w.shape, [2048, 1024]);
                table.push(next.to_string());
                next += 1;
            } else {
                table.push("-1".to_string());
            }
        }
        assert!(k.contains(&format!(
            "LAYER_W_GDN_OUT_T[N_LAYERS] = {{{}}};",
            table.join(", ")
        )));
        // Stages: 256 items on 132 blocks, the last 2 warps of each, 16 KiB each.
        let words = k.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains("constexpr int GDN_REC_WARPS = 2;"));
        assert!(words.contains("constexpr int GDN_OUT_STAGE_WARP_BYTES = 16384;"));
        assert_eq!(
            abi.dynamic_smem_bytes,
            smem_layout(&c, &s).gdn_out_stage + 2 * 16384
        );
        assert!(abi.dynamic_smem_bytes <= s.decode_smem_estimate(Some(&crate::model_dims(&c))));
        // The token program reads the transposed copies instead of the originals.
        let prog = token_program(&c, &s);
        assert_eq!(prog.len(), 97);
        let seen = reads_per_slot(&prog, abi.weights.len());
        for w in &abi.weights {
            let original =
                !w.transposed && w.canonical_name.ends_with("linear_attn.out_proj.weight");
            assert_eq!(
                seen[w.index],
                usize::from(!original),
                "{}",
                w.canonical_name
            );
        }
        assert!(
            prog.iter()
                .any(|p| p.kind == "GDN_REC_OUT" && p.state_bytes > 0)
        );
        // The recurrence phase hands over to the MLP's first items like the
        // separate out_proj phase did.
        let tail = matvec_calls(kernel_body::GDN_OUT_WITH_RECURRENCE);
        assert_eq!(
            tail,
            [("ahead", "2 * MLP_R, HIDDEN, KS_MLP_UP".to_string())]
        );
        // With the one-phase MLP both copies of the residual get the shares,
        // and the copy starts from the layer input.
        s.decode.mlp = MlpMode::FusedSplitK;
        assert_eq!(sync_points_per_token(&c, &s), 73);
        let abi = decode_abi(&c, &s);
        assert_eq!(abi.weights.len(), 320 + 24 + 18);
        assert!(
            abi.weights[320..344]
                .iter()
                .all(|w| w.canonical_name.ends_with("down_proj.weight"))
        );
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(!k.contains("SYNC_"));
        assert!(k.contains("if constexpr (GDN_OUT_FUSED && MLP_FUSED)"));
        assert!(k.contains("red_add_f32x4(resid + HIDDEN + 8 * c, lo);"));
        assert!(abi.dynamic_smem_bytes <= s.decode_smem_estimate(Some(&crate::model_dims(&c))));
    }

    #[test]
    fn first_item_slots_only_where_the_schedule_asks() {
        let c = Qwen35Config::qwen35_0_8b();
        let mut s = Schedule::preset("h100").unwrap();
        let plain = generate_decode(&c, &s).unwrap().source;
        assert!(plain.contains("constexpr bool  FIRST_ITEM_SMEM         = false;"));
        let plain_smem = decode_abi(&c, &s).dynamic_smem_bytes;
        s.decode.prefetch = PrefetchMode::SharedFirstItem;
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(k.contains("constexpr bool  FIRST_ITEM_SMEM         = true;"));
        assert!(k.contains("constexpr int   FIRST_ITEM_CHUNKS       = 8;"));
        assert!(k.contains("cp.async.cg.shared.global"));
        assert!(k.contains(
            "first item of the next phase copied to a 4096 B shared slot per warp before each sync"
        ));
        // The slots follow the working space, 128-byte aligned: 12 warps x 4 KiB.
        let abi = decode_abi(&c, &s);
        assert!(
            smem_layout(&c, &s).slots >= plain_smem
                && smem_layout(&c, &s).slots.is_multiple_of(128)
        );
        assert_eq!(
            abi.dynamic_smem_bytes,
            smem_layout(&c, &s).slots + 12 * 4096
        );
        assert!(abi.dynamic_smem_bytes <= s.decode_smem_estimate(Some(&crate::model_dims(&c))));
    }

    #[test]
    fn weight_rings_only_where_the_schedule_asks() {
        let c = Qwen35Config::qwen35_0_8b();
        let mut s = h100_two_phase_mlp();
        let plain = generate_decode(&c, &s).unwrap().source;
        assert!(
            !plain.contains("cp.async.bulk"),
            "rings are opt-in on sm_90"
        );
        s.decode.prefetch = PrefetchMode::SharedRing;
        let k = generate_decode(&c, &s).unwrap().source;
        assert!(k.contains("constexpr bool  WEIGHT_STREAM           = true;"));
        assert!(k.contains("cp.async.bulk.shared::cluster.global"));
        assert!(k.contains("ws_issue_next(WarpStream& s) {"));
        let abi = decode_abi(&c, &s);
        assert_eq!(
            abi.dynamic_smem_bytes,
            smem_layout(&c, &s).slots + 12 * s.decode.ring_bytes_per_warp
        );
        assert!(smem_layout(&c, &s).slots.is_multiple_of(128));
        assert!(abi.dynamic_smem_bytes + 4096 <= s.limits.shared_mem_per_block_optin);
        // gate+up: 4 rows of 1024 bf16; down: 2 rows of half of 3584 (K split 2).
        assert_eq!(largest_ring_item_bytes(&c, &s), 4 * 2048);
        let r = Schedule::preset("rtx3090").unwrap();
        let k = generate_decode(&c, &r).unwrap().source;
        assert!(k.contains("constexpr bool  WEIGHT_STREAM           = false;"));
        assert!(!k.contains("cp.async.bulk") && !k.contains("ws_issue_next"));
        assert_eq!(
            decode_abi(&c, &r).dynamic_smem_bytes,
            working_smem_bytes(&c, &r)
        );
        // A ring too small for the largest item is refused, with the size.
        let mut small = s.clone();
        small.decode.ring_bytes_per_warp = 6144;
        let e = generate_decode(&c, &small).unwrap_err().to_string();
        assert!(e.contains("ring_bytes_per_warp"), "{e}");
    }

    #[test]
    fn ksplit_gives_every_warp_work_on_small_phases() {
        let s = Schedule::preset("h100").unwrap(); // 132 x 12 = 1584 warps
        assert_eq!(ksplit_for(512, &s), 2);
        assert_eq!(ksplit_for(4112, &s), 1);
        assert_eq!(ksplit_for(10, &s), 4);
    }
}
