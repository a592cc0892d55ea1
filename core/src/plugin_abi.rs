//! The reward-plugin ABI v1 wire types (postcard), shared by the host and the guest SDK:
//! export and import names, the request/response structs, the packed pointer/length
//! convention and the default limits. `plugins/ABI.md` states the same contract for
//! authors in any language; keep the two in step.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::reward::{Sample, Score};

/// The ABI version this crate speaks; a plugin's `r1_abi_version` export must return it.
pub const ABI_VERSION: u32 = 1;

/// Names of the plugin's exports.
pub mod export {
    /// The guest's linear memory (32-bit, not shared).
    pub const MEMORY: &str = "memory";
    /// `() -> i32`: the ABI version the plugin was written for ([`super::ABI_VERSION`]).
    pub const ABI_VERSION: &str = "r1_abi_version";
    /// `(len: i32) -> i32`: reserve `len` bytes for the host to write input into;
    /// returns the address, or 0 when it cannot.
    pub const ALLOC: &str = "r1_alloc";
    /// `() -> i64`: packed pointer/length of a postcard [`super::PluginInfo`].
    pub const INFO: &str = "r1_info";
    /// Optional, `(ptr: i32, len: i32) -> i32`: the plugin's config as UTF-8 JSON text
    /// (`null` when the run gives none); returns 0 to accept it, anything else to reject
    /// it (the reason is what the plugin logged through `r1.log`).
    pub const INIT: &str = "r1_init";
    /// `(ptr: i32, len: i32) -> i64`: a postcard [`super::ScoreRequest`] in, packed
    /// pointer/length of a postcard [`super::ScoreResponse`] out.
    pub const SCORE: &str = "r1_score";
}

/// The only import module a plugin may link against, and its functions.
pub mod import {
    /// The host's import module.
    pub const MODULE: &str = "r1";
    /// `(ptr: i32, len: i32)`: append one diagnostic line (UTF-8; invalid bytes are
    /// replaced) to this evaluation's log. Lines beyond the log limits are dropped.
    pub const LOG: &str = "log";
    /// `(index: i32)`: the plugin is now working on sample `index`, so a trap or a
    /// timeout from here on is reported against that sample.
    pub const SAMPLE: &str = "sample";
}

/// Limits a host applies unless configured otherwise, and fixed caps of the ABI.
pub mod limits {
    /// Wall-time budget of one evaluation (instantiate + init + score), milliseconds.
    pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
    /// Linear memory a plugin may grow to (bytes).
    pub const DEFAULT_MAX_MEMORY_BYTES: u64 = 64 << 20;
    /// Size of a module the host agrees to compile (bytes).
    pub const DEFAULT_MAX_MODULE_BYTES: u64 = 16 << 20;
    /// Wasm stack a call may use (bytes); deeper recursion traps with a stack overflow.
    pub const DEFAULT_MAX_WASM_STACK_BYTES: usize = 512 << 10;
    /// Elements across a plugin's tables.
    pub const MAX_TABLE_ELEMENTS: usize = 100_000;
    /// Lines kept from `r1.log` per evaluation; later lines are counted and dropped.
    pub const MAX_LOG_LINES: usize = 64;
    /// Bytes kept from `r1.log` per evaluation (all lines together).
    pub const MAX_LOG_BYTES: usize = 16 << 10;
    /// Diagnostics kept from one [`super::ScoreResponse`]; later ones are dropped.
    pub const MAX_DIAGNOSTICS: usize = 1_024;
    /// Bytes of one diagnostic message kept (longer ones are cut at a char boundary).
    pub const MAX_DIAGNOSTIC_BYTES: usize = 4 << 10;
    /// Bytes of the `r1_info` strings together.
    pub const MAX_INFO_BYTES: usize = 64 << 10;
}

/// What a plugin says about itself (`r1_info`).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PluginInfo {
    /// Short name shown in logs and errors (e.g. `"math-accuracy"`).
    pub name: String,
    /// The plugin's own version string (free-form; not the ABI version).
    pub version: String,
    /// One line on what the plugin rewards.
    pub description: String,
}

/// Input of `r1_score`: one group of samples (for GRPO, the G completions of one prompt).
///
/// Wire format (postcard): `varint(n)` then each [`Sample`] as `prompt`, `completion`
/// (each `varint(len) ++ utf8`), `reference` (`0x00`, or `0x01 ++ string`), `metadata`
/// (`varint(m)` then `m` pairs of strings).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreRequest {
    /// The group to score, in order.
    pub samples: Vec<Sample>,
}

/// The borrowed twin of [`ScoreRequest`]: the same bytes on the wire, so the host can
/// encode a batch without cloning it.
#[derive(serde::Serialize)]
struct ScoreRequestRef<'a> {
    samples: &'a [Sample],
}

/// Output of `r1_score`: exactly one score per request sample, in order, plus optional
/// diagnostics.
///
/// Wire format (postcard): `varint(n)` then each [`Score`] as `0x00 ++ f32 (LE)` for a
/// value or `0x01` for "not applicable"; then `varint(d)` diagnostics, each an optional
/// sample index (`0x00`, or `0x01 ++ varint(i)`) and a message string.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreResponse {
    /// One score per request sample, in request order.
    pub scores: Vec<Score>,
    /// Notes for the user; at most [`limits::MAX_DIAGNOSTICS`] are kept.
    pub diagnostics: Vec<Diagnostic>,
}

/// A note from the plugin about one sample (or the whole group), shown to the user.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    /// Index into the request's samples, or `None` for a note about the whole group.
    pub sample: Option<u32>,
    /// The note (UTF-8; cut to [`limits::MAX_DIAGNOSTIC_BYTES`] by the host).
    pub message: String,
}

/// Why bytes crossing the ABI could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum AbiError {
    /// The bytes are not a valid postcard encoding of `what`.
    Decode {
        /// The message being decoded (`"score request"`, `"plugin info"`…).
        what: &'static str,
        /// postcard's error.
        detail: String,
    },
    /// Bytes were left over after decoding `what`.
    TrailingBytes {
        /// The message that was decoded.
        what: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// Encoding `what` failed (only allocation or size limits can make this happen).
    Encode {
        /// The message being encoded.
        what: &'static str,
        /// postcard's error.
        detail: String,
    },
    /// A response holds `found` scores for a request of `expected` samples.
    ScoreCount {
        /// Score count the response declares.
        found: u64,
        /// Samples in the request.
        expected: usize,
    },
}

impl fmt::Display for AbiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbiError::Decode { what, detail } => write!(f, "{what} is not valid postcard: {detail}"),
            AbiError::TrailingBytes { what, count } => write!(f, "{count} trailing bytes after {what}"),
            AbiError::Encode { what, detail } => write!(f, "could not encode {what}: {detail}"),
            AbiError::ScoreCount { found, expected } => {
                write!(f, "returned {found} scores for {expected} samples")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for AbiError {}

/// Packs a guest pointer and length into the `i64` that `r1_info` and `r1_score` return:
/// `ptr` in the low 32 bits, `len` in the high 32 bits.
pub fn pack_ptr_len(ptr: u32, len: u32) -> u64 {
    (u64::from(len) << 32) | u64::from(ptr)
}

/// The inverse of [`pack_ptr_len`]: `(ptr, len)`.
pub fn unpack_ptr_len(packed: u64) -> (u32, u32) {
    (packed as u32, (packed >> 32) as u32)
}

fn encode<T: serde::Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, AbiError> {
    postcard::to_allocvec(value).map_err(|e| AbiError::Encode {
        what,
        detail: alloc::format!("{e}"),
    })
}

fn decode<'a, T: serde::Deserialize<'a>>(what: &'static str, bytes: &'a [u8]) -> Result<T, AbiError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| AbiError::Decode {
        what,
        detail: alloc::format!("{e}"),
    })?;
    if !rest.is_empty() {
        return Err(AbiError::TrailingBytes {
            what,
            count: rest.len(),
        });
    }
    Ok(value)
}

/// Encodes a group of samples as a [`ScoreRequest`] without cloning them.
pub fn encode_score_request(samples: &[Sample]) -> Result<Vec<u8>, AbiError> {
    encode("score request", &ScoreRequestRef { samples })
}

/// Decodes a [`ScoreRequest`] (the guest side of `r1_score`); leftover bytes are an error.
pub fn decode_score_request(bytes: &[u8]) -> Result<ScoreRequest, AbiError> {
    decode("score request", bytes)
}

/// Encodes a [`ScoreResponse`] (the guest side of `r1_score`).
pub fn encode_score_response(response: &ScoreResponse) -> Result<Vec<u8>, AbiError> {
    encode("score response", response)
}

/// Decodes a [`ScoreResponse`] with no limits; a host reading a plugin's output uses
/// [`decode_score_response_limited`] instead.
pub fn decode_score_response(bytes: &[u8]) -> Result<ScoreResponse, AbiError> {
    decode("score response", bytes)
}

/// Decodes a [`ScoreResponse`] from untrusted bytes with bounded memory: the score count
/// must be `expected_scores` (checked before any score is decoded), and diagnostics past
/// `max_diagnostics` are validated but dropped. Returns the response and the number of
/// diagnostics dropped.
pub fn decode_score_response_limited(
    bytes: &[u8],
    expected_scores: usize,
    max_diagnostics: usize,
) -> Result<(ScoreResponse, usize), AbiError> {
    const WHAT: &str = "score response";
    let fail = |e: postcard::Error| AbiError::Decode {
        what: WHAT,
        detail: alloc::format!("{e}"),
    };
    let (count, mut rest) = postcard::take_from_bytes::<u64>(bytes).map_err(fail)?;
    if count != expected_scores as u64 {
        return Err(AbiError::ScoreCount {
            found: count,
            expected: expected_scores,
        });
    }
    let mut scores = Vec::with_capacity(expected_scores);
    for _ in 0..expected_scores {
        let (score, tail) = postcard::take_from_bytes::<Score>(rest).map_err(fail)?;
        scores.push(score);
        rest = tail;
    }
    let (count, tail) = postcard::take_from_bytes::<u64>(rest).map_err(fail)?;
    rest = tail;
    let mut diagnostics = Vec::new();
    let mut dropped = 0;
    for _ in 0..count {
        // Each diagnostic takes at least two bytes, so this loop ends with the input.
        let (diagnostic, tail) = postcard::take_from_bytes::<Diagnostic>(rest).map_err(fail)?;
        rest = tail;
        if diagnostics.len() < max_diagnostics {
            diagnostics.push(diagnostic);
        } else {
            dropped += 1;
        }
    }
    if !rest.is_empty() {
        return Err(AbiError::TrailingBytes {
            what: WHAT,
            count: rest.len(),
        });
    }
    Ok((ScoreResponse { scores, diagnostics }, dropped))
}

/// Encodes a [`PluginInfo`] (the guest side of `r1_info`).
pub fn encode_plugin_info(info: &PluginInfo) -> Result<Vec<u8>, AbiError> {
    encode("plugin info", info)
}

/// Decodes a [`PluginInfo`]; leftover bytes are an error.
pub fn decode_plugin_info(bytes: &[u8]) -> Result<PluginInfo, AbiError> {
    decode("plugin info", bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn sample(prompt: &str, completion: &str, reference: Option<&str>) -> Sample {
        Sample {
            prompt: prompt.to_string(),
            completion: completion.to_string(),
            reference: reference.map(|r| r.to_string()),
            metadata: vec![("task".to_string(), "math".to_string())],
        }
    }

    #[test]
    fn score_request_wire_format_matches_abi_md() {
        let bytes = encode_score_request(&[sample("p", "ok", Some("7"))]).unwrap();
        // n=1; "p"; "ok"; Some("7"); 1 metadata pair ("task", "math")
        let expected: &[u8] = &[
            1, 1, b'p', 2, b'o', b'k', 1, 1, b'7', 1, 4, b't', b'a', b's', b'k', 4, b'm', b'a', b't', b'h',
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn borrowed_request_decodes_as_owned_request() {
        let samples = vec![
            sample("What is 2+2?", "<answer>4</answer>", Some("4")),
            sample("q", "", None),
        ];
        let bytes = encode_score_request(&samples).unwrap();
        assert_eq!(decode_score_request(&bytes).unwrap(), ScoreRequest { samples });
    }

    #[test]
    fn score_response_wire_format_matches_abi_md() {
        let response = ScoreResponse {
            scores: vec![Score::Value(1.0), Score::NotApplicable],
            diagnostics: vec![Diagnostic {
                sample: Some(1),
                message: "no".to_string(),
            }],
        };
        let bytes = encode_score_response(&response).unwrap();
        let expected: &[u8] = &[2, 0, 0x00, 0x00, 0x80, 0x3f, 1, 1, 1, 1, 2, b'n', b'o'];
        assert_eq!(bytes, expected);
        assert_eq!(decode_score_response(&bytes).unwrap(), response);
    }

    #[test]
    fn response_with_trailing_bytes_is_rejected() {
        let mut bytes = encode_score_response(&ScoreResponse::default()).unwrap();
        bytes.push(0);
        assert_eq!(
            decode_score_response(&bytes),
            Err(AbiError::TrailingBytes {
                what: "score response",
                count: 1
            })
        );
    }

    #[test]
    fn truncated_and_non_utf8_responses_are_decode_errors() {
        assert!(matches!(
            decode_score_response(&[2, 0, 0, 0]),
            Err(AbiError::Decode { .. })
        ));
        // One diagnostic whose message is the invalid UTF-8 byte 0xff.
        assert!(matches!(
            decode_score_response(&[0, 1, 0, 1, 0xff]),
            Err(AbiError::Decode { .. })
        ));
    }

    #[test]
    fn huge_declared_length_fails_without_allocating_it() {
        // varint 2^32-1 scores, then nothing: must fail on the missing bytes, not abort.
        assert!(matches!(
            decode_score_response(&[0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(AbiError::Decode { .. })
        ));
    }

    #[test]
    fn limited_decode_checks_the_count_before_decoding_scores() {
        let response = ScoreResponse {
            scores: vec![Score::Value(0.5); 3],
            diagnostics: vec![],
        };
        let bytes = encode_score_response(&response).unwrap();
        assert_eq!(decode_score_response_limited(&bytes, 3, 8).unwrap(), (response, 0));
        assert_eq!(
            decode_score_response_limited(&bytes, 4, 8),
            Err(AbiError::ScoreCount { found: 3, expected: 4 })
        );
        // A declared count of 2^32-1 with no bytes behind it is a count error, not an allocation.
        assert_eq!(
            decode_score_response_limited(&[0xff, 0xff, 0xff, 0xff, 0x0f], 1, 8),
            Err(AbiError::ScoreCount {
                found: u32::MAX as u64,
                expected: 1
            })
        );
    }

    #[test]
    fn limited_decode_drops_diagnostics_past_the_cap() {
        let diagnostics = (0..5)
            .map(|i| Diagnostic {
                sample: Some(i),
                message: "m".to_string(),
            })
            .collect();
        let bytes = encode_score_response(&ScoreResponse {
            scores: vec![],
            diagnostics,
        })
        .unwrap();
        let (response, dropped) = decode_score_response_limited(&bytes, 0, 2).unwrap();
        assert_eq!(response.diagnostics.len(), 2);
        assert_eq!(dropped, 3);
        assert!(decode_score_response_limited(&bytes[..bytes.len() - 1], 0, 2).is_err());
    }

    #[test]
    fn ptr_len_packing_round_trips_extremes() {
        for (p, l) in [(0, 0), (u32::MAX, 0), (0, u32::MAX), (u32::MAX, u32::MAX), (1024, 17)] {
            assert_eq!(unpack_ptr_len(pack_ptr_len(p, l)), (p, l));
        }
        assert_eq!(pack_ptr_len(8, 2), 0x0000_0002_0000_0008);
    }

    #[test]
    fn plugin_info_round_trips() {
        let info = PluginInfo {
            name: "m".to_string(),
            version: "1".to_string(),
            description: "d".to_string(),
        };
        assert_eq!(decode_plugin_info(&encode_plugin_info(&info).unwrap()).unwrap(), info);
    }
}
