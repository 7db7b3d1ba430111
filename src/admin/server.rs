//! The daemon's side of the admin interface: an axum router (`POST /command`, `GET /ping`)
//! served over HTTP/1.1 on the Unix socket `<state_dir>/admin.sock`.
//!
//! Authentication: [`bind`] writes a fresh random secret to `<state_dir>/admin.secret` (mode
//! 0600, written atomically) and every request must present it as `Authorization: Bearer
//! <secret>`, compared in constant time; otherwise `401`. The socket itself is mode 0600 and
//! the state directory is created 0700, so the file system already keeps other users out; the
//! secret also keeps out a process that can reach the socket but not read the state directory
//! (e.g. a socket path passed into a container).
//!
//! Commands run one at a time (UCM's CLI is sequential too, and two key regenerations racing
//! would leave the reported hash and the persisted key disagreeing), on the blocking pool
//! because key generation and file writes block.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;

use super::{AdminError, Operations, Outcome, SECRET_FILE, SOCKET_FILE};

/// A bound admin socket, ready to [`serve`](Self::serve).
pub struct AdminListener {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket we bound, so shutdown removes it only if it is still ours.
    identity: (u64, u64),
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AdminListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminListener")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Binds `<state_dir>/admin.sock` (removing a stale socket left by a dead daemon, refusing if
/// another daemon answers on it), chmod 0600, writes a fresh random secret to
/// `<state_dir>/admin.secret` (0600, atomically) that clients must present, and returns the
/// listener; the caller spawns [`AdminListener::serve`] on its task tracker.
///
/// Two daemons starting at the same instant can both find no socket; the later `bind(2)` then
/// fails with "address in use", which is reported as [`AdminError::Bind`].
pub async fn bind(state_dir: &Path, ops: Arc<dyn Operations>) -> Result<AdminListener, AdminError> {
    create_private_dir(state_dir)?;
    let path = state_dir.join(SOCKET_FILE);
    remove_stale_socket(&path).await?;
    let listener = UnixListener::bind(&path).map_err(|source| AdminError::Bind {
        path: path.clone(),
        source,
    })?;
    let meta = std::fs::metadata(&path)
        .and_then(|m| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            Ok(m)
        })
        .map_err(|source| AdminError::Bind {
            path: path.clone(),
            source,
        })?;
    let secret = random_secret()?;
    let secret_path = state_dir.join(SECRET_FILE);
    crate::pki::write_private_file(&secret_path, format!("{secret}\n").as_bytes()).map_err(
        |source| AdminError::Io {
            path: secret_path,
            source,
        },
    )?;
    Ok(AdminListener {
        listener,
        identity: (meta.dev(), meta.ino()),
        path,
        shared: Arc::new(Shared {
            ops,
            secret,
            one_at_a_time: tokio::sync::Mutex::new(()),
        }),
    })
}

impl AdminListener {
    /// Serves until `cancel`; a request in flight then has a short drain time to finish. Removes the
    /// socket on the way out (if it is still the one bound here), so the cli reports "not
    /// running" rather than a refused connection.
    pub async fn serve(self, cancel: CancellationToken) {
        let Self {
            listener,
            path,
            identity,
            shared,
        } = self;
        let router = Router::new()
            .route("/command", post(command))
            .route("/ping", get(ping))
            .layer(DefaultBodyLimit::max(MAX_COMMAND_BYTES))
            // Outermost: nothing, not even the body, is read before the secret is checked.
            .route_layer(middleware::from_fn_with_state(shared.clone(), authenticate))
            .with_state(shared);
        let serving = axum::serve(listener, router)
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
            .into_future();
        let deadline = async {
            cancel.cancelled().await;
            tokio::time::sleep(DRAIN).await;
        };
        tokio::select! {
            result = serving => {
                if let Err(error) = result {
                    tracing::warn!(%error, path = %path.display(), "admin interface stopped");
                }
            }
            () = deadline => {
                tracing::debug!(path = %path.display(), "admin connections did not close in time");
            }
        }
        if std::fs::metadata(&path).is_ok_and(|m| (m.dev(), m.ino()) == identity) {
            let _ = std::fs::remove_file(&path);
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

struct Shared {
    ops: Arc<dyn Operations>,
    /// 64 hex digits.
    secret: String,
    /// Held for the whole of a command (see the module docs).
    one_at_a_time: tokio::sync::Mutex<()>,
}

/// How long a command in flight may take to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(2);
/// A command line is short; `run sql` is the longest and still far below this.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

async fn authenticate(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if authorized(request.headers(), &shared.secret) {
        next.run(request).await
    } else {
        unauthorized()
    }
}

async fn command(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let _turn = shared.one_at_a_time.lock().await;
    let ops = shared.ops.clone();
    let line = body.clone();
    let outcome = match tokio::task::spawn_blocking(move || super::execute(&*ops, &line)).await {
        Ok(o) => o,
        Err(error) => {
            tracing::error!(%error, "admin command panicked");
            Outcome::Failed(format!("{}\ninternal error\n", super::UNSUCCESSFUL))
        }
    };
    let (status, text) = match outcome {
        Outcome::Done(t) => (StatusCode::OK, t),
        Outcome::Invalid(t) => (StatusCode::BAD_REQUEST, t),
        Outcome::Failed(t) => (StatusCode::INTERNAL_SERVER_ERROR, t),
    };
    tracing::info!(
        command = body.trim(),
        status = status.as_u16(),
        "admin command"
    );
    (status, [(header::CONTENT_TYPE, TEXT)], text).into_response()
}

async fn ping() -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, TEXT)], "ok\n").into_response()
}

const TEXT: &str = "text/plain; charset=utf-8";

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Bearer"),
            (header::CONTENT_TYPE, TEXT),
        ],
        "the admin secret is missing or wrong\n",
    )
        .into_response()
}

fn authorized(headers: &HeaderMap, secret: &str) -> bool {
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    // Constant time, so the time taken does not tell how many leading bytes matched. The
    // length is not secret (always 64).
    aws_lc_rs::constant_time::verify_slices_are_equal(presented, secret.as_bytes()).is_ok()
}

/// A socket file with nobody behind it is what a killed daemon leaves: remove it. One that
/// answers belongs to a live daemon: refuse. Anything that is not a socket: leave it alone.
async fn remove_stale_socket(path: &Path) -> Result<(), AdminError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(AdminError::Bind {
                path: path.into(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(AdminError::NotSocket { path: path.into() });
    }
    match tokio::net::UnixStream::connect(path).await {
        Ok(_) => Err(AdminError::InUse { path: path.into() }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale admin socket");
            std::fs::remove_file(path).map_err(|source| AdminError::Bind {
                path: path.into(),
                source,
            })
        }
        Err(source) => Err(AdminError::Bind {
            path: path.into(),
            source,
        }),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), AdminError> {
    crate::pki::create_private_dir(dir).map_err(|source| AdminError::Io {
        path: dir.into(),
        source,
    })
}

/// 32 bytes from the operating system's CSPRNG (through the crypto provider we already
/// carry), as 64 hex digits.
fn random_secret() -> Result<String, AdminError> {
    let mut bytes = [0u8; 32];
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| AdminError::Io {
            path: PathBuf::from("<secure random>"),
            source: io::Error::other("the system random number generator failed"),
        })?;
    Ok(hex::encode(bytes))
}
