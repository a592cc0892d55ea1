//! `plot_run` on synthetic runs: every curve present gets a decodable PNG and an SVG with
//! its line, stage names and axis labels; missing files and broken lines are named.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use r1_host::plot::{PlotError, plot_run};
use serde_json::json;

/// How the SVG backend writes the stage boundaries' grey.
const BOUNDARY_STROKE: &str = "stroke=\"#5A5A5A\"";

/// A deterministic wobble in [-1, 1] standing in for step-to-step noise.
fn noise(i: usize) -> f64 {
    ((i as f64 * 12.9898).sin() * 43_758.545).fract() * 2.0 - 1.0
}

/// A two-stage pipeline log: 60 steps of cold-start SFT (loss only), then 240 GRPO steps
/// with a rising reward, per-reward means, nulls, and eval accuracy every 10 steps.
fn write_pipeline_metrics(dir: &Path) {
    let mut lines = Vec::new();
    let mut global = 0;
    for step in 1..=60 {
        global += 1;
        let loss = 2.5 * (-(step as f64) / 25.0).exp() + 0.3 + 0.05 * noise(global);
        lines.push(
            json!({"stage": "cold_start", "step": step, "global_step": global, "loss": loss,
            "learning_rate": 1e-3, "grad_norm": 1.0 + 0.2 * noise(global + 7), "step_time": 0.05}),
        );
    }
    for step in 1..=240 {
        global += 1;
        let t = step as f64 / 240.0;
        let reward = 0.2 + 0.6 * t + 0.08 * noise(global);
        let mut line = json!({
            "stage": "grpo1", "step": step, "global_step": global,
            "loss": 0.01 * noise(global + 3),
            "reward": reward, "reward_std": 0.25 - 0.1 * t,
            "rewards/format/mean": (0.5 + 0.5 * t).min(1.0), "rewards/format/std": 0.2,
            "rewards/accuracy/mean": 0.1 + 0.6 * t, "rewards/accuracy/std": 0.3,
            "kl": if step % 7 == 0 { serde_json::Value::Null } else { json!(0.002 * t) },
            "entropy": 1.2 - 0.5 * t, "completions/mean_length": 40.0 + 10.0 * noise(global + 11),
            "completions/clipped_ratio": 0.0, "frac_reward_zero_std": 0.1,
            "learning_rate": 1e-6 * (1.0 - 0.9 * t), "grad_norm": null, "step_time": 0.4,
        });
        if step % 10 == 0 {
            line["eval/accuracy"] = json!(0.3 + 0.4 * t);
        }
        lines.push(line);
    }
    let mut f = File::create(dir.join("metrics.jsonl")).unwrap();
    for line in lines {
        writeln!(f, "{line}").unwrap();
    }
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// Decodes a PNG to RGB pixels with the `png` crate.
fn png_pixels(path: &Path) -> Vec<[u8; 3]> {
    let decoder = png::Decoder::new(File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf[..info.buffer_size()]
        .chunks(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect()
}

/// The text of every `<text>` element of an SVG, trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string()))
        .collect()
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_pipeline_run_gets_a_png_and_an_svg_per_curve_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    write_pipeline_metrics(dir.path());
    let written = plot_run(dir.path()).unwrap();

    let stems = [
        "reward",
        "rewards_accuracy",
        "rewards_format",
        "eval_accuracy",
        "loss",
        "kl",
        "entropy",
        "completions_mean_length",
        "grad_norm",
        "learning_rate",
        "summary",
    ];
    let expected: Vec<String> = stems
        .iter()
        .flat_map(|s| [format!("{s}.png"), format!("{s}.svg")])
        .collect();
    assert_eq!(names(&written), expected);
    let plots = dir.path().join("plots");
    for path in &written {
        assert_eq!(path.parent(), Some(plots.as_path()));
    }
    // Atomic writes leave no temporary files behind.
    let mut on_disk: Vec<String> = std::fs::read_dir(&plots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(on_disk, sorted);

    for path in written.iter().filter(|p| p.extension().is_some_and(|e| e == "png")) {
        let size = png_size(path);
        let expected_size = if path.ends_with("summary.png") {
            (1400, 860)
        } else {
            (1000, 560)
        };
        assert_eq!(size, expected_size, "{}", path.display());
        let pixels = png_pixels(path);
        assert_eq!(pixels.len(), (size.0 * size.1) as usize);
        // White, or the light grey that shades every other stage.
        let background = pixels.iter().filter(|p| p.iter().all(|&c| c >= 235)).count();
        let ink = pixels.iter().filter(|p| p.iter().all(|&c| c < 160)).count();
        assert!(background > pixels.len() / 2, "{}: mostly background", path.display());
        assert!(
            ink > 2_000,
            "{}: only {ink} dark pixels (text, axes, lines)",
            path.display()
        );
    }

    for path in written.iter().filter(|p| p.extension().is_some_and(|e| e == "svg")) {
        let svg = std::fs::read_to_string(path).unwrap();
        assert!(svg.contains("<svg"), "{}", path.display());
        assert!(
            svg.contains("<polyline") || svg.contains("<path"),
            "{}: no line",
            path.display()
        );
        let texts = svg_texts(&svg);
        assert!(
            texts
                .iter()
                .any(|t| t == "global step" || t == "step (stages that log it, end to end)"),
            "{}: x axis not labelled",
            path.display()
        );
        assert!(
            texts.iter().any(|t| t == "grpo1" || t == "cold_start"),
            "{}: stage name missing: {texts:?}",
            path.display()
        );
        // The boundary is dashed: one short grey polyline per dash.
        // Curves logged by the GRPO stage only are drawn over that stage alone: no boundary.
        let own_stages = texts.iter().any(|t| t == "step (stages that log it, end to end)");
        let dashes = svg.matches(BOUNDARY_STROKE).count();
        if own_stages && !path.ends_with("summary.svg") {
            assert_eq!(dashes, 0, "{}: a boundary on a one-stage axis", path.display());
        } else {
            assert!(dashes > 10, "{}: {dashes} boundary dashes", path.display());
        }
    }

    let reward = std::fs::read_to_string(plots.join("reward.svg")).unwrap();
    let texts = svg_texts(&reward);
    for expected in [
        "Reward",
        "reward",
        "± reward_std",
        "reward (each step)",
        "moving mean of 9 steps",
        "grpo1",
    ] {
        assert!(
            texts.iter().any(|t| t == expected),
            "reward.svg lacks `{expected}`: {texts:?}"
        );
    }
    // 240 GRPO steps: the per-step line holds one vertex per logged reward.
    let longest = reward
        .split("<polyline")
        .skip(1)
        .map(|s| {
            s.split("points=\"")
                .nth(1)
                .unwrap_or("")
                .split('"')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .count()
        })
        .max()
        .unwrap_or(0);
    assert_eq!(longest, 240);

    let learning_rate = svg_texts(&std::fs::read_to_string(plots.join("learning_rate.svg")).unwrap());
    assert!(
        learning_rate.iter().any(|t| t == "learning_rate (log scale)"),
        "1e-3 and 1e-6 share a log axis"
    );
    assert!(
        learning_rate.iter().any(|t| t == "1e-5"),
        "decade ticks: {learning_rate:?}"
    );

    let summary = svg_texts(&std::fs::read_to_string(plots.join("summary.svg")).unwrap());
    for title in ["Reward", "Held-out accuracy", "Loss", "Completion length"] {
        assert!(
            summary.iter().any(|t| t == title),
            "summary lacks panel {title}: {summary:?}"
        );
    }
    assert!(
        !summary.iter().any(|t| t == "Token entropy"),
        "summary holds four panels"
    );
}

#[test]
fn an_sft_run_without_stages_plots_only_what_it_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut f = File::create(dir.path().join("metrics.jsonl")).unwrap();
    for step in 1..=50 {
        writeln!(
            f,
            "{}",
            json!({"step": step, "loss": 3.0 / step as f64, "learning_rate": 1e-3})
        )
        .unwrap();
    }
    drop(f);
    let written = plot_run(dir.path()).unwrap();
    assert_eq!(
        names(&written),
        vec![
            "loss.png",
            "loss.svg",
            "learning_rate.png",
            "learning_rate.svg",
            "summary.png",
            "summary.svg"
        ]
    );
    let loss = std::fs::read_to_string(dir.path().join("plots/loss.svg")).unwrap();
    let texts = svg_texts(&loss);
    assert!(
        texts.iter().any(|t| t == "step"),
        "without global_step the x axis is `step`: {texts:?}"
    );
    assert!(texts.iter().any(|t| t == "moving mean of 5 steps"), "{texts:?}");
    assert_eq!(
        loss.matches(BOUNDARY_STROKE).count(),
        0,
        "no stage boundaries without stages"
    );
}

#[test]
fn a_missing_metrics_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = plot_run(dir.path()).unwrap_err();
    assert!(matches!(&err, PlotError::MissingMetrics { path } if path == &dir.path().join("metrics.jsonl")));
    assert!(err.to_string().contains("metrics.jsonl"), "{err}");
    assert!(
        !dir.path().join("plots").exists(),
        "nothing is written for a failed run"
    );
}

#[test]
fn a_line_that_does_not_parse_is_named_by_its_number() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": 1.0}\n\n{\"step\": 2, \"loss\": 0.9}\n{\"step\": 3, \"loss\": \n{\"step\": 4}\n",
    )
    .unwrap();
    let err = plot_run(dir.path()).unwrap_err();
    assert!(matches!(err, PlotError::BadLine { line: 4, .. }), "{err:?}");
    assert!(err.to_string().contains("line 4"), "{err}");
}

#[test]
fn a_line_that_is_not_an_object_is_named_by_its_number() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": 1.0}\n[1, 2]\n",
    )
    .unwrap();
    let err = plot_run(dir.path()).unwrap_err();
    assert!(matches!(err, PlotError::BadLine { line: 2, .. }), "{err:?}");
}

#[test]
fn the_unfinished_last_line_of_a_live_run_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": 1.0}\n{\"step\": 2, \"lo",
    )
    .unwrap();
    let written = plot_run(dir.path()).unwrap();
    assert_eq!(
        names(&written),
        vec!["loss.png", "loss.svg", "summary.png", "summary.svg"]
    );
}

#[test]
fn a_run_without_numbers_for_any_curve_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("metrics.jsonl"),
        "{\"step\": 1, \"loss\": null, \"stage\": \"sft\"}\n{\"step\": 2, \"reward\": \"high\", \"step_time\": 0.1}\n",
    )
    .unwrap();
    let err = plot_run(dir.path()).unwrap_err();
    assert!(matches!(err, PlotError::NoCurves { .. }), "{err:?}");
    assert!(err.to_string().contains("no numeric values"), "{err}");
}
