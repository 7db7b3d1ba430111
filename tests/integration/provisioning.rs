//! The TFTP server's config files over real sockets: HTTP 6970 and HTTPS 6971 with hyper's
//! client, who gets which file (tokens from the token service on 8443 and from
//! `token issue`), headers, HEAD, `.sgn`, 404/405, traversal attempts; and the file agrees with
//! the listeners: a client that follows it (first member, its OAuth or SIP port) registers.

use sip_oauth_registrar::cluster::NodeId;
use sip_oauth_registrar::net::ListenerKind::Sip;
use sip_oauth_registrar::net::Transport::Udp;
use sip_oauth_registrar::net::WebPort;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;
use crate::xml;

fn tftp_http(s: &TestServer, node: u16) -> std::net::SocketAddr {
    s.server()
        .web_addr(NodeId(node), WebPort::TftpHttp)
        .expect("6970 listener")
}

fn tftp_https(s: &TestServer, node: u16) -> std::net::SocketAddr {
    s.server()
        .web_addr(NodeId(node), WebPort::TftpHttps)
        .expect("6971 listener")
}

async fn plain_get(s: &TestServer, path: &str) -> HttpAnswer {
    http_plain(tftp_http(s, 0), http_request("GET", path, &[], "")).await
}

async fn secure(s: &TestServer, method: &str, path: &str, token: Option<&str>) -> HttpAnswer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    https(
        tftp_https(s, 0),
        s.lab_ca().cert_pem(),
        http_request(method, path, &headers, ""),
    )
    .await
}

fn assert_file(a: &HttpAnswer, owner: &str) {
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("text/xml"));
    assert_eq!(a.header("cache-control"), Some("no-cache"));
    assert_eq!(
        a.header("content-length")
            .map(|v| v.parse::<usize>().unwrap()),
        Some(a.body.len())
    );
    let root = xml::parse(&a.body);
    assert_eq!(root.name, "device");
    assert_eq!(root.child("ownerId").text, owner);
}

#[tokio::test]
async fn legacy_device_over_http_6970() {
    let s = TestServer::lab().await;
    let a = plain_get(&s, "/SIPlegacy1.cnf.xml").await;
    assert_file(&a, "bob");
    let root = xml::parse(&a.body);
    assert_eq!(root.child("sipOAuthMode").text, "0");
    assert_eq!(root.child("userId").text, "bob");
    // Case-insensitive second lookup; the same file.
    let b = plain_get(&s, "/siplegacy1.cnf.xml").await;
    assert_eq!(b.body, a.body);
    // Open devices are on 6971 too, without a token.
    let c = secure(&s, "GET", "/SIPlegacy1.cnf.xml", None).await;
    assert_file(&c, "bob");
    assert_eq!(c.body, a.body);
    // `.sgn` is HTTPS-only.
    assert_eq!(plain_get(&s, "/SIPlegacy1.cnf.xml.sgn").await.status, 404);
    assert_eq!(
        secure(&s, "GET", "/SIPlegacy1.cnf.xml.sgn", None)
            .await
            .body,
        a.body
    );
}

#[tokio::test]
async fn oauth_device_needs_https_and_its_owners_token() {
    let s = TestServer::lab().await;
    let plain = plain_get(&s, "/CSFrado.cnf.xml").await;
    assert_eq!(plain.status, 403, "{}", plain.text());
    assert!(!plain.text().contains("<device"));

    let none = secure(&s, "GET", "/CSFrado.cnf.xml", None).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"ccmsipline\"")
    );
    let bad = secure(&s, "GET", "/CSFrado.cnf.xml", Some("not.a.token")).await;
    assert_eq!(bad.status, 401);
    assert_eq!(
        bad.header("www-authenticate"),
        Some("Bearer realm=\"ccmsipline\", error=\"invalid_token\"")
    );
    let alice = secure(&s, "GET", "/CSFrado.cnf.xml", Some(&s.token("alice"))).await;
    assert_eq!(alice.status, 403, "{}", alice.text());
    assert!(!alice.text().contains("<device"));

    let token = s.password_token("rado").await;
    let ok = secure(&s, "GET", "/CSFrado.cnf.xml", Some(&token)).await;
    assert_file(&ok, "rado");
    let root = xml::parse(&ok.body);
    assert_eq!(root.child("sipOAuthMode").text, "1");
    assert_eq!(root.child("ownerId").text, "rado");

    // Cisco's form of the credential works too; `.sgn` is the same file.
    let cisco = https(
        tftp_https(&s, 0),
        s.lab_ca().cert_pem(),
        http_request(
            "GET",
            "/CSFrado.cnf.xml.sgn",
            &[("authorization", &format!("Bearer token=\"{token}\""))],
            "",
        ),
    )
    .await;
    assert_eq!(cisco.status, 200);
    assert_eq!(cisco.body, ok.body);

    // An inactive owner's valid token opens nothing.
    let mallory = secure(&s, "GET", "/CSFmallory.cnf.xml", Some(&s.token("mallory"))).await;
    assert_eq!(mallory.status, 403);
}

#[tokio::test]
async fn head_unknown_and_other_methods() {
    let s = TestServer::lab().await;
    let get = secure(&s, "GET", "/CSFrado.cnf.xml", Some(&s.token("rado"))).await;
    let head = secure(&s, "HEAD", "/CSFrado.cnf.xml", Some(&s.token("rado"))).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), Some("text/xml"));
    assert_eq!(head.header("cache-control"), Some("no-cache"));
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    let head = http_plain(
        tftp_http(&s, 0),
        http_request("HEAD", "/SIPlegacy1.cnf.xml", &[], ""),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    for path in [
        "/CSFnobody.cnf.xml",
        "/SPDefault.cnf.xml",
        "/",
        "/a/b.cnf.xml",
    ] {
        let a = plain_get(&s, path).await;
        assert_eq!(a.status, 404, "{path}");
        assert!(a.header("content-type").unwrap().starts_with("text/plain"));
        assert!(!a.body.is_empty());
    }
    for method in ["POST", "PUT", "DELETE"] {
        let a = http_plain(
            tftp_http(&s, 0),
            http_request(method, "/SIPlegacy1.cnf.xml", &[], ""),
        )
        .await;
        assert_eq!(a.status, 405, "{method}");
        let allow = a.header("allow").unwrap().to_ascii_uppercase();
        assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
    }
}

/// One raw request on a fresh connection: the answer's status code and text.
async fn raw(addr: std::net::SocketAddr, target: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(&request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn traversal_is_refused() {
    let s = TestServer::lab().await;
    let addr = tftp_http(&s, 0);
    let cases: &[&[u8]] = &[
        b"/../SIPlegacy1.cnf.xml",
        b"/..%2fSIPlegacy1.cnf.xml",
        b"/%2e%2e%2fetc%2fpasswd",
        b"/%2e%2e/etc/passwd",
        b"/..%5cSIPlegacy1.cnf.xml",
        b"/..\\SIPlegacy1.cnf.xml",
        b"/SIPlegacy1.cnf.xml%00",
        b"/SIPlegacy1%2ecnf.xml%2f",
        b"/%2fetc%2fpasswd",
        b"/SIPlegacy1.cnf.xml/..",
        b"/%ff.cnf.xml",
    ];
    for target in cases {
        let (status, text) = raw(addr, target).await;
        assert!(!text.contains("<device"), "{text}");
        assert!(
            status == 400 || status == 404,
            "{}: {status}",
            String::from_utf8_lossy(target)
        );
    }
    // A sanity check of the helper: the plain name is served.
    assert_eq!(raw(addr, b"/SIPlegacy1.cnf.xml").await.0, 200);
}

/// `(address, sipOAuthPort, sipPort)` of each member, in priority order.
fn members(file: &[u8]) -> Vec<(String, u16, u16)> {
    let root = xml::parse(file);
    let mut out: Vec<(u32, String, u16, u16)> = root
        .path("devicePool/callManagerGroup/members")
        .children
        .iter()
        .map(|m| {
            let cm = m.child("callManager");
            (
                m.attr("priority").unwrap().parse().unwrap(),
                cm.child("name").text.clone(),
                cm.path("ports/sipOAuthPort").text.parse().unwrap(),
                cm.path("ports/sipPort").text.parse().unwrap(),
            )
        })
        .collect();
    out.sort_by_key(|m| m.0);
    out.into_iter().map(|(_, a, o, s)| (a, o, s)).collect()
}

#[tokio::test]
async fn the_file_agrees_with_the_listeners() {
    let s = TestServer::lab().await;
    let ca = s.lab_ca().cert_pem().to_owned();
    for (device, dn, user, first) in [
        ("CSFrado", "1010", "rado", "127.0.0.1"),
        ("CSFalice", "2001", "alice", "127.0.0.2"),
    ] {
        let token = s.password_token(user).await;
        let a = secure(&s, "GET", &format!("/{device}.cnf.xml"), Some(&token)).await;
        assert_eq!(a.status, 200, "{device}: {}", a.text());
        let m = members(&a.body);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, first, "{device}: the group's first node first");
        assert_ne!(m[0].0, m[1].0);
        // Follow the file: TLS to the first member's sipOAuthPort.
        let addr: std::net::SocketAddr = format!("{}:{}", m[0].0, m[0].1).parse().unwrap();
        let mut c = Client::tls(addr, &ca, None).await;
        let first_try = Register::jabber(device, dn);
        let r = c.register(&first_try).await;
        assert_eq!(r.status, 407, "{device}: {}", r.raw);
        let r = c.register(&first_try.next().bearer(&token)).await;
        assert_eq!(r.status, 200, "{device}: {}", r.raw);
    }

    // The legacy device: UDP to the first member's sipPort, no credentials.
    let a = plain_get(&s, "/SIPlegacy1.cnf.xml").await;
    let m = members(&a.body);
    let addr: std::net::SocketAddr = format!("{}:{}", m[0].0, m[0].2).parse().unwrap();
    assert_eq!(addr, s.addr(0, Sip, Udp));
    let mut c = Client::udp(addr).await;
    let mut reg = Register::plain("3001");
    reg.transport = "UDP";
    let r = c.register(&reg).await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

#[tokio::test]
async fn mode_off_serves_every_file_on_6970() {
    let s = TestServer::start(&lab_with(&[(
        "sip_oauth_mode = true",
        "sip_oauth_mode = false",
    )]))
    .await;
    let a = plain_get(&s, "/CSFrado.cnf.xml").await;
    assert_file(&a, "rado");
    assert_eq!(xml::parse(&a.body).child("sipOAuthMode").text, "0");
}

/// TFTP on the daemon serves what 6970 serves, to a real client (`curl tftp://`), and nothing
/// of an OAuth device.
#[tokio::test]
async fn tftp_serves_the_same_files_as_6970() {
    let s = TestServer::lab().await;
    let tftp = s
        .server()
        .listeners()
        .iter()
        .find(|l| l.node == NodeId(0) && l.service == sip_oauth_registrar::net::Service::Tftp)
        .expect("TFTP listener")
        .addr;
    let curl = |name: &'static str| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new("curl")
                .args([
                    "--silent",
                    "--max-time",
                    "10",
                    &format!("tftp://{tftp}/{name}"),
                ])
                .output()
                .expect("curl (Debian package `curl`, with TFTP)")
        })
    };
    let over_tftp = curl("SIPlegacy1.cnf.xml").await.unwrap();
    assert!(over_tftp.status.success(), "{over_tftp:?}");
    let over_http = plain_get(&s, "/SIPlegacy1.cnf.xml").await;
    assert_eq!(over_http.status, 200);
    assert_eq!(over_tftp.stdout, over_http.body, "the same rendered file");
    // An OAuth device's file is never sent without its owner's token: not over TFTP at all.
    for name in ["CSFrado.cnf.xml", "csfrado.CNF.xml", "/CSFRADO.cnf.xml"] {
        let refused = curl(name).await.unwrap();
        assert_eq!(
            refused.status.code(),
            Some(68),
            "{name}: TFTP file not found"
        );
    }
}

/// Case and encoding variants of an OAuth device's name reach the same rule as the name.
#[tokio::test]
async fn name_variants_of_an_oauth_device_get_no_file_without_a_token() {
    let s = TestServer::lab().await;
    for path in [
        "/csfrado.CNF.XML",
        "/CSFRADO.cnf.xml",
        "/%43SFrado.cnf.xml",
        "/CSFrado.cnf.xml?x=1",
    ] {
        let a = plain_get(&s, path).await;
        assert_eq!(a.status, 403, "6970 {path}: {}", a.text());
        let a = secure(&s, "GET", path, None).await;
        assert_eq!(a.status, 401, "6971 {path}: {}", a.text());
    }
    let a = secure(&s, "GET", "/csfrado.CNF.XML.SGN", None).await;
    assert_eq!(a.status, 401, "signed-file name variant: {}", a.text());
    let alice = s.password_token("alice").await;
    let a = secure(&s, "GET", "/csfrado.cnf.xml", Some(&alice)).await;
    assert_eq!(a.status, 403, "another user's token, name variant");
}
