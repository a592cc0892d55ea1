//! Tokenizers: the byte-level tokenizer's ids and round trips, and a Hugging Face
//! `tokenizer.json` reproducing the encodings Python `tokenizers` gave (fixture).

use crate::io_support;

use io_support::{fixtures, tiny_config};
use r1_host::io::{ByteLevelTokenizer, IoError, Tokenizer, TokenizerSpec};

#[test]
fn byte_level_ids_are_bytes_then_special_tokens() {
    let t = Tokenizer::byte_level();
    assert_eq!(t.vocab_size(), 261);
    assert_eq!(t.eos_id(), 256);
    assert_eq!(t.encode("Ab").expect("encode"), [65, 98]);
    assert_eq!(t.encode("é").expect("encode"), [0xC3, 0xA9]);
    assert_eq!(
        t.encode("<think>1+1</think><answer>2</answer><|endoftext|>")
            .expect("encode"),
        [257, 49, 43, 49, 258, 259, 50, 260, 256]
    );
    assert_eq!(t.token_id("</think>"), Some(258));
    assert_eq!(t.token_id("a"), Some(97));
    assert_eq!(t.token_id("ab"), None);
    let specials: Vec<u32> = t.special_tokens().into_iter().map(|(_, id)| id).collect();
    assert_eq!(specials, [256, 257, 258, 259, 260]);
}

#[test]
fn byte_level_partial_tags_stay_bytes() {
    let t = ByteLevelTokenizer;
    assert_eq!(
        t.encode("<thin"),
        b"<thin".iter().map(|&b| u32::from(b)).collect::<Vec<_>>()
    );
    assert_eq!(t.encode("<<think>"), [60, 257]);
}

#[test]
fn byte_level_decode_inverts_encode() {
    let t = Tokenizer::byte_level();
    for s in [
        "",
        "plain",
        "Zürich 東京 🙂",
        "a<think>b</think>\n<answer>42</answer>",
        "<|endoftext|><",
        "\0\t\r\n",
    ] {
        assert_eq!(t.decode(&t.encode(s).expect("encode")).expect("decode"), s);
    }
}

#[test]
fn byte_level_decode_of_a_cut_character_is_lossy_not_an_error() {
    let t = ByteLevelTokenizer;
    // First two bytes of "🙂" (F0 9F 99 82).
    assert_eq!(t.decode(&[0x68, 0xF0, 0x9F]).expect("decode"), "h\u{FFFD}");
    assert_eq!(t.decode_bytes(&[0xF0, 0x9F]).expect("bytes"), [0xF0, 0x9F]);
}

#[test]
fn byte_level_rejects_ids_outside_the_vocabulary() {
    let t = Tokenizer::byte_level();
    match t.decode(&[72, 261, 5]) {
        Err(IoError::TokenOutOfRange {
            id,
            position,
            vocab_size,
        }) => {
            assert_eq!((id, position, vocab_size), (261, 1, 261));
        }
        other => panic!("expected an out-of-range error, got {other:?}"),
    }
    assert!(t.decode(&[u32::MAX]).is_err());
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("tokenizer/expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("parses")
}

fn hf_fixture() -> Tokenizer {
    let bytes = std::fs::read(fixtures().join("tokenizer/tokenizer.json")).expect("tokenizer.json");
    let hf = r1_host::io::HfTokenizer::from_json_bytes(&bytes, "fixture", Some("<|endoftext|>"), None).expect("load");
    Tokenizer::HuggingFace(Box::new(hf))
}

#[test]
fn hf_tokenizer_matches_python_tokenizers_encodings() {
    let t = hf_fixture();
    let e = expected();
    assert_eq!(t.vocab_size() as u64, e["vocab_size"].as_u64().expect("vocab"));
    let cases = e["cases"].as_array().expect("cases");
    assert!(cases.len() >= 6);
    for case in cases {
        let text = case["text"].as_str().expect("text");
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        assert_eq!(t.encode(text).expect("encode"), ids, "encoding of {text:?}");
        assert_eq!(
            t.decode(&ids).expect("decode"),
            case["decoded"].as_str().expect("decoded"),
            "decode of {text:?}"
        );
    }
}

#[test]
fn hf_tokenizer_reports_special_tokens_and_eos() {
    let t = hf_fixture();
    let e = expected();
    let want = e["special_tokens"].as_object().expect("specials");
    for (tok, id) in want {
        assert_eq!(t.token_id(tok), Some(id.as_u64().expect("id") as u32), "{tok}");
    }
    let specials = t.special_tokens();
    assert_eq!(specials.len(), want.len());
    assert_eq!(t.eos_id(), t.token_id("<|endoftext|>").expect("eos"));
}

#[test]
fn hf_tokenizer_rejects_ids_outside_the_vocabulary() {
    let t = hf_fixture();
    let n = t.vocab_size() as u32;
    assert!(matches!(t.decode(&[1, n]), Err(IoError::TokenOutOfRange { id, position: 1, .. }) if id == n));
}

#[test]
fn model_dir_tokenizer_takes_eos_from_tokenizer_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        fixtures().join("tokenizer/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy");
    let config = tiny_config(true);
    // Without tokenizer_config.json: the known `<|endoftext|>` is found.
    let t = Tokenizer::from_model_dir(dir.path(), &config)
        .expect("load")
        .expect("present");
    assert_eq!(t.eos_id(), 0);
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        r#"{"eos_token":{"content":"</answer>"}}"#,
    )
    .expect("w");
    let t = Tokenizer::from_model_dir(dir.path(), &config)
        .expect("load")
        .expect("present");
    assert_eq!(t.eos_id(), 4);
}

#[test]
fn model_dir_without_tokenizer_json_has_none() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(
        Tokenizer::from_model_dir(dir.path(), &tiny_config(true))
            .expect("ok")
            .is_none()
    );
}

#[test]
fn tokenizer_spec_rebuilds_the_same_tokenizer() {
    let t = hf_fixture();
    let again = Tokenizer::from_spec(&t.spec()).expect("rebuild");
    let text = "What is 7 * 6? <think>42</think>";
    assert_eq!(again.encode(text).expect("a"), t.encode(text).expect("b"));
    assert_eq!(again.eos_id(), t.eos_id());
    assert!(matches!(
        Tokenizer::from_spec(&TokenizerSpec::ByteLevel).expect("byte"),
        Tokenizer::ByteLevel(_)
    ));
}

#[test]
fn malformed_tokenizer_json_is_an_error_with_location() {
    let err =
        r1_host::io::HfTokenizer::from_json_bytes(b"{\n \"model\": [", "bad.json", None, None).expect_err("malformed");
    assert!(matches!(err, IoError::Json { line: 2, .. }), "{err}");
    let err = r1_host::io::HfTokenizer::from_json_bytes(b"{\"model\": 3}", "bad.json", None, None)
        .expect_err("not a tokenizer");
    assert!(matches!(err, IoError::Tokenizer { .. }), "{err}");
}

#[test]
fn unknown_eos_token_is_an_error() {
    let bytes = std::fs::read(fixtures().join("tokenizer/tokenizer.json")).expect("tokenizer.json");
    let err = r1_host::io::HfTokenizer::from_json_bytes(&bytes, "t", Some("<nope>"), None).expect_err("unknown eos");
    assert!(err.to_string().contains("<nope>"), "{err}");
}

#[test]
fn tokenizer_must_fit_the_model_vocabulary() {
    let mut config = tiny_config(true);
    assert!(Tokenizer::byte_level().check_fits(&config).is_err());
    config.vocab_size = 261;
    assert!(Tokenizer::byte_level().check_fits(&config).is_ok());
}
