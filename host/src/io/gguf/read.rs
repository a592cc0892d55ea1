//! Reading a GGUF file (versions 2 and 3, little-endian): the header — metadata
//! key/values and tensor infos — is parsed into owned values, and tensor bytes are
//! slices of a memory map. Every count, length and offset read from the file is checked
//! against the bytes that remain before it is used, so a truncated or hostile file is an
//! error naming the key or tensor and the byte offset, and nothing is allocated beyond
//! what the file itself holds.

use std::collections::HashSet;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use crate::io::error::IoError;
use crate::io::gguf::GgufError;
use crate::io::gguf::types::GgmlType;

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";
/// The version this reader and [`crate::io::gguf::GgufWriter`] speak (2 is read too: the
/// same layout).
pub const GGUF_VERSION: u32 = 3;
/// The data section's alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

/// Whether `path` is a file that starts with the GGUF magic bytes (how a model path is
/// told apart from an r1 checkpoint).
pub fn is_gguf_file(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == GGUF_MAGIC)
}

/// The text of token `id` in `tokenizer.ggml.tokens`, if both exist.
pub fn token_text(header: &GgufHeader, id_key: &str) -> Option<String> {
    let id = usize::try_from(header.get(id_key)?.as_u64()?).ok()?;
    let tokens = header.get("tokenizer.ggml.tokens")?.as_array()?.as_strings()?;
    tokens.get(id).cloned()
}

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(MetaArray),
}

/// An array value: all elements of one type. (GGUF allows arrays of arrays; llama.cpp
/// neither writes nor reads them, and neither does r1.)
#[derive(Clone, Debug, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    String(Vec<String>),
}

/// GGUF value type ids (`enum gguf_type`).
pub(crate) mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

impl MetaValue {
    /// A short name of the value's type, for messages (`u32`, `string`, `array of string`).
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(a) => a.type_name(),
        }
    }

    /// An integer of any width and signedness, if it is one and is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// A float (f32, or f64 narrowed).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(v) => Some(v),
            MetaValue::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::F64(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::String(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            MetaArray::U8(_) => "array of u8",
            MetaArray::I8(_) => "array of i8",
            MetaArray::U16(_) => "array of u16",
            MetaArray::I16(_) => "array of i16",
            MetaArray::U32(_) => "array of u32",
            MetaArray::I32(_) => "array of i32",
            MetaArray::U64(_) => "array of u64",
            MetaArray::I64(_) => "array of i64",
            MetaArray::F32(_) => "array of f32",
            MetaArray::F64(_) => "array of f64",
            MetaArray::Bool(_) => "array of bool",
            MetaArray::String(_) => "array of string",
        }
    }

    /// The elements as i64 when the array holds integers (token types are i32 in
    /// llama.cpp's files, but any integer width is accepted).
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        Some(match self {
            MetaArray::U8(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::I8(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::U16(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::I16(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::U32(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::I32(v) => v.iter().map(|&x| x.into()).collect(),
            MetaArray::I64(v) => v.clone(),
            MetaArray::U64(v) => v.iter().map(|&x| i64::try_from(x).unwrap_or(i64::MAX)).collect(),
            _ => return None,
        })
    }

    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            MetaArray::String(v) => Some(v),
            _ => None,
        }
    }
}

/// One tensor of the file, as its info record describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml's order: `dims[0]` (ne0) is the innermost, contiguous dimension — a Hugging
    /// Face `[out, in]` weight is `[in, out]` here. See [`TensorInfo::row_major_shape`].
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// From the start of the data section (a multiple of the alignment).
    pub offset: u64,
    /// Bytes the tensor takes, from its dims and type.
    pub size: u64,
    /// Where the tensor's info record starts in the file, for messages.
    pub info_at: u64,
}

impl TensorInfo {
    /// The shape in row-major (PyTorch / Hugging Face) order: `dims` reversed.
    pub fn row_major_shape(&self) -> Vec<usize> {
        // Each dim fits in the file's byte count (checked when parsed), so in usize.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements (checked when parsed).
    pub fn elems(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// Everything before the data section.
#[derive(Clone, Debug, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    /// In file order; keys are unique.
    pub metadata: Vec<(String, MetaValue)>,
    /// In file order; names are unique.
    pub tensors: Vec<TensorInfo>,
    /// `general.alignment`, or 32.
    pub alignment: u64,
    /// Offset of the data section in the file.
    pub data_start: u64,
}

impl GgufHeader {
    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The string value of `key` (`None` when absent); a value of another type is an
    /// error, given as the detail to report.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(format!("expected a string, found {}", v.type_name())),
        }
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A GGUF file: its parsed header and its bytes (a memory map, or bytes in memory).
pub struct GgufFile {
    bytes: Backing,
    pub header: GgufHeader,
    /// The path, or `<bytes>`, for messages.
    pub label: String,
}

enum Backing {
    Map(Arc<Mmap>),
    Owned(Vec<u8>),
}

impl GgufFile {
    /// Maps `path` and parses its header.
    pub fn open(path: &Path) -> Result<GgufFile, IoError> {
        let file = File::open(path).map_err(|e| IoError::file(path, e))?;
        // SAFETY: the map is read-only and private to this process. As with every reader
        // of memory-mapped model files (llama.cpp, safetensors), a file truncated or
        // rewritten by another process while mapped is outside what r1 guards against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| IoError::file(path, e))?;
        let label = path.display().to_string();
        let header = parse_header(&map, &label)?;
        Ok(GgufFile {
            bytes: Backing::Map(Arc::new(map)),
            header,
            label,
        })
    }

    /// Parses a GGUF file held in memory (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>, label: &str) -> Result<GgufFile, IoError> {
        let header = parse_header(&bytes, label)?;
        Ok(GgufFile {
            bytes: Backing::Owned(bytes),
            header,
            label: label.to_string(),
        })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }

    /// The memory map of a file opened with [`GgufFile::open`] (shared, so tensors can
    /// keep pointing into it).
    pub fn shared_map(&self) -> Option<&Arc<Mmap>> {
        match &self.bytes {
            Backing::Map(m) => Some(m),
            Backing::Owned(_) => None,
        }
    }

    /// The bytes of `tensor` (a tensor of this file's header).
    pub fn tensor_bytes(&self, tensor: &TensorInfo) -> Result<&[u8], IoError> {
        tensor_slice(self.bytes(), &self.header, tensor, &self.label)
    }
}

/// The bytes of `tensor` within `bytes`, the file `header` was parsed from.
pub fn tensor_slice<'a>(
    bytes: &'a [u8],
    header: &GgufHeader,
    tensor: &TensorInfo,
    file: &str,
) -> Result<&'a [u8], IoError> {
    let range = header
        .data_start
        .checked_add(tensor.offset)
        .and_then(|start| Some((start, start.checked_add(tensor.size)?)));
    range
        .and_then(|(start, end)| bytes.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?))
        .ok_or_else(|| {
            gguf_err(
                file,
                GgufError::TensorOutOfBounds {
                    tensor: tensor.name.clone(),
                    offset: tensor.offset,
                    size: tensor.size,
                    data_len: (bytes.len() as u64).saturating_sub(header.data_start),
                },
            )
        })
}

pub(crate) fn gguf_err(file: &str, kind: GgufError) -> IoError {
    IoError::Gguf {
        file: file.to_string(),
        kind,
    }
}

/// Parses the header of a GGUF file and checks every tensor against the data section.
pub fn parse_header(bytes: &[u8], file: &str) -> Result<GgufHeader, IoError> {
    parse(bytes).map_err(|kind| gguf_err(file, kind))
}

fn parse(bytes: &[u8]) -> Result<GgufHeader, GgufError> {
    let mut r = Reader { bytes, pos: 0 };
    let magic = r.take(4, "the magic bytes")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::Magic { found: magic.to_vec() });
    }
    let version = r.u32("the version")?;
    if version & 0xffff == 0 && version != 0 {
        return Err(GgufError::BigEndian);
    }
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version(version));
    }
    let n_tensors = r.u64("the tensor count")?;
    let n_kv = r.u64("the metadata count")?;
    // A key/value takes at least 13 bytes (key length, value type, a one-byte value) and a
    // tensor info at least 32 (name length, dimension count, one dimension, type, offset):
    // larger counts cannot be in the file, and are refused before anything is allocated.
    let remaining = r.remaining();
    if n_kv > remaining / 13 {
        return Err(GgufError::Count {
            what: "metadata key/values",
            count: n_kv,
            offset: 16,
            len: bytes.len() as u64,
        });
    }
    if n_tensors > remaining / 32 {
        return Err(GgufError::Count {
            what: "tensors",
            count: n_tensors,
            offset: 8,
            len: bytes.len() as u64,
        });
    }

    // Sets, not scans: a hostile file may hold hundreds of thousands of entries.
    let mut keys = HashSet::new();
    let mut metadata: Vec<(String, MetaValue)> = Vec::new();
    for i in 0..n_kv {
        let at = r.pos as u64;
        let key = r.string(&|| format!("the key of metadata entry #{i}"))?;
        if !keys.insert(key.clone()) {
            return Err(GgufError::DuplicateKey { key, offset: at });
        }
        let what = || format!("the value of metadata key `{key}`");
        let ty = r.u32(&what())?;
        let value = r.value(ty, &what)?;
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, MetaValue::U32(a))) if *a > 0 && a.is_power_of_two() => u64::from(*a),
        Some((_, v)) => {
            return Err(GgufError::Metadata {
                key: "general.alignment".into(),
                detail: format!("{v:?} is not a power of two (a u32)"),
            });
        }
    };

    let mut names = HashSet::new();
    let mut tensors: Vec<TensorInfo> = Vec::new();
    for i in 0..n_tensors {
        let info_at = r.pos as u64;
        let name = r.string(&|| format!("the name of tensor #{i}"))?;
        if !names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor { name, offset: info_at });
        }
        let what = |field: &str| format!("the {field} of tensor `{name}`");
        let n_dims = r.u32(&what("dimension count"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(GgufError::Tensor {
                tensor: name,
                offset: info_at,
                detail: format!("{n_dims} dimensions (1 to {MAX_DIMS} are allowed)"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64(&what("dimensions"))?);
        }
        let type_id = r.u32(&what("type"))?;
        let offset = r.u64(&what("offset"))?;
        let Some(ggml_type) = GgmlType::from_id(type_id) else {
            return Err(GgufError::UnknownType {
                tensor: name,
                id: type_id,
                offset: info_at,
            });
        };
        let bad = |detail: String| GgufError::Tensor {
            tensor: name.clone(),
            offset: info_at,
            detail,
        };
        let Some(elems) = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d)) else {
            return Err(bad(format!("dimensions {dims:?} overflow")));
        };
        let Some(size) = ggml_type.bytes_for(dims[0], elems) else {
            return Err(bad(format!(
                "dimensions {dims:?} of type {ggml_type}: the row length {} is not a multiple of its block of {} or the size overflows",
                dims[0], ggml_type.block_elems
            )));
        };
        if !offset.is_multiple_of(alignment) {
            return Err(bad(format!(
                "data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            size,
            info_at,
        });
    }

    let header_end = r.pos as u64;
    let data_start = header_end.div_ceil(alignment).saturating_mul(alignment);
    let len = bytes.len() as u64;
    let data_len = len.saturating_sub(data_start);
    if !tensors.is_empty() && data_start > len {
        return Err(GgufError::Truncated {
            what: "the data section".into(),
            offset: header_end,
            needed: data_start - header_end,
            len,
        });
    }
    for t in &tensors {
        if t.offset.checked_add(t.size).is_none_or(|end| end > data_len) {
            return Err(GgufError::TensorOutOfBounds {
                tensor: t.name.clone(),
                offset: t.offset,
                size: t.size,
                data_len,
            });
        }
    }
    Ok(GgufHeader {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
    })
}

/// A cursor over the file's bytes whose every read is bounds-checked.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: impl AsWhat) -> Result<&'a [u8], GgufError> {
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n));
        match end.and_then(|end| Some((end, self.bytes.get(self.pos..end)?))) {
            Some((end, s)) => {
                self.pos = end;
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                what: what.what(),
                offset: self.pos as u64,
                needed: n,
                len: self.bytes.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: impl AsWhat) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: impl AsWhat) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl AsWhat) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let at = self.pos as u64;
        let n = self.u64(what)?;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|e| GgufError::Invalid {
            what: what(),
            offset: at,
            detail: format!("the string is not UTF-8 ({e})"),
        })
    }

    fn bool(&mut self, what: &dyn Fn() -> String) -> Result<bool, GgufError> {
        let at = self.pos as u64;
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(GgufError::Invalid {
                what: what(),
                offset: at,
                detail: format!("a bool must be 0 or 1, found {b}"),
            }),
        }
    }

    /// One value of type `ty`.
    fn value(&mut self, ty: u32, what: &dyn Fn() -> String) -> Result<MetaValue, GgufError> {
        use value_type as t;
        Ok(match ty {
            t::U8 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            t::I8 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            t::U16 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            t::I16 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            t::U32 => MetaValue::U32(u32::from_le_bytes(self.array(what)?)),
            t::I32 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            t::U64 => MetaValue::U64(u64::from_le_bytes(self.array(what)?)),
            t::I64 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            t::F32 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            t::F64 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            t::BOOL => MetaValue::Bool(self.bool(what)?),
            t::STRING => MetaValue::String(self.string(what)?),
            t::ARRAY => MetaValue::Array(self.meta_array(what)?),
            other => {
                return Err(GgufError::Invalid {
                    what: what(),
                    offset: self.pos.saturating_sub(4) as u64,
                    detail: format!("unknown value type {other}"),
                });
            }
        })
    }

    fn meta_array(&mut self, what: &dyn Fn() -> String) -> Result<MetaArray, GgufError> {
        use value_type as t;
        let at = self.pos as u64;
        let ty = self.u32(what)?;
        let n = self.u64(what)?;
        // The smallest an element can be in the file: refuse counts it cannot hold
        // before allocating for them.
        let min_elem: u64 = match ty {
            t::U8 | t::I8 | t::BOOL => 1,
            t::U16 | t::I16 => 2,
            t::U32 | t::I32 | t::F32 => 4,
            t::U64 | t::I64 | t::F64 | t::STRING => 8,
            t::ARRAY => {
                return Err(GgufError::Invalid {
                    what: what(),
                    offset: at,
                    detail: "arrays of arrays are not supported".into(),
                });
            }
            other => {
                return Err(GgufError::Invalid {
                    what: what(),
                    offset: at,
                    detail: format!("array of unknown value type {other}"),
                });
            }
        };
        if n.checked_mul(min_elem).is_none_or(|b| b > self.remaining()) {
            return Err(GgufError::Truncated {
                what: format!("{} ({n} elements of value type {ty})", what()),
                offset: self.pos as u64,
                needed: n.saturating_mul(min_elem),
                len: self.bytes.len() as u64,
            });
        }
        let n = n as usize; // ≤ the file's length, checked above
        macro_rules! fixed {
            ($variant:ident, $ty:ty) => {{
                let raw = self.take((n * size_of::<$ty>()) as u64, what)?;
                MetaArray::$variant(
                    raw.chunks_exact(size_of::<$ty>())
                        .map(|c| <$ty>::from_le_bytes(c.try_into().unwrap_or_default()))
                        .collect(),
                )
            }};
        }
        Ok(match ty {
            t::U8 => fixed!(U8, u8),
            t::I8 => fixed!(I8, i8),
            t::U16 => fixed!(U16, u16),
            t::I16 => fixed!(I16, i16),
            t::U32 => fixed!(U32, u32),
            t::I32 => fixed!(I32, i32),
            t::U64 => fixed!(U64, u64),
            t::I64 => fixed!(I64, i64),
            t::F32 => fixed!(F32, f32),
            t::F64 => fixed!(F64, f64),
            t::BOOL => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.bool(what)?);
                }
                MetaArray::Bool(v)
            }
            _ => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(&|| format!("{} (element {i})", what()))?);
                }
                MetaArray::String(v)
            }
        })
    }
}

/// What a read is of, for messages: a fixed text or one built only on failure.
trait AsWhat: Copy {
    fn what(self) -> String;
}

impl AsWhat for &str {
    fn what(self) -> String {
        self.to_string()
    }
}

impl AsWhat for &String {
    fn what(self) -> String {
        self.clone()
    }
}

impl AsWhat for &dyn Fn() -> String {
    fn what(self) -> String {
        self()
    }
}
