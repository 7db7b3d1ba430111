//! Test harness: [`TestServer`] runs the daemon in-process on port 0 for every listener, with
//! a fresh state directory whose lab PKI and token key are created at start; SIP clients
//! over UDP, TCP, TLS and mutual TLS; and a small response reader.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sip_oauth_registrar::cluster::NodeId;
use sip_oauth_registrar::config::{LAB_CONFIG, Settings};
use sip_oauth_registrar::net::ListenerKind;
use sip_oauth_registrar::net::Transport;
use sip_oauth_registrar::pki::{Authority, CertAndKey};
use sip_oauth_registrar::server::{BindOptions, PreparedState, Server};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// Bounds every network wait in the tests, so a broken server fails instead of hanging.
pub const WAIT: Duration = Duration::from_secs(5);

pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "sip_oauth_registrar=debug".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

pub struct TestServer {
    server: Option<Server>,
    pub settings: Settings,
    pub state: tempfile::TempDir,
    cancel: CancellationToken,
}

/// The daemon on `state`, on ephemeral ports.
async fn boot(
    settings: &Settings,
    state: &tempfile::TempDir,
    cancel: &CancellationToken,
) -> (Server, PreparedState) {
    Server::start(
        settings,
        state.path(),
        BindOptions {
            ephemeral_ports: true,
        },
        cancel.clone(),
    )
    .await
    .expect("server starts")
}

impl TestServer {
    pub async fn lab() -> Self {
        Self::start(LAB_CONFIG).await
    }

    pub async fn start(toml: &str) -> Self {
        Self::start_in(toml, tempfile::tempdir().expect("tempdir"))
            .await
            .0
    }

    /// Starts on a state directory the test prepared; also returns what the start created.
    pub async fn start_in(toml: &str, state: tempfile::TempDir) -> (Self, PreparedState) {
        init_tracing();
        let settings = Settings::from_toml(toml).expect("test config");
        let cancel = CancellationToken::new();
        let (server, prepared) = boot(&settings, &state, &cancel).await;
        let s = Self {
            server: Some(server),
            settings,
            state,
            cancel,
        };
        (s, prepared)
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("running")
    }

    pub fn try_addr(
        &self,
        node: u16,
        kind: ListenerKind,
        transport: Transport,
    ) -> Option<SocketAddr> {
        self.server().addr(NodeId(node), kind, transport)
    }

    pub fn addr(&self, node: u16, kind: ListenerKind, transport: Transport) -> SocketAddr {
        self.try_addr(node, kind, transport)
            .unwrap_or_else(|| panic!("no {kind:?} {transport:?} listener on node {node}"))
    }

    pub fn node_name(&self, node: u16) -> String {
        self.settings.cluster.nodes[usize::from(node)]
            .name
            .to_string()
    }

    /// The lab CA created in the state directory at start.
    pub fn lab_ca(&self) -> Authority {
        let dir = self.state.path().join("certs");
        let cert = std::fs::read_to_string(dir.join("lab-ca.pem")).unwrap();
        let key = std::fs::read_to_string(dir.join("lab-ca-key.pem")).unwrap();
        Authority::from_pem(&cert, &key).unwrap()
    }

    /// The lab Expressway-C client certificate created at start.
    pub fn expressway_cert(&self) -> CertAndKey {
        let dir = self.state.path().join("certs");
        CertAndKey {
            cert_pem: std::fs::read_to_string(dir.join("expressway-c.pem")).unwrap(),
            key_pem: std::fs::read_to_string(dir.join("expressway-c-key.pem")).unwrap(),
        }
    }

    /// An access token as `token issue` makes it.
    pub fn token(&self, user: &str) -> String {
        self.token_at(user, 3600, unix_now())
    }

    pub fn token_at(&self, user: &str, ttl: u64, now: u64) -> String {
        self.server()
            .tokens()
            .issue(user, &format!("C{}", "ab".repeat(32)), ttl, now)
            .expect("issue")
            .token
    }

    /// POSTs a form to this server's HTTPS (8443) listener on node 0.
    pub async fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> HttpAnswer {
        let body = serde_urlencoded::to_string(pairs).expect("form");
        https(
            self.web(0),
            self.lab_ca().cert_pem(),
            http_request(
                "POST",
                path,
                &[("content-type", "application/x-www-form-urlencoded")],
                body,
            ),
        )
        .await
    }

    /// An access token from the token service's password grant (lab password `lab`).
    pub async fn password_token(&self, user: &str) -> String {
        let client = format!("C{}", "cd".repeat(32));
        let a = self
            .post_form(
                "/ssosp/oauth/token",
                &[
                    ("grant_type", "password"),
                    ("username", user),
                    ("password", "lab"),
                    ("client_id", &client),
                ],
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
        a.json()["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Stops the daemon and starts it again on the same state directory (new ports).
    pub async fn restart(&mut self) {
        let server = self.server.take().expect("running");
        assert!(server.shutdown(Duration::from_secs(3)).await, "clean stop");
        self.cancel = CancellationToken::new();
        self.server = Some(boot(&self.settings, &self.state, &self.cancel).await.0);
    }

    /// The HTTPS (8443) listener of a node.
    pub fn web(&self, node: u16) -> SocketAddr {
        self.server()
            .web_addr(NodeId(node), sip_oauth_registrar::net::WebPort::Tomcat)
            .expect("HTTPS listener")
    }

    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        let server = self.server.take().expect("running");
        server.shutdown(deadline).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A REGISTER as Jabber sends it (docs/ucm.md §4), with the parts tests vary.
#[derive(Clone, Debug)]
pub struct Register {
    pub device: Option<String>,
    pub dn: String,
    pub call_id: String,
    pub cseq: u32,
    pub instance: Option<String>,
    pub expires: Option<String>,
    pub contact: Option<String>,
    pub extra: Vec<String>,
    pub body: Option<(String, String)>,
    pub transport: &'static str,
}

impl Register {
    pub fn jabber(device: &str, dn: &str) -> Self {
        Self {
            device: Some(device.into()),
            dn: dn.into(),
            call_id: format!(
                "{:08x}-12340017-00001c0b-00000cfa@10.10.10.10",
                fastrand::u32(..)
            ),
            cseq: 2270,
            instance: Some("<urn:uuid:00000000-0000-0000-0000-882323451234>".into()),
            expires: Some("3600".into()),
            contact: None,
            extra: Vec::new(),
            body: None,
            transport: "TLS",
        }
    }

    /// A plain RFC 3261 client: no Cisco feature tags.
    pub fn plain(dn: &str) -> Self {
        Self {
            device: None,
            instance: None,
            ..Self::jabber("", dn)
        }
    }

    pub fn header(mut self, h: impl Into<String>) -> Self {
        self.extra.push(h.into());
        self
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header(format!("Proxy-Authorization: Bearer token=\"{token}\""))
    }

    pub fn next(&self) -> Self {
        let mut n = self.clone();
        n.cseq += 1;
        n.extra.clear();
        n
    }

    pub fn contact_value(&self) -> String {
        if let Some(c) = &self.contact {
            return c.clone();
        }
        let mut c = format!(
            "<sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@10.10.10.10:62162;transport={}>",
            self.transport.to_ascii_lowercase()
        );
        if let Some(i) = &self.instance {
            c.push_str(&format!(";+sip.instance=\"{i}\""));
        }
        if let Some(d) = &self.device {
            c.push_str(&format!(
                ";+u.sip!devicename.ccm.cisco.com=\"{d}\";+u.sip!model.ccm.cisco.com=\"503\";video"
            ));
        }
        c
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut m = format!(
            "REGISTER sip:10.10.10.1 SIP/2.0\r\n\
             Via: SIP/2.0/{} 10.10.10.10:62162;branch=z9hG4bK{:08x}\r\n\
             From: <sip:{dn}@10.10.10.1>;tag=882323451234089000003bdd-00005eff\r\n\
             To: <sip:{dn}@10.10.10.1>\r\n\
             Call-ID: {}\r\n\
             Max-Forwards: 70\r\n\
             Date: Mon, 30 Mar 2020 11:03:19 GMT\r\n\
             CSeq: {} REGISTER\r\n\
             User-Agent: Cisco-CSF\r\n\
             Contact: {}\r\n",
            self.transport,
            fastrand::u32(..),
            self.call_id,
            self.cseq,
            self.contact_value(),
            dn = self.dn,
        );
        if let Some(e) = &self.expires {
            m.push_str(&format!("Expires: {e}\r\n"));
        }
        for h in &self.extra {
            m.push_str(h);
            m.push_str("\r\n");
        }
        match &self.body {
            Some((ct, body)) => m.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )),
            None => m.push_str("Content-Length: 0\r\n\r\n"),
        }
        m.into_bytes()
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub raw: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn parse(raw: &str) -> Self {
        let (head, body) = raw.split_once("\r\n\r\n").expect("complete response");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(
            status_line.starts_with("SIP/2.0 "),
            "status line: {status_line}"
        );
        let status = status_line[8..11].parse().unwrap();
        let headers = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").expect("header line");
                (n.to_owned(), v.to_owned())
            })
            .collect();
        Self {
            raw: raw.to_owned(),
            status,
            headers,
            body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    pub fn warning(&self) -> Option<&str> {
        self.header("Warning")
    }
}

/// A SIP client on one connection or socket.
pub enum Client {
    Udp(UdpSocket, SocketAddr),
    /// The stream and bytes read past the last response.
    Tcp(TcpStream, Vec<u8>),
    Tls(Box<TlsStream<TcpStream>>, Vec<u8>),
}

impl Client {
    pub async fn udp(server: SocketAddr) -> Self {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self::Udp(s, server)
    }

    pub async fn tcp(server: SocketAddr) -> Self {
        Self::Tcp(TcpStream::connect(server).await.unwrap(), Vec::new())
    }

    /// TLS trusting `ca`, optionally presenting a client certificate.
    pub async fn tls(server: SocketAddr, ca: &str, client: Option<&CertAndKey>) -> Self {
        Self::Tls(
            Box::new(
                tls_connect(server, ca, client)
                    .await
                    .expect("TLS handshake"),
            ),
            Vec::new(),
        )
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        match self {
            Self::Udp(s, to) => {
                s.send_to(bytes, *to).await.unwrap();
            }
            Self::Tcp(s, _) => s.write_all(bytes).await.unwrap(),
            Self::Tls(s, _) => {
                s.write_all(bytes).await.unwrap();
                s.flush().await.unwrap();
            }
        }
    }

    /// Like `send`, for connections the server may already have closed.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Udp(s, to) => s.send_to(bytes, *to).await.map(|_| ()),
            Self::Tcp(s, _) => s.write_all(bytes).await,
            Self::Tls(s, _) => s.write_all(bytes).await,
        }
    }

    pub async fn recv(&mut self) -> Response {
        let raw = match self {
            Self::Udp(s, _) => {
                let mut buf = vec![0; 65536];
                let (n, _) = tokio::time::timeout(WAIT, s.recv_from(&mut buf))
                    .await
                    .expect("UDP response in time")
                    .unwrap();
                String::from_utf8(buf[..n].to_vec()).unwrap()
            }
            Self::Tcp(s, buf) => read_response(s, buf).await,
            Self::Tls(s, buf) => read_response(s.as_mut(), buf).await,
        };
        Response::parse(&raw)
    }

    pub async fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes).await;
        self.recv().await
    }

    pub async fn register(&mut self, r: &Register) -> Response {
        self.request(&r.bytes()).await
    }

    /// Reads until EOF or error; returns what was read and whether it ended cleanly (EOF).
    pub async fn read_to_close(&mut self) -> (Vec<u8>, std::io::Result<()>) {
        let mut out = Vec::new();
        let r = match self {
            Self::Tcp(s, _) => tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await,
            Self::Tls(s, _) => tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await,
            Self::Udp(..) => panic!("no connection on UDP"),
        };
        (out, r.expect("closed in time").map(|_| ()))
    }
}

async fn read_response<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> String {
    let fut = async {
        loop {
            if let Some(end) = find(buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    let rest = buf.split_off(end + 4 + len);
                    let msg = std::mem::replace(buf, rest);
                    return String::from_utf8(msg).unwrap();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read response");
            assert!(
                n > 0,
                "connection closed before a response; got {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("response in time")
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

pub async fn tls_connect(
    server: SocketAddr,
    ca: &str,
    client: Option<&CertAndKey>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(ck) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(ck.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(ck.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server).await?;
    let name = ServerName::IpAddress(server.ip().into());
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// A device config is a lab config with some text replaced.
pub fn lab_with(replacements: &[(&str, &str)]) -> String {
    let mut s = LAB_CONFIG.to_owned();
    for (from, to) in replacements {
        assert!(s.contains(from), "lab.toml has no {from:?}");
        s = s.replace(from, to);
    }
    s
}

pub async fn write_all<S: AsyncWrite + Unpin>(s: &mut S, b: &[u8]) {
    s.write_all(b).await.unwrap();
}

/// An HTTP/1.1 answer as a test reads it.
pub struct HttpAnswer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request over a fresh TLS connection (trusting `ca`) with hyper's client.
pub async fn https(
    addr: SocketAddr,
    ca: &str,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> HttpAnswer {
    let tls = tls_connect(addr, ca, None)
        .await
        .expect("TLS to the HTTPS port");
    http_over(tls, request).await
}

/// Sends one request on an established stream.
pub async fn http_over<S>(
    stream: S,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> HttpAnswer
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let fut = async move {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP handshake");
        tokio::spawn(conn);
        let response = sender.send_request(request).await.expect("HTTP response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("HTTP body").to_bytes().to_vec();
        HttpAnswer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("HTTP answer in time")
}

/// A request with a body and headers, for [`https`].
pub fn http_request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<bytes::Bytes>,
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "localhost");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(http_body_util::Full::new(body.into()))
        .expect("request")
}

/// Sends one request over a fresh plain TCP connection (HTTP 6970) with hyper's client.
pub async fn http_plain(
    addr: SocketAddr,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> HttpAnswer {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("TCP to the HTTP port");
    http_over(tcp, request).await
}

/// Installs Python `packages` once into `<cargo tmp>/<dir>` (pip `--target`) and returns the
/// directory, to put on `PYTHONPATH`. `marker` is a module directory whose presence means the
/// install is done. A failed install fails the test: an interop check that silently skips
/// proves nothing.
pub fn pip_target(dir: &str, packages: &[&str], marker: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    if dir.join(marker).is_dir() {
        return dir;
    }
    let out = std::process::Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(&dir)
        .args(packages)
        .output()
        .expect("python3 (with pip) must be installed for the interop checks");
    assert!(
        out.status.success(),
        "`pip install {}` into {} failed (is PyPI reachable?):\n{}",
        packages.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}
