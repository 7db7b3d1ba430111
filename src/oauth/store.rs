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
use std::io::{self, Write};
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

/// Refresh tokens kept per user; a further one drops that user's oldest. Bounds what a
/// scripted login loop can make the store (and its log) hold: users × this.
pub const MAX_REFRESH_TOKENS_PER_USER: usize = 64;

/// The refresh-token and revocation store.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    /// What lookups read. Never held across file I/O, so a refresh grant's lookup does not wait
    /// for another request's `fdatasync`.
    state: Mutex<State>,
    /// Serialises writers: each change is computed, written and synced, then applied, in log
    /// order. `None` for an in-memory store (tests, benches).
    log: Mutex<Option<Log>>,
}

#[derive(Debug)]
struct Log {
    file: File,
    /// Bytes of complete lines; a failed append is cut back to it.
    len: u64,
}

#[derive(Debug, Default)]
struct State {
    tokens: HashMap<String, RefreshRecord>,
    /// Token ids per user, oldest first.
    by_user: HashMap<String, Vec<String>>,
    revocations: Vec<Revocation>,
}

impl State {
    /// A new record, as both a live insert and a replay apply it: revocations already recorded
    /// cover it (a token issued in the second of a revocation is revoked), it replaces the
    /// user's token of the same client (one per user and client, as UCM's
    /// `refreshtokendetails`), and the user's oldest beyond the cap goes.
    fn issue(&mut self, mut record: RefreshRecord) {
        if record.revoked_at.is_none() {
            record.revoked_at = self
                .revocations
                .iter()
                .filter(|r| r.covers(&record))
                .map(|r| r.at)
                .max();
        }
        let tids = self.by_user.entry(record.user.clone()).or_default();
        let tokens = &mut self.tokens;
        tids.retain(|tid| {
            let same_client = tokens
                .get(tid)
                .is_none_or(|old| old.client_id == record.client_id);
            if same_client {
                tokens.remove(tid);
            }
            !same_client
        });
        while tids.len() >= MAX_REFRESH_TOKENS_PER_USER {
            let oldest = tids.remove(0);
            tokens.remove(&oldest);
        }
        tids.push(record.tid.clone());
        tokens.insert(record.tid.clone(), record);
    }

    fn revoke(&mut self, revocation: Revocation) -> usize {
        let mut ended = 0;
        for record in self.tokens.values_mut() {
            if record.revoked_at.is_none() && revocation.covers(record) {
                record.revoked_at = Some(revocation.at);
                ended += 1;
            }
        }
        self.revocations.push(revocation);
        ended
    }

    fn drop_expired(&mut self, now_unix: u64, revocation_horizon_secs: u64) {
        self.tokens.retain(|_, r| r.expires_at >= now_unix);
        let tokens = &self.tokens;
        self.by_user.retain(|_, tids| {
            tids.retain(|tid| tokens.contains_key(tid));
            !tids.is_empty()
        });
        self.revocations
            .retain(|r| r.at.saturating_add(revocation_horizon_secs) >= now_unix);
    }
}

impl TokenStore {
    /// Opens (or creates) the log at `path`, replays and compacts it. Records are kept that
    /// may still matter at `now_unix`; revocations are kept for `revocation_horizon_secs`
    /// (the longest token lifetime), after which no token they refuse can be valid.
    ///
    /// An unreadable last line (a crash mid-append) is skipped with a warning; an unreadable
    /// line anywhere else is an error, so that a damaged log stops the start instead of
    /// silently forgetting a revocation.
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
            crate::pki::create_private_dir(dir).map_err(io_error)?;
        }
        let mut state = State::default();
        match fs::read(path) {
            Ok(bytes) => replay(&bytes, &mut state, path).map_err(io_error)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(e)),
        }
        state.drop_expired(now_unix, revocation_horizon_secs);
        let len = compact(path, &state).map_err(io_error)?;
        let file = open_append(path).map_err(io_error)?;
        Ok(Arc::new(Self {
            path: path.to_owned(),
            state: Mutex::new(state),
            log: Mutex::new(Some(Log { file, len })),
        }))
    }

    /// A store that writes nothing (tests and benches).
    pub fn in_memory() -> Arc<Self> {
        Arc::new(Self {
            path: PathBuf::new(),
            state: Mutex::new(State::default()),
            log: Mutex::new(None),
        })
    }

    /// Remembers an issued refresh token (replacing the user's token of the same client).
    /// Blocking (file write).
    pub fn insert(&self, record: RefreshRecord) -> Result<(), StoreError> {
        let mut log = lock(&self.log);
        // Writers are serialised by the log lock, so the revocations read here are all that
        // precede this line in the log.
        let mut record = record;
        if record.revoked_at.is_none() {
            let state = lock(&self.state);
            record.revoked_at = state
                .revocations
                .iter()
                .filter(|r| r.covers(&record))
                .map(|r| r.at)
                .max();
        }
        self.append(&mut log, &Entry::Issue(record.clone()))?;
        lock(&self.state).issue(record);
        Ok(())
    }

    /// The record of refresh token `tid`, if it was issued here and not dropped.
    pub fn get(&self, tid: &str) -> Option<RefreshRecord> {
        lock(&self.state).tokens.get(tid).cloned()
    }

    /// Records a revocation and marks the refresh tokens it covers; returns how many active
    /// ones it ended. Blocking (file write).
    pub fn revoke(&self, revocation: Revocation) -> Result<usize, StoreError> {
        let mut log = lock(&self.log);
        self.append(&mut log, &Entry::Revoke(revocation.clone()))?;
        Ok(lock(&self.state).revoke(revocation))
    }

    /// Revocations still in force, oldest first (the token authority loads them at start).
    pub fn revocations(&self) -> Vec<Revocation> {
        lock(&self.state).revocations.clone()
    }

    /// Refresh tokens, for `refreshtokendetails`-style listings; sorted by issue time.
    pub fn list(&self) -> Vec<RefreshRecord> {
        let mut all: Vec<_> = lock(&self.state).tokens.values().cloned().collect();
        all.sort_by(|a, b| (a.issued_at, &a.tid).cmp(&(b.issued_at, &b.tid)));
        all
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one line and syncs it, before the in-memory state changes: what a client was
    /// told has been persisted. A failed write is cut back, so the next line starts clean.
    fn append(&self, log: &mut Option<Log>, entry: &Entry) -> Result<(), StoreError> {
        let Some(log) = log.as_mut() else {
            return Ok(());
        };
        let io_error = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(entry).map_err(|e| io_error(io::Error::other(e)))?;
        line.push(b'\n');
        if let Err(e) = log
            .file
            .write_all(&line)
            .and_then(|()| log.file.sync_data())
        {
            if let Err(error) = log.file.set_len(log.len) {
                tracing::error!(path = %self.path.display(), %error, "cannot cut back a failed token store append");
            }
            return Err(io_error(e));
        }
        log.len += line.len() as u64;
        Ok(())
    }
}

/// Every update leaves the maps consistent before anything can panic, so a poisoned lock still
/// guards valid data.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn replay(bytes: &[u8], state: &mut State, path: &Path) -> io::Result<()> {
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    let last = lines.len().saturating_sub(1);
    for (i, &(n, line)) in lines.iter().enumerate() {
        match serde_json::from_slice::<Entry>(line) {
            Ok(Entry::Issue(record)) => state.issue(record),
            Ok(Entry::Revoke(r)) => {
                state.revoke(r);
            }
            // A crash mid-append leaves a torn last line: what it held was never confirmed.
            Err(error) if i == last => tracing::warn!(
                path = %path.display(),
                line = n + 1,
                %error,
                "skipping a torn last record of the token store"
            ),
            Err(error) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "line {} is unreadable ({error}); fix or remove that line (the daemon will \
                         not start and forget a revocation)",
                        n + 1
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Rewrites the log with only the live records, through a temporary file renamed into place;
/// returns its length. Revocations come first, so a replay applies them to the records after
/// them as the live store did.
fn compact(path: &Path, state: &State) -> io::Result<u64> {
    let mut out = Vec::new();
    for r in &state.revocations {
        serde_json::to_writer(&mut out, &Entry::Revoke(r.clone())).map_err(io::Error::other)?;
        out.push(b'\n');
    }
    let mut records: Vec<&RefreshRecord> = state.tokens.values().collect();
    records.sort_by(|a, b| (a.issued_at, &a.tid).cmp(&(b.issued_at, &b.tid)));
    for r in records {
        serde_json::to_writer(&mut out, &Entry::Issue(r.clone())).map_err(io::Error::other)?;
        out.push(b'\n');
    }
    crate::pki::write_private_file(path, &out)?;
    Ok(out.len() as u64)
}

fn open_append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
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
            .insert(record("new", "rado", "C2", 300, 9000))
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

    #[test]
    fn one_token_per_user_and_client_and_a_cap_per_user() {
        let store = TokenStore::in_memory();
        store.insert(record("a", "rado", "C1", 100, 9000)).unwrap();
        store.insert(record("b", "rado", "C1", 101, 9000)).unwrap();
        assert!(
            store.get("a").is_none(),
            "replaced by the same client's new token"
        );
        assert!(store.get("b").is_some());
        for i in 0..MAX_REFRESH_TOKENS_PER_USER + 5 {
            store
                .insert(record(
                    &format!("t{i}"),
                    "bob",
                    &format!("C{i}"),
                    100 + i as u64,
                    9000,
                ))
                .unwrap();
        }
        let bobs = store.list().into_iter().filter(|r| r.user == "bob").count();
        assert_eq!(bobs, MAX_REFRESH_TOKENS_PER_USER);
        assert!(store.get("t0").is_none(), "the oldest went");
        assert!(
            store
                .get(&format!("t{}", MAX_REFRESH_TOKENS_PER_USER + 4))
                .is_some()
        );
        assert!(store.get("b").is_some(), "other users untouched");
    }

    #[test]
    fn a_token_issued_in_the_second_of_a_revocation_is_revoked_before_and_after_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refresh.jsonl");
        let store = TokenStore::open(&path, 1000, 3600).unwrap();
        store
            .revoke(Revocation {
                user: Some("rado".into()),
                client_id: None,
                at: 1000,
            })
            .unwrap();
        // A grant that read the clock (1000) before the revocation, persisted after it.
        store
            .insert(record("late", "rado", "C1", 1000, 9000))
            .unwrap();
        assert_eq!(store.get("late").unwrap().revoked_at, Some(1000));
        drop(store);
        for _ in 0..2 {
            let store = TokenStore::open(&path, 1001, 3600).unwrap();
            assert_eq!(store.get("late").unwrap().revoked_at, Some(1000));
        }
    }

    #[test]
    fn an_unreadable_line_before_the_last_stops_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refresh.jsonl");
        let store = TokenStore::open(&path, 1000, 100).unwrap();
        store.insert(record("a", "rado", "C1", 1000, 9000)).unwrap();
        drop(store);
        let mut text = fs::read_to_string(&path).unwrap();
        text.insert_str(0, "{garbage\n");
        fs::write(&path, &text).unwrap();
        let error = TokenStore::open(&path, 1000, 100).unwrap_err().to_string();
        assert!(error.contains("line 1 is unreadable"), "{error}");
        assert_eq!(fs::read_to_string(&path).unwrap(), text, "left as it was");
    }
}
