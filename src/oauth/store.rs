//! What the token service must not forget across a restart: issued refresh tokens (UCM's
//! `refreshtokendetails`: token id, user, client, validity, state) and revocations.
//!
//! # On disk
//! One JSON object per line in an append-only log (`tokens.refresh_store`, default
//! `<state>/tokens/refresh-tokens.jsonl`, mode 0600):
//!
//! ```text
//! {"op":"issue","tid":"…","user":"rado","client_id":"C…","issued_at":1764250000,"expires_at":1769434000}
//! {"op":"revoke","user":"rado","client_id":null,"at":1764250100}
//! ```
//!
//! Each change is one `write` of one line, then `fdatasync`, so a crash loses at most the change
//! in flight and never half of an earlier one. A torn last line (a crash mid-write) is skipped
//! with a warning. On open the log is replayed, records that can no longer matter (expired
//! refresh tokens; revocations older than every access token they could refuse) are dropped,
//! and the rest is written to a fresh file that atomically replaces the old one, so the log
//! does not grow without bound across restarts.
//!
//! Writes take a `std::sync::Mutex` (never held across an `.await`) and do blocking file I/O:
//! callers on the async runtime run them in `spawn_blocking`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

/// A refresh token as the server remembers it; the token itself only carries `tid` and `ccid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRecord {
    pub tid: String,
    pub user: String,
    pub client_id: String,
    pub issued_at: u64,
    pub expires_at: u64,
    /// Set when a revocation (or a key regeneration) ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

impl RefreshRecord {
    pub fn is_active(&self, now_unix: u64) -> bool {
        self.revoked_at.is_none() && now_unix <= self.expires_at
    }
}

/// Every token of `user` (of `client_id` only, when given) issued before `at` is refused.
/// `user` `None` is a cluster-wide revocation (key regeneration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub user: Option<String>,
    pub client_id: Option<String>,
    pub at: u64,
}

impl Revocation {
    fn covers(&self, record: &RefreshRecord) -> bool {
        self.user.as_ref().is_none_or(|u| *u == record.user)
            && self
                .client_id
                .as_ref()
                .is_none_or(|c| *c == record.client_id)
            && record.issued_at <= self.at
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Entry {
    Issue(RefreshRecord),
    Revoke(Revocation),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// The refresh-token and revocation store.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    tokens: HashMap<String, RefreshRecord>,
    revocations: Vec<Revocation>,
    /// `None` for an in-memory store (tests, benches).
    log: Option<File>,
}

impl TokenStore {
    /// Opens (or creates) the log at `path`, replays and compacts it. Records are kept that
    /// may still matter at `now_unix`; revocations are kept for `revocation_horizon_secs`
    /// (the longest access token lifetime), after which no token they refuse can be valid.
    pub fn open(
        path: &Path,
        now_unix: u64,
        revocation_horizon_secs: u64,
    ) -> Result<Arc<Self>, StoreError> {
        let io_error = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(io_error)?;
        }
        let mut inner = Inner {
            tokens: HashMap::new(),
            revocations: Vec::new(),
            log: None,
        };
        match File::open(path) {
            Ok(file) => replay(io::BufReader::new(file), &mut inner, path).map_err(io_error)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        inner.tokens.retain(|_, r| r.expires_at >= now_unix);
        inner
            .revocations
            .retain(|r| r.at.saturating_add(revocation_horizon_secs) >= now_unix);
        compact(path, &inner).map_err(io_error)?;
        inner.log = Some(open_append(path).map_err(io_error)?);
        Ok(Arc::new(Self {
            path: path.to_owned(),
            inner: Mutex::new(inner),
        }))
    }

    /// A store that writes nothing (tests and benches).
    pub fn in_memory() -> Arc<Self> {
        Arc::new(Self {
            path: PathBuf::new(),
            inner: Mutex::new(Inner {
                tokens: HashMap::new(),
                revocations: Vec::new(),
                log: None,
            }),
        })
    }

    /// Remembers an issued refresh token. Blocking (file write).
    pub fn insert(&self, record: RefreshRecord) -> Result<(), StoreError> {
        let mut inner = self.lock();
        self.append(&mut inner, &Entry::Issue(record.clone()))?;
        inner.tokens.insert(record.tid.clone(), record);
        Ok(())
    }

    /// The record of refresh token `tid`, if it was issued here and not dropped.
    pub fn get(&self, tid: &str) -> Option<RefreshRecord> {
        self.lock().tokens.get(tid).cloned()
    }

    /// Records a revocation and marks the refresh tokens it covers; returns how many active
    /// ones it ended. Blocking (file write).
    pub fn revoke(&self, revocation: Revocation) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        self.append(&mut inner, &Entry::Revoke(revocation.clone()))?;
        let ended = apply_revocation(&mut inner.tokens, &revocation);
        inner.revocations.push(revocation);
        Ok(ended)
    }

    /// Revocations still in force, oldest first (the token authority loads them at start).
    pub fn revocations(&self) -> Vec<Revocation> {
        self.lock().revocations.clone()
    }

    /// Refresh tokens, for `refreshtokendetails`-style listings; sorted by issue time.
    pub fn list(&self) -> Vec<RefreshRecord> {
        let mut all: Vec<_> = self.lock().tokens.values().cloned().collect();
        all.sort_by(|a, b| (a.issued_at, &a.tid).cmp(&(b.issued_at, &b.tid)));
        all
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent before anything can panic, so a poisoned
        // lock still guards valid data.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes one line and syncs it, before the in-memory state changes: what a client was
    /// told has been persisted.
    fn append(&self, inner: &mut Inner, entry: &Entry) -> Result<(), StoreError> {
        let Some(log) = inner.log.as_mut() else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(entry).map_err(|e| StoreError::Io {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        line.push(b'\n');
        log.write_all(&line)
            .and_then(|()| log.sync_data())
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })
    }
}

fn apply_revocation(tokens: &mut HashMap<String, RefreshRecord>, r: &Revocation) -> usize {
    let mut ended = 0;
    for record in tokens.values_mut() {
        if record.revoked_at.is_none() && r.covers(record) {
            record.revoked_at = Some(r.at);
            ended += 1;
        }
    }
    ended
}

fn replay(reader: impl BufRead, inner: &mut Inner, path: &Path) -> io::Result<()> {
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Entry>(&line) {
            Ok(Entry::Issue(record)) => {
                inner.tokens.insert(record.tid.clone(), record);
            }
            Ok(Entry::Revoke(r)) => {
                apply_revocation(&mut inner.tokens, &r);
                inner.revocations.push(r);
            }
            // A crash mid-append leaves a torn last line; anything else unreadable is skipped
            // too, loudly, rather than refusing to start and losing every other record.
            Err(error) => tracing::warn!(
                path = %path.display(),
                line = n + 1,
                %error,
                "skipping an unreadable token store record"
            ),
        }
    }
    Ok(())
}

/// Rewrites the log with only the live records, through a temporary file renamed into place.
fn compact(path: &Path, inner: &Inner) -> io::Result<()> {
    let mut records: Vec<&RefreshRecord> = inner.tokens.values().collect();
    records.sort_by(|a, b| (a.issued_at, &a.tid).cmp(&(b.issued_at, &b.tid)));
    let mut out = Vec::new();
    for r in records {
        serde_json::to_writer(&mut out, &Entry::Issue(r.clone())).map_err(io::Error::other)?;
        out.push(b'\n');
    }
    for r in &inner.revocations {
        serde_json::to_writer(&mut out, &Entry::Revoke(r.clone())).map_err(io::Error::other)?;
        out.push(b'\n');
    }
    crate::pki::write_private_file(path, &out)
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        tid: &str,
        user: &str,
        client: &str,
        issued_at: u64,
        expires_at: u64,
    ) -> RefreshRecord {
        RefreshRecord {
            tid: tid.into(),
            user: user.into(),
            client_id: client.into(),
            issued_at,
            expires_at,
            revoked_at: None,
        }
    }

    #[test]
    fn records_and_revocations_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens/refresh.jsonl");
        let store = TokenStore::open(&path, 1000, 3600).unwrap();
        store.insert(record("a", "rado", "C1", 1000, 9000)).unwrap();
        store.insert(record("b", "rado", "C2", 1000, 9000)).unwrap();
        store
            .insert(record("c", "alice", "C1", 1000, 9000))
            .unwrap();
        let ended = store
            .revoke(Revocation {
                user: Some("rado".into()),
                client_id: Some("C1".into()),
                at: 1100,
            })
            .unwrap();
        assert_eq!(ended, 1);
        drop(store);

        let store = TokenStore::open(&path, 1200, 3600).unwrap();
        assert_eq!(store.get("a").unwrap().revoked_at, Some(1100));
        assert!(store.get("b").unwrap().is_active(1200));
        assert!(store.get("c").unwrap().is_active(1200));
        assert_eq!(store.revocations().len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn a_revocation_does_not_touch_tokens_issued_after_it() {
        let store = TokenStore::in_memory();
        store
            .insert(record("old", "rado", "C1", 100, 9000))
            .unwrap();
        store
            .revoke(Revocation {
                user: Some("rado".into()),
                client_id: None,
                at: 200,
            })
            .unwrap();
        store
            .insert(record("new", "rado", "C1", 300, 9000))
            .unwrap();
        assert!(!store.get("old").unwrap().is_active(400));
        assert!(store.get("new").unwrap().is_active(400));
    }

    #[test]
    fn a_cluster_wide_revocation_ends_every_token() {
        let store = TokenStore::in_memory();
        store.insert(record("a", "rado", "C1", 100, 9000)).unwrap();
        store.insert(record("b", "bob", "C2", 100, 9000)).unwrap();
        let ended = store
            .revoke(Revocation {
                user: None,
                client_id: None,
                at: 150,
            })
            .unwrap();
        assert_eq!(ended, 2);
    }

    #[test]
    fn reopen_drops_expired_tokens_and_old_revocations_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refresh.jsonl");
        let store = TokenStore::open(&path, 1000, 100).unwrap();
        store
            .insert(record("short", "rado", "C1", 1000, 1500))
            .unwrap();
        store
            .insert(record("long", "rado", "C1", 1000, 9000))
            .unwrap();
        store
            .revoke(Revocation {
                user: Some("bob".into()),
                client_id: None,
                at: 1000,
            })
            .unwrap();
        drop(store);
        let store = TokenStore::open(&path, 2000, 100).unwrap();
        assert!(store.get("short").is_none());
        assert!(store.get("long").is_some());
        assert!(store.revocations().is_empty(), "older than the horizon");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refresh.jsonl");
        let store = TokenStore::open(&path, 1000, 100).unwrap();
        store.insert(record("a", "rado", "C1", 1000, 9000)).unwrap();
        drop(store);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"op":"issue","tid":"b","us"#).unwrap();
        drop(f);
        let store = TokenStore::open(&path, 1000, 100).unwrap();
        assert!(store.get("a").is_some());
        assert!(store.get("b").is_none());
        store.insert(record("c", "rado", "C1", 1000, 9000)).unwrap();
        drop(store);
        let store = TokenStore::open(&path, 1000, 100).unwrap();
        assert!(
            store.get("c").is_some(),
            "appends after a torn line are read back"
        );
    }
}
