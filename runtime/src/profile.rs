//! Per-phase timing of the decode megakernel, from a build with
//! `decode.profile_phases`: block 0's `%globaltimer` stamps at each step's
//! start and after every phase's grid barrier (`phase_times`), and every
//! block's barrier wait (`phase_waits`: max and sum over blocks). This module
//! only aggregates those raw words (no GPU), so it is unit-tested on
//! synthetic stamps.
//!
//! A phase's duration is release-to-release at block 0: the work of the
//! slowest block plus the barrier latency. The max wait over blocks is how
//! long the fastest block idled, so `duration - max wait` approximates the
//! fastest block's work, and the mean wait the average idle time.

use lucebox_codegen::decode::PhaseInfo;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

/// One phase kind (`GDN_IN`, `MLP_UP`, ...) aggregated over a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseKindStats {
    pub kind: String,
    /// Instances per token.
    pub count_per_token: usize,
    /// Mean over steps of the summed durations of the instances.
    pub us_per_token: f64,
    /// Share of the mean token time.
    pub percent_of_token: f64,
    /// `us_per_token / count_per_token`.
    pub mean_us: f64,
    /// Mean over instances of the max over blocks of the barrier wait.
    pub mean_max_wait_us: f64,
    /// Largest wait any block had in any instance.
    pub worst_wait_us: f64,
    /// Mean wait over blocks and instances.
    pub mean_wait_us: f64,
    /// Weights streamed per token by this kind (ABI weight slots).
    pub weight_bytes_per_token: u64,
    /// Recurrent state read + written per token (GDN state).
    pub state_bytes_per_token: u64,
    /// (weights + state) / time.
    pub gb_per_s: f64,
}

/// The whole breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseProfile {
    /// Steps with a complete record (every phase, the LM head included).
    pub steps: usize,
    /// Phases (= grid barriers) per token.
    pub phases_per_token: usize,
    /// Mean step-start to LM-head-release time.
    pub token_us: f64,
    pub tok_per_s: f64,
    /// Weights + state per token over the whole token time.
    pub gb_per_s: f64,
    /// Sum of the per-instance max waits, per token (upper bound on time
    /// some block idles at barriers).
    pub max_wait_us_per_token: f64,
    /// Per kind, in first-appearance order of the token program.
    pub kinds: Vec<PhaseKindStats>,
}

/// Aggregates raw profile words. `times` is `[steps][n + 1]` and `waits`
/// `[steps][n][2]` (max, sum) for the `n` phases of `program`; steps whose
/// stamps are incomplete (absorbing steps without LM head, unrecorded steps)
/// or not increasing are skipped; the first `skip` complete steps too
/// (warm-up).
pub fn aggregate(
    program: &[PhaseInfo],
    times: &[u64],
    waits: &[u64],
    grid_blocks: u32,
    skip: usize,
) -> Result<PhaseProfile> {
    let n = program.len();
    if n == 0 || !times.len().is_multiple_of(n + 1) || waits.len() != times.len() / (n + 1) * n * 2
    {
        return Err(RuntimeError::InvalidArgument(format!(
            "profile buffers of {} and {} words do not match {n} phases",
            times.len(),
            waits.len()
        )));
    }
    let complete: Vec<usize> = times
        .chunks_exact(n + 1)
        .enumerate()
        .filter(|(_, t)| t[0] != 0 && t.windows(2).all(|w| w[1] >= w[0]))
        .map(|(s, _)| s)
        .skip(skip)
        .collect();
    if complete.is_empty() {
        return Err(RuntimeError::CheckFailed(
            "no step has a complete phase record (was the kernel built with decode.profile_phases?)"
                .into(),
        ));
    }
    let steps = complete.len() as f64;
    let us = |ns: u64| ns as f64 * 1e-3;
    let mut kinds: Vec<String> = Vec::new();
    for p in program {
        if !kinds.contains(&p.kind) {
            kinds.push(p.kind.clone());
        }
    }
    let token_ns: u64 = complete
        .iter()
        .map(|&s| times[s * (n + 1) + n] - times[s * (n + 1)])
        .sum();
    let token_us = us(token_ns) / steps;
    let mut out = Vec::new();
    let mut all_bytes = 0u64;
    let mut max_wait_total = 0.0;
    for kind in kinds {
        let idx: Vec<usize> = (0..n).filter(|&i| program[i].kind == kind).collect();
        let (mut dur, mut max_sum, mut worst, mut wait_sum) = (0u64, 0u64, 0u64, 0u64);
        for &s in &complete {
            for &i in &idx {
                let t = s * (n + 1) + i;
                dur += times[t + 1] - times[t];
                let w = (s * n + i) * 2;
                max_sum += waits[w];
                worst = worst.max(waits[w]);
                wait_sum += waits[w + 1];
            }
        }
        let instances = steps * idx.len() as f64;
        let us_per_token = us(dur) / steps;
        let weight_bytes: u64 = idx.iter().map(|&i| program[i].weight_bytes).sum();
        let state_bytes: u64 = idx.iter().map(|&i| program[i].state_bytes).sum();
        all_bytes += weight_bytes + state_bytes;
        max_wait_total += us(max_sum) / steps;
        out.push(PhaseKindStats {
            kind,
            count_per_token: idx.len(),
            us_per_token,
            percent_of_token: if token_us > 0.0 {
                100.0 * us_per_token / token_us
            } else {
                0.0
            },
            mean_us: us_per_token / idx.len() as f64,
            mean_max_wait_us: us(max_sum) / instances,
            worst_wait_us: us(worst),
            mean_wait_us: us(wait_sum) / (instances * grid_blocks.max(1) as f64),
            weight_bytes_per_token: weight_bytes,
            state_bytes_per_token: state_bytes,
            gb_per_s: gbps(weight_bytes + state_bytes, us_per_token),
        });
    }
    Ok(PhaseProfile {
        steps: complete.len(),
        phases_per_token: n,
        token_us,
        tok_per_s: if token_us > 0.0 { 1e6 / token_us } else { 0.0 },
        gb_per_s: gbps(all_bytes, token_us),
        max_wait_us_per_token: max_wait_total,
        kinds: out,
    })
}

fn gbps(bytes: u64, us: f64) -> f64 {
    if us > 0.0 {
        bytes as f64 / (us * 1e-6) / 1e9
    } else {
        0.0
    }
}

impl PhaseProfile {
    /// A fixed-width table, one row per phase kind, then the token total.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<9} {:>5} {:>10} {:>6} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8}\n",
            "phase",
            "n/tok",
            "us/tok",
            "%tok",
            "us/inst",
            "maxwait/i",
            "meanwait/i",
            "worstwait",
            "MB/tok",
            "GB/s"
        );
        for k in &self.kinds {
            s += &format!(
                "{:<9} {:>5} {:>10.1} {:>6.1} {:>9.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.0}\n",
                k.kind,
                k.count_per_token,
                k.us_per_token,
                k.percent_of_token,
                k.mean_us,
                k.mean_max_wait_us,
                k.mean_wait_us,
                k.worst_wait_us,
                (k.weight_bytes_per_token + k.state_bytes_per_token) as f64 / 1e6,
                k.gb_per_s
            );
        }
        let mb: f64 = self
            .kinds
            .iter()
            .map(|k| (k.weight_bytes_per_token + k.state_bytes_per_token) as f64 / 1e6)
            .sum();
        s += &format!(
            "{:<9} {:>5} {:>10.1} {:>6.1} {:>9} {:>10} {:>10} {:>10} {:>10.2} {:>8.0}\n",
            "token", self.phases_per_token, self.token_us, 100.0, "", "", "", "", mb, self.gb_per_s
        );
        s += &format!(
            "{} steps; {:.1} tok/s; sum of per-barrier max waits {:.1} us/token (us = microseconds; wait = arrival to release at a grid barrier; %globaltimer granularity applies)\n",
            self.steps, self.tok_per_s, self.max_wait_us_per_token
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(kind: &str, layer: Option<usize>, bytes: u64, state: u64) -> PhaseInfo {
        PhaseInfo {
            name: format!("{layer:?}.{kind}"),
            layer,
            kind: kind.into(),
            weight_slots: Vec::new(),
            weight_bytes: bytes,
            state_bytes: state,
        }
    }

    /// Program A, B, A, LM; durations (ns) per phase given; every step starts
    /// where the previous one ended.
    fn stamps(start: u64, durs: &[&[u64]]) -> Vec<u64> {
        let mut t = start;
        let mut v = Vec::new();
        for d in durs {
            v.push(t);
            for x in *d {
                t += x;
                v.push(t);
            }
        }
        v
    }

    #[test]
    fn aggregates_kinds_over_complete_steps() {
        let prog = vec![
            phase("A", Some(0), 1000, 0),
            phase("B", Some(0), 0, 500),
            phase("A", Some(1), 1000, 0),
            phase("LM", None, 4000, 0),
        ];
        // Step 0: absorbing (no LM head stamp); steps 1, 2 complete; step 3 unrecorded.
        let mut times = stamps(
            1_000_000,
            &[
                &[10_000, 2_000, 30_000, 8_000],
                &[10_000, 4_000, 30_000, 6_000],
                &[20_000, 2_000, 20_000, 8_000],
            ],
        );
        times[4] = 0;
        times.extend([0u64; 5]);
        let mut waits = vec![0u64; 4 * 4 * 2];
        // step 1: (max, sum) per phase; step 2 likewise.
        let w1 = [(3000, 6000), (1000, 1000), (5000, 8000), (2000, 2000)];
        let w2 = [(1000, 2000), (500, 1000), (7000, 8000), (2000, 4000)];
        for (s, w) in [(1usize, w1), (2, w2)] {
            for (i, (m, sum)) in w.iter().enumerate() {
                waits[(s * 4 + i) * 2] = *m;
                waits[(s * 4 + i) * 2 + 1] = *sum;
            }
        }
        let p = aggregate(&prog, &times, &waits, 2, 0).expect("aggregate");
        assert_eq!(p.steps, 2);
        assert_eq!(p.phases_per_token, 4);
        // step 1: 50 us, step 2: 50 us.
        assert!((p.token_us - 50.0).abs() < 1e-9, "{}", p.token_us);
        assert!((p.tok_per_s - 20_000.0).abs() < 1e-6);
        let a = &p.kinds[0];
        assert_eq!((a.kind.as_str(), a.count_per_token), ("A", 2));
        // A: step 1 10+30, step 2 20+20 -> 40 us/token, 20 us/instance.
        assert!((a.us_per_token - 40.0).abs() < 1e-9);
        assert!((a.percent_of_token - 80.0).abs() < 1e-9);
        assert!((a.mean_us - 20.0).abs() < 1e-9);
        // max waits 3, 5, 1, 7 us -> mean 4, worst 7; sums 6+8+2+8 = 24 us over 4 instances x 2 blocks.
        assert!((a.mean_max_wait_us - 4.0).abs() < 1e-9);
        assert!((a.worst_wait_us - 7.0).abs() < 1e-9);
        assert!((a.mean_wait_us - 3.0).abs() < 1e-9);
        assert_eq!(a.weight_bytes_per_token, 2000);
        // 2000 B in 40 us = 0.05 GB/s.
        assert!((a.gb_per_s - 0.05).abs() < 1e-12);
        let b = &p.kinds[1];
        assert_eq!((b.kind.as_str(), b.count_per_token), ("B", 1));
        assert!((b.us_per_token - 3.0).abs() < 1e-9);
        assert_eq!(b.state_bytes_per_token, 500);
        let lm = &p.kinds[2];
        assert!((lm.us_per_token - 7.0).abs() < 1e-9);
        let total: f64 = p.kinds.iter().map(|k| k.percent_of_token).sum();
        assert!((total - 100.0).abs() < 1e-9);
        // per-token sum of max waits: (3+1+5+2 + 1+0.5+7+2) / 2
        assert!((p.max_wait_us_per_token - 10.75).abs() < 1e-9);
        assert!(p.table().contains("token"));
        // Skipping the first complete step leaves step 2 only.
        let p2 = aggregate(&prog, &times, &waits, 2, 1).expect("aggregate");
        assert_eq!(p2.steps, 1);
        assert!((p2.kinds[0].us_per_token - 40.0).abs() < 1e-9);
        assert!((p2.kinds[0].mean_max_wait_us - 4.0).abs() < 1e-9);
    }

    #[test]
    fn rejects_mismatched_or_empty_records() {
        let prog = vec![phase("A", Some(0), 0, 0), phase("LM", None, 0, 0)];
        assert!(aggregate(&prog, &[0; 5], &[0; 4], 1, 0).is_err());
        // Shapes fine but nothing recorded.
        assert!(aggregate(&prog, &[0; 6], &[0; 8], 1, 0).is_err());
        // Non-increasing stamps are not a complete step.
        assert!(aggregate(&prog, &[10, 5, 20], &[0; 4], 1, 0).is_err());
        assert!(aggregate(&prog, &[10, 15, 20], &[0; 4], 1, 0).is_ok());
    }
}
