//! The cluster's token authority: issues and verifies RS256 access tokens, with a verified-token
//! cache so that the REGISTER refresh path costs a hash lookup, not an RSA verification.
//!
//! # Token format (for now)
//!
//! A compact JWS, RS256, signed with the cluster's RSA (>= 2048-bit) key, loaded from PKCS#8 PEM
//! (`BEGIN PRIVATE KEY`; PKCS#1 `BEGIN RSA PRIVATE KEY` is accepted too). Header (key order is the
//! one `jsonwebtoken` serialises; JSON gives it no meaning):
//!
//! ```json
//! {"typ":"JWT","alg":"RS256","kid":"<cluster-uuid>:<sha256 hex of the public key's SPKI DER>"}
//! ```
//!
//! Claims, exactly as issued by [`TokenAuthority::issue`]:
//!
//! ```json
//! {"iss":"<cluster-uuid>","sub":"<user id>","iat":<unix s>,"exp":<unix s>,
//!  "tid":"<uuid v4>","ccid":"C<64 hex>","scope":"UnifiedCommunications:readwrite",
//!  "ctyp":"access","typ":"user"}
//! ```
//!
//! The cluster UUID is normalised to lowercase hyphenated form. This is a flat version of UCM's
//! access token: UCM wraps these claims in a `dir`/`A128CBC-HS256` JWE carried as the single
//! `private` claim of the JWS (spec section 7). That format, refresh tokens (`ctyp` = `refresh`,
//! unencrypted) and outside issuers (JWKS) are later work: they belong in new
//! [`Authenticator`] implementations or in a second decoding step after this module's
//! signature check; the cache and key handling here do not depend on the payload format.
//!
//! # Validation order
//!
//! 1. Shape: at most [`MAX_TOKEN_LEN`] bytes, three non-empty dot-separated parts, else
//!    `Malformed`.
//! 2. Cache lookup by the SHA-256 digest of the token text; a hit only re-checks expiry (no RSA,
//!    no JSON).
//! 3. Header only (`decode_header`, no claim is read): `alg` must be RS256 (`BadAlgorithm`; an
//!    `alg` the library does not know, such as `none`, fails header parsing: `Malformed`); no
//!    `crit` (we understand no extension); `kid` must be the current key's (`UnknownKey`), which
//!    rejects other clusters' and pre-rotation tokens without an RSA operation.
//! 4. Signature with the algorithm pinned to RS256 (`BadSignature`); only then are claims parsed:
//!    `iss` = cluster UUID (`WrongIssuer`), `exp`, `iss`, `sub` and `tid` required (`Malformed`),
//!    `ctyp` = `access` (`WrongType`), then expiry against the caller's `now_unix` (`Expired`).
//!
//! A token is expired when `now_unix > exp + leeway_secs`. Expiry is checked here rather than by
//! `jsonwebtoken`, because the library reads the wall clock and the [`Authenticator`] contract
//! takes the caller's clock.
//!
//! # Cache
//!
//! A map from the SHA-256 digest of the token text (32 bytes, not the ~900-byte token) to its
//! [`Identity`], behind one `std::sync::Mutex` (held only for a lookup, an insert or an eviction
//! pass; never across an `.await` or an RSA operation). SHA-256 is collision resistant, so a hit
//! still means that this exact token was verified. The digest is computed outside the lock, once
//! per request. Only tokens that passed every check are inserted, so invalid tokens cannot fill
//! it. It holds at most `cache_capacity` entries (0 disables caching). When an insert finds it
//! full, it drops every expired entry, then, if still above 7/8 of capacity, arbitrary entries
//! (the map's iteration order, which follows the digests of tokens we signed) down to 7/8: one
//! O(capacity) pass per capacity/8 inserts, so O(1) amortised. Rotation clears it. Entries carry
//! no key material: a rotation race is closed by a generation number checked under the lock (see
//! [`TokenAuthority::rotate`]).
//!
//! # Crypto provider
//!
//! `jsonwebtoken` 11 picks its process-wide provider from its crate features on first use; with
//! only `aws_lc_rs` enabled (our `Cargo.toml`) that is automatic, nothing needs installing. If a
//! dependency ever enables its `rust_crypto` feature as well, the library would panic on first use
//! unless `jsonwebtoken::crypto::CryptoProvider::install_default` is called at start-up. This is
//! independent of rustls's `CryptoProvider`.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::{KeyPair, PublicKeyData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::{AuthError, Authenticator, Identity, KeyError};

/// The `scope` claim of every access token, as UCM's `/ssosp/oauth/authorize` requests it.
pub const SCOPE: &str = "UnifiedCommunications:readwrite";

/// Longest token accepted, in bytes. Ours are about 900 bytes and UCM's nested JWE tokens under
/// 2 KiB; the bound keeps hostile input from costing more than a length check.
pub const MAX_TOKEN_LEN: usize = 8192;

/// Smallest RSA modulus accepted for the signing key, in bits.
pub const MIN_RSA_BITS: usize = 2048;

const CTYP_ACCESS: &str = "access";
const TYP_USER: &str = "user";

/// Tuning of a [`TokenAuthority`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOptions {
    /// Clock skew tolerated past `exp`, in seconds.
    pub leeway_secs: u64,
    /// Most verified tokens kept; 0 disables the cache. Each entry costs about 230 bytes whatever
    /// the token's length (a 72-byte slot, the hash table's spare slots, the user and token id
    /// strings): roughly 23 MB for 100 000 tokens.
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

/// A freshly signed access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWS, as the client will send it after `Bearer `.
    pub token: String,
    /// Its `tid` claim (UUID v4).
    pub token_id: String,
    /// Its `exp` claim, unix seconds.
    pub expires_at: u64,
}

/// Counters of the verified-token cache, for metrics and the admin API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries now held.
    pub len: usize,
    /// Most entries held.
    pub capacity: usize,
    /// Lookups answered from the cache (including expired entries refused).
    pub hits: u64,
    /// Lookups that had to verify the token.
    pub misses: u64,
    /// Entries dropped to make room or because they expired (rotation not counted).
    pub evictions: u64,
}

/// Claims as issued. Field order is the JSON order.
#[derive(Serialize)]
struct AccessClaimsOut<'a> {
    iss: &'a str,
    sub: &'a str,
    iat: u64,
    exp: u64,
    tid: &'a str,
    ccid: &'a str,
    scope: &'a str,
    ctyp: &'a str,
    typ: &'a str,
}

/// The claims the verifier needs; others (`iat`, `ccid`, `scope`, `typ`) are ignored. `iss` is
/// checked by `jsonwebtoken`'s `Validation`.
#[derive(Deserialize)]
struct AccessClaimsIn {
    sub: String,
    exp: u64,
    tid: String,
    ctyp: String,
}

/// One signing key and everything derived from it.
struct SigningKey {
    /// Matches `TokenCache::generation` while this key is current.
    generation: u64,
    kid: Arc<str>,
    key_hash: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl SigningKey {
    fn load(cluster_uuid: &str, pem: &str, generation: u64) -> Result<Self, KeyError> {
        let pair = KeyPair::from_pem(pem).map_err(|e| KeyError::BadPem(e.to_string()))?;
        if pair.algorithm() != &rcgen::PKCS_RSA_SHA256 {
            return Err(KeyError::NotRsa);
        }
        let spki = pair.subject_public_key_info();
        let bits = rsa_modulus_bits(&spki)?;
        if bits < MIN_RSA_BITS {
            return Err(KeyError::KeyTooSmall { bits });
        }
        let key_hash = hex::encode(Sha256::digest(&spki));
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|e| KeyError::BadPem(e.to_string()))?;
        // For RSA, rcgen's raw public key is the PKCS#1 RSAPublicKey, which aws-lc verifies with.
        let decoding = DecodingKey::from_rsa_der(pair.public_key_raw());
        let key = Self {
            generation,
            kid: format!("{cluster_uuid}:{key_hash}").into(),
            key_hash,
            encoding,
            decoding,
        };
        key.self_test()?;
        Ok(key)
    }

    /// Signs and verifies a probe: the two halves come from two PEM parsers (rcgen and
    /// jsonwebtoken), and a disagreement must fail at load time, not on every REGISTER.
    fn self_test(&self) -> Result<(), KeyError> {
        const PROBE: &[u8] = b"sip-oauth-registrar key self-test";
        let sig = jsonwebtoken::crypto::sign(PROBE, &self.encoding, Algorithm::RS256)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        match jsonwebtoken::crypto::verify(&sig, PROBE, &self.decoding, Algorithm::RS256) {
            Ok(true) => Ok(()),
            Ok(false) => Err(KeyError::BadPem(
                "public and private halves disagree".into(),
            )),
            Err(e) => Err(KeyError::BadPem(e.to_string())),
        }
    }
}

fn rsa_modulus_bits(spki: &[u8]) -> Result<usize, KeyError> {
    let (_, info) = SubjectPublicKeyInfo::from_der(spki).map_err(|_| KeyError::NotRsa)?;
    match info.parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok(rsa.key_size()),
        _ => Err(KeyError::NotRsa),
    }
}

/// SHA-256 of a token's text: the cache key.
///
/// Keying by a digest rather than the text saves ~900 bytes per entry (about 1 135 B down to
/// 230 B) and a ~900-byte comparison per lookup. It is paid in CPU: SHA-256 of a 913-byte token
/// costs ~0.6 µs even with SHA-NI, against ~0.2 µs for SipHash over the text, so a cache hit is
/// ~0.4 µs slower. A hit still means "this exact token was verified": a different token with the
/// same digest would be a SHA-256 collision, which is infeasible to find. `sha2` rather than
/// aws-lc's digest (reachable through rustls): both use the CPU's SHA instructions, and for a
/// 913-byte token `sha2` measured ~10 % faster (0.61 against 0.67 µs), aws-lc paying for its FFI
/// and context setup.
#[derive(Clone, Copy, PartialEq, Eq)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl Hash for TokenDigest {
    /// Feeds [`DigestHasher`] the digest's first 8 bytes as one `u64`, nothing else.
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [b0, b1, b2, b3, b4, b5, b6, b7, ..] = self.0;
        state.write_u64(u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7]));
    }
}

/// Hashes a [`TokenDigest`] to its first 8 bytes, instead of running SipHash over it.
///
/// SipHash's random key is there so that an attacker cannot pick keys that pile into a few
/// buckets. Here that cannot happen: only tokens that verified are inserted, and those were signed
/// by us with a random `tid`, so the inserted keys are SHA-256 outputs of inputs no client chose,
/// i.e. uniformly spread. Lookups do take attacker-chosen tokens, and grinding tokens until a
/// digest lands in a chosen bucket is cheap (the index is 17 bits for 100 000 entries), but how
/// long a lookup probes depends on how full the table is where it lands, which the inserted keys
/// decide, not the key looked up; a false match on the 7-bit tag costs one 32-byte comparison.
#[derive(Clone, Copy, Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Only reached if a key type other than [`TokenDigest`] were hashed: mix all bytes in, so
    /// that it would still be a (weak) hash rather than a constant.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for DigestHasher {
    type Hasher = Self;

    fn build_hasher(&self) -> Self {
        Self(0)
    }
}

/// The verified-token cache; see the module docs for the policy.
#[derive(Default)]
struct TokenCache {
    map: HashMap<TokenDigest, Identity, DigestHasher>,
    /// Generation of the current [`SigningKey`]; both change together under this cache's lock.
    generation: u64,
    hits: u64,
    misses: u64,
    evictions: u64,
}

fn is_expired(expires_at: u64, now_unix: u64, leeway_secs: u64) -> bool {
    now_unix > expires_at.saturating_add(leeway_secs)
}

/// Issues and verifies the cluster's access tokens. Cheap to share behind an `Arc`; every method
/// takes `&self`, and [`rotate`](Self::rotate) swaps the key while requests are in flight.
pub struct TokenAuthority {
    cluster_uuid: Arc<str>,
    leeway_secs: u64,
    capacity: usize,
    validation: Validation,
    key: ArcSwap<SigningKey>,
    cache: Mutex<TokenCache>,
}

impl fmt::Debug for TokenAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenAuthority")
            .field("cluster_uuid", &self.cluster_uuid)
            .field("kid", &self.key.load().kid)
            .field("leeway_secs", &self.leeway_secs)
            .field("cache_capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl TokenAuthority {
    /// Loads the signing key (PKCS#8 PEM, RSA >= 2048 bits) for the cluster `cluster_uuid`.
    pub fn new(
        cluster_uuid: &str,
        signing_key_pem: &str,
        options: AuthOptions,
    ) -> Result<Self, KeyError> {
        let uuid = uuid::Uuid::parse_str(cluster_uuid)
            .map_err(|_| KeyError::BadClusterUuid(cluster_uuid.to_owned()))?;
        let cluster_uuid: Arc<str> = uuid.hyphenated().to_string().into();
        let key = SigningKey::load(&cluster_uuid, signing_key_pem, 0)?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&*cluster_uuid]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = options.leeway_secs;
        // Expiry is judged in `verify` against the caller's clock; the library would use the
        // wall clock (see module docs). `exp` stays required above.
        validation.validate_exp = false;

        Ok(Self {
            cluster_uuid,
            leeway_secs: options.leeway_secs,
            capacity: options.cache_capacity,
            validation,
            key: ArcSwap::from_pointee(key),
            cache: Mutex::new(TokenCache::default()),
        })
    }

    /// Swap in a new signing key at run time (e.g. `set key regen authz signing`): every token
    /// signed with the old key stops validating (its `kid` no longer matches; cache cleared).
    /// On error the old key stays in force. Reloading the same key changes nothing for clients.
    pub fn rotate(&self, signing_key_pem: &str) -> Result<(), KeyError> {
        // Parsing and the self-test cost milliseconds: do them before taking the cache lock.
        let mut next = SigningKey::load(&self.cluster_uuid, signing_key_pem, 0)?;
        let mut cache = self.lock_cache();
        // Swapping the key and clearing the cache under one lock, with a new generation, means a
        // verification that raced with us (old key loaded before the swap) cannot re-insert an
        // old-key token afterwards: `remember` compares generations under the same lock.
        next.generation = cache.generation.wrapping_add(1);
        cache.generation = next.generation;
        self.key.store(Arc::new(next));
        cache.map.clear();
        Ok(())
    }

    /// Signs an access token for `user`, valid `ttl_secs` from `now_unix`. `client_id` goes into
    /// `ccid` as given (UCM's form is `C` + 64 hex; not checked here).
    pub fn issue(
        &self,
        user: &str,
        client_id: &str,
        ttl_secs: u64,
        now_unix: u64,
    ) -> Result<IssuedToken, KeyError> {
        // A full Arc, not a Guard: signing holds it for about a millisecond.
        let key = self.key.load_full();
        let token_id = uuid::Uuid::new_v4().to_string();
        let expires_at = now_unix.saturating_add(ttl_secs);
        let claims = AccessClaimsOut {
            iss: &self.cluster_uuid,
            sub: user,
            iat: now_unix,
            exp: expires_at,
            tid: &token_id,
            ccid: client_id,
            scope: SCOPE,
            ctyp: CTYP_ACCESS,
            typ: TYP_USER,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(key.kid.to_string());
        let token = jsonwebtoken::encode(&header, &claims, &key.encoding)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        Ok(IssuedToken {
            token,
            token_id,
            expires_at,
        })
    }

    /// The current key id: `<cluster-uuid>:<key_hash>`.
    pub fn kid(&self) -> String {
        self.key.load().kid.to_string()
    }

    /// Like UCM's `show key authz signing`: a hash of the key, never the key (SHA-256 hex of the
    /// SPKI DER of the public key).
    pub fn key_hash(&self) -> String {
        self.key.load().key_hash.clone()
    }

    /// The cluster UUID, normalised (lowercase, hyphenated); the `iss` of every token.
    pub fn cluster_uuid(&self) -> &str {
        &self.cluster_uuid
    }

    /// Counters of the verified-token cache.
    pub fn cache_stats(&self) -> CacheStats {
        let cache = self.lock_cache();
        CacheStats {
            len: cache.map.len(),
            capacity: self.capacity,
            hits: cache.hits,
            misses: cache.misses,
            evictions: cache.evictions,
        }
    }

    /// Drops cached tokens expired at `now_unix`; returns how many. Optional: inserts do this
    /// when the cache is full, but a periodic sweep returns memory sooner. O(len) under the lock.
    pub fn purge_expired(&self, now_unix: u64) -> usize {
        let leeway = self.leeway_secs;
        let mut cache = self.lock_cache();
        let before = cache.map.len();
        cache
            .map
            .retain(|_, id| !is_expired(id.expires_at, now_unix, leeway));
        let dropped = before - cache.map.len();
        cache.evictions += dropped as u64;
        dropped
    }

    fn lock_cache(&self) -> MutexGuard<'_, TokenCache> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters
        // (every entry is independently valid), so a poisoned lock is still usable.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached answer for the token with digest `key`, if any. Expired entries are removed and
    /// refused.
    fn cached(&self, key: &TokenDigest, now_unix: u64) -> Option<Result<Identity, AuthError>> {
        let mut cache = self.lock_cache();
        let Some(identity) = cache.map.get(key) else {
            cache.misses += 1;
            return None;
        };
        if is_expired(identity.expires_at, now_unix, self.leeway_secs) {
            cache.map.remove(key);
            cache.hits += 1;
            cache.evictions += 1;
            return Some(Err(AuthError::Expired));
        }
        let identity = identity.clone();
        cache.hits += 1;
        Some(Ok(identity))
    }

    /// Caches a verified token, unless the key it was verified with has been rotated out since.
    fn remember(&self, key: TokenDigest, identity: &Identity, generation: u64, now_unix: u64) {
        let mut cache = self.lock_cache();
        if cache.generation != generation {
            return;
        }
        if cache.map.len() >= self.capacity && !cache.map.contains_key(&key) {
            self.make_room(&mut cache, now_unix);
        }
        cache.map.insert(key, identity.clone());
    }

    /// Drops expired entries, then arbitrary ones, down to 7/8 of capacity (at least one slot).
    fn make_room(&self, cache: &mut TokenCache, now_unix: u64) {
        let leeway = self.leeway_secs;
        let before = cache.map.len();
        cache
            .map
            .retain(|_, id| !is_expired(id.expires_at, now_unix, leeway));
        let low_water = self.capacity - (self.capacity / 8).max(1);
        let mut excess = cache.map.len().saturating_sub(low_water);
        if excess > 0 {
            // Iteration order follows the digests of tokens we signed (each with a random `tid`):
            // arbitrary, not attacker-chosen.
            cache.map.retain(|_, _| {
                if excess > 0 {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        cache.evictions += (before - cache.map.len()) as u64;
    }

    /// The full check of an uncached token with `key` (steps 3 and 4 of the module docs).
    fn verify(&self, token: &str, now_unix: u64, key: &SigningKey) -> Result<Identity, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::BadAlgorithm);
        }
        if header.crit.is_some() {
            return Err(AuthError::Malformed);
        }
        if header.kid.as_deref() != Some(&*key.kid) {
            return Err(AuthError::UnknownKey);
        }
        let claims = decode_verified(token, key, &self.validation)?;
        if claims.ctyp != CTYP_ACCESS {
            return Err(AuthError::WrongType);
        }
        if claims.sub.is_empty() || claims.tid.is_empty() {
            return Err(AuthError::Malformed);
        }
        if is_expired(claims.exp, now_unix, self.leeway_secs) {
            return Err(AuthError::Expired);
        }
        Ok(Identity {
            user: claims.sub.into(),
            expires_at: claims.exp,
            token_id: claims.tid.into(),
        })
    }
}

/// Checks the signature (RS256 only), then parses the claims and checks `iss` and the required
/// claims. Nothing of the payload is read before the signature has verified.
fn decode_verified(
    token: &str,
    key: &SigningKey,
    validation: &Validation,
) -> Result<AccessClaimsIn, AuthError> {
    jsonwebtoken::decode::<AccessClaimsIn>(token, &key.decoding, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::BadAlgorithm,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_)
            | ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::InvalidAudience
            | ErrorKind::InvalidSubject
            | ErrorKind::ImmatureSignature => AuthError::Malformed,
            // Key or provider failures: ours, not the client's.
            _ => AuthError::Internal,
        })
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

impl Authenticator for TokenAuthority {
    fn authenticate(&self, token: &str, now_unix: u64) -> Result<Identity, AuthError> {
        if !well_shaped(token) {
            return Err(AuthError::Malformed);
        }
        // Hashed once, outside the cache lock, and only when there is a cache to look in.
        let digest = (self.capacity > 0).then(|| TokenDigest::of(token));
        if let Some(digest) = &digest {
            if let Some(answer) = self.cached(digest, now_unix) {
                return answer;
            }
        }
        let key = self.key.load_full();
        let identity = self.verify(token, now_unix, &key)?;
        if let Some(digest) = digest {
            self.remember(digest, &identity, key.generation, now_unix);
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    const CLUSTER: &str = "8d0d5324-f4f0-4b0b-811e-4a59fdb6b722";
    const OTHER_CLUSTER: &str = "0b8a5c8e-3f0e-4c55-9b8e-3a8f6f5c2d11";
    const CCID: &str = "C3b0affefe1439041683e9c2c37d36f438ef0ef27c0938adc6226e0c03d169f2a";
    const NOW: u64 = 1_700_000_000;

    /// RSA generation is slow (tens of ms): two keys shared by all tests.
    fn pems() -> &'static [String; 2] {
        static PEMS: OnceLock<[String; 2]> = OnceLock::new();
        PEMS.get_or_init(|| {
            let gen_pem = || {
                KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
                    .expect("aws-lc-rs generates RSA keys")
                    .serialize_pem()
            };
            [gen_pem(), gen_pem()]
        })
    }

    fn opts(leeway_secs: u64, cache_capacity: usize) -> AuthOptions {
        AuthOptions {
            leeway_secs,
            cache_capacity,
        }
    }

    fn authority() -> TokenAuthority {
        TokenAuthority::new(CLUSTER, &pems()[0], opts(30, 1024)).expect("valid key")
    }

    fn b64url(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    /// Signs arbitrary claims with an arbitrary header, to forge tokens.
    fn sign(header: &Header, claims: &serde_json::Value, pem: &str) -> String {
        let key = EncodingKey::from_rsa_pem(pem.as_bytes()).expect("rsa pem");
        jsonwebtoken::encode(header, claims, &key).expect("sign")
    }

    fn rs256_header(kid: &str) -> Header {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.to_owned());
        h
    }

    fn claims(iss: &str, ctyp: &str, exp: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": iss, "sub": "alice", "iat": NOW, "exp": exp,
            "tid": "b991221f-f42e-4e52-8871-c876e635dd5b", "ccid": CCID,
            "scope": SCOPE, "ctyp": ctyp, "typ": "user",
        })
    }

    #[test]
    fn issue_then_authenticate() {
        let a = authority();
        let t = a.issue("alice", CCID, 3600, NOW).unwrap();
        assert_eq!(t.expires_at, NOW + 3600);
        let id = a.authenticate(&t.token, NOW + 10).unwrap();
        assert_eq!(&*id.user, "alice");
        assert_eq!(id.expires_at, NOW + 3600);
        assert_eq!(&*id.token_id, t.token_id);
        let tid = uuid::Uuid::parse_str(&t.token_id).unwrap();
        assert_eq!(tid.get_version_num(), 4);
    }

    #[test]
    fn issued_token_shape() {
        let a = authority();
        let t = a.issue("alice", CCID, 3600, NOW).unwrap();
        let data = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&t.token).unwrap();
        assert_eq!(data.header.alg, Algorithm::RS256);
        assert_eq!(data.header.typ.as_deref(), Some("JWT"));
        assert_eq!(data.header.kid.as_deref(), Some(&*a.kid()));
        let expected = serde_json::json!({
            "iss": CLUSTER, "sub": "alice", "iat": NOW, "exp": NOW + 3600,
            "tid": t.token_id, "ccid": CCID, "scope": "UnifiedCommunications:readwrite",
            "ctyp": "access", "typ": "user",
        });
        assert_eq!(data.claims, expected);
    }

    #[test]
    fn kid_and_key_hash_are_stable_and_well_formed() {
        let a = authority();
        let b = TokenAuthority::new(CLUSTER, &pems()[0], opts(0, 0)).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.key_hash(), b.key_hash());
        let hash = a.key_hash();
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(a.kid(), format!("{CLUSTER}:{hash}"));
        // The hash is of the public SPKI DER.
        let spki = KeyPair::from_pem(&pems()[0])
            .unwrap()
            .subject_public_key_info();
        assert_eq!(hash, hex::encode(Sha256::digest(&spki)));
        let (_, info) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
        assert_eq!(info.raw, &spki[..]);
        let other = TokenAuthority::new(CLUSTER, &pems()[1], opts(0, 0)).unwrap();
        assert_ne!(other.key_hash(), hash);
        assert!(!format!("{a:?}").contains("PRIVATE"));
    }

    #[test]
    fn cluster_uuid_is_normalised() {
        let a = TokenAuthority::new(&CLUSTER.to_uppercase(), &pems()[0], opts(0, 0)).unwrap();
        assert_eq!(a.cluster_uuid(), CLUSTER);
        assert!(a.kid().starts_with(CLUSTER));
    }

    #[test]
    fn key_errors() {
        assert!(matches!(
            TokenAuthority::new("not-a-uuid", &pems()[0], opts(0, 0)),
            Err(KeyError::BadClusterUuid(_))
        ));
        assert!(matches!(
            TokenAuthority::new(CLUSTER, "garbage", opts(0, 0)),
            Err(KeyError::BadPem(_))
        ));
        let ec = KeyPair::generate().unwrap().serialize_pem();
        assert!(matches!(
            TokenAuthority::new(CLUSTER, &ec, opts(0, 0)),
            Err(KeyError::NotRsa)
        ));
    }

    #[test]
    fn token_of_another_key_is_unknown_key() {
        let a = authority();
        let b = TokenAuthority::new(CLUSTER, &pems()[1], opts(30, 16)).unwrap();
        let t = b.issue("alice", CCID, 3600, NOW).unwrap();
        assert_eq!(a.authenticate(&t.token, NOW), Err(AuthError::UnknownKey));
        // Same key, other cluster: the kid differs too.
        let c = TokenAuthority::new(OTHER_CLUSTER, &pems()[0], opts(30, 16)).unwrap();
        let t = c.issue("alice", CCID, 3600, NOW).unwrap();
        assert_eq!(a.authenticate(&t.token, NOW), Err(AuthError::UnknownKey));
        // No kid at all.
        let t = sign(
            &Header::new(Algorithm::RS256),
            &claims(CLUSTER, "access", NOW + 60),
            &pems()[0],
        );
        assert_eq!(a.authenticate(&t, NOW), Err(AuthError::UnknownKey));
    }

    #[test]
    fn forged_kid_is_bad_signature() {
        let a = authority();
        let t = sign(
            &rs256_header(&a.kid()),
            &claims(CLUSTER, "access", NOW + 60),
            &pems()[1],
        );
        assert_eq!(a.authenticate(&t, NOW), Err(AuthError::BadSignature));
        // Swapping in another token's payload breaks the signature as well.
        let good = a.issue("alice", CCID, 3600, NOW).unwrap().token;
        let evil = a.issue("mallory", CCID, 3600, NOW).unwrap().token;
        let g: Vec<&str> = good.split('.').collect();
        let e: Vec<&str> = evil.split('.').collect();
        let spliced = format!("{}.{}.{}", g[0], e[1], g[2]);
        assert_eq!(a.authenticate(&spliced, NOW), Err(AuthError::BadSignature));
    }

    #[test]
    fn expiry_with_leeway_on_miss() {
        let a = authority(); // leeway 30
        let t = a.issue("alice", CCID, 60, NOW).unwrap();
        assert_eq!(a.authenticate(&t.token, NOW + 91), Err(AuthError::Expired));
        assert_eq!(a.cache_stats().len, 0, "expired tokens are not cached");
        // Fresh authorities so that each probe is a miss.
        let probe = |now| {
            authority()
                .authenticate(&t.token, now)
                .map(|id| id.user.to_string())
        };
        assert_eq!(probe(NOW + 60).as_deref(), Ok("alice"));
        assert_eq!(probe(NOW + 90).as_deref(), Ok("alice"));
        let strict = TokenAuthority::new(CLUSTER, &pems()[0], opts(0, 16)).unwrap();
        assert_eq!(
            strict.authenticate(&t.token, NOW + 61),
            Err(AuthError::Expired)
        );
    }

    #[test]
    fn cache_hit_and_expired_hit() {
        let a = authority(); // leeway 30
        let t = a.issue("alice", CCID, 60, NOW).unwrap();
        let first = a.authenticate(&t.token, NOW).unwrap();
        let second = a.authenticate(&t.token, NOW + 50).unwrap();
        assert_eq!(first, second);
        let s = a.cache_stats();
        assert_eq!((s.len, s.hits, s.misses), (1, 1, 1));
        assert_eq!(a.authenticate(&t.token, NOW + 90), Ok(first));
        assert_eq!(a.authenticate(&t.token, NOW + 91), Err(AuthError::Expired));
        let s = a.cache_stats();
        assert_eq!(
            (s.len, s.hits),
            (0, 3),
            "expired entry answered from cache, then dropped"
        );
    }

    #[test]
    fn cache_is_keyed_by_the_whole_token() {
        let a = authority();
        // Two tokens for the same user differ (tid, and so signature): two entries.
        let t1 = a.issue("alice", CCID, 3600, NOW).unwrap().token;
        let t2 = a.issue("alice", CCID, 3600, NOW).unwrap().token;
        assert_ne!(t1, t2);
        let id1 = a.authenticate(&t1, NOW).unwrap();
        let id2 = a.authenticate(&t2, NOW).unwrap();
        assert_eq!((&*id1.user, &*id2.user), ("alice", "alice"));
        assert_ne!(id1.token_id, id2.token_id);
        assert_eq!(a.cache_stats().len, 2);
        assert_eq!(a.authenticate(&t1, NOW), Ok(id1));
        assert_eq!(a.authenticate(&t2, NOW), Ok(id2));
        let s = a.cache_stats();
        assert_eq!((s.len, s.hits, s.misses), (2, 2, 2));
        // One byte changed, in the signature or in the payload: a miss, verified and refused.
        // (Not the signature's last character, whose low bits are base64 padding.)
        let (sig_at, payload_at) = (t1.len() - 20, t1.find('.').unwrap() + 10);
        for at in [sig_at, payload_at] {
            let mut bytes = t1.clone().into_bytes();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let damaged = String::from_utf8(bytes).unwrap();
            assert_eq!(a.authenticate(&damaged, NOW), Err(AuthError::BadSignature));
        }
        let s = a.cache_stats();
        assert_eq!((s.len, s.hits, s.misses), (2, 2, 4));
    }

    #[test]
    fn digest_key_hashes_to_its_first_eight_bytes() {
        let d = TokenDigest::of("a.b.c");
        assert_eq!(d.0[..], Sha256::digest(b"a.b.c")[..]);
        let first = u64::from_ne_bytes(d.0[..8].try_into().unwrap());
        assert_eq!(DigestHasher::default().hash_one(d), first);
    }

    #[test]
    fn wrong_issuer() {
        let a = authority();
        let t = sign(
            &rs256_header(&a.kid()),
            &claims(OTHER_CLUSTER, "access", NOW + 60),
            &pems()[0],
        );
        assert_eq!(a.authenticate(&t, NOW), Err(AuthError::WrongIssuer));
    }

    #[test]
    fn refresh_token_is_wrong_type() {
        let a = authority();
        let t = sign(
            &rs256_header(&a.kid()),
            &claims(CLUSTER, "refresh", NOW + 60),
            &pems()[0],
        );
        assert_eq!(a.authenticate(&t, NOW), Err(AuthError::WrongType));
        assert_eq!(a.cache_stats().len, 0);
    }

    #[test]
    fn signed_token_missing_claims_is_malformed() {
        let a = authority();
        let mut c = claims(CLUSTER, "access", NOW + 60);
        c.as_object_mut().unwrap().remove("sub");
        let t = sign(&rs256_header(&a.kid()), &c, &pems()[0]);
        assert_eq!(a.authenticate(&t, NOW), Err(AuthError::Malformed));
        let mut c = claims(CLUSTER, "access", NOW + 60);
        c.as_object_mut().unwrap().remove("exp");
        let t = sign(&rs256_header(&a.kid()), &c, &pems()[0]);
        assert_eq!(a.authenticate(&t, NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn crit_header_is_refused() {
        let a = authority();
        let mut h = rs256_header(&a.kid());
        h.crit = Some(vec!["exp".into()]);
        let t = sign(&h, &claims(CLUSTER, "access", NOW + 60), &pems()[0]);
        assert_eq!(a.authenticate(&t, NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn other_algorithms_are_refused() {
        let a = authority();
        let body = b64url(claims(CLUSTER, "access", NOW + 60).to_string().as_bytes());
        // alg "none": jsonwebtoken does not know it, so the header does not parse.
        let none_header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": a.kid()});
        let none = format!("{}.{body}.", b64url(none_header.to_string().as_bytes()));
        assert_eq!(a.authenticate(&none, NOW), Err(AuthError::Malformed));
        let none_signed = format!("{none}AAAA");
        assert_eq!(a.authenticate(&none_signed, NOW), Err(AuthError::Malformed));
        // HS256 keyed with the public key (the classic key-confusion attack).
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(a.kid());
        let spki = KeyPair::from_pem(&pems()[0])
            .unwrap()
            .subject_public_key_info();
        let hs = jsonwebtoken::encode(
            &h,
            &claims(CLUSTER, "access", NOW + 60),
            &EncodingKey::from_secret(&spki),
        )
        .unwrap();
        assert_eq!(a.authenticate(&hs, NOW), Err(AuthError::BadAlgorithm));
        // Another RSA algorithm with the right key and kid.
        let mut h = rs256_header(&a.kid());
        h.alg = Algorithm::RS384;
        let rs384 = sign(&h, &claims(CLUSTER, "access", NOW + 60), &pems()[0]);
        assert_eq!(a.authenticate(&rs384, NOW), Err(AuthError::BadAlgorithm));
    }

    #[test]
    fn garbage_is_malformed_without_panic() {
        let a = authority();
        let long = "a.".repeat(5000);
        let huge = format!("{}.b.c", "a".repeat(MAX_TOKEN_LEN));
        let inputs = [
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            "a.b.c.d",
            "not a token",
            "Bearer x.y.z",
            "é.ü.ß",
            "eyJhbGciOiJSUzI1NiJ9..",
            "eyJ.eyJ.sig",
            "====.====.====",
            "\0.\0.\0",
            long.as_str(),
            huge.as_str(),
        ];
        for input in inputs {
            assert_eq!(
                a.authenticate(input, NOW),
                Err(AuthError::Malformed),
                "{input:?}"
            );
        }
        // A real token, damaged: always refused, never a panic.
        let t = a.issue("alice", CCID, 3600, NOW).unwrap().token;
        for cut in [1, 10, 100, t.len() / 2, t.len() - 1] {
            assert!(a.authenticate(&t[..cut], NOW).is_err());
        }
        assert!(a.authenticate(&format!("{t}."), NOW).is_err());
        assert_eq!(
            a.authenticate(&format!("{t}AAAA"), NOW),
            Err(AuthError::BadSignature)
        );
        assert_eq!(a.cache_stats().len, 0);
    }

    #[test]
    fn rotate_invalidates_old_tokens() {
        let a = authority();
        let old = a.issue("alice", CCID, 3600, NOW).unwrap();
        a.authenticate(&old.token, NOW).unwrap(); // now cached
        let (old_kid, old_hash) = (a.kid(), a.key_hash());
        a.rotate(&pems()[1]).unwrap();
        assert_ne!(a.kid(), old_kid);
        assert_ne!(a.key_hash(), old_hash);
        assert_eq!(a.cache_stats().len, 0);
        assert_eq!(a.authenticate(&old.token, NOW), Err(AuthError::UnknownKey));
        let new = a.issue("alice", CCID, 3600, NOW).unwrap();
        assert_eq!(&*a.authenticate(&new.token, NOW).unwrap().user, "alice");
        // A failed rotation keeps the current key.
        assert!(a.rotate("garbage").is_err());
        assert!(a.authenticate(&new.token, NOW).is_ok());
        // Rotating back restores the old key and with it its tokens.
        a.rotate(&pems()[0]).unwrap();
        assert_eq!(a.kid(), old_kid);
        assert!(a.authenticate(&old.token, NOW).is_ok());
        assert_eq!(a.authenticate(&new.token, NOW), Err(AuthError::UnknownKey));
    }

    #[test]
    fn stale_generation_is_not_cached() {
        let a = authority();
        let t = a.issue("alice", CCID, 3600, NOW).unwrap();
        let id = a.authenticate(&t.token, NOW).unwrap();
        a.rotate(&pems()[0]).unwrap();
        // As if a verification with the pre-rotation key finished after the rotation.
        a.remember(TokenDigest::of(&t.token), &id, 0, NOW);
        assert_eq!(a.cache_stats().len, 0);
    }

    #[test]
    fn cache_stays_within_capacity() {
        let a = TokenAuthority::new(CLUSTER, &pems()[0], opts(30, 16)).unwrap();
        let tokens: Vec<_> = (0..100)
            .map(|i| a.issue(&format!("user{i}"), CCID, 3600, NOW).unwrap())
            .collect();
        for (i, t) in tokens.iter().enumerate() {
            assert_eq!(
                *a.authenticate(&t.token, NOW).unwrap().user,
                *format!("user{i}")
            );
            assert!(a.cache_stats().len <= 16);
        }
        let s = a.cache_stats();
        assert!(s.len > 0 && s.evictions >= 84, "{s:?}");
        // Every token still authenticates, cached or not.
        for t in &tokens {
            assert!(a.authenticate(&t.token, NOW).is_ok());
        }
        assert!(a.cache_stats().len <= 16);
    }

    #[test]
    fn full_cache_drops_expired_first() {
        let a = TokenAuthority::new(CLUSTER, &pems()[0], opts(0, 4)).unwrap();
        let short: Vec<_> = (0..4)
            .map(|_| a.issue("s", CCID, 10, NOW).unwrap())
            .collect();
        for t in &short {
            a.authenticate(&t.token, NOW).unwrap();
        }
        let long = a.issue("l", CCID, 3600, NOW).unwrap();
        a.authenticate(&long.token, NOW + 100).unwrap();
        assert_eq!(a.cache_stats().len, 1);
        assert_eq!(a.purge_expired(NOW + 10_000), 1);
    }

    #[test]
    fn zero_capacity_disables_cache() {
        let a = TokenAuthority::new(CLUSTER, &pems()[0], opts(30, 0)).unwrap();
        let t = a.issue("alice", CCID, 3600, NOW).unwrap();
        assert!(a.authenticate(&t.token, NOW).is_ok());
        assert!(a.authenticate(&t.token, NOW).is_ok());
        assert_eq!(
            a.cache_stats(),
            CacheStats {
                capacity: 0,
                ..CacheStats::default()
            }
        );
    }

    #[test]
    fn shared_across_threads() {
        let a = Arc::new(authority());
        let t = a.issue("alice", CCID, 3600, NOW).unwrap().token;
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (a, t) = (Arc::clone(&a), t.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        assert!(a.authenticate(&t, NOW).is_ok());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let dyn_auth: Arc<dyn Authenticator> = a;
        assert!(dyn_auth.authenticate(&t, NOW).is_ok());
    }
}
