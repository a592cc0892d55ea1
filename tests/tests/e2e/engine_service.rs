//! The engine service: continuous batching must give every request what it would get
//! alone (greedy text, seeded samples), stream whole characters, cut stop strings, cancel
//! requests whose receiver is dropped, refuse what can never run and push back when the
//! queue is full.

use std::time::{Duration, Instant};

use r1_backend_cpu::CpuBackend;
use r1_core::model::ModelConfig;
use r1_core::sampling::SamplingParams;
use r1_host::engine::service::{GenEvents, GeneratedText, ServiceOptions};
use r1_host::engine::{EngineService, FinishReason, GenEvent, GenRequest, SubmitError};
use r1_host::model::Model;

fn config() -> ModelConfig {
    serde_json::from_value(serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 261,
        "tie_word_embeddings": true, "max_position_embeddings": 256,
    }))
    .unwrap()
}

fn service(max_batch: usize, max_queue: usize) -> EngineService {
    let opts = ServiceOptions {
        kv_cache_mib: 64,
        context: Some(128),
        max_batch,
        max_queue,
        ..ServiceOptions::default()
    };
    EngineService::start_with("tiny", None, opts, || {
        let backend = CpuBackend::with_threads(1)?;
        let model = Model::init(&backend, config(), 3)?;
        Ok((backend, model))
    })
    .unwrap()
}

fn request(prompt: &str, max_new_tokens: usize) -> GenRequest {
    GenRequest {
        prompt: prompt.bytes().map(u32::from).collect(),
        max_new_tokens,
        sampling: SamplingParams::greedy(),
        ignore_eos: true,
        ..Default::default()
    }
}

fn ids(out: &[GeneratedText]) -> Vec<Vec<u32>> {
    out.iter().map(|o| o.tokens.iter().map(|t| t.id).collect()).collect()
}

/// Collects every event of a request.
fn collect(mut rx: GenEvents) -> Vec<GenEvent> {
    let mut events = Vec::new();
    while let Some(e) = rx.blocking_recv() {
        events.push(e);
    }
    events
}

fn texts(events: &[GenEvent], n: usize) -> Vec<(String, Vec<u32>, Option<FinishReason>)> {
    let mut out = vec![(String::new(), Vec::new(), None); n];
    for e in events {
        match e {
            GenEvent::Delta { index, text, tokens } => {
                out[*index].0.push_str(text);
                out[*index].1.extend(tokens.iter().map(|t| t.id));
            }
            GenEvent::Finished { index, reason, .. } => out[*index].2 = Some(*reason),
            GenEvent::Failed(e) => panic!("request failed: {e}"),
        }
    }
    out
}

#[test]
fn concurrent_greedy_requests_get_what_they_get_alone() {
    let svc = service(8, 64);
    let prompts = [
        "What is 2+2?",
        "a",
        "Tell me a story about a robot",
        "12345",
        "xyz",
        "The quick brown fox",
    ];
    let lens = [20, 5, 12, 30, 1, 17];
    let alone: Vec<_> = prompts
        .iter()
        .zip(lens)
        .map(|(p, l)| ids(&svc.generate_blocking(request(p, l)).unwrap()))
        .collect();
    let steps_before = svc.stats().decode_steps.load(std::sync::atomic::Ordering::Relaxed);
    let receivers: Vec<_> = prompts
        .iter()
        .zip(lens)
        .map(|(p, l)| svc.submit(request(p, l)).unwrap())
        .collect();
    let together: Vec<_> = receivers
        .into_iter()
        .map(|rx| {
            let events = collect(rx);
            vec![texts(&events, 1)[0].1.clone()]
        })
        .collect();
    assert_eq!(together, alone);
    for (t, l) in together.iter().zip(lens) {
        assert_eq!(t[0].len(), l, "each request stops at its own max_tokens");
    }
    // They decoded together: far fewer steps than tokens.
    let steps = svc.stats().decode_steps.load(std::sync::atomic::Ordering::Relaxed) - steps_before;
    let tokens: usize = lens.iter().sum();
    assert!(steps < tokens as u64 / 2, "{steps} decode steps for {tokens} tokens");
}

#[test]
fn a_seed_gives_the_same_samples_whatever_runs_beside_it() {
    let svc = service(8, 64);
    let sampled = |seed| GenRequest {
        sampling: SamplingParams::default(),
        seed,
        n: 3,
        ..request("Once upon a time", 24)
    };
    let alone = ids(&svc.generate_blocking(sampled(11)).unwrap());
    let others: Vec<_> = (0..3).map(|i| svc.submit(request("noise", 10 + i)).unwrap()).collect();
    let beside = ids(&svc.generate_blocking(sampled(11)).unwrap());
    drop(others);
    assert_eq!(beside, alone);
    assert_ne!(alone[0], alone[1], "the completions of one request differ");
    assert_ne!(ids(&svc.generate_blocking(sampled(12)).unwrap()), alone);
}

#[test]
fn streamed_text_is_the_decoded_tokens_and_stop_strings_are_cut() {
    let svc = service(4, 8);
    let full = svc.generate_blocking(request("Stop here:", 40)).unwrap().remove(0);
    let bytes: Vec<u8> = full.tokens.iter().map(|t| t.id as u8).collect();
    assert_eq!(full.text, String::from_utf8_lossy(&bytes));
    assert_eq!(full.finish_reason, Some(FinishReason::Length));
    // Stop at the second valid character of the output.
    let Some((at, stop)) = full.text.char_indices().filter(|(_, c)| *c != '\u{FFFD}').nth(1) else {
        panic!("the output has too few characters: {:?}", full.text);
    };
    let stopped = svc
        .generate_blocking(GenRequest {
            stop: vec![stop.to_string()],
            ..request("Stop here:", 40)
        })
        .unwrap()
        .remove(0);
    let first = full.text.find(stop).unwrap_or(at);
    assert_eq!(stopped.text, full.text[..first]);
    assert_eq!(stopped.finish_reason, Some(FinishReason::Stop));
}

#[test]
fn log_probs_come_with_the_most_likely_alternatives() {
    let svc = service(2, 8);
    let out = svc
        .generate_blocking(GenRequest {
            top_logprobs: Some(3),
            ..request("Hello", 6)
        })
        .unwrap()
        .remove(0);
    for t in &out.tokens {
        assert_eq!(t.top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(t.top[0].0, t.id);
        assert_eq!(t.top[0].1, t.logprob);
        assert!(t.logprob <= 0.0 && t.top[1].1 <= t.top[0].1);
    }
}

#[test]
fn dropping_the_receiver_cancels_the_request() {
    let svc = service(2, 8);
    let mut rx = svc.submit(request("forever", 100)).unwrap();
    assert!(matches!(rx.blocking_recv(), Some(GenEvent::Delta { .. })));
    drop(rx);
    let start = Instant::now();
    while svc.stats().running.load(std::sync::atomic::Ordering::Relaxed) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the cancelled request still runs"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The rows are free again.
    assert_eq!(svc.generate_blocking(request("next", 3)).unwrap()[0].tokens.len(), 3);
}

#[test]
fn a_full_queue_pushes_back_and_bad_requests_never_queue() {
    let svc = service(1, 1);
    let mut running = svc.submit(request("first", 100)).unwrap();
    assert!(matches!(running.blocking_recv(), Some(GenEvent::Delta { .. })));
    let queued = svc.submit(request("second", 2)).unwrap();
    match svc.submit(request("third", 2)) {
        Err(SubmitError::QueueFull { retry_after_s, .. }) => assert!(retry_after_s >= 1),
        other => panic!("expected QueueFull, got {:?}", other.map(|_| ())),
    }
    drop(running);
    assert_eq!(texts(&collect(queued), 1)[0].2, Some(FinishReason::Length));

    let invalid = |r: GenRequest| match svc.submit(r) {
        Err(SubmitError::Invalid(m)) => m,
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    };
    assert!(
        invalid(GenRequest {
            n: 2,
            ..request("a", 2)
        })
        .contains("n = 2")
    );
    assert!(invalid(request("", 2)).contains("empty"));
    assert!(
        invalid(GenRequest {
            prompt: vec![999],
            ..request("a", 2)
        })
        .contains("999")
    );
    assert!(invalid(request(&"x".repeat(128), 2)).contains("context"));
    let hot = GenRequest {
        sampling: SamplingParams {
            temperature: -1.0,
            ..Default::default()
        },
        ..request("a", 2)
    };
    assert!(invalid(hot).contains("temperature"));
}

#[test]
fn the_memory_budget_decides_the_rows() {
    let svc = service(64, 8);
    let m = svc.model();
    // 2 layers × (keys + values) × 2 kv heads × 16 dims × 4 bytes = 512 bytes a token;
    // 64 MiB / (128 positions × 512 bytes) = 1024 rows, capped at 64.
    assert_eq!(
        svc.stats()
            .kv_bytes_per_token
            .load(std::sync::atomic::Ordering::Relaxed),
        512
    );
    assert_eq!((m.context, m.max_sequences), (128, 64));
    let too_small = EngineService::start_with(
        "tiny",
        None,
        ServiceOptions {
            kv_cache_mib: 0,
            ..Default::default()
        },
        || {
            let backend = CpuBackend::with_threads(1)?;
            let model = Model::init(&backend, config(), 3)?;
            Ok((backend, model))
        },
    );
    let err = too_small.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("--kv-cache-mib"), "{err}");
}
