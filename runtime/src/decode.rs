//! The decode megakernel engine: weights uploaded by the codegen ABI's
//! weight table, buffers allocated by its buffer table, the kernel compiled
//! through the CUBIN cache and launched cooperatively, generated ids read
//! from pinned, device-mapped host memory while the kernel runs.
//!
//! Launch protocol (see `lucebox_codegen::decode`): one launch absorbs
//! `n_input` tokens from `prompt_ids` starting at `start_pos`, then samples up
//! to `max_new_tokens` tokens on the device, feeding each back itself, and
//! writes `status` when it ends. A later launch continues by feeding the last
//! token with `FLAG_COUNT_INPUT` clear.

use std::ops::ControlFlow;
use std::time::Instant;

use lucebox_codegen::decode::abi::{
    ERR_CONTEXT_FULL, ERR_NONE, FLAG_COUNT_INPUT, FLAG_RESID_READY, FLAG_WRITE_LOGITS, MAX_EOS_IDS,
    STATUS_ERROR, STATUS_LAST_TOKEN, STATUS_N_GENERATED, STATUS_NEXT_POS, STATUS_STOP_REASON,
    STATUS_WORDS, STOP_EOS,
};
use lucebox_codegen::decode::{
    BufferInit, DecodeAbi, DecodeParams, WeightDType, WeightSlot, decode_abi, generate_decode,
};
use lucebox_models::config::Qwen35Config;
use lucebox_models::engine::{Engine, GenerationOutcome, GenerationRequest, StopReason};
use lucebox_models::error::ModelError;
use lucebox_models::sampling::SamplingParams;
use lucebox_models::weights::{WeightSource, expect_shape};
use lucebox_schedules::Schedule;
use serde::{Deserialize, Serialize};

use crate::cache::{CacheOutcome, KernelCache};
use crate::device::Gpu;
use crate::energy::{EnergyMeter, EnergyReading};
use crate::error::{Result, RuntimeError};
use crate::launch::{Kernel, KernelArgs, LaunchConfig};
use crate::memory::{DeviceBuffer, MappedHostBuffer};
use crate::nvrtc::{CompileOptions, KernelResources};
use crate::prefill::{DecodeBindings, Prefill, PrefillBuildInfo, PrefillStage};
use crate::timing::{GpuTimer, Stats};

/// Marks a not-yet-written `out_tokens` entry.
const NO_TOKEN: u32 = u32::MAX;

/// Where one ABI buffer lives.
enum BufferStorage {
    Device(DeviceBuffer<u8>),
    /// Host outputs the host polls while the kernel runs.
    Mapped(MappedHostBuffer<u32>),
}

impl BufferStorage {
    fn device_ptr(&self) -> u64 {
        match self {
            Self::Device(b) => b.device_ptr(),
            Self::Mapped(b) => b.device_ptr(),
        }
    }
}

/// What one launch did, from the `status` words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchStatus {
    pub generated: Vec<u32>,
    pub next_pos: u32,
    pub stop_reason: u32,
    pub last_token: u32,
}

/// Compile facts for `lucebox doctor`/`bench`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodeBuildInfo {
    pub cache: CacheOutcome,
    pub compile_and_load_ms: f64,
    pub resources: Option<KernelResources>,
    /// The model's weights on the device, one copy of each (what a token
    /// reads; `bench` builds its roofline on it).
    pub weight_bytes: u64,
    /// Second, transposed copies some schedules read instead of the
    /// original (`decode.mlp = fused_split_k`); GPU memory, not per-token reads.
    #[serde(default)]
    pub transposed_copy_bytes: u64,
    pub buffer_bytes: u64,
    pub sync_points_per_token: u32,
    pub grid_blocks: u32,
    pub threads_per_block: u32,
    pub dynamic_smem_bytes: u32,
    /// The prefill kernels, or why prompts run token by token instead.
    pub prefill: std::result::Result<PrefillBuildInfo, String>,
}

/// Prefill speed: prompt kernels plus the first sampled token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefillTiming {
    pub prompt_tokens: usize,
    pub warmup_runs: usize,
    /// Milliseconds per prompt, GPU clock: the prefill launches, the
    /// hand-off and the decode launch that samples the first token.
    pub ms: Stats,
    pub tok_per_s: Stats,
}

/// Tokens per second of the decode loop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DecodeTiming {
    pub prompt_tokens: usize,
    pub new_tokens: u32,
    pub warmup_runs: usize,
    /// Milliseconds per launch of `new_tokens` tokens.
    pub ms: Stats,
    pub tok_per_s: Stats,
}

/// The GPU megakernel backend.
pub struct GpuEngine {
    gpu: Gpu,
    cfg: Qwen35Config,
    schedule: Schedule,
    abi: DecodeAbi,
    kernel: Kernel,
    info: DecodeBuildInfo,
    // Held for their device addresses in the tables.
    _weights: Vec<DeviceBuffer<u8>>,
    _weight_table: DeviceBuffer<u64>,
    buffers: Vec<BufferStorage>,
    _buffer_table: DeviceBuffer<u64>,
    weight_table_ptr: u64,
    buffer_table_ptr: u64,
    /// Tokens per launch after the first; smaller means finer cancellation.
    chunk_tokens: u32,
    prefill: Option<Prefill>,
    /// Prompts go through the prefill kernels (when built); off = token by
    /// token through the megakernel.
    use_prefill: bool,
}

impl std::fmt::Debug for GpuEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuEngine")
            .field("info", &self.info)
            .finish()
    }
}

fn model_err(e: ModelError) -> RuntimeError {
    RuntimeError::InvalidArgument(format!("weights: {e}"))
}

/// `m` (`rows x cols`, row-major) transposed to `cols x rows`, in cache-sized
/// tiles (a 3584 x 1024 matrix column by column would miss on every read).
fn transposed<T: Copy>(m: &[T], rows: usize, cols: usize) -> Vec<T> {
    const TILE: usize = 64;
    assert_eq!(m.len(), rows * cols, "matrix of {rows} x {cols}");
    let mut out = m.to_vec();
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = m[r * cols + c];
                }
            }
        }
    }
    out
}

/// Bytes of a `Copy` value with no padding, for a by-value kernel parameter.
fn params_bytes(p: &DecodeParams) -> Vec<u8> {
    let n = std::mem::size_of::<DecodeParams>();
    // SAFETY: DecodeParams is repr(C) and has no padding (every field is
    // 4 or 8 bytes and `_pad` keeps `seed` aligned; GpuEngine::new checks
    // that its size equals the sum of the ABI's field sizes), so every byte
    // is initialised.
    unsafe { std::slice::from_raw_parts((p as *const DecodeParams).cast::<u8>(), n) }.to_vec()
}

impl GpuEngine {
    /// Generates the kernel for (config of `weights`, `schedule`), compiles it
    /// through `cache`, uploads the weights and allocates the buffers.
    pub fn new(
        gpu: Gpu,
        weights: &dyn WeightSource,
        schedule: Schedule,
        cache: &KernelCache,
    ) -> Result<Self> {
        let cfg = weights.config().clone();
        let schedule = schedule.fitted_to_model(&lucebox_codegen::model_dims(&cfg));
        let abi = decode_abi(&cfg, &schedule);
        let field_bytes: usize = abi.params_layout.fields.iter().map(|f| f.ty.size()).sum();
        if std::mem::size_of::<DecodeParams>() != abi.params_layout.size
            || field_bytes != abi.params_layout.size
        {
            return Err(RuntimeError::InvalidArgument(format!(
                "DecodeParams is {} bytes, the ABI says {} (fields {field_bytes}): runtime and codegen disagree",
                std::mem::size_of::<DecodeParams>(),
                abi.params_layout.size
            )));
        }
        let generated = generate_decode(&cfg, &schedule)
            .map_err(|e| RuntimeError::InvalidArgument(format!("codegen: {e}")))?;
        let opts = CompileOptions::new(generated.arch, generated.file_name.clone());
        let loaded = gpu.compile_and_load(cache, &generated.source, &opts)?;
        let kernel = loaded.module.kernel(&abi.kernel_name)?;
        let cfg_launch = LaunchConfig {
            grid_blocks: abi.grid_blocks,
            threads_per_block: abi.threads_per_block,
            dynamic_smem_bytes: abi.dynamic_smem_bytes,
        };
        // Refuse now rather than at the first request.
        let max = gpu.max_cooperative_grid(
            &kernel,
            cfg_launch.threads_per_block,
            cfg_launch.dynamic_smem_bytes,
        )?;
        if abi.cooperative && abi.grid_blocks > max {
            return Err(RuntimeError::NotCoResident {
                kernel: abi.kernel_name.clone(),
                grid_blocks: abi.grid_blocks,
                threads_per_block: abi.threads_per_block,
                dynamic_smem_bytes: abi.dynamic_smem_bytes,
                max_blocks_per_sm: max / gpu.props().sm_count.max(1),
                sm_count: gpu.props().sm_count,
                max_resident: max,
            });
        }

        // Weights: each layer's input projections share one allocation, back
        // to back in their group's order (the prefill GEMMs read them as one
        // matrix); every other weight gets its own.
        let mut dev_weights = Vec::with_capacity(abi.weights.len());
        let mut table = vec![0u64; abi.weights.len()];
        let mut weight_bytes = 0u64;
        // By name: the untransposed slots (a transposed copy shares its name).
        let slot_of: std::collections::HashMap<&str, &WeightSlot> = abi
            .weights
            .iter()
            .filter(|w| !w.transposed)
            .map(|w| (w.canonical_name.as_str(), w))
            .collect();
        let mut grouped = std::collections::HashSet::new();
        let mut groups: Vec<Vec<&WeightSlot>> = Vec::new();
        for names in lucebox_codegen::prefill::contiguous_weight_groups(&cfg) {
            let members: Option<Vec<&WeightSlot>> = names
                .iter()
                .map(|n| slot_of.get(n.as_str()).copied())
                .collect();
            if let Some(members) = members {
                grouped.extend(members.iter().map(|w| w.index));
                groups.push(members);
            }
        }
        let host_bytes = |slot: &WeightSlot| -> Result<Vec<u8>> {
            let t = weights.tensor(&slot.canonical_name).map_err(model_err)?;
            let bytes: Vec<u8> = if slot.transposed {
                let [cols, rows] = slot.shape[..] else {
                    return Err(RuntimeError::InvalidArgument(format!(
                        "weight `{}`: only 2-D weights have a transposed copy",
                        slot.canonical_name
                    )));
                };
                expect_shape(&t, &[rows, cols]).map_err(model_err)?;
                let m = match slot.dtype {
                    WeightDType::Bf16 => t.to_bf16().map_err(model_err)?,
                    WeightDType::F32 => {
                        return Err(RuntimeError::InvalidArgument(format!(
                            "weight `{}`: transposed copies are bf16",
                            slot.canonical_name
                        )));
                    }
                };
                bytemuck::cast_slice(&transposed(&m, rows, cols)).to_vec()
            } else {
                expect_shape(&t, &slot.shape).map_err(model_err)?;
                match slot.dtype {
                    WeightDType::Bf16 => {
                        bytemuck::cast_slice(&t.to_bf16().map_err(model_err)?).to_vec()
                    }
                    WeightDType::F32 => {
                        bytemuck::cast_slice(&t.to_f32().map_err(model_err)?).to_vec()
                    }
                }
            };
            if bytes.len() as u64 != slot.bytes() {
                return Err(RuntimeError::InvalidArgument(format!(
                    "weight `{}`: {} bytes converted, the ABI expects {}",
                    slot.canonical_name,
                    bytes.len(),
                    slot.bytes()
                )));
            }
            Ok(bytes)
        };
        for members in &groups {
            let total: u64 = members.iter().map(|w| w.bytes()).sum();
            let mut buf = gpu.alloc::<u8>(total as usize)?;
            let mut offset = 0u64;
            for slot in members {
                buf.upload_at(offset as usize, &host_bytes(slot)?)?;
                table[slot.index] = buf.device_ptr() + offset;
                offset += slot.bytes();
            }
            weight_bytes += total;
            dev_weights.push(buf);
        }
        let mut transposed_copy_bytes = 0u64;
        for slot in abi.weights.iter().filter(|w| !grouped.contains(&w.index)) {
            let buf = gpu.upload(&host_bytes(slot)?)?;
            table[slot.index] = buf.device_ptr();
            if slot.transposed {
                transposed_copy_bytes += slot.bytes();
            } else {
                weight_bytes += slot.bytes();
            }
            dev_weights.push(buf);
        }
        let weight_table = gpu.upload(&table)?;

        // Buffers, in slot order.
        let mut buffers = Vec::with_capacity(abi.buffers.len());
        let mut btable = vec![0u64; abi.buffers.len()];
        let mut buffer_bytes = 0u64;
        for (i, slot) in abi.buffers.iter().enumerate() {
            if slot.index != i {
                return Err(RuntimeError::InvalidArgument(format!(
                    "buffer table out of order at `{}`",
                    slot.name
                )));
            }
            let storage = if slot.init == BufferInit::HostOutput && slot.name != "logits" {
                let words = (slot.bytes as usize).div_ceil(4);
                let mut m = gpu.alloc_mapped::<u32>(words)?;
                m.fill(NO_TOKEN);
                BufferStorage::Mapped(m)
            } else {
                let mut b = gpu.alloc::<u8>(slot.bytes as usize)?;
                match slot.init {
                    BufferInit::Poison => b.fill_bytes(0xFF)?,
                    _ => b.fill_bytes(0)?,
                }
                BufferStorage::Device(b)
            };
            btable[i] = storage.device_ptr();
            buffer_bytes += slot.bytes;
            buffers.push(storage);
        }
        let buffer_table = gpu.upload(&btable)?;
        gpu.synchronize()?;

        let weight_ptrs: std::collections::HashMap<String, (u64, u64)> = abi
            .weights
            .iter()
            .filter(|w| !w.transposed)
            .map(|w| (w.canonical_name.clone(), (table[w.index], w.bytes())))
            .collect();
        let buffer_ptrs: std::collections::HashMap<String, (u64, u64)> = abi
            .buffers
            .iter()
            .map(|b| (b.name.clone(), (btable[b.index], b.bytes)))
            .collect();
        let prefill = Prefill::new(
            &gpu,
            &cfg,
            &schedule,
            cache,
            &DecodeBindings {
                weights: &weight_ptrs,
                buffers: &buffer_ptrs,
            },
        );
        if let Err(e) = &prefill {
            tracing::warn!("prefill kernels unavailable, prompts run token by token: {e}");
        }

        let info = DecodeBuildInfo {
            cache: loaded.outcome,
            compile_and_load_ms: loaded.millis,
            resources: kernel.resources().cloned(),
            weight_bytes,
            transposed_copy_bytes,
            buffer_bytes,
            sync_points_per_token: abi.sync_points_per_token,
            grid_blocks: abi.grid_blocks,
            threads_per_block: abi.threads_per_block,
            dynamic_smem_bytes: abi.dynamic_smem_bytes,
            prefill: match &prefill {
                Ok(p) => Ok(p.info().clone()),
                Err(e) => Err(e.to_string()),
            },
        };
        Ok(Self {
            weight_table_ptr: weight_table.device_ptr(),
            buffer_table_ptr: buffer_table.device_ptr(),
            gpu,
            cfg,
            schedule,
            abi,
            kernel,
            info,
            _weights: dev_weights,
            _weight_table: weight_table,
            buffers,
            _buffer_table: buffer_table,
            chunk_tokens: u32::MAX,
            use_prefill: prefill.is_ok(),
            prefill: prefill.ok(),
        })
    }

    /// Whether prompts go through the prefill kernels; `false` feeds them
    /// token by token through the megakernel (the reference path of the
    /// prefill checks). Errors when asked for prefill that was not built.
    pub fn set_use_prefill(&mut self, on: bool) -> Result<()> {
        if on && self.prefill.is_none() {
            return Err(RuntimeError::InvalidArgument(format!(
                "the prefill kernels are unavailable: {}",
                self.info.prefill.as_ref().err().map_or("?", |e| e.as_str())
            )));
        }
        self.use_prefill = on;
        Ok(())
    }

    pub fn uses_prefill(&self) -> bool {
        self.use_prefill && self.prefill.is_some()
    }

    pub fn info(&self) -> &DecodeBuildInfo {
        &self.info
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    pub fn config(&self) -> &Qwen35Config {
        &self.cfg
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    pub fn abi(&self) -> &DecodeAbi {
        &self.abi
    }

    /// Tokens generated per launch after the first (cancellation latency vs
    /// one extra launch per chunk). Default: everything in one launch.
    pub fn set_chunk_tokens(&mut self, n: u32) {
        self.chunk_tokens = n.max(1);
    }

    fn buffer_index(&self, name: &str) -> Result<usize> {
        self.abi
            .buffers
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| {
                RuntimeError::InvalidArgument(format!("the decode ABI has no `{name}` buffer"))
            })
    }

    fn mapped(&self, name: &str) -> Result<&MappedHostBuffer<u32>> {
        match &self.buffers[self.buffer_index(name)?] {
            BufferStorage::Mapped(m) => Ok(m),
            BufferStorage::Device(_) => Err(RuntimeError::InvalidArgument(format!(
                "`{name}` is not host-mapped"
            ))),
        }
    }

    fn mapped_mut(&mut self, name: &str) -> Result<&mut MappedHostBuffer<u32>> {
        let i = self.buffer_index(name)?;
        match &mut self.buffers[i] {
            BufferStorage::Mapped(m) => Ok(m),
            BufferStorage::Device(_) => Err(RuntimeError::InvalidArgument(format!(
                "`{name}` is not host-mapped"
            ))),
        }
    }

    fn device_mut(&mut self, name: &str) -> Result<&mut DeviceBuffer<u8>> {
        let i = self.buffer_index(name)?;
        match &mut self.buffers[i] {
            BufferStorage::Device(b) => Ok(b),
            BufferStorage::Mapped(_) => Err(RuntimeError::InvalidArgument(format!(
                "`{name}` is host-mapped"
            ))),
        }
    }

    /// Clears the per-request state (KV cache, GDN and conv state, penalty
    /// counts). Counters and the grid barrier are never reset.
    pub fn reset(&mut self) -> Result<()> {
        for (slot, storage) in self.abi.buffers.iter().zip(self.buffers.iter_mut()) {
            if slot.init == BufferInit::ZeroPerRequest
                && let BufferStorage::Device(b) = storage
            {
                b.fill_bytes(0)?;
            }
        }
        self.gpu.synchronize()
    }

    /// One cooperative launch; `on_token` sees each id as the device writes
    /// it (polled from mapped memory) and may ask to stop after this launch.
    pub fn launch(
        &mut self,
        params: &DecodeParams,
        input: &[u32],
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<(LaunchStatus, ControlFlow<()>)> {
        if input.is_empty() || input.len() as u64 > self.abi.max_context as u64 {
            return Err(RuntimeError::InvalidArgument(format!(
                "a launch needs 1..={} input tokens, got {}",
                self.abi.max_context,
                input.len()
            )));
        }
        if let Some(bad) = input.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(RuntimeError::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        self.device_mut("prompt_ids")?
            .upload_at(0, bytemuck::cast_slice(input))?;
        let max_out = (params.max_new_tokens as usize).min(self.mapped("out_tokens")?.len());
        {
            let out = self.mapped_mut("out_tokens")?;
            for i in 0..max_out.min(out.len()) {
                out.write(i, NO_TOKEN)?;
            }
        }
        self.mapped_mut("status")?.fill(NO_TOKEN);
        let cfg = LaunchConfig {
            grid_blocks: self.abi.grid_blocks,
            threads_per_block: self.abi.threads_per_block,
            dynamic_smem_bytes: self.abi.dynamic_smem_bytes,
        };
        let args = KernelArgs::new()
            .ptr(self.weight_table_ptr)
            .ptr(self.buffer_table_ptr)
            .bytes(&params_bytes(params));
        self.gpu.launch_cooperative(&self.kernel, cfg, args)?;

        // Stream tokens while the kernel runs; the final read after the
        // stream completes is authoritative.
        let mut seen = 0usize;
        let mut flow = ControlFlow::Continue(());
        let out = self.mapped("out_tokens")?;
        loop {
            let done = self.gpu.stream_done()?;
            while seen < max_out {
                match out.read_volatile(seen) {
                    Some(t) if t != NO_TOKEN => {
                        if flow.is_continue() {
                            flow = on_token(t);
                        }
                        seen += 1;
                    }
                    _ => break,
                }
            }
            if done {
                break;
            }
            std::thread::sleep(std::time::Duration::from_micros(20));
        }
        self.gpu.synchronize()?;
        let status = self.mapped("status")?.to_vec();
        if status.len() < STATUS_WORDS || status[STATUS_ERROR] == NO_TOKEN {
            return Err(RuntimeError::CheckFailed(
                "the decode kernel did not write its status".into(),
            ));
        }
        match status[STATUS_ERROR] {
            ERR_NONE => {}
            ERR_CONTEXT_FULL => {
                return Err(RuntimeError::InvalidArgument(format!(
                    "context full: the schedule holds {} tokens",
                    self.abi.max_context
                )));
            }
            code => {
                return Err(RuntimeError::CheckFailed(format!(
                    "decode kernel error code {code}"
                )));
            }
        }
        let n = (status[STATUS_N_GENERATED] as usize).min(max_out);
        let generated: Vec<u32> = (0..n).filter_map(|i| out.read_volatile(i)).collect();
        for &t in &generated[seen.min(generated.len())..] {
            if flow.is_continue() {
                flow = on_token(t);
            }
        }
        Ok((
            LaunchStatus {
                generated,
                next_pos: status[STATUS_NEXT_POS],
                stop_reason: status[STATUS_STOP_REASON],
                last_token: status[STATUS_LAST_TOKEN],
            },
            flow,
        ))
    }

    fn params(
        &self,
        sampling: &SamplingParams,
        start_pos: u32,
        n_input: u32,
        max_new: u32,
        flags: u32,
        eos: &[u32],
    ) -> DecodeParams {
        let mut eos_ids = [0u32; MAX_EOS_IDS];
        for (d, s) in eos_ids.iter_mut().zip(eos) {
            *d = *s;
        }
        DecodeParams {
            start_pos,
            n_input,
            max_new_tokens: max_new,
            flags,
            top_k: sampling.top_k.min(u32::MAX as usize) as u32,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            repetition_penalty: sampling.repetition_penalty,
            presence_penalty: sampling.presence_penalty,
            frequency_penalty: sampling.frequency_penalty,
            n_eos: eos.len().min(MAX_EOS_IDS) as u32,
            eos_ids,
            _pad: 0,
            seed: sampling.seed,
        }
    }

    /// Raw logits after each of `tokens` (teacher forcing: position t sees
    /// tokens[..=t]), one launch per position. For checks, not speed.
    pub fn teacher_forced_logits(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
        self.teacher_forced_logits_after_prefill(tokens, 0)
    }

    /// Like [`Self::teacher_forced_logits`], but `tokens[..prefilled]` go
    /// through the prefill kernels first: returns the logits of positions
    /// `prefilled - 1 ..` (all positions when `prefilled` is 0), the first
    /// from the decode launch that continues the prefill.
    pub fn teacher_forced_logits_after_prefill(
        &mut self,
        tokens: &[u32],
        prefilled: usize,
    ) -> Result<Vec<Vec<f32>>> {
        if prefilled > tokens.len() {
            return Err(RuntimeError::InvalidArgument(format!(
                "prefill of {prefilled} of {} tokens",
                tokens.len()
            )));
        }
        self.reset()?;
        let greedy = SamplingParams::greedy();
        let mut out = Vec::with_capacity(tokens.len() + 1 - prefilled.min(1));
        if prefilled > 0 {
            self.prefill(&tokens[..prefilled], 0)?;
            let last = prefilled as u32 - 1;
            let p = self.params(
                &greedy,
                last,
                1,
                1,
                FLAG_WRITE_LOGITS | FLAG_RESID_READY,
                &[],
            );
            out.push(self.logits_of_launch(&p, tokens[prefilled - 1])?);
        }
        for (t, &tok) in tokens.iter().enumerate().skip(prefilled) {
            let p = self.params(
                &greedy,
                t as u32,
                1,
                1,
                FLAG_WRITE_LOGITS | FLAG_COUNT_INPUT,
                &[],
            );
            out.push(self.logits_of_launch(&p, tok)?);
        }
        Ok(out)
    }

    /// Logits after `pieces` run through the prefill kernels back to back
    /// from a reset state (each piece continues the previous one), taken
    /// from the decode launch that continues them.
    pub fn prefill_logits(&mut self, pieces: &[&[u32]]) -> Result<Vec<f32>> {
        self.reset()?;
        let mut pos = 0u32;
        let mut last = None;
        for piece in pieces {
            self.prefill(piece, pos)?;
            pos += piece.len() as u32;
            last = piece.last().copied().or(last);
        }
        let last = last.ok_or_else(|| RuntimeError::InvalidArgument("empty prefill".into()))?;
        let p = self.params(
            &SamplingParams::greedy(),
            pos - 1,
            1,
            1,
            FLAG_WRITE_LOGITS | FLAG_RESID_READY,
            &[],
        );
        self.logits_of_launch(&p, last)
    }

    /// One launch of one input token that writes logits; returns them
    /// (poisoned first, so a launch that writes nothing shows as NaN).
    fn logits_of_launch(&mut self, p: &DecodeParams, token: u32) -> Result<Vec<f32>> {
        let logits_idx = self.buffer_index("logits")?;
        if let BufferStorage::Device(b) = &mut self.buffers[logits_idx] {
            b.fill_bytes(0xFF)?;
        }
        let _ = self.launch(p, &[token], &mut |_| ControlFlow::Continue(()))?;
        let BufferStorage::Device(b) = &self.buffers[logits_idx] else {
            return Err(RuntimeError::InvalidArgument(
                "`logits` must be a device buffer".into(),
            ));
        };
        let raw = b.download()?;
        Ok(bytemuck::pod_collect_to_vec::<u8, f32>(&raw)[..self.cfg.vocab_size].to_vec())
    }

    /// Runs `tokens` at positions `start..` through the prefill kernels (in
    /// pieces the scratch holds), leaving the KV cache, GDN and conv state
    /// and the penalty counts for decode, and the last token's residual in
    /// `resid` for a decode launch with `FLAG_RESID_READY`. Queued on the
    /// stream, not waited for. Does not reset: a second call continues.
    pub fn prefill(&mut self, tokens: &[u32], start: u32) -> Result<()> {
        self.prefill_inner(tokens, start, None)
    }

    fn prefill_inner(
        &mut self,
        tokens: &[u32],
        start: u32,
        mut profile: Option<&mut Vec<PrefillStage>>,
    ) -> Result<()> {
        if tokens.is_empty() {
            return Err(RuntimeError::InvalidArgument("empty prefill".into()));
        }
        let end = start as u64 + tokens.len() as u64;
        if end > self.abi.max_context as u64 {
            return Err(RuntimeError::InvalidArgument(format!(
                "prefill of {} tokens at position {start} ends at {end}, past the maximum context {}",
                tokens.len(),
                self.abi.max_context
            )));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.cfg.vocab_size) {
            return Err(RuntimeError::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary ({})",
                self.cfg.vocab_size
            )));
        }
        let resid = self.buffer_index("resid")?;
        let Some(pf) = self.prefill.as_mut() else {
            return Err(RuntimeError::InvalidArgument(format!(
                "the prefill kernels are unavailable: {}",
                self.info.prefill.as_ref().err().map_or("?", |e| e.as_str())
            )));
        };
        let piece = pf.piece_tokens() as usize;
        let mut pos = start;
        let mut last = 0u32;
        for chunk in tokens.chunks(piece) {
            pf.queue_piece(&self.gpu, chunk, pos, profile.as_deref_mut())?;
            pos += chunk.len() as u32;
            last = chunk.len() as u32;
        }
        let BufferStorage::Device(dst) = &mut self.buffers[resid] else {
            return Err(RuntimeError::InvalidArgument(
                "`resid` must be a device buffer".into(),
            ));
        };
        pf.hand_off(last, dst)
    }

    /// Prefill speed: after `warmup` untimed runs, `runs` (at least 5) timed
    /// prompts, each the prefill launches plus the decode launch that samples
    /// the first token (state reset before each, untimed), GPU clock.
    pub fn time_prefill(
        &mut self,
        prompt: &[u32],
        warmup: usize,
        runs: usize,
    ) -> Result<PrefillTiming> {
        if prompt.is_empty() {
            return Err(RuntimeError::InvalidArgument("empty prompt".into()));
        }
        let greedy = SamplingParams::greedy();
        let timer = GpuTimer::new(&self.gpu)?;
        let mut ms = Vec::new();
        for run in 0..warmup + runs.max(5) {
            self.reset()?;
            timer.start(&self.gpu)?;
            let st =
                self.first_token(prompt, &greedy, 1, &[], &mut |_| ControlFlow::Continue(()))?;
            let t = timer.stop_ms(&self.gpu)?;
            if st.0.generated.len() != 1 {
                return Err(RuntimeError::CheckFailed(format!(
                    "the first launch generated {} tokens, not 1",
                    st.0.generated.len()
                )));
            }
            if run >= warmup {
                ms.push(t);
            }
        }
        let ms = Stats::of(&ms).ok_or_else(|| RuntimeError::CheckFailed("no timings".into()))?;
        Ok(PrefillTiming {
            prompt_tokens: prompt.len(),
            warmup_runs: warmup,
            ms,
            tok_per_s: ms.map(|m| prompt.len() as f64 / (m * 1e-3)),
        })
    }

    /// Per-launch breakdown of one prefill of `prompt` (GPU time from each
    /// launch's start to the next's, summed per kernel label), plus
    /// the decode launch that samples the first token.
    pub fn profile_prefill(&mut self, prompt: &[u32]) -> Result<Vec<PrefillStage>> {
        self.reset()?;
        let mut stages = Vec::new();
        self.prefill_inner(prompt, 0, Some(&mut stages))?;
        let timer = GpuTimer::new(&self.gpu)?;
        let greedy = SamplingParams::greedy();
        let last = *prompt
            .last()
            .ok_or_else(|| RuntimeError::InvalidArgument("empty prompt".into()))?;
        let p = self.params(
            &greedy,
            prompt.len() as u32 - 1,
            1,
            1,
            FLAG_RESID_READY,
            &[],
        );
        timer.start(&self.gpu)?;
        let _ = self.launch(&p, &[last], &mut |_| ControlFlow::Continue(()))?;
        stages.push(PrefillStage {
            label: "first token (decode kernel: final norm, LM head, sample)".into(),
            launches: 1,
            ms: timer.stop_ms(&self.gpu)?,
        });
        Ok(stages)
    }

    /// The request's first launch: the prompt (through prefill when on,
    /// else absorbed token by token) and up to `max_new` sampled tokens.
    fn first_token(
        &mut self,
        prompt: &[u32],
        sampling: &SamplingParams,
        max_new: u32,
        stops: &[u32],
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<(LaunchStatus, ControlFlow<()>)> {
        let last = *prompt
            .last()
            .ok_or_else(|| RuntimeError::InvalidArgument("empty prompt".into()))?;
        if self.uses_prefill() {
            self.prefill(prompt, 0)?;
            if max_new == 0 {
                self.gpu.synchronize()?;
                return Ok((
                    LaunchStatus {
                        generated: Vec::new(),
                        next_pos: prompt.len() as u32,
                        stop_reason: lucebox_codegen::decode::abi::STOP_MAX_TOKENS,
                        last_token: 0,
                    },
                    ControlFlow::Continue(()),
                ));
            }
            let p = self.params(
                sampling,
                prompt.len() as u32 - 1,
                1,
                max_new,
                FLAG_RESID_READY,
                stops,
            );
            self.launch(&p, &[last], on_token)
        } else {
            let p = self.params(
                sampling,
                0,
                prompt.len() as u32,
                max_new,
                FLAG_COUNT_INPUT,
                stops,
            );
            self.launch(&p, prompt, on_token)
        }
    }

    /// Greedy ids for `n` steps after `prompt`, no stop tokens.
    pub fn greedy(&mut self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let req = GenerationRequest {
            prompt: prompt.to_vec(),
            max_tokens: n,
            sampling: SamplingParams::greedy(),
            stop_tokens: Vec::new(),
        };
        Ok(self
            .run_request(&req, &mut |_| ControlFlow::Continue(()))?
            .generated)
    }

    /// Decode speed: after `warmup` untimed runs, `runs` (at least 5) timed
    /// launches each generating `new_tokens` greedy tokens after `prompt`
    /// (absorbed untimed, state reset per run), timed with CUDA events.
    pub fn time_decode(
        &mut self,
        prompt: &[u32],
        new_tokens: u32,
        warmup: usize,
        runs: usize,
    ) -> Result<DecodeTiming> {
        let greedy = SamplingParams::greedy();
        let timer = GpuTimer::new(&self.gpu)?;
        let mut ms = Vec::new();
        for run in 0..warmup + runs.max(5) {
            self.reset()?;
            let p = self.params(&greedy, 0, prompt.len() as u32, 1, FLAG_COUNT_INPUT, &[]);
            let (st, _) = self.launch(&p, prompt, &mut |_| ControlFlow::Continue(()))?;
            let p = self.params(&greedy, st.next_pos, 1, new_tokens, 0, &[]);
            timer.start(&self.gpu)?;
            let (st2, _) = self.launch(&p, &[st.last_token], &mut |_| ControlFlow::Continue(()))?;
            let t = timer.stop_ms(&self.gpu)?;
            if st2.generated.len() != new_tokens as usize {
                return Err(RuntimeError::CheckFailed(format!(
                    "timed launch generated {} of {new_tokens} tokens",
                    st2.generated.len()
                )));
            }
            if run >= warmup {
                ms.push(t);
            }
        }
        let ms = Stats::of(&ms).ok_or_else(|| RuntimeError::CheckFailed("no timings".into()))?;
        Ok(DecodeTiming {
            prompt_tokens: prompt.len(),
            new_tokens,
            warmup_runs: warmup,
            ms,
            tok_per_s: ms.map(|m| new_tokens as f64 / (m * 1e-3)),
        })
    }

    /// Per-phase breakdown of greedy decode: one launch absorbs `prompt`
    /// then generates `steps` tokens; the first `skip` generated steps are
    /// left out of the statistics. Needs an engine built with
    /// `decode.profile_phases` on (the kernel records the stamps).
    pub fn profile_decode(
        &mut self,
        prompt: &[u32],
        steps: u32,
        skip: usize,
    ) -> Result<crate::profile::PhaseProfile> {
        if !self.schedule.decode.profile_phases {
            return Err(RuntimeError::InvalidArgument(
                "profile_decode needs an engine built with decode.profile_phases".into(),
            ));
        }
        let max = lucebox_codegen::decode::abi::PROFILE_MAX_STEPS as usize;
        if prompt.is_empty() || prompt.len() + steps as usize > max || steps as usize <= skip {
            return Err(RuntimeError::InvalidArgument(format!(
                "profiling records {max} launch steps: need 1 <= prompt ({}) and prompt + steps ({}) <= {max}, steps > skip ({skip})",
                prompt.len(),
                prompt.len() + steps as usize
            )));
        }
        self.reset()?;
        let greedy = SamplingParams::greedy();
        let p = self.params(
            &greedy,
            0,
            prompt.len() as u32,
            steps,
            FLAG_COUNT_INPUT,
            &[],
        );
        let (st, _) = self.launch(&p, prompt, &mut |_| ControlFlow::Continue(()))?;
        if st.generated.len() != steps as usize {
            return Err(RuntimeError::CheckFailed(format!(
                "profiled launch generated {} of {steps} tokens",
                st.generated.len()
            )));
        }
        let words = |e: &mut Self, name: &str| -> Result<Vec<u64>> {
            let raw = e.device_mut(name)?.download()?;
            Ok(bytemuck::pod_collect_to_vec::<u8, u64>(&raw))
        };
        let times = words(self, "phase_times")?;
        let waits = words(self, "phase_waits")?;
        let program = lucebox_codegen::decode::token_program(&self.cfg, &self.schedule);
        crate::profile::aggregate(&program, &times, &waits, self.abi.grid_blocks, skip)
    }

    /// Energy of one long greedy decode launch of `new_tokens` tokens after a
    /// one-token prompt (long enough for NVML's counter: aim for >= 1 s).
    /// Returns the reading and joules per token.
    pub fn measure_decode_energy(&mut self, new_tokens: u32) -> Result<(EnergyReading, f64)> {
        let meter = EnergyMeter::new(self.gpu.info())?;
        let new_tokens = new_tokens
            .min(self.abi.max_context.saturating_sub(2))
            .max(1);
        let greedy = SamplingParams::greedy();
        self.reset()?;
        let p = self.params(&greedy, 0, 1, new_tokens, FLAG_COUNT_INPUT, &[]);
        let (launched, reading) =
            meter.measure(|| self.launch(&p, &[0], &mut |_| ControlFlow::Continue(())));
        let (st, _) = launched?;
        let reading = reading?;
        let n = st.generated.len().max(1) as f64;
        Ok((reading, reading.joules / n))
    }

    fn run_request(
        &mut self,
        req: &GenerationRequest,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<GenerationOutcome> {
        if req.prompt.is_empty() {
            return Err(RuntimeError::InvalidArgument("empty prompt".into()));
        }
        let need = req.prompt.len() + req.max_tokens;
        if need > self.abi.max_context as usize {
            return Err(RuntimeError::InvalidArgument(format!(
                "prompt ({}) + max_tokens ({}) = {need} exceeds the maximum context {}",
                req.prompt.len(),
                req.max_tokens,
                self.abi.max_context
            )));
        }
        self.reset()?;
        let extra_stops: Vec<u32> = req.stop_tokens.iter().skip(MAX_EOS_IDS).copied().collect();
        let mut generated = Vec::new();
        let mut stop = StopReason::Length;
        let mut cancelled = false;
        let mut cb = |t: u32, generated: &mut Vec<u32>| -> ControlFlow<()> {
            generated.push(t);
            if on_token(t).is_break() {
                cancelled = true;
                return ControlFlow::Break(());
            }
            if extra_stops.contains(&t) {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        };
        // First launch: the prompt plus one token (its time is the prefill).
        let t0 = Instant::now();
        let first_n = u32::from(req.max_tokens > 0);
        let mut tokens = Vec::new();
        let (mut st, mut flow) = self.first_token(
            &req.prompt,
            &req.sampling,
            first_n,
            &req.stop_tokens,
            &mut |t| cb(t, &mut tokens),
        )?;
        if req.max_tokens == 0 {
            return Ok(GenerationOutcome {
                generated,
                stop,
                prefill_seconds: t0.elapsed().as_secs_f64(),
                decode_seconds: 0.0,
            });
        }
        let prefill_seconds = t0.elapsed().as_secs_f64();
        generated.append(&mut tokens);
        let t1 = Instant::now();
        while flow.is_continue() && st.stop_reason != STOP_EOS && generated.len() < req.max_tokens {
            let n =
                ((req.max_tokens - generated.len()) as u64).min(self.chunk_tokens as u64) as u32;
            let p = self.params(&req.sampling, st.next_pos, 1, n, 0, &req.stop_tokens);
            let (s, f) = self.launch(&p, &[st.last_token], &mut |t| cb(t, &mut tokens))?;
            generated.append(&mut tokens);
            st = s;
            flow = f;
        }
        if st.stop_reason == STOP_EOS
            || generated
                .last()
                .is_some_and(|t| req.stop_tokens.contains(t))
        {
            stop = StopReason::StopToken;
        }
        if cancelled {
            stop = StopReason::Cancelled;
        }
        // Tokens past a cancel or an extra stop token were made by the same
        // launch but not asked for.
        if let Some(cut) = generated.iter().position(|t| req.stop_tokens.contains(t)) {
            generated.truncate(cut + 1);
        }
        generated.truncate(req.max_tokens);
        Ok(GenerationOutcome {
            generated,
            stop,
            prefill_seconds,
            decode_seconds: t1.elapsed().as_secs_f64(),
        })
    }
}

impl Engine for GpuEngine {
    fn describe(&self) -> String {
        let prompt = if self.uses_prefill() {
            "prompts through the prefill kernels".to_string()
        } else {
            match &self.info.prefill {
                Ok(_) => "prompts token by token (prefill off)".to_string(),
                Err(e) => format!("prompts token by token (no prefill kernels: {e})"),
            }
        };
        format!(
            "gpu-megakernel ({}, {} SMs, {} blocks x {} threads, {} syncs/token; {prompt})",
            self.schedule.arch,
            self.gpu.props().sm_count,
            self.abi.grid_blocks,
            self.abi.threads_per_block,
            self.abi.sync_points_per_token
        )
    }

    fn max_context(&self) -> usize {
        self.abi.max_context as usize
    }

    fn generate(
        &mut self,
        request: &GenerationRequest,
        on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
    ) -> Result<GenerationOutcome, ModelError> {
        self.run_request(request, on_token)
            .map_err(|e| ModelError::Other(format!("GPU engine: {e}")))
    }
}

/// GPU vs CPU logits over positions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogitsComparison {
    pub positions: usize,
    /// max over positions of max|gpu - cpu| / max|cpu|.
    pub max_rel_err: f64,
    /// Fraction of positions whose argmax agrees.
    pub argmax_agreement: f64,
}

impl LogitsComparison {
    /// The acceptance rule of the GPU checks: bf16-level error, argmax
    /// agreement on at least 99% of positions.
    pub fn passes(&self) -> bool {
        self.positions > 0 && self.max_rel_err < 2e-2 && self.argmax_agreement >= 0.99
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

/// Compares logits position by position; a NaN anywhere makes the error
/// infinite.
pub fn compare_logits(gpu: &[Vec<f32>], cpu: &[Vec<f32>]) -> LogitsComparison {
    let positions = gpu.len().min(cpu.len());
    let mut max_rel_err = if gpu.len() == cpu.len() {
        0.0f64
    } else {
        f64::INFINITY
    };
    let mut agree = 0usize;
    for (g, c) in gpu.iter().zip(cpu) {
        if g.len() != c.len() {
            max_rel_err = f64::INFINITY;
            continue;
        }
        let scale = c
            .iter()
            .fold(0f64, |m, &x| m.max((x as f64).abs()))
            .max(1e-30);
        let mut err = 0f64;
        for (&a, &b) in g.iter().zip(c) {
            let d = (a as f64 - b as f64).abs();
            err = if d.is_nan() {
                f64::INFINITY
            } else {
                err.max(d)
            };
        }
        max_rel_err = max_rel_err.max(err / scale);
        agree += usize::from(argmax(g) == argmax(c));
    }
    LogitsComparison {
        positions,
        max_rel_err,
        argmax_agreement: if positions == 0 {
            0.0
        } else {
            agree as f64 / positions as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_comparison_catches_error_nan_and_argmax() {
        let cpu = vec![vec![1.0, 5.0, -2.0], vec![0.5, 0.1, 0.2]];
        let same = compare_logits(&cpu, &cpu);
        assert_eq!(same.max_rel_err, 0.0);
        assert_eq!(same.argmax_agreement, 1.0);
        assert!(same.passes());
        let mut off = cpu.clone();
        off[0][1] = 5.5; // 10% of max|cpu|
        let c = compare_logits(&off, &cpu);
        assert!((c.max_rel_err - 0.1).abs() < 1e-9, "{c:?}");
        assert!(!c.passes());
        let mut flipped = cpu.clone();
        flipped[1] = vec![0.1, 0.5, 0.2];
        assert_eq!(compare_logits(&flipped, &cpu).argmax_agreement, 0.5);
        let mut nan = cpu.clone();
        nan[1][2] = f32::NAN;
        assert!(!compare_logits(&nan, &cpu).passes());
        assert!(!compare_logits(&cpu[..1], &cpu).passes());
    }

    #[test]
    fn transposed_copy_swaps_rows_and_columns_across_tile_edges() {
        // 70 x 130: neither side a multiple of the 64-element tile.
        let (rows, cols) = (70, 130);
        let m: Vec<u32> = (0..rows * cols).map(|i| i as u32 * 7 + 3).collect();
        let t = transposed(&m, rows, cols);
        assert_eq!(t.len(), m.len());
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(t[c * rows + r], m[r * cols + c], "({r}, {c})");
            }
        }
        assert_eq!(transposed(&t, cols, rows), m);
    }

    #[test]
    fn params_bytes_match_the_abi_layout() {
        let l = lucebox_codegen::decode::abi::params_layout();
        let p = DecodeParams {
            start_pos: 7,
            seed: 0x0102_0304_0506_0708,
            temperature: 0.5,
            ..Default::default()
        };
        let b = params_bytes(&p);
        assert_eq!(b.len(), l.size);
        let at = |name: &str| {
            l.fields
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.offset)
                .expect("field")
        };
        assert_eq!(
            &b[at("start_pos")..at("start_pos") + 4],
            &7u32.to_le_bytes()
        );
        assert_eq!(
            &b[at("temperature")..at("temperature") + 4],
            &0.5f32.to_le_bytes()
        );
        assert_eq!(
            &b[at("seed")..at("seed") + 8],
            &0x0102_0304_0506_0708u64.to_le_bytes()
        );
    }
}
