//! `GET /v1/jobs/{id}/events`: a job's `metrics.jsonl` as server-sent events — every
//! line already written, then each new one as the run appends it — and a final
//! `event: end` carrying the job once it reaches a final status.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::Stream;

use crate::serve::jobs::JobManager;

/// How often a followed file is checked for new lines.
const POLL: Duration = Duration::from_millis(200);

/// Follows a JSONL file that a run appends to: each call returns the complete lines
/// added since the last (a partly written last line waits for its newline). A resumed
/// run replaces the file with a trimmed copy before appending again; the lines the
/// copy still holds are not sent twice, and those it dropped are sent again as the run
/// rewrites them.
pub(super) struct LineTail {
    path: PathBuf,
    /// Bytes of the file consumed (complete lines and `partial`).
    offset: u64,
    /// Complete lines returned so far.
    lines: usize,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
    /// The file's identity when last read (a rename puts another file in its place).
    identity: Option<u64>,
}

impl LineTail {
    pub fn new(path: PathBuf) -> LineTail {
        LineTail {
            path,
            offset: 0,
            lines: 0,
            partial: Vec::new(),
            identity: None,
        }
    }

    /// The complete lines appended since the last call (nothing while the file is absent).
    pub fn read_new(&mut self) -> Vec<String> {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let Ok(meta) = file.metadata() else {
            return Vec::new();
        };
        let identity = file_identity(&meta);
        let replaced = meta.len() < self.offset || (self.identity.is_some() && identity != self.identity);
        self.identity = identity;
        let skip = if replaced {
            let skip = self.lines;
            self.offset = 0;
            self.lines = 0;
            self.partial.clear();
            skip
        } else {
            0
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(self.offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        self.offset += bytes.len() as u64;
        self.partial.extend_from_slice(&bytes);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        let lines: Vec<String> = complete
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            // SSE data cannot carry a carriage return.
            .map(|l| String::from_utf8_lossy(l).replace('\r', ""))
            .collect();
        let total = lines.len();
        self.lines += total;
        // After a replacement, the lines the client already has are skipped.
        let already_sent = skip.min(total);
        lines.into_iter().skip(already_sent).collect()
    }
}

#[cfg(unix)]
fn file_identity(meta: &std::fs::Metadata) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    Some(meta.ino())
}

#[cfg(not(unix))]
fn file_identity(_meta: &std::fs::Metadata) -> Option<u64> {
    None
}

/// A JSONL file as server-sent events: every line written, then each new one as it is
/// appended (checked every [`POLL`]), until `end` returns the data of a final `end`
/// event. `end` is asked before the file is read, so every line written before the
/// writer finished is sent before the `end`.
pub(crate) fn follow_lines(
    path: PathBuf,
    end: impl FnMut() -> Option<String> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Follow<F> {
        tail: LineTail,
        end: F,
        pending: VecDeque<Event>,
        done: bool,
    }
    let state = Follow {
        tail: LineTail::new(path),
        end,
        pending: VecDeque::new(),
        done: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.done {
                return None;
            }
            let end = (s.end)();
            for line in s.tail.read_new() {
                s.pending.push_back(Event::default().data(line));
            }
            match end {
                Some(data) => {
                    s.pending.push_back(Event::default().event("end").data(data));
                    s.done = true;
                }
                None if s.pending.is_empty() => tokio::time::sleep(POLL).await,
                None => {}
            }
        }
    })
}

/// The event stream of job `id`, whose metrics are at `metrics`; its `end` carries the job.
pub(super) fn job_events(
    jobs: Arc<JobManager>,
    id: String,
    metrics: PathBuf,
) -> impl Stream<Item = Result<Event, Infallible>> {
    follow_lines(metrics, move || match jobs.status(&id) {
        Some(status) if !status.is_final() => None,
        _ => Some(
            jobs.get(&id)
                .and_then(|j| serde_json::to_string(&j).ok())
                .unwrap_or_else(|| "null".to_string()),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &std::path::Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_once_and_only_when_complete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut tail = LineTail::new(path.clone());
        assert!(tail.read_new().is_empty(), "no file yet");
        append(&path, "{\"step\":1}\n{\"st");
        assert_eq!(tail.read_new(), ["{\"step\":1}"]);
        assert!(tail.read_new().is_empty());
        append(&path, "ep\":2}\n");
        assert_eq!(tail.read_new(), ["{\"step\":2}"]);
    }

    #[test]
    fn a_resumed_run_trimming_the_file_resends_only_the_dropped_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        append(&path, "a\nb\nc\n");
        let mut tail = LineTail::new(path.clone());
        assert_eq!(tail.read_new(), ["a", "b", "c"]);
        // What MetricsWriter::resume does: a trimmed copy renamed over the file.
        let tmp = dir.path().join("metrics.jsonl.tmp");
        std::fs::write(&tmp, "a\nb\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(tail.read_new().is_empty(), "a and b were sent already");
        append(&path, "c2\nd\n");
        assert_eq!(tail.read_new(), ["c2", "d"]);
    }
}
