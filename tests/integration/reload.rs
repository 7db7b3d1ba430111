//! Live operations against the real daemon over its admin socket: `utils sipOAuth-mode`
//! opening and closing 5090/5091, `show open ports`, `set cert regen tomcat` under a live
//! registration, and configuration reload (admin command and SIGHUP), good and bad.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sip_oauth_registrar::admin::{self, AdminError};
use sip_oauth_registrar::cluster::NodeId;
use sip_oauth_registrar::config::LAB_CONFIG;
use sip_oauth_registrar::net::ListenerKind::{MraOAuth, OAuth};
use sip_oauth_registrar::net::Transport::Tls;
use sip_oauth_registrar::net::WebPort;
use sip_oauth_registrar::server::ConfigSource;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::harness::*;

async fn admin(s: &TestServer, line: &str) -> Result<String, String> {
    admin::run_command(s.state.path(), line)
        .await
        .map_err(|e| match e {
            AdminError::Command { output } => output,
            other => panic!("admin interface: {other}"),
        })
}

fn leaf(c: &Client) -> Vec<u8> {
    let Client::Tls(tls, _) = c else {
        panic!("not TLS")
    };
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

async fn presented(
    addr: SocketAddr,
    ca: &str,
    client: Option<&sip_oauth_registrar::pki::CertAndKey>,
) -> Vec<u8> {
    let tls = tls_connect(addr, ca, client).await.expect("TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

fn tomcat_on_disk(s: &TestServer) -> Vec<u8> {
    CertificateDer::from_pem_file(s.state.path().join("certs/tomcat.pem"))
        .expect("tomcat.pem")
        .to_vec()
}

/// A registered CSFrado on 5090: the client, its last REGISTER and the token.
async fn registered_rado(s: &TestServer) -> (Client, Register, String) {
    let mut c = Client::tls(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None).await;
    let token = s.token("rado");
    let reg = Register::jabber("CSFrado", "1010").bearer(&token);
    let r = c.register(&reg).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    (c, reg, token)
}

async fn refresh(c: &mut Client, last: &mut Register, token: &str) -> Response {
    *last = last.next().bearer(token);
    c.register(last).await
}

async fn refused(addr: SocketAddr) -> bool {
    matches!(
        TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

/// `ClusterSIPOAuthMode` as Expressway-C reads it: AXL `executeSQLQuery` on 8443.
async fn axl_mode(s: &TestServer) -> String {
    use base64::Engine;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("admin:lab")
    );
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope \
         xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:ns=\"http://www.cisco.com/AXL/API/12.5\"><soapenv:Header/><soapenv:Body>\
         <ns:executeSQLQuery><sql>select paramvalue FROM processconfig WHERE paramname = \
         'ClusterSIPOAuthMode'</sql></ns:executeSQLQuery></soapenv:Body></soapenv:Envelope>";
    let req = http_request(
        "POST",
        "/axl/",
        &[
            ("content-type", "text/xml; charset=utf-8"),
            ("soapaction", "\"CUCM:DB ver=12.5\""),
            ("authorization", &auth),
        ],
        body,
    );
    let answer = https(s.web(0), s.lab_ca().cert_pem(), req).await;
    let text = answer.text();
    let value = text
        .split_once("<row><paramvalue>")
        .and_then(|(_, rest)| rest.split_once("</paramvalue>"))
        .map(|(v, _)| v.to_owned());
    value.unwrap_or_else(|| panic!("no paramvalue row: {text}"))
}

/// `show open ports` for the TCP listener on `port`: anchored on the protocol and the
/// state, so the UDP socket of another node that happens to share the port number cannot
/// match.
fn listening_on(port: &str) -> String {
    format!("show open ports regexp TCP .*:{port} \\(LISTEN\\)$")
}

const MODE_QUERY: &str =
    "run sql select paramvalue FROM processconfig WHERE paramname = 'ClusterSIPOAuthMode'";

#[tokio::test]
async fn regenerated_tomcat_serves_new_handshakes_while_the_old_connection_refreshes() {
    let s = TestServer::lab().await;
    let ca = s.lab_ca();
    let (mut c, mut last, token) = registered_rado(&s).await;
    let old = leaf(&c);
    assert_eq!(old, tomcat_on_disk(&s));
    let before = admin(&s, "show cert list own").await.unwrap();

    let out = admin(&s, "set cert regen tomcat").await.unwrap();
    assert!(
        out.starts_with("Successfully Regenerated Certificate for tomcat.\ntomcat/tomcat.pem: "),
        "{out}"
    );
    let new = tomcat_on_disk(&s);
    assert_ne!(new, old);

    // The established connection keeps its session and its registration refreshes.
    let r = refresh(&mut c, &mut last, &token).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(leaf(&c), old);
    assert_eq!(s.server().registrar().store().len(), 1);

    // Every next handshake on a tomcat port presents the new certificate, which chains to
    // the lab CA (tls_connect verifies it) with the same names (localhost here).
    let node = NodeId(0);
    let web = |p| s.server().web_addr(node, p).unwrap();
    assert_eq!(
        presented(s.addr(0, OAuth, Tls), ca.cert_pem(), None).await,
        new
    );
    let exp = s.expressway_cert();
    assert_eq!(
        presented(s.addr(0, MraOAuth, Tls), ca.cert_pem(), Some(&exp)).await,
        new
    );
    assert_eq!(
        presented(web(WebPort::TftpHttps), ca.cert_pem(), None).await,
        new
    );
    assert_eq!(
        presented(web(WebPort::Tomcat), ca.cert_pem(), None).await,
        new
    );
    // And a new connection registers with it.
    let mut c2 = Client::tls(s.addr(0, OAuth, Tls), ca.cert_pem(), None).await;
    let r = c2
        .register(&Register::jabber("CSFalice", "2001").bearer(&s.token("alice")))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);

    let after = admin(&s, "show cert list own").await.unwrap();
    let tomcat_line = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("tomcat/tomcat.pem: "))
            .unwrap()
            .to_owned()
    };
    assert_ne!(tomcat_line(&before), tomcat_line(&after));
    assert!(out.contains(&tomcat_line(&after)), "{out}\n{after}");
    assert!(tomcat_line(&after).contains("OU=tomcat"), "{after}");
    assert!(
        after
            .lines()
            .any(|l| l.starts_with("CallManager/callmanager.pem: ")),
        "{after}"
    );
}

/// A TLS file that has nothing to do with tomcat is broken: the new pair is checked with it
/// before anything is written, so the command is refused and the old pair stays on disk and
/// in force (`show cert list own` and the handshake agree).
#[tokio::test]
async fn regen_refused_by_another_bad_tls_file_changes_no_file() {
    let s = TestServer::lab().await;
    let ca = s.lab_ca();
    let certs = s.state.path().join("certs");
    let (cert_before, key_before) = (
        std::fs::read(certs.join("tomcat.pem")).unwrap(),
        std::fs::read(certs.join("tomcat-key.pem")).unwrap(),
    );
    let listed_before = admin(&s, "show cert list own").await.unwrap();
    std::fs::write(certs.join("callmanager-key.pem"), "not a key\n").unwrap();

    let out = admin(&s, "set cert regen tomcat").await.unwrap_err();
    assert!(out.contains("tls.callmanager_key"), "{out}");
    assert_eq!(
        std::fs::read(certs.join("tomcat.pem")).unwrap(),
        cert_before
    );
    assert_eq!(
        std::fs::read(certs.join("tomcat-key.pem")).unwrap(),
        key_before
    );
    assert_eq!(
        admin(&s, "show cert list own").await.unwrap(),
        listed_before
    );
    assert_eq!(
        presented(s.addr(0, OAuth, Tls), ca.cert_pem(), None).await,
        tomcat_on_disk(&s)
    );
}

#[tokio::test]
async fn mode_disable_closes_the_oauth_ports_and_enable_reopens_them_without_restart() {
    let mut s = TestServer::lab().await;
    let oauth = s.addr(0, OAuth, Tls);
    let mra = s.addr(1, MraOAuth, Tls);
    let (mut c, _, token) = registered_rado(&s).await;
    assert_eq!(
        admin(&s, MODE_QUERY).await.unwrap(),
        "paramvalue\n=====\n1\n"
    );
    let port = oauth.port().to_string();
    let listed = admin(&s, &listening_on(&port)).await.unwrap();
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines[..2], ["", "Executing.. please wait."], "{listed}");
    assert_eq!(lines.len(), 3, "{listed}");
    assert!(
        lines[2].ends_with(&format!("  TCP {oauth} (LISTEN)")) && lines[2].contains("  IPv4  "),
        "{listed}"
    );
    assert!(
        lines[2].contains(&format!(" {} ", std::process::id())),
        "{listed}"
    );

    let (oauth1, mra0) = (s.addr(1, OAuth, Tls), s.addr(0, MraOAuth, Tls));
    let out = admin(&s, "utils sipOAuth-mode disable").await.unwrap();
    assert_eq!(
        out,
        "SIP OAuth mode disabled.\nPlease restart the Cisco CallManager service on all nodes \
         in the cluster where it is running.\n"
    );
    // Closed like a CallManager restart: the connection ends, new ones are refused, on every
    // node; the rest serves on.
    // (read_to_close fails the test unless the daemon closes the connection.)
    let (_, _how_it_ended) = c.read_to_close().await;
    assert!(refused(oauth).await && refused(mra).await);
    assert!(refused(oauth1).await && refused(mra0).await);
    assert_eq!(s.try_addr(0, OAuth, Tls), None);
    assert_eq!(
        admin(&s, MODE_QUERY).await.unwrap(),
        "paramvalue\n=====\n0\n"
    );
    assert_eq!(axl_mode(&s).await, "0");
    assert_eq!(
        admin(&s, &listening_on(&port)).await.unwrap(),
        "\nExecuting.. please wait.\n"
    );
    assert!(s.server().listeners().iter().all(|l| l.addr != oauth));
    // The config file says so, and is now open on 6970 (CSFrado is no longer under OAuth).
    let tftp_http = s.server().web_addr(NodeId(0), WebPort::TftpHttp).unwrap();
    let file = http_plain(tftp_http, http_request("GET", "/CSFrado.cnf.xml", &[], "")).await;
    assert_eq!(file.status, 200);
    assert!(
        file.text().contains("<sipOAuthMode>0</sipOAuthMode>"),
        "{}",
        file.text()
    );
    assert_eq!(
        std::fs::read_to_string(s.state.path().join("sip-oauth-mode")).unwrap(),
        "0\n"
    );
    // UDS points Jabber at the plain-HTTP file too.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("rado:lab")
    );
    let devices = https(
        s.web(0),
        s.lab_ca().cert_pem(),
        http_request(
            "GET",
            "/cucm-uds/user/rado/devices",
            &[("Authorization", &basic)],
            "",
        ),
    )
    .await;
    assert_eq!(devices.status, 200, "{}", devices.text());
    assert!(
        devices
            .text()
            .contains(&format!("<uri>http://{tftp_http}/CSFrado.cnf.xml</uri>")),
        "{}",
        devices.text()
    );

    let out = admin(&s, "utils sipOAuth-mode enable").await.unwrap();
    assert_eq!(
        out,
        "SIP OAuth mode enabled.\nPlease restart the Cisco CallManager service on all nodes in \
         the cluster where it is running.\n"
    );
    // Same ports as before, on every node, no restart.
    assert_eq!(s.addr(0, OAuth, Tls), oauth);
    assert_eq!(
        (s.addr(1, OAuth, Tls), s.addr(0, MraOAuth, Tls)),
        (oauth1, mra0)
    );
    let mut c = Client::tls(oauth, s.lab_ca().cert_pem(), None).await;
    let r = c
        .register(&Register::jabber("CSFrado", "1010").bearer(&token))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let exp = s.expressway_cert();
    tls_connect(mra, s.lab_ca().cert_pem(), Some(&exp))
        .await
        .expect("5091 open again");
    assert_eq!(
        admin(&s, MODE_QUERY).await.unwrap(),
        "paramvalue\n=====\n1\n"
    );
    assert_eq!(axl_mode(&s).await, "1");
    assert_eq!(
        http_plain(tftp_http, http_request("GET", "/CSFrado.cnf.xml", &[], ""))
            .await
            .status,
        403,
        "under OAuth again: not on plain HTTP"
    );
    assert_eq!(
        admin(&s, &listening_on(&port))
            .await
            .unwrap()
            .lines()
            .count(),
        3
    );

    // The CLI's decision survives a restart (the file wins over the configuration).
    admin(&s, "utils sipOAuth-mode disable").await.unwrap();
    s.restart().await;
    assert!(!s.server().sip_oauth_mode());
    assert_eq!(s.try_addr(0, OAuth, Tls), None, "not accepting");
    assert_eq!(
        admin(&s, MODE_QUERY).await.unwrap(),
        "paramvalue\n=====\n0\n"
    );
}

/// A closed OAuth port is only reserved (bound, not listening): on Linux another socket with
/// `SO_REUSEADDR` may bind it too and listen first. `enable` then fails, and fails whole:
/// the mode, its file, the port rule and the other OAuth listeners stay as they were.
#[tokio::test]
async fn enable_that_cannot_listen_changes_nothing() {
    let s = TestServer::lab().await;
    let oauth = s.addr(0, OAuth, Tls);
    let mra = s.addr(1, MraOAuth, Tls);
    admin(&s, "utils sipOAuth-mode disable").await.unwrap();
    let thief = socket2::Socket::new(
        socket2::Domain::for_address(oauth),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .unwrap();
    thief.set_reuse_address(true).unwrap();
    if let Err(e) = thief.bind(&oauth.into()) {
        // Not Linux's SO_REUSEADDR semantics: the reservation holds and nothing can fail.
        eprintln!("skipped: the reserved port cannot be taken here ({e})");
        return;
    }
    thief.listen(8).unwrap();

    let out = admin(&s, "utils sipOAuth-mode enable").await.unwrap_err();
    assert!(out.contains(&format!("cannot listen on {oauth}")), "{out}");
    assert!(!s.server().sip_oauth_mode());
    assert_eq!(
        std::fs::read_to_string(s.state.path().join("sip-oauth-mode")).unwrap(),
        "0\n"
    );
    assert_eq!(
        admin(&s, MODE_QUERY).await.unwrap(),
        "paramvalue\n=====\n0\n"
    );
    assert!(refused(mra).await, "5091 opened by a failed enable");
    assert_eq!(s.try_addr(1, MraOAuth, Tls), None);
    // Config files still follow the disabled mode (plain HTTP on 6970).
    let tftp_http = s.server().web_addr(NodeId(0), WebPort::TftpHttp).unwrap();
    let file = http_plain(tftp_http, http_request("GET", "/CSFrado.cnf.xml", &[], "")).await;
    assert_eq!(file.status, 200);

    // Once the port is free again, enable works.
    drop(thief);
    admin(&s, "utils sipOAuth-mode enable").await.unwrap();
    assert!(s.server().sip_oauth_mode());
    assert_eq!(s.addr(0, OAuth, Tls), oauth);
    assert_eq!(s.addr(1, MraOAuth, Tls), mra);
}

/// Lab config with bob's SEP001122334455 removed, the devices before it reversed and a new device
/// added first: every remaining device has a new position.
fn reshuffled() -> String {
    let (head, rest) = LAB_CONFIG.split_once("[[devices]]").unwrap();
    let mut devices: Vec<String> = rest.split("[[devices]]").map(str::to_owned).collect();
    let tail_start = devices.last().unwrap().find("\n[[").map(|i| i + 1);
    let mut tail = String::new();
    if let Some(i) = tail_start {
        let last = devices.last_mut().unwrap();
        tail = last[i..].to_owned();
        last.truncate(i);
    }
    devices.retain(|d| !d.contains("name = \"SEP001122334455\""));
    devices.reverse();
    let added = devices
        .iter()
        .find(|d| d.contains("name = \"CSFalice\""))
        .unwrap()
        .replace("CSFalice", "CSFalice2")
        .replace("dn = \"2001\"", "dn = \"2009\"");
    devices.insert(0, added);
    let mut out = head.to_owned();
    for d in devices {
        out.push_str("[[devices]]");
        out.push_str(&d);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(&tail);
    out
}

async fn with_config_file(toml: &str) -> (TestServer, std::path::PathBuf) {
    let s = TestServer::start(toml).await;
    let path = s.state.path().join("reload-test.toml");
    std::fs::write(&path, toml).unwrap();
    s.server()
        .set_config_source(ConfigSource::File(path.clone()));
    (s, path)
}

#[tokio::test]
async fn reload_reorders_adds_and_removes_devices_keeping_registrations() {
    let (s, path) = with_config_file(LAB_CONFIG).await;
    let (mut c, mut last, token) = registered_rado(&s).await;
    let mut m = Client::tls(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None).await;
    let r = m
        .register(&Register::jabber("SEP001122334455", "2002").bearer(&s.token("bob")))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let old_id = s
        .server()
        .registrar()
        .cluster()
        .device_by_name("CSFrado")
        .unwrap();

    let toml = reshuffled();
    std::fs::write(&path, &toml).unwrap();
    let out = admin(&s, "utils reload config").await.unwrap();
    assert!(out.starts_with("Configuration reloaded: "), "{out}");
    assert!(
        out.contains("Registrations kept: 1; dropped with their device: 1."),
        "{out}"
    );

    let cluster = s.server().registrar().cluster();
    let new_id = cluster.device_by_name("CSFrado").unwrap();
    assert_ne!(new_id, old_id, "the test moves the device");
    assert!(cluster.device_by_name("SEP001122334455").is_none());
    let now = Instant::now();
    let b = s
        .server()
        .registrar()
        .store()
        .lookup(new_id, now)
        .expect("kept");
    assert_eq!(&*b.call_id, last.call_id.as_str());
    assert_eq!(s.server().registrar().store().len(), 1);

    // The established connection refreshes as the same client: no new registration.
    let r = refresh(&mut c, &mut last, &token).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(
        !r.header("Contact").unwrap().contains("x-cisco-newreg"),
        "{}",
        r.raw
    );
    // The removed device is gone; the added one registers.
    let r = m
        .register(&Register::jabber("SEP001122334455", "2002").bearer(&s.token("bob")))
        .await;
    assert_eq!(r.status, 404, "{}", r.raw);
    let r = m
        .register(&Register::jabber("CSFalice2", "2009").bearer(&s.token("alice")))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

#[tokio::test]
async fn a_bad_reload_names_every_error_and_changes_nothing() {
    let (s, path) = with_config_file(LAB_CONFIG).await;
    let (mut c, mut last, token) = registered_rado(&s).await;
    let cluster = s.server().registrar().cluster();

    // Two semantic errors: both named.
    let bad = LAB_CONFIG
        .replacen(
            "keepalive_interval_secs =",
            "keepalive_interval_secs = 0 #",
            1,
        )
        .replace("name = \"CSFalice\"", "name = \"CSFrado\"");
    std::fs::write(&path, &bad).unwrap();
    let err = admin(&s, "utils reload config").await.unwrap_err();
    assert!(
        err.starts_with("Executed command unsuccessfully\nConfiguration not reloaded: "),
        "{err}"
    );
    let named: Vec<&str> = err.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(err.contains(&format!("{} error(s)", named.len())), "{err}");
    assert!(
        named.contains(&"  cluster.keepalive_interval_secs: 0 is out of range 1..=86400"),
        "{err}"
    );
    assert!(
        named.contains(&"  devices[1].name: duplicate device \"CSFrado\""),
        "{err}"
    );

    // Missing certificate files: each named.
    let bad = LAB_CONFIG
        .replace("\"certs/tomcat.pem\"", "\"certs/missing-tomcat.pem\"")
        .replace(
            "callmanager_key = \"certs/callmanager-key.pem\"",
            "callmanager_key = \"certs/nope.pem\"",
        );
    std::fs::write(&path, &bad).unwrap();
    let err = admin(&s, "utils reload config").await.unwrap_err();
    assert!(err.contains("2 error(s)"), "{err}");
    assert!(
        err.contains("tls.tomcat_cert") && err.contains("missing-tomcat.pem"),
        "{err}"
    );
    assert!(
        err.contains("tls.callmanager_key") && err.contains("nope.pem"),
        "{err}"
    );

    // A syntax error.
    std::fs::write(&path, "[cluster\n").unwrap();
    let err = s.server().reload().await.unwrap_err();
    assert_eq!(err.len(), 1, "{err:?}");

    // Serving as before: same model, the registration refreshes, new handshakes work.
    assert!(std::sync::Arc::ptr_eq(
        &cluster,
        &s.server().registrar().cluster()
    ));
    let r = refresh(&mut c, &mut last, &token).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let mut c2 = Client::tls(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None).await;
    let r = c2
        .register(&Register::jabber("CSFalice", "2001").bearer(&s.token("alice")))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

#[tokio::test]
async fn a_reload_moves_a_listener_whose_port_changed() {
    let (s, path) = with_config_file(LAB_CONFIG).await;
    let old = s.addr(0, OAuth, Tls);
    let other = s.addr(1, OAuth, Tls);
    let (mut c, _, _) = registered_rado(&s).await;
    // Only node 0's OAuth port changes (the lab's first `sip_oauth_port`).
    std::fs::write(
        &path,
        LAB_CONFIG.replacen("sip_oauth_port = 5090", "sip_oauth_port = 15090", 1),
    )
    .unwrap();
    let out = s.server().reload().await.unwrap();
    let new = s.addr(0, OAuth, Tls);
    assert_ne!(new, old);
    assert!(out.contains(&format!("moved to {new}")), "{out}");
    assert!(refused(old).await);
    assert_eq!(s.addr(1, OAuth, Tls), other, "unchanged ports stay");
    let mut c2 = Client::tls(new, s.lab_ca().cert_pem(), None).await;
    let r = c2
        .register(&Register::jabber("CSFalice", "2001").bearer(&s.token("alice")))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    // The moved listener's connections closed with it; the file publishes the new port.
    let (_, _how_it_ended) = c.read_to_close().await;
    let file = s.server().provisioning().ports();
    assert_eq!(file[0].sip_oauth, new.port());
}

#[tokio::test]
async fn sighup_reloads() {
    let (s, path) = with_config_file(LAB_CONFIG).await;
    s.server().reload_on_sighup().unwrap();
    std::fs::write(&path, reshuffled()).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .server()
        .registrar()
        .cluster()
        .device_by_name("CSFalice2")
        .is_none()
    {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether 5091 takes a REGISTER from `cert` (TLS 1.3 reports a refused client certificate
/// at the first read, not at the handshake).
async fn mra_accepts(s: &TestServer, cert: &sip_oauth_registrar::pki::CertAndKey) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut tls) =
        tls_connect(s.addr(0, MraOAuth, Tls), s.lab_ca().cert_pem(), Some(cert)).await
    else {
        return false;
    };
    if tls
        .write_all(&Register::jabber("CSFrado", "1010").bytes())
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(WAIT, tls.read(&mut buf)).await.expect("answer in time"),
        Ok(n) if n > 0
    )
}

#[tokio::test]
async fn reload_takes_new_certificates_trust_stores_and_expressway_entries() {
    let (s, path) = with_config_file(LAB_CONFIG).await;
    let (mut c, mut last, token) = registered_rado(&s).await;
    let certs = s.state.path().join("certs");

    // An operator's new tomcat pair (same CA), and a second CA trusted for a new Expressway-C.
    let tomcat = s
        .lab_ca()
        .issue_server_for_unit(
            "UCM-PUB",
            Some("tomcat"),
            &["localhost".into(), "127.0.0.1".into(), "127.0.0.2".into()],
        )
        .unwrap();
    std::fs::write(certs.join("tomcat2.pem"), &tomcat.cert_pem).unwrap();
    std::fs::write(certs.join("tomcat2-key.pem"), &tomcat.key_pem).unwrap();
    let other = sip_oauth_registrar::pki::Authority::generate("Other Lab CA").unwrap();
    std::fs::write(certs.join("other-ca.pem"), other.cert_pem()).unwrap();
    let exp2 = other.issue_client("exp-c2.other.lab", &[]).unwrap();
    assert!(
        !mra_accepts(&s, &exp2).await,
        "unknown CA before the reload"
    );

    let toml = LAB_CONFIG
        .replace("\"certs/tomcat.pem\"", "\"certs/tomcat2.pem\"")
        .replace("\"certs/tomcat-key.pem\"", "\"certs/tomcat2-key.pem\"")
        .replace(
            "tomcat_trust = [\"certs/lab-ca.pem\"]",
            "tomcat_trust = [\"certs/lab-ca.pem\", \"certs/other-ca.pem\"]",
        )
        .replace(
            "[[expressway_c]]",
            "[[expressway_c]]\nhost = \"exp-c2\"\ndescription = \"second\"\nsubject_names = [\"exp-c2.other.lab\"]\n\n[[expressway_c]]",
        );
    assert_ne!(toml, LAB_CONFIG);
    std::fs::write(&path, &toml).unwrap();
    let out = admin(&s, "utils reload config").await.unwrap();
    assert!(out.contains("2 Expressway-C entr(ies)"), "{out}");

    let new = CertificateDer::from_pem_slice(tomcat.cert_pem.as_bytes())
        .unwrap()
        .to_vec();
    assert_eq!(
        presented(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None).await,
        new
    );
    assert!(
        mra_accepts(&s, &exp2).await,
        "trusted and listed after the reload"
    );
    assert!(
        mra_accepts(&s, &s.expressway_cert()).await,
        "the lab one still is"
    );
    let sql = admin(&s, "run sql select * from expresswaycconfiguration")
        .await
        .unwrap();
    assert!(
        sql.contains("exp-c2") && sql.contains("exp-c2.other.lab"),
        "{sql}"
    );
    // The registration made before is untouched and refreshes on its old session.
    let r = refresh(&mut c, &mut last, &token).await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

/// `show open ports` agrees with the real `lsof` on every column but the command name's
/// width, for every OAuth listener of the daemon.
#[tokio::test]
async fn show_open_ports_matches_lsof() {
    let s = TestServer::lab().await;
    for addr in [s.addr(0, OAuth, Tls), s.addr(1, MraOAuth, Tls)] {
        let ours = admin(
            &s,
            &format!("show open ports regexp TCP {addr} \\(LISTEN\\)$"),
        )
        .await
        .unwrap();
        let ours: Vec<&str> = ours.lines().skip(2).collect();
        assert_eq!(ours.len(), 1, "{ours:?}");
        let out = std::process::Command::new("lsof")
            .args(["-nP", "-a", "-p", &std::process::id().to_string()])
            .arg(format!("-iTCP@{addr}"))
            .args(["-sTCP:LISTEN"])
            .output();
        let Ok(out) = out else {
            // .ci/run installs it; a bare `cargo test` on a machine without it has nothing
            // to compare with.
            eprintln!("skipped: lsof is not installed (.ci/run installs it)");
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        let theirs: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(theirs.len(), 1, "{text}");
        let fields = |l: &str| {
            l.split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fields(ours[0]),
            fields(theirs[0]),
            "\nours:   {}\nlsof:   {}",
            ours[0],
            theirs[0]
        );
        assert_eq!(
            ours[0].split_whitespace().next(),
            theirs[0].split_whitespace().next(),
            "command"
        );
    }
}

/// The lab with user carol (password `lab`) and her device CSFcarol (Secure OAuth profile).
fn with_carol() -> String {
    let rado_hash = LAB_CONFIG
        .split_once("id = \"rado\"")
        .and_then(|(_, rest)| rest.split_once("password_hash = "))
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap();
    let added = format!(
        "[[users]]\nid = \"carol\"\nactive = true\npassword_hash = {rado_hash}\n\n\
         [[devices]]\nname = \"CSFcarol\"\nproduct_type = \"Cisco Unified Client Services Framework\"\n\
         owner = \"carol\"\nprofile = \"Cisco Unified Client Services Framework - Secure OAuth\"\n\
         lines = [{{ dn = \"3001\", display_name = \"Carol\", contact = \"3c9b1a2e-1f00-4c2e-9a8d-6e5f4a3b2c03\" }}]\n\n"
    );
    LAB_CONFIG.replacen("[[devices]]", &format!("{added}[[devices]]"), 1)
}

async fn password_grant(s: &TestServer, user: &str) -> HttpAnswer {
    let client = format!("C{}", "cd".repeat(32));
    s.post_form(
        "/ssosp/oauth/token",
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", "lab"),
            ("client_id", &client),
        ],
    )
    .await
}

async fn uds_devices(s: &TestServer, user: &str) -> HttpAnswer {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:lab"))
    );
    https(
        s.web(0),
        s.lab_ca().cert_pem(),
        http_request(
            "GET",
            &format!("/cucm-uds/user/{user}/devices"),
            &[("Authorization", &basic)],
            "",
        ),
    )
    .await
}

/// One reload changes the token service, UDS and the config files with the registrar: a
/// user and device added by it get tokens, are listed and have their file served.
#[tokio::test]
async fn a_reload_that_adds_a_user_and_device_reaches_tokens_uds_and_config_files() {
    let (s, path) = with_config_file(LAB_CONFIG).await;
    let tftp_http = s.server().web_addr(NodeId(0), WebPort::TftpHttp).unwrap();
    let tftp_https = s.server().web_addr(NodeId(0), WebPort::TftpHttps).unwrap();
    let get_cnf = || http_request("GET", "/CSFcarol.cnf.xml", &[], "");
    // Before: nobody knows carol.
    assert_eq!(password_grant(&s, "carol").await.status, 400);
    assert_eq!(http_plain(tftp_http, get_cnf()).await.status, 404);

    std::fs::write(&path, with_carol()).unwrap();
    let out = admin(&s, "utils reload config").await.unwrap();
    assert!(out.contains("Configuration reloaded"), "{out}");
    assert!(!out.contains("Warning"), "{out}");

    // The token service knows her (password grant on 8443)...
    let token = s.password_token("carol").await;
    // ...UDS lists her device, with its config-file URL...
    let devices = uds_devices(&s, "carol").await;
    assert_eq!(devices.status, 200, "{}", devices.text());
    assert!(
        devices.text().contains("<name>CSFcarol</name>")
            && devices.text().contains("CSFcarol.cnf.xml"),
        "{}",
        devices.text()
    );
    // ...its file exists: under OAuth, so not on plain 6970 (403, no longer 404), and on
    // 6971 to its owner's token.
    assert_eq!(http_plain(tftp_http, get_cnf()).await.status, 403);
    let file = https(
        tftp_https,
        s.lab_ca().cert_pem(),
        http_request(
            "GET",
            "/CSFcarol.cnf.xml",
            &[("Authorization", &format!("Bearer {token}"))],
            "",
        ),
    )
    .await;
    assert_eq!(file.status, 200, "{}", file.text());
    assert!(file.text().contains("3001"), "{}", file.text());
    // And she registers on 5090 with that token.
    let mut c = Client::tls(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None).await;
    let r = c
        .register(&Register::jabber("CSFcarol", "3001").bearer(&token))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

/// A user deactivated by a reload gets no more tokens.
#[tokio::test]
async fn a_reload_that_deactivates_a_user_stops_their_password_grant() {
    let (s, path) = with_config_file(LAB_CONFIG).await;
    assert_eq!(password_grant(&s, "rado").await.status, 200);
    let toml = LAB_CONFIG.replacen(
        "id = \"rado\"\nactive = true",
        "id = \"rado\"\nactive = false",
        1,
    );
    assert_ne!(toml, LAB_CONFIG);
    std::fs::write(&path, toml).unwrap();
    admin(&s, "utils reload config").await.unwrap();
    let refused = password_grant(&s, "rado").await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("not active"), "{}", refused.text());
    let devices = uds_devices(&s, "rado").await;
    assert_ne!(devices.status, 200, "{}", devices.text());
}

/// A changed cluster UUID is refused by name; a changed `[limits]` is taken with a warning
/// that it waits for the next start.
#[tokio::test]
async fn a_reload_refuses_a_new_uuid_and_warns_about_restart_only_settings() {
    let (s, path) = with_config_file(LAB_CONFIG).await;
    let uuid_line = LAB_CONFIG
        .lines()
        .find(|l| l.starts_with("uuid = "))
        .unwrap();
    let toml = LAB_CONFIG.replacen(
        uuid_line,
        "uuid = \"00000000-0000-4000-8000-000000000001\"",
        1,
    );
    std::fs::write(&path, &toml).unwrap();
    let err = admin(&s, "utils reload config").await.unwrap_err();
    assert!(err.contains("cluster.uuid: "), "{err}");

    let toml = LAB_CONFIG.replacen("max_headers = 64", "max_headers = 77", 1);
    assert_ne!(toml, LAB_CONFIG);
    std::fs::write(&path, &toml).unwrap();
    let out = admin(&s, "utils reload config").await.unwrap();
    assert!(
        out.contains("Warning: [limits] changed; takes effect at the next start"),
        "{out}"
    );
    // Still not in force: the next reload says so again.
    let out = admin(&s, "utils reload config").await.unwrap();
    assert!(out.contains("Warning: [limits] changed"), "{out}");
}

/// Ports swapped between listeners of a node are refused by name (not as a port in use), and
/// both listeners keep serving where they were.
#[tokio::test]
async fn a_reload_that_swaps_ports_between_listeners_is_refused_as_needing_a_restart() {
    let (s, path) = with_config_file(LAB_CONFIG).await;
    let before = s.server().web_addr(NodeId(0), WebPort::TftpHttp).unwrap();
    let toml = LAB_CONFIG
        .replacen("tftp_http_port = 6970", "tftp_http_port = 6999", 1)
        .replacen("tftp_https_port = 6971", "tftp_https_port = 6970", 1)
        .replacen("tftp_http_port = 6999", "tftp_http_port = 6971", 1);
    assert!(
        toml.contains("tftp_http_port = 6971\ntftp_https_port = 6970"),
        "{toml}"
    );
    std::fs::write(&path, toml).unwrap();
    let err = admin(&s, "utils reload config").await.unwrap_err();
    assert!(
        err.contains("nodes.UCM-PUB.ports: ")
            && err.contains("swapping ports between listeners needs a restart"),
        "{err}"
    );
    assert_eq!(
        s.server().web_addr(NodeId(0), WebPort::TftpHttp).unwrap(),
        before
    );
    let file = http_plain(before, http_request("GET", "/SIPlegacy1.cnf.xml", &[], "")).await;
    assert_eq!(file.status, 200);
}
