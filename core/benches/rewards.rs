//! Throughput (samples/s) of each built-in rule reward on realistic R1-style completions: a
//! chain of thought of a kilobyte or two, then the answer (boxed, tagged, stated in a
//! sentence, or missing), in English, Chinese and Russian. One iteration scores a group of 64.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use r1_core::reward::{BuiltinRewardConfig, COMPLETION_TOKENS_KEY, Sample};
use std::hint::black_box;

const EN_STEPS: &str = "Let me think about this carefully. Natalia sold 48 clips in April. In May she sold half \
as many, which is 48 / 2 = 24 clips. So altogether she sold 48 + 24 clips. Let me double-check: half of 48 \
is 24, because 24 * 2 = 48. Adding, 48 + 24 = 72. Wait, the question asks for the total over April and May, \
not only May, so the total is indeed 72. Let me verify once more by a different route: 1.5 * 48 = 72. ";

const ZH_STEPS: &str = "首先，我们需要理解题目。娜塔莉亚四月份卖出了48个夹子，五月份卖出的数量是四月份的一半，\
也就是 48 / 2 = 24 个。所以两个月一共卖出 48 + 24 = 72 个。让我再检查一下：24 乘以 2 等于 48，没错。";

const RU_STEPS: &str = "Сначала разберёмся с условием. В апреле Наталья продала 48 заколок, а в мае вдвое \
меньше, то есть 48 / 2 = 24. Всего получается 48 + 24 = 72. Проверим: 24 * 2 = 48, всё верно. ";

fn completions() -> Vec<(String, &'static str)> {
    let en = EN_STEPS.repeat(4);
    vec![
        (
            format!("<think>\n{en}\n</think>\n\nNatalia sold **72** clips.\n\n\\[\n\\boxed{{72}}\n\\]"),
            "#### 72",
        ),
        (format!("<think>\n{en}\n</think>\n\nThe answer is 70."), "#### 72"),
        (format!("<think>\n{en}\n</think>\n<answer>\n72\n</answer>"), "72"),
        (
            format!("<think>\n{en} So the ratio is \\frac{{3}}{{4}}.\n</think>\n\n$\\boxed{{\\dfrac{{3}}{{4}}}}$"),
            "0.75",
        ),
        (
            format!("<think>\n{}\n</think>\n\n答案是 \\boxed{{72}}。", ZH_STEPS.repeat(4)),
            "72",
        ),
        (format!("<think>\n{}\n</think>\n\nОтвет: 72.", RU_STEPS.repeat(4)), "72"),
        (format!("<think>\n{en}{en}"), "72"), // ran out of tokens mid-thought
        (format!("{en}\n</think>\n\nShe sold 1,234 clips in total."), "1234"),
    ]
}

fn batch() -> Vec<Sample> {
    let c = completions();
    (0..64)
        .map(|i| {
            let (completion, reference) = &c[i % c.len()];
            Sample {
                prompt: "<｜User｜>Natalia sold clips to 48 of her friends in April, and then she sold half as many \
                         clips in May. How many clips did Natalia sell altogether in April and May?<｜Assistant｜>"
                    .into(),
                completion: completion.clone(),
                reference: Some(reference.to_string()),
                metadata: vec![(COMPLETION_TOKENS_KEY.into(), (completion.len() / 4).to_string())],
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let batch = batch();
    let bytes: usize = batch.iter().map(|s| s.completion.len()).sum();
    eprintln!(
        "reward bench: 64 samples, {} bytes of completion on average",
        bytes / batch.len()
    );
    let mut group = c.benchmark_group("reward_64_samples");
    group.throughput(Throughput::Elements(batch.len() as u64));
    let configs = [
        r#"{"type": "accuracy"}"#,
        r#"{"type": "think_format"}"#,
        r#"{"type": "think_format", "mode": "strict", "answer_tags": true}"#,
        r#"{"type": "tag_count"}"#,
        r#"{"type": "language_consistency"}"#,
        r#"{"type": "soft_overlong_punishment", "max_completion_len": 1024, "soft_punish_cache": 256}"#,
    ];
    for json in configs {
        let cfg: BuiltinRewardConfig = serde_json::from_str(json).expect("valid config");
        let reward = cfg.build(None).expect("valid reward");
        let id = match &cfg {
            BuiltinRewardConfig::ThinkFormat(t) if t.answer_tags => "think_format_strict_answer_tags".to_string(),
            _ => cfg.default_name().to_string(),
        };
        group.bench_function(id, |b| {
            b.iter(|| black_box(reward.score(black_box(&batch)).expect("scores")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
