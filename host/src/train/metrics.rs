//! `metrics.jsonl`: one JSON object per line per step, flushed as written so a killed run
//! keeps every finished step, and trimmed on resume so it never holds a step twice.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Appends metric lines to a JSONL file.
pub struct MetricsWriter {
    path: PathBuf,
    file: File,
}

impl MetricsWriter {
    /// Opens (creating) `path` for appending.
    pub fn append(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(MetricsWriter {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Creates `path` empty (truncating an old file).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        File::create(path)?;
        Self::append(path)
    }

    /// Opens `path` keeping only lines whose `key` (e.g. `"step"`) is at most `last`
    /// (resume: the steps after the checkpoint will be written again).
    pub fn resume(path: &Path, key: &str, last: usize) -> std::io::Result<Self> {
        let mut kept = Vec::new();
        if path.exists() {
            for line in BufReader::new(File::open(path)?).lines() {
                let line = line?;
                let step = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get(key).and_then(|s| s.as_u64()));
                if step.is_some_and(|s| s as usize <= last) {
                    kept.push(line);
                }
            }
        }
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut f = File::create(&tmp)?;
            for l in &kept {
                writeln!(f, "{l}")?;
            }
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Self::append(path)
    }

    /// Writes one record as a line.
    pub fn write<T: serde::Serialize>(&mut self, record: &T) -> std::io::Result<()> {
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        writeln!(self.file, "{line}")?;
        self.file.flush()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every line of a metrics file as JSON (for plots and reports); bad lines are
/// reported with their number.
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>, String> {
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_drops_steps_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut w = MetricsWriter::append(&p).unwrap();
        for s in 1..=5 {
            w.write(&serde_json::json!({"step": s, "loss": 1.0 / s as f64}))
                .unwrap();
        }
        drop(w);
        let mut w = MetricsWriter::resume(&p, "step", 3).unwrap();
        w.write(&serde_json::json!({"step": 4, "loss": 0.0})).unwrap();
        let steps: Vec<u64> = read_metrics(&p)
            .unwrap()
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
    }
}
