//! The documented TLS failures (issue #17, docs/ucm.md §3), each reproduced with a real TLS client,
//! `openssl s_client`, against the real server, plus the 5061 rows of the port table with the
//! lab's device certificates (LSCs) and the `certs init` / `certs show` commands.
//!
//! `-msg` makes s_client print every TLS record it sends (`>>>`) and receives (`<<<`), so the
//! tests read on the wire who sent which alert; the bad certificates are made here with rcgen.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use sip_oauth_registrar::config::LAB_CONFIG;
use sip_oauth_registrar::net::ListenerKind::{MraOAuth, OAuth, SipSecure};
use sip_oauth_registrar::net::Transport::Tls;
use sip_oauth_registrar::pki::{Authority, CertAndKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_sip-oauth-registrar");
const VERSIONS: [&str; 2] = ["-tls1_2", "-tls1_3"];
const DAY: Duration = Duration::from_secs(86_400);

/// What one `openssl s_client` run printed.
#[derive(Debug)]
struct SClient {
    /// stdout then stderr.
    out: String,
}

impl SClient {
    fn has(&self, needle: &str) -> bool {
        self.out.contains(needle)
    }

    /// The first SIP response s_client printed, if any.
    fn sip(&self) -> Option<Response> {
        let start = self.out.find("SIP/2.0 ")?;
        let rest = &self.out[start..];
        let end = rest.find("\r\n\r\n")? + 4;
        Some(Response::parse(&rest[..end]))
    }
}

/// Files for one s_client run: the trust anchors and the client certificate.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// Runs `openssl s_client -connect addr -msg -ign_eof <args>`, sends `request` once the
/// handshake is done, and collects the output until s_client exits (a refused handshake ends
/// it) or a full SIP response has been printed (then it is killed: the server keeps the
/// connection open).
async fn s_client(addr: SocketAddr, args: Vec<String>, request: Vec<u8>) -> SClient {
    s_client_until(addr, args, request, None).await
}

/// Like [`s_client`], also stopping once the output contains `marker`.
async fn s_client_until(
    addr: SocketAddr,
    args: Vec<String>,
    request: Vec<u8>,
    marker: Option<&'static str>,
) -> SClient {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .arg("s_client")
            .arg("-connect")
            .arg(addr.to_string())
            .args(["-msg", "-ign_eof"])
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("openssl on PATH (the test setup installs it)");
        let mut stdin = child.stdin.take().unwrap();
        // openssl may have exited already (a bad flag): its output, checked below, says why.
        let _ = stdin.write_all(&request);
        // EOF on stdin: with -ign_eof s_client keeps reading what the server sends.
        drop(stdin);
        let collect = |mut r: Box<dyn Read + Send>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let b = buf.clone();
            let reader = std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            (buf, reader)
        };
        let (stdout, out_reader) = collect(Box::new(child.stdout.take().unwrap()));
        let (stderr, err_reader) = collect(Box::new(child.stderr.take().unwrap()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let answered = |b: &[u8]| {
            let text = String::from_utf8_lossy(b);
            text.find("SIP/2.0 ")
                .is_some_and(|i| text[i..].contains("\r\n\r\n"))
                || marker.is_some_and(|m| text.contains(m))
        };
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if answered(&stdout.lock().unwrap()) || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The readers end at EOF, once the process is gone.
        out_reader.join().unwrap();
        err_reader.join().unwrap();
        let mut out = String::from_utf8_lossy(&stdout.lock().unwrap()).into_owned();
        out.push_str(&String::from_utf8_lossy(&stderr.lock().unwrap()));
        SClient { out }
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn path_arg(flag: &str, p: &Path) -> [String; 2] {
    [flag.to_owned(), p.display().to_string()]
}

/// s_client arguments: trust `ca`, present `cert` (if any), in TLS `version` (`-tls1_2`...).
fn client_args(files: &Files, version: &str, ca: &str, cert: Option<&CertAndKey>) -> Vec<String> {
    let mut a = args(&[version, "-verify_return_error"]);
    a.extend(path_arg("-CAfile", &files.write("ca.pem", ca)));
    if let Some(c) = cert {
        a.extend(path_arg("-cert", &files.write("cert.pem", &c.cert_pem)));
        a.extend(path_arg("-key", &files.write("key.pem", &c.key_pem)));
    }
    a
}

/// The record s_client prints for an alert it sent (`>>>`) or received (`<<<`).
fn alert_line(dir: &str, version: &str, alert: &str) -> String {
    let v = if version == "-tls1_2" { "1.2" } else { "1.3" };
    format!("{dir} TLS {v}, Alert [length 0002], fatal {alert}")
}

/// Asserts the server refused the handshake with `alert` (s_client's `-msg` line and its error
/// text) and that no SIP answer came through.
#[track_caller]
fn assert_refused(r: &SClient, version: &str, alert: &str, error_text: &str, case: &str) {
    let line = alert_line("<<<", version, alert);
    assert!(r.has(&line), "{case} {version}: no {line:?} in\n{}", r.out);
    assert!(
        r.has(error_text),
        "{case} {version}: no {error_text:?} in\n{}",
        r.out
    );
    assert!(r.sip().is_none(), "{case} {version}: SIP answer\n{}", r.out);
}

fn register(device: &str, dn: &str) -> Vec<u8> {
    Register::jabber(device, dn).bytes()
}

/// A TCP relay in front of `server` for one connection: returns its address and a task that
/// ends with how the server closed its side (`Ok` for FIN, the error for RST), which openssl
/// itself does not report once it has the alert.
async fn relay(server: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (client, _) = listener.accept().await?;
        let upstream = TcpStream::connect(server).await?;
        let (mut client_rd, mut client_wr) = client.into_split();
        let (mut up_rd, mut up_wr) = upstream.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut client_rd, &mut up_wr).await;
            let _ = up_wr.shutdown().await;
        });
        let mut buf = [0u8; 4096];
        // Only the server side's read may end the task with an error: a write to openssl
        // after it exited (EPIPE, a reset of our own) says nothing about the server.
        let mut client_gone = false;
        loop {
            let n = up_rd.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            if !client_gone {
                client_gone = client_wr.write_all(&buf[..n]).await.is_err();
            }
        }
    });
    (addr, task)
}

fn basic_admin() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode("admin:lab");
    format!("Basic {token}")
}

/// `addExpresswayCConfiguration` over AXL on 8443, as Expressway-C sends it (docs/ucm.md §10).
async fn axl_add(s: &TestServer, host: &str, names: &str) -> HttpAnswer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
         <soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
         xmlns:ns=\"http://www.cisco.com/AXL/API/12.5\"><soapenv:Header/><soapenv:Body>\
         <ns:addExpresswayCConfiguration><expresswayCConfiguration>\
         <HostNameOrIP>{host}</HostNameOrIP><description>added through axl</description>\
         <X509SubjectNameorSubjectAlternateName>{names}</X509SubjectNameorSubjectAlternateName>\
         </expresswayCConfiguration></ns:addExpresswayCConfiguration>\
         </soapenv:Body></soapenv:Envelope>"
    );
    let auth = basic_admin();
    let req = http_request(
        "POST",
        "/axl/",
        &[
            ("content-type", "text/xml; charset=utf-8"),
            (
                "soapaction",
                "\"CUCM:DB ver=12.5 addExpresswayCConfiguration\"",
            ),
            ("authorization", &auth),
        ],
        body,
    );
    https(s.web(0), s.lab_ca().cert_pem(), req).await
}

/// Expressway-C does not trust UCM's tomcat certificate: the *client* aborts with its own
/// `unknown_ca` alert after the server's Certificate (docs/ucm.md §3), on the MRA and OAuth ports.
#[tokio::test]
async fn client_not_trusting_tomcat_sends_unknown_ca() {
    let s = TestServer::lab().await;
    let files = Files::new();
    let stranger = Authority::generate("Some Other Root").unwrap();
    for (kind, cert) in [(MraOAuth, Some(s.expressway_cert())), (OAuth, None)] {
        for v in VERSIONS {
            let r = s_client(
                s.addr(0, kind, Tls),
                client_args(&files, v, stranger.cert_pem(), cert.as_ref()),
                register("CSFrado", "1010"),
            )
            .await;
            let case = format!("{kind:?}");
            assert!(
                r.has("verify error:num=20:unable to get local issuer certificate"),
                "{case} {v}\n{}",
                r.out
            );
            let sent = alert_line(">>>", v, "unknown_ca");
            assert!(r.has(&sent), "{case} {v}: no {sent:?} in\n{}", r.out);
            assert!(r.has("certificate verify failed"), "{case} {v}\n{}", r.out);
            assert!(r.sip().is_none(), "{case} {v}\n{}", r.out);
        }
    }
    // The control: the same client trusting the lab CA gets the daemon's answer.
    let r = s_client(
        s.addr(0, MraOAuth, Tls),
        client_args(
            &files,
            "-tls1_3",
            s.lab_ca().cert_pem(),
            Some(&s.expressway_cert()),
        ),
        register("CSFrado", "1010"),
    )
    .await;
    assert_eq!(r.sip().map(|a| a.status), Some(407), "{}", r.out);
    assert!(r.has("Verify return code: 0 (ok)"), "{}", r.out);
}

/// UCM does not trust Expressway-C's certificate: our fatal `unknown_ca`, then the TCP
/// connection is reset rather than closed (docs/ucm.md §3). A leaf of a foreign CA naming the listed
/// Expressway-C, and a self-signed certificate as `openssl req -x509` makes it.
#[tokio::test]
async fn untrusted_client_ca_gets_our_unknown_ca_then_a_reset() {
    let s = TestServer::lab().await;
    let files = Files::new();
    let stranger = Authority::generate("Some Other CA").unwrap();
    let foreign = stranger
        .issue_client("exp-c.domain-1.com", &["exp-c.domain-1.com".into()])
        .unwrap();
    // Named as the listed Expressway-C, so only the chain check can refuse it.
    let own = Authority::generate("exp-c.domain-1.com").unwrap();
    let self_signed = CertAndKey {
        cert_pem: own.cert_pem().to_owned(),
        key_pem: own.key_pem().to_owned(),
    };
    for (case, cert) in [("foreign CA", &foreign), ("self-signed", &self_signed)] {
        for v in VERSIONS {
            let (addr, closed) = relay(s.addr(0, MraOAuth, Tls)).await;
            // Nothing to send: unread data at close would make any socket reset by itself.
            let r = s_client(
                addr,
                client_args(&files, v, s.lab_ca().cert_pem(), Some(cert)),
                Vec::new(),
            )
            .await;
            assert_refused(&r, v, "unknown_ca", "tlsv1 alert unknown ca", case);
            assert!(r.has("SSL alert number 48"), "{case} {v}\n{}", r.out);
            let how = tokio::time::timeout(WAIT, closed).await.unwrap().unwrap();
            assert_eq!(
                how.map_err(|e| e.kind()),
                Err(std::io::ErrorKind::ConnectionReset),
                "{case} {v}: RST after the alert"
            );
        }
    }
}

/// Right CA, but neither the CN nor any SAN is an Expressway-C entry's name: `unknown_ca`.
#[tokio::test]
async fn trusted_certificate_naming_no_entry_gets_unknown_ca() {
    let s = TestServer::lab().await;
    let files = Files::new();
    let ca = s.lab_ca();
    let unlisted = ca
        .issue_client(
            "jabber.domain-3.com",
            &["jabber.domain-3.com".into(), "10.0.0.9".into()],
        )
        .unwrap();
    // Only the CN matches nothing and there are no SANs at all.
    let bare = ca.issue_client("exp-c", &[]).unwrap();
    for (case, cert) in [("unlisted names", &unlisted), ("host, not a name", &bare)] {
        for v in VERSIONS {
            let r = s_client(
                s.addr(0, MraOAuth, Tls),
                client_args(&files, v, ca.cert_pem(), Some(cert)),
                register("CSFrado", "1010"),
            )
            .await;
            // s_client verified our side: the refusal is the server's.
            assert!(r.has("Verify return code: 0 (ok)"), "{case} {v}\n{}", r.out);
            assert_refused(&r, v, "unknown_ca", "tlsv1 alert unknown ca", case);
        }
    }
}

/// An expired or not-yet-valid client certificate from the right CA, naming the right entry.
/// On the MRA port UCM's one answer to an untrusted Expressway-C applies (`unknown_ca`); on the
/// legacy secure port the device certificate check says what is wrong (`certificate_expired`,
/// which TLS also uses for "not yet valid").
#[tokio::test]
async fn expired_or_not_yet_valid_client_certificate_is_refused() {
    let s = TestServer::lab().await;
    let files = Files::new();
    let ca = s.lab_ca();
    let now = SystemTime::now();
    let periods = [
        ("expired", now - DAY * 30, now - DAY),
        ("not yet valid", now + DAY, now + DAY * 30),
    ];
    for (case, from, to) in periods {
        let exp_c = ca
            .issue_client_valid("exp-c.domain-1.com", &[], from, to)
            .unwrap();
        let lsc = ca
            .issue_client_valid("SEP0011223344AA", &[], from, to)
            .unwrap();
        for v in VERSIONS {
            let r = s_client(
                s.addr(0, MraOAuth, Tls),
                client_args(&files, v, ca.cert_pem(), Some(&exp_c)),
                register("CSFrado", "1010"),
            )
            .await;
            assert_refused(&r, v, "unknown_ca", "tlsv1 alert unknown ca", case);
            let r = s_client(
                s.addr(0, SipSecure, Tls),
                client_args(&files, v, ca.cert_pem(), Some(&lsc)),
                register("SEP0011223344AA", "2003"),
            )
            .await;
            assert_refused(
                &r,
                v,
                "certificate_expired",
                "sslv3 alert certificate expired",
                case,
            );
        }
    }
    // The same names in a certificate valid now pass both ports.
    let r = s_client(
        s.addr(0, SipSecure, Tls),
        client_args(
            &files,
            "-tls1_3",
            ca.cert_pem(),
            Some(&ca.issue_client("SEP0011223344AA", &[]).unwrap()),
        ),
        register("SEP0011223344AA", "2003"),
    )
    .await;
    assert_eq!(r.sip().map(|a| a.status), Some(200), "{}", r.out);
}

/// No client certificate on the MRA port: the handshake fails (rustls sends
/// `certificate_required`, over TLS 1.2 as well) and nothing reaches the registrar.
#[tokio::test]
async fn no_client_certificate_on_the_mra_port_is_refused() {
    let s = TestServer::lab().await;
    let files = Files::new();
    for v in VERSIONS {
        let r = s_client(
            s.addr(0, MraOAuth, Tls),
            client_args(&files, v, s.lab_ca().cert_pem(), None),
            register("CSFrado", "1010"),
        )
        .await;
        // The server asked, naming the CA it trusts.
        assert!(
            r.has("Acceptable client certificate CA names\nCN = sip-oauth-registrar lab CA"),
            "{v}\n{}",
            r.out
        );
        assert_refused(
            &r,
            v,
            "certificate_required",
            "alert certificate required",
            "no certificate",
        );
    }
}

/// Expressway-C's certificate names nothing in the table until Expressway-C pushes its names
/// over AXL; the very next handshake then passes, and a REGISTER with a token gets 200.
#[tokio::test]
async fn certificate_is_accepted_right_after_its_san_is_added_over_axl() {
    let s = TestServer::lab().await;
    let files = Files::new();
    let ca = s.lab_ca();
    let cert = ca
        .issue_client("exp-c9.domain-9.com", &["mra.domain-9.com".into()])
        .unwrap();
    let token = s.token("rado");
    let with_token = || Register::jabber("CSFrado", "1010").bearer(&token).bytes();
    let args = || client_args(&files, "-tls1_3", ca.cert_pem(), Some(&cert));
    let before = s_client(s.addr(0, MraOAuth, Tls), args(), with_token()).await;
    assert_refused(
        &before,
        "-tls1_3",
        "unknown_ca",
        "tlsv1 alert unknown ca",
        "before",
    );

    // The SAN, not the CN: any one listed name admits the certificate.
    let added = axl_add(&s, "exp-c9", "mra.domain-9.com").await;
    assert_eq!(added.status, 200, "{}", added.text());

    let after = s_client(s.addr(0, MraOAuth, Tls), args(), with_token()).await;
    let answer = after
        .sip()
        .unwrap_or_else(|| panic!("no answer\n{}", after.out));
    assert_eq!(answer.status, 200, "{}", answer.raw);
    assert_eq!(answer.header("Expires"), Some("120"));
    // And over TLS 1.2.
    let r = s_client(
        s.addr(0, MraOAuth, Tls),
        client_args(&files, "-tls1_2", ca.cert_pem(), Some(&cert)),
        register("CSFrado", "1010"),
    )
    .await;
    assert_eq!(r.sip().map(|a| a.status), Some(407), "{}", r.out);
}

/// The 5061 rows with the LSC files the lab made at start, passed to openssl as a user would:
/// a secure legacy device registers with its own LSC; another device's LSC, or none, gets
/// UCM's 403 "TLS authentication failure".
#[tokio::test]
async fn lab_lscs_register_on_the_secure_port_only_as_their_device() {
    // A second secure legacy device, so "another device's LSC" is a real one.
    let config = lab_with(&[(
        "[[expressway_c]]",
        "[[devices]]\n\
         name = \"SEP0011223344BB\"\n\
         product_type = \"Cisco 8861\"\n\
         owner = \"bob\"\n\
         profile = \"Cisco 8861 - Standard SIP Secure Profile\"\n\
         lines = [{ dn = \"2004\", display_name = \"Bob lab\", contact = \"3f2e1d0c-9b8a-4766-a554-433221100f05\" }]\n\n\
         [[expressway_c]]",
    )]);
    let s = TestServer::start(&config).await;
    let dir = s.state.path().join("certs");
    let lsc_args = |v: &str, device: &str| {
        let mut a = args(&[v, "-verify_return_error"]);
        a.extend(path_arg("-CAfile", &dir.join("lab-ca.pem")));
        a.extend(path_arg(
            "-cert",
            &dir.join(format!("devices/{device}.pem")),
        ));
        a.extend(path_arg("-key", &dir.join(format!("devices/{device}.key"))));
        a
    };
    let node = s.node_name(0);
    for v in VERSIONS {
        for (device, dn) in [("SEP0011223344AA", "2003"), ("SEP0011223344BB", "2004")] {
            let r = s_client(
                s.addr(0, SipSecure, Tls),
                lsc_args(v, device),
                register(device, dn),
            )
            .await;
            let a = r.sip().unwrap_or_else(|| panic!("{device} {v}\n{}", r.out));
            assert_eq!(a.status, 200, "{device} {v}: {}", a.raw);
        }
        let r = s_client(
            s.addr(0, SipSecure, Tls),
            lsc_args(v, "SEP0011223344BB"),
            register("SEP0011223344AA", "2003"),
        )
        .await;
        let a = r.sip().unwrap_or_else(|| panic!("{v}\n{}", r.out));
        assert_eq!(a.status, 403, "{v}: {}", a.raw);
        let warning = format!("399 {node} \"TLS authentication failure\"");
        assert_eq!(a.warning(), Some(warning.as_str()), "{v}: {}", a.raw);

        let mut no_cert = args(&[v, "-verify_return_error"]);
        no_cert.extend(path_arg("-CAfile", &dir.join("lab-ca.pem")));
        let r = s_client(
            s.addr(0, SipSecure, Tls),
            no_cert,
            register("SEP0011223344AA", "2003"),
        )
        .await;
        let a = r.sip().unwrap_or_else(|| panic!("{v}\n{}", r.out));
        assert_eq!(a.status, 403, "{v}: {}", a.raw);
        assert_eq!(a.warning(), Some(warning.as_str()), "{v}: {}", a.raw);
    }
    // Only the secure legacy devices got one.
    let mut made: Vec<String> = std::fs::read_dir(dir.join("devices"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    made.sort();
    assert_eq!(
        made,
        [
            "SEP0011223344AA.key",
            "SEP0011223344AA.pem",
            "SEP0011223344BB.key",
            "SEP0011223344BB.pem"
        ]
    );
}

/// The certificate a TLS listener presents, as s_client printed it.
fn served_cert(r: &SClient) -> CertificateDer<'static> {
    let start = r
        .out
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no server certificate in\n{}", r.out));
    let end = r.out[start..].find("-----END CERTIFICATE-----").unwrap() + start + 25;
    CertificateDer::from_pem_slice(&r.out.as_bytes()[start..end]).unwrap()
}

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn run_bin(state: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env_remove("SIP_OAUTH_CONFIG")
        .output()
        .unwrap()
}

/// `certs init` on an empty state directory makes the lab PKI (keys 0600); the daemon then
/// starts on it without replacing anything and presents exactly those files; `certs show`
/// prints the fingerprints openssl sees; a second `certs init` creates nothing.
#[tokio::test]
async fn certs_init_then_the_daemon_presents_what_certs_show_lists() {
    init_tracing();
    let state = tempfile::tempdir().unwrap();
    let out = run_bin(state.path(), &["certs", "init"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let certs = state.path().join("certs");
    for f in [
        "lab-ca.pem",
        "lab-ca-key.pem",
        "tomcat.pem",
        "tomcat-key.pem",
        "callmanager.pem",
        "callmanager-key.pem",
        "expressway-c.pem",
        "expressway-c-key.pem",
        "devices/SEP0011223344AA.pem",
        "devices/SEP0011223344AA.key",
    ] {
        let line = format!("created {}\n", certs.join(f).display());
        assert!(text.contains(&line), "{line:?} in\n{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(certs.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777;
            let key = f.ends_with("key.pem") || f.ends_with(".key");
            // Certificates follow the umask; keys are 0600 whatever it is.
            if key {
                assert_eq!(mode, 0o600, "{f}");
            } else {
                assert_eq!(mode & 0o022, 0, "{f}: writable by others ({mode:o})");
            }
        }
    }
    let snapshot = |dir: &Path| {
        let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for sub in [dir.to_owned(), dir.join("devices")] {
            for e in std::fs::read_dir(sub).unwrap() {
                let p = e.unwrap().path();
                if p.is_file() && !p.ends_with(sip_oauth_registrar::pki::LOCK_FILE) {
                    files.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        files.sort();
        files
    };
    let made = snapshot(&certs);
    assert_eq!(made.len(), 10);

    let (s, prepared) = TestServer::start_in(LAB_CONFIG, state).await;
    let state = s.state.path();
    assert!(
        prepared.created.iter().all(|p| !p.starts_with(&certs)),
        "{:?}",
        prepared.created
    );
    assert_eq!(snapshot(&certs), made, "the start replaced nothing");

    let show = run_bin(state, &["certs", "show"]);
    assert!(show.status.success(), "{show:?}");
    let shown = String::from_utf8(show.stdout).unwrap();
    let files = Files::new();
    let ca = std::fs::read_to_string(certs.join("lab-ca.pem")).unwrap();
    let node = sip_oauth_registrar::cluster::NodeId(0);
    for (kind, file) in [(OAuth, "tomcat.pem"), (SipSecure, "callmanager.pem")] {
        let addr = s.server().addr(node, kind, Tls).unwrap();
        // The summary after the handshake ends with the verification result.
        let r = s_client_until(
            addr,
            client_args(&files, "-tls1_3", &ca, None),
            Vec::new(),
            Some("Verify return code: 0 (ok)\n"),
        )
        .await;
        let served = served_cert(&r);
        let on_disk = CertificateDer::from_pem_file(certs.join(file)).unwrap();
        assert_eq!(served.as_ref(), on_disk.as_ref(), "{file}");
        // The file's entry in `certs show` carries the fingerprint of what was served.
        let entry = shown
            .split("\n\n")
            .find(|e| e.starts_with(&certs.join(file).display().to_string()))
            .unwrap_or_else(|| panic!("{file} in\n{shown}"));
        let line = format!("  SHA-256:    {}", fingerprint(&served));
        assert!(entry.contains(&line), "{line} in\n{entry}");
    }

    let again = run_bin(state, &["certs", "init"]);
    assert!(again.status.success(), "{again:?}");
    let text = String::from_utf8(again.stdout).unwrap();
    assert!(text.contains("nothing created"), "{text}");
    assert!(!text.contains("created /"), "{text}");
    assert_eq!(snapshot(&certs), made);

    assert!(s.shutdown(Duration::from_secs(3)).await);
}
