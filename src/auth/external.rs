//! Outside identity providers: plain signed JWTs (RS256, ES256, EdDSA, ...) from OpenID/OAuth
//! issuers named in the cluster configuration (`[[identity_providers]]`), checked with the
//! issuer's public keys.
//!
//! # What is accepted
//!
//! A compact JWS (three base64url parts, at most [`MAX_TOKEN_LEN`] bytes) whose
//!
//! 1. header `alg` is in the issuer's `algorithms` (default RS256, ES256, EdDSA; HMAC algorithms
//!    cannot be configured, so `HS256` signed with a public key as the secret is `bad_algorithm`)
//!    and matches the key's type (RSA: RS*/PS*, P-256: ES256, P-384: ES384, Ed25519: EdDSA, and
//!    the JWK's own `alg` when it names one); no `crit` header;
//! 2. signature verifies with one of the issuer's keys (see *Key selection*); nothing from the
//!    payload is trusted before that;
//! 3. claims: `iss` equal to the configured issuer (exact string match), `aud` (string or array)
//!    containing one of the configured audiences, `exp` present, all three required; `exp +
//!    leeway_secs` not past and `nbf - leeway_secs` (when present) reached, both against the
//!    caller's clock (the [`Authenticator`] contract), not the wall clock;
//! 4. the claim named by `user_claim` (default `sub`) is a non-empty string of at most
//!    [`MAX_USER_LEN`] bytes without control characters: it becomes [`Identity::user`].
//!
//! [`Identity::token_id`] is `jti` when present (non-empty, at most [`MAX_USER_LEN`] bytes), else
//! the first 16 hex digits of the SHA-256 of the token text.
//!
//! # Routing
//!
//! [`ExternalIssuers::handles`] reads the *unverified* `iss` claim and answers whether it names one
//! of the configured issuers; the registrar uses it to choose between the cluster's own tokens and
//! these. Routing on an unverified claim is safe because the chosen issuer then verifies the
//! signature with its own keys only, and checks `iss` again after verification.
//!
//! # Key sources (`keys = { ... }`, exactly one)
//!
//! - `pem_files = ["a.pem", ...]`: `PUBLIC KEY` (SPKI) or `CERTIFICATE` sections (RSA of at
//!   least 2048 bits, P-256, P-384, Ed25519); such keys have no `kid`.
//! - `jwks_file = "jwks.json"`: a JWK set read once at load.
//! - `jwks_url = "https://..."`: the issuer's JWK set, fetched at load and refreshed (below).
//!   `https` verifies the server certificate against the system's roots plus `ca_file` (PEM,
//!   optional, for lab CAs). Plain `http` is accepted only to a loopback IP literal
//!   (`127.0.0.0/8`, `[::1]`), for tests and sidecars; anything else is a configuration error.
//!   Redirects are not followed. At most [`MAX_JWKS_BYTES`] of body and [`MAX_JWKS_KEYS`] keys.
//!
//! Relative paths are resolved against the `base_dir` given to [`ExternalIssuers::load`]. JWKs
//! that are not signature keys (`use` = `enc`, encryption `alg`, symmetric `oct`, unsupported
//! curves, RSA under 2048 bits) are skipped; a set with no usable key is an error.
//!
//! # Key selection
//!
//! A token with a `kid` uses the key with that `kid`; if none has it, the keys without a `kid`
//! (PEM files) that fit `alg`; if there are none, `unknown_key`. A token without `kid` uses the
//! keys without a `kid` that fit `alg`, or, when there are none, the only key that fits `alg`
//! if exactly one does. Each candidate is tried until one verifies (`bad_signature` if none).
//!
//! # Refresh policy and timeouts (`jwks_url` only)
//!
//! - At [`ExternalIssuers::load`], every URL is fetched once, concurrently, each bounded by
//!   `fetch_timeout_secs` (default 5 s: connect, TLS, headers and body together). A failure is
//!   logged, not fatal: an identity provider being down must not stop the registrar; its tokens
//!   get `unknown_key` until a fetch succeeds.
//! - [`ExternalIssuers::refresh_task`] (which the daemon must spawn) refetches every
//!   `refresh_interval_secs` (default 900 s) after a success, every `min_refetch_interval_secs`
//!   (default 30 s, at least 1 s) after a failure, and on demand: a token whose `kid` is unknown
//!   is refused at once with `unknown_key` (the SIP path never waits for I/O) and wakes the task,
//!   which refetches unless the last attempt is younger than `min_refetch_interval_secs`. So a
//!   client retrying after an IdP key rotation succeeds on its next attempt, and a flood of
//!   made-up `kid`s costs at most one fetch per interval per issuer.
//! - A failed or unusable fetch keeps the previous keys.
//!
//! # Cache
//!
//! Like the cluster's tokens ([`super::authority`]), but over the whole token text: SHA-256 digest of the token text → [`Identity`], at most
//! [`CACHE_CAPACITY`] entries over all issuers, only verified tokens inserted, expired ones dropped
//! first when full, then arbitrary ones down to 7/8. Each entry records the generation of its
//! issuer's key set; a refresh that removes or changes a key bumps the generation, so tokens
//! verified with a withdrawn key are verified again (and refused), while a refresh that only adds
//! keys keeps the cache.

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, Uri, header};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Header, Validation};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::{PemObject, SectionKind};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{AuthError, Authenticator, Identity};

/// Longest token accepted, in bytes. Outside IdPs put more in a token than we do (groups, roles):
/// Entra ID access tokens reach 4-6 KiB; 16 KiB leaves room and still bounds hostile input.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Longest user id (and `jti`) taken from a token, in bytes.
pub const MAX_USER_LEN: usize = 256;

/// Largest JWKS document read from a URL or a file. Real ones are a few KiB.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Most keys in one JWK set: a set is scanned linearly per uncached token.
pub const MAX_JWKS_KEYS: usize = 64;

/// Most verified tokens cached, over all issuers (about 250 bytes each).
pub const CACHE_CAPACITY: usize = 100_000;

/// One `[[identity_providers]]` entry of the cluster TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The required `iss`, compared as an exact string (no trailing-slash normalisation).
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Must not be empty.
    pub audience: Vec<String>,
    /// The claim naming the UCM user id (e.g. `sub`, `preferred_username`, `email`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Accepted JWS algorithms: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA.
    /// Default RS256, ES256, EdDSA.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Where the verification keys come from.
    pub keys: KeySource,
    /// Extra trusted CA certificates (PEM) for an `https` `jwks_url`, on top of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds. Default 60.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Bound on one JWKS fetch (connect, TLS, headers, body), in seconds. Default 5.
    #[serde(default = "default_fetch_timeout_secs")]
    pub fetch_timeout_secs: u64,
    /// Refetch period of `jwks_url` after a success, in seconds. Default 900.
    #[serde(default = "default_refresh_interval_secs")]
    pub refresh_interval_secs: u64,
    /// Least time between two fetches caused by unknown `kid`s, and the retry delay after a
    /// failed fetch (at least 1 s), in seconds. Default 30; 0 turns the rate limit off (tests).
    #[serde(default = "default_min_refetch_interval_secs")]
    pub min_refetch_interval_secs: u64,
}

/// Where an issuer's verification keys come from: exactly one source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeySource {
    /// PEM files with `PUBLIC KEY` or `CERTIFICATE` sections.
    PemFiles(Vec<PathBuf>),
    /// A JWK set file, read once at load.
    JwksFile(PathBuf),
    /// The issuer's `jwks_uri`: `https://...`, or `http://` to a loopback IP literal.
    JwksUrl(String),
}

/// Configuration errors of the outside issuers, each naming the issuer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExternalError {
    /// A setting is invalid.
    #[error("identity provider {issuer:?}: {reason}")]
    Config {
        /// The entry's `issuer`.
        issuer: String,
        /// What is wrong.
        reason: String,
    },
    /// A key, JWKS or CA file could not be read.
    #[error("identity provider {issuer:?}: cannot read {}: {source}", path.display())]
    Read {
        /// The entry's `issuer`.
        issuer: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key, JWKS or CA file was read but is not usable.
    #[error("identity provider {issuer:?}: {}: {reason}", path.display())]
    BadFile {
        /// The entry's `issuer`.
        issuer: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The configured outside issuers: an [`Authenticator`] for their tokens.
pub struct ExternalIssuers {
    issuers: Vec<Arc<Issuer>>,
    by_iss: HashMap<String, usize>,
    cache: Mutex<TokenCache>,
    /// Wakes [`refresh_task`](Self::refresh_task) after an unknown `kid`. `notify_one` keeps a
    /// permit when the task is busy fetching, so no wake is lost.
    wake: Notify,
}

impl fmt::Debug for ExternalIssuers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalIssuers")
            .field("issuers", &self.by_iss.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ExternalIssuers {
    /// Loads PEM/JWKS files and fetches every `jwks_url` once (concurrently, each bounded by its
    /// timeout). A failed fetch is logged and retried by [`refresh_task`](Self::refresh_task),
    /// not fatal. Configuration errors (bad setting, unreadable or unusable file) are, naming the
    /// issuer. Reads files with blocking I/O: meant for start-up and reloads.
    pub async fn load(
        issuers: Vec<IssuerConfig>,
        base_dir: &Path,
    ) -> Result<Arc<Self>, ExternalError> {
        let mut by_iss = HashMap::new();
        let mut loaded = Vec::with_capacity(issuers.len());
        // The system's roots are read once, and only when some issuer needs them.
        let mut system_roots: Option<RootCertStore> = None;
        for config in issuers {
            if by_iss.contains_key(&config.issuer) {
                return Err(config_error(&config.issuer, "issuer listed twice".into()));
            }
            let issuer = Issuer::load(config, base_dir, &mut system_roots)?;
            by_iss.insert(issuer.iss.clone(), loaded.len());
            loaded.push(Arc::new(issuer));
        }

        let mut fetches = tokio::task::JoinSet::new();
        for issuer in loaded.iter().filter(|i| i.remote.is_some()) {
            let issuer = Arc::clone(issuer);
            fetches.spawn(async move { issuer.refresh().await });
        }
        while let Some(joined) = fetches.join_next().await {
            if let Err(error) = joined {
                tracing::error!(%error, "initial JWKS fetch task failed");
            }
        }

        Ok(Arc::new(Self {
            issuers: loaded,
            by_iss,
            cache: Mutex::new(TokenCache::default()),
            wake: Notify::new(),
        }))
    }

    /// Background refresh of every `jwks_url` (periodic, on demand after an unknown `kid`, retry
    /// after failures; see the module docs). Fetches one issuer at a time. Returns when `cancel`
    /// fires, or at once if no issuer has a URL.
    pub fn refresh_task(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = Arc::clone(self);
        async move { this.refresh_loop(cancel).await }
    }

    /// Cheap check without verifying: does the token's unverified `iss` name one of our
    /// issuers? Used to dispatch between the cluster's tokens and outside ones; see the module
    /// docs for why reading an unverified claim is fine for routing.
    pub fn handles(&self, token: &str) -> bool {
        self.route(token).is_ok()
    }

    /// True when no issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    fn lock_cache(&self) -> MutexGuard<'_, TokenCache> {
        // Every entry is independently valid, so a panic while holding the lock cannot leave the
        // map in a state that matters: a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn refresh_loop(&self, cancel: CancellationToken) {
        loop {
            let now = Instant::now();
            for issuer in &self.issuers {
                let Some(remote) = &issuer.remote else {
                    continue;
                };
                if remote.due() > now {
                    continue;
                }
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return,
                    () = issuer.refresh() => {}
                }
            }
            let next = self
                .issuers
                .iter()
                .filter_map(|issuer| issuer.remote.as_ref())
                .map(Remote::due)
                .min();
            let Some(next) = next else {
                return;
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep_until(next) => {}
            }
        }
    }

    /// Shape check, then the unverified `iss` → our issuer (and its index), and the header.
    fn route(&self, token: &str) -> Result<(usize, &Issuer, Header), AuthError> {
        if !well_shaped(token) {
            return Err(AuthError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        #[derive(Deserialize)]
        struct Unverified {
            iss: Option<String>,
        }
        // Routing only: the issuer chosen checks the signature with its own keys, then `iss`.
        let claims: Unverified = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| AuthError::Malformed)?;
        let index = claims
            .iss
            .and_then(|iss| self.by_iss.get(&iss).copied())
            .ok_or(AuthError::WrongIssuer)?;
        let issuer = self.issuers.get(index).ok_or(AuthError::Internal)?;
        Ok((index, issuer, header))
    }

    fn cached(&self, digest: &[u8; 32], now_unix: u64) -> Option<Result<Identity, AuthError>> {
        let mut cache = self.lock_cache();
        let entry = cache.map.get(digest)?;
        // Entries are only made with an index from `route`, and the issuer list never changes.
        let current = self
            .issuers
            .get(entry.issuer)
            .map(|i| i.keys.load().generation);
        if current != Some(entry.generation) {
            // Verified with a key set that has since lost or changed a key: verify again.
            cache.map.remove(digest);
            return None;
        }
        if now_unix > entry.stale_at {
            cache.map.remove(digest);
            return Some(Err(AuthError::Expired));
        }
        Some(Ok(entry.identity.clone()))
    }

    fn remember(&self, digest: [u8; 32], entry: Cached, now_unix: u64) {
        let mut cache = self.lock_cache();
        if cache.map.len() >= CACHE_CAPACITY && !cache.map.contains_key(&digest) {
            cache.map.retain(|_, e| now_unix <= e.stale_at);
            let low_water = CACHE_CAPACITY - CACHE_CAPACITY / 8;
            let mut excess = cache.map.len().saturating_sub(low_water);
            if excess > 0 {
                // Arbitrary victims (the map's random iteration order), so O(1) amortised.
                cache.map.retain(|_, _| {
                    let keep = excess == 0;
                    excess = excess.saturating_sub(1);
                    keep
                });
            }
        }
        cache.map.insert(digest, entry);
    }

    /// Wakes the refresh task for `issuer`, at most once per pending refresh.
    fn want_refresh(&self, issuer: &Issuer) {
        if let Some(remote) = &issuer.remote
            && !remote.wanted.swap(true, Ordering::Relaxed)
        {
            self.wake.notify_one();
        }
    }
}

impl Authenticator for ExternalIssuers {
    fn authenticate(&self, token: &str, now_unix: u64) -> Result<Identity, AuthError> {
        if !well_shaped(token) {
            return Err(AuthError::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(answer) = self.cached(&digest, now_unix) {
            return answer;
        }
        let (index, issuer, header) = self.route(token)?;
        let keys = issuer.keys.load_full();
        let verified = match issuer.verify(token, &header, &keys, &digest, now_unix) {
            Err(AuthError::UnknownKey) => {
                self.want_refresh(issuer);
                return Err(AuthError::UnknownKey);
            }
            other => other?,
        };
        let entry = Cached {
            issuer: index,
            generation: keys.generation,
            stale_at: verified.expires_at.saturating_add(issuer.leeway_secs),
            identity: verified.clone(),
        };
        self.remember(digest, entry, now_unix);
        Ok(verified)
    }
}

/// Builds an [`Identity`]: the one place this module does, so that a change to the struct is a
/// one-line fix here.
fn identity(
    user: &str,
    expires_at: u64,
    token_id: Arc<str>,
    client_id: Option<Arc<str>>,
    issued_at: u64,
) -> Identity {
    Identity {
        user: user.into(),
        expires_at,
        token_id,
        client_id,
        issued_at,
    }
}

/// One configured issuer with its current keys.
struct Issuer {
    iss: String,
    user_claim: String,
    leeway_secs: u64,
    /// One pinned `Validation` per accepted algorithm: `jsonwebtoken` wants all algorithms of a
    /// `Validation` in one family, and building one per request would cost allocations.
    validations: Vec<(Algorithm, Validation)>,
    keys: ArcSwap<KeySet>,
    remote: Option<Remote>,
}

impl Issuer {
    fn load(
        config: IssuerConfig,
        base_dir: &Path,
        system_roots: &mut Option<RootCertStore>,
    ) -> Result<Self, ExternalError> {
        let iss = config.issuer.clone();
        let fail = |reason: String| config_error(&iss, reason);
        if iss.is_empty() {
            return Err(fail("issuer is empty".into()));
        }
        if config.audience.is_empty() || config.audience.iter().any(String::is_empty) {
            return Err(fail(
                "audience must list at least one non-empty value".into(),
            ));
        }
        if config.user_claim.is_empty() {
            return Err(fail("user_claim is empty".into()));
        }
        if config.algorithms.is_empty() {
            return Err(fail("algorithms is empty".into()));
        }
        let mut validations = Vec::new();
        for name in &config.algorithms {
            let alg = parse_algorithm(name).map_err(&fail)?;
            if validations.iter().any(|(a, _)| *a == alg) {
                continue;
            }
            let mut validation = Validation::new(alg);
            validation.set_issuer(&[&iss]);
            validation.set_audience(&config.audience);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.leeway = config.leeway_secs;
            // `exp` and `nbf` are judged in `verify` against the caller's clock; the library
            // would read the wall clock. `exp` stays required above.
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validations.push((alg, validation));
        }
        if config.fetch_timeout_secs == 0 || config.refresh_interval_secs == 0 {
            return Err(fail(
                "fetch_timeout_secs and refresh_interval_secs must be at least 1".into(),
            ));
        }
        if config.ca_file.is_some() && !matches!(config.keys, KeySource::JwksUrl(_)) {
            return Err(fail("ca_file applies to jwks_url only".into()));
        }

        let (keys, remote) = match &config.keys {
            KeySource::PemFiles(paths) => {
                if paths.is_empty() {
                    return Err(fail("pem_files is empty".into()));
                }
                let mut keys = Vec::new();
                for path in paths {
                    let path = base_dir.join(path);
                    let pem = read_file(&iss, &path)?;
                    let mut found =
                        keys_from_pem(&pem).map_err(|reason| bad_file(&iss, &path, reason))?;
                    keys.append(&mut found);
                }
                (keys, None)
            }
            KeySource::JwksFile(path) => {
                let path = base_dir.join(path);
                let json = read_file(&iss, &path)?;
                let keys = keys_from_jwks(&json).map_err(|reason| bad_file(&iss, &path, reason))?;
                (keys, None)
            }
            KeySource::JwksUrl(url) => {
                let url = check_url(url).map_err(&fail)?;
                let roots = if url.scheme_str() == Some("https") {
                    let mut roots = system_roots.get_or_insert_with(load_system_roots).clone();
                    if let Some(ca_file) = &config.ca_file {
                        let path = base_dir.join(ca_file);
                        add_ca_file(&mut roots, &path)
                            .map_err(|reason| bad_file(&iss, &path, reason))?;
                    }
                    roots
                } else {
                    RootCertStore::empty()
                };
                let timeout = Duration::from_secs(config.fetch_timeout_secs);
                let client = http_client(roots, timeout).map_err(&fail)?;
                let remote = Remote {
                    url,
                    client,
                    timeout,
                    refresh_interval: Duration::from_secs(config.refresh_interval_secs),
                    min_refetch_interval: Duration::from_secs(config.min_refetch_interval_secs),
                    wanted: AtomicBool::new(false),
                    state: Mutex::new(FetchState::default()),
                };
                (Vec::new(), Some(remote))
            }
        };

        Ok(Self {
            iss,
            user_claim: config.user_claim,
            leeway_secs: config.leeway_secs,
            validations,
            keys: ArcSwap::from_pointee(KeySet {
                generation: 0,
                keys: keys.into_iter().map(Arc::new).collect(),
            }),
            remote,
        })
    }

    /// Fetches the JWK set once and installs it; on failure keeps the current keys.
    async fn refresh(&self) {
        let Some(remote) = &self.remote else {
            return;
        };
        // Cleared before fetching: a wake during the fetch asks for another one (rate-limited).
        remote.wanted.store(false, Ordering::Relaxed);
        remote.lock_state().last_attempt = Some(Instant::now());
        let result = fetch(&remote.client, &remote.url, remote.timeout)
            .await
            .and_then(|body| keys_from_jwks(&body));
        let ok = match result {
            Ok(keys) => {
                let count = keys.len();
                let generation = self.install(keys);
                tracing::debug!(issuer = %self.iss, url = %remote.url, keys = count, generation, "JWKS fetched");
                true
            }
            Err(error) => {
                tracing::warn!(issuer = %self.iss, url = %remote.url, %error, "cannot fetch JWKS, keeping the previous keys");
                false
            }
        };
        remote.lock_state().last_ok = ok;
    }

    /// Swaps in a new key set; returns its generation, bumped when a key was removed or changed.
    /// Only the refresh path calls this, one fetch per issuer at a time, so the read-compute-store
    /// below does not race with itself.
    fn install(&self, keys: Vec<VerifyKey>) -> u64 {
        let old = self.keys.load();
        let new_prints: HashSet<[u8; 32]> = keys.iter().map(|k| k.fingerprint).collect();
        let kept_all = old.keys.iter().all(|k| new_prints.contains(&k.fingerprint));
        let generation = old.generation + u64::from(!kept_all);
        self.keys.store(Arc::new(KeySet {
            generation,
            keys: keys.into_iter().map(Arc::new).collect(),
        }));
        generation
    }

    /// Steps 1-4 of the module docs for an uncached token.
    fn verify(
        &self,
        token: &str,
        header: &Header,
        keys: &KeySet,
        digest: &[u8; 32],
        now_unix: u64,
    ) -> Result<Identity, AuthError> {
        let Some((alg, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg)
        else {
            return Err(AuthError::BadAlgorithm);
        };
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        let candidates = keys.candidates(header.kid.as_deref(), *alg)?;
        let mut claims = None;
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => continue,
                Err(e) => return Err(map_error(e.kind())),
            }
        }
        let claims = claims.ok_or(AuthError::BadSignature)?;

        let expires_at = claims
            .get("exp")
            .and_then(unix_time)
            .ok_or(AuthError::Malformed)?;
        if now_unix > expires_at.saturating_add(self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = unix_time(nbf).ok_or(AuthError::Malformed)?;
            if now_unix.saturating_add(self.leeway_secs) < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        let user = claims
            .get(&self.user_claim)
            .and_then(Value::as_str)
            .filter(|u| acceptable_id(u))
            .ok_or(AuthError::Malformed)?;
        let token_id: Arc<str> = match claims.get("jti").and_then(Value::as_str) {
            Some(jti) if acceptable_id(jti) => jti.into(),
            _ => hex::encode(&digest[..8]).into(),
        };
        let client_id = ["client_id", "azp"]
            .iter()
            .find_map(|name| claims.get(*name).and_then(Value::as_str))
            .filter(|c| acceptable_id(c))
            .map(Arc::from);
        let issued_at = claims.get("iat").and_then(unix_time).unwrap_or(0);
        Ok(identity(user, expires_at, token_id, client_id, issued_at))
    }
}

/// How a `jwks_url` issuer fetches its keys.
struct Remote {
    url: Uri,
    client: HttpClient,
    timeout: Duration,
    refresh_interval: Duration,
    min_refetch_interval: Duration,
    /// An unknown `kid` was seen since the last fetch started.
    wanted: AtomicBool,
    state: Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_ok: bool,
}

/// Shortest retry delay after a failed fetch, whatever `min_refetch_interval_secs` says, so a
/// refused connection cannot turn the refresh task into a busy loop.
const MIN_RETRY: Duration = Duration::from_secs(1);

impl Remote {
    fn lock_state(&self) -> MutexGuard<'_, FetchState> {
        // Two plain fields, each written whole: a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the next fetch is due (now or in the past: at once).
    fn due(&self) -> Instant {
        let state = self.lock_state();
        let Some(last) = state.last_attempt else {
            return Instant::now();
        };
        let mut due = if state.last_ok {
            last + self.refresh_interval
        } else {
            last + self.min_refetch_interval.max(MIN_RETRY)
        };
        if self.wanted.load(Ordering::Relaxed) {
            due = due.min(last + self.min_refetch_interval);
        }
        due
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// An HTTP/1.1 client over rustls (aws-lc-rs) trusting `roots`. Connections are not pooled:
/// fetches are minutes apart, and a pooled connection would likely be stale by then.
fn http_client(roots: RootCertStore, timeout: Duration) -> Result<HttpClient, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(https))
}

/// GETs `url`, bounded by `timeout` overall and [`MAX_JWKS_BYTES`] of body; 200 only.
async fn fetch(client: &HttpClient, url: &Uri, timeout: Duration) -> Result<Bytes, String> {
    let request = Request::get(url.clone())
        .header(header::ACCEPT, "application/jwk-set+json, application/json")
        .header(
            header::USER_AGENT,
            concat!("sip-oauth-registrar/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        if response.status() != StatusCode::OK {
            return Err(format!("HTTP status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {}", error_chain(&*e)))?;
        Ok(body.to_bytes())
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no complete answer within {} s", timeout.as_secs()))?
}

/// `error: source: source...`: hyper's own messages are terse ("client error (Connect)").
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// `https://...`, or `http://` to a loopback IP literal only.
fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("jwks_url {url:?} is not a URL: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("jwks_url {url:?} has no host"))?;
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") => {
            let ip = host.trim_start_matches('[').trim_end_matches(']');
            match IpAddr::from_str(ip) {
                Ok(ip) if ip.is_loopback() => Ok(uri),
                _ => Err(format!(
                    "jwks_url {url:?}: plain http is allowed only to a loopback IP address; use https"
                )),
            }
        }
        _ => Err(format!("jwks_url {url:?} must be https://")),
    }
}

fn load_system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "while loading the system's CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates loaded");
    roots
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let mut count = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("not PEM: {e}"))? {
        let cert = cert.map_err(|e| format!("bad PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("no CERTIFICATE in the file".into());
    }
    Ok(())
}

/// The current keys of an issuer.
struct KeySet {
    /// Bumped when a refresh removes or changes a key; cache entries of older generations are
    /// verified again.
    generation: u64,
    keys: Vec<Arc<VerifyKey>>,
}

impl KeySet {
    /// The keys to try for a token (see *Key selection* in the module docs).
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Result<Vec<&VerifyKey>, AuthError> {
        if let Some(kid) = kid {
            let mut named = self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .peekable();
            if named.peek().is_some() {
                let fitting: Vec<_> = named.filter(|k| k.fits(alg)).map(|k| &**k).collect();
                // The key exists but is of another type than the header claims.
                return if fitting.is_empty() {
                    Err(AuthError::BadAlgorithm)
                } else {
                    Ok(fitting)
                };
            }
        }
        let unnamed: Vec<_> = self
            .keys
            .iter()
            .filter(|k| k.kid.is_none() && k.fits(alg))
            .map(|k| &**k)
            .collect();
        if !unnamed.is_empty() {
            return Ok(unnamed);
        }
        if kid.is_none() {
            let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
            if let (Some(only), None) = (fitting.next(), fitting.next()) {
                return Ok(vec![&**only]);
            }
        }
        Err(AuthError::UnknownKey)
    }
}

/// The type of a verification key, which decides the algorithms it can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Self::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Self::P256 => alg == ES256,
            Self::P384 => alg == ES384,
            Self::Ed25519 => alg == EdDSA,
        }
    }
}

struct VerifyKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The JWK's `alg`, when it names one: the key is then for that algorithm only.
    alg: Option<Algorithm>,
    decoding: DecodingKey,
    /// SHA-256 of the key's source form (JWK JSON or SPKI DER), to see what a refresh changed.
    fingerprint: [u8; 32],
}

impl VerifyKey {
    fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// Fuzzing entry point (`fuzz/fuzz_targets/http_inputs.rs`), not an API: a JWK set as a
/// `jwks_url` answers it, on arbitrary bytes. Returns how many keys were usable.
#[doc(hidden)]
pub fn fuzz_jwks(json: &[u8]) -> usize {
    keys_from_jwks(json).map_or(0, |keys| keys.len())
}

/// The signature keys of a JWK set; keys that are not (see module docs) are skipped.
fn keys_from_jwks(json: &[u8]) -> Result<Vec<VerifyKey>, String> {
    if json.len() > MAX_JWKS_BYTES {
        return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
    }
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    // Each key is parsed on its own, so that one key of a kind we do not know does not make the
    // whole set unusable.
    let set: RawSet = serde_json::from_slice(json).map_err(|e| format!("not a JWK set: {e}"))?;
    if set.keys.len() > MAX_JWKS_KEYS {
        return Err(format!(
            "{} keys, at most {MAX_JWKS_KEYS} accepted",
            set.keys.len()
        ));
    }
    let mut keys = Vec::new();
    for raw in set.keys {
        let fingerprint: [u8; 32] = Sha256::digest(raw.to_string().as_bytes()).into();
        let key = serde_json::from_value::<Jwk>(raw)
            .map_err(|e| e.to_string())
            .and_then(|jwk| key_from_jwk(&jwk, fingerprint).map_err(str::to_owned));
        match key {
            Ok(key) => keys.push(key),
            Err(reason) => tracing::debug!(%reason, "JWK skipped"),
        }
    }
    if keys.is_empty() {
        return Err("no usable signature key".into());
    }
    Ok(keys)
}

fn key_from_jwk(jwk: &Jwk, fingerprint: [u8; 32]) -> Result<VerifyKey, &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("encryption key");
    }
    let alg = match jwk.common.key_algorithm {
        Some(alg) => {
            Some(Algorithm::from_str(&alg.to_string()).map_err(|_| "not a signature algorithm")?)
        }
        None => None,
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return Err("unsupported curve"),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            _ => return Err("unsupported curve"),
        },
        _ => return Err("not an asymmetric signature key"),
    };
    if alg.is_some_and(|a| !kind.fits(a)) {
        return Err("alg does not match the key type");
    }
    let decoding = DecodingKey::from_jwk(jwk).map_err(|_| "bad key parameters")?;
    if let DecodingKeyKind::RsaModulusExponent { n, .. } = decoding.kind() {
        let significant = n.iter().skip_while(|b| **b == 0).count();
        if significant * 8 < MIN_RSA_BITS {
            return Err("RSA key shorter than 2048 bits");
        }
    }
    Ok(VerifyKey {
        kid: jwk.common.key_id.clone(),
        kind,
        alg,
        decoding,
        fingerprint,
    })
}

/// Smallest RSA modulus accepted, in bits.
const MIN_RSA_BITS: usize = 2048;

/// The `PUBLIC KEY` and `CERTIFICATE` sections of a PEM file; any other section is an error (a
/// private key has no business in this configuration).
fn keys_from_pem(pem: &[u8]) -> Result<Vec<VerifyKey>, String> {
    let mut keys = Vec::new();
    for section in <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| format!("bad PEM: {e}"))?;
        let key = match kind {
            SectionKind::PublicKey => key_from_spki(&der)?,
            SectionKind::Certificate => {
                let (_, cert) =
                    X509Certificate::from_der(&der).map_err(|e| format!("bad certificate: {e}"))?;
                key_from_spki(cert.tbs_certificate.subject_pki.raw)?
            }
            other => {
                return Err(format!(
                    "{other:?} section; expected PUBLIC KEY or CERTIFICATE"
                ));
            }
        };
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no PUBLIC KEY or CERTIFICATE section".into());
    }
    Ok(keys)
}

fn key_from_spki(der: &[u8]) -> Result<VerifyKey, String> {
    let (_, info) =
        SubjectPublicKeyInfo::from_der(der).map_err(|e| format!("bad public key: {e}"))?;
    let raw: &[u8] = &info.subject_public_key.data;
    let oid = &info.algorithm.algorithm;
    let (kind, decoding) = if *oid == OID_PKCS1_RSAENCRYPTION {
        let bits = match info.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => return Err("bad RSA public key".into()),
        };
        if bits < MIN_RSA_BITS {
            return Err(format!(
                "RSA key of {bits} bits, at least {MIN_RSA_BITS} required"
            ));
        }
        // The SPKI bit string of an RSA key is the PKCS#1 RSAPublicKey aws-lc verifies with.
        (KeyKind::Rsa, DecodingKey::from_rsa_der(raw))
    } else if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = info
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        let kind = match curve {
            Some(c) if c == OID_EC_P256 => KeyKind::P256,
            Some(c) if c == OID_NIST_EC_P384 => KeyKind::P384,
            _ => return Err("EC key on an unsupported curve (P-256 and P-384 only)".into()),
        };
        // The bit string is the uncompressed point, as for `from_ec_components`.
        (kind, DecodingKey::from_ec_der(raw))
    } else if *oid == OID_SIG_ED25519 {
        (KeyKind::Ed25519, DecodingKey::from_ed_der(raw))
    } else {
        return Err(format!("unsupported public key algorithm {oid}"));
    };
    Ok(VerifyKey {
        kid: None,
        kind,
        alg: None,
        decoding,
        fingerprint: Sha256::digest(der).into(),
    })
}

fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let alg = Algorithm::from_str(name).map_err(|_| format!("unknown algorithm {name:?}"))?;
    let asymmetric = [KeyKind::Rsa, KeyKind::P256, KeyKind::P384, KeyKind::Ed25519]
        .iter()
        .any(|k| k.fits(alg));
    if !asymmetric {
        // HMAC would need a shared secret; accepting it is how "HS256 signed with the public
        // key" attacks work.
        return Err(format!(
            "algorithm {name} is not accepted (public-key algorithms only)"
        ));
    }
    Ok(alg)
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::BadAlgorithm,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidSubject => AuthError::Malformed,
        // A key the library cannot use, or a provider failure: not the client's fault.
        _ => AuthError::Internal,
    }
}

/// A NumericDate: integer, or a non-negative finite number (RFC 7519 allows fractions).
fn unix_time(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// A user id or token id we are willing to log and match on.
fn acceptable_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= MAX_USER_LEN && !text.chars().any(char::is_control)
}

fn well_shaped(token: &str) -> bool {
    if token.len() > MAX_TOKEN_LEN {
        return false;
    }
    let mut parts = token.split('.');
    let non_empty = parts.by_ref().take(3).filter(|p| !p.is_empty()).count();
    non_empty == 3 && parts.next().is_none()
}

/// A verified token in the cache.
struct Cached {
    issuer: usize,
    generation: u64,
    /// `exp + leeway`: past this, the entry answers `expired`.
    stale_at: u64,
    identity: Identity,
}

#[derive(Default)]
struct TokenCache {
    map: HashMap<[u8; 32], Cached>,
}

fn config_error(issuer: &str, reason: String) -> ExternalError {
    ExternalError::Config {
        issuer: issuer.to_owned(),
        reason,
    }
}

fn bad_file(issuer: &str, path: &Path, reason: String) -> ExternalError {
    ExternalError::BadFile {
        issuer: issuer.to_owned(),
        path: path.to_owned(),
        reason,
    }
}

fn read_file(issuer: &str, path: &Path) -> Result<Vec<u8>, ExternalError> {
    let read = || -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut data = Vec::new();
        // One byte more than the limit, to tell "exactly at the limit" from "over it".
        std::fs::File::open(path)?
            .take(MAX_JWKS_BYTES as u64 + 1)
            .read_to_end(&mut data)?;
        Ok(data)
    };
    let data = read().map_err(|source| ExternalError::Read {
        issuer: issuer.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    if data.len() > MAX_JWKS_BYTES {
        return Err(bad_file(
            issuer,
            path,
            format!("larger than {MAX_JWKS_BYTES} bytes"),
        ));
    }
    Ok(data)
}

fn default_user_claim() -> String {
    "sub".into()
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}

fn default_leeway_secs() -> u64 {
    60
}

fn default_fetch_timeout_secs() -> u64 {
    5
}

fn default_refresh_interval_secs() -> u64 {
    900
}

fn default_min_refetch_interval_secs() -> u64 {
    30
}

#[cfg(test)]
mod tests;
