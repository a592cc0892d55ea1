//! DeepSeek-V3's auxiliary-loss-free load balancing (DeepSeek-V3 report, §2.1.2): each
//! MoE layer's router adds a bias `b_e` to its expert scores for selection only; after
//! every optimizer step `b_e` grows by `γ` when expert `e` took fewer tokens than the
//! layer's mean in that step and shrinks by `γ` when it took more, so routing evens out
//! without a balancing loss in the gradient. `γ` is `OptimConfig::bias_update_speed`.

use std::collections::BTreeMap;

use r1_core::backend::Backend;

use crate::train::lm_graph::{LmGraph, LmGraphError};
use crate::weights::{ParamBuffer, WeightsError};

/// The tokens each expert took since the last update, per router bias.
pub struct ExpertBalance {
    speed: f32,
    loads: BTreeMap<String, Vec<u64>>,
}

impl ExpertBalance {
    /// A balancer moving biases by `speed`; `None` when `speed` is 0 (balancing off).
    pub fn new(speed: f32) -> Option<ExpertBalance> {
        (speed > 0.0).then(|| ExpertBalance {
            speed,
            loads: BTreeMap::new(),
        })
    }

    /// Adds the loads of `graph`'s last forward pass (positions with a target ≥ 0).
    pub fn observe<B: Backend>(
        &mut self,
        graph: &mut LmGraph<B>,
        backend: &B,
        params: &ParamBuffer<B>,
        targets: &[i32],
    ) -> Result<(), LmGraphError> {
        for (name, count) in graph.expert_loads(backend, params, targets)? {
            let sum = self.loads.entry(name).or_insert_with(|| vec![0; count.len()]);
            for (s, c) in sum.iter_mut().zip(count) {
                *s += c;
            }
        }
        Ok(())
    }

    /// Moves every observed router's bias toward balance and forgets the loads.
    pub fn update<B: Backend>(&mut self, backend: &B, params: &ParamBuffer<B>) -> Result<(), WeightsError> {
        for (name, load) in std::mem::take(&mut self.loads) {
            let mut bias = params.download(backend, &name)?;
            nudge(&mut bias, &load, self.speed);
            params.upload(backend, &name, &bias)?;
        }
        Ok(())
    }
}

/// One layer's update: `bias[e] ± speed` toward the mean load. Returns the largest load
/// over the mean (`None` when no token was routed).
fn nudge(bias: &mut [f32], load: &[u64], speed: f32) -> Option<f64> {
    let mean = load.iter().sum::<u64>() as f64 / load.len().max(1) as f64;
    for (b, &l) in bias.iter_mut().zip(load) {
        let l = l as f64;
        if l < mean {
            *b += speed;
        } else if l > mean {
            *b -= speed;
        }
    }
    (mean > 0.0).then(|| load.iter().copied().max().unwrap_or(0) as f64 / mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underloaded_experts_gain_bias_and_overloaded_ones_lose_it() {
        let mut bias = [0.5f32, 0.0, -0.25, 0.0];
        // Mean 4: expert 0 over, 1 under, 2 at the mean, 3 under.
        let ratio = nudge(&mut bias, &[10, 2, 4, 0], 0.125);
        assert_eq!(bias, [0.375, 0.125, -0.25, 0.125]);
        assert_eq!(ratio, Some(2.5));
        let mut idle = [0.0f32; 2];
        assert_eq!(nudge(&mut idle, &[0, 0], 0.1), None);
        assert_eq!(idle, [0.0, 0.0]);
        assert!(ExpertBalance::new(0.0).is_none(), "0 turns balancing off");
    }
}
