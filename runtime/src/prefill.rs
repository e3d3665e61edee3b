//! Prefill on the GPU: the codegen's [`PrefillPlan`] walked launch by launch.
//!
//! Every argument of every launch is resolved to a device address or a
//! literal once, when the engine is built; a prefill call then only fills in
//! the prompt length and start position and queues the launches. A prompt
//! longer than the scratch capacity runs as consecutive pieces (each one
//! continues the KV cache and GDN/conv state of the previous one).

use std::collections::HashMap;

use lucebox_codegen::prefill::{Arg, Grid, PrefillPlan, generate_prefill, prefill_plan};
use lucebox_models::config::Qwen35Config;
use lucebox_schedules::Schedule;
use serde::{Deserialize, Serialize};

use crate::cache::{CacheOutcome, KernelCache};
use crate::device::Gpu;
use crate::error::{Result, RuntimeError};
use crate::launch::{Kernel, KernelArgs, StreamOrder};
use crate::memory::DeviceBuffer;
use crate::nvrtc::CompileOptions;
use cudarc::driver::CudaEvent;
use cudarc::driver::sys::{CUevent_flags, CUtensorMap};

/// Most prompt tokens one prefill piece processes (scratch is sized for it);
/// longer prompts run as several pieces.
pub const MAX_PIECE_TOKENS: u32 = 2048;

/// Compile and memory facts of the prefill kernels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefillBuildInfo {
    pub cache: CacheOutcome,
    pub compile_and_load_ms: f64,
    /// Tokens per piece (scratch capacity).
    pub piece_tokens: u32,
    pub scratch_bytes: u64,
    pub launches_per_piece: usize,
}

/// One argument after resolution.
#[derive(Debug, Clone, Copy)]
enum Resolved {
    Ptr(u64),
    I32(i32),
    PromptLen,
    StartPos,
    /// Index of a tensor map, until the descriptors are uploaded.
    TensorMap(usize),
}

/// A 2-D bf16 `CUtensorMap` of a row-major matrix at `addr` (`rows` x `cols`,
/// row stride `cols`): boxes of `box_cols` x `box_rows` in the 128-byte
/// swizzle, rows past the matrix read as zeros.
fn encode_tensor_map(
    addr: u64,
    rows: u32,
    cols: u32,
    box_cols: u32,
    box_rows: u32,
) -> Result<CUtensorMap> {
    use cudarc::driver::sys as cu;
    let dims = [u64::from(cols), u64::from(rows)];
    let strides = [u64::from(cols) * 2];
    let boxes = [box_cols, box_rows];
    let element_strides = [1u32, 1];
    let mut map = CUtensorMap { opaque: [0; 16] };
    // SAFETY: every pointer argument points at a live local array of the
    // length the rank (2) implies; the driver only writes `map`.
    let r = unsafe {
        cu::cuTensorMapEncodeTiled(
            &mut map,
            cu::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            2,
            addr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            cu::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            cu::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            cu::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            cu::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    r.result().map_err(|e| {
        RuntimeError::driver(
            format!(
                "cuTensorMapEncodeTiled ({rows} x {cols} bf16 at {addr:#x}, box {box_cols} x {box_rows})"
            ),
            e,
        )
    })?;
    Ok(map)
}

struct ResolvedLaunch {
    kernel: usize,
    grid: Grid,
    block: u32,
    dynamic_smem: u32,
    args: Vec<Resolved>,
    /// For profiles: the kernel, or for a GEMM the weight it multiplies.
    label: String,
}

/// Addresses of the decode engine's buffers and weights that the plan
/// refers to.
pub struct DecodeBindings<'a> {
    /// Canonical weight name -> (device address, bytes).
    pub weights: &'a HashMap<String, (u64, u64)>,
    /// Decode ABI buffer name -> (device address, bytes).
    pub buffers: &'a HashMap<String, (u64, u64)>,
}

/// Time of the launches with one label over a profiled prefill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefillStage {
    pub label: String,
    pub launches: usize,
    pub ms: f64,
}

/// The compiled prefill kernels with their scratch and resolved launches.
pub struct Prefill {
    kernels: Vec<Kernel>,
    launches: Vec<ResolvedLaunch>,
    /// The GEMM operands' TMA descriptors, which launches point into.
    _tensor_maps: Option<DeviceBuffer<u8>>,
    scratch: HashMap<&'static str, DeviceBuffer<u8>>,
    tokens: DeviceBuffer<u32>,
    handoff_scratch: &'static str,
    handoff_row_bytes: u64,
    piece_tokens: u32,
    /// How each kernel follows the one before: `Programmatic` when the plan
    /// says so (the generated kernels wait for it first; see `PrefillPlan`).
    launch_order: StreamOrder,
    info: PrefillBuildInfo,
}

/// Slots of a per-layer-type state buffer.
fn state_slots(cfg: &Qwen35Config, buffer: &str) -> Option<u64> {
    match buffer {
        "k_cache" | "v_cache" => Some(cfg.num_full_attention_layers() as u64),
        "gdn_state" | "conv_state" => Some(cfg.num_linear_attention_layers() as u64),
        _ => None,
    }
}

/// A label that sums the same work over layers: the kernel name, or for a
/// GEMM the weight without its layer prefix.
fn label_of<'a>(kernel: &str, args: &'a [Arg]) -> String {
    if kernel != "prefill_gemm" {
        return kernel.trim_start_matches("prefill_").to_string();
    }
    let short = |n: &'a str| -> &'a str {
        n.split_once("layers.")
            .and_then(|(_, rest)| rest.split_once('.'))
            .map_or(n, |(_, name)| name)
            .trim_end_matches(".weight")
    };
    let w: Vec<&str> = args
        .iter()
        .flat_map(|a| match a.matrix() {
            Arg::Weight(n) => vec![short(n)],
            Arg::Weights(ns) => ns.iter().map(|n| short(n)).collect(),
            _ => vec![],
        })
        .collect();
    format!("gemm {}", w.join("+"))
}

impl Prefill {
    /// Generates and compiles the prefill kernels for (cfg, schedule), sizes
    /// the scratch for `min(max_context, MAX_PIECE_TOKENS)` tokens and
    /// resolves every launch argument against `bind`.
    pub fn new(
        gpu: &Gpu,
        cfg: &Qwen35Config,
        schedule: &Schedule,
        cache: &KernelCache,
        bind: &DecodeBindings<'_>,
    ) -> Result<Self> {
        let codegen = |e: lucebox_codegen::CodegenError| {
            RuntimeError::InvalidArgument(format!("prefill codegen: {e}"))
        };
        let plan: PrefillPlan = prefill_plan(cfg, schedule).map_err(codegen)?;
        let generated = generate_prefill(cfg, schedule).map_err(codegen)?;
        let opts = CompileOptions::new(generated.arch, generated.file_name.clone());
        let loaded = gpu.compile_and_load(cache, &generated.source, &opts)?;

        // Whole GDN chunks and GEMM row tiles (the plan sizes its per-tile
        // scratch for multiples of 128 tokens).
        let step = schedule.prefill.gdn_chunk.max(128);
        let piece_tokens = schedule.max_context.min(MAX_PIECE_TOKENS).div_ceil(step) * step;
        let mut scratch = HashMap::new();
        let mut scratch_bytes = 0u64;
        for b in &plan.scratch {
            let bytes = b.bytes_per_token * piece_tokens as u64;
            let mut buf = gpu.alloc::<u8>(bytes as usize)?;
            // Poisoned: a kernel reading what no kernel wrote shows up as NaN.
            buf.fill_bytes(if b.zeroed { 0 } else { 0xFF })?;
            scratch_bytes += bytes;
            scratch.insert(b.name, buf);
        }
        let tokens = gpu.alloc_zeroed::<u32>(piece_tokens as usize)?;

        // TMA descriptors of the sm_90 GEMM's operands, uploaded together below.
        let mut tensor_maps: Vec<CUtensorMap> = Vec::new();
        let mut names: Vec<&'static str> = Vec::new();
        let mut kernels = Vec::new();
        let mut launches = Vec::with_capacity(plan.launches.len());
        for l in &plan.launches {
            let kernel = match names.iter().position(|n| *n == l.kernel) {
                Some(i) => i,
                None => {
                    let k = loaded.module.kernel(l.kernel)?;
                    k.allow_dynamic_smem(l.dynamic_smem)?;
                    names.push(l.kernel);
                    kernels.push(k);
                    kernels.len() - 1
                }
            };
            let missing = |what: &str, name: &str| {
                RuntimeError::InvalidArgument(format!(
                    "prefill launch {} (layer {:?}) needs {what} `{name}`, which the engine does not have",
                    l.kernel, l.layer
                ))
            };
            let resolve = |a: &Arg| -> Result<Resolved> {
                Ok(match a {
                    Arg::Weight(n) => {
                        Resolved::Ptr(bind.weights.get(n).ok_or_else(|| missing("weight", n))?.0)
                    }
                    Arg::Weights(names) => {
                        // One matrix of all their rows: each must start where the one before ends.
                        let mut first = None;
                        let mut end = 0u64;
                        for n in names {
                            let (ptr, bytes) =
                                *bind.weights.get(n).ok_or_else(|| missing("weight", n))?;
                            if first.is_some() && ptr != end {
                                return Err(RuntimeError::InvalidArgument(format!(
                                    "prefill launch {} (layer {:?}) reads {} as one matrix, but `{n}` is not stored right after the weight before it",
                                    l.kernel,
                                    l.layer,
                                    names.join(" + ")
                                )));
                            }
                            first.get_or_insert(ptr);
                            end = ptr + bytes;
                        }
                        Resolved::Ptr(first.ok_or_else(|| missing("weight", "(empty group)"))?)
                    }
                    Arg::Scratch(n) => Resolved::Ptr(
                        scratch
                            .get(n)
                            .ok_or_else(|| missing("scratch buffer", n))?
                            .device_ptr(),
                    ),
                    Arg::ScratchCol { name, col } => Resolved::Ptr(
                        scratch
                            .get(name)
                            .ok_or_else(|| missing("scratch buffer", name))?
                            .device_ptr()
                            + u64::from(*col) * 4,
                    ),
                    Arg::State { buffer, slot } => {
                        let (ptr, bytes) = *bind
                            .buffers
                            .get(*buffer)
                            .ok_or_else(|| missing("state buffer", buffer))?;
                        let slots = state_slots(cfg, buffer)
                            .filter(|n| *n > 0 && (*slot as u64) < *n)
                            .ok_or_else(|| missing("state slot of", buffer))?;
                        Resolved::Ptr(ptr + *slot as u64 * (bytes / slots))
                    }
                    Arg::DecodeBuffer(n) => Resolved::Ptr(
                        bind.buffers
                            .get(*n)
                            .ok_or_else(|| missing("decode buffer", n))?
                            .0,
                    ),
                    Arg::Tokens => Resolved::Ptr(tokens.device_ptr()),
                    Arg::PromptLen => Resolved::PromptLen,
                    Arg::StartPos => Resolved::StartPos,
                    Arg::Int(v) => Resolved::I32(*v),
                    Arg::Null => Resolved::Ptr(0),
                    Arg::TensorMap(_) => {
                        return Err(RuntimeError::InvalidArgument(format!(
                            "prefill launch {} nests a tensor map in a tensor map",
                            l.kernel
                        )));
                    }
                })
            };
            let mut args = Vec::with_capacity(l.args.len());
            for a in &l.args {
                args.push(match a {
                    Arg::TensorMap(op) => {
                        let Resolved::Ptr(addr) = resolve(&op.matrix)? else {
                            return Err(missing(
                                "matrix address of a tensor map",
                                "(not a pointer)",
                            ));
                        };
                        let rows = op.rows.unwrap_or(piece_tokens);
                        tensor_maps.push(encode_tensor_map(
                            addr,
                            rows,
                            op.cols,
                            op.box_cols,
                            op.box_rows,
                        )?);
                        Resolved::TensorMap(tensor_maps.len() - 1)
                    }
                    a => resolve(a)?,
                });
            }
            launches.push(ResolvedLaunch {
                kernel,
                grid: l.grid,
                block: l.block,
                dynamic_smem: l.dynamic_smem,
                args,
                label: label_of(l.kernel, &l.args),
            });
        }
        // One device buffer of 128-byte descriptors (64-byte aligned as TMA requires:
        // allocations are 256-byte aligned); the launches get their addresses.
        let tensor_map_buffer = if tensor_maps.is_empty() {
            None
        } else {
            let bytes: Vec<u8> = tensor_maps
                .iter()
                .flat_map(|m| m.opaque.iter().flat_map(|w| w.to_le_bytes()))
                .collect();
            let buf = gpu.upload(&bytes)?;
            let base = buf.device_ptr();
            for l in &mut launches {
                for a in &mut l.args {
                    if let Resolved::TensorMap(i) = *a {
                        *a = Resolved::Ptr(base + (i * std::mem::size_of::<CUtensorMap>()) as u64);
                    }
                }
            }
            Some(buf)
        };
        if !scratch.contains_key(plan.handoff.scratch) {
            return Err(RuntimeError::InvalidArgument(format!(
                "prefill hands over scratch `{}`, which the plan does not allocate",
                plan.handoff.scratch
            )));
        }
        gpu.synchronize()?;
        let info = PrefillBuildInfo {
            cache: loaded.outcome,
            compile_and_load_ms: loaded.millis,
            piece_tokens,
            scratch_bytes,
            launches_per_piece: launches.len(),
        };
        Ok(Self {
            kernels,
            launches,
            _tensor_maps: tensor_map_buffer,
            scratch,
            tokens,
            handoff_scratch: plan.handoff.scratch,
            handoff_row_bytes: plan.handoff.row_bytes,
            piece_tokens,
            launch_order: if plan.programmatic_launch {
                StreamOrder::Programmatic
            } else {
                StreamOrder::Serial
            },
            info,
        })
    }

    pub fn info(&self) -> &PrefillBuildInfo {
        &self.info
    }

    /// Tokens one piece holds.
    pub fn piece_tokens(&self) -> u32 {
        self.piece_tokens
    }

    /// Queues one piece: `tokens` (1..=piece_tokens ids, already validated)
    /// at positions `start..`. With `profile`, an event is recorded before
    /// every launch and after the last; each launch's milliseconds (its start
    /// event to the next one, GPU clock: the kernel plus any wait for the
    /// host's next launch) are added to its label, so the stages sum to the
    /// piece's GPU time. Profiling waits for the piece to finish.
    pub fn queue_piece(
        &mut self,
        gpu: &Gpu,
        tokens: &[u32],
        start: u32,
        profile: Option<&mut Vec<PrefillStage>>,
    ) -> Result<()> {
        let t = tokens.len() as u32;
        if t == 0 || t > self.piece_tokens {
            return Err(RuntimeError::InvalidArgument(format!(
                "a prefill piece holds 1..={} tokens, got {t}",
                self.piece_tokens
            )));
        }
        // Synchronous: the launches below read it.
        self.tokens.upload_at(0, tokens)?;
        let event = || {
            gpu.context()
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| RuntimeError::driver("cuEventCreate", e))
        };
        let record = |ev: &CudaEvent| {
            ev.record(gpu.stream())
                .map_err(|e| RuntimeError::driver("cuEventRecord", e))
        };
        let mut marks = Vec::new();
        for l in &self.launches {
            let mut args = KernelArgs::new();
            for a in &l.args {
                args = match *a {
                    Resolved::Ptr(p) => args.ptr(p),
                    Resolved::I32(v) => args.i32(v),
                    Resolved::PromptLen => args.i32(t as i32),
                    Resolved::StartPos => args.i32(start as i32),
                    Resolved::TensorMap(i) => {
                        return Err(RuntimeError::InvalidArgument(format!(
                            "prefill launch {}: tensor map {i} was never uploaded",
                            l.label
                        )));
                    }
                };
            }
            if profile.is_some() {
                let ev = event()?;
                record(&ev)?;
                marks.push(ev);
            }
            let kernel = &self.kernels[l.kernel];
            let grid = l.grid.dims(t);
            gpu.launch_grid_ordered(
                kernel,
                (grid, l.block, l.dynamic_smem),
                args,
                self.launch_order,
            )?;
        }
        if let Some(stages) = profile {
            let end = event()?;
            record(&end)?;
            end.synchronize()
                .map_err(|e| RuntimeError::driver("cuEventSynchronize", e))?;
            for (i, l) in self.launches.iter().enumerate() {
                let next = marks.get(i + 1).unwrap_or(&end);
                let ms = f64::from(
                    marks[i]
                        .elapsed_ms(next)
                        .map_err(|e| RuntimeError::driver("cuEventElapsedTime", e))?,
                );
                match stages.iter_mut().find(|s| s.label == l.label) {
                    Some(s) => {
                        s.launches += 1;
                        s.ms += ms;
                    }
                    None => stages.push(PrefillStage {
                        label: l.label.clone(),
                        launches: 1,
                        ms,
                    }),
                }
            }
        }
        Ok(())
    }

    /// Copies the residual row of the piece's last token (`t` tokens) into
    /// `dst` (the decode engine's `resid` buffer), queued on the stream.
    pub fn hand_off(&self, t: u32, dst: &mut DeviceBuffer<u8>) -> Result<()> {
        let src = self.scratch.get(self.handoff_scratch).ok_or_else(|| {
            RuntimeError::InvalidArgument(format!("no scratch `{}`", self.handoff_scratch))
        })?;
        let row = self.handoff_row_bytes as usize;
        dst.copy_bytes_from(0, src, (t.max(1) as usize - 1) * row, row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sum_the_same_weight_over_layers() {
        let gemm = |w: &str| {
            label_of(
                "prefill_gemm",
                &[
                    Arg::Scratch("xnorm"),
                    Arg::Weight(w.into()),
                    Arg::Null,
                    Arg::PromptLen,
                ],
            )
        };
        assert_eq!(gemm("layers.3.mlp.down_proj.weight"), "gemm mlp.down_proj");
        assert_eq!(
            gemm("layers.17.mlp.down_proj.weight"),
            gemm("layers.3.mlp.down_proj.weight")
        );
        assert_eq!(
            label_of(
                "prefill_gemm",
                &[
                    Arg::Weight("layers.0.mlp.gate_proj.weight".into()),
                    Arg::Weight("layers.0.mlp.up_proj.weight".into()),
                ]
            ),
            "gemm mlp.gate_proj+mlp.up_proj"
        );
        assert_eq!(
            label_of(
                "prefill_gemm",
                &[Arg::Weights(
                    ["q_proj", "k_proj", "v_proj"]
                        .iter()
                        .map(|n| format!("layers.7.self_attn.{n}.weight"))
                        .collect()
                )]
            ),
            "gemm self_attn.q_proj+self_attn.k_proj+self_attn.v_proj"
        );
        assert_eq!(label_of("prefill_attention", &[]), "attention");
    }

    #[test]
    fn every_state_buffer_of_the_plan_has_slots() {
        let cfg = Qwen35Config::qwen35_0_8b();
        let s = Schedule::preset("h100").expect("preset");
        let plan = prefill_plan(&cfg, &s).expect("plan");
        for l in &plan.launches {
            for a in &l.args {
                if let Arg::State { buffer, slot } = a {
                    let n = state_slots(&cfg, buffer).expect("known state buffer");
                    assert!((*slot as u64) < n, "{buffer} slot {slot} of {n}");
                }
            }
        }
    }
}
