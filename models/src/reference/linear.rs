//! A bias-free linear layer `y = x Wᵀ` over a weight kept in its checkpoint
//! dtype (bf16 mmap, f16, f32 or GGUF blocks) and converted one row at a
//! time, so the oracle never holds an f32 copy of a multi-GB checkpoint.
//! Dot products accumulate in f64: the result is then independent of
//! summation order at the f32 rounding level, which is what an oracle wants.

use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::{ModelError, Result};
use crate::weights::{DType, Tensor, WeightSource, expect_shape};

#[derive(Debug, Clone)]
pub struct Linear {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    tensor: Tensor,
    row_bytes: usize,
}

impl Linear {
    /// Load `name` with HF shape `[rows, cols]` (`[out, in]`).
    pub fn load(source: &dyn WeightSource, name: &str, rows: usize, cols: usize) -> Result<Self> {
        let tensor = source.tensor(name)?;
        Self::from_tensor(tensor, rows, cols)
    }

    pub fn from_tensor(tensor: Tensor, rows: usize, cols: usize) -> Result<Self> {
        expect_shape(&tensor, &[rows, cols])?;
        let row_bytes = tensor.dtype.bytes_for(cols).ok_or_else(|| {
            ModelError::Other(format!(
                "tensor `{}`: rows of {cols} elements are not whole {} blocks",
                tensor.name,
                tensor.dtype.name()
            ))
        })?;
        if tensor.bytes().len() != row_bytes * rows {
            return Err(ModelError::Other(format!(
                "tensor `{}`: {} bytes of data, expected {}",
                tensor.name,
                tensor.bytes().len(),
                row_bytes * rows
            )));
        }
        let lin = Self {
            name: tensor.name.clone(),
            rows,
            cols,
            tensor,
            row_bytes,
        };
        // Fail now (not in the middle of a forward) if the dtype cannot be
        // converted, e.g. a quantisation without a dequantiser.
        let mut probe = vec![0f32; cols];
        if rows > 0 {
            lin.row_into(0, &mut probe)?;
        }
        Ok(lin)
    }

    /// Row `r` of the weight as f32.
    pub fn row_into(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let bytes = &self.tensor.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes];
        match self.tensor.dtype {
            DType::F32 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            DType::BF16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            DType::F16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            q => {
                let v = crate::quant::dequantize(q, bytes, self.cols)?;
                out.copy_from_slice(&v);
            }
        }
        Ok(())
    }

    pub fn row(&self, r: usize) -> Result<Vec<f32>> {
        let mut v = vec![0f32; self.cols];
        self.row_into(r, &mut v)?;
        Ok(v)
    }

    /// `xs`: T input vectors of `cols`; returns T output vectors of `rows`.
    pub fn forward(&self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        self.forward_rows(xs, 0..self.rows)
    }

    /// Like [`forward`](Self::forward) but only for output rows `range`.
    pub fn forward_rows(
        &self,
        xs: &[Vec<f32>],
        range: std::ops::Range<usize>,
    ) -> Result<Vec<Vec<f32>>> {
        for x in xs {
            if x.len() != self.cols {
                return Err(ModelError::Other(format!(
                    "`{}`: input of {} values, expected {}",
                    self.name,
                    x.len(),
                    self.cols
                )));
            }
        }
        const BLOCK: usize = 64;
        let t = xs.len();
        let n = range.len();
        let start = range.start;
        // Output computed per block of weight rows: [row][token].
        let blocks: Vec<Vec<f32>> = (0..n.div_ceil(BLOCK))
            .into_par_iter()
            .map(|b| -> Result<Vec<f32>> {
                let r0 = start + b * BLOCK;
                let r1 = (r0 + BLOCK).min(start + n);
                let mut w = vec![0f32; self.cols];
                let mut out = Vec::with_capacity((r1 - r0) * t);
                for r in r0..r1 {
                    if self.tensor.dtype == DType::BF16 && t == 1 {
                        // Decode fast path: convert and multiply in one pass.
                        let bytes =
                            &self.tensor.bytes()[r * self.row_bytes..(r + 1) * self.row_bytes];
                        out.push(dot_bf16(bytes, &xs[0]));
                        continue;
                    }
                    self.row_into(r, &mut w)?;
                    for x in xs {
                        out.push(dot(&w, x));
                    }
                }
                Ok(out)
            })
            .collect::<Result<_>>()?;
        let mut ys = vec![vec![0f32; n]; t];
        let mut r = 0;
        for block in blocks {
            for chunk in block.chunks_exact(t.max(1)) {
                for (ti, v) in chunk.iter().enumerate() {
                    ys[ti][r] = *v;
                }
                r += 1;
            }
        }
        Ok(ys)
    }
}

/// f64-accumulated dot product, rounded to f32.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f64; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] as f64 * y[i] as f64;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        s += *x as f64 * *y as f64;
    }
    s as f32
}

/// [`dot`] of a little-endian bf16 row with `x` (same f64 accumulation, so
/// the result is identical to converting the row first).
fn dot_bf16(row: &[u8], x: &[f32]) -> f32 {
    let w = |c: &[u8]| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
    let mut acc = [0f64; 8];
    let mut ca = row.chunks_exact(16);
    let mut cb = x.chunks_exact(8);
    for (r, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += w(&r[2 * i..2 * i + 2]) as f64 * y[i] as f64;
        }
    }
    let mut s: f64 = acc.iter().sum();
    for (r, y) in ca.remainder().chunks_exact(2).zip(cb.remainder()) {
        s += w(r) as f64 * *y as f64;
    }
    s as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_matches_naive_matmul_for_every_dtype() {
        let rows = 70;
        let cols = 12;
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
            .collect();
        let xs: Vec<Vec<f32>> = (0..3)
            .map(|t| (0..cols).map(|c| (c as f32 - t as f32) / 8.0).collect())
            .collect();
        let bf: Vec<u8> = w
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        let tensors = [
            Tensor::from_f32("w", vec![rows, cols], &w),
            Tensor {
                name: "w".into(),
                dtype: DType::BF16,
                shape: vec![rows, cols],
                data: crate::weights::TensorData::Owned(std::sync::Arc::new(bf)),
            },
        ];
        for t in tensors {
            let lin = Linear::from_tensor(t, rows, cols).unwrap();
            let ys = lin.forward(&xs).unwrap();
            for (x, y) in xs.iter().zip(&ys) {
                for r in 0..rows {
                    // These values are exact in bf16, so every dtype agrees.
                    let want: f32 = (0..cols).map(|c| w[r * cols + c] * x[c]).sum();
                    assert!((y[r] - want).abs() < 1e-5, "row {r}: {} vs {want}", y[r]);
                }
            }
            // The one-token bf16 fast path gives bit-identical results.
            assert_eq!(lin.forward(&xs[1..2]).unwrap()[0], ys[1]);
            let part = lin.forward_rows(&xs, 5..9).unwrap();
            assert_eq!(part[1], ys[1][5..9].to_vec());
        }
    }

    #[test]
    fn wrong_shape_names_both_shapes() {
        let t = Tensor::from_f32("layers.0.mlp.up_proj.weight", vec![2, 3], &[0.0; 6]);
        let err = Linear::from_tensor(t, 3, 2).unwrap_err().to_string();
        assert!(
            err.contains("up_proj") && err.contains("[2, 3]") && err.contains("[3, 2]"),
            "{err}"
        );
    }
}
