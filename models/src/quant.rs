//! GGUF block quantisation (Q8_0, Q4_K, Q6_K): dequantisation for the CPU
//! reference and GPU upload, quantisation for `lucebox synth`.
//!
//! Block layouts, dequantisation arithmetic (operation order included, so the
//! results are bit-identical to ggml and gguf-py) and the reference quantisers
//! (`quantize_row_*_ref`, `make_qkx2_quants`, `make_qx_quants`) follow ggml's
//! `ggml-quants.c`.

use half::f16;
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::weights::DType;

/// Elements per K-quant super-block.
pub const QK_K: usize = 256;
/// Elements per Q8_0 block.
pub const QK8_0: usize = 32;
const GROUP_MAX_EPS: f32 = 1e-15;

fn check_len(dtype: DType, bytes: &[u8], n: usize) -> Result<()> {
    match dtype.bytes_for(n) {
        Some(b) if b == bytes.len() => Ok(()),
        Some(b) => Err(ModelError::Other(format!(
            "{}: {} bytes given for {n} elements (expected {b})",
            dtype.name(),
            bytes.len()
        ))),
        None => Err(ModelError::Other(format!(
            "{}: {n} elements is not a whole number of {}-element blocks",
            dtype.name(),
            dtype.block().0
        ))),
    }
}

/// Dequantise `n` elements of `dtype` from `bytes`.
pub fn dequantize(dtype: DType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    check_len(dtype, bytes, n)?;
    let mut out = vec![0f32; n];
    dequantize_into(dtype, bytes, &mut out)?;
    Ok(out)
}

/// Dequantise into `out` (its length is the element count), in parallel.
pub fn dequantize_into(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_len(dtype, bytes, out.len())?;
    let (per, bsize) = dtype.block();
    // Parallel over chunks of whole blocks.
    let blocks_per_task = (1 << 16) / per.max(1) + 1;
    out.par_chunks_mut(per * blocks_per_task)
        .zip(bytes.par_chunks(bsize * blocks_per_task))
        .for_each(|(o, b)| match dtype {
            DType::F32 => {
                for (y, c) in o.iter_mut().zip(b.chunks_exact(4)) {
                    *y = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            DType::F16 => {
                for (y, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *y = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            DType::BF16 => {
                for (y, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *y = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            DType::Q8_0 => {
                for (y, blk) in o.chunks_exact_mut(QK8_0).zip(b.chunks_exact(34)) {
                    dequant_block_q8_0(blk, y);
                }
            }
            DType::Q4K => {
                for (y, blk) in o.chunks_exact_mut(QK_K).zip(b.chunks_exact(144)) {
                    dequant_block_q4_k(blk, y);
                }
            }
            DType::Q6K => {
                for (y, blk) in o.chunks_exact_mut(QK_K).zip(b.chunks_exact(210)) {
                    dequant_block_q6_k(blk, y);
                }
            }
        });
    Ok(())
}

fn half_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// `block_q8_0 { half d; int8 qs[32]; }`
fn dequant_block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (yi, &q) in y.iter_mut().zip(&b[2..34]) {
        *yi = (q as i8) as f32 * d;
    }
}

/// ggml `get_scale_min_k4`: 6-bit scale and min of sub-block `j` (0..8).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `block_q4_K { half d; half dmin; u8 scales[12]; u8 qs[128]; }`
fn dequant_block_q4_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let min = half_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (chunk, (q, yy)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, min * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, min * m2 as f32);
        for l in 0..32 {
            yy[l] = d1 * (q[l] & 0xF) as f32 - m1;
            yy[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// `block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d; }`
fn dequant_block_q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for n in 0..2 {
        let ql = &b[64 * n..64 * n + 64];
        let qh = &b[128 + 32 * n..128 + 32 * n + 32];
        let sc = &b[192 + 8 * n..192 + 8 * n + 8];
        let yy = &mut y[128 * n..128 * n + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            yy[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            yy[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            yy[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            yy[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

// ---------------------------------------------------------------------------
// Quantisation

/// Quantise `x` (whole blocks) to `dtype` bytes, in parallel.
pub fn quantize(dtype: DType, x: &[f32]) -> Result<Vec<u8>> {
    let (per, bsize) = dtype.block();
    let nbytes = dtype.bytes_for(x.len()).ok_or_else(|| {
        ModelError::Other(format!(
            "{}: {} elements is not a whole number of {per}-element blocks",
            dtype.name(),
            x.len()
        ))
    })?;
    let mut out = vec![0u8; nbytes];
    let blocks_per_task = (1 << 14) / per + 1;
    out.par_chunks_mut(bsize * blocks_per_task)
        .zip(x.par_chunks(per * blocks_per_task))
        .for_each(|(o, xs)| match dtype {
            DType::F32 => {
                for (c, v) in o.chunks_exact_mut(4).zip(xs) {
                    c.copy_from_slice(&v.to_le_bytes());
                }
            }
            DType::F16 => {
                for (c, v) in o.chunks_exact_mut(2).zip(xs) {
                    c.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
                }
            }
            DType::BF16 => {
                for (c, v) in o.chunks_exact_mut(2).zip(xs) {
                    c.copy_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
                }
            }
            DType::Q8_0 => {
                for (blk, xb) in o.chunks_exact_mut(34).zip(xs.chunks_exact(QK8_0)) {
                    quantize_block_q8_0(xb, blk);
                }
            }
            DType::Q4K => {
                for (blk, xb) in o.chunks_exact_mut(144).zip(xs.chunks_exact(QK_K)) {
                    quantize_block_q4_k(xb, blk);
                }
            }
            DType::Q6K => {
                for (blk, xb) in o.chunks_exact_mut(210).zip(xs.chunks_exact(QK_K)) {
                    quantize_block_q6_k(xb, blk);
                }
            }
        });
    Ok(out)
}

/// ggml `nearest_int`: round half to even via the 1.5·2^23 trick (|x| < 2^22).
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// C `roundf`: half away from zero.
fn roundf(x: f32) -> f32 {
    x.round()
}

fn quantize_block_q8_0(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[0..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, &v) in out[2..34].iter_mut().zip(x) {
        *o = roundf(v * id) as i8 as u8;
    }
}

#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        min = if x[i] < min { x[i] } else { min };
        max = if x[i] > max { x[i] } else { max };
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|l| *l = 0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l_out[i] as f32 + min - x[i];
        best_error += weights[i] * diff * diff;
    }
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, lf) = (weights[i], l as f32);
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let dd = sum_w * sum_l2 - sum_l * sum_l;
        if dd > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / dd;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / dd;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * diff * diff;
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml `quantize_row_q4_K_ref` for one 256-element block.
fn quantize_block_q4_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut max_scale = 0f32;
    let mut max_min = 0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().map(|v| v * v).fold(0.0, |a, b| a + b);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            15,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            -1.0,
            0.1,
            20,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let sc = &mut out[4..16];
    sc.iter_mut().for_each(|b| *b = 0);
    for j in 0..8 {
        let ls = nearest_int(inv_scale * scales[j]).clamp(0, 63) as u8;
        let lm = nearest_int(inv_min * mins[j]).clamp(0, 63) as u8;
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let d16 = f16::from_f32(max_scale / 63.0);
    let dmin16 = f16::from_f32(max_min / 63.0);
    out[0..2].copy_from_slice(&d16.to_le_bytes());
    out[2..4].copy_from_slice(&dmin16.to_le_bytes());
    let scales_bytes: [u8; 12] = out[4..16].try_into().unwrap_or([0; 12]);
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &scales_bytes);
        let d = d16.to_f32() * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin16.to_f32() * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, 15);
            l[32 * j + ii] = q as u8;
        }
    }
    let qs = &mut out[16..144];
    for (c, j) in (0..QK_K).step_by(64).enumerate() {
        for k in 0..32 {
            qs[32 * c + k] = l[j + k] | (l[j + k + 32] << 4);
        }
    }
}

/// ggml `make_qx_quants` with `rmse_type = 1`, no importance weights.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let mut max = 0f32;
    let mut amax = 0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = v * v;
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
                l_out[i] = (nmax + l) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml `quantize_row_q6_K_ref` for one 256-element block.
fn quantize_block_q6_k(x: &[f32], out: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    let mut max_scale = 0f32;
    let mut max_abs_scale = 0f32;
    for ib in 0..16 {
        let s = make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = s;
        if s.abs() > max_abs_scale {
            max_abs_scale = s.abs();
            max_scale = s;
        }
    }
    out.iter_mut().for_each(|b| *b = 0);
    if max_abs_scale < GROUP_MAX_EPS {
        return;
    }
    let iscale = -128.0 / max_scale;
    let d16 = f16::from_f32(1.0 / iscale);
    out[208..210].copy_from_slice(&d16.to_le_bytes());
    let mut sc = [0i8; 16];
    for ib in 0..16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        out[192 + ib] = sc[ib] as u8;
    }
    for j in 0..16 {
        let d = d16.to_f32() * sc[j] as f32;
        if d == 0.0 {
            continue;
        }
        for ii in 0..16 {
            let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
            l[16 * j + ii] = (q + 32) as i8;
        }
    }
    let lu = |i: usize| l[i] as u8;
    for (half, j) in (0..QK_K).step_by(128).enumerate() {
        let (ql, rest) = out.split_at_mut(128);
        let ql = &mut ql[64 * half..64 * half + 64];
        let qh = &mut rest[32 * half..32 * half + 32];
        for k in 0..32 {
            let q1 = lu(j + k) & 0xF;
            let q2 = lu(j + k + 32) & 0xF;
            let q3 = lu(j + k + 64) & 0xF;
            let q4 = lu(j + k + 96) & 0xF;
            ql[k] = q1 | (q3 << 4);
            ql[k + 32] = q2 | (q4 << 4);
            qh[k] = (lu(j + k) >> 4)
                | ((lu(j + k + 32) >> 4) << 2)
                | ((lu(j + k + 64) >> 4) << 4)
                | ((lu(j + k + 96) >> 4) << 6);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(-2.5), -2);
        assert_eq!(nearest_int(-2.6), -3);
        assert_eq!(nearest_int(7.49), 7);
    }

    #[test]
    fn rejects_partial_blocks_and_wrong_byte_counts() {
        assert!(dequantize(DType::Q4K, &[0u8; 144], 255).is_err());
        assert!(dequantize(DType::Q8_0, &[0u8; 33], 32).is_err());
        assert!(quantize(DType::Q6K, &[0.0; 100]).is_err());
    }

    #[test]
    fn zero_input_round_trips_to_zero() {
        for dt in [DType::Q8_0, DType::Q4K, DType::Q6K] {
            let q = quantize(dt, &[0.0; 512]).unwrap();
            assert!(dequantize(dt, &q, 512).unwrap().iter().all(|&v| v == 0.0));
        }
    }
}
