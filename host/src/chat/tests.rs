use std::fs;

use serde_json::json;

use super::*;

fn user(text: &str) -> Value {
    json!({"role": "user", "content": text})
}

fn render(source: &str, messages: &[Value]) -> Result<String, ChatError> {
    ChatTemplate::from_source(source, Some("<s>".into()), Some("</s>".into()))?
        .render(messages, &RenderOptions::default())
}

#[test]
fn default_template_strips_earlier_reasoning_and_opens_think() {
    let t = default_template(None, Some("<|endoftext|>".into())).unwrap();
    let messages = [
        json!({"role": "system", "content": "Be brief."}),
        user("2+2?"),
        json!({"role": "assistant", "content": "<think>2+2=4</think> 4"}),
        user("3+3?"),
    ];
    let opts = RenderOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    assert_eq!(
        t.render(&messages, &opts).unwrap(),
        "Be brief.\nUser: 2+2?\nAssistant:  4<|endoftext|>\nUser: 3+3?\nAssistant: <think>"
    );
}

#[test]
fn an_empty_conversation_is_refused() {
    let err = render("{{ messages }}", &[]).unwrap_err();
    assert!(matches!(err, ChatError::EmptyConversation), "{err:?}");
}

#[test]
fn raise_exception_is_the_templates_own_message() {
    let err = render(
        "{{ raise_exception('Only user and assistant roles are supported!') }}",
        &[user("hi")],
    )
    .unwrap_err();
    assert!(
        matches!(&err, ChatError::Raised(m) if m == "Only user and assistant roles are supported!"),
        "{err:?}"
    );
}

#[test]
fn syntax_error_names_the_template_and_line() {
    let err = ChatTemplate::from_named_source("my.jinja", "line one\n{% if %}\n", None, None).unwrap_err();
    assert!(
        matches!(&err, ChatError::Syntax { template, line: Some(2), .. } if template == "my.jinja"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("chat template my.jinja, line 2: syntax error"),
        "{err}"
    );
}

#[test]
fn render_error_names_the_template_and_line() {
    let err = render("ok\n{{ messages[0].content.nope.deeper }}", &[user("hi")]).unwrap_err();
    assert!(matches!(&err, ChatError::Render { line: Some(2), .. }), "{err:?}");
}

#[test]
fn a_template_that_loops_for_ever_runs_out_of_fuel() {
    let source = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";
    let err = render(source, &[user("hi")]).unwrap_err();
    assert!(
        matches!(err, ChatError::OutOfFuel { fuel: DEFAULT_FUEL, .. }),
        "{err:?}"
    );
}

#[test]
fn a_template_that_renders_gigantic_output_runs_out_of_fuel() {
    let t = ChatTemplate::from_source("{% for i in range(1000) %}{{ 'x' * 1000000 }}{% endfor %}", None, None)
        .unwrap()
        .with_fuel(Some(100_000));
    let err = t.render(&[user("hi")], &RenderOptions::default()).unwrap_err();
    assert!(matches!(err, ChatError::OutOfFuel { fuel: 100_000, .. }), "{err:?}");
    assert!(err.to_string().contains("renders too much"), "{err}");
}

#[test]
fn infinite_macro_recursion_is_an_error_not_a_crash() {
    let err = render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", &[user("hi")]).unwrap_err();
    assert!(
        matches!(err, ChatError::Render { .. } | ChatError::OutOfFuel { .. }),
        "{err:?}"
    );
}

#[test]
fn strftime_now_formats_the_local_time() {
    let before = chrono::Local::now().format("%d %b %Y").to_string();
    let out = render("{{ strftime_now('%d %b %Y') }}", &[user("hi")]).unwrap();
    let after = chrono::Local::now().format("%d %b %Y").to_string();
    assert!(out == before || out == after, "{out}");
    let err = render("{{ strftime_now('%Q') }}", &[user("hi")]).unwrap_err();
    assert!(err.to_string().contains("strftime_now: invalid format string"), "{err}");
}

#[test]
fn tojson_writes_python_json_in_the_callers_key_order() {
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {"z": 1, "a": "é"}}}]);
    let t = ChatTemplate::from_source(
        "{{ tools[0] | tojson }}|{{ tools[0].function | tojson(indent=2) }}",
        None,
        None,
    )
    .unwrap();
    let opts = RenderOptions {
        tools: Some(tools),
        ..Default::default()
    };
    assert_eq!(
        t.render(&[user("hi")], &opts).unwrap(),
        "{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"z\": 1, \"a\": \"é\"}}}|\
         {\n  \"name\": \"f\",\n  \"parameters\": {\n    \"z\": 1,\n    \"a\": \"é\"\n  }\n}"
    );
}

#[test]
fn values_print_as_python_prints_them() {
    let out = render(
        "{{ none }} {{ true }} {{ 1.0 }} {{ [1, 'a'] }} {{ undefined_name }}.",
        &[user("hi")],
    )
    .unwrap();
    assert_eq!(out, "None True 1.0 [1, 'a'] .");
}

#[test]
fn python_string_and_dict_methods_work() {
    let out = render(
        "{{ messages[0].content.strip().split(' ')[-1] }} {{ messages[0].content.startswith(' a') }} \
         {% for k, v in messages[0].items() %}{{ k }}{% endfor %}",
        &[user(" a b ")],
    )
    .unwrap();
    assert_eq!(out, "b True rolecontent");
}

#[test]
fn generation_blocks_render_their_body() {
    let out = render(
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}",
        &[user("hi")],
    );
    assert_eq!(out.unwrap(), "hi");
}

#[test]
fn extra_arguments_reach_the_template_and_reserved_ones_are_refused() {
    let t = ChatTemplate::from_source(
        "{% if enable_thinking is false %}no{% else %}yes{% endif %}",
        None,
        None,
    )
    .unwrap();
    let mut opts = RenderOptions::default();
    assert_eq!(t.render(&[user("hi")], &opts).unwrap(), "yes");
    opts.extra.insert("enable_thinking".into(), json!(false));
    assert_eq!(t.render(&[user("hi")], &opts).unwrap(), "no");
    opts.extra.insert("messages".into(), json!([]));
    assert!(matches!(t.render(&[user("hi")], &opts), Err(ChatError::ReservedArgument(k)) if k == "messages"));
}

#[test]
fn loop_controls_are_available() {
    let out = render(
        "{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
        &[user("hi")],
    );
    assert_eq!(out.unwrap(), "012");
}

#[test]
fn tools_and_documents_are_none_when_not_given() {
    let out = render(
        "{{ tools is none }} {{ documents is none }} {{ tools is defined }}",
        &[user("hi")],
    );
    assert_eq!(out.unwrap(), "True True True");
}

fn model_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, text).unwrap();
    }
    dir
}

#[test]
fn a_checkpoint_file_or_a_directory_without_template_has_none() {
    let dir = model_dir(&[
        ("model.ckpt", "x"),
        ("tokenizer_config.json", r#"{"eos_token": "</s>"}"#),
    ]);
    assert!(
        ChatTemplate::from_model_path(&dir.path().join("model.ckpt"), None)
            .unwrap()
            .is_none()
    );
    assert!(ChatTemplate::from_model_path(dir.path(), None).unwrap().is_none());
    let missing = ChatTemplate::from_model_path(&dir.path().join("nope"), None).unwrap_err();
    assert!(matches!(missing, ChatError::File { .. }), "{missing:?}");
}

#[test]
fn tokenizer_config_template_and_special_tokens_are_read() {
    let config = json!({
        "bos_token": {"content": "<B>", "lstrip": false},
        "eos_token": "<E>",
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"
    });
    let dir = model_dir(&[("tokenizer_config.json", &config.to_string())]);
    let t = ChatTemplate::from_model_path(dir.path(), None).unwrap().unwrap();
    assert_eq!((t.bos_token(), t.eos_token()), (Some("<B>"), Some("<E>")));
    assert_eq!(t.render(&[user("hi")], &RenderOptions::default()).unwrap(), "<B>hi<E>");
}

#[test]
fn tokenizer_config_bytes_give_the_template_of_the_same_file_in_a_directory() {
    let config = json!({
        "bos_token": {"content": "<B>"},
        "eos_token": "<E>",
        "chat_template": [{"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"}]
    });
    let path = Path::new("tokenizer_config.json");
    let t = ChatTemplate::from_tokenizer_config(config.to_string().as_bytes(), path, None)
        .unwrap()
        .unwrap();
    assert_eq!(t.render(&[user("hi")], &RenderOptions::default()).unwrap(), "<B>hi<E>");
    let none = ChatTemplate::from_tokenizer_config(br#"{"eos_token": "<E>"}"#, path, None).unwrap();
    assert!(none.is_none());
    let err = ChatTemplate::from_tokenizer_config(b"{", path, None).unwrap_err();
    assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
}

#[test]
fn named_templates_pick_default_tool_use_or_the_named_one() {
    let config = json!({"chat_template": [
        {"name": "default", "template": "D"},
        {"name": "tool_use", "template": "T"},
        {"name": "rag", "template": "R"}
    ]});
    let dir = model_dir(&[("tokenizer_config.json", &config.to_string())]);
    let t = ChatTemplate::from_model_path(dir.path(), None).unwrap().unwrap();
    let with_tools = RenderOptions {
        tools: Some(json!([])),
        ..Default::default()
    };
    assert_eq!(t.render(&[user("hi")], &RenderOptions::default()).unwrap(), "D");
    assert_eq!(t.render(&[user("hi")], &with_tools).unwrap(), "T");
    let rag = ChatTemplate::from_model_path(dir.path(), Some("rag")).unwrap().unwrap();
    assert_eq!(rag.render(&[user("hi")], &with_tools).unwrap(), "R");
    let err = ChatTemplate::from_model_path(dir.path(), Some("nope")).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("no chat template named `nope` (the model has: default, tool_use, rag)"),
        "{err}"
    );
}

#[test]
fn template_files_take_priority_over_tokenizer_config() {
    let dir = model_dir(&[
        (
            "tokenizer_config.json",
            r#"{"chat_template": "config", "eos_token": "<E>"}"#,
        ),
        ("chat_template.jinja", "file{{ eos_token }}\n"),
        ("additional_chat_templates/tool_use.jinja", "tools"),
    ]);
    let t = ChatTemplate::from_model_path(dir.path(), None).unwrap().unwrap();
    // Jinja drops a template's single trailing newline.
    assert_eq!(t.render(&[user("hi")], &RenderOptions::default()).unwrap(), "file<E>");
    let with_tools = RenderOptions {
        tools: Some(json!([])),
        ..Default::default()
    };
    assert_eq!(t.render(&[user("hi")], &with_tools).unwrap(), "tools");
}

#[test]
fn a_broken_tokenizer_config_is_an_error_naming_the_file() {
    let dir = model_dir(&[("tokenizer_config.json", "{not json")]);
    let err = ChatTemplate::from_model_path(dir.path(), None).unwrap_err();
    assert!(
        matches!(&err, ChatError::BadConfig { path, .. } if path.ends_with("tokenizer_config.json")),
        "{err:?}"
    );
    let dir = model_dir(&[("tokenizer_config.json", r#"{"chat_template": 7}"#)]);
    assert!(matches!(
        ChatTemplate::from_model_path(dir.path(), None),
        Err(ChatError::BadConfig { .. })
    ));
}

#[test]
fn a_syntax_error_in_a_model_template_names_its_file() {
    let dir = model_dir(&[("chat_template.jinja", "{% for m in messages %}")]);
    let err = ChatTemplate::from_model_path(dir.path(), None).unwrap_err();
    assert!(err.to_string().contains("chat_template.jinja"), "{err}");
}

#[test]
fn chat_template_is_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone>() {}
    assert_traits::<ChatTemplate>();
}

#[test]
fn a_model_without_template_chats_through_r1_default_with_its_eos() {
    let dir = model_dir(&[("model.ckpt", "x")]);
    let config: r1_core::model::ModelConfig = crate::io::parse_hf_config(
        br#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 12,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "vocab_size": 261, "rope_theta": 10000.0}"#,
        "tiny",
    )
    .unwrap();
    let t = template_for_model(
        &dir.path().join("model.ckpt"),
        &crate::io::Tokenizer::byte_level(),
        &config,
    )
    .unwrap();
    let messages = [user("hi"), json!({"role": "assistant", "content": "yo"}), user("2+2?")];
    let opts = RenderOptions {
        add_generation_prompt: true,
        ..Default::default()
    };
    assert_eq!(
        t.render(&messages, &opts).unwrap(),
        "User: hi\nAssistant: yo<|endoftext|>\nUser: 2+2?\nAssistant: <think>"
    );
}
