//! `POST /v1/weights` over real HTTP: off without `weight_updates`; a whole model as
//! safetensors or a PEFT adapter replaces what the server computes with, exactly (the
//! greedy text equals an engine started on those weights), and completions report the
//! version; malformed updates are 4xx and leave the weights as they were. Also the
//! rollout fields of `/v1/completions`: token ids and the sampler's log-probs.

use crate::serve_support;

use std::sync::Arc;

use r1_backend_cpu::CpuBackend;
use r1_core::model::{LoraSpec, LoraTargets};
use r1_host::engine::service::EngineService;
use r1_host::io::{PeftAdapter, Weights, encode_safetensors, peft_adapter_parts};
use r1_host::model::Model;
use r1_host::serve::{Generator, RewardPlugins, ServeConfig};
use serde_json::{Value, json};
use serve_support::{TestServer, client, small_options, tiny_config, tiny_engine};

const KEY: &str = "weights-key";

fn config(updates: bool) -> ServeConfig {
    ServeConfig {
        api_key: Some(KEY.into()),
        weight_updates: updates,
        ..ServeConfig::default()
    }
}

/// A server with the API key, weight updates on or off, serving `engine`.
async fn keyed_server(updates: bool, engine: Arc<dyn Generator>) -> TestServer {
    TestServer::start(config(updates), vec![engine], RewardPlugins::default()).await
}

/// The tiny model with seed `seed`'s weights (and `adapter`), in a running engine.
fn engine_with(name: &str, seed: u64, adapter: Option<PeftAdapter>) -> Arc<dyn Generator> {
    let service = EngineService::start_with(name, None, small_options(), move || {
        let backend = CpuBackend::with_threads(1)?;
        let mut model = Model::init(&backend, tiny_config(), seed)?;
        if let Some(a) = &adapter {
            model.attach_adapter(&backend, a)?;
        }
        Ok((backend, model))
    })
    .expect("start engine");
    Arc::new(service)
}

fn weights_of_seed(seed: u64) -> Weights {
    let backend = CpuBackend::with_threads(1).expect("backend");
    Model::init(&backend, tiny_config(), seed)
        .expect("model")
        .weights(&backend)
        .expect("weights")
}

fn random_adapter(seed: u64) -> PeftAdapter {
    let spec = LoraSpec {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: LoraTargets::all_linear(),
    };
    r1_host::adapter::random_adapter(&tiny_config(), spec, seed, 0.3)
}

/// Greedy completion of a fixed prompt: (token ids, log-probs, weight version).
async fn greedy(url: &str, extra: Value) -> (Vec<u32>, Vec<f64>, Option<u64>) {
    let mut body = json!({"model": "tiny", "prompt": [72, 105, 33], "max_tokens": 8, "temperature": 0,
                          "ignore_eos": true, "logprobs": 0, "return_tokens_as_token_ids": true});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let v: Value = client()
        .post(format!("{url}/v1/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let lp = &v["choices"][0]["logprobs"];
    let ids = lp["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("no tokens in {v}"))
        .iter()
        .map(|t| {
            t.as_str()
                .and_then(|s| s.strip_prefix("token_id:"))
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{t} is not token_id:N"))
        })
        .collect();
    let lps = lp["token_logprobs"]
        .as_array()
        .expect("log-probs")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect();
    (ids, lps, v["r1"]["weight_version"].as_u64())
}

async fn push(url: &str, query: &str, body: Vec<u8>, adapter_config: Option<String>) -> (u16, Value) {
    let mut req = client()
        .post(format!("{url}/v1/weights?{query}"))
        .bearer_auth(KEY)
        .body(body);
    if let Some(c) = adapter_config {
        req = req.header("X-R1-Adapter-Config", c);
    }
    let r = req.send().await.expect("send");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_updates_are_refused_unless_turned_on() {
    let server = keyed_server(false, tiny_engine("tiny", small_options())).await;
    let bytes = encode_safetensors(&weights_of_seed(8).tensors).expect("encode");
    let (status, body) = push(&server.url, "model=tiny&version=1", bytes, None).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--weight-updates")
    );
    // And the key is required like everywhere else.
    let r = client()
        .post(server.url("/v1/weights?model=tiny&version=1"))
        .body(vec![0u8; 4])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_weights_and_adapters_replace_what_the_server_computes_with() {
    let server = keyed_server(true, tiny_engine("tiny", small_options())).await;
    // References: engines started on the weights the updates will carry.
    let adapter = random_adapter(3);
    let refs = keyed_server(false, engine_with("tiny", 8, None)).await;
    let refs_lora = keyed_server(false, engine_with("tiny", 8, Some(adapter.clone()))).await;
    // (tokens, raw log-probs): random tiny models repeat tokens, the log-probs tell them apart.
    let text = |g: (Vec<u32>, Vec<f64>, Option<u64>)| ((g.0, g.1), g.2);
    let (seed7, v0) = text(greedy(&server.url, json!({})).await);
    assert_eq!(v0, Some(0));
    let (seed8, _) = text(greedy(&refs.url, json!({})).await);
    let (lora8, _) = text(greedy(&refs_lora.url, json!({})).await);
    assert_ne!(seed7, seed8, "the two weight sets must differ");
    assert_ne!(seed8, lora8, "the adapter must change the output");

    // Whole model: the same weights give the same tokens and log-probs, bit for bit.
    let bytes = encode_safetensors(&weights_of_seed(8).tensors).expect("encode");
    let (status, body) = push(&server.url, "model=tiny&version=4", bytes, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["weight_version"], 4);
    assert_eq!(text(greedy(&server.url, json!({})).await), (seed8.clone(), Some(4)));

    // A PEFT adapter on top.
    let (config_json, bytes) = peft_adapter_parts(&adapter).expect("adapter bytes");
    let (status, body) = push(
        &server.url,
        "model=tiny&version=5&format=peft",
        bytes.clone(),
        Some(config_json.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(text(greedy(&server.url, json!({})).await), (lora8.clone(), Some(5)));
    // Another adapter replaces it (the same one again: the output does not change).
    let (status, _) = push(
        &server.url,
        "model=tiny&version=6&format=peft",
        bytes,
        Some(config_json.to_string()),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(text(greedy(&server.url, json!({})).await).0, lora8);

    // Bad updates: 4xx, and the weights stay.
    let cases: Vec<(&str, Vec<u8>, Option<String>, u16)> = vec![
        ("model=tiny", vec![1, 2, 3], None, 400),
        ("model=tiny&version=x", vec![1, 2, 3], None, 400),
        ("model=nope&version=7", vec![1, 2, 3], None, 404),
        ("model=tiny&version=7", b"not safetensors".to_vec(), None, 400),
        ("model=tiny&version=7&format=zip", vec![1, 2, 3], None, 400),
        ("model=tiny&version=7&format=peft", vec![1, 2, 3], None, 400),
        (
            "model=tiny&version=7&format=peft",
            vec![1, 2, 3],
            Some("{not json".into()),
            400,
        ),
        (
            "model=tiny&version=7",
            encode_safetensors(&weights_of_seed(8).tensors[1..]).expect("encode"),
            None,
            400,
        ),
    ];
    for (query, body, header, want) in cases {
        let (status, answer) = push(&server.url, query, body, header).await;
        assert_eq!(status, want, "{query}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{query}: {answer}");
    }
    assert_eq!(text(greedy(&server.url, json!({})).await), (lora8, Some(6)));
    for s in [server, refs, refs_lora] {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_logprobs_are_the_samplers_and_list_the_eos_token() {
    let server = keyed_server(false, tiny_engine("tiny", small_options())).await;
    // Greedy: the sampler's log-prob of its choice is 0 (a point mass); the raw one is not.
    let (ids, raw, _) = greedy(&server.url, json!({})).await;
    let (ids2, processed, _) = greedy(&server.url, json!({"logprobs_mode": "processed_logprobs"})).await;
    assert_eq!(ids, ids2);
    assert!(raw.iter().all(|&x| x < 0.0), "{raw:?}");
    assert!(processed.iter().all(|&x| x == 0.0), "{processed:?}");
    // At temperature 2 the sampler's distribution is flatter than the model's.
    let hot = json!({"temperature": 2.0, "seed": 5});
    let (a, raw, _) = greedy(&server.url, hot.clone()).await;
    let mut with_mode = hot;
    with_mode["logprobs_mode"] = json!("processed_logprobs");
    let (b, processed, _) = greedy(&server.url, with_mode).await;
    assert_eq!(a, b, "the same seed draws the same tokens");
    assert_ne!(raw, processed);
    let r = client()
        .post(server.url("/v1/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "tiny", "prompt": [1], "logprobs_mode": "weird"}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
    // The EOS token is listed when a completion ends with it: run until one does.
    let mut saw_eos = false;
    for seed in 0..200u64 {
        let body = json!({"model": "tiny", "prompt": [72], "max_tokens": 40, "temperature": 1.5, "seed": seed,
                          "logprobs": 0, "return_tokens_as_token_ids": true, "logprobs_mode": "processed_logprobs"});
        let v: Value = client()
            .post(server.url("/v1/completions"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        let c = &v["choices"][0];
        if c["finish_reason"] == "stop" {
            let tokens = c["logprobs"]["tokens"].as_array().expect("tokens");
            assert_eq!(tokens.last(), Some(&json!("token_id:256")), "{c}");
            saw_eos = true;
            break;
        }
    }
    assert!(saw_eos, "no completion ended with EOS in 200 seeds");
    server.stop().await;
}
