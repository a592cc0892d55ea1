//! GGUF files, the format of llama.cpp and its tools (version 3, little-endian):
//!
//! - `read.rs`: the header (metadata key/values of every value type, tensor infos,
//!   `general.alignment`, the data section) parsed with every count, length and offset
//!   checked; tensor bytes are slices of a memory map ([`GgufFile`]).
//! - `types.rs`: ggml's tensor types with their block sizes ([`GgmlType`]).
//! - `write.rs`: [`GgufWriter`], metadata and tensors written atomically.
//! - `model.rs`: a `qwen2` or `llama` file as r1's [`ModelConfig`](r1_core::model::ModelConfig)
//!   and Hugging Face-named f32 weights (llama's q/k row permutation undone).
//! - `tokenizer.rs`: the `gpt2` (byte-level BPE) tokenizer of the metadata as a
//!   `tokenizer.json`, and `tokenizer.chat_template`.
//! - `quant_mix.rs`: the type of each tensor for a file type (`q4_k_m`…), as
//!   `llama-quantize` picks it; `write_model.rs`: a model as a complete GGUF file (the
//!   converter's metadata, tensors quantized by that mix); `write_tokenizer.rs`: a
//!   tokenizer as `tokenizer.ggml.*` metadata (the inverse of `tokenizer.rs`).

pub mod model;
pub mod quant_mix;
pub mod read;
pub mod tokenizer;
pub mod types;
pub mod write;
pub mod write_model;
pub mod write_tokenizer;

pub use model::{GgufModel, gguf_model_from_bytes, load_gguf_model};
pub use quant_mix::FileType;
pub use read::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, GgufFile, GgufHeader, MetaArray, MetaValue, TensorInfo, is_gguf_file,
    parse_header, token_text,
};
pub use tokenizer::{gguf_chat_template, gguf_tokenizer, gguf_tokenizer_json};
pub use types::{GGML_TYPES, GgmlType};
pub use write::GgufWriter;
pub use write_model::{WrittenTensor, model_to_gguf};

/// Why a GGUF file cannot be read. Each names the key or tensor at fault and, where the
/// file is at fault, the byte offset.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GgufError {
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file (it starts with {found:02x?}, not the magic bytes `GGUF`)")]
    Magic { found: Vec<u8> },
    /// A GGUF version other than 2 or 3.
    #[error("GGUF version {0} is not read by r1 (it reads versions 2 and 3)")]
    Version(u32),
    /// A big-endian file (its version reads byte-swapped).
    #[error("a big-endian GGUF file; r1 reads little-endian ones")]
    BigEndian,
    /// The file ends before a field does.
    #[error("truncated: {what} at byte {offset} needs {needed} bytes, but the file has {len}")]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        len: u64,
    },
    /// A count of the header larger than the file could hold.
    #[error("the header announces {count} {what} (at byte {offset}), more than a {len}-byte file can hold")]
    Count {
        what: &'static str,
        count: u64,
        offset: u64,
        len: u64,
    },
    /// A field whose bytes are there but mean nothing valid.
    #[error("{what} at byte {offset}: {detail}")]
    Invalid { what: String, offset: u64, detail: String },
    /// The same metadata key twice.
    #[error("metadata key `{key}` (at byte {offset}) appears twice")]
    DuplicateKey { key: String, offset: u64 },
    /// The same tensor name twice.
    #[error("tensor `{name}` (info at byte {offset}) appears twice")]
    DuplicateTensor { name: String, offset: u64 },
    /// A tensor info that is inconsistent (dimensions, block size, alignment).
    #[error("tensor `{tensor}` (info at byte {offset}): {detail}")]
    Tensor {
        tensor: String,
        offset: u64,
        detail: String,
    },
    /// A type id ggml does not define.
    #[error("tensor `{tensor}` (info at byte {offset}) has ggml type id {id}, which is not a type ggml defines")]
    UnknownType { tensor: String, id: u32, offset: u64 },
    /// A tensor whose bytes lie outside the data section.
    #[error(
        "tensor `{tensor}`: its {size} bytes at data offset {offset} run past the end of the data section ({data_len} bytes; truncated file?)"
    )]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        size: u64,
        data_len: u64,
    },
    /// A metadata key that is missing, of the wrong type, or of a value r1 cannot use.
    #[error("metadata key `{key}`: {detail}")]
    Metadata { key: String, detail: String },
    /// A block-quantized tensor of a format r1 has no kernel for.
    #[error(
        "tensor `{tensor}` has type {ggml_type}: r1 runs the block-quantized types Q8_0, Q4_0, Q5_0, Q4_K and Q6_K (and reads F32, F16, BF16); requantize the file to one of those"
    )]
    Quantized { tensor: String, ggml_type: String },
    /// A plain type r1 does not load as a weight (integers, F64).
    #[error("tensor `{tensor}` has type {ggml_type}, which r1 does not read yet (it reads F32, F16 and BF16)")]
    UnsupportedType { tensor: String, ggml_type: String },
    /// A model-level inconsistency: an architecture r1 does not build, a tensor that is
    /// not a weight of the architecture, a shape the metadata contradicts.
    #[error("{0}")]
    Model(String),
}
