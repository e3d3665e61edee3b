//! The gated delta rule for one value head (spec §2.3 step 7 and §3), in two
//! forms that must agree: the token-by-token recurrence (decode) and the
//! chunked WY form (prefill, chunk 64). Both take the already prepared
//! inputs: `q` L2-normalised and scaled by `dk^-½`, `k` L2-normalised,
//! `beta = sigmoid(b)`, `g = -exp(A_log)·softplus(a + dt_bias)` (log-decay).
//!
//! State `s` is `[dk][dv]` row-major (HF layout: key index, then value index),
//! stored in f32 between calls (as the GPU keeps it).
//!
//! The arithmetic inside a call is f64 (inputs, outputs and the stored state
//! are f32): the GDN output is often small next to the state it is read from
//! (cancellation) and the gated RMSNorm after it rescales it to unit size, so
//! the oracle should add no rounding of its own there. The two forms then
//! agree to f32 output rounding (tested below at 1e-6 relative).

/// Chunk length of the chunked form (HF, FLA, llama.cpp).
pub const CHUNK: usize = 64;

/// Inputs of one value head over T tokens (`q`, `k`: T×dk, `v`: T×dv).
#[derive(Debug, Clone)]
pub struct HeadInputs<'a> {
    pub q: &'a [Vec<f32>],
    pub k: &'a [Vec<f32>],
    pub v: &'a [Vec<f32>],
    pub beta: &'a [f32],
    pub g: &'a [f32],
}

/// Token-by-token recurrence; returns the T outputs (each dv) and updates `s`.
///
/// ```text
/// S ← exp(g_t)·S;  u = β_t (v_t − Sᵀk_t);  S ← S + k_t uᵀ;  o_t = Sᵀ q_t
/// ```
pub fn recurrent(inp: &HeadInputs<'_>, s: &mut [f32], dk: usize, dv: usize) -> Vec<Vec<f32>> {
    let t_len = inp.q.len();
    let mut st: Vec<f64> = s.iter().map(|x| *x as f64).collect();
    let mut out = Vec::with_capacity(t_len);
    for t in 0..t_len {
        let decay = (inp.g[t] as f64).exp();
        for x in st.iter_mut() {
            *x *= decay;
        }
        let k = widen(&inp.k[t]);
        let beta = inp.beta[t] as f64;
        // u = β (v − Sᵀ k)
        let mut u = vec![0f64; dv];
        for (j, uj) in u.iter_mut().enumerate() {
            let mut acc = 0f64;
            for i in 0..dk {
                acc += st[i * dv + j] * k[i];
            }
            *uj = beta * (inp.v[t][j] as f64 - acc);
        }
        for i in 0..dk {
            for j in 0..dv {
                st[i * dv + j] += k[i] * u[j];
            }
        }
        let q = widen(&inp.q[t]);
        let mut o = vec![0f32; dv];
        for (j, oj) in o.iter_mut().enumerate() {
            let mut acc = 0f64;
            for i in 0..dk {
                acc += st[i * dv + j] * q[i];
            }
            *oj = acc as f32;
        }
        out.push(o);
    }
    for (x, y) in s.iter_mut().zip(&st) {
        *x = *y as f32;
    }
    out
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|v| *v as f64).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Chunked form (spec §3) with chunks of [`CHUNK`] tokens; same results as
/// [`recurrent`] up to f32 rounding.
pub fn chunked(inp: &HeadInputs<'_>, s: &mut [f32], dk: usize, dv: usize) -> Vec<Vec<f32>> {
    let t_len = inp.q.len();
    let mut st: Vec<f64> = s.iter().map(|x| *x as f64).collect();
    let qs: Vec<Vec<f64>> = inp.q.iter().map(|x| widen(x)).collect();
    let ks: Vec<Vec<f64>> = inp.k.iter().map(|x| widen(x)).collect();
    let vs: Vec<Vec<f64>> = inp.v.iter().map(|x| widen(x)).collect();
    let mut out = Vec::with_capacity(t_len);
    let mut c0 = 0;
    while c0 < t_len {
        // A short last chunk equals HF's zero padding: padded tokens have
        // g = 0, β = 0, k = 0 and come after every real token.
        let n = CHUNK.min(t_len - c0);
        let q = &qs[c0..c0 + n];
        let k = &ks[c0..c0 + n];
        let v = &vs[c0..c0 + n];
        let beta: Vec<f64> = inp.beta[c0..c0 + n].iter().map(|x| *x as f64).collect();
        // 1. cumulative log-decay γ_r = Σ_{s≤r} g_s
        let mut gamma = vec![0f64; n];
        let mut acc = 0f64;
        for r in 0..n {
            acc += inp.g[c0 + r] as f64;
            gamma[r] = acc;
        }
        // 2. strictly lower A_rs = β_r (k_r·k_s) exp(γ_r − γ_s)
        let mut a = vec![0f64; n * n];
        for r in 0..n {
            for s_ in 0..r {
                a[r * n + s_] = beta[r] * dot(&k[r], &k[s_]) * (gamma[r] - gamma[s_]).exp();
            }
        }
        // 3. U = (I + A)⁻¹ (β ⊙ V), W = (I + A)⁻¹ (β ⊙ exp(γ) ⊙ K), by forward
        //    substitution: X_r = B_r − Σ_{s<r} A_rs X_s.
        let mut u: Vec<Vec<f64>> = (0..n)
            .map(|r| v[r].iter().map(|x| beta[r] * x).collect())
            .collect();
        let mut w: Vec<Vec<f64>> = (0..n)
            .map(|r| {
                let f = beta[r] * gamma[r].exp();
                k[r].iter().map(|x| f * x).collect()
            })
            .collect();
        for r in 0..n {
            for s_ in 0..r {
                let coef = a[r * n + s_];
                if coef == 0.0 {
                    continue;
                }
                let (done, rest) = u.split_at_mut(r);
                for (x, y) in rest[0].iter_mut().zip(&done[s_]) {
                    *x -= coef * y;
                }
                let (done, rest) = w.split_at_mut(r);
                for (x, y) in rest[0].iter_mut().zip(&done[s_]) {
                    *x -= coef * y;
                }
            }
        }
        // 4. V_new = U − W S
        let v_new: Vec<Vec<f64>> = (0..n)
            .map(|r| {
                (0..dv)
                    .map(|j| {
                        let mut acc = 0f64;
                        for i in 0..dk {
                            acc += w[r][i] * st[i * dv + j];
                        }
                        u[r][j] - acc
                    })
                    .collect()
            })
            .collect();
        // 5. O_r = exp(γ_r) q_rᵀ S + Σ_{s≤r} (q_r·k_s) exp(γ_r − γ_s) V_new_s
        for r in 0..n {
            let eg = gamma[r].exp();
            let mut o: Vec<f64> = (0..dv)
                .map(|j| {
                    let mut acc = 0f64;
                    for i in 0..dk {
                        acc += q[r][i] * st[i * dv + j];
                    }
                    eg * acc
                })
                .collect();
            for s_ in 0..=r {
                let coef = dot(&q[r], &k[s_]) * (gamma[r] - gamma[s_]).exp();
                for (x, y) in o.iter_mut().zip(&v_new[s_]) {
                    *x += coef * y;
                }
            }
            out.push(o.iter().map(|x| *x as f32).collect());
        }
        // 6. S ← exp(γ_last) S + Σ_s exp(γ_last − γ_s) k_s V_new_sᵀ
        let last = gamma[n - 1];
        let el = last.exp();
        for x in st.iter_mut() {
            *x *= el;
        }
        for s_ in 0..n {
            let f = (last - gamma[s_]).exp();
            for i in 0..dk {
                let ki = f * k[s_][i];
                for j in 0..dv {
                    st[i * dv + j] += ki * v_new[s_][j];
                }
            }
        }
        c0 += n;
    }
    for (x, y) in s.iter_mut().zip(&st) {
        *x = *y as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    fn normalised(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
        let mut v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
        crate::reference::ops::l2_normalize(&mut v, 1e-6);
        v.iter_mut().for_each(|x| *x *= scale);
        v
    }

    /// max |a − b| / max |b| over all outputs and the final state.
    fn rel_err(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
        let mut diff = 0f32;
        let mut mag = 0f32;
        for (x, y) in a.iter().zip(b) {
            for (p, q) in x.iter().zip(y) {
                diff = diff.max((p - q).abs());
                mag = mag.max(q.abs());
            }
        }
        diff / mag
    }

    #[test]
    fn chunked_matches_recurrent_on_random_inputs() {
        let mut rng = StdRng::seed_from_u64(7);
        for &(t_len, dk, dv) in &[
            (1usize, 8usize, 8usize),
            (64, 16, 8),
            (150, 16, 24),
            (130, 32, 32),
        ] {
            let q: Vec<Vec<f32>> = (0..t_len)
                .map(|_| normalised(&mut rng, dk, 1.0 / (dk as f32).sqrt()))
                .collect();
            let k: Vec<Vec<f32>> = (0..t_len).map(|_| normalised(&mut rng, dk, 1.0)).collect();
            let v: Vec<Vec<f32>> = (0..t_len)
                .map(|_| (0..dv).map(|_| rng.random_range(-2.0..2.0)).collect())
                .collect();
            let beta: Vec<f32> = (0..t_len).map(|_| rng.random_range(0.05..0.95)).collect();
            // Realistic log-decays including strong ones (down to exp(-4)).
            let g: Vec<f32> = (0..t_len).map(|_| -rng.random_range(0.001..4.0)).collect();
            let inp = HeadInputs {
                q: &q,
                k: &k,
                v: &v,
                beta: &beta,
                g: &g,
            };
            let s0: Vec<f32> = (0..dk * dv).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut s_rec = s0.clone();
            let mut s_chk = s0.clone();
            let o_rec = recurrent(&inp, &mut s_rec, dk, dv);
            let o_chk = chunked(&inp, &mut s_chk, dk, dv);
            let e_out = rel_err(&o_chk, &o_rec);
            let e_state = rel_err(&[s_chk.clone()], &[s_rec.clone()]);
            assert!(e_out < 1e-6, "T={t_len}: output rel err {e_out}");
            assert!(e_state < 1e-6, "T={t_len}: state rel err {e_state}");
        }
    }

    #[test]
    fn recurrence_matches_hand_computed_single_step() {
        // dk = dv = 1: S' = e^g S; u = β (v − S' k); S'' = S' + k u; o = S'' q.
        let (s0, g, beta, k, v, q) = (2.0f32, -0.5f32, 0.25f32, 1.0f32, 3.0f32, 0.5f32);
        let mut s = vec![s0];
        let o = recurrent(
            &HeadInputs {
                q: &[vec![q]],
                k: &[vec![k]],
                v: &[vec![v]],
                beta: &[beta],
                g: &[g],
            },
            &mut s,
            1,
            1,
        );
        let s1 = s0 * g.exp();
        let u = beta * (v - s1 * k);
        let s2 = s1 + k * u;
        assert!((s[0] - s2).abs() < 1e-6);
        assert!((o[0][0] - s2 * q).abs() < 1e-6);
    }
}
