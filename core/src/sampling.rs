//! Sampling the next token from logits: repetition penalty, temperature, top-k, top-p
//! (nucleus), min-p, and a seeded RNG, in the order and with the semantics of Hugging
//! Face `generate` (its logits processors/warpers), deterministic for a given seed.

use alloc::vec::Vec;

/// `log p(token)` under the softmax of `logits` (non-finite logits count as impossible)
/// and the `k` most likely tokens with theirs, best first (ties by lower id).
pub fn top_logprobs(logits: &[f32], token: u32, k: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return (f32::NEG_INFINITY, Vec::new());
    }
    let sum: f64 = logits
        .iter()
        .filter(|l| l.is_finite())
        .map(|&l| libm::exp((l - max) as f64))
        .sum();
    let lse = max + libm::log(sum) as f32;
    let lp = |l: f32| if l.is_finite() { l - lse } else { f32::NEG_INFINITY };
    let chosen = logits.get(token as usize).map_or(f32::NEG_INFINITY, |&l| lp(l));
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &l) in logits.iter().enumerate() {
        if !l.is_finite() || (best.len() == k && best.last().is_some_and(|b| b.1 >= l)) {
            continue;
        }
        let at = best.partition_point(|b| b.1 >= l);
        best.insert(at, (i as u32, l));
        best.truncate(k);
    }
    (chosen, best.into_iter().map(|(i, l)| (i, lp(l))).collect())
}

/// A small, fast, seedable RNG (xoshiro256**, seeded through splitmix64). Its whole state
/// is four words, saved in checkpoints so a resumed run samples the same tokens.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// An RNG seeded from `seed`; the same seed gives the same stream on every platform.
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 uniformly random bits (one xoshiro256** step).
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `0..n` (`n > 0`), without modulo bias worth measuring.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A standard normal sample (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(2.0 * core::f64::consts::PI * u2)
    }

    /// A child RNG for an independent stream (one per sequence, say).
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// How to pick the next token. Defaults: plain sampling at temperature 1.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep the `k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `p`; 1 disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p × p(most likely)`; 0 disables.
    pub min_p: f32,
    /// HF's CTRL-style penalty for tokens already in the sequence (prompt included),
    /// applied once per distinct token; 1 disables.
    pub repetition_penalty: f32,
    /// OpenAI's penalty subtracted from the logit of every token the completion already
    /// holds (the prompt does not count); 0 disables.
    pub presence_penalty: f32,
    /// OpenAI's penalty subtracted once per earlier occurrence in the completion; 0 disables.
    pub frequency_penalty: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

/// A sampling setting outside its domain.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingError(pub &'static str);

impl core::fmt::Display for SamplingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SamplingError {}

impl SamplingParams {
    /// Argmax decoding: temperature 0, every other setting at its default.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Checks each setting's range: temperature finite and `>= 0`, `top_p` in `(0, 1]`,
    /// `min_p` in `[0, 1]`, `repetition_penalty` finite and `> 0`, presence and frequency
    /// penalties in `[-2, 2]` (OpenAI's range).
    pub fn validate(&self) -> Result<(), SamplingError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SamplingError("temperature must be a finite number >= 0"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SamplingError("top_p must be in (0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplingError("min_p must be in [0, 1]"));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(SamplingError("repetition_penalty must be a positive number"));
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return Err(SamplingError("presence_penalty must be in [-2, 2]"));
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return Err(SamplingError("frequency_penalty must be in [-2, 2]"));
        }
        Ok(())
    }
}

/// The chosen token and its log-probability under the distribution it was drawn from
/// (after penalty, temperature and truncation; 0 for greedy).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampled {
    /// The chosen token id.
    pub token: u32,
    /// Its natural-log probability after penalty, temperature and truncation (0 when greedy).
    pub logprob: f32,
}

/// Reusable scratch space so sampling allocates nothing per token.
#[derive(Default)]
pub struct Sampler {
    candidates: Vec<(f32, u32)>,
    /// The radix sort's second buffer (see [`sort_by_logit`]).
    sorted: Vec<(f32, u32)>,
    /// Distinct tokens of a sequence, with their counts.
    counts: Vec<(u32, u32)>,
}

impl Sampler {
    /// A sampler with empty scratch space (it grows to the vocabulary size on first use).
    pub fn new() -> Self {
        Sampler::default()
    }

    /// Fills `counts` with the distinct tokens of `tokens` and how often each occurs.
    fn count(&mut self, tokens: &[u32]) {
        let c = &mut self.counts;
        c.clear();
        c.extend(tokens.iter().map(|&t| (t, 1)));
        c.sort_unstable_by_key(|e| e.0);
        c.dedup_by(|b, a| {
            let same = a.0 == b.0;
            if same {
                a.1 += b.1;
            }
            same
        });
    }

    /// Picks the next token from `logits` (modified in place by the penalty) given the
    /// tokens of the sequence so far. Non-finite logits are treated as impossible tokens;
    /// if none is finite, token 0 is returned with log-prob −∞.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32], params: &SamplingParams, rng: &mut Rng) -> Sampled {
        self.sample_completion(logits, history, history.len(), params, rng)
    }

    /// [`Sampler::sample`] where `history[completion_start..]` is the completion so far
    /// (what the presence and frequency penalties look at) and the rest is the prompt.
    pub fn sample_completion(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
        completion_start: usize,
        params: &SamplingParams,
        rng: &mut Rng,
    ) -> Sampled {
        if params.repetition_penalty != 1.0 {
            self.count(history);
            for &(t, _) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / params.repetition_penalty
                    } else {
                        *l * params.repetition_penalty
                    };
                }
            }
        }
        if params.presence_penalty != 0.0 || params.frequency_penalty != 0.0 {
            self.count(history.get(completion_start..).unwrap_or(&[]));
            for &(t, n) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= params.presence_penalty + params.frequency_penalty * n as f32;
                }
            }
        }
        if params.temperature == 0.0 {
            let mut best = (f32::NEG_INFINITY, 0u32);
            for (i, &l) in logits.iter().enumerate() {
                if l.is_finite() && (l > best.0 || best.0 == f32::NEG_INFINITY) {
                    best = (l, i as u32);
                }
            }
            let logprob = if best.0.is_finite() { 0.0 } else { f32::NEG_INFINITY };
            return Sampled { token: best.1, logprob };
        }
        let inv_t = 1.0 / params.temperature;
        let c = &mut self.candidates;
        c.clear();
        c.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite())
                .map(|(i, &l)| (l * inv_t, i as u32)),
        );
        if c.is_empty() {
            return Sampled {
                token: 0,
                logprob: f32::NEG_INFINITY,
            };
        }
        // Most likely first (ties by lower id, so runs are reproducible).
        if params.top_k > 0 && params.top_k < c.len() {
            c.select_nth_unstable_by(params.top_k - 1, by_logit);
            c.truncate(params.top_k);
            c.sort_unstable_by(by_logit);
        } else {
            // Still in id order.
            sort_by_logit(c, &mut self.sorted);
        }
        let max = c[0].0;
        for (i, e) in c.iter_mut().enumerate() {
            let d = (e.0 - max) as f64;
            if d <= EXP_ZERO_BELOW {
                // This and (sorted) every later one would round to 0.
                c[i..].iter_mut().for_each(|e| e.0 = 0.0);
                break;
            }
            e.0 = libm::exp(d) as f32; // unnormalised probability from here on
        }
        if params.min_p > 0.0 {
            // p_i / p_max >= min_p, with p_max = 1 unnormalised.
            let keep = c.iter().take_while(|e| e.0 >= params.min_p).count().max(1);
            c.truncate(keep);
        }
        draw_from(c, params.top_p, rng)
    }
}

/// The last step of sampling, on candidates in sampling order holding unnormalised
/// probabilities: the top-p cut (the smallest prefix whose share reaches `top_p`), then a
/// draw from what is left, by walking its cumulative sum.
fn draw_from(c: &mut Vec<(f32, u32)>, top_p: f32, rng: &mut Rng) -> Sampled {
    if top_p < 1.0 {
        let mut cum = 0.0f64;
        let total_now: f64 = c.iter().map(|e| e.0 as f64).sum();
        let mut keep = c.len();
        for (i, e) in c.iter().enumerate() {
            cum += e.0 as f64 / total_now;
            if cum >= top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        c.truncate(keep.max(1));
    }
    let total: f64 = c.iter().map(|e| e.0 as f64).sum();
    let mut u = rng.next_f64() * total;
    let mut chosen = c[c.len() - 1];
    for &e in c.iter() {
        u -= e.0 as f64;
        if u < 0.0 {
            chosen = e;
            break;
        }
    }
    Sampled {
        token: chosen.1,
        logprob: libm::log(chosen.0 as f64 / total) as f32,
    }
}

/// Exponents at or below which `exp` rounds to 0 in f32: e^-104 ≈ 6.83e-46 is below half
/// the smallest subnormal (2^-150 ≈ 7.01e-46), with a margin far larger than `libm::exp`'s
/// error, so skipping the call changes no value.
const EXP_ZERO_BELOW: f64 = -104.0;

/// The sampling order: higher (scaled) logit first, ties by lower id.
fn by_logit(a: &(f32, u32), b: &(f32, u32)) -> core::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Candidates at which [`sort_by_logit`] switches from a comparison sort to radix passes
/// (`benches/sampling.rs`: a token of a 512-word vocabulary samples in about the same
/// time either way, of 4,096 words 1.7× and of Qwen's 151,936 2.5× faster with radix).
const RADIX_SORT_MIN: usize = 512;
/// Bits of the key per radix pass (three passes cover an f32).
const RADIX_BITS: u32 = 11;

/// Sorts `c`, given in increasing id order, by [`by_logit`]: a comparison sort for short
/// lists, else a least-significant-digit radix sort on each logit's bits mapped so that
/// integer order is `total_cmp`'s, reversed. Each pass is stable, so equal logits keep
/// their id order: the result is the comparison sort's, element for element. `scratch`
/// is the second buffer the passes alternate with.
fn sort_by_logit(c: &mut Vec<(f32, u32)>, scratch: &mut Vec<(f32, u32)>) {
    let n = c.len();
    debug_assert!(c.windows(2).all(|w| w[0].1 < w[1].1), "candidates in id order");
    if n < RADIX_SORT_MIN {
        c.sort_unstable_by(by_logit);
        return;
    }
    // `total_cmp` order as unsigned integers (negative values reversed below positive
    // ones), then complemented: ascending keys are descending logits.
    let key = |x: f32| {
        let b = x.to_bits();
        !(if b >> 31 == 1 { !b } else { b | 1 << 31 })
    };
    // Same length as `c` (the buffers swap after each pass), so usually nothing to do.
    scratch.resize(n, (0.0, 0));
    let buckets = 1usize << RADIX_BITS;
    let mut counts = [0usize; 1 << RADIX_BITS];
    for pass in 0..32u32.div_ceil(RADIX_BITS) {
        let shift = pass * RADIX_BITS;
        let digit = |x: f32| ((key(x) >> shift) as usize) & (buckets - 1);
        counts.fill(0);
        for e in c.iter() {
            counts[digit(e.0)] += 1;
        }
        if counts.contains(&n) {
            continue; // every key has this digit: the pass would not move anything
        }
        let mut start = 0;
        for k in counts.iter_mut() {
            let here = *k;
            *k = start;
            start += here;
        }
        for &e in c.iter() {
            let d = digit(e.0);
            scratch[counts[d]] = e;
            counts[d] += 1;
        }
        core::mem::swap(c, scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// The sampler without its shortcuts: a comparison sort and every `exp`.
    fn plain_sample(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> (u32, f32) {
        let mut c: Vec<(f32, u32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (l * (1.0 / p.temperature), i as u32))
            .collect();
        c.sort_unstable_by(by_logit);
        let max = c[0].0;
        c.iter_mut().for_each(|e| e.0 = libm::exp((e.0 - max) as f64) as f32);
        let s = draw_from(&mut c, p.top_p, rng);
        (s.token, s.logprob)
    }

    #[test]
    fn sampling_draws_what_the_plain_definition_draws() {
        // A large vocabulary (radix sort) with a spread wide enough that most candidates'
        // probabilities round to 0 (the skipped `exp` calls), ties, and a non-finite logit.
        let mut rng = Rng::new(9);
        let mut logits: Vec<f32> = (0..30_000).map(|_| (rng.normal() * 40.0) as f32).collect();
        logits[17] = f32::NEG_INFINITY;
        logits[18] = logits[19];
        for (temperature, top_p) in [(1.0, 1.0), (0.6, 1.0), (1.0, 0.9), (3.0, 1.0)] {
            let p = SamplingParams {
                temperature,
                top_p,
                ..SamplingParams::default()
            };
            let mut s = Sampler::new();
            let (mut a, mut b) = (Rng::new(21), Rng::new(21));
            for _ in 0..200 {
                let got = s.sample(&mut logits.clone(), &[], &p, &mut a);
                let (token, logprob) = plain_sample(&logits, &p, &mut b);
                assert_eq!(
                    (got.token, got.logprob.to_bits()),
                    (token, logprob.to_bits()),
                    "T = {temperature}, top_p = {top_p}"
                );
            }
        }
    }

    #[test]
    fn the_radix_sort_gives_the_comparison_sorts_order() {
        // Signed values, zeros of both signs, infinities, many ties (a few distinct
        // values), and lengths on both sides of the switch.
        let mut rng = Rng::new(5);
        for n in [RADIX_SORT_MIN - 1, RADIX_SORT_MIN, 20_000] {
            for distinct in [3u64, 1000, 0] {
                let mut c: Vec<(f32, u32)> = (0..n as u32)
                    .map(|i| {
                        let x = if distinct == 0 {
                            (rng.normal() * 30.0) as f32
                        } else {
                            rng.below(distinct) as f32 - (distinct / 2) as f32
                        };
                        let x = match i % 997 {
                            0 => -0.0,
                            1 => 0.0,
                            2 => f32::INFINITY,
                            3 => f32::NEG_INFINITY,
                            4 => f32::MIN_POSITIVE / 4.0,
                            _ => x,
                        };
                        (x, i)
                    })
                    .collect();
                let mut want = c.clone();
                want.sort_unstable_by(by_logit);
                sort_by_logit(&mut c, &mut Vec::new());
                let bits = |v: &[(f32, u32)]| v.iter().map(|e| (e.0.to_bits(), e.1)).collect::<Vec<_>>();
                assert!(bits(&c) == bits(&want), "n = {n}, distinct = {distinct}");
            }
        }
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits = vec![0.1f32, 0.5, 2.0, -1.0, 0.0];
        let p = SamplingParams::default();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut s = Sampler::new();
            (0..50)
                .map(|_| s.sample(&mut logits.clone(), &[], &p, &mut rng).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut logits = vec![0.1f32, 3.0, 2.0];
        let s = Sampler::new().sample(&mut logits, &[], &SamplingParams::greedy(), &mut Rng::new(0));
        assert_eq!(s.token, 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_certain() {
        let mut logits = vec![0.1f32, 3.0, 2.0];
        let p = SamplingParams {
            top_k: 1,
            ..Default::default()
        };
        let s = Sampler::new().sample(&mut logits, &[], &p, &mut Rng::new(3));
        assert_eq!(s, Sampled { token: 1, logprob: 0.0 });
    }

    #[test]
    fn frequencies_follow_the_softmax() {
        // p = softmax([0, ln 3]) = [0.25, 0.75].
        let p = SamplingParams::default();
        let mut rng = Rng::new(11);
        let mut s = Sampler::new();
        let n = 20000;
        let ones = (0..n)
            .filter(|_| s.sample(&mut [0.0, 3f32.ln()], &[], &p, &mut rng).token == 1)
            .count();
        let f = ones as f64 / n as f64;
        assert!((f - 0.75).abs() < 0.015, "{f}");
    }

    #[test]
    fn top_p_drops_the_tail() {
        // probs ∝ [8, 4, 2, 1, 1] / 16 → top_p 0.7 keeps the first two.
        let base = [8f32.ln(), 4f32.ln(), 2f32.ln(), 0.0, 0.0];
        let p = SamplingParams {
            top_p: 0.7,
            ..Default::default()
        };
        let mut rng = Rng::new(5);
        let mut s = Sampler::new();
        for _ in 0..2000 {
            let out = s.sample(&mut base.clone(), &[], &p, &mut rng);
            assert!(out.token < 2);
            let expect = if out.token == 0 {
                (2.0f32 / 3.0).ln()
            } else {
                (1.0f32 / 3.0).ln()
            };
            assert!((out.logprob - expect).abs() < 1e-5);
        }
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let base = [0.0f32, -1.0, -5.0];
        let p = SamplingParams {
            min_p: 0.1,
            ..Default::default()
        }; // e^-5 < 0.1
        let mut rng = Rng::new(9);
        let mut s = Sampler::new();
        assert!((0..3000).all(|_| s.sample(&mut base.clone(), &[], &p, &mut rng).token != 2));
    }

    #[test]
    fn repetition_penalty_matches_hf() {
        let mut logits = vec![2.0f32, -2.0, 1.0];
        let p = SamplingParams {
            repetition_penalty: 2.0,
            temperature: 0.0,
            ..Default::default()
        };
        let s = Sampler::new().sample(&mut logits, &[0, 1], &p, &mut Rng::new(0));
        assert_eq!(logits, vec![1.0, -4.0, 1.0]);
        assert_eq!(s.token, 0); // tie → lowest id
    }

    #[test]
    fn repetition_penalty_applies_once_per_distinct_token() {
        let mut logits = vec![2.0f32, 1.0];
        let p = SamplingParams {
            repetition_penalty: 2.0,
            temperature: 0.0,
            ..Default::default()
        };
        Sampler::new().sample(&mut logits, &[0, 0, 0], &p, &mut Rng::new(0));
        assert_eq!(logits, vec![1.0, 1.0]);
    }

    #[test]
    fn presence_and_frequency_penalties_count_only_the_completion() {
        let mut logits = vec![5.0f32, 5.0, 5.0];
        let p = SamplingParams {
            presence_penalty: 0.5,
            frequency_penalty: 0.25,
            temperature: 0.0,
            ..Default::default()
        };
        // Prompt [2], completion [0, 0, 1].
        Sampler::new().sample_completion(&mut logits, &[2, 0, 0, 1], 1, &p, &mut Rng::new(0));
        assert_eq!(logits, vec![5.0 - 0.5 - 0.5, 5.0 - 0.5 - 0.25, 5.0]);
        assert!(
            SamplingParams {
                presence_penalty: 2.5,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn top_logprobs_are_the_log_softmax_best_first() {
        let logits = [1.0f32, 3.0, f32::NAN, 2.0];
        let (lp, top) = top_logprobs(&logits, 3, 2);
        let lse = libm::logf(libm::expf(1.0) + libm::expf(3.0) + libm::expf(2.0));
        assert!((lp - (2.0 - lse)).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((top[0].1 - (3.0 - lse)).abs() < 1e-6);
        assert_eq!(top_logprobs(&logits, 2, 0), (f32::NEG_INFINITY, vec![]));
    }

    #[test]
    fn non_finite_logits_are_never_chosen() {
        let mut logits = vec![f32::NAN, f32::NEG_INFINITY, 0.5];
        let s = Sampler::new().sample(&mut logits, &[], &SamplingParams::default(), &mut Rng::new(1));
        assert_eq!(s.token, 2);
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = Rng::new(2);
        let n = 20000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }
}
