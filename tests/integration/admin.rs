//! The admin interface end to end: the listener in-process on a temporary state directory with
//! a fake [`Operations`], the client API over the real Unix socket, and the real binary's `cli`
//! (`-c`, interactive through a pipe, and with no daemon).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sip_oauth_registrar::admin::{
    self, AdminError, AdminListener, AuthzKey, Operations, SECRET_FILE, SOCKET_FILE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_sip-oauth-registrar");

/// Records regenerations; each key's hash is 64 hex digits that change on every regen.
#[derive(Default)]
struct FakeOps {
    calls: Mutex<Vec<AuthzKey>>,
}

impl FakeOps {
    fn hash(key: AuthzKey, generation: usize) -> String {
        let digit = if key == AuthzKey::Signing { 'a' } else { 'e' };
        format!("{}{generation:04}", digit.to_string().repeat(60))
    }

    fn generation(&self, key: AuthzKey) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|k| **k == key)
            .count()
    }
}

impl Operations for FakeOps {
    fn regen_key(&self, key: AuthzKey) -> Result<String, String> {
        self.calls.lock().unwrap().push(key);
        Ok(Self::hash(key, self.generation(key)))
    }

    fn key_hash(&self, key: AuthzKey) -> String {
        Self::hash(key, self.generation(key))
    }
}

/// A listener serving on `dir` until the returned token is cancelled.
struct Running {
    ops: Arc<FakeOps>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start(dir: &Path) -> Running {
    let ops = Arc::new(FakeOps::default());
    let listener: AdminListener = admin::bind(dir, ops.clone()).await.unwrap();
    assert_eq!(listener.path(), dir.join(SOCKET_FILE));
    let cancel = CancellationToken::new();
    let task = tokio::spawn(listener.serve(cancel.clone()));
    Running { ops, cancel, task }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("serve returns after cancel")
            .unwrap();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs the real binary off the async runtime (it blocks).
async fn cli(state: &Path, args: &[&str], stdin: &str) -> Output {
    let state = state.to_owned();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .arg("--state-dir")
            .arg(&state)
            .arg("cli")
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The child may exit without reading (no daemon): a broken pipe is fine.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn show_and_regen_through_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    admin::ping(dir.path()).await.unwrap();

    let out = admin::run_command(dir.path(), "show key authz signing")
        .await
        .unwrap();
    assert_eq!(
        out,
        format!(
            "Signing key hash: {}\n",
            FakeOps::hash(AuthzKey::Signing, 0)
        )
    );

    let out = admin::run_command(dir.path(), "SET key regen authz signing")
        .await
        .unwrap();
    let new = FakeOps::hash(AuthzKey::Signing, 1);
    assert!(
        out.starts_with("Signing key regenerated successfully.\n"),
        "{out}"
    );
    assert!(
        out.ends_with(&format!("Signing key hash: {new}\n")),
        "{out}"
    );
    assert_eq!(*running.ops.calls.lock().unwrap(), [AuthzKey::Signing]);

    let out = admin::run_command(dir.path(), "set key regen authz encryption")
        .await
        .unwrap();
    assert!(
        out.ends_with(&format!(
            "Encryption key hash: {}\n",
            FakeOps::hash(AuthzKey::Encryption, 1)
        )),
        "{out}"
    );
    let out = admin::run_command(dir.path(), "show key authz signing")
        .await
        .unwrap();
    assert!(out.contains(&new), "{out}");

    let Err(AdminError::Command { output }) =
        admin::run_command(dir.path(), "show key authz").await
    else {
        panic!("an incomplete command is an error")
    };
    assert!(
        output.starts_with("Executed command unsuccessfully\nIncomplete command"),
        "{output}"
    );
    assert!(output.contains("show key authz encryption"), "{output}");
    running.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_secret_is_401() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    let secret_path = dir.path().join(SECRET_FILE);
    let secret = std::fs::read_to_string(&secret_path).unwrap();
    assert_eq!(secret.trim().len(), 64);

    // Same length, one digit different.
    let mut wrong = secret.trim().to_owned().into_bytes();
    wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
    std::fs::write(&secret_path, &wrong).unwrap();
    let err = admin::run_command(dir.path(), "show key authz signing")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AdminError::Unauthorized { path } if *path == secret_path),
        "{err:?}"
    );
    assert!(err.to_string().contains("401"), "{err}");

    // No Authorization header at all, by hand over the socket.
    let mut stream = tokio::net::UnixStream::connect(dir.path().join(SOCKET_FILE))
        .await
        .unwrap();
    stream.write_all(
        b"POST /command HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nhelp",
    )
    .await
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(running.ops.calls.lock().unwrap().is_empty());
    running.stop().await;
}

#[tokio::test]
async fn socket_and_secret_are_private_and_secret_is_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let running = start(&state).await;
    assert_eq!(mode(&state.join(SOCKET_FILE)), 0o600);
    assert_eq!(mode(&state.join(SECRET_FILE)), 0o600);
    assert_eq!(mode(&state), 0o700, "a new state directory is private");
    let first = std::fs::read_to_string(state.join(SECRET_FILE)).unwrap();
    running.stop().await;
    assert!(
        !state.join(SOCKET_FILE).exists(),
        "the socket is removed on shutdown"
    );

    let running = start(&state).await;
    let second = std::fs::read_to_string(state.join(SECRET_FILE)).unwrap();
    assert_ne!(first, second, "every start writes a new secret");
    let leftovers: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    running.stop().await;
}

#[tokio::test]
async fn stale_socket_is_replaced_live_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(SOCKET_FILE);
    // What a killed daemon leaves: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let running = start(dir.path()).await;
    admin::ping(dir.path()).await.unwrap();

    let err = admin::bind(dir.path(), Arc::new(FakeOps::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::InUse { .. }), "{err:?}");
    assert!(err.to_string().contains("admin.sock"), "{err}");
    // The refused bind left the first daemon's socket and secret working.
    admin::run_command(dir.path(), "show key authz encryption")
        .await
        .unwrap();
    running.stop().await;

    // Something that is not a socket is never removed.
    std::fs::write(&path, "not a socket").unwrap();
    let err = admin::bind(dir.path(), Arc::new(FakeOps::default()))
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::NotSocket { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
}

#[tokio::test]
async fn cancel_stops_serving() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;
    admin::ping(dir.path()).await.unwrap();
    running.stop().await;
    let err = admin::run_command(dir.path(), "show key authz signing")
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::NotRunning { .. }), "{err:?}");
}

#[tokio::test]
async fn binary_cli_dash_c() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;

    let out = cli(dir.path(), &["-c", "show key authz signing"], "").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "Signing key hash: {}\n",
            FakeOps::hash(AuthzKey::Signing, 0)
        )
    );

    // `-c` does not ask for confirmation.
    let out = cli(dir.path(), &["-c", "set key regen authz encryption"], "").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("Encryption key regenerated successfully."),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(*running.ops.calls.lock().unwrap(), [AuthzKey::Encryption]);

    let out = cli(dir.path(), &["-c", "show version active"], "").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("Executed command unsuccessfully\n"),
        "{err}"
    );
    assert!(err.contains("set key regen authz signing"), "{err}");

    std::fs::write(dir.path().join(SECRET_FILE), "00\n").unwrap();
    let out = cli(dir.path(), &["-c", "show key authz signing"], "").await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("401") && err.contains(SECRET_FILE), "{err}");
    running.stop().await;
}

#[tokio::test]
async fn binary_cli_interactive_through_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path()).await;

    let out = cli(dir.path(), &[], "show key authz signing\nquit\n").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout,
        format!(
            "admin:show key authz signing\nSigning key hash: {}\nadmin:quit\n",
            FakeOps::hash(AuthzKey::Signing, 0)
        )
    );

    // Regeneration asks first: `no` cancels, `yes` runs; end of input leaves the prompt.
    let input = "set key regen authz signing\nno\nSet Key Regen Authz Signing\nyes\nhelp\n";
    let out = cli(dir.path(), &[], input).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout.matches("Do you want to continue? (yes/no)").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("Command cancelled."), "{stdout}");
    assert!(
        stdout.contains("Signing key regenerated successfully."),
        "{stdout}"
    );
    assert!(stdout.contains("Supported commands:"), "{stdout}");
    assert!(stdout.ends_with("admin:\n"), "{stdout}");
    assert_eq!(*running.ops.calls.lock().unwrap(), [AuthzKey::Signing]);
    running.stop().await;
}

#[tokio::test]
async fn binary_cli_without_a_daemon_exits_1_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join(SOCKET_FILE);
    for args in [&["-c", "show key authz signing"][..], &[]] {
        let out = cli(dir.path(), args, "show key authz signing\n").await;
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("not running"), "{err}");
        assert!(err.contains(&socket.display().to_string()), "{err}");
        assert!(
            !text(&out.stdout).contains("admin:"),
            "no prompt without a daemon"
        );
    }
}
