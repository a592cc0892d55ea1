//! GRPO math (TRL-compatible): group advantages, the per-token clipped policy loss with
//! a k3 KL penalty, its aggregations and its gradient with respect to each log-prob.
