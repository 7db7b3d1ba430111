//! HTTP side listeners (HTTPS 8443): the same TLS, connection limits, timeouts and shutdown as
//! the SIP listeners, and a TLS configuration swapped for the next handshake.

use std::time::Duration;

use sip_oauth_registrar::cluster::NodeId;
use sip_oauth_registrar::net::WebPort;
use sip_oauth_registrar::pki::Authority;
use sip_oauth_registrar::tls::TlsConfigs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

fn web(s: &TestServer, node: u16) -> std::net::SocketAddr {
    s.server()
        .web_addr(NodeId(node), WebPort::Tomcat)
        .expect("HTTPS listener")
}

fn ca(s: &TestServer) -> String {
    s.lab_ca().cert_pem().to_owned()
}

#[tokio::test]
async fn https_on_every_node_with_the_tomcat_certificate() {
    let s = TestServer::lab().await;
    for node in 0..2 {
        let addr = web(&s, node);
        assert_eq!(
            addr.ip(),
            s.settings.cluster.nodes[usize::from(node)].address
        );
        let tls = tls_connect(addr, &ca(&s), None).await.expect("handshake");
        let names = sip_oauth_registrar::tls::certificate_names(
            &tls.get_ref()
                .1
                .peer_certificates()
                .expect("server certificate")[0],
        );
        assert!(
            names.iter().any(|n| n == "ucm-pub"),
            "tomcat cert names the nodes: {names:?}"
        );
        let answer = http_over(tls, http_request("GET", "/nothing/here", &[], "")).await;
        assert_eq!(answer.status, 404);
        assert_eq!(answer.text(), "/nothing/here is not served here\n");
    }
}

#[tokio::test]
async fn plain_http_on_the_https_port_gets_no_answer() {
    let s = TestServer::lab().await;
    let mut tcp = TcpStream::connect(web(&s, 0)).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("closed in time");
    assert!(!buf.starts_with(b"HTTP/"), "no HTTP answer without TLS");
}

#[tokio::test]
async fn slow_headers_are_cut_off_at_the_message_timeout() {
    let s = TestServer::start(&lab_with(&[(
        "message_timeout_ms = 10000",
        "message_timeout_ms = 300",
    )]))
    .await;
    let mut tls = tls_connect(web(&s, 0), &ca(&s), None).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut buf))
        .await
        .expect("closed before WAIT");
    assert!(started.elapsed() < Duration::from_secs(3));
    // hyper answers 408 to a request whose headers never completed, then closes.
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn connection_limit_applies_to_the_https_port() {
    let s = TestServer::start(&lab_with(&[(
        "max_connections_per_listener = 10000",
        "max_connections_per_listener = 1",
    )]))
    .await;
    let first = tls_connect(web(&s, 0), &ca(&s), None).await.expect("first");
    let second = tls_connect(web(&s, 0), &ca(&s), None).await;
    assert!(
        second.is_err(),
        "the second connection is closed before a handshake"
    );
    drop(first);
    // The permit comes back when the first connection ends.
    let mut answered = false;
    for _ in 0..50 {
        if let Ok(tls) = tls_connect(web(&s, 0), &ca(&s), None).await {
            answered = http_over(tls, http_request("GET", "/", &[], ""))
                .await
                .status
                == 404;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered);
}

#[tokio::test]
async fn shutdown_closes_kept_alive_http_connections() {
    let s = TestServer::lab().await;
    let addr = web(&s, 0);
    let mut tls = tls_connect(addr, &ca(&s), None).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(WAIT, tls.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
    assert!(s.shutdown(Duration::from_secs(3)).await, "every task ended");
    drop(
        tokio::net::TcpListener::bind(addr)
            .await
            .expect("HTTPS port free"),
    );
}

#[tokio::test]
async fn a_swapped_tls_configuration_applies_to_the_next_handshake() {
    let s = TestServer::lab().await;
    let addr = web(&s, 0);
    let before = tls_connect(addr, &ca(&s), None)
        .await
        .expect("lab CA trusted");

    // A new CA and tomcat certificate, written where the configuration points.
    let other = Authority::generate("Other Lab CA").unwrap();
    let tomcat = other
        .issue_server(
            "UCM-PUB",
            &["UCM-PUB".into(), "127.0.0.1".into(), "127.0.0.2".into()],
        )
        .unwrap();
    let dir = s.state.path().join("certs");
    std::fs::write(dir.join("tomcat.pem"), &tomcat.cert_pem).unwrap();
    std::fs::write(dir.join("tomcat-key.pem"), &tomcat.key_pem).unwrap();
    let expressway = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(Vec::new()));
    let configs = TlsConfigs::load(&s.settings, s.state.path(), expressway).unwrap();
    s.server().swap_tls(configs);

    assert!(
        tls_connect(addr, &ca(&s), None).await.is_err(),
        "the old CA no longer verifies the new certificate"
    );
    let after = tls_connect(addr, other.cert_pem(), None)
        .await
        .expect("new CA");
    assert_eq!(
        http_over(after, http_request("GET", "/", &[], ""))
            .await
            .status,
        404
    );
    // The connection made before the swap keeps working with the old configuration.
    assert_eq!(
        http_over(before, http_request("GET", "/", &[], ""))
            .await
            .status,
        404
    );
    // So does the SIP OAuth port, which reads the same tomcat slot family.
    assert!(
        tls_connect(
            s.addr(
                0,
                sip_oauth_registrar::net::ListenerKind::OAuth,
                sip_oauth_registrar::net::Transport::Tls
            ),
            other.cert_pem(),
            None
        )
        .await
        .is_ok()
    );
}
