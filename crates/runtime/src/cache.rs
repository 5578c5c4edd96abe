//! On-disk cache of precompiled components.
//!
//! Compiling a 12 MB JavaScript component takes seconds; loading its
//! precompiled artifact takes ~100 ms. Artifacts are keyed by the engine's
//! compatibility hash and the component's bytes, so an engine upgrade or a
//! changed job never loads a stale artifact. Every test binary of a run shares
//! one cache directory; a file lock makes concurrent processes compile a given
//! component once.

use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

use super::error::LoadError;

#[derive(Debug, Clone)]
pub struct PrecompileCache {
    dir: PathBuf,
}

/// Feeds `Hash` output into SHA-256 (the std hashers are not stable across
/// processes, the cache key must be).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Whether a component came from the cache or had to be compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

impl PrecompileCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The default location: `$BRIDGE_CACHE_DIR`, else the user cache dir.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("BRIDGE_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("referral-bridge")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Cache key: engine compatibility hash + content hash.
    pub fn key(engine: &Engine, bytes: &[u8]) -> String {
        Self::key_of_digest(engine, &Sha256::digest(bytes))
    }

    /// [`key`](Self::key) from the SHA-256 of the component's bytes.
    fn key_of_digest(engine: &Engine, digest: &[u8]) -> String {
        let mut h = ShaHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut h);
        h.0.update(digest);
        hex::encode(h.0.finalize())
    }

    fn err(&self, reason: impl ToString) -> LoadError {
        LoadError::Cache {
            path: self.dir.clone(),
            reason: reason.to_string(),
        }
    }

    /// Load the component from the cache, compiling and storing it on a miss.
    pub fn load(
        &self,
        engine: &Engine,
        job: &str,
        bytes: &[u8],
    ) -> Result<(Component, CacheOutcome), LoadError> {
        self.load_hashed(engine, job, bytes, &Sha256::digest(bytes))
    }

    /// [`load`](Self::load) when the SHA-256 of `bytes` is known already
    /// (hashing a 12 MB component again costs milliseconds of a cold start).
    pub(crate) fn load_hashed(
        &self,
        engine: &Engine,
        job: &str,
        bytes: &[u8],
        digest: &[u8],
    ) -> Result<(Component, CacheOutcome), LoadError> {
        let key = Self::key_of_digest(engine, digest);
        let artifact = self.dir.join(format!("{key}.cwasm"));
        if let Some(c) = self.try_deserialize(engine, &artifact) {
            return Ok((c, CacheOutcome::Hit));
        }
        fs::create_dir_all(&self.dir).map_err(|e| self.err(e))?;
        let lock = File::create(self.dir.join(format!("{key}.lock"))).map_err(|e| self.err(e))?;
        lock.lock().map_err(|e| self.err(e))?;
        // Another process may have compiled it while we waited for the lock.
        if let Some(c) = self.try_deserialize(engine, &artifact) {
            return Ok((c, CacheOutcome::Hit));
        }
        let compiled = engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Compile {
                job: job.to_string(),
                reason: format!("{e:#}"),
            })?;
        let tmp = self.dir.join(format!("{key}.{}.tmp", std::process::id()));
        {
            let mut f = File::create(&tmp).map_err(|e| self.err(e))?;
            f.write_all(&compiled).map_err(|e| self.err(e))?;
            f.sync_all().map_err(|e| self.err(e))?;
        }
        fs::rename(&tmp, &artifact).map_err(|e| self.err(e))?;
        let component = self
            .try_deserialize(engine, &artifact)
            .ok_or_else(|| self.err("freshly written artifact failed to load"))?;
        Ok((component, CacheOutcome::Compiled))
    }

    fn try_deserialize(&self, engine: &Engine, artifact: &Path) -> Option<Component> {
        if !artifact.is_file() {
            return None;
        }
        // SAFETY: only artifacts this host wrote (atomically, under a key that
        // includes the engine compatibility hash) live in this directory.
        match unsafe { Component::deserialize_file(engine, artifact) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(artifact = %artifact.display(), error = %e, "discarding unloadable precompiled artifact");
                let _ = fs::remove_file(artifact);
                None
            }
        }
    }
}
