//! Bearer-credential authentication: the single seam between a REGISTER's `Authorization: Bearer`
//! credential and the user it names, and the cluster's token authority.
//!
//! The SIP layer strips the `Bearer token="..."` / `Bearer ...` wrapper and hands the bare token to
//! an [`Authenticator`], which answers with an [`Identity`] or a typed [`AuthError`] whose
//! [`AuthError::reason`] is a stable code for logs and metrics. [`TokenAuthority`] issues and
//! verifies UCM-format tokens (spec section 7); [`external::ExternalIssuers`] verifies plain JWTs
//! of outside identity providers; [`Authenticators`] puts the two behind the one trait the
//! registrar calls. Key problems (loading, rotating,
//! signing) are [`KeyError`]s, kept apart from the per-request [`AuthError`] because they are
//! operator errors, not client errors.
//!
//! # Layout
//!
//! | module | job |
//! |---|---|
//! | [`keys`] | key material: RSA signing key, 256-bit JWE key, their kids and hashes |
//! | `jose` | the wire format: compact JWS/JWE encode and decode, pure functions |
//! | `cache` | the verified-token cache and the revocation table (one lock) |
//! | [`authority`] | [`TokenAuthority`]: claims, validation order, rotation, revocation |
//! | [`external`] | outside issuers: PEM, JWKS file or JWKS URL (fetched, cached, refreshed) |
//!
//! # Token format
//!
//! **Access token**: a compact JWS, RS256, signed with the cluster's RSA (>= 2048-bit) key
//! (PKCS#8 PEM; PKCS#1 accepted). Header, byte for byte in this order:
//!
//! ```json
//! {"alg":"RS256","typ":"JWT","kid":"<cluster-uuid>:<sha256 hex of the public key's SPKI DER>"}
//! ```
//!
//! Its payload is the single claim `{"private":"<JWE>"}`. The JWE is compact, `dir` with
//! A128CBC-HS256 (RFC 7518 §5.2.3) under the cluster's 32-byte encryption key, an empty
//! encrypted-key part, a random 16-byte IV, and the protected header
//!
//! ```json
//! {"alg":"dir","cty":"JWT","enc":"A128CBC-HS256","kid":"<cluster-uuid>:<sha256 hex of the key>"}
//! ```
//!
//! UCM does not publish its inner claims. **Our choice**, exactly as issued by
//! [`TokenAuthority::issue`]:
//!
//! ```json
//! {"iss":"<cluster-uuid>","sub":"<user id>","iat":<unix s>,"nbf":<unix s>,"exp":<unix s>,
//!  "tid":"<uuid v4>","ccid":"C<64 hex>","scope":"UnifiedCommunications:readwrite",
//!  "ctyp":"access","typ":"user"}
//! ```
//!
//! `sub` is the UCM end user, `tid` the token id (for revocation and logs), `ccid` the OAuth
//! client id, `iat` = `nbf` = issue time.
//!
//! **Refresh token**: a JWS with the same header, not encrypted, payload exactly (UCM's keys and
//! order) `{"exp":..,"iss":"<cluster-uuid>","typ":"user","tid":"<uuid v4>","ctyp":"refresh",
//! "ccid":"C<64 hex>"}`. It names no user: the caller keeps `tid` → user server-side, as UCM's
//! `refreshtokendetails` table does.
//!
//! # Validation order (access tokens)
//!
//! Every refusal has its own [`AuthError`] variant.
//!
//! 1. Shape: at most [`MAX_TOKEN_LEN`] bytes, three non-empty dot-separated parts, else
//!    `Malformed` (before anything is hashed or decoded).
//! 2. Cache lookup by the SHA-256 digest of the signature segment (see `cache::TokenDigest` for
//!    why that is enough); a hit only re-checks expiry: no RSA, no AES, no JSON.
//! 3. JWS header only: `alg` must be RS256 (anything else, `none` and `HS256` included, is
//!    `BadAlgorithm`, so the RSA public key can never serve as an HMAC secret; an unparseable
//!    header is `Malformed`); no `crit`; `kid` must be the current signing key's
//!    (`UnknownKey`: old key, other cluster), then the RSA signature (`BadSignature`). No claim is
//!    read before this point.
//! 4. Payload: `{"private": JWE}` (a signed payload without it is a refresh token, `WrongType`, or
//!    `Malformed`). JWE header `dir`/A128CBC-HS256 (`BadAlgorithm`) with the current encryption
//!    `kid` (`UnknownKey`); the tag over header, IV and ciphertext, compared in constant time
//!    before decrypting (`BadCiphertext`); a padding failure after a good tag is ours
//!    (`Internal`).
//! 5. Inner claims: `iss` = this cluster (`WrongIssuer`), `ctyp` = `access` (`WrongType`), `sub`
//!    and `tid` present (`Malformed`), `exp` + leeway not passed (`Expired`), `nbf`/`iat` not
//!    beyond now + leeway (`NotYetValid`), then, under the cache lock, the revocation table
//!    (`Revoked`). Expiry is judged against the caller's `now_unix`, never the wall clock.
//!
//! Whether the user exists, is active and owns the device is the registrar's business.
//!
//! # Cache
//!
//! A map from the SHA-256 digest of the token's signature segment (32 bytes, not the ~1.6 KB
//! token) to its [`Identity`], behind one `std::sync::Mutex` held only for a lookup, an insert or an O(len)
//! pass, never across RSA, AES or an `.await`. A Jabber refresh every 120 s thus costs one
//! SHA-256 and one lookup. Only tokens that passed every check are inserted, so invalid tokens
//! cannot fill it. It holds at most `cache_capacity` entries (0 disables caching); a full insert
//! drops expired entries, then arbitrary ones down to 7/8 of capacity (O(1) amortised).
//!
//! Rotating either key clears it, and bumps an epoch under the same lock as the key swap, so a
//! verification that loaded the old key cannot re-insert its token afterwards. [`revoke`]
//! records a cut-off in a revocation table kept under the same lock, purges matching entries and
//! bumps the epoch; every verification consults the table under the lock before inserting. So a
//! cached entry is never a revoked token, and a hit needs no table lookup.
//!
//! [`revoke`]: TokenAuthority::revoke
//!
//! # Crypto provider
//!
//! `jsonwebtoken` 11 picks its process-wide provider from its crate features on first use; with
//! only `aws_lc_rs` enabled (our `Cargo.toml`) that is automatic. If a dependency ever enables
//! its `rust_crypto` feature as well, the library would panic on first use unless
//! `jsonwebtoken::crypto::CryptoProvider::install_default` is called at start-up. AES and HMAC
//! come from `aws-lc-rs` directly (the same build rustls uses).

pub mod authority;
mod cache;
pub mod external;
mod jose;
pub mod keys;

use std::sync::Arc;

pub use authority::{
    AuthOptions, IssuedToken, MAX_TOKEN_LEN, RefreshClaims, SCOPE, TokenAuthority,
};
pub use cache::CacheStats;
pub use keys::{ENCRYPTION_KEY_LEN, generate_encryption_key};

/// The wall clock in unix seconds (0 before 1970), as tokens count time.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Who a valid credential names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub` claim), i.e. the UCM end user that owns the device.
    pub user: Arc<str>,
    /// When the credential stops being valid, in unix seconds (`exp` claim, before leeway).
    pub expires_at: u64,
    /// The token id (`tid` claim), so revocation and logs can name a token without showing it.
    pub token_id: Arc<str>,
    /// The OAuth client id (`ccid` claim), if the token names one.
    pub client_id: Option<Arc<str>>,
    /// When the token was issued, in unix seconds (`iat` claim); revocation compares it.
    pub issued_at: u64,
}

/// Why a credential was refused. Each variant maps to a stable [`reason`](Self::reason) code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a token at all: empty, too long, not three base64url parts, bad JSON, a header that
    /// does not parse or has `crit`, or claims missing after a valid signature.
    #[error("malformed token")]
    Malformed,
    /// The JWS header names an algorithm other than RS256 (`none`, HS256...), or the JWE header
    /// other than `dir`/A128CBC-HS256.
    #[error("token algorithm not accepted")]
    BadAlgorithm,
    /// The JWS or JWE `kid` is absent or is not the current key's (old key, other cluster).
    #[error("token made with an unknown key")]
    UnknownKey,
    /// The `kid` matches but the RSA signature does not verify with that key.
    #[error("token signature invalid")]
    BadSignature,
    /// The JWE's authentication tag does not match its header, IV and ciphertext.
    #[error("token ciphertext fails its integrity check")]
    BadCiphertext,
    /// Past `exp` plus the configured leeway.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` later than now plus the configured leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not this cluster.
    #[error("token issued by another cluster")]
    WrongIssuer,
    /// `aud` names none of the accepted audiences (outside issuers).
    #[error("token for another audience")]
    WrongAudience,
    /// A valid token of the wrong kind (a refresh token presented as an access token, or the
    /// reverse).
    #[error("wrong token type")]
    WrongType,
    /// Issued before a revocation of its user (or of its user and client).
    #[error("token revoked")]
    Revoked,
    /// Our own failure (e.g. the key could not be used, or a JWE we made does not decrypt); the
    /// client is not at fault.
    #[error("internal authentication error")]
    Internal,
}

impl AuthError {
    /// A short, stable snake_case code for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadAlgorithm => "bad_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::BadCiphertext => "bad_ciphertext",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::WrongType => "wrong_type",
            Self::Revoked => "revoked",
            Self::Internal => "internal",
        }
    }
}

/// The registrar's credential check: the cluster's own tokens first, then outside issuers.
///
/// The cluster's tokens go first because their cache answers the common case (a Jabber
/// refresh) with one lookup; an outside token costs the cluster's check a header parse (its
/// `kid` is not ours) before it is routed by issuer. Outside tokens are not revocable here:
/// their issuer decides their life.
pub struct Authenticators {
    pub cluster: Arc<TokenAuthority>,
    pub outside: Option<Arc<external::ExternalIssuers>>,
}

impl Authenticator for Authenticators {
    fn authenticate(&self, token: &str, now_unix: u64) -> Result<Identity, AuthError> {
        match self.cluster.authenticate(token, now_unix) {
            Err(e @ (AuthError::UnknownKey | AuthError::Malformed | AuthError::BadAlgorithm)) => {
                match &self.outside {
                    Some(outside) if outside.handles(token) => {
                        outside.authenticate(token, now_unix)
                    }
                    _ => Err(e),
                }
            }
            answer => answer,
        }
    }
}

/// Problems with keys and identities of the token authority (loading, rotating, signing), as
/// opposed to the per-request [`AuthError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM text could not be parsed as a private key.
    #[error("cannot parse signing key PEM: {0}")]
    BadPem(String),
    /// The key parsed but is not an RSA key.
    #[error("signing key is not an RSA key")]
    NotRsa,
    /// The RSA modulus is shorter than 2048 bits. A backstop: aws-lc already refuses such keys
    /// while parsing, which surfaces as [`KeyError::BadPem`].
    #[error("RSA signing key has {bits} bits, at least 2048 required")]
    KeyTooSmall {
        /// Size of the modulus found.
        bits: usize,
    },
    /// The cluster id is not a UUID.
    #[error("cluster id {0:?} is not a UUID")]
    BadClusterUuid(String),
    /// Signing a token failed.
    #[error("cannot sign token: {0}")]
    Signing(String),
    /// Setting up the JWE key or encrypting a token failed (aws-lc said no; names the step).
    #[error("encryption failed: {0}")]
    Encryption(&'static str),
}

/// The seam the registrar calls to turn a bearer credential into an [`Identity`].
///
/// Later issues add other implementations (UCM JWE tokens, outside IdPs via JWKS). Implementations
/// must be cheap on repeated credentials (a REGISTER refresh every 120 s per device) and must not
/// block on I/O: this is called on the SIP hot path.
pub trait Authenticator: Send + Sync + 'static {
    /// `token` is the bare token text (the SIP layer has already removed `Bearer token="..."` /
    /// `Bearer ...`). `now_unix` is the caller's clock in unix seconds, so that expiry is judged
    /// against one clock and tests can move time.
    fn authenticate(&self, token: &str, now_unix: u64) -> Result<Identity, AuthError>;
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_snake_case() {
        let all = [
            AuthError::Malformed,
            AuthError::BadAlgorithm,
            AuthError::UnknownKey,
            AuthError::BadSignature,
            AuthError::BadCiphertext,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::WrongType,
            AuthError::Revoked,
            AuthError::Internal,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in &all {
            let r = e.reason();
            assert!(r.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{r}");
            assert!(seen.insert(r), "duplicate reason {r}");
        }
        assert_eq!(all.len(), 12, "a new variant belongs in this list");
        assert_eq!(AuthError::Expired.reason(), "expired");
        assert_eq!(AuthError::BadCiphertext.reason(), "bad_ciphertext");
        assert_eq!(AuthError::NotYetValid.reason(), "not_yet_valid");
        assert_eq!(AuthError::Revoked.reason(), "revoked");
    }

    #[test]
    fn trait_is_object_safe() {
        fn _takes(_: &dyn Authenticator) {}
    }
}
