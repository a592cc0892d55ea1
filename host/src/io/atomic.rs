//! Crash-safe file replacement: write a temporary file in the destination's directory,
//! fsync it, rename it over the destination, fsync the directory. A reader sees the old
//! file or the new one, never a torn one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::io::error::IoError;

/// Replaces `path` with what `write` produces. On any error the destination is untouched
/// and the temporary file is removed.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&File>) -> std::io::Result<()>,
) -> Result<(), IoError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".r1-tmp-")
        .tempfile_in(dir)
        .map_err(|e| IoError::file(dir, e))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        write(&mut w).map_err(|e| IoError::file(path, e))?;
        w.flush().map_err(|e| IoError::file(path, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| IoError::file(path, e))?;
    tmp.persist(path).map_err(|e| IoError::file(path, e.error))?;
    // The rename is durable only once the directory entry is: fsync the directory (Unix).
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| IoError::file(dir, e))?;
    Ok(())
}

/// Replaces `path` with `bytes`.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    write_atomically(path, |w| w.write_all(bytes))
}
