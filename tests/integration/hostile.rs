//! Hostile clients: one address opening connections on every listener (the per-source cap), a
//! TLS client that never sends its ClientHello while the daemon shuts down, and a UDP flood on
//! 5060 while a Jabber client refreshes its registration over TLS on the OAuth port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sip_oauth_registrar::cluster::NodeId;
use sip_oauth_registrar::net::ListenerKind::{OAuth, Sip};
use sip_oauth_registrar::net::Transport::{Tcp, Tls, Udp};
use sip_oauth_registrar::net::WebPort;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::*;

fn options() -> Vec<u8> {
    b"OPTIONS sip:10.10.10.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK1\r\n\
      From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x@y\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        .to_vec()
}

/// A TCP connection from `source` (any 127/8 address is loopback on Linux).
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server closes `tcp` without a byte, well before any timeout of its own.
async fn closed_unanswered(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn the_per_source_cap_spans_sip_and_http_listeners_and_refuses_before_tls() {
    let s = TestServer::start(&lab_with(&[(
        "max_connections_per_source = 256",
        "max_connections_per_source = 3",
    )]))
    .await;
    let sip = s.addr(0, Sip, Tcp);
    let http = s
        .server()
        .web_addr(NodeId(0), WebPort::TftpHttp)
        .expect("6970");
    let oauth = s.addr(0, OAuth, Tls);

    // Three connections from 127.0.0.1 on two listeners, each seen answering, so all three
    // were admitted before the fourth is opened.
    let mut a = Client::tcp(sip).await;
    let mut b = Client::tcp(sip).await;
    assert_eq!(a.request(&options()).await.status, 200);
    assert_eq!(b.request(&options()).await.status, 200);
    let mut web = TcpStream::connect(http).await.unwrap();
    web.write_all(b"GET /nothing.cnf.xml HTTP/1.1\r\nHost: lab\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, web.read_exact(&mut head))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    assert!(head.starts_with(b"HTTP/1.1 "), "{head:?}");

    // The fourth, on the TLS OAuth port: closed before the handshake. An admitted one would
    // wait for our ClientHello up to the 5 s handshake timeout.
    let mut fourth = TcpStream::connect(oauth).await.unwrap();
    let t = Instant::now();
    assert!(closed_unanswered(&mut fourth).await, "closed at once");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        tls_connect(oauth, s.lab_ca().cert_pem(), None)
            .await
            .is_err(),
        "no TLS for a fifth either"
    );
    let mut sixth = Client::tcp(sip).await;
    let _ = sixth.try_send(&options()).await;
    let (got, _) = sixth.read_to_close().await;
    assert!(got.is_empty(), "nor SIP on the plain port");

    // Another source is not affected.
    let mut other = Client::Tcp(connect_from("127.0.0.3", sip).await, Vec::new());
    assert_eq!(other.request(&options()).await.status, 200);

    // A closed connection gives its place back.
    drop(a);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut again = TcpStream::connect(sip).await.unwrap();
        let _ = again.write_all(&options()).await;
        let mut status = [0u8; 11];
        let read = tokio::time::timeout(Duration::from_secs(1), again.read_exact(&mut status));
        if let Ok(Ok(_)) = read.await {
            assert_eq!(&status, b"SIP/2.0 200");
            break;
        }
        assert!(Instant::now() < deadline, "the freed place is reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.request(&options()).await.status, 200, "b was never cut");
}

#[tokio::test]
async fn a_handshake_in_progress_does_not_hold_shutdown() {
    // The lab's 5 s handshake timeout, longer than the shutdown deadline below.
    let s = TestServer::lab().await;
    assert_eq!(
        s.settings.limits.tls_handshake_timeout,
        Duration::from_secs(5)
    );
    let mut silent = TcpStream::connect(s.addr(0, OAuth, Tls)).await.unwrap();
    // The connection is accepted and its task is waiting for a ClientHello.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    assert!(
        s.shutdown(Duration::from_secs(2)).await,
        "every task ended before the 2 s deadline"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        closed_unanswered(&mut silent).await,
        "the silent client is closed"
    );
}

/// What the flood sends: REGISTERs for a DN that exists, and garbage.
fn flood_datagram(i: u64) -> Vec<u8> {
    if i % 4 == 3 {
        return format!("\x16\x03\x01 not sip {i}\r\n\r\n").into_bytes();
    }
    format!(
        "REGISTER sip:10.10.10.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKflood{i}\r\n\
         From: <sip:3001@10.10.10.1>;tag=f{i}\r\nTo: <sip:3001@10.10.10.1>\r\n\
         Call-ID: flood-{i}@127.0.0.1\r\nCSeq: {i} REGISTER\r\n\
         Contact: <sip:3001@127.0.0.1:5060>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Flood threads (plain OS threads, outside the runtime the daemon runs on): each blasts
/// datagrams at `to` as fast as the socket takes them until `stop` or for at most 20 s, and
/// drains the answers it gets.
fn flood(
    to: SocketAddr,
    threads: u64,
    stop: Arc<AtomicBool>,
) -> (
    Vec<std::thread::JoinHandle<()>>,
    Arc<AtomicU64>,
    Arc<AtomicU64>,
) {
    let sent = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let handles = (0..threads)
        .map(|t| {
            let (stop, sent, answered) = (stop.clone(), sent.clone(), answered.clone());
            std::thread::spawn(move || {
                let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.connect(to).unwrap();
                socket.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 2048];
                let until = Instant::now() + Duration::from_secs(20);
                let mut i = t << 40;
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    // A full send buffer (EAGAIN) only means the kernel is dropping for us.
                    if socket.send(&flood_datagram(i)).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                    while socket.recv(&mut buf).is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    (handles, sent, answered)
}

// One runtime thread for the daemon and this client alike: unless the UDP listener yields
// under a flood, the TLS connection is not served at all.
#[tokio::test]
async fn a_udp_flood_on_5060_does_not_stop_tls_refreshes_on_the_oauth_port() {
    let s = TestServer::lab().await;
    let token = s.token("rado");
    let mut jabber = Client::tls(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None).await;
    let mut reg = Register::jabber("CSFrado", "1010");
    assert_eq!(jabber.register(&reg).await.status, 407);
    reg = reg.next().bearer(&token);
    assert_eq!(jabber.register(&reg).await.status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    // Two threads: enough to outrun one runtime thread, and the other tests of this binary,
    // running alongside on a small machine, keep some CPU.
    let (threads, sent, answered) = flood(s.addr(0, Sip, Udp), 2, stop.clone());
    // Stops the flood also when an assertion below fails.
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let _stop_guard = StopOnDrop(stop.clone());
    // Let the flood fill the socket buffer before the first refresh.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut slowest = Duration::ZERO;
    let mut sent_before_last = 0;
    for refresh in 0..20 {
        // Read before the pause, so the window in which the flood must show progress is
        // 100 ms plus the refresh, not the refresh alone.
        sent_before_last = sent.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
        reg = reg.next().bearer(&token);
        let t = Instant::now();
        // A generous liveness deadline, not a latency target.
        let r = tokio::time::timeout(WAIT, jabber.register(&reg))
            .await
            .unwrap_or_else(|_| panic!("refresh {refresh} unanswered within {WAIT:?}"));
        assert_eq!(r.status, 200, "refresh {refresh}: {}", r.raw);
        slowest = slowest.max(t.elapsed());
    }
    let sent_at_end = sent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let answered = answered.load(Ordering::Relaxed);
    eprintln!(
        "flood: {sent_at_end} datagrams sent, {answered} answered; 20 TLS refreshes, slowest \
         {slowest:?}"
    );
    assert!(
        sent_at_end > sent_before_last,
        "the flood was still on during the last refresh"
    );
    // The flood was real: the listener answered a good part of it while the refreshes went on.
    assert!(
        answered > 1_000,
        "{answered} of {sent_at_end} flood datagrams answered"
    );
}
