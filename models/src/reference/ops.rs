//! Elementwise and normalisation building blocks (spec §2.1), f32 values with
//! f64 reductions.

/// Zero-centred RMSNorm (`Qwen3_5RMSNorm`): `x / sqrt(mean(x²) + eps) · (1 + w)`.
pub fn rms_norm_zero_centred(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let inv = inv_rms(x, eps);
    x.iter()
        .zip(w)
        .map(|(v, w)| (*v * inv) * (1.0 + *w))
        .collect()
}

/// Gated RMSNorm of the GDN output (`Qwen3_5RMSNormGated`), NOT zero-centred:
/// `w · (x / sqrt(mean(x²) + eps)) · silu(z)`.
pub fn gated_rms_norm(x: &[f32], z: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let inv = inv_rms(x, eps);
    x.iter()
        .zip(z)
        .zip(w)
        .map(|((v, z), w)| *w * (*v * inv) * silu(*z))
        .collect()
}

/// `1 / sqrt(mean(x²) + eps)`.
pub fn inv_rms(x: &[f32], eps: f64) -> f32 {
    let ms = x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / x.len().max(1) as f64;
    (1.0 / (ms + eps).sqrt()) as f32
}

/// L2 normalisation as in HF/FLA: `x · rsqrt(Σx² + eps)` (eps 1e-6, added
/// inside the root: spec pitfall 7).
pub fn l2_normalize(x: &mut [f32], eps: f64) {
    let ss = x.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>();
    let inv = (1.0 / (ss + eps).sqrt()) as f32;
    for v in x {
        *v *= inv;
    }
}

pub fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-(x as f64)).exp())) as f32
}

pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// `torch.nn.functional.softplus` (beta 1, threshold 20: linear above 20).
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        (x as f64).exp().ln_1p() as f32
    }
}

/// Rotary tables for partial NeoX RoPE: `inv_freq[i] = θ^(−2i/rot)` for
/// i < rot/2, rounded to f32 as HF does; the angle `pos · inv_freq` is formed
/// in f32 too (HF multiplies f32 tensors), then cos/sin are taken of it.
#[derive(Debug, Clone)]
pub struct Rope {
    pub rotary_dim: usize,
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(rotary_dim: usize, theta: f64) -> Self {
        let inv_freq = (0..rotary_dim / 2)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / rotary_dim as f64)) as f32)
            .collect();
        Self {
            rotary_dim,
            inv_freq,
        }
    }

    /// Rotate the first `rotary_dim` values of one head at position `pos`;
    /// pairs are `(i, i + rot/2)` (rotate-half layout), the rest pass through.
    pub fn apply(&self, head: &mut [f32], pos: usize) {
        let half = self.rotary_dim / 2;
        for i in 0..half {
            let angle = (pos as f32 * self.inv_freq[i]) as f64;
            let (sin, cos) = (angle.sin() as f32, angle.cos() as f32);
            let a = head[i];
            let b = head[i + half];
            head[i] = a * cos - b * sin;
            head[i + half] = b * cos + a * sin;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_centred_norm_uses_one_plus_w() {
        let y = rms_norm_zero_centred(&[3.0, 4.0], &[0.0, 1.0], 0.0);
        // rms = sqrt(12.5)
        let r = 12.5f32.sqrt();
        assert!((y[0] - 3.0 / r).abs() < 1e-6);
        assert!((y[1] - 2.0 * 4.0 / r).abs() < 1e-6);
    }

    #[test]
    fn gated_norm_is_not_zero_centred() {
        let y = gated_rms_norm(&[2.0, 2.0], &[0.0, 30.0], &[1.0, 0.5], 0.0);
        assert_eq!(y[0], 0.0); // silu(0) = 0
        assert!((y[1] - 0.5 * 30.0).abs() < 1e-4);
    }

    #[test]
    fn rope_rotates_pairs_i_and_i_plus_half_only_in_the_rotary_slice() {
        let rope = Rope::new(4, 10_000.0);
        let mut h = [1.0, 0.0, 0.0, 0.0, 7.0, 8.0];
        rope.apply(&mut h, 1);
        // pair (0, 2) at angle 1 rad: (cos 1, sin 1); pair (1, 3) untouched (zeros).
        assert!((h[0] - 1f32.cos()).abs() < 1e-6);
        assert!((h[2] - 1f32.sin()).abs() < 1e-6);
        assert_eq!(&h[4..], &[7.0, 8.0]);
        let mut h2 = [0.0, 1.0, 0.0, 0.0];
        rope.apply(&mut h2, 2);
        // inv_freq[1] = 1e4^(-1/2) = 0.01
        assert!((h2[1] - 0.02f32.cos()).abs() < 1e-6);
        assert!((h2[3] - 0.02f32.sin()).abs() < 1e-6);
    }

    #[test]
    fn softplus_and_l2() {
        assert!((softplus(0.0) - 2f32.ln()).abs() < 1e-7);
        assert_eq!(softplus(25.0), 25.0);
        let mut v = [3.0, 4.0];
        l2_normalize(&mut v, 0.0);
        assert!((v[0] - 0.6).abs() < 1e-7 && (v[1] - 0.8).abs() < 1e-7);
    }
}
