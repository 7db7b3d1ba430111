//! The `cli` side of the admin interface: connects to `<state_dir>/admin.sock`, presents the
//! secret from `<state_dir>/admin.secret` as `Authorization: Bearer <secret>`, and speaks
//! HTTP/1.1 (hyper's client, one connection per request) to the daemon's
//! [`server`](super::server). See the [module docs](super) for the protocol.
//!
//! [`cli`] is the `cli` subcommand:
//! - `cli -c "<command>"` runs one command, prints its output on stdout and exits 0; a failed
//!   or unknown command prints UCM's error text on stderr and exits 1. No confirmation is
//!   asked (scripts run it; typing the command is the confirmation).
//! - `cli` alone shows the `admin:` prompt and reads lines from stdin (a terminal or a pipe)
//!   until `quit`, `exit` or end of input. Commands with a warning (key regeneration) ask
//!   "Do you want to continue? (yes/no)" and run only on `yes`, as UCM does. When stdin is not
//!   a terminal each line is echoed after the prompt, so a piped session reads like UCM's
//!   transcripts.
//!
//! Either way, if no daemon answers, the error names the socket and the exit status is 1.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{AdminError, SECRET_FILE, SOCKET_FILE};

/// Connects to `<state_dir>/admin.sock`, authenticates with `admin.secret`, runs one command
/// and returns its output. A command the daemon rejects or that fails is
/// [`AdminError::Command`] with UCM's error text.
pub async fn run_command(state_dir: &Path, line: &str) -> Result<String, AdminError> {
    let (status, body) = request(state_dir, Method::POST, "/command", line.to_owned()).await?;
    if status == StatusCode::OK {
        Ok(body)
    } else {
        Err(AdminError::Command { output: body })
    }
}

/// Checks that a daemon answers on `<state_dir>/admin.sock` and accepts our secret.
pub async fn ping(state_dir: &Path) -> Result<(), AdminError> {
    let (status, body) = request(state_dir, Method::GET, "/ping", String::new()).await?;
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(AdminError::Command { output: body })
    }
}

/// The `cli` subcommand: one command with `Some(line)` (`-c`), else the interactive prompt on
/// stdin/stdout. Errors are printed here; the exit status is 1 on any failure of `-c`, or when
/// the interactive prompt cannot reach the daemon.
pub fn cli(state_dir: &Path, command: Option<&str>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(line) = command else {
        if let Err(e) = runtime.block_on(ping(state_dir)) {
            eprintln!("{}", report(&e));
            return ExitCode::FAILURE;
        }
        let stdin = io::stdin();
        let echo = !stdin.is_terminal();
        if !echo {
            println!("Welcome to the Platform Command Line Interface (sip-oauth-registrar)");
            println!("Type `help` for the commands, `quit` to leave.\n");
        }
        let result = interactive(&runtime, state_dir, stdin.lock(), &mut io::stdout(), echo);
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    };
    match runtime.block_on(run_command(state_dir, line)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The prompt loop. `echo` repeats each line read after the prompt (for piped input).
fn interactive(
    runtime: &tokio::runtime::Runtime,
    state_dir: &Path,
    input: impl BufRead,
    out: &mut impl Write,
    echo: bool,
) -> io::Result<()> {
    let mut lines = input.lines();
    let mut read = |out: &mut dyn Write| -> io::Result<Option<String>> {
        out.flush()?;
        let line = lines.next().transpose()?;
        match &line {
            Some(l) if echo => writeln!(out, "{l}")?,
            Some(_) => {}
            None => writeln!(out)?,
        }
        Ok(line)
    };
    loop {
        write!(out, "{PROMPT}")?;
        let Some(line) = read(out)? else {
            return Ok(());
        };
        if super::is_quit(&line) {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        if let Some(warning) = super::parse(&line).ok().and_then(|i| i.spec.confirm) {
            write!(out, "{warning}\nDo you want to continue? (yes/no) ")?;
            let answer = read(out)?.unwrap_or_default();
            if !answer.trim().eq_ignore_ascii_case("yes") {
                writeln!(out, "Command cancelled.")?;
                continue;
            }
        }
        match runtime.block_on(run_command(state_dir, &line)) {
            Ok(output) | Err(AdminError::Command { output }) => write!(out, "{output}")?,
            // The daemon may have gone away or restarted: say so and keep the prompt.
            Err(e) => writeln!(out, "{}", report(&e))?,
        }
    }
}

const PROMPT: &str = "admin:";
/// Key regeneration takes well under a second; this only bounds a wedged daemon.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Outputs are a few lines (`run sql` results may be longer, still far below this).
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

/// One HTTP request on a fresh connection: (status, body text).
async fn request(
    state_dir: &Path,
    method: Method,
    uri: &str,
    body: String,
) -> Result<(StatusCode, String), AdminError> {
    let socket = state_dir.join(SOCKET_FILE);
    let secret_path = state_dir.join(SECRET_FILE);
    // Connect before reading the secret: "not running" is the likelier and clearer error.
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|source| AdminError::NotRunning {
            path: socket.clone(),
            source,
        })?;
    let secret = read_secret(&secret_path)?;
    let http = |source: Box<dyn std::error::Error + Send + Sync>| AdminError::Http {
        path: socket.clone(),
        source,
    };
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {secret}"))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(body))
        .map_err(|e| http(e.into()))?;
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream)).await?;
        let exchange = async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let bytes =
                axum::body::to_bytes(Body::new(response.into_body()), MAX_OUTPUT_BYTES).await?;
            // `sender` is dropped here, which lets `connection` finish.
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, bytes))
        };
        let (result, closed) = tokio::join!(exchange, connection);
        let (status, bytes) = result?;
        closed?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((
            status,
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    };
    let (status, text) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| AdminError::Timeout {
            path: socket.clone(),
            secs: TIMEOUT.as_secs(),
        })?
        .map_err(http)?;
    if status == StatusCode::UNAUTHORIZED {
        return Err(AdminError::Unauthorized { path: secret_path });
    }
    Ok((status, text))
}

fn read_secret(path: &Path) -> Result<String, AdminError> {
    let error = |source| AdminError::Secret {
        path: path.into(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(error)?;
    let secret = text.trim();
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(error(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an admin secret (hex digits expected)",
        )));
    }
    Ok(secret.to_owned())
}

/// The text to show for an error: a failed command's own output, else `error: ` and the
/// error's chain of causes.
fn report(error: &AdminError) -> String {
    if let AdminError::Command { output } = error {
        return output.trim_end().to_owned();
    }
    let mut text = format!("error: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
