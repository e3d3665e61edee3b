//! Streaming GGUF v3 writer: the header and tensor index are written first
//! (offsets follow from the planned sizes), then each tensor's bytes in index
//! order, so no tensor has to be held in memory beyond the one being written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::reader::{GGUF_DEFAULT_ALIGNMENT, GgmlType, MetaArray, MetaValue};
use crate::error::{ModelError, Result};

/// A tensor to be written: name, ggml dims (ne0 first) and type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPlan {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorPlan {
    pub fn byte_size(&self) -> Result<u64> {
        let dtype = self
            .ggml_type
            .dtype()
            .ok_or_else(|| ModelError::UnsupportedDtype {
                name: self.name.clone(),
                dtype: self.ggml_type.name(),
            })?;
        let (per, bytes) = dtype.block();
        let n: u64 = self.dims.iter().product();
        if self.dims.first().is_none_or(|&d| d % per as u64 != 0) {
            return Err(ModelError::Other(format!(
                "tensor `{}`: first dimension {:?} is not a multiple of the {} block size {per}",
                self.name,
                self.dims.first(),
                dtype.name()
            )));
        }
        Ok(n / per as u64 * bytes as u64)
    }
}

pub struct GgufWriter {
    path: PathBuf,
    out: BufWriter<File>,
    plans: Vec<TensorPlan>,
    sizes: Vec<u64>,
    next: usize,
    alignment: u64,
    written: u64,
}

fn w_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn w_array(buf: &mut Vec<u8>, a: &MetaArray) {
    buf.extend_from_slice(&a.elem_type_id().to_le_bytes());
    buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
    match a {
        MetaArray::U8(v) => buf.extend_from_slice(v),
        MetaArray::I8(v) => buf.extend(v.iter().map(|&x| x as u8)),
        MetaArray::U16(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I16(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::U32(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I32(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F32(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::Bool(v) => buf.extend(v.iter().map(|&x| x as u8)),
        MetaArray::String(v) => v.iter().for_each(|s| w_str(buf, s)),
        MetaArray::Array(v) => v.iter().for_each(|x| w_array(buf, x)),
        MetaArray::U64(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::I64(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
        MetaArray::F64(v) => v
            .iter()
            .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Serialise one metadata value (without its type tag).
fn w_value(buf: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => buf.push(*x),
        MetaValue::I8(x) => buf.push(*x as u8),
        MetaValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => buf.push(*x as u8),
        MetaValue::String(s) => w_str(buf, s),
        MetaValue::Array(a) => w_array(buf, a),
        MetaValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}

/// The complete header (magic .. padding before the data section) as bytes.
pub fn encode_header(
    metadata: &[(String, MetaValue)],
    plans: &[TensorPlan],
    alignment: u64,
) -> Result<(Vec<u8>, Vec<u64>)> {
    let mut buf = Vec::new();
    buf.extend_from_slice(b"GGUF");
    buf.extend_from_slice(&3u32.to_le_bytes());
    buf.extend_from_slice(&(plans.len() as u64).to_le_bytes());
    buf.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        w_str(&mut buf, k);
        buf.extend_from_slice(&v.type_id().to_le_bytes());
        w_value(&mut buf, v);
    }
    let mut offset = 0u64;
    let mut sizes = Vec::with_capacity(plans.len());
    for p in plans {
        let size = p.byte_size()?;
        w_str(&mut buf, &p.name);
        buf.extend_from_slice(&(p.dims.len() as u32).to_le_bytes());
        for d in &p.dims {
            buf.extend_from_slice(&d.to_le_bytes());
        }
        buf.extend_from_slice(&p.ggml_type.id().to_le_bytes());
        buf.extend_from_slice(&offset.to_le_bytes());
        offset = (offset + size).div_ceil(alignment) * alignment;
        sizes.push(size);
    }
    let padded = (buf.len() as u64).div_ceil(alignment) * alignment;
    buf.resize(padded as usize, 0);
    Ok((buf, sizes))
}

impl GgufWriter {
    /// Create `path` and write header, metadata and tensor index.
    /// `general.alignment`, when present in `metadata`, must be a u32.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &[(String, MetaValue)],
        plans: Vec<TensorPlan>,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let alignment = metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(GGUF_DEFAULT_ALIGNMENT as u64);
        if !alignment.is_power_of_two() {
            return Err(ModelError::Other(format!(
                "alignment {alignment} is not a power of two"
            )));
        }
        let (header, sizes) = encode_header(metadata, &plans, alignment)?;
        let file = File::create(&path).map_err(|e| ModelError::io(&path, e))?;
        let mut out = BufWriter::with_capacity(8 << 20, file);
        out.write_all(&header)
            .map_err(|e| ModelError::io(&path, e))?;
        Ok(Self {
            path,
            out,
            plans,
            sizes,
            next: 0,
            alignment,
            written: 0,
        })
    }

    /// The tensor whose data is expected next.
    pub fn next_tensor(&self) -> Option<&TensorPlan> {
        self.plans.get(self.next)
    }

    /// Write the next tensor's data (exactly its planned size).
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let plan = self.plans.get(self.next).ok_or_else(|| {
            ModelError::Other(format!("GGUF writer: unexpected extra tensor `{name}`"))
        })?;
        if plan.name != name || self.sizes[self.next] != bytes.len() as u64 {
            return Err(ModelError::Other(format!(
                "GGUF writer: expected `{}` ({} bytes), got `{name}` ({} bytes)",
                plan.name,
                self.sizes[self.next],
                bytes.len()
            )));
        }
        let io = |e| ModelError::io(&self.path, e);
        self.out.write_all(bytes).map_err(io)?;
        let len = bytes.len() as u64;
        let pad = len.div_ceil(self.alignment) * self.alignment - len;
        self.out
            .write_all(&vec![0u8; pad as usize])
            .map_err(|e| ModelError::io(&self.path, e))?;
        self.written += len + pad;
        self.next += 1;
        Ok(())
    }

    /// Write the next tensor's data from chunks (in order) whose lengths sum
    /// to its planned size; nothing beyond one chunk is held in memory.
    pub fn write_tensor_chunks<I>(&mut self, name: &str, chunks: I) -> Result<()>
    where
        I: IntoIterator<Item = Result<Vec<u8>>>,
    {
        let plan = self.plans.get(self.next).ok_or_else(|| {
            ModelError::Other(format!("GGUF writer: unexpected extra tensor `{name}`"))
        })?;
        if plan.name != name {
            return Err(ModelError::Other(format!(
                "GGUF writer: expected `{}`, got `{name}`",
                plan.name
            )));
        }
        let want = self.sizes[self.next];
        let mut len = 0u64;
        for chunk in chunks {
            let chunk = chunk?;
            len += chunk.len() as u64;
            if len > want {
                break;
            }
            self.out
                .write_all(&chunk)
                .map_err(|e| ModelError::io(&self.path, e))?;
        }
        if len != want {
            return Err(ModelError::Other(format!(
                "GGUF writer: `{name}` got {len} bytes, planned {want}"
            )));
        }
        let pad = len.div_ceil(self.alignment) * self.alignment - len;
        self.out
            .write_all(&vec![0u8; pad as usize])
            .map_err(|e| ModelError::io(&self.path, e))?;
        self.written += len + pad;
        self.next += 1;
        Ok(())
    }

    /// Flush; fails if some planned tensor was not written.
    pub fn finish(mut self) -> Result<u64> {
        if self.next != self.plans.len() {
            return Err(ModelError::Other(format!(
                "GGUF writer: {} of {} tensors written",
                self.next,
                self.plans.len()
            )));
        }
        self.out
            .flush()
            .map_err(|e| ModelError::io(&self.path, e))?;
        Ok(self.written)
    }
}
