//! Weight tensors and the source they come from (safetensors or GGUF).
//!
//! CONTRACT: every source presents tensors under *canonical* names with HF
//! semantics: the HF text-model name without prefix (`embed_tokens.weight`,
//! `norm.weight`, `lm_head.weight` only when untied, `layers.{i}.linear_attn.A_log`,
//! ...), HF shapes (`[out, in]`, row-major), HF values (zero-centred norm
//! weights *without* the +1, `A_log` not `-exp(A_log)`, HF value-head order).
//! Quantised GGUF tensors keep their blocks; `to_f32` dequantises.

use std::sync::Arc;

use half::{bf16, f16};
use memmap2::Mmap;

use crate::config::Qwen35Config;
use crate::error::{ModelError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4K,
    Q6K,
}

impl DType {
    /// (elements per block, bytes per block); 1 element for plain types.
    pub fn block(self) -> (usize, usize) {
        match self {
            DType::F32 => (1, 4),
            DType::F16 | DType::BF16 => (1, 2),
            DType::Q8_0 => (32, 34),
            DType::Q4K => (256, 144),
            DType::Q6K => (256, 210),
        }
    }
    /// Bytes needed for `n` elements, or None if `n` is not whole blocks.
    pub fn bytes_for(self, n: usize) -> Option<usize> {
        let (per, bytes) = self.block();
        n.is_multiple_of(per).then(|| n / per * bytes)
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q8_0 => "Q8_0",
            DType::Q4K => "Q4_K",
            DType::Q6K => "Q6_K",
        }
    }
}

/// Where a tensor's bytes live: inside a memory map, or owned.
#[derive(Clone)]
pub enum TensorData {
    Mapped {
        map: Arc<Mmap>,
        offset: usize,
        len: usize,
    },
    Owned(Arc<Vec<u8>>),
}

impl std::fmt::Debug for TensorData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TensorData::Mapped { offset, len, .. } => write!(f, "Mapped({offset}+{len})"),
            TensorData::Owned(v) => write!(f, "Owned({})", v.len()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    /// HF shape, outermost first (`[out, in]` for matrices).
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            TensorData::Mapped { map, offset, len } => &map[*offset..*offset + *len],
            TensorData::Owned(v) => v,
        }
    }
    pub fn from_f32(name: impl Into<String>, shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            name: name.into(),
            dtype: DType::F32,
            shape,
            data: TensorData::Owned(Arc::new(bytemuck::cast_slice(values).to_vec())),
        }
    }
    /// All elements as f32 (dequantised for quantised types).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let b = self.bytes();
        let n = self.numel();
        let expect = self
            .dtype
            .bytes_for(n)
            .ok_or_else(|| ModelError::ShapeMismatch {
                name: self.name.clone(),
                expected: vec![n.div_ceil(self.dtype.block().0) * self.dtype.block().0],
                found: self.shape.clone(),
            })?;
        if b.len() != expect {
            return Err(ModelError::Other(format!(
                "tensor `{}`: {} bytes of data for {n} {} elements (expected {expect})",
                self.name,
                b.len(),
                self.dtype.name()
            )));
        }
        Ok(match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            q => crate::quant::dequantize(q, b, n)?,
        })
    }
    /// All elements as bf16 (for GPU upload).
    pub fn to_bf16(&self) -> Result<Vec<bf16>> {
        if self.dtype == DType::BF16 {
            return Ok(self
                .bytes()
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]))
                .collect());
        }
        Ok(self.to_f32()?.into_iter().map(bf16::from_f32).collect())
    }
}

/// A checkpoint that yields canonical tensors (see module docs).
pub trait WeightSource: Send + Sync {
    fn config(&self) -> &Qwen35Config;
    /// The tensor under its canonical name, with its shape checked by the
    /// caller through [`expect_shape`].
    fn tensor(&self, canonical_name: &str) -> Result<Tensor>;
    fn contains(&self, canonical_name: &str) -> bool;
}

/// Error naming the tensor and both shapes when `t` is not `expected`.
pub fn expect_shape(t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.shape != expected {
        return Err(ModelError::ShapeMismatch {
            name: t.name.clone(),
            expected: expected.to_vec(),
            found: t.shape.clone(),
        });
    }
    Ok(())
}
