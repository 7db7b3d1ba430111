//! The verified-access-token cache and the revocation table, which share one lock so that a
//! revocation and a concurrent verification cannot pass each other.
//!
//! See the [module docs of `auth`](super) for the policy; the why of each lock is at the lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};

use super::{AuthError, Identity};

/// Counters of the verified-token cache and of the crypto work it saves, for metrics, the admin
/// API and tests.
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
    /// Entries dropped to make room or because they expired (rotation and revocation not
    /// counted).
    pub evictions: u64,
    /// Tokens (access or refresh) that went through the full check: header, then RSA. A cache
    /// hit does not count here.
    pub verifications: u64,
    /// JWE tag checks and decryptions (after a good signature). A cache hit does not count here.
    pub decryptions: u64,
}

/// SHA-256 of a token's signature segment (the text after its last `.`): the cache key.
///
/// Keying by a digest rather than the text saves ~1.5 KB per entry (UCM's nested tokens are
/// about 1.6 KB) and a token-long comparison per lookup. Hashing only the signature segment (342
/// characters for RSA-2048) rather than the whole token costs ~0.3 µs instead of ~1 µs on the
/// refresh path, and is as strong for what the cache is for:
///
/// - A verified token's RSA PKCS#1 v1.5 signature is a deterministic function of its header and
///   payload under our key, so two verified tokens never share one, and a digest collision is a
///   SHA-256 collision.
/// - A presented token that reuses a verified token's signature segment with another header or
///   payload hits that token's entry and gets *that token's* identity; its own header and
///   payload are never read. Whoever can present the segment has seen the original token, which
///   they could present as it is, so this grants nothing the original does not. (On a miss such
///   a token fails its signature check.)
/// - Revocation and rotation act on entries, not on token texts, so they reach such a hit too.
///
/// `sha2` rather than aws-lc's digest: both use the CPU's SHA instructions, and for short inputs
/// `sha2` measured ~10 % faster, aws-lc paying for its FFI and context setup.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub(super) fn of(token: &str) -> Self {
        let signature = token.rsplit('.').next().unwrap_or(token);
        Self(Sha256::digest(signature.as_bytes()).into())
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
/// by us with a random `tid` and a random IV, so the inserted keys are SHA-256 outputs of inputs
/// no client chose, i.e. uniformly spread. Lookups do take attacker-chosen tokens, and grinding
/// tokens until a digest lands in a chosen bucket is cheap (the index is 17 bits for 100 000
/// entries), but how long a lookup probes depends on how full the table is where it lands, which
/// the inserted keys decide, not the key looked up; a false match on the 7-bit tag costs one
/// 32-byte comparison.
#[derive(Clone, Copy, Default)]
pub(super) struct DigestHasher(u64);

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

/// The answer of [`TokenCache::lookup`].
pub(super) enum Lookup {
    /// Answered from the cache: a verified identity, or `Expired`.
    Hit(Result<Identity, AuthError>),
    /// Not cached: verify, then hand `epoch` back to [`TokenCache::admit`].
    Miss {
        /// The epoch before the keys were loaded for verification.
        epoch: u64,
    },
}

/// The verified-token cache plus the revocation table.
pub(super) struct TokenCache {
    capacity: usize,
    leeway_secs: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<TokenDigest, Identity, DigestHasher>,
    /// Bumped by every key rotation and revocation. A verification that started in an older
    /// epoch may have used a key or a revocation table that is gone: its result is not cached.
    epoch: u64,
    /// user → revocation cut-offs. Grows by one entry per revoked user (and per revoked client
    /// within it); never shrinks, since we do not know the longest lifetime of tokens already
    /// issued. Bounded by users × clients, a few hundred bytes each.
    revoked: HashMap<Box<str>, Revocation>,
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// Cut-offs for one user: tokens issued (`iat`) strictly before them are refused.
#[derive(Default)]
struct Revocation {
    all_clients_before: u64,
    by_client: HashMap<Box<str>, u64>,
}

impl Revocation {
    fn covers(&self, identity: &Identity) -> bool {
        let client = identity
            .client_id
            .as_deref()
            .and_then(|c| self.by_client.get(c).copied())
            .unwrap_or(0);
        identity.issued_at < self.all_clients_before.max(client)
    }
}

impl Inner {
    fn is_revoked(&self, identity: &Identity) -> bool {
        self.revoked
            .get(&*identity.user)
            .is_some_and(|r| r.covers(identity))
    }
}

pub(super) fn is_expired(expires_at: u64, now_unix: u64, leeway_secs: u64) -> bool {
    now_unix > expires_at.saturating_add(leeway_secs)
}

impl TokenCache {
    pub(super) fn new(capacity: usize, leeway_secs: u64) -> Self {
        Self {
            capacity,
            leeway_secs,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether tokens are cached at all (capacity > 0); if not, callers skip hashing them.
    pub(super) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The cached answer for the token with this digest. Expired entries are removed and refused.
    /// Cached entries need no revocation check: each was checked against the table when
    /// admitted, and [`revoke`](Self::revoke) purges matching entries, both under the lock.
    pub(super) fn lookup(&self, digest: Option<&TokenDigest>, now_unix: u64) -> Lookup {
        let Some(digest) = digest else {
            // No cache: nothing will be inserted, so the epoch is never compared.
            return Lookup::Miss { epoch: 0 };
        };
        let mut inner = self.lock();
        let Some(identity) = inner.map.get(digest) else {
            inner.misses += 1;
            return Lookup::Miss { epoch: inner.epoch };
        };
        if is_expired(identity.expires_at, now_unix, self.leeway_secs) {
            inner.map.remove(digest);
            inner.hits += 1;
            inner.evictions += 1;
            return Lookup::Hit(Err(AuthError::Expired));
        }
        let identity = identity.clone();
        inner.hits += 1;
        Lookup::Hit(Ok(identity))
    }

    /// The last step of a verification: refuses a revoked identity, and otherwise caches it
    /// (when `digest` is given), unless a rotation or revocation happened since `epoch`.
    ///
    /// The revocation check is here, under the same lock as the insert, so that a verification
    /// racing with [`revoke`](Self::revoke) either sees the new cut-off here or is purged by it.
    pub(super) fn admit(
        &self,
        digest: Option<TokenDigest>,
        identity: &Identity,
        epoch: u64,
        now_unix: u64,
    ) -> Result<(), AuthError> {
        let mut inner = self.lock();
        if inner.is_revoked(identity) {
            return Err(AuthError::Revoked);
        }
        let Some(digest) = digest else {
            return Ok(());
        };
        if inner.epoch != epoch {
            return Ok(());
        }
        if inner.map.len() >= self.capacity && !inner.map.contains_key(&digest) {
            self.make_room(&mut inner, now_unix);
        }
        inner.map.insert(digest, identity.clone());
        Ok(())
    }

    /// Runs `swap` (a key change) under the lock, then empties the cache and starts a new epoch.
    ///
    /// Swapping the key and clearing the cache under one lock, with a new epoch, means a
    /// verification that raced with us (old key loaded before the swap) cannot re-insert an
    /// old-key token afterwards: [`admit`](Self::admit) compares epochs under the same lock. A
    /// verification that read its epoch after this returns loads its keys after the swap.
    pub(super) fn invalidate(&self, swap: impl FnOnce()) {
        let mut inner = self.lock();
        swap();
        inner.epoch = inner.epoch.wrapping_add(1);
        inner.map.clear();
    }

    /// Records that tokens of `user` (only those of `client_id`, if given) issued before
    /// `before_unix` are refused, purges such cached entries and starts a new epoch.
    pub(super) fn revoke(&self, user: &str, client_id: Option<&str>, before_unix: u64) {
        let mut inner = self.lock();
        let entry = inner.revoked.entry(user.into()).or_default();
        let cut_off = match client_id {
            None => &mut entry.all_clients_before,
            Some(client) => entry.by_client.entry(client.into()).or_default(),
        };
        *cut_off = (*cut_off).max(before_unix);
        // Strictly, the table check in `admit` already closes the race with an in-flight
        // verification; the new epoch also keeps "nothing verified before a revocation is cached
        // after it" true without reasoning about the table.
        inner.epoch = inner.epoch.wrapping_add(1);
        let Inner { map, revoked, .. } = &mut *inner;
        let Some(revocation) = revoked.get(user) else {
            return;
        };
        map.retain(|_, id| !(&*id.user == user && revocation.covers(id)));
    }

    /// The cache's own counters (the crypto counters are the caller's).
    pub(super) fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            len: inner.map.len(),
            capacity: self.capacity,
            hits: inner.hits,
            misses: inner.misses,
            evictions: inner.evictions,
            ..CacheStats::default()
        }
    }

    /// Drops entries expired at `now_unix`; returns how many. O(len) under the lock.
    pub(super) fn purge_expired(&self, now_unix: u64) -> usize {
        let leeway = self.leeway_secs;
        let mut inner = self.lock();
        let before = inner.map.len();
        inner
            .map
            .retain(|_, id| !is_expired(id.expires_at, now_unix, leeway));
        let dropped = before - inner.map.len();
        inner.evictions += dropped as u64;
        dropped
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Held only for a lookup, an insert, or one O(len) pass; never across RSA, AES or an
        // `.await`. A panic while holding it cannot leave the map half-updated in a way that
        // matters (every entry is independently valid), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops expired entries, then arbitrary ones, down to 7/8 of capacity (at least one slot).
    fn make_room(&self, inner: &mut Inner, now_unix: u64) {
        let leeway = self.leeway_secs;
        let before = inner.map.len();
        inner
            .map
            .retain(|_, id| !is_expired(id.expires_at, now_unix, leeway));
        let low_water = self.capacity - (self.capacity / 8).max(1);
        let mut excess = inner.map.len().saturating_sub(low_water);
        if excess > 0 {
            // Iteration order follows the digests of tokens we signed (each with a random `tid`):
            // arbitrary, not attacker-chosen.
            inner.map.retain(|_, _| {
                if excess > 0 {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        inner.evictions += (before - inner.map.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_key_hashes_to_its_first_eight_bytes() {
        let d = TokenDigest::of("a.b.c");
        assert_eq!(
            d.0[..],
            Sha256::digest(b"c")[..],
            "the signature segment's digest"
        );
        let first = u64::from_ne_bytes(d.0[..8].try_into().unwrap());
        assert_eq!(DigestHasher::default().hash_one(d), first);
    }
}
