//! Stable-toolchain stand-in for the fuzz targets (see `fuzz/`): mutated and random bytes
//! through every decoder must give `Ok` or an error, never a panic, and a mutation the
//! format can detect must be detected.

use crate::io_support;

use io_support::{fixtures, tiny_config, tiny_weights};
use proptest::prelude::*;
use r1_host::io::checkpoint::checkpoint_frame;
use r1_host::io::{
    ByteLevelTokenizer, Checkpoint, DatasetFields, TokenizerSpec, decode_safetensors, encode_checkpoint,
    load_checkpoint_bytes, parse_hf_config, parse_jsonl, weights_from_safetensors_bytes,
};

fn safetensors_bytes() -> Vec<u8> {
    std::fs::read(fixtures().join("hf/llama_f16/model.safetensors")).expect("fixture")
}

fn checkpoint_bytes() -> Vec<u8> {
    let config = tiny_config(true);
    let weights = tiny_weights(&config);
    let ckpt = Checkpoint {
        config,
        tokenizer: TokenizerSpec::ByteLevel,
        weights,
        optimizer: None,
        trainer_state: vec![1, 2],
    };
    encode_checkpoint(&ckpt).expect("encode")
}

/// Overwrites `edits` positions (taken modulo the length) with the given bytes.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
    let n = bytes.len();
    for &(i, b) in edits {
        bytes[i % n] = b;
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mutated_safetensors_never_panic(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
                                       cut in any::<usize>()) {
        let bytes = mutate(safetensors_bytes(), &edits);
        let _ = decode_safetensors(&bytes, "m");
        let _ = decode_safetensors(&bytes[..cut % bytes.len()], "m");
        let _ = weights_from_safetensors_bytes(&tiny_config(true), &bytes);
    }

    #[test]
    fn mutated_safetensors_headers_never_panic(edits in prop::collection::vec((0usize..512, any::<u8>()), 1..4)) {
        // Edits inside the JSON header, where the interesting parsing happens.
        let _ = decode_safetensors(&mutate(safetensors_bytes(), &edits), "m");
    }

    #[test]
    fn mutated_checkpoints_are_detected(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let good = checkpoint_bytes();
        let bad = mutate(good.clone(), &edits);
        let result = load_checkpoint_bytes(&bad);
        // Any change is caught by the magic, version, length or checksum.
        prop_assert_eq!(result.is_ok(), bad == good);
    }

    #[test]
    fn mutated_payloads_behind_a_valid_frame_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
        let good = checkpoint_bytes();
        let payload = mutate(good[48..].to_vec(), &edits);
        let _ = load_checkpoint_bytes(&checkpoint_frame(&payload));
    }

    #[test]
    fn random_payloads_behind_a_valid_frame_never_panic(payload in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = load_checkpoint_bytes(&checkpoint_frame(&payload));
    }

    #[test]
    fn random_configs_and_datasets_never_panic(text in "[{}\\[\\]\":,0-9a-z_\\n -]{0,200}") {
        let _ = parse_hf_config(text.as_bytes(), "c");
        let _ = parse_jsonl(text.as_bytes(), "d", &DatasetFields::sft());
    }

    #[test]
    fn byte_level_round_trips_any_text(text in any::<String>()) {
        let t = ByteLevelTokenizer;
        prop_assert_eq!(t.decode(&t.encode(&text)).expect("decode"), text);
    }
}
