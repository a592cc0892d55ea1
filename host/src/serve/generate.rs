//! Running a plan: engine events become choices, then either one response (ranked when
//! best-of-N) or a stream of server-sent events. Both hold the engine receivers only as
//! long as the client is there: a dropped handler future or SSE body cancels the work.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Instant;

use axum::Json;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde_json::{Value, json};

use super::best_of::{self, CandidateScore};
use super::choice::{ChoiceAssembly, Piece};
use super::error::ApiError;
use super::events::PlanEvents;
use super::plan::{Endpoint, Plan};
use super::response::{self, ResponseMeta, Usage};
use super::state::AppState;
use crate::engine::service::GenEvent;

/// A plan being run: its events and the choices they build.
struct Run {
    plan: Plan,
    events: PlanEvents,
    choices: Vec<ChoiceAssembly>,
    finished: usize,
    meta: ResponseMeta,
    state: AppState,
}

/// What one engine event did.
enum Step {
    Delta(usize, Piece),
    Finished(usize, Piece),
    Failed(String),
    /// Every completion finished.
    Done,
    /// The engine stopped sending before every completion finished.
    Lost,
}

impl Run {
    fn start(state: AppState, plan: Plan, started: Instant) -> Result<Self, ApiError> {
        let events = PlanEvents::submit(&plan, state.metrics().clone(), started)?;
        let total = plan.candidates * plan.prompts.len();
        let choices = (0..total)
            .map(|i| {
                let opens = plan.prompts.get(i / plan.candidates).is_some_and(|p| p.opens_reasoning);
                ChoiceAssembly::new(plan.split_reasoning, opens)
            })
            .collect();
        let mut meta = ResponseMeta::new(plan.endpoint, &state.request_id(), plan.model.name());
        meta.token_ids = plan.token_ids;
        Ok(Run {
            plan,
            events,
            choices,
            finished: 0,
            meta,
            state,
        })
    }

    async fn step(&mut self) -> Step {
        if self.finished == self.choices.len() {
            return Step::Done;
        }
        let Some(event) = self.events.next().await else {
            return Step::Lost;
        };
        match event {
            GenEvent::Delta { index, text, tokens } => match self.choices.get_mut(index) {
                Some(c) => Step::Delta(index, c.push(&text, tokens)),
                None => Step::Failed(format!("the engine sent completion {index} of {}", self.choices.len())),
            },
            GenEvent::Finished {
                index,
                reason,
                completion_tokens,
                weight_version,
            } => match self.choices.get_mut(index) {
                Some(c) if c.finish_reason.is_none() => {
                    self.finished += 1;
                    c.weight_version = weight_version;
                    Step::Finished(index, c.finish(reason, completion_tokens))
                }
                _ => Step::Failed(format!("the engine finished completion {index} twice or out of range")),
            },
            GenEvent::Failed(message) => Step::Failed(message),
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.plan.prompts.iter().map(|p| p.tokens.len()).sum(),
            completion_tokens: self.choices.iter().map(|c| c.completion_tokens).sum(),
            reasoning_tokens: self.choices.iter().map(|c| c.reasoning_tokens).sum(),
        }
    }

    fn record_usage(&self) {
        let u = self.usage();
        self.state.metrics().record_tokens(
            self.plan.model.name(),
            u.prompt_tokens,
            u.completion_tokens,
            u.reasoning_tokens,
        );
    }
}

/// Runs `plan` to the end and answers with one response object.
pub async fn respond(state: AppState, plan: Plan, started: Instant) -> Result<Response, ApiError> {
    let mut run = Run::start(state, plan, started)?;
    loop {
        match run.step().await {
            Step::Delta(..) | Step::Finished(..) => {}
            Step::Done => break,
            Step::Failed(message) => return Err(ApiError::internal(format!("generation failed: {message}"))),
            Step::Lost => return Err(ApiError::internal("the engine stopped before the request finished")),
        }
    }
    run.record_usage();
    let plan = &run.plan;
    let (order, candidates): (Vec<&ChoiceAssembly>, Option<(Vec<CandidateScore>, String)>) = match &plan.ranking {
        None => (run.choices.iter().collect(), None),
        Some(_) => {
            let ranked = best_of::rank(plan, &run.choices, run.state.metrics()).await?;
            let choices = &run.choices;
            let k = plan.candidates;
            let mut order = Vec::new();
            for (p, best) in ranked.chosen.iter().enumerate() {
                order.extend(best.iter().filter_map(|&i| choices.get(p * k + i)));
            }
            (order, Some((ranked.candidates, ranked.ranked_by)))
        }
    };
    let tokenizer = &plan.model.generator.model().tokenizer;
    let mut body = response::full_response(
        plan.endpoint,
        &run.meta,
        &order,
        plan.logprobs.is_some(),
        tokenizer,
        run.usage(),
    );
    // r1's extension: the weights' version (the oldest, should a request's prompts have
    // straddled an update) and best-of-N's scores.
    let weight_version = run.choices.iter().map(|c| c.weight_version).min().unwrap_or(0);
    let mut r1 = json!({"weight_version": weight_version});
    if let (Some((candidates, ranked_by)), Some(obj)) = (candidates, r1.as_object_mut()) {
        obj.insert("ranked_by".into(), json!(ranked_by));
        obj.insert("candidates".into(), json!(candidates));
    }
    body.insert("r1".into(), r1);
    Ok(Json(Value::Object(body)).into_response())
}

/// Streams `plan` as server-sent events, ending with `data: [DONE]`.
pub fn stream(state: AppState, plan: Plan, started: Instant) -> Result<Response, ApiError> {
    let run = Run::start(state, plan, started)?;
    let mut pending = VecDeque::new();
    if run.plan.endpoint == Endpoint::Chat {
        let roles = (0..run.choices.len()).map(response::role_choice).collect();
        pending.push_back(data(&response::chunk(
            Endpoint::Chat,
            &run.meta,
            roles,
            run.plan.include_usage,
        )));
    }
    let sse = SseRun {
        run,
        pending,
        offsets: Vec::new(),
        done: false,
    };
    let events = stream::unfold(sse, |mut s| async move {
        loop {
            if let Some(e) = s.pending.pop_front() {
                return Some((Ok::<Event, Infallible>(e), s));
            }
            if s.done {
                return None;
            }
            s.advance().await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// The state of one SSE response.
struct SseRun {
    run: Run,
    pending: VecDeque<Event>,
    /// Bytes of text sent so far per choice (completions' `text_offset`).
    offsets: Vec<usize>,
    done: bool,
}

impl SseRun {
    /// Reads one engine event and queues what it adds to the stream.
    async fn advance(&mut self) {
        let endpoint = self.run.plan.endpoint;
        let include_usage = self.run.plan.include_usage;
        let step = self.run.step().await;
        let meta = &self.run.meta;
        let mut choices = Vec::new();
        match step {
            Step::Delta(index, piece) => {
                if self.worth_sending(&piece) {
                    choices.push(self.piece_choice(index, &piece));
                }
            }
            Step::Finished(index, piece) => {
                if self.worth_sending(&piece) {
                    choices.push(self.piece_choice(index, &piece));
                }
                if let Some(c) = self.run.choices.get(index) {
                    choices.push(response::finish_choice(endpoint, index, c));
                }
            }
            Step::Done => {
                self.run.record_usage();
                if include_usage {
                    self.pending
                        .push_back(data(&response::usage_chunk(endpoint, meta, self.run.usage())));
                }
                self.pending.push_back(Event::default().data("[DONE]"));
                self.done = true;
            }
            Step::Failed(message) => self.fail(ApiError::internal(format!("generation failed: {message}"))),
            Step::Lost => self.fail(ApiError::internal("the engine stopped before the request finished")),
        }
        if !choices.is_empty() {
            self.pending
                .push_back(data(&response::chunk(endpoint, &self.run.meta, choices, include_usage)));
        }
    }

    /// Text, or tokens whose log-probs were asked for (a token that is part of a
    /// character still being held back brings neither).
    fn worth_sending(&self, piece: &Piece) -> bool {
        !piece.reasoning.is_empty()
            || !piece.content.is_empty()
            || (self.run.plan.logprobs.is_some() && !piece.tokens.is_empty())
    }

    fn piece_choice(&mut self, index: usize, piece: &Piece) -> Value {
        let plan = &self.run.plan;
        if self.offsets.len() < self.run.choices.len() {
            self.offsets.resize(self.run.choices.len(), 0);
        }
        let offset = self.offsets.get(index).copied().unwrap_or(0);
        if let Some(o) = self.offsets.get_mut(index) {
            *o += piece.content.len();
        }
        response::chunk_choice(
            plan.endpoint,
            index,
            piece,
            plan.logprobs.is_some(),
            &plan.model.generator.model().tokenizer,
            offset,
            plan.token_ids,
        )
    }

    /// Ends the stream with an error event (OpenAI's clients raise it) and `[DONE]`.
    fn fail(&mut self, error: ApiError) {
        self.pending.push_back(data(&json!({"error": error.object()})));
        self.pending.push_back(Event::default().data("[DONE]"));
        self.done = true;
    }
}

fn data(value: &Value) -> Event {
    Event::default().data(value.to_string())
}
