//! [`TokenAuthority`]: the cluster's token issuer and verifier. It owns the current keys, the
//! claims and their checks, and the cache; the byte format is `jose`'s.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use super::cache::{CacheStats, Lookup, TokenCache, TokenDigest, is_expired};
use super::keys::{ENCRYPTION_KEY_LEN, EncryptionKey, SigningKey};
use super::{AuthError, Authenticator, Identity, KeyError, jose};

/// The `scope` claim of every access token, as UCM's `/ssosp/oauth/authorize` requests it.
pub const SCOPE: &str = "UnifiedCommunications:readwrite";

/// Longest token accepted, in bytes. Ours are about 1.6 KB (RSA-2048 signature, base64url twice
/// over the JWE), UCM's of the same size; the bound keeps hostile input from costing more than a
/// length check.
pub const MAX_TOKEN_LEN: usize = 8192;

const CTYP_ACCESS: &str = "access";
const CTYP_REFRESH: &str = "refresh";
const TYP_USER: &str = "user";

/// Tuning of a [`TokenAuthority`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOptions {
    /// Clock skew tolerated past `exp` and before `nbf`/`iat`, in seconds.
    pub leeway_secs: u64,
    /// Most verified access tokens kept; 0 disables the cache. Each entry costs about 250 bytes
    /// whatever the token's length (a slot, the hash table's spare slots, the user, token id and
    /// client id strings): roughly 25 MB for 100 000 tokens.
    pub cache_capacity: usize,
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            leeway_secs: 60,
            cache_capacity: 100_000,
        }
    }
}

/// A freshly signed token (access or refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWS, as the client will send it (after `Bearer `, or as `refresh_token`).
    pub token: String,
    /// Its `tid` claim (UUID v4).
    pub token_id: String,
    /// Its `exp` claim, unix seconds.
    pub expires_at: u64,
}

/// What a verified refresh token says. The user is not in the token: the caller looks it up by
/// `token_id` (UCM's `refreshtokendetails`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshClaims {
    /// `tid` (UUID v4).
    pub token_id: String,
    /// `ccid` (`C` + 64 hex for UCM's clients).
    pub client_id: String,
    /// `exp`, unix seconds.
    pub expires_at: u64,
}

/// Inner claims of an access token, as issued. Field order is the JSON order.
#[derive(Serialize)]
struct AccessClaimsOut<'a> {
    iss: &'a str,
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    tid: &'a str,
    ccid: &'a str,
    scope: &'a str,
    ctyp: &'a str,
    typ: &'a str,
}

/// The inner claims the verifier needs; `scope` and `typ` are ignored.
#[derive(Deserialize)]
struct AccessClaimsIn {
    iss: String,
    sub: String,
    iat: u64,
    #[serde(default)]
    nbf: Option<u64>,
    exp: u64,
    tid: String,
    #[serde(default)]
    ccid: Option<String>,
    ctyp: String,
}

/// The access token's JWS payload: the JWE and nothing else.
#[derive(Serialize)]
struct AccessPayloadOut<'a> {
    private: &'a str,
}

/// A JWS payload as either verifier first reads it: which kind of token is it?
#[derive(Deserialize)]
struct PayloadIn {
    #[serde(default)]
    private: Option<String>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    ctyp: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    tid: Option<String>,
    #[serde(default)]
    ccid: Option<String>,
}

/// A refresh token's payload, as issued: UCM's keys in UCM's order.
#[derive(Serialize)]
struct RefreshClaimsOut<'a> {
    exp: u64,
    iss: &'a str,
    typ: &'a str,
    tid: &'a str,
    ctyp: &'a str,
    ccid: &'a str,
}

/// The two current keys. Swapped as a whole, so a verification sees a consistent pair.
struct KeySet {
    signing: Arc<SigningKey>,
    encryption: Arc<EncryptionKey>,
}

/// Issues and verifies the cluster's access and refresh tokens. Cheap to share behind an `Arc`;
/// every method takes `&self`, and the rotations swap keys while requests are in flight.
pub struct TokenAuthority {
    cluster_uuid: Arc<str>,
    leeway_secs: u64,
    keys: ArcSwap<KeySet>,
    /// `pub(super)` for the tests, which replay races against it.
    pub(super) cache: TokenCache,
    verifications: AtomicU64,
    decryptions: AtomicU64,
}

impl fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.load();
        f.debug_struct("TokenAuthority")
            .field("cluster_uuid", &self.cluster_uuid)
            .field("kid", &keys.signing.kid)
            .field("encryption_kid", &keys.encryption.kid)
            .field("leeway_secs", &self.leeway_secs)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// Loads the signing key (PKCS#8 PEM, RSA >= 2048 bits) and the JWE key of the cluster
    /// `cluster_uuid` (normalised to lowercase hyphenated form).
    pub fn new(
        cluster_uuid: &str,
        signing_key_pem: &str,
        encryption_key: &[u8; ENCRYPTION_KEY_LEN],
        options: AuthOptions,
    ) -> Result<Self, KeyError> {
        let uuid = uuid::Uuid::parse_str(cluster_uuid)
            .map_err(|_| KeyError::BadClusterUuid(cluster_uuid.to_owned()))?;
        let cluster_uuid: Arc<str> = uuid.hyphenated().to_string().into();
        let keys = KeySet {
            signing: Arc::new(SigningKey::load(&cluster_uuid, signing_key_pem)?),
            encryption: Arc::new(EncryptionKey::load(&cluster_uuid, encryption_key)?),
        };
        Ok(Self {
            cluster_uuid,
            leeway_secs: options.leeway_secs,
            keys: ArcSwap::from_pointee(keys),
            cache: TokenCache::new(options.cache_capacity, options.leeway_secs),
            verifications: AtomicU64::new(0),
            decryptions: AtomicU64::new(0),
        })
    }

    /// Swaps in a new signing key (`set key regen authz signing`): every access and refresh
    /// token signed with the old one stops verifying (its `kid` no longer matches; cache
    /// cleared). On error the old key stays in force. Reloading the same key changes nothing for
    /// clients.
    pub fn rotate(&self, signing_key_pem: &str) -> Result<(), KeyError> {
        // Parsing and the self-test cost milliseconds: done before the cache lock.
        let signing = Arc::new(SigningKey::load(&self.cluster_uuid, signing_key_pem)?);
        self.cache.invalidate(|| {
            let current = self.keys.load();
            self.keys.store(Arc::new(KeySet {
                signing,
                encryption: Arc::clone(&current.encryption),
            }));
        });
        Ok(())
    }

    /// Swaps in a new JWE key (`set key regen authz encryption`): every access token stops
    /// verifying (its JWE `kid` no longer matches; cache cleared). Refresh tokens, which are not
    /// encrypted, stay valid.
    pub fn rotate_encryption(&self, key: &[u8; ENCRYPTION_KEY_LEN]) -> Result<(), KeyError> {
        let encryption = Arc::new(EncryptionKey::load(&self.cluster_uuid, key)?);
        self.cache.invalidate(|| {
            let current = self.keys.load();
            self.keys.store(Arc::new(KeySet {
                signing: Arc::clone(&current.signing),
                encryption,
            }));
        });
        Ok(())
    }

    /// Signs an access token for `user`, valid `ttl_secs` from `now_unix` (`iat` = `nbf` =
    /// `now_unix`). `client_id` goes into `ccid` as given (UCM's form is `C` + 64 hex; not
    /// checked here).
    pub fn issue(
        &self,
        user: &str,
        client_id: &str,
        ttl_secs: u64,
        now_unix: u64,
    ) -> Result<IssuedToken, KeyError> {
        // A full Arc, not a Guard: signing holds it for about a millisecond.
        let keys = self.keys.load_full();
        let token_id = uuid::Uuid::new_v4().to_string();
        let expires_at = now_unix.saturating_add(ttl_secs);
        let claims = AccessClaimsOut {
            iss: &self.cluster_uuid,
            sub: user,
            iat: now_unix,
            nbf: now_unix,
            exp: expires_at,
            tid: &token_id,
            ccid: client_id,
            scope: SCOPE,
            ctyp: CTYP_ACCESS,
            typ: TYP_USER,
        };
        let claims = to_json(&claims)?;
        let jwe = jose::encrypt_jwe(&claims, &keys.encryption)?;
        let payload = to_json(&AccessPayloadOut { private: &jwe })?;
        let token = jose::encode_jws(&payload, &keys.signing)?;
        Ok(IssuedToken {
            token,
            token_id,
            expires_at,
        })
    }

    /// Signs a refresh token for the client `client_id`, valid `ttl_secs` from `now_unix`. It
    /// names no user: the caller records `token_id` → user.
    pub fn issue_refresh(
        &self,
        client_id: &str,
        ttl_secs: u64,
        now_unix: u64,
    ) -> Result<IssuedToken, KeyError> {
        let keys = self.keys.load_full();
        let token_id = uuid::Uuid::new_v4().to_string();
        let expires_at = now_unix.saturating_add(ttl_secs);
        let claims = RefreshClaimsOut {
            exp: expires_at,
            iss: &self.cluster_uuid,
            typ: TYP_USER,
            tid: &token_id,
            ctyp: CTYP_REFRESH,
            ccid: client_id,
        };
        let token = jose::encode_jws(&to_json(&claims)?, &keys.signing)?;
        Ok(IssuedToken {
            token,
            token_id,
            expires_at,
        })
    }

    /// Checks a refresh token: shape, header, `kid`, signature, then `iss` = this cluster
    /// (`WrongIssuer`), a refresh token (`WrongType`, also for an access token), `exp` with
    /// leeway (`Expired`). Not cached: a refresh happens once per access-token lifetime.
    pub fn verify_refresh(&self, token: &str, now_unix: u64) -> Result<RefreshClaims, AuthError> {
        if !well_shaped(token) {
            return Err(AuthError::Malformed);
        }
        let keys = self.keys.load_full();
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let payload = jose::verify_jws(token, &keys.signing)?;
        let claims: PayloadIn = from_json(&payload)?;
        if claims.private.is_some() {
            return Err(AuthError::WrongType);
        }
        let (Some(iss), Some(exp), Some(tid), Some(ccid)) =
            (claims.iss, claims.exp, claims.tid, claims.ccid)
        else {
            return Err(AuthError::Malformed);
        };
        if iss != *self.cluster_uuid {
            return Err(AuthError::WrongIssuer);
        }
        if claims.ctyp.as_deref() != Some(CTYP_REFRESH) {
            return Err(AuthError::WrongType);
        }
        if tid.is_empty() || ccid.is_empty() {
            return Err(AuthError::Malformed);
        }
        if is_expired(exp, now_unix, self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        Ok(RefreshClaims {
            token_id: tid,
            client_id: ccid,
            expires_at: exp,
        })
    }

    /// Access tokens of `user` (and, when given, only of `client_id`) issued (`iat`) before
    /// `before_unix` are refused from now on with [`AuthError::Revoked`], also if cached. Tokens
    /// issued at or after `before_unix` stay valid. Cut-offs only move forward.
    pub fn revoke(&self, user: &str, client_id: Option<&str>, before_unix: u64) {
        self.cache.revoke(user, client_id, before_unix);
    }

    /// The current signing key id: `<cluster-uuid>:<key_hash>`.
    pub fn kid(&self) -> String {
        self.keys.load().signing.kid.to_string()
    }

    /// Like UCM's `show key authz signing`: a hash of the key, never the key (SHA-256 hex of the
    /// SPKI DER of the public key).
    pub fn key_hash(&self) -> String {
        self.keys.load().signing.key_hash.clone()
    }

    /// Like UCM's `show key authz encryption`: SHA-256 hex of the JWE key, never the key.
    pub fn encryption_key_hash(&self) -> String {
        self.keys.load().encryption.key_hash.clone()
    }

    /// The cluster UUID, normalised (lowercase, hyphenated); the `iss` of every token.
    pub fn cluster_uuid(&self) -> &str {
        &self.cluster_uuid
    }

    /// Counters of the verified-token cache and of the crypto work done.
    pub fn cache_stats(&self) -> CacheStats {
        CacheStats {
            verifications: self.verifications.load(Ordering::Relaxed),
            decryptions: self.decryptions.load(Ordering::Relaxed),
            ..self.cache.stats()
        }
    }

    /// Drops cached tokens expired at `now_unix`; returns how many. Optional: inserts do this
    /// when the cache is full, but a periodic sweep returns memory sooner.
    pub fn purge_expired(&self, now_unix: u64) -> usize {
        self.cache.purge_expired(now_unix)
    }

    /// The full check of an uncached access token with `keys` (module docs, steps 3 to 5).
    fn verify_access(
        &self,
        token: &str,
        now_unix: u64,
        keys: &KeySet,
    ) -> Result<Identity, AuthError> {
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let payload = jose::verify_jws(token, &keys.signing)?;
        let outer: PayloadIn = from_json(&payload)?;
        let Some(jwe) = outer.private else {
            // Signed by us but not an access token: say which, when it says so.
            if outer.iss.is_some_and(|iss| iss != *self.cluster_uuid) {
                return Err(AuthError::WrongIssuer);
            }
            return Err(match outer.ctyp {
                Some(_) => AuthError::WrongType,
                None => AuthError::Malformed,
            });
        };
        self.decryptions.fetch_add(1, Ordering::Relaxed);
        let plaintext = jose::decrypt_jwe(&jwe, &keys.encryption)?;
        let claims: AccessClaimsIn = from_json(&plaintext)?;
        if claims.iss != *self.cluster_uuid {
            return Err(AuthError::WrongIssuer);
        }
        if claims.ctyp != CTYP_ACCESS {
            return Err(AuthError::WrongType);
        }
        if claims.sub.is_empty() || claims.tid.is_empty() {
            return Err(AuthError::Malformed);
        }
        if is_expired(claims.exp, now_unix, self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        let not_before = claims.nbf.unwrap_or(0).max(claims.iat);
        if not_before > now_unix.saturating_add(self.leeway_secs) {
            return Err(AuthError::NotYetValid);
        }
        Ok(Identity {
            user: claims.sub.into(),
            expires_at: claims.exp,
            token_id: claims.tid.into(),
            client_id: claims.ccid.map(Into::into),
            issued_at: claims.iat,
        })
    }
}

impl Authenticator for TokenAuthority {
    /// Access tokens only; see the module docs for the order of the checks.
    fn authenticate(&self, token: &str, now_unix: u64) -> Result<Identity, AuthError> {
        if !well_shaped(token) {
            return Err(AuthError::Malformed);
        }
        // Hashed once, outside the cache lock, and only when there is a cache to look in.
        let digest = self.cache.enabled().then(|| TokenDigest::of(token));
        let epoch = match self.cache.lookup(digest.as_ref(), now_unix) {
            Lookup::Hit(answer) => return answer,
            Lookup::Miss { epoch } => epoch,
        };
        // Keys are loaded after the epoch was read (see `TokenCache::invalidate`).
        let keys = self.keys.load_full();
        let identity = self.verify_access(token, now_unix, &keys)?;
        self.cache.admit(digest, &identity, epoch, now_unix)?;
        Ok(identity)
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, KeyError> {
    serde_json::to_vec(value).map_err(|e| KeyError::Signing(e.to_string()))
}

fn from_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, AuthError> {
    serde_json::from_slice(bytes).map_err(|_| AuthError::Malformed)
}

/// Cheap structural screen run before the cache lookup, so hostile input is not even hashed.
fn well_shaped(token: &str) -> bool {
    if token.len() > MAX_TOKEN_LEN {
        return false;
    }
    let mut parts = token.split('.');
    let non_empty = parts
        .by_ref()
        .take(3)
        .filter(|part| !part.is_empty())
        .count();
    non_empty == 3 && parts.next().is_none()
}
