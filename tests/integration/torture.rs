//! RFC 4475's 49 torture messages (`tests/data/rfc4475/`, byte-exact from the RFC's archive),
//! each sent over UDP and over TCP to the plain SIP listener, then an OPTIONS that must get its
//! 200: the daemon answers what RFC 3261 asks of a registrar, and is still alive.
//!
//! The order of checks is RFC 3261 §8.2: a message that does not parse is `400` (with the
//! reason in a Warning), then the method (`501` unknown, `405` known but not REGISTER/OPTIONS,
//! both with `Allow`), then the Request-URI scheme (`416`), then `Require` (`420` with
//! `Unsupported`), then REGISTER processing (§10.3: `404` for an address-of-record not in the
//! cluster). Responses are never answered (RFC 3261 §18.1.2).
//!
//! Over TCP the stream framing (Content-Length, `transport::codec`) decides first:
//! - `dblreq`: the INVITE after the REGISTER's `Content-Length: 0` is a message of its own on a
//!   stream (on UDP it is trailing junk of the datagram, RFC 3261 §18.3), so it gets its 405.
//! - `clerr`: Content-Length 9999 with a short body: the server waits for the rest (RFC 4475
//!   §3.1.2.2); when the client ends its side, the connection is closed without an answer.
//! - `baddn`: the archive's message has no blank line after its headers, so the header section
//!   never ends; likewise closed without an answer once the client ends its side.
//! - `ncl`, `mcl01`: a negative or conflicting Content-Length leaves the stream without framing
//!   (RFC 4475 §3.1.2.3, §3.3.9): the connection is closed at once, nothing is answered.
//!
//! - `inv2543` has no Content-Length, which a stream requires (RFC 3261 §20.14): its INVITE is
//!   answered, then its SDP body is read as the start of the next message, which has no blank
//!   line: the server waits, and closes unanswered when the client ends its side.
//!
//! On UDP the datagram is the frame, so those four still get a 400 naming the problem.

use sip_oauth_registrar::net::ListenerKind::Sip;
use sip_oauth_registrar::net::Transport::{Tcp, Udp};
use tokio::io::AsyncWriteExt;

use crate::harness::*;

/// What a message gets.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// An answer with this status, carrying these headers (`Warning` by its quoted text).
    Answer(u16, &'static [(&'static str, &'static str)]),
    /// `400 Bad Request` with this Warning text.
    Bad(&'static str),
    /// Nothing: a response, which is never answered.
    Dropped,
}

/// What happens over TCP when it differs from UDP.
#[derive(Clone, Copy, Debug)]
enum OnTcp {
    Same,
    /// These answers in this order on the connection (one message per stream frame).
    Answers(&'static [Expect]),
    /// The server waits for more bytes; once the client ends its side it closes, unanswered.
    WaitsThenCloses,
    /// The connection is closed at once, nothing answered.
    Closed,
    /// Answered; the bytes after it start a next message that never ends (no blank line), so
    /// the server waits, and closes unanswered once the client ends its side.
    AnsweredThenWaits,
}

use Expect::{Answer, Bad, Dropped};

const ALLOW: (&str, &str) = ("Allow", "REGISTER, OPTIONS");
const NOT_IMPLEMENTED: &[(&str, &str)] = &[ALLOW, ("Warning", "Method not implemented")];
const NOT_ALLOWED: Expect = Answer(405, &[ALLOW]);
const OK: Expect = Answer(200, &[ALLOW]);
const UNKNOWN_AOR: Expect = Answer(404, &[("Warning", "Directory number not found")]);
const UNSUPPORTED_SCHEME: Expect = Answer(416, &[("Warning", "Unsupported URI scheme")]);

/// Each message, its RFC 4475 section, its answer over UDP (and TCP unless noted), and why.
const CASES: &[(&str, &str, Expect, OnTcp)] = &[
    // 3.1.1 Valid messages: parsed, then answered as a registrar.
    ("wsinv", "3.1.1.1", NOT_ALLOWED, OnTcp::Same),
    (
        "intmeth",
        "3.1.1.2",
        Answer(501, NOT_IMPLEMENTED),
        OnTcp::Same,
    ),
    ("esc01", "3.1.1.3", NOT_ALLOWED, OnTcp::Same),
    // Two Contacts, both fine for a non-Cisco client: the AOR (null-%00-null) is unknown.
    ("escnull", "3.1.1.4", UNKNOWN_AOR, OnTcp::Same),
    // RE%47IST%45R is not REGISTER: % is no escape in a method.
    (
        "esc02",
        "3.1.1.5",
        Answer(501, NOT_IMPLEMENTED),
        OnTcp::Same,
    ),
    ("lwsdisp", "3.1.1.6", OK, OnTcp::Same),
    ("longreq", "3.1.1.7", NOT_ALLOWED, OnTcp::Same),
    (
        "dblreq",
        "3.1.1.8",
        UNKNOWN_AOR,
        OnTcp::Answers(&[UNKNOWN_AOR, NOT_ALLOWED]),
    ),
    ("semiuri", "3.1.1.9", OK, OnTcp::Same),
    ("transports", "3.1.1.10", OK, OnTcp::Same),
    ("mpart01", "3.1.1.11", NOT_ALLOWED, OnTcp::Same),
    ("unreason", "3.1.1.12", Dropped, OnTcp::Same),
    ("noreason", "3.1.1.13", Dropped, OnTcp::Same),
    // 3.1.2 Invalid messages: 400 with the reason, or dropped.
    (
        "badinv01",
        "3.1.2.1",
        Bad("Malformed Via header"),
        OnTcp::Same,
    ),
    (
        "clerr",
        "3.1.2.2",
        Bad("Content-Length beyond the datagram"),
        OnTcp::WaitsThenCloses,
    ),
    (
        "ncl",
        "3.1.2.3",
        Bad("Invalid Content-Length"),
        OnTcp::Closed,
    ),
    (
        "scalar02",
        "3.1.2.4",
        Bad("Malformed CSeq header"),
        OnTcp::Same,
    ),
    ("scalarlg", "3.1.2.5", Dropped, OnTcp::Same),
    (
        "quotbal",
        "3.1.2.6",
        Bad("Malformed To header"),
        OnTcp::Same,
    ),
    (
        "ltgtruri",
        "3.1.2.7",
        Bad("Malformed Request-URI"),
        OnTcp::Same,
    ),
    (
        "lwsruri",
        "3.1.2.8",
        Bad("Malformed Request-Line"),
        OnTcp::Same,
    ),
    (
        "lwsstart",
        "3.1.2.9",
        Bad("Malformed Request-Line"),
        OnTcp::Same,
    ),
    (
        "trws",
        "3.1.2.10",
        Bad("Malformed Request-Line"),
        OnTcp::Same,
    ),
    (
        "escruri",
        "3.1.2.11",
        Bad("Headers in the Request-URI"),
        OnTcp::Same,
    ),
    // The Date header is not used, so its bad time zone is ignored (RFC 4475 §3.1.2.12 allows
    // it); the INVITE gets its 405.
    ("baddate", "3.1.2.12", NOT_ALLOWED, OnTcp::Same),
    (
        "regbadct",
        "3.1.2.13",
        Bad("Malformed Contact header"),
        OnTcp::Same,
    ),
    (
        "badaspec",
        "3.1.2.14",
        Bad("Malformed To header"),
        OnTcp::Same,
    ),
    // No blank line ends the archive's message; with one it gets "Malformed From header"
    // (`baddn_with_its_blank_line_is_refused_for_the_display_name`).
    (
        "baddn",
        "3.1.2.15",
        Bad("Header section not terminated"),
        OnTcp::WaitsThenCloses,
    ),
    (
        "badvers",
        "3.1.2.16",
        Answer(505, &[("Warning", "Only SIP/2.0 is supported")]),
        OnTcp::Same,
    ),
    (
        "mismatch01",
        "3.1.2.17",
        Bad("Malformed CSeq header"),
        OnTcp::Same,
    ),
    (
        "mismatch02",
        "3.1.2.18",
        Answer(501, NOT_IMPLEMENTED),
        OnTcp::Same,
    ),
    ("bigcode", "3.1.2.19", Dropped, OnTcp::Same),
    // 3.2 Transaction layer: a bare z9hG4bK branch is still a usable branch.
    ("badbranch", "3.2.1", OK, OnTcp::Same),
    // 3.3 Application layer.
    ("insuf", "3.3.1", Bad("Missing From header"), OnTcp::Same),
    ("unkscm", "3.3.2", UNSUPPORTED_SCHEME, OnTcp::Same),
    ("novelsc", "3.3.3", UNSUPPORTED_SCHEME, OnTcp::Same),
    (
        "unksm2",
        "3.3.4",
        Bad("To is not a sip: or sips: URI"),
        OnTcp::Same,
    ),
    // A UAS checks Require only; Proxy-Require is for proxies (RFC 3261 §8.2.2.3, §16.3).
    (
        "bext01",
        "3.3.5",
        Answer(
            420,
            &[(
                "Unsupported",
                "nothingSupportsThis, nothingSupportsThisEither",
            )],
        ),
        OnTcp::Same,
    ),
    // The method is checked before the body's type (RFC 3261 §8.2.1 before §8.2.3).
    ("invut", "3.3.6", NOT_ALLOWED, OnTcp::Same),
    // The unknown Authorization scheme is ignored; the AOR is not in the cluster.
    ("regaut01", "3.3.7", UNKNOWN_AOR, OnTcp::Same),
    (
        "multi01",
        "3.3.8",
        Bad("Duplicate From, To, Call-ID or CSeq header"),
        OnTcp::Same,
    ),
    (
        "mcl01",
        "3.3.9",
        Bad("Invalid Content-Length"),
        OnTcp::Closed,
    ),
    ("bcast", "3.3.10", Dropped, OnTcp::Same),
    // Max-Forwards 0 matters to a proxy; a UAS answers the OPTIONS.
    ("zeromf", "3.3.11", OK, OnTcp::Same),
    ("cparam01", "3.3.12", UNKNOWN_AOR, OnTcp::Same),
    ("cparam02", "3.3.13", UNKNOWN_AOR, OnTcp::Same),
    ("regescrt", "3.3.14", UNKNOWN_AOR, OnTcp::Same),
    ("sdp01", "3.3.15", NOT_ALLOWED, OnTcp::Same),
    // 3.4 Backward compatibility.
    ("inv2543", "3.4.1", NOT_ALLOWED, OnTcp::AnsweredThenWaits),
];

fn message(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/data/rfc4475/{name}.dat",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The message's Call-ID as written (full or compact name), which its answer must echo.
fn call_id(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut ids = head.split("\r\n").filter_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("Call-ID") || name.eq_ignore_ascii_case("i"))
            .then(|| value.trim().to_owned())
    });
    ids.next()
}

fn options(transport: &str, n: usize) -> (Vec<u8>, String) {
    let id = format!("alive-{transport}-{n}@127.0.0.1");
    let msg = format!(
        "OPTIONS sip:10.10.10.1 SIP/2.0\r\n\
         Via: SIP/2.0/{transport} 127.0.0.1:5060;branch=z9hG4bKalive{n}\r\n\
         From: <sip:probe@127.0.0.1>;tag={n}\r\nTo: <sip:10.10.10.1>\r\n\
         Call-ID: {id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    (msg.into_bytes(), id)
}

fn check(name: &str, how: &str, expect: Expect, r: &Response, node: &str, msg: &[u8]) {
    let (status, headers): (u16, &[(&str, &str)]) = match expect {
        Answer(status, headers) => (status, headers),
        Bad(_) => (400, &[]),
        Dropped => panic!(
            "{name} over {how}: answered although it is a response:\n{}",
            r.raw
        ),
    };
    assert_eq!(r.status, status, "{name} over {how}:\n{}", r.raw);
    let warning = match expect {
        Bad(reason) => Some(reason),
        _ => headers
            .iter()
            .find(|(n, _)| *n == "Warning")
            .map(|(_, v)| *v),
    };
    if let Some(text) = warning {
        let want = format!("399 {node} \"{text}\"");
        assert_eq!(r.warning(), Some(want.as_str()), "{name} over {how}");
    }
    for (header, value) in headers.iter().filter(|(n, _)| *n != "Warning") {
        assert_eq!(
            r.header(header),
            Some(*value),
            "{name} over {how}: {header}"
        );
    }
    if let Some(id) = call_id(msg) {
        assert_eq!(r.header("Call-ID"), Some(id.as_str()), "{name} over {how}");
    }
}

/// Every message over UDP, each from a fresh socket, then an OPTIONS from the same socket whose
/// 200 must be the next datagram: a dropped message got no late answer, and the daemon lives.
#[tokio::test]
async fn every_torture_message_over_udp() {
    let s = TestServer::lab().await;
    let server = s.addr(0, Sip, Udp);
    let node = s.node_name(0);
    assert_eq!(CASES.len(), 49);
    for (n, (name, _, expect, _)) in CASES.iter().enumerate() {
        let msg = message(name);
        let mut c = Client::udp(server).await;
        c.send(&msg).await;
        if !matches!(expect, Dropped) {
            check(name, "UDP", *expect, &c.recv().await, &node, &msg);
        }
        alive(&mut c, "UDP", n, name).await;
    }
}

/// Every message over TCP, each on a fresh connection; see the module doc for the framing.
#[tokio::test]
async fn every_torture_message_over_tcp() {
    let s = TestServer::lab().await;
    let server = s.addr(0, Sip, Tcp);
    let node = s.node_name(0);
    for (n, (name, _, expect, on_tcp)) in CASES.iter().enumerate() {
        let msg = message(name);
        let mut c = Client::tcp(server).await;
        c.send(&msg).await;
        let answers: &[Expect] = match on_tcp {
            OnTcp::Same | OnTcp::AnsweredThenWaits => std::slice::from_ref(expect),
            OnTcp::Answers(answers) => answers,
            OnTcp::WaitsThenCloses => {
                end_and_expect_close(&mut c, name).await;
                c = Client::tcp(server).await;
                &[]
            }
            OnTcp::Closed => {
                expect_close(&mut c, name).await;
                c = Client::tcp(server).await;
                &[]
            }
        };
        for expect in answers.iter().filter(|e| !matches!(e, Dropped)) {
            let r = c.recv().await;
            // dblreq's second answer is the INVITE's, with its own Call-ID.
            let echoed = if answers.len() > 1 { &[][..] } else { &msg[..] };
            check(name, "TCP", *expect, &r, &node, echoed);
        }
        if matches!(on_tcp, OnTcp::AnsweredThenWaits) {
            end_and_expect_close(&mut c, name).await;
            c = Client::tcp(server).await;
        }
        alive(&mut c, "TCP", n, name).await;
    }
}

/// Ends the client's side of the connection, then expects the server to close it unanswered.
async fn end_and_expect_close(c: &mut Client, name: &str) {
    let Client::Tcp(stream, _) = c else {
        unreachable!("a TCP client")
    };
    stream.shutdown().await.unwrap();
    expect_close(c, name).await;
}

async fn expect_close(c: &mut Client, name: &str) {
    let (bytes, _) = c.read_to_close().await;
    assert!(
        bytes.is_empty(),
        "{name} over TCP: {:?}",
        String::from_utf8_lossy(&bytes)
    );
}

async fn alive(c: &mut Client, transport: &str, n: usize, after: &str) {
    let (msg, id) = options(transport, n);
    let r = c.request(&msg).await;
    assert_eq!(
        (r.status, r.header("Call-ID")),
        (200, Some(id.as_str())),
        "OPTIONS after {after} over {transport}:\n{}",
        r.raw
    );
}

/// `baddn` as printed in the RFC body ends its headers with a blank line; so sent, it is refused
/// for what §3.1.2.15 is about: a display name of non-token characters without quotes.
#[tokio::test]
async fn baddn_with_its_blank_line_is_refused_for_the_display_name() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    let mut msg = message("baddn");
    msg.extend_from_slice(b"\r\n");
    let clients = [
        ("UDP", Client::udp(s.addr(0, Sip, Udp)).await),
        ("TCP", Client::tcp(s.addr(0, Sip, Tcp)).await),
    ];
    for (how, mut c) in clients {
        let r = c.request(&msg).await;
        check("baddn", how, Bad("Malformed From header"), &r, &node, &msg);
    }
}

#[test]
fn the_table_names_every_file_once() {
    let dir = format!("{}/tests/data/rfc4475", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|f| f.strip_suffix(".dat").map(str::to_owned))
        .collect();
    files.sort();
    let mut names: Vec<String> = CASES.iter().map(|c| c.0.to_owned()).collect();
    names.sort();
    assert_eq!(files, names);
}

type Header = (&'static str, &'static str);

/// RFC 3261 §8.2's order on messages of our own: method (501/405), then the Request-URI scheme
/// (416), then Require (420); Proxy-Require alone is not a UAS's business.
#[tokio::test]
async fn checks_come_in_rfc_3261_order() {
    let s = TestServer::lab().await;
    let mut c = Client::udp(s.addr(0, Sip, Udp)).await;
    let request = |line: &str, extra: &str| {
        let method = line.split(' ').next().unwrap_or_default();
        format!(
            "{line} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKorder\r\n\
             From: <sip:1010@10.10.10.1>;tag=1\r\nTo: <sip:1010@10.10.10.1>\r\n\
             Call-ID: order@127.0.0.1\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let require = "Require: 100rel\r\nRequire: timer, path\r\n";
    let cases: [(&str, &str, u16, Option<Header>); 7] = [
        ("FOO tel:+12015550123", require, 501, Some(ALLOW)),
        ("INVITE tel:+12015550123", require, 405, Some(ALLOW)),
        ("OPTIONS tel:+12015550123", require, 416, None),
        ("REGISTER tel:+12015550123", require, 416, None),
        (
            "OPTIONS sip:10.10.10.1",
            require,
            420,
            Some(("Unsupported", "100rel, timer, path")),
        ),
        (
            "REGISTER sip:10.10.10.1",
            require,
            420,
            Some(("Unsupported", "100rel, timer, path")),
        ),
        (
            "OPTIONS sip:10.10.10.1",
            "Proxy-Require: x\r\n",
            200,
            Some(ALLOW),
        ),
    ];
    for (line, extra, status, header) in cases {
        let r = c.request(&request(line, extra)).await;
        assert_eq!(r.status, status, "{line} with {extra:?}:\n{}", r.raw);
        if let Some((name, value)) = header {
            assert_eq!(r.header(name), Some(value), "{line}");
        }
    }
}
