//! `lucebox bench`: prefill and decode speed, energy and % of the decode
//! roofline, with the protocol of docs/benchmarking.md.
//!
//! Protocol: a seeded random prompt of exactly `pp` token ids; each repetition
//! is one greedy request with EOS ignored that prefills the prompt (timed:
//! `pp` tokens) and then runs exactly `tg` single-token decode steps (timed:
//! `tg` tokens; the first generated token comes from the prefill logits, so a
//! request makes `tg + 1` tokens). Warm-up repetitions are run first and not
//! counted. Speeds are the median, min and max over the repetitions. Energy
//! comes from separate passes so that the timed repetitions stay untouched:
//! prefill-only requests back to back for at least `--energy-seconds`, then
//! whole requests; decode energy is the difference (see [`energy_passes`]).

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, ensure};
use lucebox_models::reference::ReferenceModel;
use lucebox_models::{
    CpuEngine, Engine, GenerationRequest, LoadedModel, SamplingParams, StopReason,
};
use serde::Serialize;

use crate::backend::EngineChoice;

/// Format version of the `--json` object (bump when a field changes meaning).
pub const JSON_SCHEMA: &str = "lucebox-bench/1";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HF model directory or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Prompt tokens (prefill length).
    #[arg(long, default_value_t = 520)]
    pub pp: usize,
    /// Decode steps timed after the prefill.
    #[arg(long, default_value_t = 128)]
    pub tg: usize,
    /// Timed repetitions (median, min and max are over these).
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Untimed repetitions first.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Seed of the random prompt (SplitMix64; scripts/bench/hf_bench.py draws the same ids).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Minimum length of each energy pass in seconds; 0 skips energy.
    #[arg(long, default_value_t = 1.0)]
    pub energy_seconds: f64,
    /// Skip the read-bandwidth probe (and so the % of roofline).
    #[arg(long)]
    pub no_bandwidth: bool,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// auto: the GPU when one is usable, else the CPU reference.
    #[arg(long, value_enum, default_value_t = EngineChoice::Auto)]
    pub backend: EngineChoice,
}

/// The measurement protocol, independent of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Protocol {
    pub pp: usize,
    pub tg: usize,
    pub reps: usize,
    pub warmup: usize,
    pub seed: u64,
}

impl Protocol {
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.pp >= 1, "--pp must be at least 1");
        ensure!(self.tg >= 1, "--tg must be at least 1");
        ensure!(self.reps >= 1, "--reps must be at least 1");
        Ok(())
    }
}

/// The sampler's SplitMix64, bit-exact with `splitmix64` in scripts/bench/hf_bench.py.
pub use lucebox_models::sampling::SplitMix64;

/// `len` token ids uniform in `[0, vocab)` from `seed`.
pub fn random_prompt(len: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = SplitMix64::new(seed);
    (0..len)
        .map(|_| (rng.next_u64() % vocab.max(1) as u64) as u32)
        .collect()
}

/// Seconds of one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RepTiming {
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

fn request(prompt: &[u32], max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        prompt: prompt.to_vec(),
        max_tokens,
        sampling: SamplingParams::greedy(),
        // EOS ignored: the token count must be exact.
        stop_tokens: Vec::new(),
    }
}

/// One request of `tg + 1` generated tokens (`tg` decode steps); fails unless
/// the engine generated exactly that many.
pub fn one_rep(engine: &mut dyn Engine, prompt: &[u32], tg: usize) -> anyhow::Result<RepTiming> {
    let want = tg + 1;
    let mut seen = 0usize;
    let out = engine
        .generate(&request(prompt, want), &mut |_| {
            seen += 1;
            ControlFlow::Continue(())
        })
        .context("generation failed")?;
    ensure!(
        out.generated.len() == want && seen == want && out.stop == StopReason::Length,
        "the engine generated {} tokens ({seen} reported, stop {:?}); the protocol needs exactly {want} (1 from the prefill + {tg} decode steps)",
        out.generated.len(),
        out.stop
    );
    ensure!(
        out.prefill_seconds > 0.0 && out.decode_seconds > 0.0,
        "the engine reported a non-positive time (prefill {} s, decode {} s)",
        out.prefill_seconds,
        out.decode_seconds
    );
    Ok(RepTiming {
        prefill_seconds: out.prefill_seconds,
        decode_seconds: out.decode_seconds,
    })
}

/// Warm-up repetitions (discarded), then `reps` timed ones.
pub fn timed_reps(
    engine: &mut dyn Engine,
    proto: &Protocol,
    prompt: &[u32],
) -> anyhow::Result<Vec<RepTiming>> {
    for i in 0..proto.warmup {
        one_rep(engine, prompt, proto.tg).with_context(|| format!("warm-up run {}", i + 1))?;
    }
    (0..proto.reps)
        .map(|i| one_rep(engine, prompt, proto.tg).with_context(|| format!("timed run {}", i + 1)))
        .collect()
}

/// Median, min and max of repeated measurements (the runtime's statistics).
pub use lucebox_runtime::timing::Stats as Spread;

/// One phase (prefill or decode) over the timed repetitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseResult {
    /// Tokens timed per repetition (exactly `pp` or `tg`).
    pub tokens: usize,
    pub tok_per_s: Spread,
    /// Milliseconds per token, median over repetitions.
    pub ms_per_token: f64,
    pub seconds: Vec<f64>,
    pub energy: Option<PhaseEnergy>,
}

impl PhaseResult {
    fn new(tokens: usize, seconds: Vec<f64>) -> anyhow::Result<Self> {
        let rates: Vec<f64> = seconds.iter().map(|s| tokens as f64 / s).collect();
        let tok_per_s = Spread::of(&rates).context("no timings")?;
        let med_s = Spread::of(&seconds).context("no timings")?.median;
        Ok(Self {
            tokens,
            tok_per_s,
            ms_per_token: med_s * 1e3 / tokens as f64,
            seconds,
            energy: None,
        })
    }
}

/// Energy of a region: what an energy probe returns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EnergySample {
    pub joules: f64,
    pub seconds: f64,
}

/// Something that measures the GPU's energy over a piece of work (NVML).
pub trait EnergyProbe {
    /// e.g. `nvml total-energy counter`.
    fn method(&self) -> String;
    fn measure(&self, work: &mut dyn FnMut() -> anyhow::Result<()>)
    -> anyhow::Result<EnergySample>;
}

/// Energy per phase, from [`energy_passes`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseEnergy {
    /// Tokens of this phase over the pass.
    pub tokens: usize,
    pub joules: f64,
    pub tok_per_joule: f64,
    /// Joules over the phase's own seconds (engine-reported).
    pub mean_watts: f64,
    pub runs: usize,
    pub method: String,
}

/// Energy of prefill and decode. Pass A: prefill-only requests (1 generated
/// token, no decode step) back to back for at least `min_seconds`; pass B:
/// whole requests (`tg` decode steps) likewise. Prefill energy per request is
/// A's joules over its runs; decode energy is B's joules minus that per-request
/// prefill energy times B's runs. NVML's counter updates every few tens of
/// milliseconds, far coarser than one prefill, so per-request readings would be
/// noise; long passes and a difference are not.
pub fn energy_passes(
    engine: &mut dyn Engine,
    probe: &dyn EnergyProbe,
    prompt: &[u32],
    tg: usize,
    min_seconds: f64,
) -> anyhow::Result<(PhaseEnergy, Option<PhaseEnergy>)> {
    let pp = prompt.len();
    let mut prefill_s = 0.0;
    let mut runs_a = 0usize;
    let a = probe.measure(&mut || {
        let t0 = Instant::now();
        while runs_a < 2 || t0.elapsed().as_secs_f64() < min_seconds {
            let mut n = 0usize;
            let out = engine.generate(&request(prompt, 1), &mut |_| {
                n += 1;
                ControlFlow::Continue(())
            })?;
            ensure!(
                out.generated.len() == 1,
                "prefill-only request made {} tokens",
                out.generated.len()
            );
            prefill_s += out.prefill_seconds;
            runs_a += 1;
        }
        Ok(())
    })?;
    let mut decode_s = 0.0;
    let mut runs_b = 0usize;
    let b = probe.measure(&mut || {
        let t0 = Instant::now();
        while runs_b < 2 || t0.elapsed().as_secs_f64() < min_seconds {
            let r = one_rep(engine, prompt, tg)?;
            decode_s += r.decode_seconds;
            runs_b += 1;
        }
        Ok(())
    })?;
    let method = probe.method();
    let per_prefill = a.joules / runs_a as f64;
    let prefill = PhaseEnergy {
        tokens: pp * runs_a,
        joules: a.joules,
        tok_per_joule: if a.joules > 0.0 {
            (pp * runs_a) as f64 / a.joules
        } else {
            f64::NAN
        },
        mean_watts: a.joules / prefill_s.max(f64::MIN_POSITIVE),
        runs: runs_a,
        method: method.clone(),
    };
    let decode_j = b.joules - per_prefill * runs_b as f64;
    let decode = (decode_j > 0.0).then(|| PhaseEnergy {
        tokens: tg * runs_b,
        joules: decode_j,
        tok_per_joule: (tg * runs_b) as f64 / decode_j,
        mean_watts: decode_j / decode_s.max(f64::MIN_POSITIVE),
        runs: runs_b,
        method,
    });
    Ok((prefill, decode))
}

/// The GPU the run was on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReport {
    pub name: String,
    pub compute_capability: String,
    pub sm_count: u32,
    pub sm_clock_mhz: Option<u32>,
    pub mem_clock_mhz: Option<u32>,
    pub driver: String,
    pub schedule_preset: String,
}

/// The JSON's `compute_capability`: digits ("90"), as the HF script writes it;
/// the table prints it as `sm_90`.
fn compute_capability(arch: lucebox_schedules::Arch) -> String {
    arch.number().to_string()
}

/// Decode roofline: parameter bytes one token reads over the read bandwidth
/// measured in the same run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Roofline {
    pub bytes_per_token: u64,
    pub read_bandwidth_gbps: f64,
    pub roofline_tok_per_s: f64,
    /// Median decode tok/s over the roofline, in percent.
    pub percent: f64,
}

impl Roofline {
    pub fn new(bytes_per_token: u64, read_bandwidth_gbps: f64, decode_tok_per_s: f64) -> Self {
        let roof = read_bandwidth_gbps * 1e9 / bytes_per_token.max(1) as f64;
        Self {
            bytes_per_token,
            read_bandwidth_gbps,
            roofline_tok_per_s: roof,
            percent: 100.0 * decode_tok_per_s / roof,
        }
    }
}

/// What the backend knows beyond the [`Engine`] trait.
pub struct BackendExtras {
    pub device: Option<DeviceReport>,
    pub energy: Option<Box<dyn EnergyProbe>>,
    /// Why there is no energy figure, when there is none.
    pub energy_note: Option<String>,
    /// Median GB/s of the runtime's read-bandwidth probe (the one `lucebox
    /// doctor` runs), measured in this run before the engine was built;
    /// `Err` says why it failed, `None` that it was not asked for.
    pub read_bandwidth_gbps: Option<Result<f64, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelReport {
    pub path: String,
    pub name: String,
    pub parameters: u64,
    /// Parameter bytes one decode step reads: a tied embedding counted once
    /// (as the LM head), an untied one as one row.
    pub bytes_per_token: u64,
    /// What `bytes_per_token` counts: the checkpoint's stored tensors, or the
    /// weights the GPU engine uploaded (its own dtypes).
    pub bytes_basis: String,
    pub vocab_size: usize,
}

/// The whole result; `--json` prints exactly this.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub schema: &'static str,
    pub system: String,
    pub engine: String,
    pub backend: String,
    pub lucebox_version: &'static str,
    pub unix_time: u64,
    pub command: Vec<String>,
    pub model: ModelReport,
    pub protocol: Protocol,
    pub prefill: PhaseResult,
    pub decode: PhaseResult,
    pub device: Option<DeviceReport>,
    pub roofline: Option<Roofline>,
    pub notes: Vec<String>,
}

/// Runs the protocol on `engine` (timed reps, then energy, then bandwidth).
pub fn run_protocol(
    engine: &mut dyn Engine,
    mut extras: BackendExtras,
    model: ModelReport,
    proto: Protocol,
    energy_seconds: f64,
    backend: &str,
) -> anyhow::Result<BenchReport> {
    proto.validate()?;
    let needed = proto.pp + proto.tg + 1;
    ensure!(
        needed <= engine.max_context(),
        "pp + tg + 1 = {needed} tokens exceed the engine's context of {}",
        engine.max_context()
    );
    let prompt = random_prompt(proto.pp, model.vocab_size, proto.seed);
    let reps = timed_reps(engine, &proto, &prompt)?;
    let mut prefill = PhaseResult::new(proto.pp, reps.iter().map(|r| r.prefill_seconds).collect())?;
    let mut decode = PhaseResult::new(proto.tg, reps.iter().map(|r| r.decode_seconds).collect())?;
    let mut notes = Vec::new();
    match (&extras.energy, energy_seconds > 0.0) {
        (Some(probe), true) => {
            match energy_passes(engine, probe.as_ref(), &prompt, proto.tg, energy_seconds) {
                Ok((p, d)) => {
                    prefill.energy = Some(p);
                    if d.is_none() {
                        notes.push("decode energy not positive after subtracting prefill energy (counter too coarse?); omitted".into());
                    }
                    decode.energy = d;
                }
                Err(e) => notes.push(format!("energy not measured: {e:#}")),
            }
        }
        (Some(_), false) => notes.push("energy skipped (--energy-seconds 0)".into()),
        (None, _) => notes.push(format!(
            "energy not measured: {}",
            extras
                .energy_note
                .clone()
                .unwrap_or_else(|| "no NVML on this backend".into())
        )),
    }
    let roofline = match extras.read_bandwidth_gbps.take() {
        Some(Ok(gbps)) => Some(Roofline::new(
            model.bytes_per_token,
            gbps,
            decode.tok_per_s.median,
        )),
        Some(Err(e)) => {
            notes.push(format!("read bandwidth not measured: {e}"));
            None
        }
        None => None,
    };
    Ok(BenchReport {
        schema: JSON_SCHEMA,
        system: "lucebox".into(),
        engine: engine.describe(),
        backend: backend.into(),
        lucebox_version: env!("CARGO_PKG_VERSION"),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        command: std::env::args().collect(),
        model,
        protocol: proto,
        prefill,
        decode,
        device: extras.device,
        roofline,
        notes,
    })
}

fn fmt_rate(s: &Spread) -> String {
    format!("{:.1} [{:.1}–{:.1}]", s.median, s.min, s.max)
}

fn fmt_energy(e: &Option<PhaseEnergy>) -> String {
    match e {
        Some(e) => format!(
            "{:.2} tok/J  ({:.1} J, {:.0} W)",
            e.tok_per_joule, e.joules, e.mean_watts
        ),
        None => "–".into(),
    }
}

/// The human-readable table.
pub fn render_table(r: &BenchReport) -> String {
    let mut s = String::new();
    let p = &r.protocol;
    s.push_str(&format!(
        "lucebox bench  {}  ({})\n",
        r.model.path, r.engine
    ));
    if let Some(d) = &r.device {
        let clk = |c: Option<u32>| c.map_or("?".to_string(), |c| format!("{c} MHz"));
        s.push_str(&format!(
            "device  {} (sm_{}, {} SMs, SM clock {}, memory clock {}), driver {}, schedule {}\n",
            d.name,
            d.compute_capability,
            d.sm_count,
            clk(d.sm_clock_mhz),
            clk(d.mem_clock_mhz),
            d.driver,
            d.schedule_preset
        ));
    }
    s.push_str(&format!(
        "protocol  pp{} then {} greedy decode steps (EOS ignored), {} timed reps after {} warm-up, seed {}\n\n",
        p.pp, p.tg, p.reps, p.warmup, p.seed
    ));
    s.push_str(&format!(
        "{:<10} {:>8} {:>32} {:>10}  {}\n",
        "phase", "tokens", "tok/s median [min–max]", "ms/token", "energy"
    ));
    for (name, ph) in [
        (format!("pp{}", p.pp), &r.prefill),
        (format!("tg{}", p.tg), &r.decode),
    ] {
        s.push_str(&format!(
            "{:<10} {:>8} {:>32} {:>10.4}  {}\n",
            name,
            ph.tokens,
            fmt_rate(&ph.tok_per_s),
            ph.ms_per_token,
            fmt_energy(&ph.energy)
        ));
    }
    if let Some(rf) = &r.roofline {
        s.push_str(&format!(
            "\ndecode roofline  {:.3} GB/token / {:.0} GB/s measured = {:.0} tok/s; decode reaches {:.1}%\n",
            rf.bytes_per_token as f64 / 1e9,
            rf.read_bandwidth_gbps,
            rf.roofline_tok_per_s,
            rf.percent
        ));
    }
    for n in &r.notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let proto = Protocol {
        pp: args.pp,
        tg: args.tg,
        reps: args.reps,
        warmup: args.warmup,
        seed: args.seed,
    };
    proto.validate()?;
    ensure!(
        args.energy_seconds.is_finite() && args.energy_seconds >= 0.0,
        "--energy-seconds must be a non-negative number"
    );
    let loaded = lucebox_models::load::open(&args.model)
        .with_context(|| format!("opening model `{}`", args.model))?;
    let mut model = model_report(&args.model, &loaded)?;
    let needed = proto.pp + proto.tg + 1;
    let (mut engine, extras, backend) = match args.backend {
        EngineChoice::Cpu => cpu_backend(&loaded, needed)?,
        EngineChoice::Gpu => gpu::backend(&loaded, &mut model, !args.no_bandwidth)?,
        EngineChoice::Auto => match gpu::backend(&loaded, &mut model, !args.no_bandwidth) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("note: GPU backend unavailable ({e:#}); benchmarking the CPU reference");
                cpu_backend(&loaded, needed)?
            }
        },
    };
    let report = run_protocol(
        engine.as_mut(),
        extras,
        model,
        proto,
        args.energy_seconds,
        backend,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    Ok(())
}

type Opened = (Box<dyn Engine>, BackendExtras, &'static str);

/// Parameter bytes a decode step reads, from the checkpoint's stored tensors.
fn model_report(path: &str, loaded: &LoadedModel) -> anyhow::Result<ModelReport> {
    let cfg = &loaded.config;
    let mut bytes = 0u64;
    for (name, _) in lucebox_models::expected_tensors(cfg) {
        let t = loaded
            .weights
            .tensor(&name)
            .with_context(|| format!("reading tensor `{name}`"))?;
        let n = t.bytes().len() as u64;
        bytes += if name == "embed_tokens.weight" && !cfg.tie_word_embeddings {
            // Untied: the lookup reads one row; the LM head is counted itself.
            n / cfg.vocab_size.max(1) as u64
        } else {
            n
        };
    }
    Ok(ModelReport {
        path: path.to_string(),
        name: cfg.name.clone(),
        parameters: cfg.parameter_count(),
        bytes_per_token: bytes,
        bytes_basis: "checkpoint tensors as stored".into(),
        vocab_size: cfg.vocab_size,
    })
}

fn cpu_backend(loaded: &LoadedModel, needed: usize) -> anyhow::Result<Opened> {
    let model =
        ReferenceModel::load(loaded.weights.as_ref()).context("loading the CPU reference")?;
    let engine = CpuEngine::new(Arc::new(model), needed.max(1));
    Ok((
        Box::new(engine),
        BackendExtras {
            device: None,
            energy: None,
            energy_note: Some("CPU backend (NVML measures GPUs only)".into()),
            read_bandwidth_gbps: None,
        },
        "cpu",
    ))
}

mod gpu {
    use lucebox_runtime::Gpu;
    use lucebox_runtime::cache::KernelCache;
    use lucebox_runtime::decode::GpuEngine;
    use lucebox_runtime::diagnostics;
    use lucebox_runtime::energy::EnergyMeter;

    use super::*;

    struct NvmlProbe(EnergyMeter);

    impl EnergyProbe for NvmlProbe {
        fn method(&self) -> String {
            format!("nvml {:?}", self.0.method())
        }
        fn measure(
            &self,
            work: &mut dyn FnMut() -> anyhow::Result<()>,
        ) -> anyhow::Result<EnergySample> {
            let (done, reading) = self.0.measure(work);
            done?;
            let r = reading?;
            Ok(EnergySample {
                joules: r.joules,
                seconds: r.seconds,
            })
        }
    }

    fn nvml_driver() -> Option<String> {
        let nvml = std::panic::catch_unwind(nvml_wrapper::Nvml::init)
            .ok()?
            .ok()?;
        nvml.sys_driver_version().ok()
    }

    /// The GPU engine, the device facts, NVML, and the read bandwidth measured
    /// now (before the engine's weights take the memory).
    pub fn backend(
        loaded: &LoadedModel,
        model: &mut ModelReport,
        bandwidth: bool,
    ) -> anyhow::Result<Opened> {
        let gpu = Gpu::open_default().context("opening the GPU")?;
        let schedule = gpu.schedule().context("deriving the schedule")?;
        let cache = KernelCache::open_default().context("opening the kernel cache")?;
        let info = gpu.info().clone();
        let read_bandwidth_gbps = bandwidth.then(|| {
            diagnostics::bandwidth_buffer_bytes(&gpu)
                .and_then(|bytes| {
                    diagnostics::measure_read_bandwidth(&gpu, &cache, &schedule, bytes, 5)
                })
                .map_err(|e| e.to_string())
                .and_then(|b| {
                    if b.checksum_ok {
                        Ok(b.gbps.median)
                    } else {
                        Err("the bandwidth kernel's checksum is wrong".into())
                    }
                })
        });
        let (energy, energy_note): (Option<Box<dyn EnergyProbe>>, _) = match EnergyMeter::new(&info)
        {
            Ok(m) => (Some(Box::new(NvmlProbe(m))), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let device = DeviceReport {
            name: info.props.name.clone(),
            compute_capability: compute_capability(info.props.arch),
            sm_count: info.props.sm_count,
            sm_clock_mhz: (info.props.sm_clock_khz > 0).then_some(info.props.sm_clock_khz / 1000),
            mem_clock_mhz: (info.props.mem_clock_khz > 0)
                .then_some(info.props.mem_clock_khz / 1000),
            driver: format!(
                "{} (CUDA {}.{})",
                nvml_driver().unwrap_or_else(|| "?".into()),
                info.driver_version.0,
                info.driver_version.1
            ),
            schedule_preset: schedule.preset.clone(),
        };
        let engine = GpuEngine::new(gpu, loaded.weights.as_ref(), schedule, &cache)
            .context("building the GPU engine")?;
        // What the engine itself reads per token: its uploaded weights (its
        // own dtypes), minus all but one row of an untied embedding.
        let cfg = &loaded.config;
        let mut bytes = engine.info().weight_bytes;
        if !cfg.tie_word_embeddings {
            let row = 2 * cfg.hidden_size as u64; // bf16 on the device
            bytes = bytes.saturating_sub(row * cfg.vocab_size as u64 - row);
        }
        model.bytes_per_token = bytes;
        model.bytes_basis = "weights uploaded by the GPU engine".into();
        Ok((
            Box::new(engine),
            BackendExtras {
                device: Some(device),
                energy,
                energy_note,
                read_bandwidth_gbps,
            },
            "gpu",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use lucebox_models::{GenerationOutcome, ModelError};

    use super::*;

    /// An engine whose prefill takes `pp * 1 ms` and each decode step 10 ms
    /// (reported, not slept), greedy tokens `prompt[0] + i`.
    struct FakeEngine {
        calls: usize,
        short_by: usize,
    }

    impl Engine for FakeEngine {
        fn describe(&self) -> String {
            "fake".into()
        }
        fn max_context(&self) -> usize {
            4096
        }
        fn generate(
            &mut self,
            req: &GenerationRequest,
            on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
        ) -> Result<GenerationOutcome, ModelError> {
            assert!(req.stop_tokens.is_empty(), "bench must ignore EOS");
            assert!(req.sampling.is_greedy());
            self.calls += 1;
            let n = req.max_tokens.saturating_sub(self.short_by);
            let generated: Vec<u32> = (0..n as u32).map(|i| req.prompt[0] + i).collect();
            for &t in &generated {
                let _ = on_token(t);
            }
            // Slower first call: warm-up must not be counted.
            let slow = if self.calls == 1 { 3.0 } else { 1.0 };
            Ok(GenerationOutcome {
                generated,
                stop: StopReason::Length,
                prefill_seconds: slow * req.prompt.len() as f64 * 1e-3,
                decode_seconds: (n.saturating_sub(1)) as f64 * 10e-3 + 1e-9,
            })
        }
    }

    struct FakeProbe {
        /// Joules per measure call, in order.
        joules: Vec<f64>,
        next: Cell<usize>,
    }

    impl EnergyProbe for FakeProbe {
        fn method(&self) -> String {
            "fake".into()
        }
        fn measure(
            &self,
            work: &mut dyn FnMut() -> anyhow::Result<()>,
        ) -> anyhow::Result<EnergySample> {
            work()?;
            let i = self.next.get();
            self.next.set(i + 1);
            Ok(EnergySample {
                joules: self.joules[i],
                seconds: 1.0,
            })
        }
    }

    fn model_report() -> ModelReport {
        ModelReport {
            path: "x".into(),
            name: "fake".into(),
            parameters: 1,
            bytes_per_token: 1_500_000_000,
            bytes_basis: "test".into(),
            vocab_size: 1000,
        }
    }

    #[test]
    fn splitmix_matches_reference_values() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        // The same ids as scripts/bench/hf_bench.py's random_prompt(6, 248320, 7).
        assert_eq!(
            random_prompt(6, 248_320, 7),
            [155_607, 137_244, 126_466, 62_923, 246_234, 89_105]
        );
        let p = random_prompt(520, 248_320, 7);
        assert_eq!(p.len(), 520);
        assert!(p.iter().all(|&t| t < 248_320));
        assert_eq!(p, random_prompt(520, 248_320, 7));
        assert_ne!(p, random_prompt(520, 248_320, 8));
    }

    #[test]
    fn spread_median_min_max() {
        let s = Spread::of(&[5.0, 1.0, 3.0]).expect("spread");
        assert_eq!((s.median, s.min, s.max, s.runs), (3.0, 1.0, 5.0, 3));
        assert_eq!(
            Spread::of(&[4.0, 1.0, 3.0, 2.0]).expect("spread").median,
            2.5
        );
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[1.0, f64::NAN]).is_none());
    }

    /// `lucebox bench` at pp8 tg4 on the fake engine; returns the report and the engine's calls.
    fn bench_fake(extras: BackendExtras, reps: usize, warmup: usize) -> (BenchReport, usize) {
        let mut e = FakeEngine {
            calls: 0,
            short_by: 0,
        };
        let proto = Protocol {
            pp: 8,
            tg: 4,
            reps,
            warmup,
            seed: 1,
        };
        let r = run_protocol(&mut e, extras, model_report(), proto, 1.0, "fake").expect("bench");
        (r, e.calls)
    }

    #[test]
    fn protocol_counts_tokens_exactly_and_drops_warmup() {
        let extras = BackendExtras {
            device: None,
            energy: None,
            energy_note: Some("cpu backend".into()),
            read_bandwidth_gbps: Some(Ok(3000.0)),
        };
        let (r, calls) = bench_fake(extras, 3, 1);
        assert_eq!(calls, 4, "1 warm-up + 3 timed");
        assert_eq!(r.prefill.tokens, 8);
        assert_eq!(r.decode.tokens, 4);
        assert_eq!(r.prefill.seconds.len(), 3);
        // 8 tokens in 8 ms = 1000 tok/s; the 3x slower warm-up is not in the spread.
        assert!((r.prefill.tok_per_s.median - 1000.0).abs() < 1e-6);
        assert!((r.prefill.tok_per_s.min - 1000.0).abs() < 1e-6);
        // 4 decode steps at 10 ms = 100 tok/s.
        assert!((r.decode.tok_per_s.median - 100.0).abs() < 1e-3);
        assert!((r.decode.ms_per_token - 10.0).abs() < 1e-3);
        let rf = r.roofline.as_ref().expect("roofline");
        assert!((rf.roofline_tok_per_s - 2000.0).abs() < 1e-6);
        assert!((rf.percent - 5.0).abs() < 1e-3);
        assert!(r.notes.iter().any(|n| n.contains("cpu backend")));
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["schema"], JSON_SCHEMA);
        assert_eq!(json["decode"]["tokens"], 4);
        let table = render_table(&r);
        assert!(table.contains("pp8") && table.contains("tg4"), "{table}");
    }

    #[test]
    fn table_names_the_device_once_as_sm_digits() {
        let extras = BackendExtras {
            device: Some(DeviceReport {
                name: "NVIDIA H100 80GB HBM3".into(),
                compute_capability: compute_capability(lucebox_schedules::Arch::new(9, 0)),
                sm_count: 132,
                sm_clock_mhz: Some(1980),
                mem_clock_mhz: None,
                driver: "580.159.04 (CUDA 13.0)".into(),
                schedule_preset: "derived".into(),
            }),
            energy: None,
            energy_note: None,
            read_bandwidth_gbps: None,
        };
        let table = render_table(&bench_fake(extras, 1, 0).0);
        assert!(
            table.contains("(sm_90, 132 SMs, SM clock 1980 MHz, memory clock ?)"),
            "{table}"
        );
    }

    #[test]
    fn short_generation_is_an_error() {
        let mut e = FakeEngine {
            calls: 0,
            short_by: 1,
        };
        let err = one_rep(&mut e, &[1, 2, 3], 4).expect_err("short");
        assert!(format!("{err:#}").contains("exactly 5"), "{err:#}");
    }

    #[test]
    fn energy_passes_split_prefill_and_decode() {
        let mut e = FakeEngine {
            calls: 0,
            short_by: 0,
        };
        // Pass A: 2 prefill-only runs, 10 J; pass B: 2 whole runs, 30 J.
        let probe = FakeProbe {
            joules: vec![10.0, 30.0],
            next: Cell::new(0),
        };
        let (p, d) = energy_passes(&mut e, &probe, &[1; 8], 4, 0.0).expect("energy");
        assert_eq!((p.runs, p.tokens), (2, 16));
        assert!((p.tok_per_joule - 1.6).abs() < 1e-9);
        let d = d.expect("decode energy");
        assert_eq!((d.runs, d.tokens), (2, 8));
        // 30 J - 2 * 5 J of prefill = 20 J for 8 decode tokens.
        assert!((d.joules - 20.0).abs() < 1e-9);
        assert!((d.tok_per_joule - 0.4).abs() < 1e-9);
        // 20 J over 2 * 40 ms of decode.
        assert!((d.mean_watts - 20.0 / 0.08).abs() < 1e-3);
        // A counter too coarse to see decode: no decode figure, not a negative one.
        let probe = FakeProbe {
            joules: vec![10.0, 9.0],
            next: Cell::new(0),
        };
        let (_, d) = energy_passes(&mut e, &probe, &[1; 8], 4, 0.0).expect("energy");
        assert!(d.is_none());
    }
}
