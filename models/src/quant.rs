//! GGUF block quantisation (Q8_0, Q4_K, Q6_K): dequantisation for the CPU
//! reference and GPU upload, quantisation for `lucebox synth`.
//! (Stub: the GGUF work implements it.)

use crate::error::{ModelError, Result};
use crate::weights::DType;

/// Dequantise `n` elements of `dtype` from `bytes`.
pub fn dequantize(dtype: DType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let _ = (bytes, n);
    Err(ModelError::Other(format!(
        "dequantisation of {} is not implemented yet",
        dtype.name()
    )))
}
