//! Chat templates against transformers: every case of `tests/fixtures/chat/*.json` (made by
//! `tests/fixtures/make_chat_fixtures.py` with `apply_chat_template`) is rendered from a
//! model directory the way a downloaded model provides it, and must give transformers'
//! text character for character and, through r1's tokenizer, its token ids.

use crate::io_support;

use std::fs;
use std::path::Path;
use std::process::Command;

use io_support::{fixtures, tiny_config, tiny_weights};
use r1_host::chat::{ChatError, ChatTemplate, RenderOptions};
use r1_host::io::Tokenizer;
use serde_json::{Map, Value};

/// The fixtures, one per template (or tokenizer config).
const FIXTURES: [&str; 6] = [
    "deepseek_r1",
    "deepseek_r1_distill_qwen",
    "qwen2_5_instruct",
    "qwen2_5_instruct_tools",
    "llama3_2_instruct",
    "llama3_1_instruct",
];

fn chat_fixtures() -> std::path::PathBuf {
    fixtures().join("chat")
}

fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A model directory holding the fixture's tokenizer: `tokenizer.json` and its
/// `tokenizer_config.json`, the template inside it — or, with `template_file`, beside
/// it as `chat_template.jinja` (how transformers 5 saves a template).
fn model_dir(fixture: &Value, template_file: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::copy(
        chat_fixtures().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy tokenizer");
    let mut config = fixture["tokenizer_config"].clone();
    if template_file {
        let template = config
            .as_object_mut()
            .and_then(|c| c.remove("chat_template"))
            .expect("fixture has a template");
        fs::write(
            dir.path().join("chat_template.jinja"),
            template.as_str().expect("a string"),
        )
        .expect("write");
    }
    fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).expect("write config");
    dir
}

fn options(case: &Value) -> RenderOptions {
    RenderOptions {
        add_generation_prompt: case["add_generation_prompt"].as_bool().expect("add_generation_prompt"),
        tools: case.get("tools").cloned(),
        extra: case
            .get("extra")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(Map::new),
    }
}

/// Renders every case of `name` and compares text, ids and errors with transformers'.
fn check_fixture(name: &str, template_file: bool) {
    let fixture = read_json(&chat_fixtures().join(format!("{name}.json")));
    let dir = model_dir(&fixture, template_file);
    let template = ChatTemplate::from_model_path(dir.path(), None)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("{name}: no template found"));
    let tokenizer = Tokenizer::from_model_dir(dir.path(), &tiny_config(true))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .expect("tokenizer.json is there");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    for case in cases {
        let label = format!("{name}/{}", case["name"].as_str().unwrap_or("?"));
        let messages = case.get("openai_messages").unwrap_or(&case["messages"]);
        let messages = messages.as_array().expect("messages");
        let rendered = template.render(messages, &options(case));
        if let Some(error) = case.get("error").and_then(Value::as_str) {
            match (case["error_type"].as_str(), rendered) {
                (Some("TemplateError"), Err(ChatError::Raised(message))) => assert_eq!(message, error, "{label}"),
                (Some("TemplateError"), other) => panic!("{label}: expected raise_exception({error:?}), got {other:?}"),
                (_, Err(_)) => {}
                (_, Ok(text)) => panic!("{label}: transformers fails ({error}) but r1 rendered {text:?}"),
            }
            continue;
        }
        let text = rendered.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(text, case["text"].as_str().expect("text"), "{label}: rendered text");
        let ids = tokenizer.encode(&text).unwrap_or_else(|e| panic!("{label}: {e}"));
        let expected: Vec<u32> = serde_json::from_value(case["ids"].clone()).expect("ids");
        assert_eq!(ids, expected, "{label}: token ids");
    }
}

#[test]
fn deepseek_r1_matches_transformers_and_drops_earlier_reasoning() {
    check_fixture("deepseek_r1", false);
}

#[test]
fn deepseek_r1_distill_qwen_matches_transformers_and_opens_think() {
    check_fixture("deepseek_r1_distill_qwen", false);
}

#[test]
fn qwen2_5_matches_transformers_without_tools() {
    check_fixture("qwen2_5_instruct", false);
}

#[test]
fn qwen2_5_matches_transformers_with_tools_calls_and_results() {
    check_fixture("qwen2_5_instruct_tools", false);
}

#[test]
fn llama3_2_matches_transformers_from_a_chat_template_jinja_file() {
    check_fixture("llama3_2_instruct", true);
}

#[test]
fn llama3_1_matches_transformers_with_tools_and_raise_exception() {
    check_fixture("llama3_1_instruct", false);
}

#[test]
fn every_fixture_is_checked_and_uses_a_committed_template() {
    for name in FIXTURES {
        let fixture = read_json(&chat_fixtures().join(format!("{name}.json")));
        let file = fixture["template_file"].as_str().expect("template_file");
        let committed = fs::read_to_string(chat_fixtures().join("templates").join(file)).expect("template file");
        assert_eq!(
            fixture["tokenizer_config"]["chat_template"].as_str(),
            Some(committed.as_str()),
            "{name}"
        );
    }
    let on_disk = fs::read_dir(chat_fixtures())
        .expect("chat fixtures")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && n != "tokenizer.json")
        .count();
    assert_eq!(on_disk, FIXTURES.len(), "a fixture file no test reads");
}

#[test]
fn generate_chat_sends_the_prompt_through_the_models_template() {
    let config_json = r#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 512,
        "tie_word_embeddings": true, "rope_theta": 10000.0}"#;
    let config = r1_host::io::parse_hf_config(config_json.as_bytes(), "tiny").expect("config");
    let dir = tempfile::tempdir().expect("temp dir");
    r1_host::io::save_hf_model(dir.path(), &config, &tiny_weights(&config)).expect("save model");
    fs::copy(
        chat_fixtures().join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy tokenizer");
    let tokenizer_config = serde_json::json!({
        "eos_token": "<|im_end|>",
        "chat_template": "{{ raise_exception('rendered for ' + messages[0].role + ': ' + messages[0].content) }}"
    });
    fs::write(dir.path().join("tokenizer_config.json"), tokenizer_config.to_string()).expect("write config");
    let generate = |chat: bool| {
        let mut args = vec![
            "generate",
            "--model",
            dir.path().to_str().expect("UTF-8"),
            "--prompt",
            "hi",
        ];
        args.extend(["--max-new-tokens", "2", "--json"]);
        if chat {
            args.push("--chat");
        }
        Command::new(env!("CARGO_BIN_EXE_r1host"))
            .args(&args)
            .output()
            .expect("run r1host")
    };
    let plain = generate(false);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let chat = generate(true);
    let stderr = String::from_utf8_lossy(&chat.stderr);
    assert!(
        !chat.status.success() && stderr.contains("rendered for user: hi"),
        "{stderr}"
    );
}
