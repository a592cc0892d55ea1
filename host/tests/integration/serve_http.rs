//! The OpenAI-compatible API over real HTTP, the server in-process on 127.0.0.1:0: a
//! tiny random model behind the real engine for what generation must guarantee (seeds,
//! greedy under concurrency, stop strings, log-probs, limits), and a scripted engine
//! where the test must choose the text (reasoning split, best-of-N ranking).

use crate::plugin_support;
use crate::serve_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use r1_host::engine::service::ServiceOptions;
use r1_host::plugin::{HostConfig, PluginConfig};
use r1_host::serve::{AppState, Generator, ModelLoader, ModelRegistry, ModelSource, RewardPlugins, ServeConfig};
use serde_json::{Value, json};
use serve_support::{
    CONTEXT, Scripted, TestServer, chunks, client, get_json, post, post_stream, small_options, tiny_engine,
};

const CHAT: &str = "/v1/chat/completions";
const COMPLETIONS: &str = "/v1/completions";

async fn tiny_server(config: ServeConfig) -> TestServer {
    TestServer::start(
        config,
        vec![tiny_engine("tiny", small_options())],
        RewardPlugins::default(),
    )
    .await
}

fn chat_body(extra: Value) -> Value {
    let mut body = json!({"model": "tiny", "messages": [{"role": "user", "content": "What is 2+2?"}],
                          "max_tokens": 12, "temperature": 0});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

fn error_of(body: &Value) -> (&str, Option<&str>, Option<&str>) {
    let e = &body["error"];
    (
        e["type"].as_str().unwrap_or_default(),
        e["param"].as_str(),
        e["code"].as_str(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completion_has_the_openai_shape() {
    let server = tiny_server(ServeConfig::default()).await;
    let (status, body) = post(&server.url(CHAT), chat_body(json!({}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["model"], "tiny");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string());
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
    let usage = &body["usage"];
    let (p, c) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && (1..=12).contains(&c), "{usage}");
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);
    assert!(usage["completion_tokens_details"]["reasoning_tokens"].as_u64().unwrap() <= c);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_chat_equals_the_one_shot_answer() {
    let server = tiny_server(ServeConfig::default()).await;
    let (_, whole) = post(&server.url(CHAT), chat_body(json!({}))).await;
    let (status, data) = post_stream(
        &server.url(CHAT),
        chat_body(json!({"stream": true, "stream_options": {"include_usage": true}})),
    )
    .await;
    assert_eq!(status, 200);
    let chunks = chunks(&data);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let (mut reasoning, mut content, mut finish) = (String::new(), String::new(), None);
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
        for choice in c["choices"].as_array().unwrap() {
            reasoning.push_str(choice["delta"]["reasoning_content"].as_str().unwrap_or_default());
            content.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
            if let Some(f) = choice["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
        }
    }
    let message = &whole["choices"][0]["message"];
    assert_eq!(content, message["content"].as_str().unwrap());
    assert_eq!(reasoning, message["reasoning_content"].as_str().unwrap_or_default());
    assert_eq!(finish.as_deref(), whole["choices"][0]["finish_reason"].as_str());
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "the usage chunk has no choices");
    assert_eq!(last["usage"], whole["usage"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_are_indexed_and_seeds_repeat() {
    let server = tiny_server(ServeConfig::default()).await;
    let body = chat_body(json!({"n": 3, "temperature": 1.0, "seed": 1234, "max_tokens": 16}));
    let (status, a) = post(&server.url(CHAT), body.clone()).await;
    assert_eq!(status, 200, "{a}");
    let (_, b) = post(&server.url(CHAT), body).await;
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("{}|{}", c["message"]["reasoning_content"], c["message"]["content"]))
            .collect()
    };
    let indices: Vec<u64> = a["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2]);
    assert_eq!(texts(&a), texts(&b), "the same seed gives the same completions");
    let distinct: std::collections::BTreeSet<String> = texts(&a).into_iter().collect();
    assert!(
        distinct.len() > 1,
        "the n completions of one request differ: {:?}",
        texts(&a)
    );
    let (_, c) = post(
        &server.url(CHAT),
        chat_body(json!({"n": 3, "temperature": 1.0, "seed": 99, "max_tokens": 16})),
    )
    .await;
    assert_ne!(texts(&a), texts(&c), "another seed gives other completions");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_the_text_before_them() {
    let server = tiny_server(ServeConfig::default()).await;
    let body = json!({"model": "tiny", "prompt": "abc", "max_tokens": 24, "temperature": 0, "ignore_eos": true});
    let (status, free) = post(&server.url(COMPLETIONS), body.clone()).await;
    assert_eq!(status, 200, "{free}");
    assert_eq!(free["object"], "text_completion");
    let text = free["choices"][0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 4, "greedy text long enough to cut: {text:?}");
    let stop: String = chars[2..4].iter().collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let mut with_stop = body;
    with_stop["stop"] = json!([stop, "never-produced"]);
    let (_, stopped) = post(&server.url(COMPLETIONS), with_stop).await;
    assert_eq!(stopped["choices"][0]["text"], cut);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logprobs_come_in_both_layouts() {
    let server = tiny_server(ServeConfig::default()).await;
    let (status, chat) = post(
        &server.url(CHAT),
        chat_body(json!({"logprobs": true, "top_logprobs": 3, "ignore_eos": true, "max_tokens": 6})),
    )
    .await;
    assert_eq!(status, 200, "{chat}");
    let content = chat["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 6);
    for entry in content {
        let lp = entry["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0);
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let tops: Vec<f64> = top.iter().map(|t| t["logprob"].as_f64().unwrap()).collect();
        assert!(tops.windows(2).all(|w| w[0] >= w[1]), "best first: {tops:?}");
        assert!((tops[0] - lp).abs() < 1e-4, "greedy picks the most likely token");
        assert!(entry["bytes"].is_array());
    }
    let (_, text) = post(
        &server.url(COMPLETIONS),
        json!({"model": "tiny", "prompt": "hi", "max_tokens": 5, "temperature": 0, "logprobs": 2, "ignore_eos": true}),
    )
    .await;
    let lp = &text["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 5);
    assert_eq!(lp["text_offset"][0], 0);
    assert!(lp["top_logprobs"][0].as_object().unwrap().len() <= 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_metrics() {
    let server = tiny_server(ServeConfig::default()).await;
    let models = get_json(&server.url("/v1/models")).await;
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(models["data"][0]["max_model_len"], CONTEXT);
    let one = client().get(server.url("/v1/models/tiny")).send().await.unwrap();
    assert_eq!(one.status(), 200);
    let health = client().get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let (status, _) = post(&server.url(CHAT), chat_body(json!({}))).await;
    assert_eq!(status, 200);
    let (status, _) = post(&server.url(CHAT), chat_body(json!({"n": 0}))).await;
    assert_eq!(status, 400);
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in [
        r#"r1_http_requests_total{endpoint="/v1/chat/completions",status="200"} 1"#,
        r#"r1_http_rejections_total{endpoint="/v1/chat/completions",status="400"} 1"#,
        r#"r1_queue_depth{model="tiny"} 0"#,
        r#"r1_running_sequences{model="tiny"} 0"#,
        r#"r1_time_to_first_token_seconds_count{model="tiny"} 1"#,
    ] {
        assert!(text.contains(line), "/metrics lacks `{line}`:\n{text}");
    }
    for name in [
        "r1_prompt_tokens_total{model=\"tiny\"}",
        "r1_completion_tokens_total{model=\"tiny\"}",
        "r1_inter_token_latency_seconds_bucket",
        "r1_kv_cache_tokens_used{model=\"tiny\"}",
        "r1_kv_cache_tokens_total{model=\"tiny\"}",
        "r1_kv_bytes_per_token{model=\"tiny\"}",
        "r1_batch_size{model=\"tiny\"}",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    let kv_bytes = text
        .lines()
        .find_map(|l| l.strip_prefix("r1_kv_bytes_per_token{model=\"tiny\"} "))
        .unwrap();
    // 2 layers × (K + V) × 2 KV heads × head dim 8 × 4 bytes.
    assert_eq!(kv_bytes, "256");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_openai_errors_naming_the_parameter() {
    let config = ServeConfig {
        max_body_bytes: 4096,
        max_tokens_limit: Some(64),
        ..ServeConfig::default()
    };
    let server = tiny_server(config).await;
    let url = server.url(CHAT);
    let raw = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"model\": \"tiny\", ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(error_of(&body).0, "invalid_request_error");

    let cases: Vec<(Value, u16, Option<&str>, Option<&str>)> = vec![
        (chat_body(json!({"n": "two"})), 400, Some("n"), None),
        (chat_body(json!({"temperature": "hot"})), 400, Some("temperature"), None),
        (chat_body(json!({"stop": 5})), 400, Some("stop"), None),
        (
            chat_body(json!({"messages": [{"role": "wizard", "content": "hi"}]})),
            400,
            Some("messages[0].role"),
            None,
        ),
        (chat_body(json!({"messages": "hi"})), 400, Some("messages"), None),
        (
            chat_body(json!({"model": "nope"})),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (chat_body(json!({"n": 17})), 400, Some("n"), None),
        (chat_body(json!({"best_of": 40})), 400, Some("best_of"), None),
        (chat_body(json!({"max_tokens": 65})), 400, Some("max_tokens"), None),
        (chat_body(json!({"top_p": 2.0})), 400, Some("top_p"), None),
        (chat_body(json!({"logprobs": 3})), 400, Some("logprobs"), None),
        (chat_body(json!({"reward": "none-such"})), 400, Some("reward"), None),
        (
            chat_body(json!({"best_of": 2, "stream": true})),
            400,
            Some("best_of"),
            None,
        ),
        (
            chat_body(json!({"reasoning_format": "xml"})),
            400,
            Some("reasoning_format"),
            None,
        ),
        (
            chat_body(json!({"logit_bias": {"5": 1}})),
            400,
            Some("logit_bias"),
            None,
        ),
        (
            chat_body(json!({"messages": [{"role": "user", "content": "x".repeat(CONTEXT + 10)}]})),
            400,
            Some("messages"),
            Some("context_length_exceeded"),
        ),
        (json!({"model": "tiny", "prompt": [1, 2, 999999]}), 400, None, None),
    ];
    for (body, status, param, code) in cases {
        let target = if body.get("prompt").is_some() {
            server.url(COMPLETIONS)
        } else {
            url.clone()
        };
        let (got, reply) = post(&target, body.clone()).await;
        assert_eq!(got, status, "{body} -> {reply}");
        let (kind, got_param, got_code) = error_of(&reply);
        assert_eq!(kind, "invalid_request_error", "{reply}");
        assert!(!reply["error"]["message"].as_str().unwrap().is_empty());
        if param.is_some() {
            assert_eq!(got_param, param, "{body} -> {reply}");
        }
        assert_eq!(got_code, code, "{body} -> {reply}");
    }
    // Unknown-but-legit OpenAI fields are ignored.
    let (status, reply) = post(
        &url,
        chat_body(json!({"user": "u-1", "metadata": {"k": "v"}, "store": false})),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    // Over the body limit: 413 with an OpenAI body.
    let (status, reply) = post(&url, chat_body(json!({"padding": "y".repeat(5000)}))).await;
    assert_eq!(status, 413);
    assert_eq!(error_of(&reply).2, Some("request_too_large"));
    // Unknown routes too.
    let missing = client().get(server.url("/v2/nothing")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("/v2/nothing"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_longer_than_the_room_left_are_clipped_to_length() {
    let server = tiny_server(ServeConfig::default()).await;
    let prompt: Vec<u32> = (0..CONTEXT as u32 - 3).map(|i| 97 + i % 26).collect();
    let (status, body) = post(
        &server.url(COMPLETIONS),
        json!({"model": "tiny", "prompt": prompt, "max_tokens": 50, "temperature": 0, "ignore_eos": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_everything_but_health() {
    let config = ServeConfig {
        api_key: Some("sekret".into()),
        ..ServeConfig::default()
    };
    let server = tiny_server(config).await;
    let c = client();
    let no_key = c.get(server.url("/v1/models")).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    let body: Value = no_key.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let wrong = c
        .get(server.url("/v1/models"))
        .bearer_auth("sekreT")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let metrics = c.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 401);
    let chat = c
        .post(server.url(CHAT))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 401);
    assert_eq!(c.get(server.url("/health")).send().await.unwrap().status(), 200);
    let right = c
        .get(server.url("/v1/models"))
        .bearer_auth("sekret")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let opts = ServiceOptions {
        max_queue: 0,
        ..small_options()
    };
    let server = TestServer::start(
        ServeConfig::default(),
        vec![tiny_engine("tiny", opts)],
        RewardPlugins::default(),
    )
    .await;
    let r = client()
        .post(server.url(CHAT))
        .json(&chat_body(json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_greedy_clients_match_sequential_answers() {
    let server = tiny_server(ServeConfig::default()).await;
    let prompts: Vec<String> = (0..16)
        .map(|i| format!("Question {i}: what is {i}+{}?", i * 3))
        .collect();
    let body = |p: &str| json!({"model": "tiny", "messages": [{"role": "user", "content": p}], "max_tokens": 10, "temperature": 0});
    let mut sequential = Vec::new();
    for p in &prompts {
        let (status, v) = post(&server.url(CHAT), body(p)).await;
        assert_eq!(status, 200, "{v}");
        sequential.push(v["choices"][0]["message"].clone());
    }
    let tasks: Vec<_> = prompts
        .iter()
        .map(|p| {
            let url = server.url(CHAT);
            let b = body(p);
            tokio::spawn(async move { post(&url, b).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, v) = t.await.unwrap();
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["choices"][0]["message"], sequential[i], "client {i}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_generation() {
    let slow = Scripted::slow("slow", 500, Duration::from_millis(10));
    let server = TestServer::start(ServeConfig::default(), vec![slow.clone()], RewardPlugins::default()).await;
    let stream = json!({"model": "slow", "prompt": "go", "stream": true});
    let mut response = client()
        .post(server.url(COMPLETIONS))
        .json(&stream)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    assert!(
        eventually(|| slow.cancelled.load(Ordering::SeqCst)).await,
        "the dropped stream still generates"
    );

    let slow = Scripted::slow("slow", 500, Duration::from_millis(10));
    let server2 = TestServer::start(ServeConfig::default(), vec![slow.clone()], RewardPlugins::default()).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let one_shot = json!({"model": "slow", "prompt": "go"});
    assert!(
        impatient
            .post(server2.url(COMPLETIONS))
            .json(&one_shot)
            .send()
            .await
            .is_err()
    );
    assert!(
        eventually(|| slow.cancelled.load(Ordering::SeqCst)).await,
        "the abandoned request still generates"
    );
    server.stop().await;
    server2.stop().await;
}

/// Polls `f` for up to 2 s.
async fn eventually(f: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

// ---- scripted engine: the test chooses the text ----

async fn scripted_server(candidates: &[&[&str]], rewards: RewardPlugins) -> TestServer {
    TestServer::start(
        ServeConfig::default(),
        vec![Scripted::new("scripted", candidates)],
        rewards,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasoning_is_split_from_the_answer_unless_asked_not_to() {
    let server = scripted_server(
        &[&["Let me ", "add: 2+2=4.</th", "ink>The answer", " is 4."]],
        RewardPlugins::default(),
    )
    .await;
    let body = json!({"model": "scripted", "messages": [{"role": "user", "content": "2+2?"}]});
    let (status, split) = post(&server.url(CHAT), body.clone()).await;
    assert_eq!(status, 200, "{split}");
    let message = &split["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "Let me add: 2+2=4.");
    assert_eq!(message["content"], "The answer is 4.");
    let usage = &split["usage"];
    assert_eq!(usage["completion_tokens"], 7 + 15 + 14 + 6);
    // Tokens count as reasoning per delta: the three deltas that began inside the block.
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 7 + 15 + 14);

    let mut raw = body.clone();
    raw["reasoning_format"] = json!("none");
    let (_, none) = post(&server.url(CHAT), raw).await;
    assert_eq!(
        none["choices"][0]["message"]["content"],
        "Let me add: 2+2=4.</think>The answer is 4."
    );
    assert!(none["choices"][0]["message"].get("reasoning_content").is_none());

    let mut streamed = body;
    streamed["stream"] = json!(true);
    let (_, data) = post_stream(&server.url(CHAT), streamed).await;
    let (mut reasoning, mut content) = (String::new(), String::new());
    for c in chunks(&data) {
        let delta = &c["choices"][0]["delta"];
        reasoning.push_str(delta["reasoning_content"].as_str().unwrap_or_default());
        content.push_str(delta["content"].as_str().unwrap_or_default());
    }
    assert_eq!(
        (reasoning.as_str(), content.as_str()),
        ("Let me add: 2+2=4.", "The answer is 4.")
    );

    // /v1/completions is raw text: no split.
    let (_, text) = post(&server.url(COMPLETIONS), json!({"model": "scripted", "prompt": "2+2?"})).await;
    assert_eq!(text["choices"][0]["text"], "Let me add: 2+2=4.</think>The answer is 4.");
    server.stop().await;
}

fn hostile_wat(dir: &std::path::Path) -> std::path::PathBuf {
    let plugin = plugin_support::WatPlugin {
        score: r#"(func (export "r1_score") (param i32 i32) (result i64) (loop $spin (br $spin)) (unreachable))"#
            .to_string(),
        ..plugin_support::WatPlugin::default()
    };
    let path = dir.join("spin.wat");
    std::fs::write(&path, plugin.text()).expect("write hostile plugin");
    path
}

fn reward_plugins(dir: &std::path::Path) -> RewardPlugins {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/examples");
    let host = HostConfig {
        threads: 2,
        cache_dir: None,
        ..HostConfig::default()
    };
    let spin = PluginConfig {
        timeout_ms: 100,
        ..PluginConfig::new(hostile_wat(dir))
    };
    RewardPlugins::load(
        host,
        &[
            (
                "contains".into(),
                PluginConfig::new(examples.join("contains-reference-wat/contains_reference.wat")),
            ),
            ("spin".into(), spin),
        ],
    )
    .expect("load reward plugins")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_of_n_returns_the_candidates_a_plugin_ranks_best() {
    let dir = tempfile::tempdir().unwrap();
    let server = scripted_server(
        &[
            &["</think>I think it is 5"],
            &["</think>It is 4"],
            &["</think>no idea"],
            &["</think>4, surely"],
        ],
        reward_plugins(dir.path()),
    )
    .await;
    let body = json!({"model": "scripted", "messages": [{"role": "user", "content": "2+2?"}],
                      "best_of": 4, "n": 2, "reward": "contains", "reference": "4"});
    let (status, reply) = post(&server.url(CHAT), body.clone()).await;
    assert_eq!(status, 200, "{reply}");
    let contents: Vec<&str> = reply["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["It is 4", "4, surely"]);
    let candidates = reply["r1"]["candidates"].as_array().unwrap();
    assert_eq!(reply["r1"]["ranked_by"], "contains");
    let scores: Vec<f64> = candidates.iter().map(|c| c["score"].as_f64().unwrap()).collect();
    assert_eq!(scores, [0.0, 1.0, 0.0, 1.0]);
    let chosen: Vec<bool> = candidates.iter().map(|c| c["chosen"].as_bool().unwrap()).collect();
    assert_eq!(chosen, [false, true, false, true]);
    // All four candidates were generated and are billed.
    assert_eq!(reply["usage"]["completion_tokens"], 16 + 8 + 8 + 10);

    // A hostile plugin fails this request, clearly, and the server goes on.
    let mut hostile = body.clone();
    hostile["reward"] = json!("spin");
    let (status, error) = post(&server.url(CHAT), hostile).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["code"], "reward_plugin_failed");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("spin") && message.contains("timed out"), "{message}");
    let (status, _) = post(&server.url(CHAT), body).await;
    assert_eq!(status, 200);
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"r1_reward_plugin_failures_total{plugin="spin"} 1"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_of_without_a_reward_ranks_by_mean_logprob() {
    let server = scripted_server(&[&["a"], &["b"]], RewardPlugins::default()).await;
    let (status, reply) = post(
        &server.url(COMPLETIONS),
        json!({"model": "scripted", "prompt": "x", "best_of": 2, "n": 1}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["choices"].as_array().unwrap().len(), 1);
    assert_eq!(reply["r1"]["ranked_by"], "mean_logprob");
    assert_eq!(reply["r1"]["candidates"].as_array().unwrap().len(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_prompts_get_their_own_choices() {
    let server = scripted_server(&[&["ok"]], RewardPlugins::default()).await;
    let (status, reply) = post(
        &server.url(COMPLETIONS),
        json!({"model": "scripted", "prompt": ["one", "two"], "n": 2}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let indices: Vec<u64> = reply["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, [0, 1, 2, 3]);
    assert_eq!(reply["usage"]["prompt_tokens"], 6);
    server.stop().await;
}

/// Names one model the server does not have loaded (as training jobs will).
struct OneModel;

impl ModelSource for OneModel {
    fn model_names(&self) -> Vec<String> {
        vec!["later".into()]
    }
    fn model_path(&self, name: &str) -> Option<std::path::PathBuf> {
        (name == "later").then(|| "jobs/later".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_a_source_names_load_on_first_use() {
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = loads.clone();
    let loader: ModelLoader = std::sync::Arc::new(move |path: &std::path::Path, name: &str| {
        assert_eq!(path, std::path::Path::new("jobs/later"));
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(Scripted::new(name, &[&["loaded"]]) as std::sync::Arc<dyn Generator>)
    });
    let registry = ModelRegistry::new(Some(loader));
    registry.add_source(std::sync::Arc::new(OneModel));
    let state = AppState::new(ServeConfig::default(), registry, RewardPlugins::default()).unwrap();
    let server = TestServer::start_state(state).await;
    let models = get_json(&server.url("/v1/models")).await;
    assert_eq!(models["data"][0]["id"], "later");
    assert!(models["data"][0].get("max_model_len").is_none(), "not loaded yet");
    let body = json!({"model": "later", "prompt": "x"});
    let url = server.url(COMPLETIONS);
    let (a, b) = tokio::join!(post(&url, body.clone()), post(&url, body));
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(a.1["choices"][0]["text"], "loaded");
    assert_eq!(loads.load(Ordering::SeqCst), 1, "two requests load the model once");
    let (status, _) = post(&server.url(COMPLETIONS), json!({"model": "unknown", "prompt": "x"})).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_stream_finish() {
    let slow = Scripted::slow("slow", 30, Duration::from_millis(10));
    let server = TestServer::start(ServeConfig::default(), vec![slow], RewardPlugins::default()).await;
    let url = server.url(COMPLETIONS);
    let state = server.state.clone();
    let streaming =
        tokio::spawn(async move { post_stream(&url, json!({"model": "slow", "prompt": "go", "stream": true})).await });
    tokio::time::sleep(Duration::from_millis(60)).await;
    let stopping = tokio::spawn(server.stop());
    assert!(eventually(|| state.draining()).await);
    let (status, data) = streaming.await.unwrap();
    assert_eq!(status, 200);
    let text: String = chunks(&data)
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(text, "x".repeat(30), "the stream ran to its end");
    stopping.await.unwrap();
}
