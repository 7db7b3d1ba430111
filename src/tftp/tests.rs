//! Tests of the TFTP server: negotiation and netascii as pure functions, then [`serve`] on
//! 127.0.0.1:0 driven by a hand-written client over a `UdpSocket` and by `curl` (a real TFTP
//! client). Every network wait is bounded.

use std::collections::HashMap;
use std::process::Command;

use super::packet::{self, Mode, Packet};
use super::*;

/// Bound on any single wait for a packet that should arrive.
const WAIT: Duration = Duration::from_secs(5);

/// Defaults, but a timeout long enough that a slow (shared, loaded) test machine never sees a
/// retransmission the test did not ask for.
fn calm() -> TftpLimits {
    TftpLimits {
        timeout: Duration::from_secs(3),
        ..TftpLimits::default()
    }
}

fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn files() -> HashMap<&'static str, Vec<u8>> {
    HashMap::from([
        ("empty.cnf.xml", Vec::new()),
        ("512.bin", pattern(512, 1)),
        ("3k.bin", pattern(3072, 2)),
        // Seven full 1428-byte blocks and a short eighth.
        ("big.bin", pattern(1428 * 7 + 100, 3)),
        ("text.txt", b"line 1\nline 2\r\n".to_vec()),
    ])
}

struct Server {
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    async fn start(limits: TftpLimits) -> Self {
        Self::start_with(limits, files()).await
    }

    async fn start_with(limits: TftpLimits, files: HashMap<&'static str, Vec<u8>>) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let source: FileSource = Arc::new(move |name: &str| files.get(name).cloned());
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(serve(socket, source, limits, cancel.clone(), tasks.clone()));
        Self {
            addr,
            cancel,
            tasks,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// A minimal TFTP client: it remembers the server's TID from the first reply.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
    tid: Option<SocketAddr>,
}

impl Client {
    async fn new(server: SocketAddr) -> Self {
        Self {
            socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            tid: None,
        }
    }

    async fn rrq(&self, name: &str, options: &[(&str, &str)]) {
        let rrq = packet::request(false, name, Mode::Octet, options);
        self.socket.send_to(&rrq, self.server).await.unwrap();
    }

    async fn ack(&self, block: u16) {
        let tid = self.tid.expect("no TID yet");
        self.socket.send_to(&packet::ack(block), tid).await.unwrap();
    }

    /// The next datagram, as raw bytes; pins the TID on the first one.
    async fn recv(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let (len, from) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
            .await
            .expect("no reply within the wait")
            .unwrap();
        match self.tid {
            None => self.tid = Some(from),
            Some(tid) => assert_eq!(from, tid, "reply from another TID"),
        }
        buf.truncate(len);
        buf
    }

    /// Nothing arrives within `quiet`.
    async fn silent(&self, quiet: Duration) {
        let mut buf = [0u8; 2048];
        if let Ok(r) = tokio::time::timeout(quiet, self.socket.recv_from(&mut buf)).await {
            let (len, _) = r.unwrap();
            panic!("unexpected packet {:?}", packet::parse(&buf[..len]));
        }
    }

    async fn data(&mut self) -> (u16, Vec<u8>) {
        let bytes = self.recv().await;
        match packet::parse(&bytes) {
            Ok(Packet::Data { block, data }) => (block, data.to_vec()),
            other => panic!("expected DATA, got {other:?}"),
        }
    }

    async fn error(&mut self) -> (u16, String) {
        let bytes = self.recv().await;
        match packet::parse(&bytes) {
            Ok(Packet::Error { code, message }) => (code, message.into_owned()),
            other => panic!("expected ERROR, got {other:?}"),
        }
    }

    async fn oack(&mut self) -> Vec<(String, String)> {
        let bytes = self.recv().await;
        match packet::parse(&bytes) {
            Ok(Packet::Oack(o)) => o
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            other => panic!("expected OACK, got {other:?}"),
        }
    }

    /// Receives DATA from block `first` on, ACKing each, until a short block; checks numbering.
    async fn rest(&mut self, first: u16, blksize: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut want = first;
        loop {
            let (block, data) = self.data().await;
            assert_eq!(block, want);
            assert!(data.len() <= blksize);
            out.extend_from_slice(&data);
            self.ack(block).await;
            if data.len() < blksize {
                return out;
            }
            want = want.wrapping_add(1);
        }
    }
}

// ---- pure functions ----

#[test]
fn negotiation() {
    let limits = TftpLimits::default();
    let n = negotiate(&[], 10, &limits);
    assert_eq!(
        (n.blksize, n.timeout, n.oack.len()),
        (512, limits.timeout, 0)
    );

    let n = negotiate(
        &opts(&[
            ("blksize", "65464"),
            ("tsize", "0"),
            ("timeout", "3"),
            ("windowsize", "4"),
            ("blksize", "8"),
        ]),
        3072,
        &limits,
    );
    assert_eq!(n.blksize, 1428);
    assert_eq!(n.timeout, Duration::from_secs(3));
    assert_eq!(
        n.oack,
        [
            ("blksize", "1428".to_string()),
            ("tsize", "3072".to_string()),
            ("timeout", "3".to_string())
        ]
    );

    // An empty file's tsize is not acknowledged (curl refuses "tsize 0").
    assert!(
        negotiate(&opts(&[("tsize", "0")]), 0, &limits)
            .oack
            .is_empty()
    );

    let n = negotiate(&opts(&[("blksize", "100")]), 0, &limits);
    assert_eq!((n.blksize, n.oack[0].1.as_str()), (100, "100"));
    let n = negotiate(&opts(&[("blksize", "99999999999")]), 0, &limits);
    assert_eq!(n.blksize, 1428);

    // Out of range or unparsable: the option is dropped, so no OACK at all.
    for bad in [
        ("blksize", "7"),
        ("blksize", "x"),
        ("timeout", "0"),
        ("timeout", "256"),
        ("timeout", "-1"),
    ] {
        let n = negotiate(&opts(&[bad]), 0, &limits);
        assert!(n.oack.is_empty(), "{bad:?}");
        assert_eq!((n.blksize, n.timeout), (512, limits.timeout));
    }

    let tiny = TftpLimits {
        max_blksize: 0,
        ..limits
    };
    assert_eq!(negotiate(&opts(&[("blksize", "512")]), 0, &tiny).blksize, 8);
}

#[test]
fn netascii_translation() {
    assert_eq!(to_netascii(b"a\nb\rc\r\n"), b"a\r\nb\r\0c\r\0\r\n");
    assert_eq!(to_netascii(b""), b"");
}

#[test]
fn active_set() {
    let active = Active::default();
    let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let guard = active.claim(peer);
    assert!(matches!(guard, Claim::Granted(_)));
    assert!(matches!(active.claim(peer), Claim::Running));
    drop(guard);
    assert!(matches!(active.claim(peer), Claim::Granted(_)));
}

#[test]
fn one_client_ip_holds_a_bounded_share() {
    let active = Active::default();
    let held: Vec<Claim> = (0..MAX_TRANSFERS_PER_CLIENT)
        .map(|i| active.claim(SocketAddr::from(([10, 0, 0, 1], 6000 + i as u16))))
        .collect();
    assert!(held.iter().all(|c| matches!(c, Claim::Granted(_))));
    let one_more = SocketAddr::from(([10, 0, 0, 1], 7000));
    assert!(matches!(active.claim(one_more), Claim::TooMany));
    assert!(
        matches!(
            active.claim(SocketAddr::from(([10, 0, 0, 2], 7000))),
            Claim::Granted(_)
        ),
        "another client is not affected"
    );
    drop(held);
    assert!(matches!(active.claim(one_more), Claim::Granted(_)));
}

#[test]
fn long_timeouts_are_not_granted() {
    let limits = TftpLimits::default();
    let options = |t: &str| vec![("timeout".to_owned(), t.to_owned())];
    let n = negotiate(&options("5"), 100, &limits);
    assert_eq!(n.timeout, Duration::from_secs(5));
    let n = negotiate(&options("255"), 100, &limits);
    assert_eq!(
        n.timeout, limits.timeout,
        "RFC 2349's maximum is refused here"
    );
    assert!(n.oack.is_empty());
}

// ---- the hand-written client ----

#[tokio::test]
async fn plain_rrq_whole_blocks_end_with_an_empty_one() {
    let server = Server::start(calm()).await;
    let files = files();
    for (name, blocks) in [("512.bin", 2u16), ("3k.bin", 7), ("empty.cnf.xml", 1)] {
        let mut client = Client::new(server.addr).await;
        client.rrq(name, &[]).await;
        let got = client.rest(1, 512).await;
        assert_eq!(got, files[name], "{name}");
        assert_eq!(
            got.len() / 512 + 1,
            usize::from(blocks),
            "{name}: block count"
        );
        // The transfer socket is not the listening one (RFC 1350 TID).
        assert_ne!(client.tid, Some(server.addr));
        client.silent(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn options_are_acknowledged_and_used() {
    let server = Server::start(calm()).await;
    let mut client = Client::new(server.addr).await;
    client
        .rrq(
            "/big.bin",
            &[
                ("BLKSIZE", "1428"),
                ("tsize", "0"),
                ("timeout", "2"),
                ("x-unknown", "1"),
            ],
        )
        .await;
    let oack = client.oack().await;
    let want = files()["big.bin"].clone();
    assert_eq!(
        oack,
        [
            ("blksize".to_string(), "1428".to_string()),
            ("tsize".to_string(), want.len().to_string()),
            ("timeout".to_string(), "2".to_string()),
        ]
    );
    client.ack(0).await;
    let got = client.rest(1, 1428).await;
    assert_eq!(got, want);
}

#[tokio::test]
async fn blksize_is_clamped_and_unknown_options_get_no_oack() {
    let limits = TftpLimits {
        max_blksize: 1024,
        ..calm()
    };
    let server = Server::start(limits).await;
    let mut client = Client::new(server.addr).await;
    client.rrq("3k.bin", &[("blksize", "65464")]).await;
    assert_eq!(
        client.oack().await,
        [("blksize".to_string(), "1024".to_string())]
    );
    client.ack(0).await;
    assert_eq!(client.rest(1, 1024).await, files()["3k.bin"]);

    let mut client = Client::new(server.addr).await;
    client.rrq("3k.bin", &[("windowsize", "8")]).await;
    assert_eq!(client.rest(1, 512).await, files()["3k.bin"]);
}

#[tokio::test]
async fn netascii_mode_is_translated() {
    let server = Server::start(calm()).await;
    let mut client = Client::new(server.addr).await;
    let rrq = packet::request(false, "text.txt", Mode::Netascii, &[("tsize", "0")]);
    client.socket.send_to(&rrq, server.addr).await.unwrap();
    let want = b"line 1\r\nline 2\r\0\r\n".to_vec();
    assert_eq!(
        client.oack().await,
        [("tsize".to_string(), want.len().to_string())]
    );
    client.ack(0).await;
    assert_eq!(client.rest(1, 512).await, want);
}

#[tokio::test]
async fn lost_ack_retransmits_and_duplicates_are_ignored() {
    let limits = TftpLimits {
        timeout: Duration::from_millis(800),
        ..TftpLimits::default()
    };
    let server = Server::start(limits).await;
    let mut client = Client::new(server.addr).await;
    client.rrq("3k.bin", &[]).await;
    let first = client.data().await;
    assert_eq!(first.0, 1);
    // No ACK: the same block comes again after the timeout.
    assert_eq!(client.data().await, first);
    client.ack(1).await;
    let second = client.data().await;
    assert_eq!(second.0, 2);
    // A duplicate ACK 1 must not trigger a second DATA 2 (Sorcerer's Apprentice).
    client.ack(1).await;
    client.silent(Duration::from_millis(250)).await;
    client.ack(2).await;
    let mut got = first.1;
    got.extend(second.1);
    got.extend(client.rest(3, 512).await);
    assert_eq!(got, files()["3k.bin"]);
}

#[tokio::test]
async fn retries_run_out_and_free_the_slot() {
    let limits = TftpLimits {
        timeout: Duration::from_millis(100),
        retries: 2,
        max_transfers: 1,
        ..TftpLimits::default()
    };
    let server = Server::start(limits).await;
    let mut client = Client::new(server.addr).await;
    client.rrq("512.bin", &[]).await;
    // A client that never ACKed may be a spoofed victim: the first block goes out twice only.
    for _ in 0..2 {
        assert_eq!(client.data().await.0, 1);
    }
    client.silent(Duration::from_millis(500)).await;
    // One that ACKed gets every retry.
    let mut proven = Client::new(server.addr).await;
    proven.rrq("3k.bin", &[]).await;
    assert_eq!(proven.data().await.0, 1);
    proven.ack(1).await;
    for _ in 0..3 {
        assert_eq!(proven.data().await.0, 2);
    }
    proven.silent(Duration::from_millis(500)).await;
    // The one transfer slot is free again.
    let mut other = Client::new(server.addr).await;
    other.rrq("512.bin", &[]).await;
    assert_eq!(other.rest(1, 512).await, files()["512.bin"]);
}

#[tokio::test]
async fn oack_is_retransmitted_too() {
    let limits = TftpLimits {
        timeout: Duration::from_millis(200),
        ..TftpLimits::default()
    };
    let server = Server::start(limits).await;
    let mut client = Client::new(server.addr).await;
    client.rrq("512.bin", &[("tsize", "0")]).await;
    let first = client.oack().await;
    assert_eq!(client.oack().await, first);
    client.ack(0).await;
    assert_eq!(client.rest(1, 512).await, files()["512.bin"]);
}

#[tokio::test]
async fn write_requests_are_refused() {
    let server = Server::start(calm()).await;
    let mut client = Client::new(server.addr).await;
    let wrq = packet::request(
        true,
        "SEP001122334455.cnf.xml",
        Mode::Octet,
        &[("tsize", "10")],
    );
    client.socket.send_to(&wrq, server.addr).await.unwrap();
    assert_eq!(client.error().await, (2, "Access violation".to_string()));
}

#[tokio::test]
async fn unknown_file_mail_mode_and_junk() {
    let server = Server::start(calm()).await;
    let mut client = Client::new(server.addr).await;
    client
        .rrq("/SEPFFFFFFFFFFFF.cnf.xml", &[("tsize", "0")])
        .await;
    assert_eq!(client.error().await, (1, "File not found".to_string()));

    let mut client = Client::new(server.addr).await;
    let mail = packet::request(false, "3k.bin", Mode::Mail, &[] as &[(&str, &str)]);
    client.socket.send_to(&mail, server.addr).await.unwrap();
    assert_eq!(client.error().await.0, 4);

    // Junk, stray ACKs and unknown modes on the listening port get no reply (except the
    // well-formed request with an unknown mode, which gets ERROR 4).
    let client = Client::new(server.addr).await;
    for junk in [&b"\0\x04\0\x01"[..], b"\0\x09", b"", b"\0\x01x\0"] {
        client.socket.send_to(junk, server.addr).await.unwrap();
    }
    client.silent(Duration::from_millis(200)).await;
    let mut client = Client::new(server.addr).await;
    client
        .socket
        .send_to(b"\0\x01x\0binary\0", server.addr)
        .await
        .unwrap();
    assert_eq!(client.error().await.0, 4);
}

#[tokio::test]
async fn wrong_tid_gets_error_5_and_the_transfer_goes_on() {
    let server = Server::start(calm()).await;
    let mut client = Client::new(server.addr).await;
    client.rrq("3k.bin", &[]).await;
    let (block, first) = client.data().await;
    assert_eq!(block, 1);
    let tid = client.tid.unwrap();

    let mut intruder = Client::new(server.addr).await;
    intruder.tid = Some(tid);
    intruder.ack(1).await;
    assert_eq!(
        intruder.error().await,
        (5, "Unknown transfer ID".to_string())
    );

    client.ack(1).await;
    let mut got = first;
    got.extend(client.rest(2, 512).await);
    assert_eq!(got, files()["3k.bin"]);
}

#[tokio::test]
async fn client_error_or_data_ends_the_transfer() {
    let limits = TftpLimits {
        timeout: Duration::from_millis(200),
        ..TftpLimits::default()
    };
    let server = Server::start(limits).await;
    let mut client = Client::new(server.addr).await;
    client.rrq("3k.bin", &[("tsize", "0")]).await;
    client.oack().await;
    let tid = client.tid.unwrap();
    let refuse = packet::error(ErrorCode::OptionRefused, "no");
    client.socket.send_to(&refuse, tid).await.unwrap();
    // No retransmission of the OACK after the client's ERROR.
    client.silent(Duration::from_millis(500)).await;

    let mut client = Client::new(server.addr).await;
    client.rrq("3k.bin", &[]).await;
    client.data().await;
    client.ack(1).await;
    client.data().await;
    let tid = client.tid.unwrap();
    client
        .socket
        .send_to(&packet::data(1, b"x"), tid)
        .await
        .unwrap();
    assert_eq!(client.error().await.0, 4);
    client.silent(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn busy_server_answers_error_0() {
    let limits = TftpLimits {
        max_transfers: 1,
        ..calm()
    };
    let server = Server::start(limits).await;
    let mut first = Client::new(server.addr).await;
    first.rrq("3k.bin", &[]).await;
    let (_, block1) = first.data().await;

    let mut second = Client::new(server.addr).await;
    second.rrq("3k.bin", &[]).await;
    let (code, message) = second.error().await;
    assert_eq!(code, 0);
    assert!(message.contains("busy"), "{message}");
    // The client's own retransmitted RRQ is ignored while its transfer runs.
    first.rrq("3k.bin", &[]).await;
    first.silent(Duration::from_millis(200)).await;

    first.ack(1).await;
    let mut got = block1;
    got.extend(first.rest(2, 512).await);
    assert_eq!(got, files()["3k.bin"]);
}

#[tokio::test]
async fn block_numbers_roll_over() {
    // 65,537 blocks of 8 bytes plus a short one: block numbers 1..=65535, 0, 1, 2.
    let len = 8 * 65_537 + 3;
    let big = pattern(len, 4);
    let server = Server::start_with(calm(), HashMap::from([("huge.bin", big.clone())])).await;
    let mut client = Client::new(server.addr).await;
    client.rrq("huge.bin", &[("blksize", "8")]).await;
    client.oack().await;
    client.ack(0).await;
    let got = client.rest(1, 8).await;
    assert_eq!(got.len(), big.len());
    assert!(got == big);
}

#[tokio::test]
async fn cancel_stops_listener_and_transfers() {
    let server = Server::start(calm()).await;
    let mut client = Client::new(server.addr).await;
    client.rrq("3k.bin", &[]).await;
    client.data().await;
    server.cancel.cancel();
    server.tasks.close();
    tokio::time::timeout(WAIT, server.tasks.wait())
        .await
        .expect("tasks did not stop");
    let (code, message) = client.error().await;
    assert_eq!((code, message.as_str()), (0, "Server shutting down"));
    // The listening port is free again.
    UdpSocket::bind(server.addr).await.unwrap();
}

// ---- a real client ----

/// Runs curl against the server; `None` when curl fails (its exit code is checked by callers).
async fn curl(server: SocketAddr, name: &str, extra: &[&str]) -> Result<Vec<u8>, i32> {
    let version = Command::new("curl").arg("-V").output();
    let has_tftp = version.as_ref().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.starts_with("Protocols:") && l.split_whitespace().any(|p| p == "tftp"))
    });
    assert!(
        has_tftp,
        "these tests need curl with TFTP support (Debian package `curl`); `curl -V` said {version:?}"
    );
    let url = format!("tftp://{server}/{name}");
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--max-time", "10"])
        .args(extra)
        .arg(&url);
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("curl did not finish")
    .unwrap()
    .unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_downloads_match() {
    let server = Server::start(calm()).await;
    let files = files();
    for name in ["empty.cnf.xml", "512.bin", "3k.bin", "big.bin"] {
        assert_eq!(
            curl(server.addr, name, &[]).await.as_ref(),
            Ok(&files[name]),
            "{name}"
        );
        assert_eq!(
            curl(server.addr, name, &["--tftp-blksize", "1428"])
                .await
                .as_ref(),
            Ok(&files[name]),
            "{name} at blksize 1428"
        );
    }
    // Asking for more than the server's maximum: the OACK's smaller value is used.
    assert_eq!(
        curl(server.addr, "big.bin", &["--tftp-blksize", "8192"])
            .await
            .as_ref(),
        Ok(&files["big.bin"])
    );
    assert_eq!(
        curl(server.addr, "big.bin", &["--tftp-no-options"])
            .await
            .as_ref(),
        Ok(&files["big.bin"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_not_found_and_refused_upload() {
    let server = Server::start(calm()).await;
    // CURLE_TFTP_NOTFOUND
    assert_eq!(curl(server.addr, "nope.cnf.xml", &[]).await, Err(68));
    let upload = std::env::temp_dir().join(format!("tftp-upload-{}", std::process::id()));
    std::fs::write(&upload, b"data").unwrap();
    let path = upload.to_string_lossy().into_owned();
    let result = curl(server.addr, "up.bin", &["--upload-file", &path]).await;
    let _ = std::fs::remove_file(&upload);
    // CURLE_TFTP_PERM: "Permission problem on TFTP server".
    assert_eq!(result, Err(69));
}
