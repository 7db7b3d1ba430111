//! The Expressway-C table (UCM's `expresswaycconfiguration`, docs/ucm.md §3 and §10): the entries the
//! MRA port (5091) accepts client certificates for, changed at run time from the admin CLI
//! and over AXL, persisted in the state directory and published to the TLS verifier.
//!
//! # Persistence
//! `<state_dir>/expressway-c.json` (mode 0600, rewritten whole and atomically at every
//! change). When the file exists at start it *is* the table, and the configuration's
//! `[[expressway_c]]` entries are ignored (as in UCM, the database wins over what the cluster
//! was installed with); without it the table starts from the configuration, whose entries get
//! stable pkids derived from the cluster UUID and the host. Delete the file to go back to the
//! configuration.
//!
//! # Publication
//! Every change stores a fresh `Vec<ExpresswayEntry>` into the [`ExpresswayTable`] the 5091
//! verifier reads at each handshake, so the next handshake sees it (the MRA listener keeps no
//! TLS sessions, so no resumption bypasses the check).
//!
//! - [`sql`]: the read-only `run sql` queries (admin CLI and AXL `executeSQLQuery`).
//! - [`cli`]: the admin command handlers.

pub mod cli;
pub mod sql;

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::cluster::ExpresswayEntry;
use crate::tls::ExpresswayTable;

/// The table's file name under the state directory.
pub const FILE: &str = "expressway-c.json";

/// Column limits of `expresswaycconfiguration` (AXL 12.5: String255, String50, String4096),
/// in characters.
pub const MAX_HOST: usize = 255;
pub const MAX_DESCRIPTION: usize = 50;
pub const MAX_NAMES: usize = 4096;

/// One row, as stored and as AXL and `run sql` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Lower-case hyphenated UUID without braces (`run sql` form); AXL shows it upper-cased in
    /// braces, see [`Record::axl_uuid`].
    pub pkid: String,
    /// `hostnameorip`: unique, compared case-insensitively.
    pub host: String,
    pub description: String,
    /// `x509subjectnameoraltname` as given (comma- or space-separated names).
    pub names: String,
}

impl Record {
    /// `{UPPER-CASE-UUID}`, AXL's form.
    pub fn axl_uuid(&self) -> String {
        format!("{{{}}}", self.pkid.to_ascii_uppercase())
    }

    /// The certificate names this row accepts: lower-cased, split on commas and whitespace,
    /// IP addresses in canonical text form.
    pub fn subject_names(&self) -> Vec<String> {
        parse_names(&self.names)
    }
}

/// How a request names a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Host(String),
    /// With or without braces, any case.
    Pkid(String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(h) => write!(f, "HostNameOrIP {h}"),
            Self::Pkid(p) => write!(f, "uuid {p}"),
        }
    }
}

/// A new row's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEntry {
    pub host: String,
    pub description: String,
    pub names: String,
}

/// What an update changes; `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub host: Option<String>,
    pub description: Option<String>,
    pub names: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExpresswayError {
    /// Another row has this host (case-insensitively).
    #[error("an Expressway-C entry for {host} already exists")]
    Duplicate { host: String },
    #[error("no Expressway-C entry with {key}")]
    NotFound { key: Key },
    /// A field is empty where required or too long.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Reading or writing the table's file.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// The table: rows in insertion order, their file, and the published verifier view.
#[derive(Debug)]
pub struct ExpresswayStore {
    path: PathBuf,
    /// A std mutex, never held across `.await`: callers are the admin commands (already on the
    /// blocking pool) and AXL handlers (which call in through `spawn_blocking`), because every
    /// change writes the file under the lock, so that file order and table order agree.
    rows: Mutex<Vec<Record>>,
    table: ExpresswayTable,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    entries: Vec<Record>,
}

const FILE_VERSION: u32 = 1;

impl ExpresswayStore {
    /// Opens the table at `path`: its rows when the file exists, else `initial` (the
    /// configuration's entries, given pkids derived from `cluster_uuid` and the host). The
    /// file is not written until the first change.
    pub fn open(
        path: &Path,
        cluster_uuid: &str,
        initial: &[ExpresswayEntry],
    ) -> Result<Self, ExpresswayError> {
        let rows = read_rows(path, cluster_uuid, initial)?;
        let table = Arc::new(ArcSwap::from_pointee(entries(&rows)));
        Ok(Self {
            path: path.to_owned(),
            rows: Mutex::new(rows),
            table,
        })
    }

    /// The view the 5091 verifier reads; every change here is stored into it.
    pub fn table(&self) -> ExpresswayTable {
        self.table.clone()
    }

    /// Adds a row with a fresh random pkid.
    pub fn add(&self, new: NewEntry) -> Result<Record, ExpresswayError> {
        let record = Record {
            pkid: uuid::Uuid::new_v4().hyphenated().to_string(),
            host: new.host.trim().to_owned(),
            description: new.description,
            names: new.names.trim().to_owned(),
        };
        validate(&record)?;
        self.change(|rows| {
            if rows
                .iter()
                .any(|r| r.host.eq_ignore_ascii_case(&record.host))
            {
                return Err(ExpresswayError::Duplicate {
                    host: record.host.clone(),
                });
            }
            rows.push(record.clone());
            Ok(record.clone())
        })
    }

    /// Changes the fields given in `changes` of the row `key` names.
    pub fn update(&self, key: &Key, changes: Changes) -> Result<Record, ExpresswayError> {
        self.change(|rows| {
            let i = position(rows, key)?;
            let mut record = rows[i].clone();
            if let Some(host) = changes.host {
                let host = host.trim().to_owned();
                let taken = rows
                    .iter()
                    .enumerate()
                    .any(|(j, r)| j != i && r.host.eq_ignore_ascii_case(&host));
                if taken {
                    return Err(ExpresswayError::Duplicate { host });
                }
                record.host = host;
            }
            if let Some(d) = changes.description {
                record.description = d;
            }
            if let Some(n) = changes.names {
                record.names = n.trim().to_owned();
            }
            validate(&record)?;
            rows[i] = record.clone();
            Ok(record)
        })
    }

    /// Removes the row `key` names and returns it.
    pub fn remove(&self, key: &Key) -> Result<Record, ExpresswayError> {
        self.change(|rows| {
            let i = position(rows, key)?;
            Ok(rows.remove(i))
        })
    }

    /// The row `key` names.
    pub fn get(&self, key: &Key) -> Result<Record, ExpresswayError> {
        let rows = self.lock();
        position(&rows, key).map(|i| rows[i].clone())
    }

    /// Every row, in insertion order.
    pub fn list(&self) -> Vec<Record> {
        self.lock().clone()
    }

    /// Runs `edit` on a copy of the rows; on success writes the file, then makes the copy
    /// the table and publishes it. A failed write leaves everything as it was.
    fn change<T>(
        &self,
        edit: impl FnOnce(&mut Vec<Record>) -> Result<T, ExpresswayError>,
    ) -> Result<T, ExpresswayError> {
        let mut rows = self.lock();
        let mut next = rows.clone();
        let out = edit(&mut next)?;
        let file = FileFormat {
            version: FILE_VERSION,
            entries: next.clone(),
        };
        let io_error = |source| ExpresswayError::Io {
            path: self.path.clone(),
            source,
        };
        let mut bytes =
            serde_json::to_vec_pretty(&file).map_err(|e| io_error(io::Error::other(e)))?;
        bytes.push(b'\n');
        crate::pki::write_private_file(&self.path, &bytes).map_err(io_error)?;
        self.table.store(Arc::new(entries(&next)));
        *rows = next;
        Ok(out)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Record>> {
        // A panic while holding the lock cannot leave the rows half-changed (edits work on a
        // copy), so a poisoned lock is still a consistent table.
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The rows in the file at `path`, or `initial` (with pkids derived from `cluster_uuid` and
/// the host) when there is no file yet.
fn read_rows(
    path: &Path,
    cluster_uuid: &str,
    initial: &[ExpresswayEntry],
) -> Result<Vec<Record>, ExpresswayError> {
    let io_error = |source| ExpresswayError::Io {
        path: path.to_owned(),
        source,
    };
    let rows = match std::fs::read(path) {
        Ok(bytes) => {
            let file: FileFormat = serde_json::from_slice(&bytes)
                .map_err(|e| io_error(io::Error::new(io::ErrorKind::InvalidData, e)))?;
            if file.version != FILE_VERSION {
                return Err(io_error(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown version {}", file.version),
                )));
            }
            file.entries
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => initial
            .iter()
            .map(|e| Record {
                pkid: crate::cluster::pkid(cluster_uuid, "expresswayc", &e.host),
                host: e.host.clone(),
                description: e.description.clone(),
                names: e.subject_names.join(","),
            })
            .collect(),
        Err(e) => return Err(io_error(e)),
    };
    Ok(rows)
}

/// Splits a stored `x509subjectnameoraltname` into the names a certificate is matched
/// against: commas and whitespace separate, case is folded, IP addresses are canonical.
pub fn parse_names(names: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names.split(|c: char| c == ',' || c.is_whitespace()) {
        if name.is_empty() {
            continue;
        }
        let name = match name.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => name.to_ascii_lowercase(),
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Normalises a pkid for comparison: braces off, lower case.
pub fn normalize_pkid(pkid: &str) -> String {
    pkid.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_ascii_lowercase()
}

fn position(rows: &[Record], key: &Key) -> Result<usize, ExpresswayError> {
    let found = match key {
        Key::Host(h) => {
            let h = h.trim();
            rows.iter().position(|r| r.host.eq_ignore_ascii_case(h))
        }
        Key::Pkid(p) => {
            let p = normalize_pkid(p);
            rows.iter().position(|r| r.pkid == p)
        }
    };
    found.ok_or_else(|| ExpresswayError::NotFound { key: key.clone() })
}

fn validate(r: &Record) -> Result<(), ExpresswayError> {
    let invalid = |field, reason: String| Err(ExpresswayError::Invalid { field, reason });
    if r.host.is_empty() {
        return invalid("HostNameOrIP", "must not be empty".into());
    }
    if r.host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid("HostNameOrIP", "must not contain spaces".into());
    }
    for (field, value, max) in [
        ("HostNameOrIP", &r.host, MAX_HOST),
        ("description", &r.description, MAX_DESCRIPTION),
        ("X509SubjectNameorSubjectAlternateName", &r.names, MAX_NAMES),
    ] {
        let n = value.chars().count();
        if n > max {
            return invalid(field, format!("{n} characters, at most {max} allowed"));
        }
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return invalid(field, "must not contain control characters".into());
        }
    }
    Ok(())
}

fn entries(rows: &[Record]) -> Vec<ExpresswayEntry> {
    rows.iter()
        .map(|r| ExpresswayEntry {
            host: r.host.clone(),
            description: r.description.clone(),
            subject_names: r.subject_names(),
        })
        .collect()
}

// Configuration reload (crate::server): kept apart from the table's own operations.
impl ExpresswayStore {
    /// Re-reads the table for a configuration reload: the file's rows, or the reloaded
    /// configuration's `initial` entries when no change was ever saved, and publishes them
    /// to the 5091 verifier. The file is read under the table's lock, so an AXL or admin
    /// edit made while the reload was being checked (it takes only this lock) is in the
    /// file read and kept. On error the table stays as it was.
    pub fn reload(
        &self,
        cluster_uuid: &str,
        initial: &[ExpresswayEntry],
    ) -> Result<(), ExpresswayError> {
        let mut current = self.lock();
        let rows = read_rows(&self.path, cluster_uuid, initial)?;
        self.table.store(Arc::new(entries(&rows)));
        *current = rows;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_entry() -> ExpresswayEntry {
        ExpresswayEntry {
            host: "exp-c".into(),
            description: "lab".into(),
            subject_names: vec!["exp-c.domain-1.com".into(), "domain-2.com".into()],
        }
    }

    fn open(dir: &Path) -> ExpresswayStore {
        ExpresswayStore::open(&dir.join(FILE), "uuid-1", &[config_entry()]).unwrap()
    }

    fn new(host: &str, names: &str) -> NewEntry {
        NewEntry {
            host: host.into(),
            description: "d".into(),
            names: names.into(),
        }
    }

    #[test]
    fn a_reload_keeps_an_edit_made_while_it_was_being_checked() {
        let dir = tempfile::tempdir().unwrap();
        let live = open(dir.path());
        // The reload checks the file first (its own store on the same file)...
        let checked = open(dir.path());
        assert_eq!(checked.list().len(), 1);
        // ...an AXL edit lands in between...
        live.add(new("exp-late", "late.lab")).unwrap();
        // ...and the swap re-reads under the table's lock instead of installing the
        // snapshot.
        live.reload("uuid-1", &[config_entry()]).unwrap();
        let hosts: Vec<String> = live.list().into_iter().map(|r| r.host).collect();
        assert_eq!(hosts, ["exp-c", "exp-late"]);
        assert!(
            live.table()
                .load()
                .iter()
                .any(|e| e.subject_names == ["late.lab"])
        );
        // The next change writes a file that still has it.
        live.add(new("exp-next", "next.lab")).unwrap();
        assert_eq!(open(dir.path()).list().len(), 3);
    }

    #[test]
    fn a_reload_without_a_saved_table_takes_the_new_configuration_entries() {
        let dir = tempfile::tempdir().unwrap();
        let live = open(dir.path());
        let other = ExpresswayEntry {
            host: "exp-b".into(),
            description: "b".into(),
            subject_names: vec!["b.lab".into()],
        };
        live.reload("uuid-1", std::slice::from_ref(&other)).unwrap();
        assert_eq!(live.list()[0].host, "exp-b");
        assert_eq!(live.table().load()[0].subject_names, ["b.lab"]);
    }

    #[test]
    fn config_entries_get_stable_pkids_and_are_published() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path()).list();
        let b = open(dir.path()).list();
        assert_eq!(a, b);
        assert_eq!(
            a[0].pkid,
            crate::cluster::pkid("uuid-1", "expresswayc", "exp-c")
        );
        assert_eq!(a[0].names, "exp-c.domain-1.com,domain-2.com");
        assert!(
            !dir.path().join(FILE).exists(),
            "nothing written before a change"
        );
        let s = open(dir.path());
        assert_eq!(
            s.table().load()[0].subject_names,
            config_entry().subject_names
        );
    }

    #[test]
    fn add_update_remove_persist_and_publish() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let table = s.table();
        let r = s
            .add(new("exp-c2", "A.example.com, b.example.com 10.0.0.1"))
            .unwrap();
        assert_eq!(
            table.load()[1].subject_names,
            ["a.example.com", "b.example.com", "10.0.0.1"]
        );
        assert!(r.axl_uuid().starts_with('{') && r.axl_uuid().ends_with('}'));
        // The file wins over the configuration at the next open.
        let reopened = ExpresswayStore::open(&dir.path().join(FILE), "uuid-1", &[]).unwrap();
        assert_eq!(reopened.list(), s.list());

        let key = Key::Pkid(r.axl_uuid());
        let u = s
            .update(
                &key,
                Changes {
                    host: Some("exp-c3".into()),
                    names: Some("c.example.com".into()),
                    ..Changes::default()
                },
            )
            .unwrap();
        assert_eq!((u.host.as_str(), u.description.as_str()), ("exp-c3", "d"));
        assert_eq!(table.load()[1].subject_names, ["c.example.com"]);
        assert!(matches!(
            s.get(&Key::Host("EXP-C2".into())),
            Err(ExpresswayError::NotFound { .. })
        ));
        assert_eq!(s.get(&Key::Host("EXP-C3".into())).unwrap().pkid, r.pkid);
        s.remove(&Key::Host("exp-c3".into())).unwrap();
        assert_eq!(table.load().len(), 1);
        let reopened = ExpresswayStore::open(&dir.path().join(FILE), "uuid-1", &[]).unwrap();
        assert_eq!(reopened.list().len(), 1);
    }

    #[test]
    fn host_is_unique_case_insensitively() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        assert!(matches!(
            s.add(new("EXP-C", "x")),
            Err(ExpresswayError::Duplicate { .. })
        ));
        s.add(new("other", "x")).unwrap();
        assert!(matches!(
            s.update(
                &Key::Host("other".into()),
                Changes {
                    host: Some("Exp-C".into()),
                    ..Changes::default()
                }
            ),
            Err(ExpresswayError::Duplicate { .. })
        ));
    }

    #[test]
    fn limits_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let too_long = |field: &str, e| matches!(e, Err(ExpresswayError::Invalid { field: f, .. }) if f == field);
        assert!(too_long("HostNameOrIP", s.add(new("", "x"))));
        assert!(too_long("HostNameOrIP", s.add(new(&"h".repeat(256), "x"))));
        let mut long = new("h", "x");
        long.description = "d".repeat(51);
        assert!(too_long("description", s.add(long)));
        assert!(too_long(
            "X509SubjectNameorSubjectAlternateName",
            s.add(new("h", &"n".repeat(4097)))
        ));
        s.add(new(&"h".repeat(255), &"n".repeat(4096))).unwrap();
        assert_eq!(s.list().len(), 2);
    }

    #[test]
    fn names_split_on_commas_and_spaces() {
        assert_eq!(
            parse_names(" A.com,,b.COM  c.com\td.com,a.com, ::FFFF:10.0.0.1 2001:DB8::1"),
            [
                "a.com",
                "b.com",
                "c.com",
                "d.com",
                "::ffff:10.0.0.1",
                "2001:db8::1"
            ]
        );
        assert_eq!(normalize_pkid("{ABC-D}"), "abc-d");
    }
}
