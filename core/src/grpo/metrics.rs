//! The loss metrics TRL's `GRPOTrainer` logs, under its names, so r1 curves read like TRL's.

/// Metrics of one loss evaluation. `None` means TRL would not log the metric for this
/// configuration (no `kl` when β = 0, no `clip_ratio/*` for cispo/sapo) or would log NaN
/// (`clip_ratio/low_min` when no sequence has a token).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossMetrics {
    /// `kl`: masked mean of the per-token KL term (times ρ with `use_bias_correction_kl`).
    pub kl: Option<f32>,
    /// `clip_ratio/low_mean`: share of tokens with `ρ < 1 − ε_low` and `A < 0`.
    pub clip_ratio_low_mean: Option<f32>,
    /// `clip_ratio/high_mean`: share of tokens with `ρ > 1 + ε_high` and `A > 0`.
    pub clip_ratio_high_mean: Option<f32>,
    /// `clip_ratio/region_mean`: share of tokens clipped either way.
    pub clip_ratio_region_mean: Option<f32>,
    /// `clip_ratio/low_min`: the smallest per-sequence low-clip share.
    pub clip_ratio_low_min: Option<f32>,
    /// `clip_ratio/high_max`: the largest per-sequence high-clip share.
    pub clip_ratio_high_max: Option<f32>,
    /// `cispo_clip_ratio`: share of tokens with `ρ > ε_high` and `A > 0` (cispo only).
    pub cispo_clip_ratio: Option<f32>,
}

impl LossMetrics {
    /// TRL's metric names, in the order [`Self::entries`] yields them.
    pub const NAMES: [&'static str; 7] = [
        "kl",
        "clip_ratio/low_mean",
        "clip_ratio/high_mean",
        "clip_ratio/region_mean",
        "clip_ratio/low_min",
        "clip_ratio/high_max",
        "cispo_clip_ratio",
    ];

    fn values(&self) -> [Option<f32>; 7] {
        [
            self.kl,
            self.clip_ratio_low_mean,
            self.clip_ratio_high_mean,
            self.clip_ratio_region_mean,
            self.clip_ratio_low_min,
            self.clip_ratio_high_max,
            self.cispo_clip_ratio,
        ]
    }

    /// The metrics that have a value, as `(TRL name, value)`.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, f32)> {
        Self::NAMES
            .into_iter()
            .zip(self.values())
            .filter_map(|(n, v)| v.map(|v| (n, v)))
    }

    /// The metric logged under TRL's `name`, if it has a value.
    pub fn get(&self, name: &str) -> Option<f32> {
        Self::NAMES
            .iter()
            .position(|&n| n == name)
            .and_then(|i| self.values()[i])
    }
}
