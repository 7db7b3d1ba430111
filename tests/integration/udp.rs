//! UDP on 5060: where answers go and what their top Via says (RFC 3581, RFC 3261 §18.2), and
//! a closed-loop burst of REGISTERs that must lose nothing with the default socket buffers.

use std::net::SocketAddr;
use std::time::Duration;

use sip_oauth_registrar::net::ListenerKind::Sip;
use sip_oauth_registrar::net::Transport::{Tcp, Udp};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::harness::*;

/// A REGISTER whose top Via names `via_port` and carries `params` before the branch.
fn register_via(via_port: u16, params: &str, cseq: u32) -> Vec<u8> {
    format!(
        "REGISTER sip:10.10.10.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{via_port}{params};branch=z9hG4bK{cseq:08x}\r\n\
         From: <sip:1010@10.10.10.1>;tag=1\r\nTo: <sip:1010@10.10.10.1>\r\n\
         Call-ID: rport-{via_port}@127.0.0.1\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:1010@127.0.0.1:{via_port}>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

async fn recv(socket: &UdpSocket, wait: Duration) -> Option<Response> {
    let mut buf = vec![0; 65536];
    let (n, _) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(Response::parse(std::str::from_utf8(&buf[..n]).ok()?))
}

#[tokio::test]
async fn with_rport_the_answer_goes_to_the_source_port_and_the_via_says_so() {
    let s = TestServer::lab().await;
    let server = s.addr(0, Sip, Udp);
    // The client sends from one port; its Via names another, where a socket listens too.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let named = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let source = client.local_addr().unwrap().port();
    let via_port = named.local_addr().unwrap().port();

    client
        .send_to(&register_via(via_port, ";rport", 1), server)
        .await
        .unwrap();
    let r = recv(&client, WAIT)
        .await
        .expect("the answer at the source port");
    assert_eq!(
        r.header("Via"),
        Some(
            format!(
                "SIP/2.0/UDP 127.0.0.1:{via_port};received=127.0.0.1;rport={source};\
                 branch=z9hG4bK00000001"
            )
            .as_str()
        ),
        "{}",
        r.raw
    );
    assert!(recv(&named, Duration::from_millis(200)).await.is_none());

    // Without rport the answer still goes to the source (a deliberate deviation from RFC 3261
    // §18.2.2, see README); the Via host is the source address, so nothing is added.
    client
        .send_to(&register_via(via_port, "", 2), server)
        .await
        .unwrap();
    let r = recv(&client, WAIT)
        .await
        .expect("the answer at the source port");
    assert_eq!(
        r.header("Via"),
        Some(format!("SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK00000002").as_str())
    );
    assert!(recv(&named, Duration::from_millis(200)).await.is_none());
}

#[tokio::test]
async fn over_tcp_the_via_gets_rport_and_received_too() {
    let s = TestServer::lab().await;
    let mut c = Client::tcp(s.addr(0, Sip, Tcp)).await;
    let Client::Tcp(stream, _) = &c else {
        unreachable!()
    };
    let source = stream.local_addr().unwrap().port();
    let r = c.request(&register_via(5060, ";rport", 1)).await;
    assert_eq!(
        r.header("Via"),
        Some(
            format!(
                "SIP/2.0/UDP 127.0.0.1:5060;received=127.0.0.1;rport={source};\
                 branch=z9hG4bK00000001"
            )
            .as_str()
        )
    );
}

/// What a closed-loop burst saw.
#[derive(Debug)]
pub struct Burst {
    pub sent: usize,
    pub answered: usize,
    /// Growth of the kernel's `Udp: RcvbufErrors` counter over the run: every socket of the
    /// host counts, so a parallel test can add to it.
    pub rcvbuf_errors: Option<u64>,
    pub elapsed: Duration,
}

/// Keeps `in_flight` REGISTERs outstanding from one socket, sending a new one per answer,
/// until `total` were sent; stops when no answer came for `idle` (the rest are lost) or after
/// `deadline`.
pub async fn burst(
    server: SocketAddr,
    in_flight: usize,
    total: usize,
    idle: Duration,
    deadline: Duration,
) -> Burst {
    // The client's own buffer must hold a burst of answers, or it would be the one dropping.
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    let _ = socket.set_recv_buffer_size(4 << 20);
    socket.set_nonblocking(true).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    let socket = UdpSocket::from_std(socket.into()).unwrap();
    let port = socket.local_addr().unwrap().port();

    let before = rcvbuf_errors();
    let start = Instant::now();
    let mut sent = 0;
    let mut answered = 0;
    let mut buf = vec![0; 65536];
    while sent < in_flight.min(total) {
        sent += 1;
        socket
            .send_to(&register_via(port, ";rport", sent as u32), server)
            .await
            .unwrap();
    }
    while answered < sent && start.elapsed() < deadline {
        let Ok(Ok(_)) = tokio::time::timeout(idle, socket.recv_from(&mut buf)).await else {
            break;
        };
        answered += 1;
        if sent < total {
            sent += 1;
            socket
                .send_to(&register_via(port, ";rport", sent as u32), server)
                .await
                .unwrap();
        }
    }
    let elapsed = start.elapsed();
    let rcvbuf_errors = before
        .zip(rcvbuf_errors())
        .map(|(b, a)| a.saturating_sub(b));
    Burst {
        sent,
        answered,
        rcvbuf_errors,
        elapsed,
    }
}

/// `RcvbufErrors` from the `Udp:` lines of `/proc/net/snmp` (Linux only).
pub fn rcvbuf_errors() -> Option<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

const BURST_TOTAL: usize = 20_000;
const IN_FLIGHT: usize = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_256_in_flight_loses_nothing_with_the_default_buffer() {
    let s = TestServer::lab().await;
    let b = burst(
        s.addr(0, Sip, Udp),
        IN_FLIGHT,
        BURST_TOTAL,
        Duration::from_secs(5),
        Duration::from_secs(120),
    )
    .await;
    println!(
        "default buffers (4 MiB receive): {} of {} answered in {:?}, RcvbufErrors +{:?}",
        b.answered, b.sent, b.elapsed, b.rcvbuf_errors
    );
    assert_eq!((b.sent, b.answered), (BURST_TOTAL, BURST_TOTAL), "{b:?}");
}

/// The same burst with a 64 KiB receive buffer: shows what the setting is for. It reports and
/// asserts nothing (loss depends on the machine): `cargo test --test integration
/// small_udp_buffer -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a report, not a check"]
async fn small_udp_buffer_burst_report() {
    let toml = lab_with(&[(
        "udp_recv_buffer_bytes = 4194304",
        "udp_recv_buffer_bytes = 65536",
    )]);
    let s = TestServer::start(&toml).await;
    let b = burst(
        s.addr(0, Sip, Udp),
        IN_FLIGHT,
        BURST_TOTAL,
        Duration::from_secs(2),
        Duration::from_secs(120),
    )
    .await;
    println!(
        "64 KiB receive buffer: {} of {} answered in {:?}, lost {}, RcvbufErrors +{:?}",
        b.answered,
        b.sent,
        b.elapsed,
        b.sent - b.answered,
        b.rcvbuf_errors
    );
}
