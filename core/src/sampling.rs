//! Sampling: temperature, top-k, top-p, min-p, repetition penalty, a seeded RNG.
