//! Sampling parameters shared by every backend, and the CPU sampler (the
//! reference that the GPU sampler is checked against).

use serde::{Deserialize, Serialize};

/// How the next token is chosen from logits. `temperature == 0` is greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 1.0 disables the repetition penalty (HF/llama.cpp semantics: positive
    /// logits of seen tokens divided by it, negative ones multiplied).
    pub repetition_penalty: f32,
    /// OpenAI semantics: subtracted once from a seen token's logit.
    pub presence_penalty: f32,
    /// OpenAI semantics: subtracted per occurrence.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// Index of the largest logit (lowest index on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

/// SplitMix64: a tiny, fully specified generator so that the GPU sampler
/// can reproduce the CPU sampler's draws bit for bit from the same seed
/// (`rand`'s `StdRng` promises no stability across versions).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1) with 24 random bits (test inputs).
    pub fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The CPU sampler: the reference for the GPU sampler.
///
/// Order of operations (HF / vLLM):
/// 1. repetition penalty over prompt **and** generated tokens (HF: a seen
///    token's logit is divided by the penalty when positive, multiplied when
///    negative);
/// 2. presence / frequency penalties over **generated** tokens only (OpenAI /
///    vLLM: `logit -= presence·[count > 0] + frequency·count`);
/// 3. greedy (`temperature == 0`): argmax, lowest index on ties;
/// 4. `logits / temperature`;
/// 5. top-k: keep tokens whose logit is ≥ the k-th largest (ties kept, as HF);
/// 6. softmax (f64);
/// 7. top-p: keep the smallest prefix of tokens sorted by probability
///    (descending, lower id first on ties) whose mass reaches `top_p`; the
///    token that crosses the threshold is kept;
/// 8. draw `u = next_f64() · (kept mass)` and walk the kept tokens in
///    ascending id order, returning the first whose cumulative mass exceeds u.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
    /// Prompt and generated tokens (repetition penalty).
    seen: std::collections::HashSet<u32>,
    /// Occurrences among generated tokens (presence / frequency penalties).
    generated_counts: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        Self {
            rng: SplitMix64::new(params.seed),
            params,
            seen: Default::default(),
            generated_counts: Default::default(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Record the prompt (counts for the repetition penalty only).
    pub fn observe_prompt(&mut self, prompt: &[u32]) {
        self.seen.extend(prompt.iter().copied());
    }

    /// Record a generated token.
    pub fn accept(&mut self, token: u32) {
        self.seen.insert(token);
        *self.generated_counts.entry(token).or_insert(0) += 1;
    }

    /// Logits after the repetition / presence / frequency penalties.
    pub fn penalized(&self, logits: &[f32]) -> Vec<f32> {
        let p = &self.params;
        let mut out = logits.to_vec();
        if p.repetition_penalty != 1.0 {
            for &t in &self.seen {
                if let Some(l) = out.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / p.repetition_penalty
                    } else {
                        *l * p.repetition_penalty
                    };
                }
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&t, &c) in &self.generated_counts {
                if let Some(l) = out.get_mut(t as usize) {
                    *l -= p.presence_penalty + p.frequency_penalty * c as f32;
                }
            }
        }
        out
    }

    /// The distribution sampled from (after every filter), as
    /// `(token, probability)` in ascending token order, probabilities
    /// renormalised to sum to 1. Greedy gives the argmax with probability 1.
    pub fn distribution(&self, logits: &[f32]) -> Vec<(u32, f64)> {
        let p = &self.params;
        let logits = self.penalized(logits);
        if p.is_greedy() {
            return vec![(argmax(&logits), 1.0)];
        }
        let scaled: Vec<f64> = logits
            .iter()
            .map(|l| *l as f64 / p.temperature as f64)
            .collect();
        let mut keep: Vec<bool> = scaled.iter().map(|l| !l.is_nan()).collect();
        if p.top_k > 0 && p.top_k < scaled.len() {
            let mut sorted: Vec<f64> = scaled.iter().copied().filter(|l| !l.is_nan()).collect();
            sorted.sort_by(|a, b| b.total_cmp(a));
            if let Some(&kth) = sorted.get(p.top_k - 1) {
                for (k, l) in keep.iter_mut().zip(&scaled) {
                    *k = *k && *l >= kth;
                }
            }
        }
        let max = scaled
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(l, _)| *l)
            .fold(f64::NEG_INFINITY, f64::max);
        let mut probs: Vec<(u32, f64)> = scaled
            .iter()
            .zip(&keep)
            .enumerate()
            .filter(|(_, (_, k))| **k)
            .map(|(i, (l, _))| (i as u32, (l - max).exp()))
            .collect();
        let total: f64 = probs.iter().map(|x| x.1).sum();
        for x in &mut probs {
            x.1 /= total;
        }
        if p.top_p < 1.0 {
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].1.total_cmp(&probs[a].1).then(a.cmp(&b)));
            let mut cum = 0.0;
            let mut kept = vec![false; probs.len()];
            for &i in &order {
                kept[i] = true;
                cum += probs[i].1;
                if cum >= p.top_p as f64 {
                    break;
                }
            }
            probs = probs
                .into_iter()
                .zip(kept)
                .filter(|(_, k)| *k)
                .map(|(x, _)| x)
                .collect();
            let total: f64 = probs.iter().map(|x| x.1).sum();
            for x in &mut probs {
                x.1 /= total;
            }
        }
        probs
    }

    /// Choose the next token (does not record it: call [`accept`](Self::accept)).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let dist = self.distribution(logits);
        if self.params.is_greedy() || dist.len() == 1 {
            return dist.first().map_or(0, |x| x.0);
        }
        let u = self.rng.next_f64() * dist.iter().map(|x| x.1).sum::<f64>();
        let mut cum = 0.0;
        for &(t, p) in &dist {
            cum += p;
            if u < cum {
                return t;
            }
        }
        dist.last().map_or(0, |x| x.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            ..SamplingParams::greedy()
        }
    }

    fn close(a: &[(u32, f64)], b: &[(u32, f64)]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.0, y.0, "{a:?} vs {b:?}");
            // Logits are f32 logarithms: ~1e-7 relative rounding.
            assert!((x.1 - y.1).abs() < 1e-6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn greedy_is_argmax_lowest_index_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.0, 2.0, 5.0]), 2);
    }

    #[test]
    fn temperature_softmax_matches_hand_computation() {
        // logits ln(1), ln(2), ln(3), ln(4) at T=1: probs 0.1, 0.2, 0.3, 0.4.
        let l: Vec<f32> = [1f32, 2., 3., 4.].iter().map(|x| x.ln()).collect();
        let s = Sampler::new(params());
        close(
            &s.distribution(&l),
            &[(0, 0.1), (1, 0.2), (2, 0.3), (3, 0.4)],
        );
        // T=0.5 squares the weights: 1,4,9,16 over 30.
        let s = Sampler::new(SamplingParams {
            temperature: 0.5,
            ..params()
        });
        close(
            &s.distribution(&l),
            &[(0, 1. / 30.), (1, 4. / 30.), (2, 9. / 30.), (3, 16. / 30.)],
        );
    }

    #[test]
    fn top_k_and_top_p_filter_then_renormalise() {
        let l: Vec<f32> = [1f32, 2., 3., 4.].iter().map(|x| x.ln()).collect();
        let s = Sampler::new(SamplingParams {
            top_k: 2,
            ..params()
        });
        close(&s.distribution(&l), &[(2, 3. / 7.), (3, 4. / 7.)]);
        // top_p 0.5: 0.4 < 0.5, add 0.3 -> 0.7 >= 0.5: keep {2, 3}.
        let s = Sampler::new(SamplingParams {
            top_p: 0.5,
            ..params()
        });
        close(&s.distribution(&l), &[(2, 3. / 7.), (3, 4. / 7.)]);
        // top_p 0.39: the top token (0.4) alone reaches it.
        let s = Sampler::new(SamplingParams {
            top_p: 0.39,
            ..params()
        });
        close(&s.distribution(&l), &[(3, 1.0)]);
        // top-k keeps ties at the k-th value (HF).
        let s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params()
        });
        close(&s.distribution(&[0.0, 1.0, 1.0]), &[(1, 0.5), (2, 0.5)]);
    }

    #[test]
    fn penalties_follow_hf_and_openai_semantics() {
        let mut s = Sampler::new(SamplingParams {
            repetition_penalty: 2.0,
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            ..params()
        });
        s.observe_prompt(&[0, 1]);
        s.accept(2);
        s.accept(2);
        let out = s.penalized(&[4.0, -4.0, 3.0, 1.0]);
        // token 0: prompt only: 4 / 2 = 2; token 1: -4 * 2 = -8;
        // token 2: generated twice: 3 / 2 - 0.5 - 0.25 * 2 = 0.5; token 3 untouched.
        assert_eq!(out, vec![2.0, -8.0, 0.5, 1.0]);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_the_distribution() {
        let l: Vec<f32> = [1f32, 2., 3., 4.].iter().map(|x| x.ln()).collect();
        let p = SamplingParams {
            seed: 42,
            ..params()
        };
        let draw = |n: usize| {
            let mut s = Sampler::new(p.clone());
            (0..n).map(|_| s.sample(&l)).collect::<Vec<_>>()
        };
        assert_eq!(draw(50), draw(50));
        let many = draw(20_000);
        for t in 0..4u32 {
            let freq = many.iter().filter(|x| **x == t).count() as f64 / many.len() as f64;
            let want = (t + 1) as f64 / 10.0;
            assert!((freq - want).abs() < 0.015, "token {t}: {freq} vs {want}");
        }
        // SplitMix64 reference values (seed 0), so other implementations can check theirs.
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
