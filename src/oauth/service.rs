//! The token service's logic, without HTTP: password, authorization-code and refresh-token
//! grants, the login of the authorization endpoint, revocation, and key regeneration. The HTTP
//! handlers ([`super::http`]) only parse requests and shape answers around it.
//!
//! # Lifetimes
//! Access tokens live `access_token_expiry_minutes`; refresh tokens
//! `jabber_refresh_token_expiry_days` (the phone timer is kept for MRA phone onboarding, which
//! has its own client). Refresh tokens, and the code grant, exist only while the enterprise
//! parameter "OAuth with Refresh Login Flow" (`oauth_refresh_login_flow`) is on.
//!
//! # Revocation
//! A revocation at second `t` ends the refresh tokens of the user (and client) issued at or
//! before `t` and makes the token authority refuse their access tokens issued at or before `t`
//! (tokens carry whole seconds, so a token issued in the same second as the revocation is
//! refused too: a client that logs in again at once may need to retry a second later).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::password;
use super::store::{RefreshRecord, Revocation, StoreError, TokenStore};
use crate::auth::{AuthError, IssuedToken, KeyError, TokenAuthority};
use crate::cluster::{Cluster, SharedCluster};
use arc_swap::ArcSwap;

/// The only scope UCM's tokens carry; requests may name it among others.
pub use crate::auth::SCOPE;
/// How long an authorization code may wait for its exchange (RFC 6749 §4.1.2 advises at most
/// 10 minutes; a client exchanges it at once).
pub const CODE_LIFETIME_SECS: u64 = 60;
/// Codes pending at once; an authorization beyond it waits for expired codes to go.
const MAX_PENDING_CODES: usize = 10_000;
/// Password checks running at once: each costs ~19 MiB and tens of milliseconds of a core,
/// so a burst of logins must not starve the SIP path or exhaust memory.
const PASSWORD_CHECKS: usize = 2;
/// How long a login waits for a password check slot before `temporarily_unavailable`; well
/// under the request timeout (`limits.message_timeout_ms`, 10 s by default), so a request is
/// answered rather than cut off while it waits.
const PASSWORD_QUEUE_WAIT: Duration = Duration::from_secs(4);

/// An RFC 6749 §5.2 error (also used for §4.1.2.1 / §4.2.2.1 redirect errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: &'static str, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new("invalid_request", description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }

    fn server_error(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "token service failure");
        Self::new(
            "server_error",
            "the token service could not complete the request",
        )
    }
}

/// What a successful grant returns.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user: Arc<str>,
    pub access: IssuedToken,
    pub refresh: Option<IssuedToken>,
    /// Lifetime of the access token, seconds (`expires_in`).
    pub expires_in: u64,
}

/// The key files, so a regenerated key replaces the one the next start will load.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub signing: PathBuf,
    pub encryption: PathBuf,
}

/// The two keys behind UCM's self-describing tokens (docs/ucm.md §7), as `set key regen authz …`
/// and `show key authz …` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzKey {
    /// The RSA key that signs access and refresh tokens.
    Signing,
    /// The symmetric key that encrypts the access token's inner JWE.
    Encryption,
}

impl AuthzKey {
    /// `Signing` / `Encryption`, as the admin outputs start.
    pub fn title(self) -> &'static str {
        match self {
            Self::Signing => "Signing",
            Self::Encryption => "Encryption",
        }
    }
}

/// An authorization code waiting for its exchange.
#[derive(Debug, Clone)]
struct PendingCode {
    user: Arc<str>,
    client_id: String,
    redirect_uri: String,
    challenge: Option<Challenge>,
    expires_at: u64,
}

/// RFC 7636 (PKCE) code challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Plain(String),
    S256(String),
}

/// The authorization request a login form carries.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: Option<Challenge>,
}

/// The cluster's OAuth token service. Cheap to share behind an `Arc`.
pub struct TokenService {
    /// Swapped by a configuration reload; shared with UDS (which reads its users and devices
    /// through the same handle), so one reload changes both at once.
    cluster: SharedCluster,
    authority: Arc<TokenAuthority>,
    store: Arc<TokenStore>,
    keys: KeyFiles,
    codes: Mutex<HashMap<String, PendingCode>>,
    password_checks: Arc<Semaphore>,
    /// One key regeneration at a time, whoever asks (two admin sessions, a cancelled request
    /// whose blocking work still runs).
    regen: Mutex<()>,
    /// Verified against for unknown users, so a failed login costs the same either way.
    decoy_hash: String,
    /// `tokens.redirect_uris`.
    redirect_uris: Vec<String>,
}

impl TokenService {
    pub fn new(
        cluster: Arc<Cluster>,
        authority: Arc<TokenAuthority>,
        store: Arc<TokenStore>,
        keys: KeyFiles,
    ) -> Self {
        // Applying stored revocations here means a restart refuses what was revoked before it.
        for r in store.revocations() {
            if let Some(user) = &r.user {
                authority.revoke(user, r.client_id.as_deref(), r.at.saturating_add(1));
            }
        }
        let decoy_hash = password::hash("decoy password").unwrap_or_default();
        Self {
            cluster: Arc::new(ArcSwap::new(cluster)),
            authority,
            store,
            keys,
            codes: Mutex::new(HashMap::new()),
            password_checks: Arc::new(Semaphore::new(PASSWORD_CHECKS)),
            regen: Mutex::new(()),
            decoy_hash,
            redirect_uris: Vec::new(),
        }
    }

    /// Allows these `redirect_uri`s besides loopback and private-use ones.
    pub fn with_redirect_uris(mut self, uris: Vec<String>) -> Self {
        self.redirect_uris = uris;
        self
    }

    /// Whether the authorization endpoint may redirect to `uri` (see [`is_allowed_redirect`]).
    pub fn redirect_allowed(&self, uri: &str) -> bool {
        is_allowed_redirect(uri, &self.redirect_uris)
    }

    pub fn authority(&self) -> &Arc<TokenAuthority> {
        &self.authority
    }

    pub fn store(&self) -> &Arc<TokenStore> {
        &self.store
    }

    /// The cluster model in force now.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.cluster.load_full()
    }

    /// The handle a reload swaps: readers that must follow it keep this, not a model.
    pub fn shared_cluster(&self) -> SharedCluster {
        self.cluster.clone()
    }

    /// Puts `cluster` in force (configuration reload): the next login, grant and refresh
    /// meet its users, passwords and active flags.
    pub fn replace_cluster(&self, cluster: Arc<Cluster>) {
        self.cluster.store(cluster);
    }

    /// Whether the code grant and refresh tokens are on.
    pub fn refresh_login_flow(&self) -> bool {
        self.cluster.load().params.oauth_refresh_login_flow
    }

    /// Seconds an access token lives.
    pub fn access_ttl(&self) -> u64 {
        u64::from(self.cluster.load().params.access_token_expiry_minutes) * 60
    }

    fn refresh_ttl(&self) -> u64 {
        u64::from(self.cluster.load().params.jabber_refresh_token_expiry_days) * 86_400
    }

    /// Checks an end user's password (slow: see [`password`]). Unknown users, wrong passwords
    /// and users without a password all fail alike; an inactive user with the right password
    /// is told so.
    pub async fn login(&self, username: &str, pass: &str) -> Result<Arc<str>, OAuthError> {
        // An owned model: the password check below awaits.
        let cluster = self.cluster.load_full();
        let user = cluster.user(username);
        let phc = user
            .and_then(|u| u.password_hash.as_deref())
            .map_or_else(|| self.decoy_hash.clone(), str::to_owned);
        let ok = self.check_password(phc, pass).await?
            && user.is_some_and(|u| u.password_hash.is_some());
        let Some(user) = user.filter(|_| ok) else {
            tracing::info!(user = username, "login refused: bad credentials");
            return Err(OAuthError::invalid_grant("invalid username or password"));
        };
        if !user.active {
            return Err(OAuthError::invalid_grant("the user is not active"));
        }
        Ok(user.id.clone())
    }

    /// Checks an application user (HTTP Basic of the administrative APIs).
    pub async fn app_login(&self, username: &str, pass: &str) -> Result<Arc<str>, OAuthError> {
        let cluster = self.cluster.load_full();
        let user = cluster.app_user(username);
        let phc = user.map_or_else(|| self.decoy_hash.clone(), |u| u.password_hash.to_string());
        match (self.check_password(phc, pass).await?, user) {
            (true, Some(u)) => Ok(u.id.clone()),
            _ => Err(OAuthError::new(
                "invalid_client",
                "invalid application user credentials",
            )),
        }
    }

    async fn check_password(&self, phc: String, pass: &str) -> Result<bool, OAuthError> {
        let permits = self.password_checks.clone();
        let permit = tokio::time::timeout(PASSWORD_QUEUE_WAIT, permits.acquire_owned())
            .await
            .map_err(|_| {
                OAuthError::new("temporarily_unavailable", "too many logins at once; retry")
            })?
            .map_err(OAuthError::server_error)?;
        let pass = pass.to_owned();
        // The permit goes with the work, not with this future: a request cut off by its timeout
        // or its client leaves the check running, and that check must still count.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            password::verify(&phc, &pass)
        })
        .await
        .map_err(OAuthError::server_error)
    }

    /// Access token (and, with the refresh login flow, a refresh token) for a logged-in user.
    pub async fn grant(&self, user: Arc<str>, client_id: &str) -> Result<Grant, OAuthError> {
        self.issue_grant(user, client_id, true).await
    }

    /// The implicit grant: an access token only (RFC 6749 §4.2.2 issues no refresh token).
    pub async fn implicit_grant(
        &self,
        user: Arc<str>,
        client_id: &str,
    ) -> Result<Grant, OAuthError> {
        self.issue_grant(user, client_id, false).await
    }

    async fn issue_grant(
        &self,
        user: Arc<str>,
        client_id: &str,
        with_refresh: bool,
    ) -> Result<Grant, OAuthError> {
        let now = unix_now();
        let ttl = self.access_ttl();
        let access = self
            .authority
            .issue(&user, client_id, ttl, now)
            .map_err(OAuthError::server_error)?;
        let refresh = if with_refresh && self.refresh_login_flow() {
            let refresh = self
                .authority
                .issue_refresh(client_id, self.refresh_ttl(), now)
                .map_err(OAuthError::server_error)?;
            let record = RefreshRecord {
                tid: refresh.token_id.clone(),
                user: user.to_string(),
                client_id: client_id.to_owned(),
                issued_at: now,
                expires_at: refresh.expires_at,
                revoked_at: None,
            };
            self.persist(move |store| store.insert(record)).await?;
            Some(refresh)
        } else {
            None
        };
        tracing::info!(%user, client_id, token_id = %access.token_id, refresh = refresh.is_some(), "tokens issued");
        Ok(Grant {
            user,
            access,
            refresh,
            expires_in: ttl,
        })
    }

    /// The `refresh_token` grant: a new access token for the user the refresh token is bound
    /// to. The refresh token itself stays valid (it is not rotated).
    pub fn refresh(&self, token: &str, client_id: &str) -> Result<Grant, OAuthError> {
        if !self.refresh_login_flow() {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                "refresh tokens need the OAuth with Refresh Login Flow enterprise parameter",
            ));
        }
        let now = unix_now();
        let claims = self
            .authority
            .verify_refresh(token, now)
            .map_err(|e: AuthError| {
                tracing::info!(reason = e.reason(), "refresh token refused");
                OAuthError::invalid_grant(format!("refresh token refused: {}", e.reason()))
            })?;
        if claims.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        let Some(record) = self.store.get(&claims.token_id) else {
            return Err(OAuthError::invalid_grant("unknown refresh token"));
        };
        if record.revoked_at.is_some() {
            return Err(OAuthError::invalid_grant("the refresh token was revoked"));
        }
        if !record.is_active(now) {
            return Err(OAuthError::invalid_grant("the refresh token expired"));
        }
        let user = match self.cluster.load().user(&record.user) {
            Some(u) if u.active => u.id.clone(),
            _ => return Err(OAuthError::invalid_grant("the user is not active")),
        };
        let ttl = self.access_ttl();
        let access = self
            .authority
            .issue(&user, client_id, ttl, now)
            .map_err(OAuthError::server_error)?;
        tracing::debug!(%user, client_id, token_id = %access.token_id, "access token refreshed");
        Ok(Grant {
            user,
            access,
            refresh: None,
            expires_in: ttl,
        })
    }

    /// Issues a single-use authorization code for a logged-in user.
    pub fn issue_code(
        &self,
        user: Arc<str>,
        request: &Authorization,
    ) -> Result<String, OAuthError> {
        let now = unix_now();
        let code = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut codes = self.codes.lock().unwrap_or_else(PoisonError::into_inner);
        if codes.len() >= MAX_PENDING_CODES {
            codes.retain(|_, c| c.expires_at >= now);
            if codes.len() >= MAX_PENDING_CODES {
                return Err(OAuthError::new(
                    "temporarily_unavailable",
                    "too many authorizations pending",
                ));
            }
        }
        codes.insert(
            code.clone(),
            PendingCode {
                user,
                client_id: request.client_id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                challenge: request.challenge.clone(),
                expires_at: now + CODE_LIFETIME_SECS,
            },
        );
        Ok(code)
    }

    /// The `authorization_code` grant (RFC 6749 §4.1.3, with RFC 7636 when the authorization
    /// carried a challenge). A code is consumed by its first exchange, right or wrong.
    pub async fn exchange_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<Grant, OAuthError> {
        let pending = self
            .codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(code);
        let Some(pending) = pending.filter(|p| p.expires_at >= unix_now()) else {
            return Err(OAuthError::invalid_grant("unknown, used or expired code"));
        };
        if pending.client_id != client_id {
            return Err(OAuthError::invalid_grant(
                "the code was issued to another client",
            ));
        }
        if pending.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri differs from the authorization request's",
            ));
        }
        match (&pending.challenge, verifier) {
            (None, _) => {}
            (Some(_), None) => {
                return Err(OAuthError::invalid_grant("code_verifier is required"));
            }
            (Some(challenge), Some(v)) => {
                let matches = match challenge {
                    Challenge::Plain(c) => c == v,
                    Challenge::S256(c) => {
                        let digest = Sha256::digest(v.as_bytes());
                        base64::Engine::encode(
                            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                            digest,
                        ) == *c
                    }
                };
                if !matches {
                    return Err(OAuthError::invalid_grant("code_verifier does not match"));
                }
            }
        }
        let active = self
            .cluster
            .load()
            .user(&pending.user)
            .is_some_and(|u| u.active);
        if !active {
            return Err(OAuthError::invalid_grant("the user is not active"));
        }
        self.grant(pending.user, client_id).await
    }

    /// `/ssosp/token/revoke`: ends the user's refresh tokens (of one client, when given) and
    /// refuses their access tokens issued up to now. Returns how many refresh tokens ended.
    pub async fn revoke(&self, user: &str, client_id: Option<&str>) -> Result<usize, OAuthError> {
        let at = unix_now();
        let revocation = Revocation {
            user: Some(user.to_owned()),
            client_id: client_id.map(str::to_owned),
            at,
        };
        let ended = self.persist(move |store| store.revoke(revocation)).await?;
        self.authority.revoke(user, client_id, at.saturating_add(1));
        tracing::info!(user, client_id, refresh_tokens = ended, "tokens revoked");
        Ok(ended)
    }

    /// `set key regen authz signing|encryption`: a new key, written where the next start reads
    /// it, in force at once. Every outstanding token stops working: access tokens no longer
    /// verify or decrypt, and every refresh token is revoked. Returns the new key's hash.
    pub fn regen_key(&self, which: AuthzKey) -> Result<String, KeyRegenError> {
        let _one_at_a_time = self.regen.lock().unwrap_or_else(PoisonError::into_inner);
        // Revoke, rotate, revoke: the first revocation ends every refresh token before the new
        // key exists (if it cannot be recorded, nothing changes); the second ends those a grant
        // issued while the key was being replaced.
        self.revoke_everything()?;
        match which {
            AuthzKey::Signing => {
                let pem = crate::pki::generate_rsa_signing_key_pem()
                    .map_err(|e| KeyRegenError::Generate(e.to_string()))?;
                self.replace_key_file(&self.keys.signing, pem.as_bytes(), || {
                    self.authority.rotate(&pem)
                })?;
            }
            AuthzKey::Encryption => {
                let key = crate::auth::generate_encryption_key();
                let text = format!("{}\n", hex::encode(key));
                self.replace_key_file(&self.keys.encryption, text.as_bytes(), || {
                    self.authority.rotate_encryption(&key)
                })?;
            }
        }
        let ended = self.revoke_everything()?;
        tracing::warn!(key = ?which, refresh_tokens_revoked = ended, "authz key regenerated");
        Ok(self.key_hash(which))
    }

    fn revoke_everything(&self) -> Result<usize, KeyRegenError> {
        self.store
            .revoke(Revocation {
                user: None,
                client_id: None,
                at: unix_now(),
            })
            .map_err(KeyRegenError::Store)
    }

    /// Writes the new key file, then puts the key in force; if the authority refuses it, the old
    /// file is put back, so what runs and what the next start loads never differ.
    fn replace_key_file(
        &self,
        path: &std::path::Path,
        contents: &[u8],
        apply: impl FnOnce() -> Result<(), KeyError>,
    ) -> Result<(), KeyRegenError> {
        let old = std::fs::read(path).ok();
        crate::pki::write_private_file(path, contents).map_err(|source| KeyRegenError::Write {
            path: path.to_owned(),
            source,
        })?;
        if let Err(e) = apply() {
            if let Some(old) = old
                && let Err(error) = crate::pki::write_private_file(path, &old)
            {
                tracing::error!(
                    path = %path.display(),
                    %error,
                    "cannot put the old key back: the next start loads a key the daemon refused"
                );
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// `show key authz …`: a hash of the key, never the key.
    pub fn key_hash(&self, which: AuthzKey) -> String {
        match which {
            AuthzKey::Signing => self.authority.key_hash(),
            AuthzKey::Encryption => self.authority.encryption_key_hash(),
        }
    }

    /// Runs a blocking store write off the async workers.
    async fn persist<T: Send + 'static>(
        &self,
        f: impl FnOnce(&TokenStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, OAuthError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(OAuthError::server_error)?
            .map_err(OAuthError::server_error)
    }
}

/// Why a key could not be regenerated; the old key stays in force.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRegenError {
    #[error("cannot generate a key: {0}")]
    Generate(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot record the revocation: {0}")]
    Store(StoreError),
}

/// Parses the encryption key file: 64 hex digits, surrounding whitespace ignored.
pub fn parse_encryption_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text.trim()).map_err(|e| format!("not hex: {e}"))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{} bytes, 32 (64 hex digits) needed", bytes.len()))
}

/// An absolute URI (RFC 3986 scheme `:` rest), printable, without a fragment. Custom schemes
/// (native apps) are allowed; `http(s)` needs a host.
pub fn is_redirect_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
    scheme_ok
        && !rest.is_empty()
        && !uri.contains('#')
        && uri.bytes().all(|b| b.is_ascii_graphic())
        && (!web
            || rest
                .strip_prefix("//")
                .is_some_and(|h| !h.is_empty() && !h.starts_with('/')))
}

/// Whether the authorization endpoint may send a token or code to `uri`: one of `configured`
/// (exact match), or what RFC 8252 lets any native app use: an `http` URI on a loopback
/// address (§7.3) or a private-use scheme (§7.1). Anything else (another web site) is refused,
/// or a phishing link could make a real login page hand the user's token to that site.
pub fn is_allowed_redirect(uri: &str, configured: &[String]) -> bool {
    if !is_redirect_uri(uri) {
        return false;
    }
    if configured.iter().any(|c| c == uri) {
        return true;
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let scheme = scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "http" => {
            let authority = rest.trim_start_matches('/');
            let host_port = authority.split(['/', '?']).next().unwrap_or_default();
            if host_port.contains('@') {
                return false;
            }
            let host = match host_port.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or_default(),
                None => host_port.split(':').next().unwrap_or_default(),
            };
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        // Schemes a browser would act on itself are never a native app's.
        "https" | "javascript" | "data" | "vbscript" | "file" | "blob" | "about" => false,
        _ => true,
    }
}

/// UCM client ids are `C` followed by 64 hex digits.
pub fn is_client_id(s: &str) -> bool {
    s.len() == 65 && s.starts_with('C') && s[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

pub use crate::auth::unix_now;
