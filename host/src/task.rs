//! The bundled reasoning task: multi-digit addition, posed as a question and answered
//! the R1 way — column-by-column working inside `<think>…</think>`, then the sum inside
//! `<answer>…</answer>`. Problems are generated from a seed, so the training, cold-start
//! and held-out sets are reproducible and disjoint.

use std::collections::HashSet;

use r1_core::sampling::Rng;

/// Settings of the generated addition task.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArithmeticTask {
    /// Fewest digits of an operand.
    pub min_digits: u32,
    /// Most digits of an operand.
    pub max_digits: u32,
}

impl Default for ArithmeticTask {
    fn default() -> Self {
        ArithmeticTask {
            min_digits: 2,
            max_digits: 3,
        }
    }
}

/// One problem: the prompt, the worked solution (a full completion) and the answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Problem {
    pub a: u64,
    pub b: u64,
    pub prompt: String,
    /// `<think>…</think><answer>…</answer>`.
    pub solution: String,
    pub answer: String,
}

impl ArithmeticTask {
    fn operand(&self, rng: &mut Rng) -> u64 {
        let span = (self.max_digits.max(self.min_digits) - self.min_digits + 1) as u64;
        let digits = self.min_digits.max(1) + rng.below(span) as u32;
        let lo = if digits == 1 { 0 } else { 10u64.pow(digits - 1) };
        let hi = 10u64.pow(digits);
        lo + rng.below(hi - lo)
    }

    /// How many distinct problems (operand pairs) the task has, saturating at `u64::MAX`:
    /// asking for more cannot succeed.
    pub fn distinct_problems(&self) -> u64 {
        let operands = (self.min_digits.max(1)..=self.max_digits.max(self.min_digits))
            .map(|d| {
                let lo = if d == 1 { 0 } else { 10u64.saturating_pow(d - 1) };
                10u64.saturating_pow(d) - lo
            })
            .fold(0u64, u64::saturating_add);
        operands.saturating_mul(operands)
    }

    /// The problem for operands `a` and `b`.
    pub fn problem(a: u64, b: u64) -> Problem {
        let answer = (a + b).to_string();
        Problem {
            a,
            b,
            prompt: format!("What is {a}+{b}?"),
            solution: format!("<think>{}</think><answer>{answer}</answer>", working(a, b)),
            answer,
        }
    }

    /// `n` distinct problems from `seed`, none of which is in `exclude`.
    pub fn generate(&self, seed: u64, n: usize, exclude: &HashSet<(u64, u64)>) -> Vec<Problem> {
        let mut rng = Rng::new(seed);
        let mut seen = HashSet::new();
        // `n` comes from a user: it bounds the loop, never an allocation.
        let mut out = Vec::new();
        let mut attempts = 0usize;
        while out.len() < n && attempts < n.saturating_mul(100).saturating_add(1000) {
            attempts += 1;
            let (a, b) = (self.operand(&mut rng), self.operand(&mut rng));
            if exclude.contains(&(a, b)) || !seen.insert((a, b)) {
                continue;
            }
            out.push(Self::problem(a, b));
        }
        out
    }
}

/// Column addition from the units up: `7+8=15;4+3+1=8;` for 47+38 (a column's sum above
/// 9 carries 1 into the next column; the last carry needs no step).
pub fn working(a: u64, b: u64) -> String {
    let (da, db) = (digits_rev(a), digits_rev(b));
    let mut out = String::new();
    let mut carry = 0;
    for i in 0..da.len().max(db.len()) {
        let x = da.get(i).copied().unwrap_or(0);
        let y = db.get(i).copied().unwrap_or(0);
        let s = x + y + carry;
        if carry > 0 {
            out.push_str(&format!("{x}+{y}+{carry}={s};"));
        } else {
            out.push_str(&format!("{x}+{y}={s};"));
        }
        carry = s / 10;
    }
    out
}

fn digits_rev(mut n: u64) -> Vec<u64> {
    let mut d = vec![n % 10];
    n /= 10;
    while n > 0 {
        d.push(n % 10);
        n /= 10;
    }
    d
}

/// Partial credit for the working of an addition: the share of column steps
/// (`x+y(+c)=s;`) the completion gets right, in order, against the true column sums of the
/// prompt's operands. A dense, verifiable signal (every step is checkable) for the
/// bundled task; "not applicable" for prompts that are not additions.
pub struct ArithmeticWorking;

impl ArithmeticWorking {
    pub const NAME: &'static str = "working";

    /// The score of one completion for `a + b`.
    pub fn score_one(a: u64, b: u64, completion: &str) -> f32 {
        let truth = working(a, b);
        let expected: Vec<&str> = truth.split_terminator(';').collect();
        let body = r1_core::reasoning::split_reasoning(completion).reasoning.unwrap_or("");
        let got: Vec<&str> = body.split_terminator(';').map(str::trim).collect();
        let right = expected.iter().zip(&got).filter(|(e, g)| e == g).count();
        // Extra steps beyond the true ones count against the score.
        right as f32 / expected.len().max(got.len()).max(1) as f32
    }
}

impl r1_core::reward::Reward for ArithmeticWorking {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn score(
        &self,
        batch: &[r1_core::reward::Sample],
    ) -> Result<Vec<r1_core::reward::Score>, r1_core::reward::RewardError> {
        use r1_core::reward::Score;
        Ok(batch
            .iter()
            .map(|s| match parse_prompt(&s.prompt) {
                Some((a, b)) => Score::Value(Self::score_one(a, b, &s.completion)),
                None => Score::NotApplicable,
            })
            .collect())
    }
}

/// The operands of a prompt made by [`ArithmeticTask::problem`], if it is one.
pub fn parse_prompt(prompt: &str) -> Option<(u64, u64)> {
    let body = prompt.strip_prefix("What is ")?.strip_suffix('?')?;
    let (a, b) = body.split_once('+')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_carries_column_by_column() {
        assert_eq!(working(47, 38), "7+8=15;4+3+1=8;");
        assert_eq!(working(95, 17), "5+7=12;9+1+1=11;");
        assert_eq!(working(105, 7), "5+7=12;0+0+1=1;1+0=1;");
        let p = ArithmeticTask::problem(95, 17);
        assert_eq!(p.solution, "<think>5+7=12;9+1+1=11;</think><answer>112</answer>");
        assert_eq!(parse_prompt(&p.prompt), Some((95, 17)));
    }

    #[test]
    fn working_reward_credits_each_right_column() {
        let full = "<think>7+8=15;4+3+1=8;</think><answer>85</answer>";
        assert_eq!(ArithmeticWorking::score_one(47, 38, full), 1.0);
        assert_eq!(
            ArithmeticWorking::score_one(47, 38, "<think>7+8=15;4+3+1=9;</think><answer>95</answer>"),
            0.5
        );
        assert_eq!(
            ArithmeticWorking::score_one(47, 38, "<think>7+8=15;4+3+1=8;1+0=1;</think>"),
            2.0 / 3.0
        );
        assert_eq!(ArithmeticWorking::score_one(47, 38, "85"), 0.0);
        use r1_core::reward::{Reward, Sample, Score};
        let s = Sample {
            prompt: "Say hi".into(),
            completion: full.into(),
            ..Default::default()
        };
        assert_eq!(ArithmeticWorking.score(&[s]).unwrap(), vec![Score::NotApplicable]);
    }

    #[test]
    fn generated_sets_are_reproducible_distinct_and_disjoint() {
        let t = ArithmeticTask::default();
        let a = t.generate(1, 200, &HashSet::new());
        assert_eq!(a, t.generate(1, 200, &HashSet::new()));
        let used: HashSet<(u64, u64)> = a.iter().map(|p| (p.a, p.b)).collect();
        assert_eq!(used.len(), 200);
        let b = t.generate(2, 200, &used);
        assert!(b.iter().all(|p| !used.contains(&(p.a, p.b))));
        assert!(a.iter().all(|p| (10..1000).contains(&p.a) && (10..1000).contains(&p.b)));
    }
}
