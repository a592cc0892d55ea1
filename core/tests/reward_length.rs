//! DAPO's soft overlong punishment, against the worked values of TRL's
//! `get_soft_overlong_punishment` and the DAPO paper's Eq. 13.

use r1_core::reward::length::{LengthUnit, soft_overlong_punishment};
use r1_core::reward::{
    COMPLETION_TOKENS_KEY, Reward, RewardErrorKind, Sample, Score, SoftOverlong, SoftOverlongConfig,
};

#[test]
fn penalty_is_zero_then_a_linear_ramp_then_minus_one() {
    // TRL's docstring example: L_max = 100, L_cache = 20, 90 tokens → −0.5.
    assert_eq!(soft_overlong_punishment(90, 100, 20), -0.5);
    assert_eq!(soft_overlong_punishment(0, 100, 20), 0.0);
    assert_eq!(soft_overlong_punishment(80, 100, 20), 0.0);
    assert_eq!(soft_overlong_punishment(81, 100, 20), -0.05);
    assert_eq!(soft_overlong_punishment(100, 100, 20), -1.0);
    assert_eq!(soft_overlong_punishment(101, 100, 20), -1.0);
    assert_eq!(soft_overlong_punishment(u64::MAX, 100, 20), -1.0);
    // DAPO's setting: L_max = 20480, L_cache = 4096.
    assert_eq!(soft_overlong_punishment(16384, 20480, 4096), 0.0);
    assert_eq!(soft_overlong_punishment(18432, 20480, 4096), -0.5);
    // No cache: a hard cut.
    assert_eq!(soft_overlong_punishment(100, 100, 0), 0.0);
    assert_eq!(soft_overlong_punishment(101, 100, 0), -1.0);
}

fn with_tokens(n: &str) -> Sample {
    Sample {
        completion: "x".repeat(10),
        metadata: vec![(COMPLETION_TOKENS_KEY.into(), n.into())],
        ..Sample::default()
    }
}

#[test]
fn token_counts_come_from_metadata_and_their_absence_is_an_error() {
    let r = SoftOverlong::new(SoftOverlongConfig::new(100, 20)).unwrap();
    assert_eq!(r.name(), "soft_overlong_punishment");
    let batch = [with_tokens("50"), with_tokens("90"), with_tokens("120")];
    assert_eq!(
        r.score(&batch).unwrap(),
        vec![Score::Value(0.0), Score::Value(-0.5), Score::Value(-1.0)]
    );
    let e = r.score(&[with_tokens("50"), Sample::default()]).unwrap_err();
    assert_eq!(e.sample, Some(1));
    assert!(e.to_string().contains(COMPLETION_TOKENS_KEY), "{e}");
    let e = r.score(&[with_tokens("ninety")]).unwrap_err();
    assert!(
        matches!(&e.kind, RewardErrorKind::InvalidSample(m) if m.contains("ninety")),
        "{e}"
    );
}

#[test]
fn lengths_can_be_measured_in_chars_or_bytes() {
    let chars = SoftOverlong::new(SoftOverlongConfig {
        unit: LengthUnit::Chars,
        ..SoftOverlongConfig::new(10, 4)
    })
    .unwrap();
    let s = Sample {
        completion: "答案是十五答案是十五".into(),
        ..Sample::default()
    }; // 10 chars, 30 bytes
    assert_eq!(chars.score(std::slice::from_ref(&s)).unwrap(), vec![Score::Value(-1.0)]);
    let s8 = Sample {
        completion: "答案是十五答案是".into(),
        ..Sample::default()
    }; // 8 chars
    assert_eq!(
        chars.score(std::slice::from_ref(&s8)).unwrap(),
        vec![Score::Value(-0.5)]
    );
    let bytes = SoftOverlong::new(SoftOverlongConfig {
        unit: LengthUnit::Bytes,
        ..SoftOverlongConfig::new(40, 10)
    })
    .unwrap();
    assert_eq!(bytes.score(&[s]).unwrap(), vec![Score::Value(0.0)]);
}

#[test]
fn config_needs_the_two_lengths_and_checks_them() {
    let c: SoftOverlongConfig =
        serde_json::from_str(r#"{"max_completion_len": 4096, "soft_punish_cache": 512}"#).unwrap();
    assert_eq!(c, SoftOverlongConfig::new(4096, 512));
    let e = serde_json::from_str::<SoftOverlongConfig>(r#"{"max_completion_len": 4096}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("soft_punish_cache"), "{e}");
    let e =
        serde_json::from_str::<SoftOverlongConfig>(r#"{"max_completion_len": 1, "soft_punish_cache": 0, "cache": 2}"#)
            .unwrap_err()
            .to_string();
    assert!(e.contains("cache"), "{e}");
    assert!(SoftOverlong::new(SoftOverlongConfig::new(100, 200)).is_err());
    assert!(SoftOverlong::new(SoftOverlongConfig::new(0, 0)).is_err());
}
