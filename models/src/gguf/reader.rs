//! A strictly bounded GGUF v2/v3 reader that parses straight from a memory
//! map.
//!
//! Hand-written rather than built on `gguf-rs-lib`: that crate decodes through
//! `std::io::Read` into owned `MetadataValue` trees (one enum per array
//! element, so a 248k-token vocabulary costs far more than the file), caps
//! tensor names at 64 bytes by its own rule and has its own error type; here
//! every length is checked against the bytes that remain *before* anything is
//! allocated, arrays are stored typed (memory stays within a small multiple of
//! the file size), and errors name the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{ModelError, Result};
use crate::weights::DType;

pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
pub const GGUF_DEFAULT_ALIGNMENT: usize = 32;
/// ggml's `GGML_MAX_DIMS`.
pub const GGUF_MAX_DIMS: usize = 4;
/// Arrays of arrays deeper than this are rejected (llama.cpp never nests).
const MAX_NESTING: usize = 8;

/// ggml tensor type ids (`enum ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q8_0,
    Q4K,
    Q6K,
    BF16,
    /// A type this crate cannot decode (kept so the index can still be listed).
    Other(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            14 => Self::Q6K,
            30 => Self::BF16,
            other => Self::Other(other),
        }
    }
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q6K => 14,
            Self::BF16 => 30,
            Self::Other(id) => id,
        }
    }
    pub fn dtype(self) -> Option<DType> {
        Some(match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
            Self::Q8_0 => DType::Q8_0,
            Self::Q4K => DType::Q4K,
            Self::Q6K => DType::Q6K,
            Self::BF16 => DType::BF16,
            Self::Other(_) => return None,
        })
    }
    pub fn from_dtype(d: DType) -> Self {
        match d {
            DType::F32 => Self::F32,
            DType::F16 => Self::F16,
            DType::BF16 => Self::BF16,
            DType::Q8_0 => Self::Q8_0,
            DType::Q4K => Self::Q4K,
            DType::Q6K => Self::Q6K,
        }
    }
    /// ggml's name for the type (`ggml_type_name`), or `type N`.
    pub fn name(self) -> String {
        match self.dtype() {
            Some(d) => d.name().to_string(),
            None => format!("ggml type {}", self.id()),
        }
    }
    /// (elements, bytes) per block for every ggml type id llama.cpp knows, so
    /// that offsets of tensors we cannot decode are still validated.
    fn block(self) -> Option<(usize, usize)> {
        if let Some(d) = self.dtype() {
            return Some(d.block());
        }
        Some(match self.id() {
            2 => (32, 18),   // Q4_0
            3 => (32, 20),   // Q4_1
            6 => (32, 22),   // Q5_0
            7 => (32, 24),   // Q5_1
            9 => (32, 36),   // Q8_1
            10 => (256, 84), // Q2_K
            11 => (256, 110),
            13 => (256, 176), // Q5_K
            15 => (256, 292), // Q8_K
            16 => (256, 66),  // IQ2_XXS
            17 => (256, 74),  // IQ2_XS
            18 => (256, 98),  // IQ3_XXS
            19 => (256, 50),  // IQ1_S
            20 => (32, 18),   // IQ4_NL
            21 => (256, 110), // IQ3_S
            22 => (256, 82),  // IQ2_S
            23 => (256, 136), // IQ4_XS
            24 => (1, 1),     // I8
            25 => (1, 2),     // I16
            26 => (1, 4),     // I32
            27 => (1, 8),     // I64
            28 => (1, 8),     // F64
            29 => (256, 56),  // IQ1_M
            34 => (256, 54),  // TQ1_0
            35 => (256, 66),  // TQ2_0
            39 => (32, 17),   // MXFP4
            _ => return None,
        })
    }
}

/// A metadata value. Arrays are stored typed so memory stays proportional to
/// the file.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Array(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Integer elements widened to i64 (None for non-integer arrays).
    pub fn as_i64s(&self) -> Option<Vec<i64>> {
        Some(match self {
            Self::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Self::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Self::U16(v) => v.iter().map(|&x| x as i64).collect(),
            Self::I16(v) => v.iter().map(|&x| x as i64).collect(),
            Self::U32(v) => v.iter().map(|&x| x as i64).collect(),
            Self::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Self::U64(v) => v.iter().map(|&x| x as i64).collect(),
            Self::I64(v) => v.clone(),
            _ => return None,
        })
    }
    /// gguf value type id of the elements.
    pub fn elem_type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::String(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }
}

impl MetaValue {
    /// Any integer value as u64 (negative values are None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v as u64),
            Self::U16(v) => Some(v as u64),
            Self::U32(v) => Some(v as u64),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v as f64),
            Self::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::String(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }
}

/// One entry of the tensor index.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` (ne0) is the fastest-varying axis.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
    /// Bytes of data (validated against the file).
    pub size: u64,
}

impl GgufTensorInfo {
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
    /// HF-style shape (outermost first): the ggml dims reversed.
    pub fn hf_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// Header, metadata and tensor index of a GGUF file (no tensor data).
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    /// Metadata keys in file order.
    pub key_order: Vec<String>,
    pub tensors: Vec<GgufTensorInfo>,
    pub alignment: usize,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

type PResult<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "unexpected end of file at byte {} (needed {n} more bytes, {} left)",
                self.pos,
                self.remaining()
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> PResult<u8> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> PResult<u16> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// A length field, checked against the bytes that remain given that each
    /// counted item needs at least `min_item_bytes`.
    fn len(&mut self, what: &str, min_item_bytes: usize) -> PResult<usize> {
        let at = self.pos;
        let n = self.u64()?;
        let max = (self.remaining() / min_item_bytes.max(1)) as u64;
        if n > max {
            return Err(format!(
                "{what} of {n} at byte {at} exceeds what the remaining {} bytes can hold",
                self.remaining()
            ));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> PResult<String> {
        let n = self.len(what, 1)?;
        let at = self.pos;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| format!("{what} at byte {at} is not valid UTF-8"))
    }
}

fn min_size_of_type(t: u32) -> PResult<usize> {
    Ok(match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        other => return Err(format!("unknown metadata value type {other}")),
    })
}

fn read_value(c: &mut Cursor, t: u32, depth: usize) -> PResult<MetaValue> {
    Ok(match t {
        0 => MetaValue::U8(c.u8()?),
        1 => MetaValue::I8(c.u8()? as i8),
        2 => MetaValue::U16(c.u16()?),
        3 => MetaValue::I16(c.u16()? as i16),
        4 => MetaValue::U32(c.u32()?),
        5 => MetaValue::I32(c.u32()? as i32),
        6 => MetaValue::F32(f32::from_bits(c.u32()?)),
        7 => match c.u8()? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => return Err(format!("bool value {b} at byte {}", c.pos - 1)),
        },
        8 => MetaValue::String(c.string("string length")?),
        9 => MetaValue::Array(read_array(c, depth + 1)?),
        10 => MetaValue::U64(c.u64()?),
        11 => MetaValue::I64(c.u64()? as i64),
        12 => MetaValue::F64(f64::from_bits(c.u64()?)),
        other => return Err(format!("unknown metadata value type {other}")),
    })
}

fn read_array(c: &mut Cursor, depth: usize) -> PResult<MetaArray> {
    if depth > MAX_NESTING {
        return Err(format!("arrays nested deeper than {MAX_NESTING}"));
    }
    let t = c.u32()?;
    let n = c.len("array length", min_size_of_type(t)?)?;
    macro_rules! many {
        ($variant:ident, $e:expr) => {{
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push($e);
            }
            MetaArray::$variant(v)
        }};
    }
    Ok(match t {
        0 => MetaArray::U8(c.take(n)?.to_vec()),
        1 => MetaArray::I8(c.take(n)?.iter().map(|&b| b as i8).collect()),
        2 => many!(U16, c.u16()?),
        3 => many!(I16, c.u16()? as i16),
        4 => many!(U32, c.u32()?),
        5 => many!(I32, c.u32()? as i32),
        6 => many!(F32, f32::from_bits(c.u32()?)),
        7 => many!(
            Bool,
            match c.u8()? {
                0 => false,
                1 => true,
                b => return Err(format!("bool value {b} in array")),
            }
        ),
        8 => many!(String, c.string("string length")?),
        9 => many!(Array, read_array(c, depth + 1)?),
        10 => many!(U64, c.u64()?),
        11 => many!(I64, c.u64()? as i64),
        12 => many!(F64, f64::from_bits(c.u64()?)),
        other => return Err(format!("unknown array element type {other}")),
    })
}

/// Parse header, metadata and tensor index from the whole file's bytes, and
/// check that every tensor's data lies inside the file.
pub fn parse_header(buf: &[u8]) -> PResult<GgufHeader> {
    let mut c = Cursor { buf, pos: 0 };
    let magic = c
        .take(4)
        .map_err(|_| "file is shorter than a GGUF header".to_string())?;
    if magic != GGUF_MAGIC {
        return Err(format!("bad magic {magic:02x?} (expected \"GGUF\")"));
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!(
            "unsupported GGUF version {version} (2 and 3 are supported)"
        ));
    }
    // Each tensor info needs >= 8 (name len) + 4 + 8 + 4 + 8 bytes; each kv >= 8 + 4 + 1.
    let n_tensors = c.len("tensor count", 32)?;
    let n_kv = c.len("metadata count", 13)?;
    let mut metadata = BTreeMap::new();
    let mut key_order = Vec::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key length")?;
        let t = c.u32()?;
        let v = read_value(&mut c, t, 0).map_err(|e| format!("metadata `{key}`: {e}"))?;
        if metadata.contains_key(&key) {
            return Err(format!("duplicate metadata key `{key}`"));
        }
        key_order.push(key.clone());
        metadata.insert(key, v);
    }
    let alignment = match metadata.get("general.alignment") {
        None => GGUF_DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
            _ => return Err(format!("general.alignment {v:?} is not a power of two")),
        },
    };
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut names = std::collections::HashSet::new();
    for _ in 0..n_tensors {
        let name = c.string("tensor name length")?;
        let n_dims = c.u32()? as usize;
        if n_dims == 0 || n_dims > GGUF_MAX_DIMS {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions (1..=4 allowed)"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for _ in 0..n_dims {
            dims.push(c.u64()?);
        }
        let ggml_type = GgmlType::from_id(c.u32()?);
        let offset = c.u64()?;
        let numel = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n < (1 << 50))
            .ok_or_else(|| format!("tensor `{name}` dims {dims:?} overflow"))?;
        let (per, bytes) = ggml_type
            .block()
            .ok_or_else(|| format!("tensor `{name}` has unknown ggml type {}", ggml_type.id()))?;
        if dims[0] % per as u64 != 0 {
            return Err(format!(
                "tensor `{name}`: first dimension {} is not a multiple of the {} block size {per}",
                dims[0],
                ggml_type.name()
            ));
        }
        let size = numel / per as u64 * bytes as u64;
        if offset % alignment as u64 != 0 {
            return Err(format!(
                "tensor `{name}` offset {offset} is not aligned to {alignment}"
            ));
        }
        if !names.insert(name.clone()) {
            return Err(format!("duplicate tensor `{name}`"));
        }
        tensors.push(GgufTensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            size,
        });
    }
    let data_offset = (c.pos as u64).div_ceil(alignment as u64) * alignment as u64;
    let data_len = (buf.len() as u64).saturating_sub(data_offset);
    for t in &tensors {
        let end = t.offset.checked_add(t.size);
        if end.is_none_or(|e| e > data_len) {
            return Err(format!(
                "tensor `{}` data ({} bytes at data offset {}) runs past the end of the file ({} data bytes)",
                t.name, t.size, t.offset, data_len
            ));
        }
    }
    Ok(GgufHeader {
        version,
        metadata,
        key_order,
        tensors,
        alignment,
        data_offset,
    })
}

/// An open, memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub header: GgufHeader,
    map: Arc<Mmap>,
    index: std::collections::HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| ModelError::io(&path, e))?;
        // SAFETY: the map is read-only; a file truncated by another process
        // while mapped is outside what any mmap-based loader can defend.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
        let header = parse_header(&map).map_err(|msg| ModelError::Malformed {
            path: path.clone(),
            format: "GGUF",
            msg,
        })?;
        let index = header
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Self {
            path,
            header,
            map: Arc::new(map),
            index,
        })
    }

    pub fn metadata(&self, key: &str) -> Option<&MetaValue> {
        self.header.metadata.get(key)
    }
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.index.get(name).map(|&i| &self.header.tensors[i])
    }
    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }
    /// The raw bytes of a tensor (bounds were validated at open).
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> &[u8] {
        let start = (self.header.data_offset + info.offset) as usize;
        &self.map[start..start + info.size as usize]
    }
    /// Absolute file offset of a tensor's data.
    pub fn absolute_offset(&self, info: &GgufTensorInfo) -> usize {
        (self.header.data_offset + info.offset) as usize
    }
}
