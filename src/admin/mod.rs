//! UCM's admin CLI (`admin:` prompt, docs/ucm.md §8): the command table, its parser, and the local
//! admin interface the `cli` subcommand uses to reach the running daemon.
//!
//! # Pieces
//! - this file: [`COMMANDS`], one [`CommandSpec`] per command (words, arguments, help, optional
//!   interactive confirmation, handler), [`parse`] and [`execute`]. Pure: no I/O, no async.
//!   A new command is one table row (plus, when it acts on something new, one [`Operations`]
//!   method with a default body so existing implementors keep compiling).
//! - [`server`] (Unix only): the daemon's side, [`bind`] then [`AdminListener::serve`].
//! - [`client`] (Unix only): the `cli` side, [`run_command`] and the interactive prompt.
//!
//! # Protocol and authentication
//! HTTP/1.1 over the Unix socket `<state_dir>/admin.sock` (mode 0600). `POST /command` carries
//! one command line as a UTF-8 body and answers `200` with the command's output, `400` for a
//! line that is not a command, `500` when the command failed (body: UCM-style error text).
//! `GET /ping` answers `200` (the prompt checks the daemon before showing itself). Every
//! request must carry `Authorization: Bearer <secret>`, where the secret is the content of
//! `<state_dir>/admin.secret` (mode 0600, 256 random bits, rewritten at every daemon start);
//! anything else gets `401`. So a client needs both the socket and the secret file, i.e. the
//! daemon's user (or root). The secret is compared in constant time.
//!
//! Unix sockets only: on other platforms only the command table is compiled.

#[cfg(unix)]
pub mod client;
pub mod ports;
#[cfg(unix)]
pub mod server;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

#[cfg(unix)]
pub use client::{ping, run_command};
#[cfg(unix)]
pub use server::{AdminListener, bind};

/// The admin socket's file name under the state directory.
pub const SOCKET_FILE: &str = "admin.sock";
/// The admin secret's file name under the state directory.
pub const SECRET_FILE: &str = "admin.secret";
/// The first line of every failed command's output, as UCM prints it.
pub const UNSUCCESSFUL: &str = "Executed command unsuccessfully";

/// What the admin commands act on; implemented by the daemon's token service (and later by
/// config reload, the Expressway-C table...). Object-safe. Methods may block (key generation,
/// file writes): the admin server calls them on the blocking thread pool, one command at a time.
pub trait Operations: Send + Sync + 'static {
    /// Regenerates the key, persists it, makes every outstanding token fail at once; returns
    /// the new key's hash.
    fn regen_key(&self, key: AuthzKey) -> Result<String, String>;
    /// A hash of the current key (hex), never the key itself.
    fn key_hash(&self, key: AuthzKey) -> String;
    /// The Expressway-C table (`set expresswayc …`, `run sql`); `None` where there is none.
    fn expressway(&self) -> Option<&crate::expressway::ExpresswayStore> {
        None
    }
    /// The cluster's SIP OAuth mode (`run sql … ClusterSIPOAuthMode`); `None` when unknown.
    fn sip_oauth_mode(&self) -> Option<bool> {
        None
    }
    /// `utils sipOAuth-mode enable|disable`: persists the mode and applies it live (the OAuth
    /// listeners of every node open or close).
    fn set_sip_oauth_mode(&self, _on: bool) -> Result<(), String> {
        Err(NOT_HERE.into())
    }
    /// The sockets `show open ports` may list.
    fn listening(&self) -> Vec<ports::OpenSocket> {
        Vec::new()
    }
    /// `set cert regen tomcat`: a new tomcat certificate, in force for the next handshake;
    /// returns the `show cert list own` line of the new one.
    fn regen_tomcat(&self) -> Result<String, String> {
        Err(NOT_HERE.into())
    }
    /// `show cert list own`: one line per certificate the daemon presents.
    fn own_certs(&self) -> Result<String, String> {
        Err(NOT_HERE.into())
    }
    /// `utils reload config`: re-reads the configuration, certificates, trust stores and
    /// Expressway-C entries; returns what changed. A refused reload changes nothing.
    fn reload(&self) -> Result<String, String> {
        Err(NOT_HERE.into())
    }
}

/// What a command acting on something this implementor lacks answers.
const NOT_HERE: &str = "Not available on this server";

pub use crate::oauth::AuthzKey;

/// The daemon's token service is what the key commands act on.
impl Operations for crate::oauth::TokenService {
    fn regen_key(&self, key: AuthzKey) -> Result<String, String> {
        Self::regen_key(self, key).map_err(|e| e.to_string())
    }

    fn key_hash(&self, key: AuthzKey) -> String {
        Self::key_hash(self, key)
    }
}

/// Everything the admin interface's two sides can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Creating the state directory or writing the secret failed.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another daemon answers on the socket.
    #[error("another daemon already serves the admin interface on {}", path.display())]
    InUse { path: PathBuf },
    /// Something that is not a socket sits where the socket goes; it is left alone.
    #[error("{} exists and is not a socket; not replacing it", path.display())]
    NotSocket { path: PathBuf },
    /// `bind(2)` (or the check for a stale socket) failed.
    #[error("cannot bind the admin socket {}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No daemon listens on the socket.
    #[error("the daemon is not running: cannot connect to {}", path.display())]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The client cannot read the secret (another user's daemon, or not running).
    #[error("cannot read the admin secret {}", path.display())]
    Secret {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The daemon answered 401: the secret presented is not the daemon's.
    #[error("the daemon refused the admin secret from {} (401 Unauthorized)", path.display())]
    Unauthorized { path: PathBuf },
    /// HTTP over the socket failed (the daemon closed the connection, a malformed reply).
    #[error("talking to the daemon on {}", path.display())]
    Http {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The daemon did not answer in time.
    #[error("the daemon did not answer on {} within {secs} s", path.display())]
    Timeout { path: PathBuf, secs: u64 },
    /// The command ran (or was parsed) and failed; `output` is what to show the user, starting
    /// with [`UNSUCCESSFUL`].
    #[error("{}", output.trim_end())]
    Command { output: String },
}

/// What follows a command's fixed words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// Nothing.
    None,
    /// The rest of the line, required, kept as typed (case and inner spacing); the name is
    /// shown in help, e.g. `run sql <query>`.
    Rest(&'static str),
}

/// A command's handler: the daemon's operations and the argument text (`""` for
/// [`Args::None`]) → output, or the error text that follows [`UNSUCCESSFUL`].
pub type Handler = fn(&dyn Operations, &str) -> Result<String, String>;

/// One row of the command table.
pub struct CommandSpec {
    /// The fixed words, space-separated, matched case-insensitively (`sipOAuth-mode` matches
    /// `sipoauth-mode`).
    pub words: &'static str,
    pub args: Args,
    /// One line for `help`.
    pub help: &'static str,
    /// A warning shown by the interactive prompt before it asks "Do you want to continue?
    /// (yes/no)"; the command runs only on `yes`. `cli -c` does not ask.
    pub confirm: Option<&'static str>,
    pub run: Handler,
}

impl fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSpec")
            .field("words", &self.words)
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl CommandSpec {
    /// The syntax as help shows it: the words, then `<arg>` if any.
    pub fn syntax(&self) -> String {
        match self.args {
            Args::None => self.words.to_owned(),
            Args::Rest(name) => format!("{} <{name}>", self.words),
        }
    }
}

/// Every command the prompt knows, in help order.
pub static COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        words: "show key authz signing",
        args: Args::None,
        help: "show a hash of the OAuth token signing key (never the key)",
        confirm: None,
        run: |ops, _| {
            Ok(hash_line(
                AuthzKey::Signing,
                &ops.key_hash(AuthzKey::Signing),
            ))
        },
    },
    CommandSpec {
        words: "show key authz encryption",
        args: Args::None,
        help: "show a hash of the OAuth token encryption key (never the key)",
        confirm: None,
        run: |ops, _| {
            Ok(hash_line(
                AuthzKey::Encryption,
                &ops.key_hash(AuthzKey::Encryption),
            ))
        },
    },
    CommandSpec {
        words: "set key regen authz signing",
        args: Args::None,
        help: "regenerate the OAuth token signing key; every outstanding token stops working",
        confirm: Some(REGEN_WARNING),
        run: |ops, _| regen(ops, AuthzKey::Signing),
    },
    CommandSpec {
        words: "set key regen authz encryption",
        args: Args::None,
        help: "regenerate the OAuth token encryption key; every outstanding token stops working",
        confirm: Some(REGEN_WARNING),
        run: |ops, _| regen(ops, AuthzKey::Encryption),
    },
    CommandSpec {
        words: "run sql",
        args: Args::Rest("query"),
        help: "run a read-only query: select * from expresswaycconfiguration, or the \
               ClusterSIPOAuthMode processconfig query",
        confirm: None,
        run: crate::expressway::cli::run_sql,
    },
    CommandSpec {
        words: "show expresswayc",
        args: Args::None,
        help: "list the Expressway-C entries the MRA port accepts, with the names they match",
        confirm: None,
        run: crate::expressway::cli::show,
    },
    CommandSpec {
        words: "set expresswayc add",
        args: Args::Rest("host> <names"),
        help: "add an Expressway-C entry, then an optional description (names: comma-separated, \
               or spaced in double quotes)",
        confirm: None,
        run: crate::expressway::cli::add,
    },
    CommandSpec {
        words: "set expresswayc update",
        args: Args::Rest("host> <names"),
        help: "replace an entry's names, and its description when one follows",
        confirm: None,
        run: crate::expressway::cli::update,
    },
    CommandSpec {
        words: "set expresswayc rename",
        args: Args::Rest("host> <new-host"),
        help: "change an entry's host name or IP",
        confirm: None,
        run: crate::expressway::cli::rename,
    },
    CommandSpec {
        words: "set expresswayc remove",
        args: Args::Rest("host"),
        help: "remove an Expressway-C entry",
        confirm: None,
        run: crate::expressway::cli::remove,
    },
    CommandSpec {
        words: "utils sipOAuth-mode enable",
        args: Args::None,
        help: "enable SIP OAuth mode cluster-wide: ports 5090/5091 of every node open at once",
        confirm: None,
        run: |ops, _| {
            ops.set_sip_oauth_mode(true)?;
            Ok(MODE_ENABLED.into())
        },
    },
    CommandSpec {
        words: "utils sipOAuth-mode disable",
        args: Args::None,
        help: "disable SIP OAuth mode cluster-wide: ports 5090/5091 of every node close, with \
               their connections",
        confirm: None,
        run: |ops, _| {
            ops.set_sip_oauth_mode(false)?;
            Ok(MODE_DISABLED.into())
        },
    },
    CommandSpec {
        words: "show open ports regexp",
        args: Args::Rest("pattern"),
        help: "list the daemon's listening sockets (lsof columns) whose line matches the pattern",
        confirm: None,
        run: ports::show_open_ports,
    },
    CommandSpec {
        words: "set cert regen tomcat",
        args: Args::None,
        help: "regenerate the tomcat certificate (same names, signed by the lab CA); the next \
               handshake on 5090, 5091, 6971 and 8443 uses it, no restart",
        confirm: Some(CERT_REGEN_WARNING),
        run: |ops, _| {
            let line = ops.regen_tomcat()?;
            Ok(format!(
                "Successfully Regenerated Certificate for tomcat.\n{line}\nThe new certificate \
                 is presented from the next TLS handshake on; established connections keep the \
                 one they shook hands with.\n"
            ))
        },
    },
    CommandSpec {
        words: "show cert list own",
        args: Args::None,
        help: "list the certificates the daemon presents (unit/file: subject, serial, names)",
        confirm: None,
        run: |ops, _| ops.own_certs(),
    },
    CommandSpec {
        words: "utils reload config",
        args: Args::None,
        help: "reload the configuration, certificates, trust stores and Expressway-C entries \
               (as SIGHUP); registrations and connections stay",
        confirm: None,
        run: |ops, _| ops.reload(),
    },
    CommandSpec {
        words: "help",
        args: Args::None,
        help: "list these commands",
        confirm: None,
        run: |_, _| Ok(usage()),
    },
];

/// A parsed command line.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    pub spec: &'static CommandSpec,
    /// The argument text, trimmed (`""` for [`Args::None`]).
    pub args: &'a str,
}

/// Why a line is not a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Blank line.
    #[error("Empty command")]
    Empty,
    /// The words match no command.
    #[error("Invalid command: {line:?}")]
    Unknown { line: String },
    /// The words are the start of one or more commands.
    #[error("Incomplete command: {line:?}")]
    Incomplete { line: String },
    /// A command that takes an argument was given none.
    #[error("Missing argument <{name}> for \"{syntax}\"")]
    MissingArgs { syntax: String, name: &'static str },
    /// A command without arguments was given some.
    #[error("Unexpected argument {extra:?} after \"{words}\"")]
    ExtraArgs { words: &'static str, extra: String },
}

/// Finds the command `line` names: the longest table entry whose words start the line
/// (case-insensitively, any whitespace between words).
pub fn parse(line: &str) -> Result<Invocation<'_>, ParseError> {
    parse_in(COMMANDS, line)
}

fn parse_in<'a>(
    table: &'static [CommandSpec],
    line: &'a str,
) -> Result<Invocation<'a>, ParseError> {
    let line = line.trim();
    if line.is_empty() {
        return Err(ParseError::Empty);
    }
    let typed = words_with_offsets(line);
    let mut best: Option<(&'static CommandSpec, usize)> = None;
    let mut prefix_of_some = false;
    for spec in table {
        let want: Vec<&str> = spec.words.split_whitespace().collect();
        let common = want
            .iter()
            .zip(&typed)
            .take_while(|(w, (_, t))| w.eq_ignore_ascii_case(t))
            .count();
        if common == typed.len() && common < want.len() {
            prefix_of_some = true;
        }
        if common == want.len() && best.is_none_or(|(b, _)| want.len() > word_count(b)) {
            best = Some((spec, common));
        }
    }
    let Some((spec, n)) = best else {
        return Err(if prefix_of_some {
            ParseError::Incomplete { line: line.into() }
        } else {
            ParseError::Unknown { line: line.into() }
        });
    };
    let rest = typed.get(n).map_or("", |&(at, _)| line[at..].trim());
    match (spec.args, rest.is_empty()) {
        (Args::None, true) | (Args::Rest(_), false) => Ok(Invocation { spec, args: rest }),
        (Args::None, false) => Err(ParseError::ExtraArgs {
            words: spec.words,
            extra: rest.into(),
        }),
        (Args::Rest(name), true) => Err(ParseError::MissingArgs {
            syntax: spec.syntax(),
            name,
        }),
    }
}

/// The outcome of one command line, as the daemon answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command's output.
    Done(String),
    /// Not a command: [`UNSUCCESSFUL`], the reason, and the command list.
    Invalid(String),
    /// The command failed: [`UNSUCCESSFUL`] and the reason.
    Failed(String),
}

/// Parses and runs one line. An empty line is a no-op with empty output.
pub fn execute(ops: &dyn Operations, line: &str) -> Outcome {
    let invocation = match parse(line) {
        Ok(i) => i,
        Err(ParseError::Empty) => return Outcome::Done(String::new()),
        Err(e) => return Outcome::Invalid(format!("{UNSUCCESSFUL}\n{e}\n\n{}", usage())),
    };
    match (invocation.spec.run)(ops, invocation.args) {
        Ok(output) => Outcome::Done(output),
        Err(reason) => Outcome::Failed(format!("{UNSUCCESSFUL}\n{}\n", reason.trim_end())),
    }
}

/// The command list `help` prints (and every invalid command is answered with).
pub fn usage() -> String {
    let width = COMMANDS
        .iter()
        .map(|c| c.syntax().len())
        .max()
        .unwrap_or(0)
        .max(QUIT.len());
    let mut out = String::from("Supported commands:\n");
    for c in COMMANDS {
        out.push_str(&format!("  {:width$}  {}\n", c.syntax(), c.help));
    }
    out.push_str(&format!(
        "  {QUIT:width$}  leave the prompt (interactive only)\n"
    ));
    out
}

/// Whether `line` leaves the interactive prompt.
pub fn is_quit(line: &str) -> bool {
    let line = line.trim();
    line.eq_ignore_ascii_case("quit") || line.eq_ignore_ascii_case("exit")
}

const QUIT: &str = "quit | exit";

/// UCM's answer to `utils sipOAuth-mode enable`, byte for byte (docs/ucm.md §8).
pub const MODE_ENABLED: &str = "SIP OAuth mode enabled.\nPlease restart the Cisco CallManager \
service on all nodes in the cluster where it is running.\n";
/// Ours for `disable` (the seeds do not show it), in the same style.
pub const MODE_DISABLED: &str = "SIP OAuth mode disabled.\nPlease restart the Cisco CallManager \
service on all nodes in the cluster where it is running.\n";

const CERT_REGEN_WARNING: &str = "WARNING: This operation will regenerate the tomcat \
certificate. Clients that pinned the current one (rather than the CA that signed it) must \
trust the new one.";

const REGEN_WARNING: &str = "WARNING: This operation will regenerate the key. Every outstanding \
OAuth access and refresh token stops working at once, and every OAuth client (Jabber, phones, \
Expressway-C) must sign in again.";

fn hash_line(key: AuthzKey, hash: &str) -> String {
    format!("{} key hash: {hash}\n", key.title())
}

fn regen(ops: &dyn Operations, key: AuthzKey) -> Result<String, String> {
    let hash = ops.regen_key(key)?;
    Ok(format!(
        "{} key regenerated successfully.\nEvery outstanding OAuth token is now invalid.\n{}",
        key.title(),
        hash_line(key, &hash)
    ))
}

fn word_count(spec: &CommandSpec) -> usize {
    spec.words.split_whitespace().count()
}

/// The line's words with their byte offsets, so arguments can be cut from the original text.
fn words_with_offsets(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &line[s..]));
    }
    out
}
