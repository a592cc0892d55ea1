//! A weighted combination of named rewards that also reports every component's scores, so
//! the trainer can log `rewards/<name>/mean` and `rewards/<name>/std` as TRL does. The total
//! is TRL's: the weighted sum of the components that apply, "not applicable" when none does.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Reward, RewardError, RewardErrorKind, Sample, Score};
use crate::grpo::RewardStats;

/// One reward of a [`Composite`] with its weight.
pub struct Component {
    /// Multiplies the reward's scores in the total (TRL's `reward_weights`); finite.
    pub weight: f32,
    /// The reward; its name is unique within the composite.
    pub reward: Box<dyn Reward>,
}

/// Named rewards with weights (see the module docs).
pub struct Composite {
    name: String,
    components: Vec<Component>,
}

/// One component's scores of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ComponentScores {
    /// The component reward's name (the `<name>` of `rewards/<name>/mean`).
    pub name: String,
    /// Its weight in the total.
    pub weight: f32,
    /// One score per sample of the batch, in order.
    pub scores: Vec<Score>,
}

impl ComponentScores {
    /// The scores as TRL holds them (NaN = not applicable).
    pub fn as_f32(&self) -> Vec<f32> {
        self.scores.iter().map(|s| s.as_f32()).collect()
    }

    /// Mean and std over the samples the reward applies to.
    pub fn stats(&self) -> RewardStats {
        RewardStats::of(&self.as_f32())
    }
}

/// A batch scored by every component, and the weighted total.
#[derive(Clone, Debug, PartialEq)]
pub struct CompositeScores {
    /// Per sample, the weighted sum of the applicable component scores ("not applicable"
    /// when none applies).
    pub total: Vec<Score>,
    /// Every component's scores, in the order the components were added.
    pub components: Vec<ComponentScores>,
}

impl CompositeScores {
    /// `rewards/<name>/mean` and `rewards/<name>/std` of every component, in order (`None`
    /// where TRL logs NaN: no applicable sample, or one for the std).
    pub fn metrics(&self) -> Vec<(String, Option<f32>)> {
        let mut out = Vec::with_capacity(self.components.len() * 2);
        for c in &self.components {
            let s = c.stats();
            out.push((format!("rewards/{}/mean", c.name), s.mean));
            out.push((format!("rewards/{}/std", c.name), s.std));
        }
        out
    }
}

impl Composite {
    /// An empty composite that logs under `name` and names itself in errors.
    pub fn new(name: impl Into<String>) -> Composite {
        Composite {
            name: name.into(),
            components: Vec::new(),
        }
    }

    /// Adds `reward` with `weight`; its name must be new and its weight finite.
    pub fn add(&mut self, weight: f32, reward: Box<dyn Reward>) -> Result<(), RewardError> {
        let err = |m: String| RewardError {
            reward: self.name.clone(),
            sample: None,
            kind: RewardErrorKind::Config(m),
        };
        if !weight.is_finite() {
            return Err(err(format!(
                "weight of `{}` is {weight}, expected a finite number",
                reward.name()
            )));
        }
        if self.components.iter().any(|c| c.reward.name() == reward.name()) {
            return Err(err(format!(
                "two rewards are named `{}`; give one another name",
                reward.name()
            )));
        }
        self.components.push(Component { weight, reward });
        Ok(())
    }

    /// [`Self::add`], builder style.
    pub fn with(mut self, weight: f32, reward: Box<dyn Reward>) -> Result<Composite, RewardError> {
        self.add(weight, reward)?;
        Ok(self)
    }

    /// The rewards and weights, in the order they were added.
    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// The weights in component order, as `GrpoConfig::reward_weights` takes them.
    pub fn weights(&self) -> Vec<f64> {
        self.components.iter().map(|c| c.weight as f64).collect()
    }

    /// Scores `batch` with every component and sums them with the weights.
    pub fn score_components(&self, batch: &[Sample]) -> Result<CompositeScores, RewardError> {
        let mut components = Vec::with_capacity(self.components.len());
        for c in &self.components {
            let name = c.reward.name();
            let scores = c.reward.score(batch)?;
            let bad = |sample, m: String| RewardError {
                reward: String::from(name),
                sample,
                kind: RewardErrorKind::BadOutput(m),
            };
            if scores.len() != batch.len() {
                return Err(bad(
                    None,
                    format!("{} scores for {} samples", scores.len(), batch.len()),
                ));
            }
            if let Some((i, v)) = scores.iter().enumerate().find_map(|(i, s)| match s {
                Score::Value(v) if !v.is_finite() => Some((i, *v)),
                _ => None,
            }) {
                return Err(bad(Some(i), format!("score {v} is not finite")));
            }
            components.push(ComponentScores {
                name: String::from(name),
                weight: c.weight,
                scores,
            });
        }
        let total = (0..batch.len())
            .map(|i| {
                let mut sum = 0.0f64;
                let mut any = false;
                for c in &components {
                    if let Score::Value(v) = c.scores[i] {
                        sum += c.weight as f64 * v as f64;
                        any = true;
                    }
                }
                if any {
                    Score::Value(sum as f32)
                } else {
                    Score::NotApplicable
                }
            })
            .collect();
        Ok(CompositeScores { total, components })
    }
}

impl Reward for Composite {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[Sample]) -> Result<Vec<Score>, RewardError> {
        Ok(self.score_components(batch)?.total)
    }
}
