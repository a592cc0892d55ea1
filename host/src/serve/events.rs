//! Submitting a plan's engine requests and reading their events as one stream, timed:
//! time to first token and inter-token latency are measured here, where a client sees
//! them. Dropping the stream drops the engine receivers, which cancels the requests.

use std::pin::Pin;
use std::time::Instant;

use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::metrics::Metrics;
use super::plan::Plan;
use crate::engine::service::{GenEvent, SubmitError};

/// The events of every prompt of a plan, with completion indices made global
/// (`prompt × candidates + index`).
pub struct PlanEvents {
    inner: Pin<Box<dyn Stream<Item = GenEvent> + Send>>,
    timing: Timing,
}

impl PlanEvents {
    /// Submits every request of `plan`; any refusal refuses the whole plan (and cancels
    /// what was already queued).
    pub fn submit(plan: &Plan, metrics: Metrics, started: Instant) -> Result<Self, ApiError> {
        let generator = &plan.model.generator;
        let mut receivers = Vec::with_capacity(plan.requests.len());
        for request in &plan.requests {
            receivers.push(generator.submit(request.clone()).map_err(submit_error)?);
        }
        let candidates = plan.candidates;
        let streams = receivers.into_iter().enumerate().map(move |(p, rx)| {
            receiver_stream(rx)
                .map(move |event| offset(event, p * candidates))
                .boxed()
        });
        Ok(PlanEvents {
            inner: stream::select_all(streams).boxed(),
            timing: Timing {
                metrics,
                model: plan.model.name().to_string(),
                started,
                last: vec![None; candidates * plan.requests.len()],
                first_seen: false,
            },
        })
    }

    /// The next event, `None` when every request's events are done.
    pub async fn next(&mut self) -> Option<GenEvent> {
        let event = self.inner.next().await?;
        if let GenEvent::Delta { index, tokens, .. } = &event {
            self.timing.delta(*index, tokens.len());
        }
        Some(event)
    }
}

/// The HTTP answer to an engine refusal.
pub fn submit_error(e: SubmitError) -> ApiError {
    match e {
        SubmitError::QueueFull { retry_after_s, .. } => ApiError::busy(e.to_string(), retry_after_s),
        SubmitError::Invalid(message) => ApiError::bad_request(message),
        SubmitError::ShuttingDown => ApiError::shutting_down(),
    }
}

fn receiver_stream(rx: UnboundedReceiver<GenEvent>) -> impl Stream<Item = GenEvent> + Send {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

fn offset(event: GenEvent, by: usize) -> GenEvent {
    match event {
        GenEvent::Delta { index, text, tokens } => GenEvent::Delta {
            index: index + by,
            text,
            tokens,
        },
        GenEvent::Finished {
            index,
            reason,
            completion_tokens,
            weight_version,
        } => GenEvent::Finished {
            index: index + by,
            reason,
            completion_tokens,
            weight_version,
        },
        failed @ GenEvent::Failed(_) => failed,
    }
}

/// Latencies as the client sees them.
struct Timing {
    metrics: Metrics,
    model: String,
    started: Instant,
    /// When each completion last received tokens.
    last: Vec<Option<Instant>>,
    first_seen: bool,
}

impl Timing {
    fn delta(&mut self, index: usize, tokens: usize) {
        if tokens == 0 {
            return;
        }
        let now = Instant::now();
        if !self.first_seen {
            self.first_seen = true;
            self.metrics.observe_ttft(&self.model, now.duration_since(self.started));
        }
        let Some(slot) = self.last.get_mut(index) else {
            return;
        };
        // A delta of k tokens after a gap g: k tokens, g / k apart.
        if let Some(prev) = *slot {
            let gap = now.duration_since(prev).as_secs_f64() / tokens as f64;
            for _ in 0..tokens {
                self.metrics.observe_inter_token(&self.model, gap);
            }
        }
        *slot = Some(now);
    }
}
