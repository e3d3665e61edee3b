//! `lucebox check`: every GPU correctness check, as a PASS/FAIL table, for GPU
//! machines that have the driver but no Rust toolchain
//! (`scripts/gpu-check.sh` runs it). Exits non-zero on any failure, and when
//! there is no GPU at all.

use std::time::Instant;

use anyhow::Context;
use lucebox_runtime::Gpu;
use lucebox_runtime::cache::KernelCache;
use lucebox_runtime::diagnostics;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print results as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON to this file (the table still goes to stdout).
    #[arg(long, value_name = "PATH")]
    pub json_out: Option<std::path::PathBuf>,
    /// CUDA device ordinal (default: $LUCEBOX_DEVICE or 0).
    #[arg(long)]
    pub device: Option<usize>,
    /// Run only checks whose name contains this text (repeatable).
    #[arg(long = "only")]
    pub only: Vec<String>,
    /// Checkpoint (HF directory or .gguf) to check the decode megakernel on
    /// against the CPU reference (repeatable).
    #[arg(long = "model", value_name = "PATH")]
    pub models: Vec<String>,
    /// Teacher-forced positions whose logits are compared.
    #[arg(long, default_value_t = 32)]
    pub logit_positions: usize,
    /// Greedy steps that must produce identical tokens.
    #[arg(long, default_value_t = 64)]
    pub greedy_steps: usize,
    /// Longest prompt of the prefill checks (the CPU reference runs it too).
    #[arg(long, default_value_t = 130)]
    pub prefill_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub seconds: f64,
}

/// A named check: `Ok((passed, detail))`, or an error (a failure).
type CheckFn<'a> = Box<dyn FnOnce() -> anyhow::Result<(bool, String)> + 'a>;

fn run_one(name: &str, f: CheckFn<'_>) -> CheckResult {
    let t0 = Instant::now();
    let (status, detail) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok((true, d))) => (Status::Pass, d),
        Ok(Ok((false, d))) => (Status::Fail, d),
        Ok(Err(e)) => (Status::Fail, format!("{e:#}")),
        Err(_) => (Status::Fail, "panicked".to_string()),
    };
    CheckResult {
        name: name.to_string(),
        status,
        detail,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

/// The runtime's own GPU checks.
fn runtime_checks<'a>(
    gpu: &'a Gpu,
    cache: &'a KernelCache,
) -> anyhow::Result<Vec<(&'static str, CheckFn<'a>)>> {
    let schedule = gpu.schedule().context("deriving the schedule")?;
    let s1 = schedule.clone();
    let s2 = schedule.clone();
    let s3 = schedule.clone();
    let s4 = schedule.clone();
    let s5 = schedule;
    Ok(vec![
        (
            "probe kernel vs CPU",
            Box::new(move || {
                let r = diagnostics::run_probe(gpu, cache, &s1, 0xC0FFEE)?;
                Ok((
                    r.passed,
                    format!(
                        "{} of {} elements differ (bit-exact required)",
                        r.mismatches, r.elements
                    ),
                ))
            }),
        ),
        (
            "grid barrier reusable across launches without memset",
            Box::new(move || {
                let r = diagnostics::check_barrier_reuse(gpu, cache, &s2)?;
                Ok((
                    r.passed,
                    format!(
                        "{} launches x {} rounds, {} ordering errors, counter {} (expected {})",
                        r.launches, r.rounds_per_launch, r.errors, r.counter, r.expected_counter
                    ),
                ))
            }),
        ),
        (
            "cooperative launch refuses a grid that cannot be co-resident",
            Box::new(move || {
                let msg = diagnostics::check_cooperative_refusal(gpu, cache, &s3)?;
                Ok((true, msg))
            }),
        ),
        (
            "kernel cache: second start does not recompile",
            Box::new(move || {
                let t = diagnostics::measure_compile_times(
                    gpu,
                    &lucebox_runtime::kernels::barrier_source(s4.grid_blocks()),
                    &lucebox_runtime::nvrtc::CompileOptions::new(s4.arch, "barrier.cu"),
                )?;
                Ok((
                    t.warm_hit,
                    format!("cold {:.1} ms, warm {:.2} ms", t.cold_ms, t.warm_ms),
                ))
            }),
        ),
        (
            "read bandwidth sanity",
            Box::new(move || {
                let bytes = diagnostics::bandwidth_buffer_bytes(gpu)?;
                let b = diagnostics::measure_read_bandwidth(gpu, cache, &s5, bytes, 5)?;
                let mut ok = b.checksum_ok && b.gbps.median > 0.0;
                let mut detail = format!(
                    "{:.0} GB/s median over {} MiB, checksum {}",
                    b.gbps.median,
                    b.bytes >> 20,
                    if b.checksum_ok { "ok" } else { "WRONG" }
                );
                if b.theoretical_gbps > 0.0 {
                    let frac = b.gbps.median / b.theoretical_gbps;
                    // Above the datasheet means the timing is wrong (e.g. the
                    // reads were cached); far below means something throttles.
                    ok &= (0.3..=1.05).contains(&frac);
                    detail += &format!(
                        ", {:.0}% of {:.0} GB/s theoretical",
                        frac * 100.0,
                        b.theoretical_gbps
                    );
                }
                Ok((ok, detail))
            }),
        ),
    ])
}

pub fn print_table(results: &[CheckResult]) {
    let w = results.iter().map(|r| r.name.len()).max().unwrap_or(10);
    println!("{:<6} {:<w$} {:>8}  detail", "status", "check", "seconds");
    for r in results {
        let st = match r.status {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        };
        println!("{st:<6} {:<w$} {:>8.2}  {}", r.name, r.seconds, r.detail);
    }
    let failed = results.iter().filter(|r| r.status == Status::Fail).count();
    let passed = results.iter().filter(|r| r.status == Status::Pass).count();
    println!(
        "{passed} passed, {failed} failed, {} skipped",
        results.len() - passed - failed
    );
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let gpu = super::doctor::open_gpu(args.device)?;
    let cache = KernelCache::open_default()?;
    let mut results = Vec::new();
    for (name, f) in runtime_checks(&gpu, &cache)? {
        if !args.only.is_empty() && !args.only.iter().any(|o| name.contains(o.as_str())) {
            continue;
        }
        eprintln!("running: {name}");
        results.push(run_one(name, f));
    }
    for model in &args.models {
        let limits = decode_checks::Limits {
            positions: args.logit_positions,
            steps: args.greedy_steps,
            prefill_max: args.prefill_max,
        };
        for (name, f) in decode_checks::checks(&gpu, model, limits) {
            if !args.only.is_empty() && !args.only.iter().any(|o| name.contains(o.as_str())) {
                continue;
            }
            eprintln!("running: {name}");
            results.push(run_one(&name, f));
        }
    }
    let json = serde_json::to_string_pretty(&results)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{json}");
    } else {
        println!(
            "lucebox check on {} ({})",
            gpu.props().name,
            gpu.props().arch
        );
        print_table(&results);
    }
    let failed = results.iter().filter(|r| r.status == Status::Fail).count();
    if failed > 0 {
        anyhow::bail!("{failed} GPU check(s) failed");
    }
    if results.is_empty() {
        anyhow::bail!("no check matched --only {:?}", args.only);
    }
    Ok(())
}

/// Decode megakernel vs the CPU reference, per checkpoint.
mod decode_checks {
    use std::cell::RefCell;
    use std::ops::ControlFlow;
    use std::rc::Rc;
    use std::sync::Arc;

    use anyhow::Context;
    use lucebox_models::cpu_engine::CpuEngine;
    use lucebox_models::engine::{Engine, GenerationRequest};
    use lucebox_models::load::LoadedModel;
    use lucebox_models::reference::{ForwardOptions, ReferenceModel};
    use lucebox_models::sampling::SamplingParams;
    use lucebox_runtime::Gpu;
    use lucebox_runtime::cache::KernelCache;
    use lucebox_runtime::decode::{GpuEngine, compare_logits};
    use lucebox_runtime::diagnostics::SplitMix64;

    use super::CheckFn;

    /// Everything the checks of one checkpoint share, built on first use.
    struct Shared {
        loaded: LoadedModel,
        cpu: Arc<ReferenceModel>,
        gpu: GpuEngine,
        /// The prefill checks' prompt and the CPU reference's logits at
        /// every position of it (computed once).
        prefill_ref: Option<(Vec<u32>, Vec<Vec<f32>>)>,
    }

    #[derive(Debug, Clone, Copy)]
    pub struct Limits {
        /// Teacher-forced positions compared.
        pub positions: usize,
        /// Greedy steps compared.
        pub steps: usize,
        /// Longest prefill prompt.
        pub prefill_max: usize,
    }

    /// Prompt lengths of the prefill logits check: one token, the conv
    /// window edges, both sides of the 64-token GDN chunk and GEMM tile.
    fn prefill_lengths(max: usize) -> Vec<usize> {
        let mut v: Vec<usize> = [1, 2, 3, 4, 63, 64, 65, 130, 520]
            .into_iter()
            .filter(|&t| t <= max)
            .collect();
        if !v.contains(&max) && max > 0 {
            v.push(max);
        }
        v
    }

    /// The prefill prompt (`len` tokens) and the CPU logits of each position.
    fn prefill_reference(sh: &mut Shared, len: usize) -> anyhow::Result<(Vec<u32>, Vec<Vec<f32>>)> {
        if let Some((t, l)) = &sh.prefill_ref
            && t.len() >= len
        {
            return Ok((t[..len].to_vec(), l[..len].to_vec()));
        }
        let toks = tokens(sh.loaded.config.vocab_size, len, 0x9F111);
        let logits = sh.cpu.prompt_logits(&toks)?;
        sh.prefill_ref = Some((toks.clone(), logits.clone()));
        Ok((toks, logits))
    }

    fn describe(c: &lucebox_runtime::decode::LogitsComparison) -> String {
        format!(
            "max rel err {:.2e} (< 2e-2), argmax {:.1}% (>= 99%)",
            c.max_rel_err,
            100.0 * c.argmax_agreement
        )
    }

    fn build(ordinal: usize, path: &str) -> anyhow::Result<Shared> {
        let loaded = lucebox_models::load::open(path).with_context(|| format!("opening {path}"))?;
        let cpu = Arc::new(ReferenceModel::load(&*loaded.weights).context("CPU reference")?);
        let gpu_dev = Gpu::open(ordinal)?;
        let schedule = gpu_dev.schedule()?;
        let cache = KernelCache::open_default()?;
        let gpu =
            GpuEngine::new(gpu_dev, &*loaded.weights, schedule, &cache).context("GPU engine")?;
        Ok(Shared {
            loaded,
            cpu,
            gpu,
            prefill_ref: None,
        })
    }

    /// Deterministic pseudo-random token ids (fresh per checkpoint).
    fn tokens(vocab: usize, n: usize, seed: u64) -> Vec<u32> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| (rng.next_u64() % vocab as u64) as u32)
            .collect()
    }

    pub fn checks<'a>(gpu: &'a Gpu, path: &'a str, limits: Limits) -> Vec<(String, CheckFn<'a>)> {
        let Limits {
            positions,
            steps,
            prefill_max,
        } = limits;
        let ordinal = gpu.info().ordinal;
        // The checks share one loaded checkpoint and engine, built by
        // whichever runs first (a failure to build fails them all).
        let shared: Rc<RefCell<Option<anyhow::Result<Shared>>>> = Rc::new(RefCell::new(None));
        let s1 = shared.clone();
        let s2 = shared.clone();
        let s3 = shared.clone();
        let s4 = shared.clone();
        let s5 = shared.clone();
        let s6 = shared;
        vec![
            (
                format!("decode logits vs CPU reference ({path})"),
                Box::new(move || {
                    with_shared(&s1, ordinal, path, |sh| {
                        let toks = tokens(sh.loaded.config.vocab_size, positions.max(1), 0x10617);
                        let cpu = sh.cpu.prompt_logits(&toks)?;
                        let gpu = sh.gpu.teacher_forced_logits(&toks)?;
                        let c = compare_logits(&gpu, &cpu);
                        Ok((
                            c.passes(),
                            format!(
                                "{} positions: max rel err {:.2e} (< 2e-2), argmax agreement {:.1}% (>= 99%)",
                                c.positions,
                                c.max_rel_err,
                                100.0 * c.argmax_agreement
                            ),
                        ))
                    })
                }) as CheckFn<'a>,
            ),
            (
                format!("decode greedy tokens = CPU reference, {steps} steps ({path})"),
                Box::new(move || {
                    with_shared(&s2, ordinal, path, |sh| {
                        let prompt = tokens(sh.loaded.config.vocab_size, 8, 0x6EED);
                        let req = GenerationRequest {
                            prompt: prompt.clone(),
                            max_tokens: steps,
                            sampling: SamplingParams::greedy(),
                            stop_tokens: Vec::new(),
                        };
                        let mut cpu_engine = CpuEngine::new(sh.cpu.clone(), prompt.len() + steps);
                        let cpu = cpu_engine
                            .generate(&req, &mut |_| ControlFlow::Continue(()))?
                            .generated;
                        sh.gpu.set_use_prefill(false)?;
                        let gpu = sh.gpu.greedy(&prompt, steps);
                        sh.gpu.set_use_prefill(sh.gpu.info().prefill.is_ok())?;
                        greedy_verdict(sh, &prompt, &cpu, &gpu?)
                    })
                }),
            ),
            (
                format!(
                    "prefill logits vs CPU reference, T = {:?} ({path})",
                    prefill_lengths(prefill_max)
                ),
                Box::new(move || {
                    with_shared(&s3, ordinal, path, |sh| {
                        let (toks, cpu) = prefill_reference(sh, prefill_max.max(1))?;
                        let cases: Vec<(String, Vec<&[u32]>)> = prefill_lengths(prefill_max)
                            .into_iter()
                            .map(|t| (format!("T={t}"), vec![&toks[..t]]))
                            .collect();
                        let (ok, detail) = last_position_cases(sh, &cases, &cpu)?;
                        Ok((
                            ok,
                            format!(
                                "last-position logits, max rel err (< 2e-2, same argmax): {detail}"
                            ),
                        ))
                    })
                }),
            ),
            (
                format!("prefill in pieces (start > 0) vs CPU reference ({path})"),
                Box::new(move || {
                    with_shared(&s4, ordinal, path, |sh| {
                        let n = prefill_max.max(4);
                        let (toks, cpu) = prefill_reference(sh, n)?;
                        // Splits inside a conv window (1, 2), across a chunk edge, uneven.
                        let splits: Vec<Vec<usize>> =
                            vec![vec![1], vec![2], vec![n / 2], vec![3, n / 3, n - 1]];
                        let cases: Vec<(String, Vec<&[u32]>)> = splits
                            .iter()
                            .map(|cuts| {
                                let mut pieces: Vec<&[u32]> = Vec::new();
                                let mut at = 0;
                                for &c in cuts.iter().chain(std::iter::once(&n)) {
                                    if c > at {
                                        pieces.push(&toks[at..c]);
                                        at = c;
                                    }
                                }
                                let lens: Vec<usize> = pieces.iter().map(|p| p.len()).collect();
                                (format!("{lens:?}"), pieces)
                            })
                            .collect();
                        let (ok, detail) = last_position_cases(sh, &cases, &cpu)?;
                        Ok((
                            ok,
                            format!("T={n} as pieces, last-position max rel err: {detail}"),
                        ))
                    })
                }),
            ),
            (
                format!("prefill then decode logits vs CPU reference ({path})"),
                Box::new(move || {
                    with_shared(&s5, ordinal, path, |sh| {
                        let k = (prefill_max / 2).clamp(1, 67);
                        let n = k + positions.max(1);
                        let (toks, cpu) = prefill_reference(sh, n.max(prefill_max))?;
                        let gpu = sh.gpu.teacher_forced_logits_after_prefill(&toks[..n], k)?;
                        let c = compare_logits(&gpu, &cpu[k - 1..n]);
                        Ok((
                            c.passes(),
                            format!(
                                "prefill {k} tokens, then {} decode steps: {} positions, {}",
                                n - k,
                                c.positions,
                                describe(&c)
                            ),
                        ))
                    })
                }),
            ),
            (
                format!("prefill then greedy = CPU reference, {steps} steps ({path})"),
                Box::new(move || {
                    with_shared(&s6, ordinal, path, |sh| {
                        let prompt = tokens(
                            sh.loaded.config.vocab_size,
                            prefill_max.clamp(1, 100),
                            0x6EEE,
                        );
                        let (cpu, _) = sh.cpu.greedy(&prompt, steps)?;
                        sh.gpu.set_use_prefill(true)?;
                        let gpu = sh.gpu.greedy(&prompt, steps)?;
                        greedy_verdict(sh, &prompt, &cpu, &gpu)
                    })
                }),
            ),
        ]
    }

    /// Each case (a prompt as consecutive prefill pieces) against the CPU
    /// logits of its last token: whether all pass, and "label: error" per case.
    fn last_position_cases(
        sh: &mut Shared,
        cases: &[(String, Vec<&[u32]>)],
        cpu: &[Vec<f32>],
    ) -> anyhow::Result<(bool, String)> {
        let mut ok = true;
        let mut parts = Vec::new();
        for (label, pieces) in cases {
            let n: usize = pieces.iter().map(|p| p.len()).sum();
            let gpu = sh.gpu.prefill_logits(pieces)?;
            let c = compare_logits(&[gpu], &cpu[n - 1..n]);
            ok &= c.passes();
            let fail = if c.passes() { "" } else { " FAIL" };
            parts.push(format!("{label}: {:.2e}{fail}", c.max_rel_err));
        }
        Ok((ok, parts.join(", ")))
    }

    /// Same greedy tokens, or a divergence that is a bf16 tie-break: the
    /// reference itself barely prefers its token (its logit margin over the
    /// GPU's choice is within the logits tolerance, 2e-2 of the largest).
    fn greedy_verdict(
        sh: &Shared,
        prompt: &[u32],
        cpu: &[u32],
        gpu: &[u32],
    ) -> anyhow::Result<(bool, String)> {
        let first_diff = cpu.iter().zip(gpu).position(|(a, b)| a != b);
        Ok(match first_diff {
            None if cpu == gpu => (true, format!("{} identical tokens", gpu.len())),
            None => (
                false,
                format!("lengths differ: CPU {}, GPU {}", cpu.len(), gpu.len()),
            ),
            Some(i) => {
                let mut context = prompt.to_vec();
                context.extend_from_slice(&cpu[..i]);
                let out = sh.cpu.forward(
                    &mut sh.cpu.new_state(),
                    &context,
                    &ForwardOptions::default(),
                )?;
                let row = out.logits.last().context("no logits")?;
                let scale = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                let margin = row[cpu[i] as usize] - row[gpu[i] as usize];
                let rel = margin / scale.max(f32::MIN_POSITIVE);
                (
                    rel < 2e-2,
                    format!(
                        "identical for {i} steps; at step {i} CPU {} vs GPU {}: \
                         reference margin {margin:.3e} ({rel:.2e} of max |logit|, \
                         {} 2e-2: {})",
                        cpu[i],
                        gpu[i],
                        if rel < 2e-2 { "<" } else { ">=" },
                        if rel < 2e-2 {
                            "near-tie"
                        } else {
                            "real divergence"
                        }
                    ),
                )
            }
        })
    }

    fn with_shared(
        cell: &Rc<RefCell<Option<anyhow::Result<Shared>>>>,
        ordinal: usize,
        path: &str,
        f: impl FnOnce(&mut Shared) -> anyhow::Result<(bool, String)>,
    ) -> anyhow::Result<(bool, String)> {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(build(ordinal, path));
        }
        match slot.as_mut() {
            Some(Ok(sh)) => f(sh),
            Some(Err(e)) => anyhow::bail!("{e:#}"),
            None => anyhow::bail!("checkpoint not loaded"),
        }
    }
}
