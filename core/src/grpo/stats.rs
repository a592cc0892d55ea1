//! NaN-aware mean and standard deviation with TRL's semantics (`torch.nanmean`,
//! `trl.trainer.utils.nanstd`): NaN marks "not applicable" and is left out; the standard
//! deviation is the unbiased (n−1) one and undefined (NaN) for fewer than two values.

/// Mean of the non-NaN values; NaN when there are none.
pub fn nan_mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        if !v.is_nan() {
            sum += v;
            n += 1;
        }
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// Unbiased standard deviation of the non-NaN values,
/// `sqrt(Σ (x − x̄)² / (n − 1))`; NaN when fewer than two values are not NaN.
pub fn nan_std<I>(values: I) -> f64
where
    I: IntoIterator<Item = f64>,
    I::IntoIter: Clone,
{
    let it = values.into_iter();
    let mean = nan_mean(it.clone());
    let (mut ss, mut n) = (0.0, 0usize);
    for v in it {
        if !v.is_nan() {
            ss += (v - mean) * (v - mean);
            n += 1;
        }
    }
    if n < 2 {
        f64::NAN
    } else {
        libm::sqrt(ss / (n - 1) as f64)
    }
}

/// NaN as `None`, the way metrics report "no value".
pub fn finite_or_none(v: f64) -> Option<f32> {
    if v.is_nan() { None } else { Some(v as f32) }
}
