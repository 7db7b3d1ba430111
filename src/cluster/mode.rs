//! The cluster's SIP OAuth mode as live state (`ClusterSIPOAuthMode`, docs/ucm.md §1): read by the
//! port rule, the config files and `run sql`, changed by `utils sipOAuth-mode enable|disable`.
//!
//! Persisted in `<state_dir>/sip-oauth-mode` (`1` or `0`). Like the Expressway-C table, the
//! file wins over the configuration when present: on UCM the mode is set at the publisher's
//! CLI, not in a file an operator edits, so the last CLI decision survives restarts and
//! reloads; deleting the file returns the mode to `cluster.sip_oauth_mode`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The mode file's name under the state directory.
pub const MODE_FILE: &str = "sip-oauth-mode";

/// A shared, lock-free flag: one relaxed load per REGISTER. Relaxed is enough: a request
/// racing a mode change may see either value, as it would racing UCM's service restart.
#[derive(Debug, Clone)]
pub struct LiveMode(Arc<AtomicBool>);

impl LiveMode {
    pub fn new(on: bool) -> Self {
        Self(Arc::new(AtomicBool::new(on)))
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Sets the in-memory value only; see [`persist`] for the file.
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }
}

/// Why the mode file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct ModeFileError {
    pub path: PathBuf,
    pub reason: String,
}

/// The persisted mode, when the file exists.
pub fn read_persisted(state_dir: &Path) -> Result<Option<bool>, ModeFileError> {
    let path = state_dir.join(MODE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim() {
            "1" => Ok(Some(true)),
            "0" => Ok(Some(false)),
            other => Err(ModeFileError {
                path,
                reason: format!("expected 1 or 0, found {other:?}"),
            }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModeFileError {
            path,
            reason: e.to_string(),
        }),
    }
}

/// The mode in force: the file's when present, else the configuration's.
pub fn effective(state_dir: &Path, configured: bool) -> Result<bool, ModeFileError> {
    Ok(read_persisted(state_dir)?.unwrap_or(configured))
}

/// Writes the mode file atomically.
pub fn persist(state_dir: &Path, on: bool) -> Result<(), ModeFileError> {
    let path = state_dir.join(MODE_FILE);
    crate::pki::write_private_file(&path, if on { b"1\n" } else { b"0\n" }).map_err(|e| {
        ModeFileError {
            path,
            reason: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_wins_over_the_configuration_and_bad_content_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(effective(dir.path(), true).unwrap());
        persist(dir.path(), false).unwrap();
        assert!(!effective(dir.path(), true).unwrap());
        persist(dir.path(), true).unwrap();
        assert!(effective(dir.path(), false).unwrap());
        std::fs::write(dir.path().join(MODE_FILE), "yes\n").unwrap();
        let e = effective(dir.path(), false).unwrap_err().to_string();
        assert!(e.contains("sip-oauth-mode") && e.contains("\"yes\""), "{e}");
    }
}
