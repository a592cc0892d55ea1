//! [`GgufWriter`]: a GGUF version 3 file from metadata and tensors, laid out as gguf-py
//! and llama.cpp lay it out (tensor infos in the order added, each tensor's data at the
//! next multiple of the alignment), written to a temporary file and renamed into place.

use std::io::Write;
use std::path::Path;

use crate::io::atomic::write_atomically;
use crate::io::error::IoError;
use crate::io::gguf::GgufError;
use crate::io::gguf::read::{DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_DIMS, MetaArray, MetaValue, value_type};
use crate::io::gguf::types::GgmlType;

/// Metadata and tensors to be written as one GGUF file.
#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<PendingTensor>,
    alignment: Option<u64>,
}

#[derive(Clone, Debug)]
struct PendingTensor {
    name: String,
    /// ggml order (innermost first).
    dims: Vec<u64>,
    ggml_type: GgmlType,
    data: Vec<u8>,
}

const LABEL: &str = "GGUF output";

fn invalid(detail: String) -> IoError {
    IoError::Gguf {
        file: LABEL.into(),
        kind: GgufError::Model(detail),
    }
}

impl GgufWriter {
    pub fn new() -> GgufWriter {
        GgufWriter::default()
    }

    /// Adds a metadata key. A key may be added once; `general.alignment` must be a u32
    /// power of two, and sets the alignment of the data.
    pub fn add_metadata(&mut self, key: &str, value: MetaValue) -> Result<(), IoError> {
        if self.metadata.iter().any(|(k, _)| k == key) {
            return Err(invalid(format!("metadata key `{key}` added twice")));
        }
        if key == "general.alignment" {
            match value {
                MetaValue::U32(a) if a > 0 && a.is_power_of_two() => self.alignment = Some(a.into()),
                ref other => {
                    return Err(invalid(format!(
                        "general.alignment must be a u32 power of two, not {other:?}"
                    )));
                }
            }
        }
        self.metadata.push((key.to_string(), value));
        Ok(())
    }

    /// Adds a tensor of `ggml_type` whose dims are given in ggml order (innermost first)
    /// and whose bytes are `data` exactly.
    pub fn add_tensor(&mut self, name: &str, dims: &[u64], ggml_type: GgmlType, data: Vec<u8>) -> Result<(), IoError> {
        if self.tensors.iter().any(|t| t.name == name) {
            return Err(invalid(format!("tensor `{name}` added twice")));
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(invalid(format!(
                "tensor `{name}`: {} dimensions (1 to {MAX_DIMS})",
                dims.len()
            )));
        }
        let size = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .and_then(|n| ggml_type.bytes_for(dims[0], n));
        if size != Some(data.len() as u64) {
            return Err(invalid(format!(
                "tensor `{name}`: {} bytes given, dims {dims:?} of type {ggml_type} take {size:?}",
                data.len()
            )));
        }
        self.tensors.push(PendingTensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        Ok(())
    }

    /// Adds an F32 tensor given in row-major order with its row-major (PyTorch) shape.
    pub fn add_f32(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<(), IoError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add_tensor(name, &ggml_dims(shape), GgmlType::F32, data)
    }

    /// Adds an F16 tensor (values rounded to nearest) given in row-major order.
    pub fn add_f16(&mut self, name: &str, shape: &[usize], values: &[f32]) -> Result<(), IoError> {
        let data = values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        self.add_tensor(name, &ggml_dims(shape), GgmlType::F16, data)
    }

    fn alignment(&self) -> u64 {
        self.alignment.unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_to(&mut out);
        out
    }

    /// Writes the file to `path` atomically (a temporary file renamed over it).
    pub fn write(&self, path: &Path) -> Result<(), IoError> {
        write_atomically(path, |w| self.write_to(w))
    }

    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let align = self.alignment();
        let mut counter = Counting { inner: w, written: 0 };
        let w = &mut counter;
        w.write_all(GGUF_MAGIC)?;
        w.write_all(&GGUF_VERSION.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_string(w, key)?;
            write_value(w, value)?;
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            write_string(w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&t.ggml_type.id.to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
            offset = (offset + t.data.len() as u64).next_multiple_of(align);
        }
        pad(w, align)?;
        for t in &self.tensors {
            w.write_all(&t.data)?;
            pad(w, align)?;
        }
        Ok(())
    }
}

/// Row-major shape → ggml dims (innermost first).
pub fn ggml_dims(shape: &[usize]) -> Vec<u64> {
    shape.iter().rev().map(|&d| d as u64).collect()
}

/// A writer that counts its bytes, for padding.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    written: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn pad<W: Write>(w: &mut Counting<'_, W>, align: u64) -> std::io::Result<()> {
    let n = w.written.next_multiple_of(align) - w.written;
    w.write_all(&vec![0u8; n as usize])
}

fn write_string(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, value: &MetaValue) -> std::io::Result<()> {
    use value_type as t;
    let (ty, bytes): (u32, Vec<u8>) = match value {
        MetaValue::U8(v) => (t::U8, v.to_le_bytes().to_vec()),
        MetaValue::I8(v) => (t::I8, v.to_le_bytes().to_vec()),
        MetaValue::U16(v) => (t::U16, v.to_le_bytes().to_vec()),
        MetaValue::I16(v) => (t::I16, v.to_le_bytes().to_vec()),
        MetaValue::U32(v) => (t::U32, v.to_le_bytes().to_vec()),
        MetaValue::I32(v) => (t::I32, v.to_le_bytes().to_vec()),
        MetaValue::U64(v) => (t::U64, v.to_le_bytes().to_vec()),
        MetaValue::I64(v) => (t::I64, v.to_le_bytes().to_vec()),
        MetaValue::F32(v) => (t::F32, v.to_le_bytes().to_vec()),
        MetaValue::F64(v) => (t::F64, v.to_le_bytes().to_vec()),
        MetaValue::Bool(v) => (t::BOOL, vec![u8::from(*v)]),
        MetaValue::String(s) => {
            w.write_all(&t::STRING.to_le_bytes())?;
            return write_string(w, s);
        }
        MetaValue::Array(a) => {
            w.write_all(&t::ARRAY.to_le_bytes())?;
            return write_array(w, a);
        }
    };
    w.write_all(&ty.to_le_bytes())?;
    w.write_all(&bytes)
}

fn write_array(w: &mut impl Write, a: &MetaArray) -> std::io::Result<()> {
    use value_type as t;
    macro_rules! fixed {
        ($ty:expr, $v:expr) => {{
            w.write_all(&$ty.to_le_bytes())?;
            w.write_all(&($v.len() as u64).to_le_bytes())?;
            for x in $v {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        }};
    }
    match a {
        MetaArray::U8(v) => fixed!(t::U8, v),
        MetaArray::I8(v) => fixed!(t::I8, v),
        MetaArray::U16(v) => fixed!(t::U16, v),
        MetaArray::I16(v) => fixed!(t::I16, v),
        MetaArray::U32(v) => fixed!(t::U32, v),
        MetaArray::I32(v) => fixed!(t::I32, v),
        MetaArray::U64(v) => fixed!(t::U64, v),
        MetaArray::I64(v) => fixed!(t::I64, v),
        MetaArray::F32(v) => fixed!(t::F32, v),
        MetaArray::F64(v) => fixed!(t::F64, v),
        MetaArray::Bool(v) => {
            w.write_all(&t::BOOL.to_le_bytes())?;
            w.write_all(&(v.len() as u64).to_le_bytes())?;
            w.write_all(&v.iter().map(|&b| u8::from(b)).collect::<Vec<_>>())
        }
        MetaArray::String(v) => {
            w.write_all(&t::STRING.to_le_bytes())?;
            w.write_all(&(v.len() as u64).to_le_bytes())?;
            v.iter().try_for_each(|s| write_string(w, s))
        }
    }
}
