//! The schedule value: how the generated kernels split work over one chip.
//!
//! Everything a kernel is specialised on besides the model config lives here,
//! so that a change of chip is a change of this value (and a reviewable diff
//! of the generated CUDA), never an edit of kernel source.

use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::device::DeviceProps;
use crate::error::ScheduleError;

/// How one synchronisation point of the decode megakernel is implemented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Grid-wide barrier (every block waits for every block). Obviously
    /// right; the fallback.
    GridBarrier,
    /// Per-tile counters: a consumer waits only for the producers of the
    /// tiles it reads (e.g. the in_proj rows of one GDN head).
    TileCounters,
}

/// How a block uses the time it spends waiting at a sync point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefetchMode {
    /// No prefetch.
    None,
    /// `prefetch.global.L2` of the weight rows the warp owns in the next
    /// phase, issued before arriving at the sync point.
    L2,
    /// Every warp streams the weight rows it owns through its own
    /// shared-memory ring (`ring_bytes_per_warp`) with bulk async copies:
    /// copies run ahead of the dot products across sync points, the
    /// recurrence and attention. sm_90 and newer only; on an H100 it
    /// measured no faster than `None` (RESULTS.md).
    SharedRing,
    /// Before each sync point every warp copies its whole first item of the
    /// next matvec phase (`cp.async`, sm_80+) into its own shared-memory
    /// slot of `first_item_chunks_per_lane` 16-byte chunks per lane; that
    /// item's dot products read the slot, so its load round trip overlaps
    /// the barrier wait and the phase prologue. A phase whose item needs more
    /// chunks loads as usual. The copies are the phase's own bytes (no extra
    /// traffic) and hold no registers (the same idea in registers spilled
    /// and measured 1.6% slower on an H100). Measured slower on an H100
    /// (Qwen3.5-0.8B, tg128: 971 tok/s against 1028 without; RESULTS.md).
    SharedFirstItem,
}

/// How the decode megakernel runs each layer's MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpMode {
    /// Two phases: gate/up with SwiGLU, a grid barrier, then the down
    /// projection (two sync points per layer).
    #[default]
    TwoPhases,
    /// One phase: each warp item is `matvec_rows_per_warp` intermediate
    /// indices (their gate and up rows and their rows of a transposed copy
    /// of `down_proj`); every block sums its items' down-projection
    /// contributions in shared memory and adds them to the residual with
    /// float atomics. One sync point per layer fewer, the transposed copy
    /// costs `intermediate x hidden` bf16 of GPU memory per layer, and the
    /// residual's summation order (hence its last bits) varies between runs.
    /// sm_80+ (`cp.async`). The sm_90 default where it fits (H100,
    /// Qwen3.5-0.8B, tg128: 1075 tok/s against 1028 for two phases;
    /// RESULTS.md); [`Schedule::fitted_to_model`] returns to two phases where
    /// the per-warp accumulators exceed the shared memory.
    FusedSplitK,
}

/// Where the decode megakernel runs each GDN layer's out_proj.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GdnOutMode {
    /// Its own phase after the recurrence: every block normalises all heads
    /// (gated RMSNorm) and takes rows of out_proj (two sync points).
    #[default]
    SeparatePhase,
    /// In the recurrence phase: each (v-head, column slice) item, once every
    /// slice of its head has added its sum of squares (a per-head counter it
    /// waits on), applies the gated norm to its columns and multiplies them
    /// into its rows of a transposed copy of `out_proj`, adding the result to
    /// the residual with float atomics. One sync point per GDN layer fewer;
    /// needs every recurrence item resident at once (at most one per warp),
    /// the transposed copy (`hidden x value dim` bf16 per GDN layer), and
    /// the residual's last bits vary between runs. sm_80+ (`cp.async`), not
    /// with the GDN ready counters or the weight rings. Measured slower on an
    /// H100 (Qwen3.5-0.8B, tg128: 945 tok/s against 1028; RESULTS.md): the
    /// out_proj's bytes stream through the recurrence's 256 warps only.
    WithRecurrence,
}

/// Element type of a state buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateDType {
    Bf16,
    F32,
}

impl StateDType {
    pub fn bytes(self) -> u32 {
        match self {
            StateDType::Bf16 => 2,
            StateDType::F32 => 4,
        }
    }
}

/// The hardware limits a schedule is checked against (copied from
/// [`DeviceProps`] or written by hand for a preset).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceLimits {
    pub max_threads_per_block: u32,
    pub max_threads_per_sm: u32,
    pub max_blocks_per_sm: u32,
    /// Largest dynamic shared memory one block may opt into.
    pub shared_mem_per_block_optin: u32,
    pub shared_mem_per_sm: u32,
    pub regs_per_sm: u32,
    pub regs_per_block: u32,
    pub l2_bytes: u64,
}

/// Work split of the decode megakernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeSplit {
    /// Consecutive matrix rows one warp owns per work item of a matvec.
    pub matvec_rows_per_warp: u32,
    /// Intermediate indices per work item of the MLP's gate/up phase (and
    /// of the one-phase MLP's down rows); 0 = `matvec_rows_per_warp`
    /// ([`Schedule::mlp_rows`]). Fewer spread the intermediate more evenly
    /// over the grid's warps: 3,584 indices in items of 2 leave 208 of an
    /// H100's 1,584 warps a second item, in items of 1 the busiest warp
    /// holds 3 indices instead of 4 (the sm_90 presets' 1: 1% faster in
    /// tg128 on an H100, RESULTS.md). 1, 2, 4 or 8.
    #[serde(default)]
    pub mlp_rows_per_warp: u32,
    /// Bytes one lane loads per weight access (16 = `uint4`).
    pub vector_bytes: u32,
    /// GDN recurrence: value columns of one head's state that one warp
    /// updates (the state splits over (v-head, column slice) across the grid).
    pub gdn_value_cols_per_warp: u32,
    /// Attention: KV positions per work item (a warp owns one (q-head,
    /// chunk) item; chunks merge in two levels, each by a last arrival).
    /// 8, 16 or a multiple of 32.
    pub attn_kv_chunk: u32,
    /// Attention: V rows a lane loads together in the P.V pass (4 or 8; a
    /// chunk holds at least 8 positions): fewer dependent load rounds, more
    /// registers.
    #[serde(default = "default_attn_v_batch")]
    pub attn_v_batch: u32,
    /// Sync after the GDN input projections (all-to-all by head).
    pub sync_gdn_in_proj: SyncMode,
    /// Sync after the attention q/k/v projections.
    pub sync_attn_qkv: SyncMode,
    /// Fallback: every sync point is a grid barrier regardless of the fields above.
    pub barrier_per_phase: bool,
    pub prefetch: PrefetchMode,
    /// Bytes of next-phase weights each warp prefetches while waiting.
    pub prefetch_bytes_per_warp: u32,
    /// `SharedRing` only: bytes of each warp's weight ring (a multiple of
    /// 128; must hold the warp's largest matvec item).
    #[serde(default)]
    pub ring_bytes_per_warp: u32,
    /// `SharedFirstItem` only: 16-byte chunks per lane in each warp's slot
    /// (512 bytes of shared memory per chunk and warp; 1..=16).
    #[serde(default = "default_first_item_chunks")]
    pub first_item_chunks_per_lane: u32,
    /// How each layer's MLP runs (one or two sync points).
    #[serde(default)]
    pub mlp: MlpMode,
    /// Where each GDN layer's out_proj runs (its own phase or the recurrence's).
    #[serde(default)]
    pub gdn_out: GdnOutMode,
    /// LM head sampling: candidates each block keeps (per-block top-k).
    pub sample_candidates_per_block: u32,
    /// Global cap on the sampling candidate set (top-k/top-p act on these).
    pub sample_candidates_max: u32,
    /// Register cap per thread passed to `__launch_bounds__` (0 = derived).
    pub max_regs_per_thread: u32,
    /// Opt-in profiling: after every sync point block 0 records a
    /// `%globaltimer` stamp and every block its barrier wait (ABI buffers
    /// `phase_times`, `phase_waits`). Off in every preset; when off the
    /// generated kernel is unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub profile_phases: bool,
}

/// Tiles of the prefill kernels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrefillTiles {
    pub gemm_tile_m: u32,
    pub gemm_tile_n: u32,
    pub gemm_tile_k: u32,
    /// Pipeline stages of the GEMM's shared-memory ring (cp.async on sm_80+).
    pub gemm_stages: u32,
    pub gemm_threads: u32,
    /// Chunk length of the chunked gated delta rule (64 in HF/FLA).
    pub gdn_chunk: u32,
    /// Value columns per block of the delta rule's sequential state pass.
    /// CUDA cores: 8 or 16 (16 threads per column); tensor cores: 8, 16 or
    /// 32 (4 warps). More columns read each chunk's W and K tiles once for
    /// more of the state, on fewer blocks.
    #[serde(default = "default_gdn_state_cols")]
    pub gdn_state_cols: u32,
    /// The chunked delta rule's matrix products on `mma.sync` tf32 tensor
    /// cores with split operands (3xTF32, f32-like precision; sm_80+, needs
    /// `use_tensor_cores` and `use_cp_async`); off = register-tiled FMA.
    #[serde(default)]
    pub gdn_tensor_cores: bool,
    /// With `gdn_tensor_cores` (ignored without; see
    /// [`PrefillTiles::conv_in_prep`]): the delta rule's prep computes the
    /// depthwise causal conv (and SiLU) of its chunk's q, k and v channels
    /// from the input projection, so no conv kernel runs and the conv output
    /// never goes through global memory. Its q and v tiles then take
    /// [`gdn_tc_prep_smem_bytes`] of shared memory per block (about 104 KB for
    /// 128-wide heads: not within the 99 KB of sm_86/89/120). The sm_90 default.
    #[serde(default)]
    pub gdn_fused_conv: bool,
    pub attn_q_tile: u32,
    /// Keys per shared-memory stage of the tensor-core attention.
    pub attn_kv_tile: u32,
    /// Threads of the CUDA-core attention (one warp per token).
    pub attn_threads: u32,
    /// Prefill attention on `mma.sync` tensor cores (sm_80+, needs
    /// `use_tensor_cores` and `use_cp_async`): flash-style, K/V tiles of
    /// `attn_kv_tile` keys shared by a block's query heads; off = one warp
    /// per token on CUDA cores.
    #[serde(default)]
    pub attn_tensor_cores: bool,
    /// Use `mma.sync` bf16 tensor cores (sm_80+) instead of FMA.
    pub use_tensor_cores: bool,
    /// Use `cp.async` for global->shared copies (sm_80+).
    pub use_cp_async: bool,
    /// GEMM inputs as two bf16 parts (the value and its remainder): f32-like
    /// activation precision for twice the tensor-core work; off = plain bf16
    /// activations.
    #[serde(default = "default_true")]
    pub split_activations: bool,
    /// sm_90 only: the prefill GEMM loads tiles with TMA and multiplies with
    /// `wgmma` (warpgroup MMA, operands in shared memory) instead of
    /// `mma.sync`; the prefill file is then compiled for `sm_90a`. Needs
    /// `gemm_tile_k` 64, `gemm_tile_m` 64 or 128, `gemm_threads` = 128 per
    /// 64 rows + 128 (the producer warpgroup), and `gemm_tile_n` up to 256.
    #[serde(default)]
    pub gemm_wgmma: bool,
    /// wgmma GEMM: blocks per cluster along N (1 or 2). With 2, the two
    /// blocks of a cluster load half of each activation tile each and TMA
    /// multicasts it to both, so every SM reads a third less from L2.
    #[serde(default = "default_one")]
    pub gemm_cluster: u32,
    /// sm_90+: launch each prefill kernel as a programmatic dependent of the
    /// one before it, so its blocks are scheduled while that one drains; every
    /// kernel waits (`griddepcontrol.wait`) for its predecessor to complete
    /// before touching memory. Off = ordinary stream order.
    #[serde(default)]
    pub programmatic_launch: bool,
}

fn default_one() -> u32 {
    1
}

impl PrefillTiles {
    /// Whether the delta rule's prep computes the causal conv: `gdn_fused_conv`
    /// on the tensor-core path (the CUDA-core prep reads the conv kernel's output).
    pub fn conv_in_prep(&self) -> bool {
        self.gdn_fused_conv && self.gdn_tensor_cores
    }

    /// Ring depth the prefill GEMM is generated with (at least 2: one stage
    /// loads while one computes).
    pub fn gemm_ring_stages(&self) -> u32 {
        self.gemm_stages.max(2)
    }

    /// Bytes of the prefill GEMM's shared-memory operand ring: every stage
    /// holds the activation parts' tiles and the weight tile. mma.sync rows
    /// are padded by 8 halves (conflict-free fragment loads); wgmma rows are
    /// unpadded 128-byte swizzle rows plus 1 KiB to align the ring.
    pub fn gemm_ring_bytes(&self) -> u32 {
        let parts = if self.split_activations { 2 } else { 1 };
        let rows = parts * self.gemm_tile_m + self.gemm_tile_n;
        if self.gemm_wgmma {
            self.gemm_ring_stages() * rows * self.gemm_tile_k * 2 + 1024
        } else {
            self.gemm_ring_stages() * rows * (self.gemm_tile_k + 8) * 2
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_gdn_state_cols() -> u32 {
    8
}

/// DDTree verification parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeParams {
    /// Nodes per verified tree, excluding the root.
    pub budget: u32,
    /// Largest budget the tree kernels are compiled for.
    pub max_budget: u32,
    /// Candidates per depth drawn from the draft.
    pub top_k: u32,
    pub threads: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    /// Preset name (`rtx3090`) or `derived` for `for_device`.
    pub preset: String,
    pub arch: Arch,
    pub sm_count: u32,
    /// Persistent grid: blocks per SM times SMs.
    pub blocks_per_sm: u32,
    pub threads_per_block: u32,
    pub limits: DeviceLimits,
    pub decode: DecodeSplit,
    pub prefill: PrefillTiles,
    pub tree: TreeParams,
    pub kv_cache_dtype: StateDType,
    pub gdn_state_dtype: StateDType,
    /// Largest context (prompt + generated) the state buffers hold.
    pub max_context: u32,
}

/// The model dimensions a schedule is validated against (plain numbers so
/// that this crate does not depend on the model crate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDims {
    pub hidden_size: u32,
    pub intermediate_size: u32,
    pub vocab_size: u32,
    pub head_dim: u32,
    pub num_attention_heads: u32,
    pub num_key_value_heads: u32,
    pub linear_num_key_heads: u32,
    pub linear_num_value_heads: u32,
    pub linear_key_head_dim: u32,
    pub linear_value_head_dim: u32,
    pub max_position_embeddings: u32,
}

/// Known presets: (name, arch, SMs).
const PRESETS: &[(&str, Arch, u32)] = &[
    ("rtx2080ti", Arch::new(7, 5), 68),
    ("a100", Arch::new(8, 0), 108),
    ("rtx3090", Arch::new(8, 6), 82),
    ("rtx4090", Arch::new(8, 9), 128),
    ("h100", Arch::new(9, 0), 132),
    ("h200", Arch::new(9, 0), 132),
    ("rtx5090", Arch::new(12, 0), 170),
    ("gb10", Arch::new(12, 1), 48),
];

/// Presets as (name, arch, SM count), in a stable order.
pub fn list_presets() -> Vec<(&'static str, Arch, u32)> {
    PRESETS.to_vec()
}

fn known_presets() -> String {
    PRESETS
        .iter()
        .map(|(n, a, s)| format!("{n} ({a}, {s} SMs)"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The limits of a named chip (CUDA occupancy tables + datasheets).
fn preset_limits(name: &str, arch: Arch) -> DeviceLimits {
    // Per-arch limits from the CUDA programming guide's compute capability
    // table; L2 sizes from the datasheets.
    let (max_threads_sm, max_blocks_sm, smem_sm, smem_optin) = match arch.number() {
        75 => (1024, 16, 64 * 1024, 64 * 1024),
        80 => (2048, 32, 164 * 1024, 163 * 1024),
        86 | 87 => (1536, 16, 100 * 1024, 99 * 1024),
        89 => (1536, 24, 100 * 1024, 99 * 1024),
        90 => (2048, 32, 228 * 1024, 227 * 1024),
        _ => (1536, 32, 100 * 1024, 99 * 1024), // sm_100/120/121 consumer parts
    };
    let l2: u64 = match name {
        "rtx2080ti" => 5_632 * 1024,
        "a100" => 40 << 20,
        "rtx3090" => 6 << 20,
        "rtx4090" => 72 << 20,
        "h100" | "h200" => 50 << 20,
        "rtx5090" => 96 << 20,
        "gb10" => 24 << 20,
        _ => 4 << 20,
    };
    DeviceLimits {
        max_threads_per_block: 1024,
        max_threads_per_sm: max_threads_sm,
        max_blocks_per_sm: max_blocks_sm,
        shared_mem_per_block_optin: smem_optin,
        shared_mem_per_sm: smem_sm,
        regs_per_sm: 65_536,
        regs_per_block: 65_536,
        l2_bytes: l2,
    }
}

impl Schedule {
    /// Persistent grid size of the decode megakernel.
    pub fn grid_blocks(&self) -> u32 {
        self.sm_count * self.blocks_per_sm
    }
    pub fn warps_per_block(&self) -> u32 {
        self.threads_per_block / 32
    }
    pub fn total_warps(&self) -> u32 {
        self.grid_blocks() * self.warps_per_block()
    }

    /// A named preset (`rtx3090`, `h100`, ...).
    pub fn preset(name: &str) -> Result<Self, ScheduleError> {
        let key = name.trim().to_ascii_lowercase();
        let (n, arch, sms) = PRESETS
            .iter()
            .find(|(n, _, _)| *n == key)
            .copied()
            .ok_or_else(|| ScheduleError::UnknownPreset {
                preset: name.to_string(),
                known: known_presets(),
            })?;
        Ok(Self::build(n, arch, sms, preset_limits(n, arch)))
    }

    /// The preset of an arch (sm_90 -> h100). `sm_90a` selects the h100
    /// preset with arch-specific features on.
    pub fn preset_for_arch(arch: Arch) -> Result<Self, ScheduleError> {
        let name = match (arch.major, arch.minor) {
            (9, 0) => Some("h100"),
            _ => PRESETS
                .iter()
                .find(|(_, a, _)| a.major == arch.major && a.minor == arch.minor)
                .map(|(n, _, _)| *n),
        };
        let name = name.ok_or_else(|| ScheduleError::UnknownTarget {
            target: arch.sm_name(),
            known: PRESETS
                .iter()
                .map(|(n, a, _)| format!("{a} ({n})"))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let mut s = Self::preset(name)?;
        s.arch.arch_specific = arch.arch_specific;
        Ok(s)
    }

    /// Parse `--target`-style strings (`sm_86`, `8.6`) into the arch's preset.
    pub fn for_target(target: &str) -> Result<Self, ScheduleError> {
        let arch: Arch = target.parse().map_err(|_| ScheduleError::UnknownTarget {
            target: target.to_string(),
            known: PRESETS
                .iter()
                .map(|(n, a, _)| format!("{a} ({n})"))
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        Self::preset_for_arch(arch)
    }

    /// Derive a schedule from detected device properties.
    pub fn for_device(props: &DeviceProps) -> Result<Self, ScheduleError> {
        let limits = DeviceLimits {
            max_threads_per_block: props.max_threads_per_block,
            max_threads_per_sm: props.max_threads_per_sm,
            max_blocks_per_sm: 16,
            shared_mem_per_block_optin: props.shared_mem_per_block_optin,
            shared_mem_per_sm: props.shared_mem_per_sm,
            regs_per_sm: props.regs_per_sm,
            regs_per_block: props.regs_per_block,
            l2_bytes: props.l2_bytes,
        };
        let mut s = Self::build("derived", props.arch, props.sm_count, limits);
        s.preset = "derived".into();
        if s.threads_per_block > props.max_threads_per_block {
            s.threads_per_block = props.max_threads_per_block / 32 * 32;
        }
        s.check_hardware()?;
        Ok(s)
    }

    /// The schedule with `patch` (a JSON object of fields to change, nested
    /// like the schedule's own JSON, e.g. `{"prefill": {"gemm_tile_n": 128}}`)
    /// merged in, then checked against the hardware limits. Unknown fields
    /// are an error, so a typo cannot silently do nothing.
    pub fn patched(&self, patch: &str) -> Result<Self, ScheduleError> {
        fn merge(
            base: &mut serde_json::Value,
            patch: &serde_json::Value,
            path: &str,
        ) -> Result<(), ScheduleError> {
            match (base, patch) {
                (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
                    for (k, v) in p {
                        let here = format!("{path}{k}");
                        let slot = b.get_mut(k).ok_or_else(|| {
                            ScheduleError::BadPatch(format!("names an unknown field `{here}`"))
                        })?;
                        merge(slot, v, &format!("{here}."))?;
                    }
                    Ok(())
                }
                (b, p) => {
                    *b = p.clone();
                    Ok(())
                }
            }
        }
        let patch: serde_json::Value = serde_json::from_str(patch)
            .map_err(|e| ScheduleError::BadPatch(format!("is not JSON: {e}")))?;
        if !patch.is_object() {
            return Err(ScheduleError::BadPatch("must be a JSON object".into()));
        }
        let mut value = serde_json::to_value(self)
            .map_err(|e| ScheduleError::BadPatch(format!("cannot serialise the schedule: {e}")))?;
        merge(&mut value, &patch, "")?;
        let s: Self = serde_json::from_value(value)
            .map_err(|e| ScheduleError::BadPatch(format!("gives an invalid schedule: {e}")))?;
        s.check_hardware()?;
        Ok(s)
    }

    /// The same schedule with its context capped at what the model supports
    /// (a small model config may allow fewer positions than the preset holds).
    pub fn capped_to_model_context(mut self, max_position_embeddings: u32) -> Self {
        self.max_context = self.max_context.min(max_position_embeddings);
        self
    }

    /// The same schedule fitted to a model: context capped as in
    /// [`Self::capped_to_model_context`], and matvec rows per warp halved
    /// until they divide every row count the decode kernel splits (a small
    /// model may have, e.g., 6 value heads where the preset wants 4 rows).
    /// Shared-memory opt-ins that do not fit the model's widths step back:
    /// the fused MLP to two phases (also under the weight rings, which
    /// stream the two-phase MLP; its items then take the matvec rows), the
    /// rings shrink or turn off.
    pub fn fitted_to_model(self, m: &ModelDims) -> Self {
        let mut s = self.capped_to_model_context(m.max_position_embeddings);
        let rows = matvec_row_counts(m);
        while s.decode.matvec_rows_per_warp > 1
            && rows
                .iter()
                .any(|(_, r)| !r.is_multiple_of(s.decode.matvec_rows_per_warp))
        {
            s.decode.matvec_rows_per_warp /= 2;
        }
        while s.decode.mlp_rows_per_warp > 1
            && !m
                .intermediate_size
                .is_multiple_of(s.decode.mlp_rows_per_warp)
        {
            s.decode.mlp_rows_per_warp /= 2;
        }
        let (dk, dv) = (m.linear_key_head_dim, m.linear_value_head_dim);
        if s.prefill.gdn_tensor_cores
            && !gdn_tensor_core_tiles_fit(dk, dv, s.prefill.gdn_state_cols)
        {
            // The fewest columns that fit; heads the tiles cannot take use CUDA cores.
            match [16, 32]
                .into_iter()
                .find(|c| gdn_tensor_core_tiles_fit(dk, dv, *c))
            {
                Some(cols) => s.prefill.gdn_state_cols = cols,
                None => {
                    s.prefill.gdn_tensor_cores = false;
                    s.prefill.gdn_state_cols = s.prefill.gdn_state_cols.min(16);
                }
            }
        }
        if s.prefill.conv_in_prep()
            && gdn_tc_prep_smem_bytes(s.prefill.gdn_chunk, dk, dv, true)
                > s.limits.shared_mem_per_block_optin
        {
            // The conv kernel runs instead.
            s.prefill.gdn_fused_conv = false;
        }
        if s.decode.mlp == MlpMode::FusedSplitK
            && (s.decode.prefetch == PrefetchMode::SharedRing
                || s.decode_smem_estimate(Some(m)) > s.limits.shared_mem_per_block_optin)
        {
            // The rings stream the two-phase MLP's rows, or the per-warp
            // accumulators of the hidden vector do not fit. The item size
            // was chosen for the one phase: back to the matvec rows.
            s.decode.mlp = MlpMode::TwoPhases;
            s.decode.mlp_rows_per_warp = 0;
        }
        if s.decode.prefetch == PrefetchMode::SharedRing {
            // The largest ring the shared memory leaves room for, or no ring
            // when that cannot hold the largest item (big hidden sizes).
            let free = s
                .limits
                .shared_mem_per_block_optin
                .saturating_sub(s.decode_working_smem(Some(m)) + RING_STATIC_RESERVE);
            let fit = (free / s.warps_per_block().max(1)) / 128 * 128;
            s.decode.ring_bytes_per_warp = s.decode.ring_bytes_per_warp.min(fit);
            if s.decode.ring_bytes_per_warp
                < ring_item_bytes_bound(m, s.decode.matvec_rows_per_warp.max(s.mlp_rows()))
            {
                s.decode.prefetch = PrefetchMode::None;
                s.decode.ring_bytes_per_warp = 0;
            }
        }
        s
    }

    /// The same schedule on a chip with `n` SMs (e.g. a partitioned GPU).
    pub fn with_sm_count(mut self, n: u32) -> Self {
        self.sm_count = n;
        self.decode.prefetch_bytes_per_warp = prefetch_depth(
            self.limits.l2_bytes,
            n * self.blocks_per_sm,
            self.threads_per_block,
        );
        self
    }

    fn build(name: &str, arch: Arch, sms: u32, limits: DeviceLimits) -> Self {
        // One 384-thread block per SM: 12 warps keep plenty of 16-byte weight
        // loads in flight (~48 KB per SM) and leave 168 registers per thread,
        // which the decode megakernel needs to run without spills.
        let threads = 384;
        let blocks_per_sm = 1;
        let sm80 = arch.number() >= 80;
        let sm90 = arch.number() / 10 == 9;
        Self {
            preset: name.to_string(),
            arch,
            sm_count: sms,
            blocks_per_sm,
            threads_per_block: threads,
            decode: DecodeSplit {
                // 4 would be ~2% faster on H100 (825-832 vs 808-811 tok/s,
                // Qwen3.5-0.8B) but spills registers (40 B) in the megakernel.
                matvec_rows_per_warp: 2,
                // sm_90's one-phase MLP in items of one intermediate index
                // (H100, 0.8B, tg128: 1,084.6 / 1,085.0 / 1,085.2 tok/s against
                // 1,074.8 / 1,074.1 / 1,074.9 with 2, one run; RESULTS.md).
                mlp_rows_per_warp: if sm90 { 1 } else { 0 },
                vector_bytes: 16,
                gdn_value_cols_per_warp: 8,
                // Short chunks keep each item to one round of K and V loads;
                // the two-level merge keeps the merge short. On sm_90 the
                // attention items wait on per-head ready counters instead of
                // a grid barrier, and there 16 positions per item measured
                // best (H100, tg128: 1030.5 / 1031.0 tok/s against 1024.5 /
                // 1025.3 with barriers and 8, one run). The GDN counters
                // measured slower (1009 vs 1024) and stay off; other archs
                // keep the barriers (not measured).
                attn_kv_chunk: if sm90 { 16 } else { 8 },
                attn_v_batch: default_attn_v_batch(),
                sync_gdn_in_proj: SyncMode::GridBarrier,
                sync_attn_qkv: if sm90 {
                    SyncMode::TileCounters
                } else {
                    SyncMode::GridBarrier
                },
                barrier_per_phase: !sm90,
                // sm_90 moves no weights ahead: the L2 prefetch before each
                // sync point cost more than it saved (H100, pp520/tg128: 811
                // tok/s without, 782 with 8 KB/warp), and so did the
                // shared-memory rings (989 tok/s without, 955 with 16 KiB
                // rings, 989 with 8 KiB): the phases wait on chains of
                // dependent loads, not on weight bandwidth. The ring size
                // stays set so `prefetch: shared_ring` can be tried with a
                // patch. Other archs keep the L2 prefetch (not measured since).
                prefetch: if sm90 {
                    PrefetchMode::None
                } else {
                    PrefetchMode::L2
                },
                prefetch_bytes_per_warp: prefetch_depth(
                    limits.l2_bytes,
                    sms * blocks_per_sm,
                    threads,
                ),
                ring_bytes_per_warp: if arch.number() / 10 == 9 {
                    RING_BYTES_PER_WARP_SM90
                } else {
                    0
                },
                first_item_chunks_per_lane: default_first_item_chunks(),
                // sm_90: the MLP as one split-K phase (H100, Qwen3.5-0.8B, tg128:
                // 1074.8 / 1074.7 tok/s against 1027.7 / 1028.1 for two phases,
                // one run; RESULTS.md). `fitted_to_model` returns to two phases
                // where its accumulators do not fit (hidden sizes above ~2K).
                // Other archs: not measured (and 99 KiB chips cannot hold it).
                mlp: if sm90 {
                    MlpMode::FusedSplitK
                } else {
                    MlpMode::TwoPhases
                },
                // Measured slower (H100, 0.8B, tg128: 945 tok/s against 1028):
                // its out_proj runs on the 256 recurrence warps only.
                gdn_out: GdnOutMode::SeparatePhase,
                sample_candidates_per_block: 8,
                sample_candidates_max: 256,
                max_regs_per_thread: 0,
                profile_phases: false,
            },
            // sm_90: TMA + wgmma, 128x128x64 tiles in a 4-stage ring, two math
            // warpgroups and a producer (pp520 on an H100: 57.3K tok/s against 40.5K
            // for mma.sync; 128x256 50.6K, 64x256 55.0K; RESULTS.md).
            prefill: PrefillTiles {
                gemm_tile_m: if sm90 { 128 } else { 64 },
                gemm_tile_n: if sm90 { 128 } else { 64 },
                gemm_tile_k: if sm90 { 64 } else { 32 },
                gemm_stages: if sm90 {
                    4
                } else if sm80 {
                    3
                } else {
                    2
                },
                gemm_threads: if sm90 { 384 } else { 128 },
                gdn_chunk: 64,
                gdn_state_cols: if sm80 { 16 } else { 8 },
                gdn_tensor_cores: sm80,
                // Measured on an H100 only (pp520 within 0.6% of the conv kernel, RESULTS.md),
                // where two 104 KB prep blocks still fit an SM; an A100's 164 KB would hold one.
                gdn_fused_conv: sm90
                    && gdn_tc_prep_smem_bytes(64, 128, 128, true)
                        <= limits.shared_mem_per_block_optin,
                attn_q_tile: 64,
                attn_kv_tile: 32,
                attn_threads: 128,
                attn_tensor_cores: sm80,
                use_tensor_cores: sm80,
                use_cp_async: sm80,
                split_activations: true,
                gemm_wgmma: sm90,
                gemm_cluster: 1,
                programmatic_launch: arch.number() >= 90,
            },
            tree: TreeParams {
                budget: 22,
                max_budget: 64,
                top_k: 8,
                threads: 256,
            },
            kv_cache_dtype: StateDType::Bf16,
            gdn_state_dtype: StateDType::F32,
            max_context: 8192,
            limits,
        }
    }

    /// Blocks of `threads` threads that fit on one SM given threads, registers
    /// and shared memory.
    pub fn max_coresident_blocks_per_sm(&self, regs_per_thread: u32, smem_per_block: u32) -> u32 {
        let l = &self.limits;
        let by_threads = l.max_threads_per_sm / self.threads_per_block.max(1);
        // Registers are allocated per warp in units of 256.
        let regs_per_warp = (regs_per_thread * 32).div_ceil(256) * 256;
        let by_regs = l.regs_per_sm / (regs_per_warp * self.warps_per_block()).max(1);
        let by_smem = l
            .shared_mem_per_sm
            .checked_div(smem_per_block)
            .unwrap_or(u32::MAX);
        by_threads
            .min(by_regs)
            .min(by_smem)
            .min(l.max_blocks_per_sm)
    }

    /// Register budget per thread implied by the launch shape.
    pub fn regs_per_thread_budget(&self) -> u32 {
        if self.decode.max_regs_per_thread != 0 {
            return self.decode.max_regs_per_thread;
        }
        let per_block = self.limits.regs_per_sm / self.blocks_per_sm.max(1);
        (per_block / self.threads_per_block.max(1)).min(255) / 8 * 8
    }

    fn invalid(
        field: &'static str,
        value: impl ToString,
        limit: impl Into<String>,
    ) -> ScheduleError {
        ScheduleError::Invalid {
            field,
            value: value.to_string(),
            limit: limit.into(),
        }
    }

    fn check_hardware(&self) -> Result<(), ScheduleError> {
        let t = self.threads_per_block;
        if t == 0 || !t.is_multiple_of(32) {
            return Err(Self::invalid(
                "threads_per_block",
                t,
                "must be a positive multiple of 32",
            ));
        }
        if t > self.limits.max_threads_per_block.min(1024) {
            return Err(Self::invalid(
                "threads_per_block",
                t,
                format!(
                    "at most {} threads per block",
                    self.limits.max_threads_per_block.min(1024)
                ),
            ));
        }
        if self.sm_count == 0 {
            return Err(Self::invalid("sm_count", 0, "must be at least 1"));
        }
        if self.blocks_per_sm == 0 {
            return Err(Self::invalid("blocks_per_sm", 0, "must be at least 1"));
        }
        Ok(())
    }

    /// Reject schedules the hardware or the model cannot run. `dims` adds the
    /// checks that need model dimensions (tiles dividing dimensions).
    pub fn validate(&self, dims: Option<&ModelDims>) -> Result<(), ScheduleError> {
        self.check_hardware()?;
        let d = &self.decode;
        let regs = self.regs_per_thread_budget();
        if regs < 32 {
            return Err(Self::invalid(
                "blocks_per_sm",
                self.blocks_per_sm,
                format!(
                    "leaves {regs} registers per thread at {} threads per block (need >= 32)",
                    self.threads_per_block
                ),
            ));
        }
        let smem = self.decode_smem_estimate(dims);
        if smem > self.limits.shared_mem_per_block_optin {
            // Name the opt-in that takes the space, so the fix is obvious.
            let parts: Vec<String> = [
                ("decode.mlp = fused_split_k", self.fused_mlp_smem(dims)),
                (
                    "decode.gdn_out = with_recurrence",
                    self.gdn_out_stage_smem(dims),
                ),
            ]
            .into_iter()
            .filter(|(_, b)| *b > 0)
            .map(|(what, b)| format!("{what} takes {b} of them"))
            .collect();
            let what = if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join("; "))
            };
            return Err(Self::invalid(
                "shared memory per block",
                smem,
                format!(
                    "over the opt-in limit of {} bytes on {}{what}",
                    self.limits.shared_mem_per_block_optin, self.arch
                ),
            ));
        }
        let fit = self.max_coresident_blocks_per_sm(regs, smem);
        if self.blocks_per_sm > fit {
            return Err(Self::invalid(
                "blocks_per_sm",
                self.blocks_per_sm,
                format!(
                    "only {fit} blocks of {} threads ({regs} regs/thread, {smem} B smem) can be co-resident per SM; the persistent grid needs all blocks resident",
                    self.threads_per_block
                ),
            ));
        }
        if !matches!(d.matvec_rows_per_warp, 1 | 2 | 4 | 8) {
            return Err(Self::invalid(
                "decode.matvec_rows_per_warp",
                d.matvec_rows_per_warp,
                "one of 1, 2, 4, 8",
            ));
        }
        if !matches!(d.mlp_rows_per_warp, 0 | 1 | 2 | 4 | 8) {
            return Err(Self::invalid(
                "decode.mlp_rows_per_warp",
                d.mlp_rows_per_warp,
                "one of 0 (as matvec_rows_per_warp), 1, 2, 4, 8",
            ));
        }
        if d.vector_bytes != 16 {
            return Err(Self::invalid(
                "decode.vector_bytes",
                d.vector_bytes,
                "only 16-byte (uint4) loads are generated",
            ));
        }
        if !matches!(d.gdn_value_cols_per_warp, 4 | 8 | 16) {
            return Err(Self::invalid(
                "decode.gdn_value_cols_per_warp",
                d.gdn_value_cols_per_warp,
                "one of 4, 8, 16",
            ));
        }
        if !(matches!(d.attn_kv_chunk, 8 | 16)
            || (d.attn_kv_chunk > 0 && d.attn_kv_chunk.is_multiple_of(32)))
        {
            return Err(Self::invalid(
                "decode.attn_kv_chunk",
                d.attn_kv_chunk,
                "8, 16 or a positive multiple of 32 (lanes share a position in slices of 32)",
            ));
        }
        if !matches!(d.attn_v_batch, 4 | 8) {
            return Err(Self::invalid(
                "decode.attn_v_batch",
                d.attn_v_batch,
                "4 or 8",
            ));
        }
        if d.sample_candidates_per_block == 0 || d.sample_candidates_per_block > 16 {
            return Err(Self::invalid(
                "decode.sample_candidates_per_block",
                d.sample_candidates_per_block,
                "1..=16",
            ));
        }
        let pool = self.grid_blocks() * d.sample_candidates_per_block;
        if pool > 4096 {
            return Err(Self::invalid(
                "decode.sample_candidates_per_block",
                d.sample_candidates_per_block,
                format!(
                    "grid x candidates = {pool} must be <= 4096 (final merge sorts them in one block)"
                ),
            ));
        }
        if d.sample_candidates_max == 0 || d.sample_candidates_max > pool {
            return Err(Self::invalid(
                "decode.sample_candidates_max",
                d.sample_candidates_max,
                format!("1..={pool} (grid blocks x candidates per block)"),
            ));
        }
        if self.max_context == 0 {
            return Err(Self::invalid("max_context", 0, "must be positive"));
        }
        if self.kv_cache_dtype != StateDType::Bf16 {
            return Err(Self::invalid(
                "kv_cache_dtype",
                format!("{:?}", self.kv_cache_dtype),
                "only bf16 is generated",
            ));
        }
        if self.gdn_state_dtype != StateDType::F32 {
            return Err(Self::invalid(
                "gdn_state_dtype",
                format!("{:?}", self.gdn_state_dtype),
                "only f32 is generated",
            ));
        }
        let p = &self.prefill;
        for (field, v) in [
            ("prefill.gemm_tile_m", p.gemm_tile_m),
            ("prefill.gemm_tile_n", p.gemm_tile_n),
            ("prefill.gemm_tile_k", p.gemm_tile_k),
        ] {
            if v == 0 || v % 16 != 0 {
                return Err(Self::invalid(
                    field,
                    v,
                    "a positive multiple of 16 (mma.sync m16n8k16 tiles)",
                ));
            }
        }
        if p.gemm_stages == 0 || p.gemm_stages > 8 {
            return Err(Self::invalid("prefill.gemm_stages", p.gemm_stages, "1..=8"));
        }
        if (p.use_tensor_cores || p.use_cp_async) && self.arch.number() < 80 {
            return Err(Self::invalid(
                if p.use_tensor_cores {
                    "prefill.use_tensor_cores"
                } else {
                    "prefill.use_cp_async"
                },
                "true",
                format!(
                    "bf16 mma.sync and cp.async need sm_80+, target is {}",
                    self.arch
                ),
            ));
        }
        if !p.gemm_threads.is_multiple_of(32) || p.gemm_threads == 0 || p.gemm_threads > 1024 {
            return Err(Self::invalid(
                "prefill.gemm_threads",
                p.gemm_threads,
                "a multiple of 32 in 32..=1024",
            ));
        }
        let gemm_warps = p.gemm_threads / 32;
        let warp_tiles = (p.gemm_tile_m / 16) * (p.gemm_tile_n / 8);
        if !p.gemm_wgmma && !warp_tiles.is_multiple_of(gemm_warps) {
            return Err(Self::invalid(
                "prefill.gemm_threads",
                p.gemm_threads,
                format!(
                    "{gemm_warps} warps must evenly share the {warp_tiles} 16x8 mma tiles of a {}x{} block tile",
                    p.gemm_tile_m, p.gemm_tile_n
                ),
            ));
        }
        if p.gemm_wgmma {
            let why = if (self.arch.major, self.arch.minor) != (9, 0) {
                Some(format!("wgmma needs sm_90, target is {}", self.arch))
            } else if !p.use_tensor_cores {
                Some("wgmma needs use_tensor_cores".to_string())
            } else if p.gemm_tile_k != 64 {
                Some(format!(
                    "wgmma needs gemm_tile_k 64 (one 128-byte swizzle row), got {}",
                    p.gemm_tile_k
                ))
            } else if ![64, 128].contains(&p.gemm_tile_m)
                || p.gemm_threads != 2 * p.gemm_tile_m + 128
            {
                Some(format!(
                    "wgmma needs gemm_tile_m 64 or 128 and gemm_threads = one 128-thread math warpgroup per 64 rows + one producer warpgroup ({}), got {} rows and {} threads",
                    2 * p.gemm_tile_m + 128,
                    p.gemm_tile_m,
                    p.gemm_threads
                ))
            } else if p.gemm_tile_n > 256 {
                // (a multiple of 16, as every GEMM path needs: SwiGLU halves of whole n8 tiles)
                Some(format!(
                    "wgmma needs gemm_tile_n <= 256 (the instruction's largest N), got {}",
                    p.gemm_tile_n
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Self::invalid("prefill.gemm_wgmma", "true", why));
            }
        }
        let gemm_smem = p.gemm_ring_bytes();
        if gemm_smem > self.limits.shared_mem_per_block_optin {
            return Err(Self::invalid(
                "prefill.gemm_stages",
                p.gemm_stages,
                format!(
                    "{gemm_smem} B of GEMM staging exceeds the {} B opt-in limit",
                    self.limits.shared_mem_per_block_optin
                ),
            ));
        }
        if p.gdn_chunk != 64 {
            return Err(Self::invalid(
                "prefill.gdn_chunk",
                p.gdn_chunk,
                "the chunked delta rule is generated for chunk 64",
            ));
        }
        if p.attn_q_tile == 0
            || !p.attn_q_tile.is_multiple_of(16)
            || p.attn_kv_tile == 0
            || !p.attn_kv_tile.is_multiple_of(16)
        {
            return Err(Self::invalid(
                "prefill.attn_q_tile",
                p.attn_q_tile,
                "q and kv tiles must be positive multiples of 16",
            ));
        }
        if !matches!(p.gemm_cluster, 1 | 2) || (p.gemm_cluster > 1 && !p.gemm_wgmma) {
            return Err(Self::invalid(
                "prefill.gemm_cluster",
                p.gemm_cluster,
                "1, or 2 with gemm_wgmma (TMA multicast)",
            ));
        }
        if p.programmatic_launch && self.arch.number() < 90 {
            return Err(Self::invalid(
                "prefill.programmatic_launch",
                "true",
                format!("griddepcontrol needs sm_90 or newer, not {}", self.arch),
            ));
        }
        // The tensor-core delta rule and attention use mma.sync and cp.async (sm_80+).
        for (field, on) in [
            ("prefill.gdn_tensor_cores", p.gdn_tensor_cores),
            ("prefill.attn_tensor_cores", p.attn_tensor_cores),
        ] {
            if on && !(p.use_tensor_cores && p.use_cp_async) {
                return Err(Self::invalid(
                    field,
                    "true",
                    "needs use_tensor_cores and use_cp_async (sm_80+)",
                ));
            }
        }
        let cols_ok = if p.gdn_tensor_cores {
            matches!(p.gdn_state_cols, 8 | 16 | 32)
        } else {
            matches!(p.gdn_state_cols, 8 | 16)
        };
        if !cols_ok {
            return Err(Self::invalid(
                "prefill.gdn_state_cols",
                p.gdn_state_cols,
                "8, 16 or 32 on tensor cores, 8 or 16 on CUDA cores",
            ));
        }
        if !p.attn_threads.is_multiple_of(32) || p.attn_threads == 0 || p.attn_threads > 1024 {
            return Err(Self::invalid(
                "prefill.attn_threads",
                p.attn_threads,
                "a multiple of 32 in 32..=1024",
            ));
        }
        let t = &self.tree;
        if t.max_budget == 0 || t.max_budget > 256 {
            return Err(Self::invalid("tree.max_budget", t.max_budget, "1..=256"));
        }
        if t.budget == 0 || t.budget > t.max_budget {
            return Err(Self::invalid(
                "tree.budget",
                t.budget,
                format!("1..={} (tree.max_budget)", t.max_budget),
            ));
        }
        if t.top_k == 0 || t.top_k > t.budget {
            return Err(Self::invalid(
                "tree.top_k",
                t.top_k,
                format!("1..={} (tree.budget)", t.budget),
            ));
        }
        if !t.threads.is_multiple_of(32) || t.threads == 0 || t.threads > 1024 {
            return Err(Self::invalid(
                "tree.threads",
                t.threads,
                "a multiple of 32 in 32..=1024",
            ));
        }
        // The copy instructions each shared-memory prefetch mode needs.
        let needs = match d.prefetch {
            PrefetchMode::SharedFirstItem => Some((80, "shared_first_item", "cp.async needs")),
            PrefetchMode::SharedRing => Some((90, "shared_ring", "bulk async copies need")),
            _ => None,
        };
        if let Some((arch, mode, what)) = needs
            && self.arch.number() < arch
        {
            return Err(Self::invalid(
                "decode.prefetch",
                mode,
                format!("{what} sm_{arch} or newer, not {}", self.arch),
            ));
        }
        // The split-K opt-ins: cp.async stages, and the rings stream the
        // phases they replace.
        let gdn_counters = d.sync_gdn_in_proj == SyncMode::TileCounters && !d.barrier_per_phase;
        for (on, field, value, replaced) in [
            (
                d.mlp == MlpMode::FusedSplitK,
                "decode.mlp",
                "fused_split_k",
                "the two-phase MLP's",
            ),
            (
                d.gdn_out == GdnOutMode::WithRecurrence,
                "decode.gdn_out",
                "with_recurrence",
                "the separate out_proj phase's",
            ),
        ] {
            let why = if !on {
                None
            } else if self.arch.number() < 80 {
                Some(format!("cp.async needs sm_80 or newer, not {}", self.arch))
            } else if d.prefetch == PrefetchMode::SharedRing {
                Some(format!(
                    "the weight rings stream {replaced} rows; use another decode.prefetch"
                ))
            } else if field == "decode.gdn_out" && gdn_counters {
                Some(
                    "not with the GDN ready counters (decode.sync_gdn_in_proj: tile_counters)"
                        .into(),
                )
            } else {
                None
            };
            if let Some(why) = why {
                return Err(Self::invalid(field, value, why));
            }
        }
        if d.prefetch == PrefetchMode::SharedFirstItem
            && !(1..=16).contains(&d.first_item_chunks_per_lane)
        {
            return Err(Self::invalid(
                "decode.first_item_chunks_per_lane",
                d.first_item_chunks_per_lane,
                "1..=16",
            ));
        }
        if d.prefetch == PrefetchMode::SharedRing
            && (d.ring_bytes_per_warp < 1024 || !d.ring_bytes_per_warp.is_multiple_of(128))
        {
            return Err(Self::invalid(
                "decode.ring_bytes_per_warp",
                d.ring_bytes_per_warp,
                "a multiple of 128, at least 1024",
            ));
        }
        if let Some(m) = dims {
            self.validate_dims(m)?;
            let need = ring_item_bytes_bound(m, d.matvec_rows_per_warp.max(self.mlp_rows()));
            if d.prefetch == PrefetchMode::SharedRing && d.ring_bytes_per_warp < need {
                return Err(Self::invalid(
                    "decode.ring_bytes_per_warp",
                    d.ring_bytes_per_warp,
                    format!("must hold a warp's largest matvec item ({need} bytes for this model)"),
                ));
            }
        }
        Ok(())
    }

    fn validate_dims(&self, m: &ModelDims) -> Result<(), ScheduleError> {
        let d = &self.decode;
        let r = d.matvec_rows_per_warp;
        for (what, rows) in matvec_row_counts(m) {
            if rows % r != 0 {
                return Err(Self::invalid(
                    "decode.matvec_rows_per_warp",
                    r,
                    format!("must divide {what} = {rows}"),
                ));
            }
        }
        if !m.intermediate_size.is_multiple_of(self.mlp_rows()) {
            return Err(Self::invalid(
                "decode.mlp_rows_per_warp",
                self.mlp_rows(),
                format!("must divide intermediate_size = {}", m.intermediate_size),
            ));
        }
        for (what, k) in [
            ("hidden_size", m.hidden_size),
            ("intermediate_size", m.intermediate_size),
            (
                "linear value dim",
                m.linear_num_value_heads * m.linear_value_head_dim,
            ),
            ("attention output dim", m.num_attention_heads * m.head_dim),
        ] {
            if k % 8 != 0 {
                return Err(Self::invalid(
                    "decode.vector_bytes",
                    d.vector_bytes,
                    format!("16-byte loads need {what} = {k} to be a multiple of 8 bf16"),
                ));
            }
        }
        if !m
            .linear_value_head_dim
            .is_multiple_of(d.gdn_value_cols_per_warp)
        {
            return Err(Self::invalid(
                "decode.gdn_value_cols_per_warp",
                d.gdn_value_cols_per_warp,
                format!(
                    "must divide linear_value_head_dim = {}",
                    m.linear_value_head_dim
                ),
            ));
        }
        if d.gdn_out == GdnOutMode::WithRecurrence {
            let (items, _) = self.gdn_recurrence_items(m);
            let warps = self.grid_blocks() * self.warps_per_block();
            if items > warps {
                return Err(Self::invalid(
                    "decode.gdn_out",
                    "with_recurrence",
                    format!(
                        "its {items} recurrence items wait on each other and must all be resident: at most one per warp ({warps} warps)"
                    ),
                ));
            }
        }
        let key_groups = 32 / d.gdn_value_cols_per_warp;
        if !m.linear_key_head_dim.is_multiple_of(key_groups)
            || m.linear_key_head_dim / key_groups > 64
        {
            return Err(Self::invalid(
                "decode.gdn_value_cols_per_warp",
                d.gdn_value_cols_per_warp,
                format!(
                    "each lane would hold {} state values of linear_key_head_dim = {} (at most 64 registers)",
                    m.linear_key_head_dim as f64 / key_groups as f64,
                    m.linear_key_head_dim
                ),
            ));
        }
        if !matches!(m.head_dim, 64 | 128 | 256) {
            return Err(Self::invalid(
                "head_dim",
                m.head_dim,
                "decode attention is generated for head_dim 64, 128 or 256 (32 lanes x 2/4/8)",
            ));
        }
        if !matches!(m.linear_key_head_dim, 32 | 64 | 128 | 256) {
            return Err(Self::invalid(
                "linear_key_head_dim",
                m.linear_key_head_dim,
                "32, 64, 128 or 256",
            ));
        }
        if self.max_context > m.max_position_embeddings {
            return Err(Self::invalid(
                "max_context",
                self.max_context,
                format!(
                    "above the model's max_position_embeddings {}",
                    m.max_position_embeddings
                ),
            ));
        }
        let p = &self.prefill;
        if !m.hidden_size.is_multiple_of(p.gemm_tile_k) {
            return Err(Self::invalid(
                "prefill.gemm_tile_k",
                p.gemm_tile_k,
                format!("must divide hidden_size = {}", m.hidden_size),
            ));
        }
        if !m.intermediate_size.is_multiple_of(p.gemm_tile_k) {
            return Err(Self::invalid(
                "prefill.gemm_tile_k",
                p.gemm_tile_k,
                format!("must divide intermediate_size = {}", m.intermediate_size),
            ));
        }
        Ok(())
    }

    /// Intermediate indices per MLP work item (`decode.mlp_rows_per_warp`,
    /// or `matvec_rows_per_warp` where that is 0).
    pub fn mlp_rows(&self) -> u32 {
        match self.decode.mlp_rows_per_warp {
            0 => self.decode.matvec_rows_per_warp,
            r => r,
        }
    }

    /// One warp's first-item slot (`prefetch: shared_first_item`): 32 lanes
    /// x 16 bytes per chunk.
    pub fn first_item_slot_bytes(&self) -> u32 {
        self.decode.first_item_chunks_per_lane * 32 * 16
    }

    /// Dynamic shared memory the decode megakernel needs per block: the
    /// working space, the split-K opt-ins' shares and, with `SharedRing` or
    /// `SharedFirstItem`, the weight rings or first-item slots.
    pub fn decode_smem_estimate(&self, dims: Option<&ModelDims>) -> u32 {
        let base = self.decode_working_smem(dims)
            + self.fused_mlp_smem(dims)
            + self.gdn_out_stage_smem(dims);
        match self.decode.prefetch {
            PrefetchMode::SharedRing => {
                base + RING_STATIC_RESERVE
                    + self.warps_per_block() * self.decode.ring_bytes_per_warp
            }
            PrefetchMode::SharedFirstItem => {
                base + 128 + self.warps_per_block() * self.first_item_slot_bytes()
            }
            _ => base,
        }
    }

    /// `mlp: fused_split_k` only: each warp's f32 accumulator of the hidden
    /// outputs and its stage for one item's transposed down rows (K split
    /// over one warp, the largest case), 128-byte aligned.
    pub fn fused_mlp_smem(&self, dims: Option<&ModelDims>) -> u32 {
        match (self.decode.mlp, dims) {
            (MlpMode::FusedSplitK, Some(m)) => {
                let stage = self.mlp_rows() * (m.hidden_size / 8).div_ceil(32) * 512;
                128 + self.warps_per_block() * (m.hidden_size * 4 + stage)
            }
            _ => 0,
        }
    }

    /// The decode recurrence's (v-head, value-column slice) items, and the
    /// warps per block that hold one when there is at most one per warp (the
    /// last warps of each block take them first).
    pub fn gdn_recurrence_items(&self, m: &ModelDims) -> (u32, u32) {
        let items = m.linear_num_value_heads
            * (m.linear_value_head_dim / self.decode.gdn_value_cols_per_warp);
        (
            items,
            items
                .div_ceil(self.grid_blocks())
                .min(self.warps_per_block()),
        )
    }

    /// `gdn_out: with_recurrence` only: a stage for one recurrence item's
    /// transposed out_proj rows (its value columns x hidden bf16) in each warp
    /// that holds a recurrence item (the last warps of every block), 128-byte
    /// aligned.
    pub fn gdn_out_stage_smem(&self, dims: Option<&ModelDims>) -> u32 {
        match (self.decode.gdn_out, dims) {
            (GdnOutMode::WithRecurrence, Some(m)) => {
                let (_, warps) = self.gdn_recurrence_items(m);
                128 + warps * self.gdn_out_stage_warp_bytes(m)
            }
            _ => 0,
        }
    }

    /// One recurrence warp's stage for its item's transposed out_proj rows
    /// (value columns x hidden bf16, in 16-byte chunks per lane).
    pub fn gdn_out_stage_warp_bytes(&self, m: &ModelDims) -> u32 {
        self.decode.gdn_value_cols_per_warp * (m.hidden_size / 8).div_ceil(32) * 512
    }

    /// The decode megakernel's working space: the widest matvec input held
    /// in f32 plus sampling scratch.
    fn decode_working_smem(&self, dims: Option<&ModelDims>) -> u32 {
        let widest = dims
            .map(|m| {
                m.hidden_size
                    .max(m.intermediate_size)
                    .max(m.linear_num_value_heads * m.linear_value_head_dim)
                    .max(m.num_attention_heads * m.head_dim)
            })
            .unwrap_or(0);
        let pool =
            (self.grid_blocks() * self.decode.sample_candidates_per_block).next_power_of_two();
        let sort = pool * 8;
        let warp_cands = self.warps_per_block() * self.decode.sample_candidates_per_block * 8
            + self.warps_per_block() * 8;
        // The recurrence's and attention's per-warp vectors sit after the
        // projection input (with ready counters they overlap it in time).
        let per_warp = dims
            .map(|m| {
                (m.hidden_size + self.warps_per_block() * 2 * m.linear_key_head_dim.max(m.head_dim))
                    * 4
            })
            .unwrap_or(0);
        (widest * 4).max(sort).max(warp_cands).max(per_warp) + 256
    }
}

fn default_attn_v_batch() -> u32 {
    4
}

/// Weight ring per warp on sm_90 presets (used with `prefetch: shared_ring`):
/// 12 warps x 16 KiB = 192 KiB of the 227 KiB a block may use, ~7.5 us of an
/// H100 SM's share of HBM bandwidth.
pub const RING_BYTES_PER_WARP_SM90: u32 = 16 * 1024;

/// Shared memory the ring's bookkeeping takes (mbarriers, cursors) plus the
/// kernel's static arrays, kept free when sizing the ring.
const RING_STATIC_RESERVE: u32 = 4 * 1024;

/// Warps of the tensor-core delta rule's state-pass block (8 measured slower
/// on an H100: 0.83 against 0.73 ms for the 0.8B prefill of 520 tokens).
pub const GDN_TC_STATE_WARPS: u32 = 4;

/// Threads of the delta rule's prep block (both math paths).
pub const GDN_PREP_THREADS: u32 = 256;

/// Row stride of the prep's C x C solve matrix: the smallest >= chunk with
/// (stride + 1) = the lanes sharing a column of X (mod 32), so the solve's
/// reads are conflict-free.
pub fn gdn_solve_stride(chunk: u32) -> u32 {
    let warps = GDN_PREP_THREADS / 32;
    let parts = 32 / (chunk / warps).max(1);
    (chunk..chunk + 32)
        .find(|m| (m + 1) % 32 == parts % 32)
        .unwrap_or(chunk)
}

/// Dynamic shared memory of the tensor-core prep: the normed K tile, a region
/// that first holds the Q tile and then the solve's A and X, with
/// `fused_conv` the post-conv V tile, and four per-row vectors. Tiles read
/// along k have rows of dk + 4 floats; V, read across k, 8 or 24 (mod 32).
pub fn gdn_tc_prep_smem_bytes(chunk: u32, dk: u32, dv: u32, fused_conv: bool) -> u32 {
    let ks = dk + 4;
    let solve = chunk * gdn_solve_stride(chunk) + chunk * (chunk + 4);
    let v = if fused_conv {
        chunk * gdn_kn_stride(dv)
    } else {
        0
    };
    (chunk * ks + solve.max(chunk * ks) + v + 4 * chunk) * 4
}

/// Row stride (floats) of a tensor-core tile read across k with `cols`
/// columns: 8 or 24 (mod 32), so fragment reads are conflict-free.
pub fn gdn_kn_stride(cols: u32) -> u32 {
    if matches!(cols % 32, 8 | 24) {
        cols
    } else {
        cols + 8
    }
}

/// Whether the tensor-core delta rule's warp tiles fit a model's GDN head
/// dims with `state_cols` value columns per state-pass block: dk = dv, a
/// multiple of 32; V_new's 16-row tiles (4 per chunk of 64) leave
/// `GDN_TC_STATE_WARPS / 4` column groups of 8-wide tiles; the state's 16-key
/// tiles split evenly over the warps (with 4 warps: dk 32 or a multiple of
/// 64), the columns' 8-wide tiles over the warps left.
pub fn gdn_tensor_core_tiles_fit(dk: u32, dv: u32, state_cols: u32) -> bool {
    const WARPS: u32 = GDN_TC_STATE_WARPS;
    if dk != dv || dk == 0 || !dk.is_multiple_of(32) || !state_cols.is_multiple_of(8 * (WARPS / 4))
    {
        return false;
    }
    let key_tiles = dk / 16;
    let key_warps = key_tiles.min(WARPS);
    WARPS.is_multiple_of(key_warps)
        && key_tiles.is_multiple_of(key_warps)
        && state_cols.is_multiple_of(8 * (WARPS / key_warps))
}

/// The most bytes one warp's matvec item can take in the weight ring: R rows
/// (2R for the fused MLP gate/up) of the widest K, without any K split.
pub fn ring_item_bytes_bound(m: &ModelDims, rows_per_warp: u32) -> u32 {
    let value_dim = m.linear_num_value_heads * m.linear_value_head_dim;
    let attn_out = m.num_attention_heads * m.head_dim;
    let widest_k = (2 * m.hidden_size)
        .max(m.intermediate_size)
        .max(value_dim)
        .max(attn_out);
    rows_per_warp * widest_k * 2
}

/// Row counts the decode kernel splits into items of `matvec_rows_per_warp`
/// rows (each must be a multiple of it).
fn matvec_row_counts(m: &ModelDims) -> [(&'static str, u32); 5] {
    [
        ("hidden_size", m.hidden_size),
        ("intermediate_size", m.intermediate_size),
        ("linear_num_value_heads", m.linear_num_value_heads),
        (
            "num_key_value_heads * head_dim",
            m.num_key_value_heads * m.head_dim,
        ),
        ("vocab_size", m.vocab_size),
    ]
}

/// Per-warp prefetch depth: a quarter of L2 shared by all warps, in whole
/// 128-byte lines, at most 32 KiB.
/// Chunks per lane in a warp's first-item slot: 8 hold a whole item of
/// the 2-row phases 1024 columns wide (or 2048 split over 2 warps), 4 KiB
/// per warp.
fn default_first_item_chunks() -> u32 {
    8
}

fn prefetch_depth(l2: u64, blocks: u32, threads: u32) -> u32 {
    let warps = (blocks as u64 * (threads as u64 / 32)).max(1);
    let bytes = (l2 / 4 / warps).min(32 * 1024);
    (bytes / 128 * 128) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_to_a_model_caps_context_and_halves_rows_until_they_divide() {
        let mut s = Schedule::preset("h100").expect("preset");
        s.decode.matvec_rows_per_warp = 8;
        let mut m = dims_08b();
        m.linear_num_value_heads = 6; // divisible by 2, not by 4 or 8
        m.max_position_embeddings = 1024;
        let f = s.clone().fitted_to_model(&m);
        assert_eq!(f.decode.matvec_rows_per_warp, 2);
        assert_eq!(f.max_context, 1024);
        f.validate(Some(&m)).expect("fitted schedule validates");
        let f = s.fitted_to_model(&dims_08b());
        assert_eq!(f.decode.matvec_rows_per_warp, 8);
    }

    #[test]
    fn tensor_core_delta_rule_is_fitted_to_the_head_dims() {
        assert!(gdn_tensor_core_tiles_fit(128, 128, 8));
        assert!(gdn_tensor_core_tiles_fit(32, 32, 16));
        assert!(
            !gdn_tensor_core_tiles_fit(32, 32, 8),
            "2 key warps x 2 column warps"
        );
        assert!(!gdn_tensor_core_tiles_fit(128, 64, 16), "dk = dv");
        assert!(
            !gdn_tensor_core_tiles_fit(96, 96, 16),
            "6 key tiles over 4 warps"
        );
        let h100 = Schedule::preset("h100").expect("preset");
        let dims = |dk: u32, dv: u32| ModelDims {
            linear_key_head_dim: dk,
            linear_value_head_dim: dv,
            ..dims_08b()
        };
        let f = h100.clone().fitted_to_model(&dims(128, 128));
        assert!(f.prefill.gdn_tensor_cores && f.prefill.gdn_state_cols == 16);
        let narrow = h100
            .patched(r#"{"prefill": {"gdn_state_cols": 8}}"#)
            .expect("patch");
        let f = narrow.clone().fitted_to_model(&dims(128, 128));
        assert!(f.prefill.gdn_tensor_cores && f.prefill.gdn_state_cols == 8);
        let f = narrow.fitted_to_model(&dims(32, 32));
        assert!(f.prefill.gdn_tensor_cores && f.prefill.gdn_state_cols == 16);
        let wide = h100
            .patched(r#"{"prefill": {"gdn_state_cols": 32}}"#)
            .expect("patch");
        let f = wide.fitted_to_model(&dims(128, 64));
        assert!(!f.prefill.gdn_tensor_cores && f.prefill.gdn_state_cols == 16);
        f.validate(None).expect("fitted schedule validates");
    }

    #[test]
    fn conv_in_prep_where_its_tiles_fit_in_shared_memory() {
        // 128-wide heads: K and Q/solve tiles + V [64][136] + row vectors, 104,192 B
        assert_eq!(gdn_tc_prep_smem_bytes(64, 128, 128, true), 104_192);
        assert_eq!(gdn_tc_prep_smem_bytes(64, 128, 128, false), 69_376);
        for (name, on) in [
            ("h100", true),
            ("a100", false),
            ("rtx3090", false),
            ("rtx5090", false),
            ("rtx2080ti", false),
        ] {
            let s = Schedule::preset(name).expect("preset");
            assert_eq!(s.prefill.conv_in_prep(), on, "{name}");
        }
        // CUDA cores run the conv kernel whatever the field says
        let cc = Schedule::preset("h100")
            .expect("preset")
            .patched(r#"{"prefill": {"gdn_tensor_cores": false}}"#)
            .expect("patch");
        assert!(cc.prefill.gdn_fused_conv && !cc.prefill.conv_in_prep());
        // 256-wide heads need 201.7 KB: an H100's 227 KB takes it, an A100's 163 KB does not
        let dims = |d: u32| ModelDims {
            linear_key_head_dim: d,
            linear_value_head_dim: d,
            ..dims_08b()
        };
        let a100 = Schedule::preset("a100")
            .expect("preset")
            .patched(r#"{"prefill": {"gdn_fused_conv": true}}"#)
            .expect("patch");
        assert!(
            a100.clone()
                .fitted_to_model(&dims(128))
                .prefill
                .conv_in_prep()
        );
        let f = a100.fitted_to_model(&dims(256));
        assert!(f.prefill.gdn_tensor_cores && !f.prefill.conv_in_prep());
        let h100 = Schedule::preset("h100").expect("preset");
        assert!(h100.fitted_to_model(&dims(256)).prefill.conv_in_prep());
    }

    #[test]
    fn programmatic_launch_is_the_sm90_plus_default_and_refused_below() {
        for (name, _, _) in PRESETS {
            let s = Schedule::preset(name).expect("preset");
            assert_eq!(
                s.prefill.programmatic_launch,
                s.arch.number() >= 90,
                "{name}"
            );
        }
        let ampere = Schedule::preset("a100").expect("preset");
        assert_eq!(
            rejected_field(&ampere, r#"{"prefill": {"programmatic_launch": true}}"#),
            "prefill.programmatic_launch"
        );
        let off = Schedule::preset("h100")
            .expect("preset")
            .patched(r#"{"prefill": {"programmatic_launch": false}}"#)
            .expect("patch");
        off.validate(None)
            .expect("switching it off is always valid");
    }

    #[test]
    fn prefill_attention_and_state_pass_knobs_are_validated() {
        let h100 = Schedule::preset("h100").expect("preset");
        assert!(h100.prefill.attn_tensor_cores);
        let turing = Schedule::preset("rtx2080ti").expect("preset");
        assert!(!turing.prefill.attn_tensor_cores);
        assert_eq!(
            rejected_field(&turing, r#"{"prefill": {"attn_tensor_cores": true}}"#),
            "prefill.attn_tensor_cores"
        );
        // clusters: 1 or 2, and 2 only with the wgmma GEMM (TMA multicast)
        for (patch, ok) in [
            (r#"{"prefill": {"gemm_cluster": 2}}"#, true),
            (r#"{"prefill": {"gemm_cluster": 4}}"#, false),
            (r#"{"prefill": {"gemm_cluster": 0}}"#, false),
        ] {
            let r = h100.patched(patch).expect("patch").validate(None);
            assert_eq!(r.is_ok(), ok, "{patch}");
        }
        let e = Schedule::preset("a100")
            .expect("preset")
            .patched(r#"{"prefill": {"gemm_cluster": 2}}"#)
            .expect("patch")
            .validate(None)
            .unwrap_err();
        assert_eq!(field_of(e), "prefill.gemm_cluster");
        // the state pass: 32 columns only on tensor cores
        assert!(h100.prefill.gdn_tensor_cores && !turing.prefill.gdn_tensor_cores);
        for (tc, cols, ok) in [
            (true, 8, true),
            (true, 16, true),
            (true, 32, true),
            (true, 12, false),
            (false, 16, true),
            (false, 32, false),
        ] {
            let r = h100
                .patched(&format!(
                    r#"{{"prefill": {{"gdn_state_cols": {cols}, "gdn_tensor_cores": {tc}}}}}"#
                ))
                .expect("patch")
                .validate(None);
            assert_eq!(r.is_ok(), ok, "{tc} {cols}");
        }
        assert_eq!(
            rejected_field(&turing, r#"{"prefill": {"gdn_tensor_cores": true}}"#),
            "prefill.gdn_tensor_cores"
        );
    }

    #[test]
    fn wgmma_prefill_gemm_is_validated_against_arch_and_tiles() {
        let h100 = Schedule::preset("h100").expect("preset");
        assert!(h100.prefill.gemm_wgmma, "the sm_90 default");
        h100.validate(None)
            .expect("128x128x64, two math warpgroups + a producer");
        let ok = r#"{"prefill": {"gemm_wgmma": true, "gemm_tile_m": 64, "gemm_tile_k": 64, "gemm_tile_n": 256, "gemm_threads": 256}}"#;
        h100.patched(ok)
            .expect("patch")
            .validate(None)
            .expect("64x256x64, one math + one producer warpgroup");
        for bad in [
            // k tile is not one 128-byte swizzle row
            r#"{"prefill": {"gemm_tile_k": 32}}"#,
            // 128 rows need two math warpgroups + the producer (384 threads)
            r#"{"prefill": {"gemm_threads": 256}}"#,
            // 64 rows need one math warpgroup + the producer (256 threads)
            r#"{"prefill": {"gemm_tile_m": 64}}"#,
            // N above the instruction's 256
            r#"{"prefill": {"gemm_tile_m": 64, "gemm_tile_n": 512, "gemm_threads": 256, "gemm_stages": 2}}"#,
        ] {
            let e = h100
                .patched(bad)
                .expect("patch")
                .validate(None)
                .unwrap_err();
            assert_eq!(field_of(e), "prefill.gemm_wgmma", "{bad}");
        }
        let e = Schedule::preset("rtx3090")
            .expect("preset")
            .patched(ok)
            .expect("patch")
            .validate(None)
            .unwrap_err();
        assert!(e.to_string().contains("sm_90"), "{e}");
    }

    #[test]
    fn patch_changes_named_fields_and_rejects_unknown_ones() {
        let s = Schedule::preset("h100").expect("preset");
        let p = s
            .patched(r#"{"prefill": {"gemm_tile_n": 128, "split_activations": false}}"#)
            .expect("patch");
        assert_eq!(p.prefill.gemm_tile_n, 128);
        assert!(!p.prefill.split_activations);
        assert_eq!(p.decode, s.decode);
        let e = s
            .patched(r#"{"prefill": {"gemm_tile_nn": 128}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("prefill.gemm_tile_nn"), "{e}");
        assert!(s.patched("[1]").is_err());
        assert!(s.patched(r#"{"threads_per_block": 4096}"#).is_err());
    }

    fn dims_08b() -> ModelDims {
        ModelDims {
            hidden_size: 1024,
            intermediate_size: 3584,
            vocab_size: 248_320,
            head_dim: 256,
            num_attention_heads: 8,
            num_key_value_heads: 2,
            linear_num_key_heads: 16,
            linear_num_value_heads: 16,
            linear_key_head_dim: 128,
            linear_value_head_dim: 128,
            max_position_embeddings: 262_144,
        }
    }

    /// The field a patched schedule's validation rejects.
    fn rejected_field(s: &Schedule, patch: &str) -> &'static str {
        field_of(
            s.patched(patch)
                .expect("patch")
                .validate(None)
                .expect_err("the patch is invalid"),
        )
    }

    fn field_of(e: ScheduleError) -> &'static str {
        match e {
            ScheduleError::Invalid { field, .. } => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn every_preset_validates_for_0_8b() {
        for (name, arch, sms) in list_presets() {
            let s = Schedule::preset(name).unwrap();
            assert_eq!(s.arch, arch);
            assert_eq!(s.sm_count, sms);
            assert_eq!(s.grid_blocks(), sms);
            s.validate(Some(&dims_08b())).unwrap();
        }
    }

    #[test]
    fn preset_for_arch_picks_h100_for_sm90() {
        assert_eq!(
            Schedule::preset_for_arch(Arch::new(9, 0)).unwrap().preset,
            "h100"
        );
        assert_eq!(Schedule::for_target("sm_86").unwrap().sm_count, 82);
        assert_eq!(Schedule::for_target("sm_90").unwrap().sm_count, 132);
        let a = Schedule::for_target("sm_90a").unwrap();
        assert!(a.arch.arch_specific);
        let e = Schedule::for_target("sm_99").unwrap_err().to_string();
        assert!(e.contains("sm_99") && e.contains("sm_86"), "{e}");
        assert!(Schedule::for_target("banana").is_err());
        let e = Schedule::preset("rtx9999").unwrap_err().to_string();
        assert!(e.contains("rtx3090"), "{e}");
    }

    #[test]
    fn with_sm_count_changes_grid() {
        let s = Schedule::preset("rtx3090").unwrap().with_sm_count(46);
        assert_eq!(s.grid_blocks(), 46);
        s.validate(Some(&dims_08b())).unwrap();
    }

    #[test]
    fn for_device_derives_from_props() {
        let props = DeviceProps {
            name: "NVIDIA H100 80GB HBM3".into(),
            arch: Arch::new(9, 0),
            sm_count: 132,
            max_threads_per_block: 1024,
            max_threads_per_sm: 2048,
            shared_mem_per_block_optin: 227 * 1024,
            shared_mem_per_sm: 228 * 1024,
            regs_per_sm: 65536,
            regs_per_block: 65536,
            l2_bytes: 50 << 20,
            total_mem_bytes: 80 << 30,
            mem_clock_khz: 2_619_000,
            mem_bus_width_bits: 5120,
            sm_clock_khz: 1_980_000,
        };
        let s = Schedule::for_device(&props).unwrap();
        assert_eq!(s.preset, "derived");
        assert_eq!(s.grid_blocks(), 132);
        assert_eq!(s.threads_per_block, 384);
        s.validate(Some(&dims_08b())).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: Schedule = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn rejects_threads_not_multiple_of_32() {
        let mut s = Schedule::preset("h100").unwrap();
        s.threads_per_block = 500;
        assert_eq!(field_of(s.validate(None).unwrap_err()), "threads_per_block");
        s.threads_per_block = 2048;
        let e = s.validate(None).unwrap_err();
        assert!(e.to_string().contains("1024"), "{e}");
    }

    #[test]
    fn rejects_too_many_coresident_blocks() {
        let mut s = Schedule::preset("rtx3090").unwrap();
        s.blocks_per_sm = 3; // 3 x 384 threads fit by threads, not by registers
        s.decode.max_regs_per_thread = 64;
        let e = s.validate(None).unwrap_err();
        assert_eq!(field_of(e.clone()), "blocks_per_sm");
        assert!(e.to_string().contains("co-resident"), "{e}");
        s.blocks_per_sm = 5; // 1920 threads > 1536 per SM
        assert_eq!(field_of(s.validate(None).unwrap_err()), "blocks_per_sm");
    }

    #[test]
    fn first_item_slots_are_checked_and_counted() {
        let mut s = Schedule::preset("h100").unwrap();
        assert_eq!(s.decode.first_item_chunks_per_lane, 8);
        let plain = s.decode_smem_estimate(Some(&dims_08b()));
        s.decode.prefetch = PrefetchMode::SharedFirstItem;
        s.validate(Some(&dims_08b()))
            .expect("shared_first_item validates");
        // 12 warps x 8 chunks x 512 bytes, after the working space.
        assert_eq!(
            s.decode_smem_estimate(Some(&dims_08b())),
            plain + 128 + 12 * 4096
        );
        for bad in [0, 17] {
            s.decode.first_item_chunks_per_lane = bad;
            assert_eq!(
                field_of(s.validate(None).unwrap_err()),
                "decode.first_item_chunks_per_lane"
            );
        }
        let mut t = Schedule::preset("rtx2080ti").unwrap();
        t.decode.prefetch = PrefetchMode::SharedFirstItem;
        let e = t.validate(None).unwrap_err();
        assert_eq!(field_of(e.clone()), "decode.prefetch");
        assert!(e.to_string().contains("sm_80"), "{e}");
        // Schedules written before the field existed still load.
        let mut json = serde_json::to_value(Schedule::preset("h100").unwrap()).unwrap();
        json["decode"]
            .as_object_mut()
            .unwrap()
            .remove("first_item_chunks_per_lane");
        json["decode"]["prefetch"] = "shared_first_item".into();
        let back: Schedule = serde_json::from_value(json).unwrap();
        assert_eq!(back.decode.prefetch, PrefetchMode::SharedFirstItem);
        assert_eq!(back.decode.first_item_chunks_per_lane, 8);
    }

    #[test]
    fn fused_mlp_is_checked_and_counted() {
        let s = Schedule::preset("h100").unwrap();
        assert_eq!(s.decode.mlp, MlpMode::FusedSplitK, "the sm_90 default");
        s.validate(Some(&dims_08b()))
            .expect("fused_split_k validates");
        let mut two = s.clone();
        two.decode.mlp = MlpMode::TwoPhases;
        let plain = two.decode_smem_estimate(Some(&dims_08b()));
        // 12 warps x (1024 f32 accumulators + 1 row x 4 steps x 512 B of stage).
        assert_eq!(s.mlp_rows(), 1);
        assert_eq!(
            s.decode_smem_estimate(Some(&dims_08b())),
            plain + 128 + 12 * (4096 + 2048)
        );
        // Not with the weight rings (they stream the two-phase MLP's rows).
        let mut ring = s.clone();
        ring.decode.prefetch = PrefetchMode::SharedRing;
        let e = ring.validate(None).unwrap_err();
        assert_eq!(field_of(e.clone()), "decode.mlp");
        assert!(e.to_string().contains("prefetch"), "{e}");
        // cp.async: sm_80 or newer.
        let mut t = Schedule::preset("rtx2080ti").unwrap();
        assert_eq!(t.decode.mlp, MlpMode::TwoPhases);
        t.decode.mlp = MlpMode::FusedSplitK;
        let e = t.validate(None).unwrap_err();
        assert_eq!(field_of(e.clone()), "decode.mlp");
        assert!(e.to_string().contains("sm_80"), "{e}");
        // 96 KiB more does not fit a 99 KiB consumer GPU: refused with the size.
        let mut r = Schedule::preset("rtx3090").unwrap();
        r.decode.mlp = MlpMode::FusedSplitK;
        let e = r.validate(Some(&dims_08b())).unwrap_err();
        assert!(e.to_string().contains("fused_split_k takes 98432"), "{e}");
        assert_eq!(field_of(e), "shared memory per block");
        // Patchable by name, and absent from older schedule files.
        let p = Schedule::preset("a100")
            .unwrap()
            .patched(r#"{"decode":{"mlp":"fused_split_k"}}"#)
            .unwrap();
        assert_eq!(p.decode.mlp, MlpMode::FusedSplitK);
        assert_eq!(
            s.patched(r#"{"decode":{"mlp":"two_phases"}}"#)
                .unwrap()
                .decode
                .mlp,
            MlpMode::TwoPhases
        );
        let mut json = serde_json::to_value(Schedule::preset("h100").unwrap()).unwrap();
        json["decode"].as_object_mut().unwrap().remove("mlp");
        let back: Schedule = serde_json::from_value(json).unwrap();
        assert_eq!(back.decode.mlp, MlpMode::TwoPhases);
    }

    #[test]
    fn fused_mlp_steps_back_where_its_accumulators_do_not_fit() {
        let h100 = Schedule::preset("h100").unwrap();
        // 0.8B (hidden 1024): 12 x 8 KiB fits next to the working space.
        let f = h100.clone().fitted_to_model(&dims_08b());
        assert_eq!(f.decode.mlp, MlpMode::FusedSplitK);
        // 27B-like (hidden 5120): 12 x 40 KiB does not; the unfitted schedule
        // is refused naming the opt-in, the fitted one runs two phases.
        let mut big = dims_08b();
        big.hidden_size = 5120;
        big.intermediate_size = 17_408;
        let e = h100.validate(Some(&big)).unwrap_err();
        assert!(e.to_string().contains("fused_split_k takes"), "{e}");
        let f = h100.clone().fitted_to_model(&big);
        assert_eq!(f.decode.mlp, MlpMode::TwoPhases);
        assert_eq!(
            f.mlp_rows(),
            f.decode.matvec_rows_per_warp,
            "items as the matvecs'"
        );
        f.validate(Some(&big)).expect("two-phase MLP validates");
        // Asking for the weight rings: they stream the two-phase MLP.
        let ring = h100
            .patched(r#"{"decode":{"prefetch":"shared_ring"}}"#)
            .unwrap()
            .fitted_to_model(&dims_08b());
        assert_eq!(ring.decode.mlp, MlpMode::TwoPhases);
        assert_eq!(ring.decode.prefetch, PrefetchMode::SharedRing);
        ring.validate(Some(&dims_08b())).expect("rings validate");
    }

    #[test]
    fn mlp_rows_default_to_the_matvec_rows_and_are_checked() {
        // sm_90 presets: 1 (for the one-phase MLP); others follow the matvec rows.
        let h100 = Schedule::preset("h100").unwrap();
        assert_eq!(h100.mlp_rows(), 1);
        let s = h100
            .patched(r#"{"decode":{"mlp_rows_per_warp":0}}"#)
            .unwrap();
        assert_eq!((s.decode.mlp_rows_per_warp, s.mlp_rows()), (0, 2));
        let a100 = Schedule::preset("a100").unwrap();
        assert_eq!((a100.decode.mlp_rows_per_warp, a100.mlp_rows()), (0, 2));
        // Absent from older schedule files: 0.
        let mut json = serde_json::to_value(&s).unwrap();
        json["decode"]
            .as_object_mut()
            .unwrap()
            .remove("mlp_rows_per_warp");
        let back: Schedule = serde_json::from_value(json).unwrap();
        assert_eq!(back.decode.mlp_rows_per_warp, 0);
        let one = s.patched(r#"{"decode":{"mlp_rows_per_warp":1}}"#).unwrap();
        assert_eq!(one.mlp_rows(), 1);
        one.validate(Some(&dims_08b())).expect("1 row validates");
        // The fused MLP's stage holds one item's down rows: half as many.
        assert_eq!(
            s.fused_mlp_smem(Some(&dims_08b())) - one.fused_mlp_smem(Some(&dims_08b())),
            12 * 2048
        );
        let mut bad = s.clone();
        bad.decode.mlp_rows_per_warp = 3;
        assert_eq!(
            field_of(bad.validate(None).unwrap_err()),
            "decode.mlp_rows_per_warp"
        );
        // It must divide the intermediate size; fitting halves it until it does.
        let mut m = dims_08b();
        m.intermediate_size = 3582; // 2 x 1791
        let mut eight = s.clone();
        eight.decode.mlp = MlpMode::TwoPhases; // 8 rows' stages would not fit
        eight.decode.mlp_rows_per_warp = 8;
        assert_eq!(
            field_of(eight.validate(Some(&m)).unwrap_err()),
            "decode.mlp_rows_per_warp"
        );
        assert_eq!(eight.clone().fitted_to_model(&m).mlp_rows(), 2);
        assert_eq!(eight.fitted_to_model(&dims_08b()).mlp_rows(), 8);
    }

    #[test]
    fn gdn_out_with_recurrence_is_checked_and_counted() {
        let mut s = Schedule::preset("h100").unwrap();
        assert_eq!(s.decode.gdn_out, GdnOutMode::SeparatePhase);
        s.decode.mlp = MlpMode::TwoPhases; // this opt-in alone
        let plain = s.decode_smem_estimate(Some(&dims_08b()));
        s.decode.gdn_out = GdnOutMode::WithRecurrence;
        s.validate(Some(&dims_08b()))
            .expect("with_recurrence validates");
        // 16 heads x 128 / 8 columns = 256 items on 132 blocks: the last 2
        // warps of each block hold one, each with an 8 x 1024 bf16 stage.
        assert_eq!(
            s.decode_smem_estimate(Some(&dims_08b())),
            plain + 128 + 2 * 16384
        );
        let refused = |t: &Schedule, dims: Option<&ModelDims>, says: &str| {
            let e = t.validate(dims).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
            assert_eq!(field_of(e), "decode.gdn_out");
        };
        let mut ring = s.clone();
        ring.decode.prefetch = PrefetchMode::SharedRing;
        refused(&ring, None, "prefetch");
        let mut counters = s.clone();
        counters.decode.barrier_per_phase = false;
        counters.decode.sync_gdn_in_proj = SyncMode::TileCounters;
        refused(&counters, None, "ready counters");
        let mut old = Schedule::preset("rtx2080ti").unwrap();
        old.decode.gdn_out = GdnOutMode::WithRecurrence;
        refused(&old, None, "sm_80");
        // Every item must be resident at once: 256 items need 256 warps.
        let mut small = s.clone();
        small.sm_count = 20; // 20 x 12 = 240 warps
        small.decode.sample_candidates_max = 128;
        refused(&small, Some(&dims_08b()), "at most one per warp");
        let p = Schedule::preset("h100")
            .unwrap()
            .patched(r#"{"decode":{"gdn_out":"with_recurrence"}}"#)
            .unwrap();
        assert_eq!(p.decode.gdn_out, GdnOutMode::WithRecurrence);
        let mut json = serde_json::to_value(Schedule::preset("h100").unwrap()).unwrap();
        json["decode"].as_object_mut().unwrap().remove("gdn_out");
        let back: Schedule = serde_json::from_value(json).unwrap();
        assert_eq!(back.decode.gdn_out, GdnOutMode::SeparatePhase);
    }

    #[test]
    fn weight_rings_fit_the_model_or_turn_off() {
        let mut h100 = Schedule::preset("h100").unwrap();
        assert_eq!(h100.decode.prefetch, PrefetchMode::None);
        assert_eq!(h100.decode.ring_bytes_per_warp, RING_BYTES_PER_WARP_SM90);
        h100.decode.prefetch = PrefetchMode::SharedRing;
        // What fitting picks with rings.
        h100.decode.mlp = MlpMode::TwoPhases;
        h100.decode.mlp_rows_per_warp = 0;
        // 0.8B: 12 rings of 16 KiB fit next to the working space.
        let f = h100.clone().fitted_to_model(&dims_08b());
        assert_eq!(f.decode, h100.decode);
        assert!(f.decode_smem_estimate(Some(&dims_08b())) <= f.limits.shared_mem_per_block_optin);
        // Less shared memory: the ring shrinks to what is left (15 KiB here).
        let mut small = h100.clone();
        let mut off = h100.clone();
        off.decode.prefetch = PrefetchMode::None;
        small.limits.shared_mem_per_block_optin = off.decode_smem_estimate(Some(&dims_08b()))
            + RING_STATIC_RESERVE
            + 12 * 15 * 1024
            + 100;
        let f = small.fitted_to_model(&dims_08b());
        assert_eq!(f.decode.prefetch, PrefetchMode::SharedRing);
        assert_eq!(f.decode.ring_bytes_per_warp, 15 * 1024);
        assert!(f.decode.ring_bytes_per_warp >= ring_item_bytes_bound(&dims_08b(), 2));
        f.validate(Some(&dims_08b()))
            .expect("shrunk ring validates");
        // 27B-like widths: no ring can hold one item, so the rings turn off.
        let mut big = dims_08b();
        big.hidden_size = 5120;
        big.intermediate_size = 17_408;
        let f = h100.clone().fitted_to_model(&big);
        assert_eq!(f.decode.prefetch, PrefetchMode::None);
        f.validate(Some(&big))
            .expect("ring-less schedule validates");
        // Unfitted, the same schedule is refused with the reason.
        let e = h100.validate(Some(&big)).unwrap_err();
        assert!(
            matches!(
                field_of(e.clone()),
                "decode.ring_bytes_per_warp" | "shared memory per block"
            ),
            "{e}"
        );
        // Other presets keep the L2 prefetch; asking for rings there is refused.
        let mut s = Schedule::preset("rtx3090").unwrap();
        assert_eq!(s.decode.prefetch, PrefetchMode::L2);
        s.decode.prefetch = PrefetchMode::SharedRing;
        s.decode.ring_bytes_per_warp = 4096;
        let e = s.validate(None).unwrap_err();
        assert_eq!(field_of(e.clone()), "decode.prefetch");
        assert!(e.to_string().contains("sm_90"), "{e}");
        let mut s = h100.clone();
        s.decode.ring_bytes_per_warp = 1000;
        assert_eq!(
            field_of(s.validate(None).unwrap_err()),
            "decode.ring_bytes_per_warp"
        );
        s.decode.ring_bytes_per_warp = 4096;
        assert_eq!(
            field_of(s.validate(Some(&dims_08b())).unwrap_err()),
            "decode.ring_bytes_per_warp"
        );
    }

    #[test]
    fn rejects_smem_over_optin() {
        let s = Schedule::preset("rtx2080ti").unwrap();
        let mut big = dims_08b();
        big.intermediate_size = 17_408 * 2; // 139 KB of f32 input
        let e = s.validate(Some(&big)).unwrap_err();
        assert_eq!(field_of(e.clone()), "shared memory per block");
        assert!(e.to_string().contains("65536"), "{e}");
    }

    #[test]
    fn rejects_tile_not_dividing_dimension() {
        // a100: the mma.sync GEMM (h100's wgmma one checks its own tiles first)
        let mut s = Schedule::preset("a100").unwrap();
        s.prefill.gemm_tile_k = 48;
        let mut m = dims_08b();
        m.hidden_size = 1000;
        m.intermediate_size = 3584;
        let e = s.validate(Some(&m)).unwrap_err();
        assert!(
            matches!(
                field_of(e.clone()),
                "prefill.gemm_tile_k" | "decode.matvec_rows_per_warp" | "decode.vector_bytes"
            ),
            "{e}"
        );
        let mut s = Schedule::preset("h100").unwrap();
        s.decode.gdn_value_cols_per_warp = 16;
        let mut m = dims_08b();
        m.linear_value_head_dim = 120;
        assert_eq!(
            field_of(s.validate(Some(&m)).unwrap_err()),
            "decode.gdn_value_cols_per_warp"
        );
        let mut s = Schedule::preset("h100").unwrap();
        s.decode.mlp = MlpMode::TwoPhases; // its stages would not fit 8 rows
        s.decode.matvec_rows_per_warp = 8;
        let mut m = dims_08b();
        m.linear_num_value_heads = 12;
        m.linear_num_key_heads = 12;
        assert_eq!(
            field_of(s.validate(Some(&m)).unwrap_err()),
            "decode.matvec_rows_per_warp"
        );
    }

    #[test]
    fn rejects_budget_above_max() {
        let mut s = Schedule::preset("h100").unwrap();
        s.tree.budget = 65;
        let e = s.validate(None).unwrap_err();
        assert_eq!(field_of(e.clone()), "tree.budget");
        assert!(e.to_string().contains("64"), "{e}");
        s.tree.budget = 22;
        s.tree.top_k = 0;
        assert_eq!(field_of(s.validate(None).unwrap_err()), "tree.top_k");
    }

    #[test]
    fn rejects_tensor_cores_before_sm80() {
        let mut s = Schedule::preset("rtx2080ti").unwrap();
        s.prefill.use_tensor_cores = true;
        assert_eq!(
            field_of(s.validate(None).unwrap_err()),
            "prefill.use_tensor_cores"
        );
    }

    #[test]
    fn rejects_context_and_dtype_and_split_errors() {
        let mut s = Schedule::preset("h100").unwrap();
        s.max_context = 300_000;
        assert_eq!(
            field_of(s.validate(Some(&dims_08b())).unwrap_err()),
            "max_context"
        );
        let mut s = Schedule::preset("h100").unwrap();
        s.kv_cache_dtype = StateDType::F32;
        assert_eq!(field_of(s.validate(None).unwrap_err()), "kv_cache_dtype");
        let mut s = Schedule::preset("h100").unwrap();
        for bad in [12, 24, 48] {
            s.decode.attn_kv_chunk = bad;
            assert_eq!(
                field_of(s.validate(None).unwrap_err()),
                "decode.attn_kv_chunk"
            );
        }
        for good in [8, 16, 32, 64] {
            s.decode.attn_kv_chunk = good;
            s.validate(None).expect("valid chunk");
        }
        let mut s = Schedule::preset("h100").unwrap();
        s.decode.sample_candidates_per_block = 16;
        s.decode.prefetch = PrefetchMode::None; // the rings would not fit 300 SMs' sampler pool
        s.sm_count = 300;
        assert_eq!(
            field_of(s.validate(None).unwrap_err()),
            "decode.sample_candidates_per_block"
        );
        let mut s = Schedule::preset("a100").unwrap();
        s.prefill.gemm_threads = 96;
        assert_eq!(
            field_of(s.validate(None).unwrap_err()),
            "prefill.gemm_threads"
        );
    }
}
