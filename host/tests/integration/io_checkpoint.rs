//! Checkpoints: exact round trips, atomic replacement, and a named error for every torn or
//! foreign file.

use crate::io_support;

use io_support::{fixtures, tiny_config, tiny_weights};
use r1_host::io::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointError, IoError, OptimizerState, Tokenizer, TokenizerSpec, Weights,
    decode_checkpoint, encode_checkpoint, load_checkpoint, load_checkpoint_bytes, save_checkpoint,
};

fn sample(with_optimizer: bool) -> Checkpoint {
    let config = tiny_config(false);
    let weights = tiny_weights(&config);
    let scaled = |k: f32| Weights {
        tensors: weights
            .iter()
            .map(|t| r1_host::io::NamedTensor {
                data: t.data.iter().map(|v| v * k).collect(),
                ..t.clone()
            })
            .collect(),
    };
    let optimizer = with_optimizer.then(|| OptimizerState {
        step: 1234,
        m: scaled(0.1),
        v: scaled(0.01),
    });
    Checkpoint {
        config,
        tokenizer: TokenizerSpec::ByteLevel,
        weights,
        optimizer,
        trainer_state: b"rng=42;epoch=3".to_vec(),
    }
}

fn kind(err: IoError) -> CheckpointError {
    match err {
        IoError::Checkpoint { kind, .. } => kind,
        other => panic!("expected a checkpoint error, got {other}"),
    }
}

#[test]
fn checkpoint_round_trips_exactly() {
    for with_optimizer in [true, false] {
        let ckpt = sample(with_optimizer);
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("step-10.r1ckpt");
        save_checkpoint(&path, &ckpt).expect("save");
        assert_eq!(load_checkpoint(&path).expect("load"), ckpt);
    }
}

#[test]
fn non_finite_and_negative_zero_values_survive() {
    let mut ckpt = sample(false);
    ckpt.weights.tensors[0].data[..4].copy_from_slice(&[f32::NAN, f32::INFINITY, -0.0, f32::MIN_POSITIVE / 2.0]);
    let back = load_checkpoint_bytes(&encode_checkpoint(&ckpt).expect("encode")).expect("decode");
    let bits = |w: &Weights| w.tensors[0].data[..4].iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back.weights), bits(&ckpt.weights));
}

#[test]
fn hf_tokenizer_is_stored_in_the_checkpoint() {
    let bytes = std::fs::read(fixtures().join("tokenizer/tokenizer.json")).expect("tokenizer.json");
    let hf = r1_host::io::HfTokenizer::from_json_bytes(&bytes, "t", None, None).expect("load");
    let mut ckpt = sample(false);
    ckpt.tokenizer = Tokenizer::HuggingFace(Box::new(hf)).spec();
    let back = load_checkpoint_bytes(&encode_checkpoint(&ckpt).expect("encode")).expect("decode");
    assert_eq!(back.tokenizer, ckpt.tokenizer);
    let t = Tokenizer::from_spec(&back.tokenizer).expect("rebuild");
    assert_eq!(
        t.decode(&t.encode("<think>hi</think>").expect("enc")).expect("dec"),
        "<think>hi</think>"
    );
}

#[test]
fn file_starts_with_magic_and_version() {
    let bytes = encode_checkpoint(&sample(false)).expect("encode");
    assert_eq!(&bytes[..6], b"R1CKPT");
    assert_eq!(u16::from_le_bytes([bytes[6], bytes[7]]), CHECKPOINT_VERSION);
    assert_eq!(
        u64::from_le_bytes(bytes[8..16].try_into().expect("8")) as usize,
        bytes.len() - 48
    );
}

#[test]
fn truncated_checkpoint_is_reported_as_torn() {
    let bytes = encode_checkpoint(&sample(true)).expect("encode");
    for cut in [3, 7, 20, 48, bytes.len() / 2, bytes.len() - 1] {
        match kind(load_checkpoint_bytes(&bytes[..cut]).expect_err("truncated")) {
            CheckpointError::Truncated { found, .. } => assert_eq!(found, cut as u64),
            other => panic!("cut at {cut}: expected Truncated, got {other}"),
        }
    }
    let err = load_checkpoint_bytes(&bytes[..bytes.len() - 1]).expect_err("torn");
    assert!(err.to_string().contains("torn checkpoint"), "{err}");
}

#[test]
fn flipped_payload_byte_fails_the_checksum() {
    let mut bytes = encode_checkpoint(&sample(true)).expect("encode");
    let mid = 48 + (bytes.len() - 48) / 2;
    bytes[mid] ^= 0x40;
    assert_eq!(
        kind(load_checkpoint_bytes(&bytes).expect_err("corrupt")),
        CheckpointError::Checksum
    );
}

#[test]
fn foreign_files_are_not_mistaken_for_checkpoints() {
    let safetensors = std::fs::read(fixtures().join("hf/qwen2_gqa_tied/model.safetensors")).expect("read");
    for bytes in [&safetensors[..], b"{\"json\": true}", b"R1CKPX\x01\x00"] {
        assert_eq!(
            kind(load_checkpoint_bytes(bytes).expect_err("foreign")),
            CheckpointError::Foreign
        );
    }
    let err = load_checkpoint_bytes(b"PK\x03\x04").expect_err("zip");
    assert!(err.to_string().contains("not an r1 checkpoint"), "{err}");
}

#[test]
fn other_format_version_is_named() {
    let mut bytes = encode_checkpoint(&sample(false)).expect("encode");
    bytes[6..8].copy_from_slice(&7u16.to_le_bytes());
    assert_eq!(
        kind(load_checkpoint_bytes(&bytes).expect_err("version")),
        CheckpointError::Version {
            found: 7,
            supported: CHECKPOINT_VERSION
        }
    );
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = encode_checkpoint(&sample(false)).expect("encode");
    bytes.extend_from_slice(b"xyz");
    assert_eq!(
        kind(load_checkpoint_bytes(&bytes).expect_err("trailing")),
        CheckpointError::TrailingBytes { extra: 3 }
    );
}

#[test]
fn saving_replaces_the_old_checkpoint_atomically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("last.r1ckpt");
    save_checkpoint(&path, &sample(false)).expect("first save");
    let second = sample(true);
    save_checkpoint(&path, &second).expect("second save");
    assert_eq!(load_checkpoint(&path).expect("load"), second);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("e").file_name().to_string_lossy().into())
        .collect();
    assert_eq!(names, ["last.r1ckpt"], "no temporary files may remain");
}

#[test]
fn inconsistent_checkpoints_are_refused_on_save() {
    let mut ckpt = sample(true);
    ckpt.weights.tensors.pop();
    let err = encode_checkpoint(&ckpt).expect_err("missing weight");
    assert!(
        matches!(&err, IoError::MissingTensor { name, .. } if name == "lm_head.weight"),
        "{err}"
    );

    let mut ckpt = sample(true);
    if let Some(o) = ckpt.optimizer.as_mut() {
        o.m.tensors[1].dims = vec![1, 8];
    }
    assert!(matches!(
        encode_checkpoint(&ckpt).expect_err("moment shape"),
        IoError::Shape { .. }
    ));

    let mut ckpt = sample(false);
    ckpt.weights.tensors[2].data.pop();
    let err = encode_checkpoint(&ckpt).expect_err("short tensor");
    assert!(err.to_string().contains(&ckpt.weights.tensors[2].name), "{err}");
}

#[test]
fn a_checkpoint_of_another_model_fails_on_its_weights() {
    // Valid frame and checksum, but weights that do not match the stored config: built by
    // re-encoding with a config that has a different vocabulary.
    let mut ckpt = sample(false);
    let bytes = encode_checkpoint(&ckpt).expect("encode");
    assert!(decode_checkpoint(&bytes, "ok").is_ok());
    ckpt.config.vocab_size = 21;
    let err = encode_checkpoint(&ckpt).expect_err("mismatched");
    assert!(
        matches!(&err, IoError::Shape { name, .. } if name == "model.embed_tokens.weight"),
        "{err}"
    );
}

#[test]
fn missing_checkpoint_file_names_the_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    let err = load_checkpoint(&dir.path().join("nope.r1ckpt")).expect_err("missing");
    assert!(err.to_string().contains("nope.r1ckpt"), "{err}");
}
