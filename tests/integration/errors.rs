//! RFC 3261 errors and other methods: 400, 404, 405, 423, out-of-order CSeq, OPTIONS.

use sip_oauth_registrar::net::ListenerKind::{OAuth, Sip};
use sip_oauth_registrar::net::Transport::{Tls, Udp};

use crate::harness::*;

#[tokio::test]
async fn register_errors() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    let token = s.token("rado");
    let mut c = Client::tls(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None).await;

    let r = c
        .register(&Register::jabber("CSFnobody", "1010").bearer(&token))
        .await;
    assert_eq!(
        (r.status, r.warning()),
        (
            404,
            Some(format!("399 {node} \"Device not found\"").as_str())
        )
    );

    let r = c
        .register(&Register::jabber("CSFrado", "9999").bearer(&token))
        .await;
    assert_eq!(
        (r.status, r.warning()),
        (
            404,
            Some(format!("399 {node} \"Line not found on device\"").as_str())
        )
    );

    let mut brief = Register::jabber("CSFrado", "1010").bearer(&token);
    brief.expires = Some("30".into());
    let r = c.register(&brief).await;
    assert_eq!((r.status, r.header("Min-Expires")), (423, Some("60")));
    assert!(r.raw.starts_with("SIP/2.0 423 Interval Too Brief\r\n"));

    let mut bad = Register::jabber("CSFrado", "1010").bearer(&token);
    bad.expires = Some("soon".into());
    assert_eq!(c.register(&bad).await.status, 400);

    let mut reg = Register::jabber("CSFrado", "1010").bearer(&token);
    reg.cseq = 10;
    assert_eq!(c.register(&reg).await.status, 200);
    let mut old = reg.clone();
    old.cseq = 9;
    let r = c.register(&old).await;
    assert_eq!(
        (r.status, r.warning()),
        (
            400,
            Some(format!("399 {node} \"Out of order CSeq\"").as_str())
        )
    );
}

#[tokio::test]
async fn plain_client_is_found_by_its_line() {
    let s = TestServer::lab().await;
    let mut c = Client::udp(s.addr(0, Sip, Udp)).await;
    let mut reg = Register::plain("3001");
    reg.transport = "UDP";
    let r = c.register(&reg).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = c
        .register(&Register {
            transport: "UDP",
            ..Register::plain("4444")
        })
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn options_other_methods_and_malformed_requests() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    let mut c = Client::udp(s.addr(0, Sip, Udp)).await;
    let head = |method: &str, extra: &str| {
        format!(
            "{method} sip:10.10.10.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK1\r\n\
             From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x@y\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    let r = c.request(head("OPTIONS", "").as_bytes()).await;
    assert_eq!(
        (r.status, r.header("Allow")),
        (200, Some("REGISTER, OPTIONS"))
    );
    let r = c.request(head("INVITE", "").as_bytes()).await;
    assert_eq!(
        (r.status, r.header("Allow")),
        (405, Some("REGISTER, OPTIONS"))
    );

    let no_call_id = head("REGISTER", "").replace("Call-ID: x@y\r\n", "");
    let r = c.request(no_call_id.as_bytes()).await;
    assert_eq!(
        (r.status, r.warning()),
        (
            400,
            Some(format!("399 {node} \"Missing Call-ID header\"").as_str())
        )
    );
    assert_eq!(
        r.header("Via"),
        Some("SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK1")
    );

    let r = c
        .request(
            head(
                "REGISTER",
                "Contact: <sip:x@1.2.3.4;transport=udp>;+sip.instance=\"<urn\r\n",
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.raw);

    // A response or garbage is never answered (no reflection); the next request still is.
    c.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4\r\nContent-Length: 0\r\n\r\n")
        .await;
    c.send(b"\x16\x03\x01\x02\x00garbage").await;
    let r = c.request(head("OPTIONS", "").as_bytes()).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn udp_retransmission_is_answered_as_the_original_and_a_reused_cseq_is_refused() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    let mut c = Client::udp(s.addr(0, Sip, Udp)).await;
    let reg = Register {
        transport: "UDP",
        ..Register::jabber("SIPlegacy1", "3001")
    };
    let bytes = reg.bytes();
    let first = c.request(&bytes).await;
    assert_eq!(first.status, 200);
    assert!(
        first
            .header("Contact")
            .unwrap()
            .ends_with(";x-cisco-newreg")
    );
    // The 200 was "lost"; the client retransmits the same request (same Via branch).
    let again = c.request(&bytes).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.header("Contact"),
        first.header("Contact"),
        "answered as the original was"
    );
    // The same CSeq on a new branch is a new request reusing it (RFC 3261 §10.3 step 7).
    let r = c.register(&reg).await;
    assert_eq!(
        (r.status, r.warning()),
        (
            400,
            Some(format!("399 {node} \"Out of order CSeq\"").as_str())
        )
    );
}
