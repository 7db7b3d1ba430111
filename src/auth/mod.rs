//! Bearer-credential authentication: the single seam between a REGISTER's `Authorization: Bearer`
//! credential and the user it names.
//!
//! The SIP layer strips the `Bearer token="..."` / `Bearer ...` wrapper and hands the bare token to
//! an [`Authenticator`], which answers with an [`Identity`] or a typed [`AuthError`] whose
//! [`AuthError::reason`] is a stable code for logs and metrics. Today the only implementation is
//! [`TokenAuthority`] (flat RS256 JWS signed with the cluster key, see [`jwt`]); UCM's nested
//! JWS/JWE access tokens, refresh tokens and outside identity providers (JWKS) are meant to arrive
//! as further implementations of the same trait, so the registrar never needs to know which one
//! it talks to.
//!
//! Key problems (loading, rotating, signing) are [`KeyError`]s, kept apart from the per-request
//! [`AuthError`] because they are operator errors, not client errors.

pub mod external;
pub mod jwt;

use std::sync::Arc;

pub use jwt::{AuthOptions, CacheStats, IssuedToken, TokenAuthority};

/// Who a valid credential names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub` claim), i.e. the UCM end user that owns the device.
    pub user: Arc<str>,
    /// When the credential stops being valid, in unix seconds (`exp` claim, before leeway).
    pub expires_at: u64,
    /// The token id (`tid` claim), so revocation and logs can name a token without showing it.
    pub token_id: Arc<str>,
}

/// Why a credential was refused. Each variant maps to a stable [`reason`](Self::reason) code.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// Not a token at all: empty, too long, not three base64url parts, bad JSON, a header
    /// algorithm the JWT library does not know (e.g. `none`), or claims missing after a valid
    /// signature.
    #[error("malformed token")]
    Malformed,
    /// The header names a known algorithm other than the pinned one (e.g. HS256).
    #[error("token algorithm not accepted")]
    BadAlgorithm,
    /// The header `kid` is absent or is not the current signing key's (old key, other cluster).
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The `kid` matches but the signature does not verify with that key.
    #[error("token signature invalid")]
    BadSignature,
    /// Past `exp` plus the configured leeway.
    #[error("token expired")]
    Expired,
    /// `iss` is not this cluster.
    #[error("token issued by another cluster")]
    WrongIssuer,
    /// `aud` names none of the accepted audiences (outside issuers).
    #[error("token for another audience")]
    WrongAudience,
    /// Before `nbf` minus the configured leeway (outside issuers).
    #[error("token not yet valid")]
    NotYetValid,
    /// A valid token of the wrong kind (e.g. `ctyp` = `refresh` presented as an access token).
    #[error("wrong token type")]
    WrongType,
    /// Our own failure (e.g. the key could not be used); the client is not at fault.
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
            Self::Expired => "expired",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongType => "wrong_type",
            Self::Internal => "internal",
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
mod tests {
    use super::*;

    #[test]
    fn reasons_are_distinct_snake_case() {
        let all = [
            AuthError::Malformed,
            AuthError::BadAlgorithm,
            AuthError::UnknownKey,
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::WrongIssuer,
            AuthError::WrongAudience,
            AuthError::NotYetValid,
            AuthError::WrongType,
            AuthError::Internal,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in &all {
            let r = e.reason();
            assert!(r.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{r}");
            assert!(seen.insert(r), "duplicate reason {r}");
        }
        assert_eq!(AuthError::Expired.reason(), "expired");
    }

    #[test]
    fn trait_is_object_safe() {
        fn _takes(_: &dyn Authenticator) {}
    }
}
