//! The on-disk cache of compiled plugin modules. An entry is keyed by the module's
//! sha256 and the engine's compatibility hash (`Engine::precompile_compatibility_hash`:
//! wasmtime version, compiler settings, fuel on/off), written to a temp file and renamed,
//! and ends with the sha256 of its own bytes. Only files in this directory whose digest
//! checks out are ever deserialized; anything else is recompiled and overwritten.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::{Engine, Module};

/// Bytes of the integrity digest at the end of an entry.
const DIGEST_BYTES: usize = 32;

/// What the cache did for one load (shown by `r1host plugin check`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// No cache directory is configured; the module was compiled in memory.
    Disabled,
    /// The compiled module came from the cache.
    Hit,
    /// The module was compiled and stored in the cache.
    Stored,
    /// The module was compiled, but the cache could not be written (the reason).
    NotStored(String),
}

pub(crate) struct ModuleCache {
    dir: PathBuf,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds `Hash` output into sha256, to turn the engine's compatibility hash into a
/// stable file-name component.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0 // unused: the digest is read with `finalize`
    }
}

impl ModuleCache {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        #[cfg(unix)]
        {
            // Compiled code is executed as is: keep other users from planting entries.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir)?.permissions().mode();
            if mode & 0o022 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            }
        }
        Ok(ModuleCache { dir: dir.to_path_buf() })
    }

    /// The entry's file name for `module_sha256` compiled by `engine`.
    pub fn key(engine: &Engine, module_sha256: &[u8]) -> String {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hasher.0.finalize();
        format!("{}-{}.cwasm", hex(module_sha256), &hex(&engine_hash)[..32])
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The cached module, if there is an intact entry for `key`.
    pub fn load(&self, engine: &Engine, key: &str) -> Option<Module> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        let body_len = bytes.len().checked_sub(DIGEST_BYTES)?;
        let (body, digest) = bytes.split_at(body_len);
        if Sha256::digest(body).as_slice() != digest {
            return None;
        }
        // SAFETY: `body` is an artifact this cache wrote from `Module::serialize` (it is
        // in our own cache directory, named for this engine's compatibility hash, and its
        // digest matches), which is what `deserialize` requires; wasmtime re-checks the
        // engine compatibility in the artifact's header as well.
        unsafe { Module::deserialize(engine, body) }.ok()
    }

    /// Writes an entry atomically: temp file in the same directory, then rename.
    pub fn store(&self, key: &str, serialized: &[u8]) -> std::io::Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(&self.dir)?;
        file.write_all(serialized)?;
        file.write_all(&Sha256::digest(serialized))?;
        file.as_file().sync_all()?;
        file.persist(self.path(key)).map_err(|e| e.error)?;
        Ok(())
    }
}
