//! `IoError`: every way reading or writing a model directory, GGUF file, tokenizer,
//! dataset or checkpoint can fail, each naming the file and the tensor, field or line at fault.

use std::path::{Path, PathBuf};

/// An error of the `io` module. Files are named by the label they were opened under
/// (their path, or `<bytes>` for in-memory input).
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// A file could not be read, written, synced or renamed.
    #[error("{}: {source}", .path.display())]
    File { path: PathBuf, source: std::io::Error },

    /// A JSON document that does not parse, with the location serde_json reports.
    #[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },

    /// A field of a JSON document (config.json, a shard index) that is missing, has the
    /// wrong type or value, or asks for something r1 does not implement.
    #[error("{file}: field `{field}`: {detail}")]
    Field {
        file: String,
        field: String,
        detail: String,
    },

    /// A safetensors file whose header, lengths or offsets are broken.
    #[error("{file}: not a valid safetensors file: {detail}")]
    Safetensors { file: String, detail: String },

    /// A tensor stored in a dtype r1 does not load.
    #[error("{file}: tensor `{name}` has dtype {dtype}; r1 loads F32, BF16 and F16 weights")]
    Dtype { file: String, name: String, dtype: String },

    /// An FP8 (F8_E4M3) weight or its block scale that cannot be loaded: no scale, a scale
    /// of the wrong shape or for a weight that is not FP8, NaN values, no fp8
    /// `quantization_config`, or FP8 where no scale is expected.
    #[error("{file}: tensor `{name}` {detail}")]
    Fp8 { file: String, name: String, detail: String },

    /// A weight the config calls for is absent.
    #[error("tensor `{name}` is missing from {location}")]
    MissingTensor { name: String, location: String },

    /// A weight whose shape is not the one the config implies.
    #[error("{file}: tensor `{name}` has shape {found:?}, the config implies {expected:?}")]
    Shape {
        file: String,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A tensor that is not a weight of the configured model (a different layer count or
    /// architecture than config.json says).
    #[error("{file}: tensor `{name}` is not a weight of this {arch} config")]
    UnexpectedTensor { file: String, name: String, arch: String },

    /// The same tensor in two places.
    #[error("tensor `{name}` is stored twice: in {first} and in {second}")]
    DuplicateTensor {
        name: String,
        first: String,
        second: String,
    },

    /// `tie_word_embeddings` is set but the file's `lm_head.weight` is not the embedding.
    #[error("{file}: `lm_head.weight` differs from `model.embed_tokens.weight` although tie_word_embeddings is true")]
    TiedMismatch { file: String },

    /// A shard named by `model.safetensors.index.json` that is not in the directory.
    #[error("{index}: shard `{shard}` (holding `{tensor}`) is not in the model directory")]
    MissingShard {
        index: String,
        shard: String,
        tensor: String,
    },

    /// A model directory without weights r1 can read.
    #[error("{}: no model.safetensors or model.safetensors.index.json{hint}", .dir.display())]
    NoWeights { dir: PathBuf, hint: &'static str },

    /// A tokenizer that cannot be loaded or fails on its input.
    #[error("tokenizer {file}: {detail}")]
    Tokenizer { file: String, detail: String },

    /// Text given to a model that has no tokenizer (a model directory without
    /// `tokenizer.json`): such a model runs on token ids only.
    #[error(
        "model {model} has no tokenizer.json; this command needs text (token ids work without one, e.g. `r1host logprobs --tokens 1,2,3`)"
    )]
    NoTokenizer { model: String },

    /// A token id that is not in the vocabulary.
    #[error("token id {id} at position {position} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange {
        id: u32,
        position: usize,
        vocab_size: usize,
    },

    /// A dataset line that is not a JSON object of the expected shape.
    #[error("{file}, line {line}: {detail}")]
    DatasetLine { file: String, line: usize, detail: String },

    /// A dataset row without one of the configured fields.
    #[error("{file}, line {line}: missing field `{field}`")]
    MissingField { file: String, line: usize, field: String },

    /// A dataset with no rows (blank lines do not count).
    #[error("{file}: the dataset has no rows")]
    EmptyDataset { file: String },

    /// A checkpoint that is torn, foreign or inconsistent.
    #[error("checkpoint {file}: {kind}")]
    Checkpoint { file: String, kind: CheckpointError },

    /// A GGUF file that is truncated, corrupt, or holds what r1 does not read yet.
    #[error("GGUF {file}: {kind}")]
    Gguf {
        file: String,
        kind: crate::io::gguf::GgufError,
    },
}

/// Why a checkpoint cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The file does not start with the `R1CKPT` magic: not a checkpoint of ours.
    #[error("not an r1 checkpoint (it does not start with the R1CKPT magic bytes)")]
    Foreign,
    /// An r1 checkpoint of another format version.
    #[error("format version {found} is not readable by this build (it reads version {supported})")]
    Version { found: u16, supported: u16 },
    /// Fewer bytes than the header announces: the write was cut short.
    #[error("torn checkpoint: truncated to {found} bytes, the header announces {expected}")]
    Truncated { expected: u64, found: u64 },
    /// More bytes than the header announces.
    #[error("{extra} unexpected bytes after the payload")]
    TrailingBytes { extra: u64 },
    /// The payload's sha256 is not the one in the header.
    #[error("torn or corrupted checkpoint: the payload's sha256 does not match the header")]
    Checksum,
    /// The payload passed its checksum but does not decode (written by a buggy writer).
    #[error("payload does not decode: {0}")]
    Decode(String),
    /// The payload decodes but its content is inconsistent.
    #[error("{0}")]
    Invalid(String),
}

impl IoError {
    pub(crate) fn file(path: &Path, source: std::io::Error) -> IoError {
        IoError::File {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn json(file: &str, e: &serde_json::Error) -> IoError {
        IoError::Json {
            file: file.to_string(),
            line: e.line(),
            column: e.column(),
            message: json_message(e),
        }
    }
}

/// serde_json's message without its trailing " at line L column C" (reported separately).
pub(crate) fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&suffix).map(str::to_string).unwrap_or(full)
}
