//! Outside identity providers against a real, independent OpenID provider: the `oidc-provider`
//! npm package (OpenID-certified), run by `tests/interop/oidc/provider.mjs`. It generates its own
//! signing keys and issues JWT access tokens (RFC 9068) through the `client_credentials` grant
//! with a resource indicator; none of the tokens here were minted by our code.
//!
//! Needs `node` (>= 20) and `npm`; `npm ci` runs once into `tests/interop/oidc/node_modules` when
//! it is missing. Missing tools or a failed install fail the test with a message: never a skip.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sip_oauth_registrar::auth::external::{ExternalIssuers, IssuerConfig};
use sip_oauth_registrar::auth::{AuthError, Authenticator};
use tokio_util::sync::CancellationToken;

use crate::harness::init_tracing;

/// Bounds the provider's start-up, discovery and token requests.
const PROVIDER_WAIT: Duration = Duration::from_secs(20);
/// Bounds `npm ci`.
const INSTALL_WAIT: Duration = Duration::from_secs(300);

const AUDIENCES: [&str; 3] = [
    "urn:sip-registrar:rs256",
    "urn:sip-registrar:es256",
    "urn:sip-registrar:eddsa",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_oidc_provider_are_verified() {
    init_tracing();
    let idp = Provider::start().await;
    let now = unix_now();

    let ext = idp.issuers("preferred_username").await;
    for audience in AUDIENCES {
        let token = idp.token(audience).await;
        assert!(ext.handles(&token), "{audience}: routed to the issuer");
        let id = ext
            .authenticate(&token, now)
            .unwrap_or_else(|e| panic!("{audience}: refused: {}", e.reason()));
        assert_eq!(&*id.user, "alice", "{audience}");
        let claims = claims_of(&token);
        assert_eq!(
            id.token_id.as_ref(),
            claims["jti"].as_str().unwrap(),
            "{audience}"
        );
        assert_eq!(id.expires_at, claims["exp"].as_u64().unwrap(), "{audience}");
        assert!(
            id.expires_at > now && id.expires_at <= now + 310,
            "{audience}"
        );
    }

    // Tampered signature: last signature character changed.
    let token = idp.token(AUDIENCES[0]).await;
    let (body, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{body}.{flipped}{}", &sig[1..]);
    assert_eq!(
        ext.authenticate(&tampered, now),
        Err(AuthError::BadSignature)
    );

    // A token the same provider issued for another audience.
    let other = idp.token("urn:other-service").await;
    assert!(ext.handles(&other));
    assert_eq!(ext.authenticate(&other, now), Err(AuthError::WrongAudience));

    // Another user claim: `sub` of a client_credentials token is the client id.
    let by_sub = idp.issuers("sub").await;
    assert_eq!(
        &*by_sub.authenticate(&token, now).unwrap().user,
        "sip-phone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_is_picked_up_on_unknown_kid() {
    init_tracing();
    let idp = Provider::start().await;
    let now = unix_now();
    let ext = idp.issuers("preferred_username").await;
    let cancel = CancellationToken::new();
    let refresher = tokio::spawn(ext.refresh_task(cancel.clone()));

    let before = idp.token(AUDIENCES[0]).await;
    assert!(ext.authenticate(&before, now).is_ok());

    idp.rotate().await;
    let after = idp.token(AUDIENCES[0]).await;
    assert_ne!(
        kid_of(&before),
        kid_of(&after),
        "the provider rotated its keys"
    );
    // The SIP path never waits for the fetch: the first attempt is refused...
    assert_eq!(ext.authenticate(&after, now), Err(AuthError::UnknownKey));
    // ...and wakes the refresh task, so a retry soon succeeds.
    let deadline = Instant::now() + PROVIDER_WAIT;
    loop {
        match ext.authenticate(&after, now) {
            Ok(id) => {
                assert_eq!(&*id.user, "alice");
                break;
            }
            Err(AuthError::UnknownKey) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("after rotation: {}", e.reason()),
        }
    }
    // The old key is gone from the provider's JWKS: the cached answer for the old token is
    // dropped with the key set it was verified with.
    assert_eq!(ext.authenticate(&before, now), Err(AuthError::UnknownKey));

    cancel.cancel();
    tokio::time::timeout(PROVIDER_WAIT, refresher)
        .await
        .expect("refresh task stops on cancel")
        .expect("refresh task did not panic");
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The payload of a JWT, unverified (test inspection only).
fn claims_of(token: &str) -> Value {
    jsonwebtoken::dangerous::insecure_decode_claims(token).expect("JWT payload")
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("JWT header")
        .kid
        .expect("the provider sets kid")
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/oidc")
}

/// Runs `npm ci` once per test binary when `node_modules` lacks `oidc-provider`.
fn ensure_installed() {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        let dir = oidc_dir();
        require_tool("node");
        require_tool("npm");
        if dir.join("node_modules/oidc-provider/package.json").exists() {
            return Ok(());
        }
        let mut child = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run npm ci in {}: {e}", dir.display()))?;
        let stderr = drain(child.stderr.take());
        let deadline = Instant::now() + INSTALL_WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "npm ci in {} failed ({status}):\n{}",
                        dir.display(),
                        stderr.lock().unwrap()
                    ));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("npm ci did not finish within {INSTALL_WAIT:?}"));
                }
                Err(e) => return Err(format!("waiting for npm ci: {e}")),
            }
        }
    });
    if let Err(message) = result {
        panic!("{message}");
    }
}

fn require_tool(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` is required by the outside_idp tests (Node.js >= 20 with npm) and was not found"
    );
}

/// Collects a child's pipe in a thread, for error messages.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    if let Some(pipe) = pipe {
        let sink = Arc::clone(&text);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
    }
    text
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A running `provider.mjs`, killed on drop (and it exits by itself when its stdin closes).
struct Provider {
    child: Child,
    _stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    issuer: String,
    token_endpoint: String,
    jwks_uri: String,
    client: TestClient,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    async fn start() -> Self {
        ensure_installed();
        let mut child = Command::new("node")
            .args(["provider.mjs", "0"])
            .current_dir(oidc_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node provider.mjs");
        let stdin = child.stdin.take();
        let stderr = drain(child.stderr.take());
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // The first JSON line announces the issuer; keep draining after it.
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with('{')
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(line);
                }
            }
        });
        let client = Client::builder(TokioExecutor::new()).build_http();
        let mut provider = Self {
            child,
            _stdin: stdin,
            stderr,
            issuer: String::new(),
            token_endpoint: String::new(),
            jwks_uri: String::new(),
            client,
        };
        let announced = tokio::task::spawn_blocking(move || rx.recv_timeout(PROVIDER_WAIT))
            .await
            .expect("join");
        let announced = announced.unwrap_or_else(|_| {
            panic!(
                "provider.mjs did not announce its port within {PROVIDER_WAIT:?}; stderr:\n{}",
                provider.stderr.lock().unwrap()
            )
        });
        let announced: Value = serde_json::from_str(&announced).expect("announcement JSON");
        provider.issuer = announced["issuer"].as_str().expect("issuer").to_owned();

        let discovery = provider.discovery().await;
        assert_eq!(discovery["issuer"], provider.issuer.as_str());
        provider.token_endpoint = discovery["token_endpoint"].as_str().unwrap().to_owned();
        provider.jwks_uri = discovery["jwks_uri"].as_str().unwrap().to_owned();
        provider
    }

    /// Polls the discovery document until it answers 200 (the server may not be up yet).
    async fn discovery(&self) -> Value {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let deadline = Instant::now() + PROVIDER_WAIT;
        loop {
            match self.send(Method::GET, &url, None).await {
                Ok((StatusCode::OK, body)) => {
                    return serde_json::from_slice(&body).expect("discovery JSON");
                }
                other if Instant::now() >= deadline => panic!(
                    "no discovery document at {url} within {PROVIDER_WAIT:?}: {other:?}; \
                     stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// A JWT access token for `resource` (RFC 8707), client_credentials grant.
    async fn token(&self, resource: &str) -> String {
        let form = format!(
            "grant_type=client_credentials&client_id=sip-phone&client_secret=phone-secret\
             &scope=sip&resource={}",
            resource.replace(':', "%3A")
        );
        let (status, body) = self
            .send(Method::POST, &self.token_endpoint, Some(form))
            .await
            .expect("token request");
        let body: Value = serde_json::from_slice(&body).expect("token response JSON");
        assert_eq!(status, StatusCode::OK, "token endpoint: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// New signing keys at the provider (see provider.mjs).
    async fn rotate(&self) {
        let url = format!("{}/test/rotate", self.issuer);
        let (status, _) = self
            .send(Method::POST, &url, Some(String::new()))
            .await
            .expect("rotate");
        assert_eq!(status, StatusCode::NO_CONTENT);
    }

    /// Our issuer configuration for this provider, keys from its `jwks_uri`.
    async fn issuers(&self, user_claim: &str) -> Arc<ExternalIssuers> {
        let toml = format!(
            "issuer = {:?}\naudience = {:?}\nuser_claim = {user_claim:?}\n\
             keys = {{ jwks_url = {:?} }}\nfetch_timeout_secs = 5\n\
             min_refetch_interval_secs = 0\n",
            self.issuer, AUDIENCES, self.jwks_uri
        );
        let config: IssuerConfig = toml::from_str(&toml).expect("issuer TOML");
        ExternalIssuers::load(vec![config], Path::new("."))
            .await
            .expect("load issuers")
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        form: Option<String>,
    ) -> Result<(StatusCode, Bytes), String> {
        let mut request = Request::builder().method(method).uri(url);
        if form.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = request
            .body(Full::new(Bytes::from(form.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            let body = Limited::new(response.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(PROVIDER_WAIT, exchange)
            .await
            .map_err(|_| format!("{url}: no answer within {PROVIDER_WAIT:?}"))?
    }
}

/// The whole path: the daemon configured with the provider as an `[[identity_providers]]`
/// entry, and a REGISTER on 5090 carrying the provider's token for the user it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_token_registers_a_device_of_the_user_it_names() {
    use sip_oauth_registrar::net::ListenerKind::OAuth;
    use sip_oauth_registrar::net::Transport::Tls;

    use crate::harness::{Client, Register, TestServer, lab_with};

    let idp = Provider::start().await;
    let config = lab_with(&[])
        + &format!(
            "\n[[identity_providers]]\nissuer = {:?}\naudience = [\"urn:sip-registrar:es256\"]\n\
         user_claim = \"preferred_username\"\nkeys = {{ jwks_url = {:?} }}\n",
            idp.issuer, idp.jwks_uri
        );
    let s = TestServer::start(&config).await;
    let token = idp.token("urn:sip-registrar:es256").await;
    let register = |device: &'static str, dn: &'static str| {
        let token = token.clone();
        let addr = s.addr(0, OAuth, Tls);
        let ca = s.lab_ca().cert_pem().to_owned();
        async move {
            let mut c = Client::tls(addr, &ca, None).await;
            let first = Register::jabber(device, dn);
            assert_eq!(c.register(&first).await.status, 407);
            c.register(&first.next().bearer(&token)).await
        }
    };
    let r = register("CSFalice", "2001").await;
    assert_eq!(r.status, 200, "{}", r.raw);
    // The token names alice: rado's device is not hers.
    let r = register("CSFrado", "1010").await;
    assert_eq!(r.status, 403, "{}", r.raw);
    // Another audience is refused (re-challenged).
    let other = idp.token("urn:other-service").await;
    let mut c = Client::tls(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None).await;
    let first = Register::jabber("CSFalice", "2001");
    assert_eq!(c.register(&first).await.status, 407);
    assert_eq!(c.register(&first.next().bearer(&other)).await.status, 407);
}
