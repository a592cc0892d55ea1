//! `r1host serve`: the daemon's HTTP API. [`jobs`] holds the R1 training jobs submitted,
//! watched, cancelled and resumed over HTTP (`/v1/jobs`).

pub mod jobs;
