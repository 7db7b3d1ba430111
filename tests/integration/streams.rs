//! Stream transport behaviour: framing, RFC 5626 keep-alives, limits (message size,
//! connections, idle time), hostile bytes, and graceful shutdown.

use std::time::Duration;

use sip_oauth_registrar::net::ListenerKind::{OAuth, Sip};
use sip_oauth_registrar::net::Transport::{Tcp, Tls, Udp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

fn options() -> Vec<u8> {
    b"OPTIONS sip:10.10.10.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK1\r\n\
      From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x@y\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        .to_vec()
}

#[tokio::test]
async fn crlf_ping_gets_pong_and_back_to_back_and_split_messages_are_framed() {
    let s = TestServer::lab().await;
    let mut tcp = TcpStream::connect(s.addr(0, Sip, Tcp)).await.unwrap();
    tcp.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");

    let mut two = options();
    two.extend_from_slice(&options());
    tcp.write_all(&two).await.unwrap();
    let mut c = Client::Tcp(tcp, Vec::new());
    assert_eq!(c.recv().await.status, 200);
    assert_eq!(c.recv().await.status, 200);

    let msg = options();
    let (a, b) = msg.split_at(37);
    c.send(a).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.send(b).await;
    assert_eq!(c.recv().await.status, 200);
}

#[tokio::test]
async fn tls_keepalive_ping_on_the_oauth_port() {
    let s = TestServer::lab().await;
    let mut tls = tls_connect(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None)
        .await
        .unwrap();
    tls.write_all(b"\r\n\r\n").await.unwrap();
    let mut pong = [0u8; 2];
    tokio::time::timeout(WAIT, tls.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"\r\n");
}

#[tokio::test]
async fn oversize_and_garbage_close_the_connection_and_the_daemon_lives_on() {
    let s = TestServer::start(&lab_with(&[(
        "max_message_bytes = 65536",
        "max_message_bytes = 4096",
    )]))
    .await;
    let addr = s.addr(0, Sip, Tcp);

    let mut c = Client::tcp(addr).await;
    let mut huge = options();
    let at = huge.len() - 4;
    huge.splice(
        at..at,
        format!("\r\nX-Pad: {}", "a".repeat(8000)).into_bytes(),
    );
    c.send(&huge).await;
    let (got, _) = c.read_to_close().await;
    assert!(got.is_empty(), "closed without a reply");

    let mut c = Client::tcp(addr).await;
    c.send(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 999999\r\n\r\n")
        .await;
    let (got, _) = c.read_to_close().await;
    assert!(got.is_empty());

    let mut c = Client::tcp(addr).await;
    c.send(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).await;
    let _ = c.read_to_close().await;

    // Still serving, on every transport.
    assert_eq!(
        Client::tcp(addr).await.request(&options()).await.status,
        200
    );
    assert_eq!(
        Client::udp(s.addr(0, Sip, Udp))
            .await
            .request(&options())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn too_many_headers_is_closed() {
    let s = TestServer::start(&lab_with(&[("max_headers = 64", "max_headers = 16")])).await;
    let mut c = Client::tcp(s.addr(0, Sip, Tcp)).await;
    let mut m = options();
    let at = m.len() - 4;
    let extra: String = (0..20).map(|i| format!("\r\nX-H{i}: v")).collect();
    m.splice(at..at, extra.into_bytes());
    c.send(&m).await;
    let (got, _) = c.read_to_close().await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn connection_limit_and_idle_timeout() {
    let s = TestServer::start(&lab_with(&[
        (
            "max_connections_per_listener = 10000",
            "max_connections_per_listener = 2",
        ),
        (
            "keepalive_interval_secs = 120",
            "keepalive_interval_secs = 1",
        ),
        ("min_expires_secs = 60", "min_expires_secs = 1"),
        ("idle_timeout_secs = 300", "idle_timeout_secs = 2"),
    ]))
    .await;
    let addr = s.addr(0, Sip, Tcp);
    let mut a = Client::tcp(addr).await;
    let mut b = Client::tcp(addr).await;
    assert_eq!(a.request(&options()).await.status, 200);
    assert_eq!(b.request(&options()).await.status, 200);
    // Without the limit this request would be answered before the idle timeout closes it.
    let mut third = Client::tcp(addr).await;
    let _ = third.try_send(&options()).await;
    let (got, _) = third.read_to_close().await;
    assert!(got.is_empty(), "a third connection is closed unanswered");

    // Idle connections are closed after idle_timeout_secs, freeing their permits.
    let (_, _) = a.read_to_close().await;
    let (_, _) = b.read_to_close().await;
    let mut fourth = Client::tcp(addr).await;
    assert_eq!(fourth.request(&options()).await.status, 200);
}

#[tokio::test]
async fn tls_handshake_timeout_closes_silent_clients() {
    let s = TestServer::start(&lab_with(&[(
        "tls_handshake_timeout_ms = 5000",
        "tls_handshake_timeout_ms = 300",
    )]))
    .await;
    let mut tcp = TcpStream::connect(s.addr(0, OAuth, Tls)).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .expect("closed before WAIT");
    assert!(matches!(n, Ok(0) | Err(_)));
}

#[tokio::test]
async fn graceful_shutdown_frees_every_port() {
    let s = TestServer::lab().await;
    let addrs: Vec<_> = s
        .server()
        .listeners()
        .iter()
        .map(|l| (l.addr, l.transport))
        .collect();
    let mut open = Client::tcp(s.addr(0, Sip, Tcp)).await;
    assert_eq!(open.request(&options()).await.status, 200);
    assert!(
        s.shutdown(Duration::from_secs(2)).await,
        "all tasks ended in time"
    );
    let (_, _) = open.read_to_close().await;
    for (addr, transport) in addrs {
        match transport {
            Udp => drop(
                tokio::net::UdpSocket::bind(addr)
                    .await
                    .expect("UDP port free"),
            ),
            _ => drop(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("TCP port free"),
            ),
        }
    }
}

#[tokio::test]
async fn a_message_trickled_byte_by_byte_is_cut_off_at_the_message_timeout() {
    let s = TestServer::start(&lab_with(&[
        ("message_timeout_ms = 10000", "message_timeout_ms = 500"),
        (
            "keepalive_interval_secs = 120",
            "keepalive_interval_secs = 1",
        ),
        ("min_expires_secs = 60", "min_expires_secs = 1"),
        ("idle_timeout_secs = 300", "idle_timeout_secs = 2"),
    ]))
    .await;
    let mut tcp = TcpStream::connect(s.addr(0, Sip, Tcp)).await.unwrap();
    let msg = options();
    let started = std::time::Instant::now();
    let mut closed = false;
    // One byte every 100 ms never trips the 2 s idle timeout; the 500 ms message deadline does.
    for b in msg.iter().take(30) {
        if tcp.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "connection closed before the message completed");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "by the message deadline, not the idle one"
    );
}

#[tokio::test]
async fn process_wide_connection_limit_spans_listeners_and_nodes() {
    let s = TestServer::start(&lab_with(&[(
        "max_connections = 20000",
        "max_connections = 2",
    )]))
    .await;
    let mut a = Client::tcp(s.addr(0, Sip, Tcp)).await;
    let mut b = Client::tcp(s.addr(1, Sip, Tcp)).await;
    assert_eq!(a.request(&options()).await.status, 200);
    assert_eq!(b.request(&options()).await.status, 200);
    // A third connection, on yet another listener, is over the process budget.
    let mut c = Client::tcp(s.addr(1, Sip, Tcp)).await;
    let _ = c.try_send(&options()).await;
    let (got, _) = c.read_to_close().await;
    assert!(got.is_empty(), "closed unanswered");
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = Client::tcp(s.addr(0, Sip, Tcp)).await;
    assert_eq!(
        d.request(&options()).await.status,
        200,
        "a freed permit is reused"
    );
}

#[tokio::test]
async fn the_message_clock_restarts_with_each_message_on_a_busy_connection() {
    let s = TestServer::start(&lab_with(&[(
        "message_timeout_ms = 10000",
        "message_timeout_ms = 400",
    )]))
    .await;
    let mut c = Client::tcp(s.addr(0, Sip, Tcp)).await;
    let msg = options();
    let half = msg.len() / 2;
    // Every write ends one message and starts the next, so the buffer is never empty; each
    // message still completes within 100 ms. 12 x 100 ms is well past the 400 ms deadline.
    c.send(&msg[..half]).await;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut chunk = msg[half..].to_vec();
        chunk.extend_from_slice(&msg[..half]);
        c.send(&chunk).await;
        assert_eq!(c.recv().await.status, 200);
    }
}

#[tokio::test]
async fn a_lone_crlf_after_a_message_is_idle_not_a_message() {
    let s = TestServer::start(&lab_with(&[(
        "message_timeout_ms = 10000",
        "message_timeout_ms = 300",
    )]))
    .await;
    let mut c = Client::tcp(s.addr(0, Sip, Tcp)).await;
    let mut first = options();
    first.extend_from_slice(b"\r\n");
    assert_eq!(c.request(&first).await.status, 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        c.request(&options()).await.status,
        200,
        "still open after 3 message timeouts"
    );
}
