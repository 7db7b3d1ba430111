//! Tests of [`TokenAuthority`]: format bytes, every refusal with its reason, cache, rotation and
//! revocation. Forged tokens are built from the same pure pieces (`jose`) with chosen headers
//! and claims, and re-signed with the right RSA key where a test must reach a later check.

use std::sync::{Arc, OnceLock};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{KeyPair, PublicKeyData};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::cache::TokenDigest;
use super::jose::{self, b64, unb64};
use super::keys::EncryptionKey;
use super::*;

const CLUSTER: &str = "8d0d5324-f4f0-4b0b-811e-4a59fdb6b722";
const OTHER_CLUSTER: &str = "0b8a5c8e-3f0e-4c55-9b8e-3a8f6f5c2d11";
const CCID: &str = "C3b0affefe1439041683e9c2c37d36f438ef0ef27c0938adc6226e0c03d169f2a";
const CCID2: &str = "C0000000000000000000000000000000000000000000000000000000000000002";
const NOW: u64 = 1_700_000_000;
const KEY_A: [u8; 32] = [0xa5; 32];
const KEY_B: [u8; 32] = [0x5b; 32];

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
    TokenAuthority::new(CLUSTER, &pems()[0], &KEY_A, opts(30, 1024)).expect("valid key")
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

fn text(b64_part: &str) -> String {
    String::from_utf8(unb64(b64_part).unwrap()).unwrap()
}

fn ucm_header(kid: &str) -> String {
    format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#)
}

/// Signs `header` and `payload` (JSON texts, as given) RS256 with `pem`.
fn forge(header: &str, payload: &str, pem: &str) -> String {
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    jose::sign_compact(header.as_bytes(), payload.as_bytes(), &key).unwrap()
}

/// The JWE inside an access token.
fn jwe_of(token: &str) -> String {
    let payload: Value = serde_json::from_str(&text(&parts(token)[1])).unwrap();
    payload["private"].as_str().unwrap().to_owned()
}

/// An access token around `jwe`, validly signed for `a`.
fn wrap(a: &TokenAuthority, jwe: &str) -> String {
    forge(
        &ucm_header(&a.kid()),
        &json!({ "private": jwe }).to_string(),
        &pems()[0],
    )
}

/// A JWE of arbitrary inner claims under `key`.
fn seal(claims: &Value, key: &[u8; 32]) -> String {
    let key = EncryptionKey::load(CLUSTER, key).unwrap();
    jose::encrypt_jwe(claims.to_string().as_bytes(), &key).unwrap()
}

fn inner(iss: &str, ctyp: &str, iat: u64, exp: u64) -> Value {
    json!({
        "iss": iss, "sub": "alice", "iat": iat, "nbf": iat, "exp": exp,
        "tid": "b991221f-f42e-4e52-8871-c876e635dd5b", "ccid": CCID,
        "scope": SCOPE, "ctyp": ctyp, "typ": "user",
    })
}

/// Re-signed access token whose JWE part `index` (0 header .. 4 tag) was changed by `edit`.
fn tamper_jwe(
    a: &TokenAuthority,
    token: &str,
    index: usize,
    edit: impl FnOnce(&mut Vec<u8>),
) -> String {
    let mut jwe = parts(&jwe_of(token));
    let mut bytes = unb64(&jwe[index]).unwrap();
    edit(&mut bytes);
    jwe[index] = b64(&bytes);
    wrap(a, &jwe.join("."))
}

#[allow(clippy::ptr_arg)] // passed where a `fn(&mut Vec<u8>)` is expected
fn flip_first(bytes: &mut Vec<u8>) {
    bytes[0] ^= 0x01;
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
    assert_eq!(id.client_id.as_deref(), Some(CCID));
    assert_eq!(id.issued_at, NOW);
    let tid = uuid::Uuid::parse_str(&t.token_id).unwrap();
    assert_eq!(tid.get_version_num(), 4);
    assert!(t.token.len() < MAX_TOKEN_LEN / 2, "{}", t.token.len());
}

#[test]
fn access_token_bytes_are_ucms() {
    let a = authority();
    let t = a.issue("alice", CCID, 3600, NOW).unwrap();
    let p = parts(&t.token);
    assert_eq!(p.len(), 3);
    assert_eq!(text(&p[0]), ucm_header(&a.kid()));
    let payload: Value = serde_json::from_str(&text(&p[1])).unwrap();
    let keys: Vec<&String> = payload.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["private"]);

    let jwe = parts(&jwe_of(&t.token));
    assert_eq!(jwe.len(), 5);
    let enc_kid = format!("{CLUSTER}:{}", a.encryption_key_hash());
    assert_eq!(
        text(&jwe[0]),
        format!(r#"{{"alg":"dir","cty":"JWT","enc":"A128CBC-HS256","kid":"{enc_kid}"}}"#)
    );
    assert_eq!(jwe[1], "", "dir: empty encrypted key");
    assert_eq!(unb64(&jwe[2]).unwrap().len(), 16, "IV");
    assert_eq!(unb64(&jwe[3]).unwrap().len() % 16, 0, "CBC blocks");
    assert_eq!(unb64(&jwe[4]).unwrap().len(), 16, "tag");
    // A fresh IV per token.
    let again = parts(&jwe_of(&a.issue("alice", CCID, 3600, NOW).unwrap().token));
    assert_ne!(jwe[2], again[2]);
}

#[test]
fn inner_claims_are_the_documented_ones() {
    let a = authority();
    let t = a.issue("alice", CCID, 3600, NOW).unwrap();
    let key = EncryptionKey::load(CLUSTER, &KEY_A).unwrap();
    let plain = jose::decrypt_jwe(&jwe_of(&t.token), &key).unwrap();
    let expected = format!(
        concat!(
            r#"{{"iss":"{c}","sub":"alice","iat":{n},"nbf":{n},"exp":{e},"tid":"{t}","#,
            r#""ccid":"{cc}","scope":"UnifiedCommunications:readwrite","ctyp":"access","#,
            r#""typ":"user"}}"#
        ),
        c = CLUSTER,
        n = NOW,
        e = NOW + 3600,
        t = t.token_id,
        cc = CCID
    );
    assert_eq!(String::from_utf8(plain).unwrap(), expected);
}

#[test]
fn refresh_token_bytes_are_ucms() {
    let a = authority();
    let r = a.issue_refresh(CCID, 86_400, NOW).unwrap();
    assert_eq!(r.expires_at, NOW + 86_400);
    let p = parts(&r.token);
    assert_eq!(text(&p[0]), ucm_header(&a.kid()));
    let expected = format!(
        r#"{{"exp":{},"iss":"{CLUSTER}","typ":"user","tid":"{}","ctyp":"refresh","ccid":"{CCID}"}}"#,
        NOW + 86_400,
        r.token_id
    );
    assert_eq!(text(&p[1]), expected);
    assert_eq!(
        uuid::Uuid::parse_str(&r.token_id)
            .unwrap()
            .get_version_num(),
        4
    );
}

#[test]
fn refresh_round_trip_and_refusals() {
    let a = authority(); // leeway 30
    let r = a.issue_refresh(CCID, 600, NOW).unwrap();
    let claims = a.verify_refresh(&r.token, NOW + 630).unwrap();
    assert_eq!(
        claims,
        RefreshClaims {
            token_id: r.token_id.clone(),
            client_id: CCID.to_owned(),
            expires_at: NOW + 600,
        }
    );
    assert_eq!(
        a.verify_refresh(&r.token, NOW + 631),
        Err(AuthError::Expired)
    );
    // An access token is not a refresh token, and the reverse.
    let access = a.issue("alice", CCID, 600, NOW).unwrap().token;
    assert_eq!(a.verify_refresh(&access, NOW), Err(AuthError::WrongType));
    assert_eq!(a.authenticate(&r.token, NOW), Err(AuthError::WrongType));
    // Another cluster's refresh token signed with our key: the kid differs...
    let other = TokenAuthority::new(OTHER_CLUSTER, &pems()[0], &KEY_A, opts(0, 0)).unwrap();
    let foreign = other.issue_refresh(CCID, 600, NOW).unwrap().token;
    assert_eq!(a.verify_refresh(&foreign, NOW), Err(AuthError::UnknownKey));
    // ...and with our kid but their iss, it is the issuer that is wrong.
    let forged = forge(
        &ucm_header(&a.kid()),
        &text(&parts(&foreign)[1]),
        &pems()[0],
    );
    assert_eq!(a.verify_refresh(&forged, NOW), Err(AuthError::WrongIssuer));
    // Other checks shared with access tokens.
    assert_eq!(a.verify_refresh("a.b", NOW), Err(AuthError::Malformed));
    let mut bad = r.token.clone().into_bytes();
    let at = bad.len() - 20;
    bad[at] = if bad[at] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    assert_eq!(a.verify_refresh(&bad, NOW), Err(AuthError::BadSignature));
    // The encryption key does not matter to refresh tokens; the signing key does.
    a.rotate_encryption(&KEY_B).unwrap();
    assert!(a.verify_refresh(&r.token, NOW).is_ok());
    a.rotate(&pems()[1]).unwrap();
    assert_eq!(a.verify_refresh(&r.token, NOW), Err(AuthError::UnknownKey));
}

#[test]
fn alg_none_is_refused() {
    let a = authority();
    let payload = json!({ "private": jwe_of(&a.issue("alice", CCID, 60, NOW).unwrap().token) });
    let header = format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, a.kid());
    let unsigned = format!(
        "{}.{}.",
        b64(header.as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    // Without a signature part it fails the shape screen, with one the algorithm check.
    assert_eq!(a.authenticate(&unsigned, NOW), Err(AuthError::Malformed));
    assert_eq!(
        a.authenticate(&format!("{unsigned}AAAA"), NOW),
        Err(AuthError::BadAlgorithm)
    );
    for alg in ["None", "NONE", "", "RS256 "] {
        let header = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#, a.kid());
        let t = format!("{}.{}.AAAA", b64(header.as_bytes()), b64(b"{}"));
        assert_eq!(
            a.authenticate(&t, NOW),
            Err(AuthError::BadAlgorithm),
            "{alg:?}"
        );
    }
    // An alg that is not a string, or no alg: the header does not parse.
    let t = format!("{}.{}.AAAA", b64(br#"{"alg":1}"#), b64(b"{}"));
    assert_eq!(a.authenticate(&t, NOW), Err(AuthError::Malformed));
    let t = format!("{}.{}.AAAA", b64(br#"{"typ":"JWT"}"#), b64(b"{}"));
    assert_eq!(a.authenticate(&t, NOW), Err(AuthError::Malformed));
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let a = authority();
    let pair = KeyPair::from_pem(&pems()[0]).unwrap();
    let spki_der = pair.subject_public_key_info();
    let pkcs1_der = pair.public_key_raw().to_vec();
    let pem = pair.public_key_pem();
    let jwe = jwe_of(&a.issue("alice", CCID, 60, NOW).unwrap().token);
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(a.kid());
    for secret in [pem.as_bytes(), &spki_der[..], &pkcs1_der[..]] {
        let t = jsonwebtoken::encode(
            &h,
            &json!({ "private": jwe }),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert_eq!(a.authenticate(&t, NOW), Err(AuthError::BadAlgorithm));
    }
    // Another RSA algorithm with the right key and kid.
    let header = format!(r#"{{"alg":"RS384","typ":"JWT","kid":"{}"}}"#, a.kid());
    let key = EncodingKey::from_rsa_pem(pems()[0].as_bytes()).unwrap();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(b"{}"));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS384).unwrap();
    assert_eq!(
        a.authenticate(&format!("{input}.{sig}"), NOW),
        Err(AuthError::BadAlgorithm)
    );
    assert_eq!(a.cache_stats().decryptions, 0);
}

#[test]
fn unknown_kid() {
    let a = authority();
    // Other signing key.
    let b = TokenAuthority::new(CLUSTER, &pems()[1], &KEY_A, opts(30, 16)).unwrap();
    let t = b.issue("alice", CCID, 3600, NOW).unwrap();
    assert_eq!(a.authenticate(&t.token, NOW), Err(AuthError::UnknownKey));
    // Same keys, other cluster: the kid differs too.
    let c = TokenAuthority::new(OTHER_CLUSTER, &pems()[0], &KEY_A, opts(30, 16)).unwrap();
    let t = c.issue("alice", CCID, 3600, NOW).unwrap();
    assert_eq!(a.authenticate(&t.token, NOW), Err(AuthError::UnknownKey));
    // No kid at all.
    let jwe = jwe_of(&a.issue("alice", CCID, 60, NOW).unwrap().token);
    let t = forge(
        r#"{"alg":"RS256","typ":"JWT"}"#,
        &json!({ "private": jwe }).to_string(),
        &pems()[0],
    );
    assert_eq!(a.authenticate(&t, NOW), Err(AuthError::UnknownKey));
    assert_eq!(a.cache_stats().decryptions, 0);
}

#[test]
fn bad_signatures() {
    let a = authority();
    let good = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    // Our kid, someone else's key.
    let forged = forge(&ucm_header(&a.kid()), &text(&parts(&good)[1]), &pems()[1]);
    assert_eq!(a.authenticate(&forged, NOW), Err(AuthError::BadSignature));
    // One signature byte flipped (not the last character, whose low bits are padding).
    let mut bytes = good.clone().into_bytes();
    let at = bytes.len() - 20;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(bytes).unwrap();
    assert_eq!(a.authenticate(&flipped, NOW), Err(AuthError::BadSignature));
    // Another token's payload under this signature.
    let evil = a.issue("mallory", CCID, 3600, NOW).unwrap().token;
    let (g, e) = (parts(&good), parts(&evil));
    let spliced = format!("{}.{}.{}", g[0], e[1], g[2]);
    assert_eq!(a.authenticate(&spliced, NOW), Err(AuthError::BadSignature));
    assert_eq!(
        a.cache_stats().decryptions,
        0,
        "no JWE work before the signature"
    );
}

#[test]
fn tampered_jwe_is_refused_by_the_jwe_check() {
    let a = authority();
    let t = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    // A re-wrapped untampered JWE passes: the re-signing itself is sound.
    assert!(a.authenticate(&wrap(&a, &jwe_of(&t)), NOW).is_ok());
    let cases = [
        ("ciphertext", tamper_jwe(&a, &t, 3, flip_first)),
        (
            "ciphertext last block",
            tamper_jwe(&a, &t, 3, |c| *c.last_mut().unwrap() ^= 0x80),
        ),
        (
            "ciphertext truncated",
            tamper_jwe(&a, &t, 3, |c| c.truncate(c.len() - 16)),
        ),
        ("iv", tamper_jwe(&a, &t, 2, flip_first)),
        ("tag", tamper_jwe(&a, &t, 4, flip_first)),
        ("short tag", tamper_jwe(&a, &t, 4, |c| c.truncate(8))),
        // Same members, other bytes: the header is the AAD, so the tag no longer matches.
        (
            "header",
            tamper_jwe(&a, &t, 0, |h| {
                let s = String::from_utf8(h.clone()).unwrap().replacen(':', ": ", 1);
                *h = s.into_bytes();
            }),
        ),
    ];
    for (what, token) in cases {
        let before = a.cache_stats();
        assert_eq!(
            a.authenticate(&token, NOW),
            Err(AuthError::BadCiphertext),
            "{what}"
        );
        let after = a.cache_stats();
        assert_eq!(
            after.decryptions,
            before.decryptions + 1,
            "{what}: the JWS verified"
        );
    }
    // JWE headers that name something else.
    let header_with = |h: &str| {
        let mut jwe = parts(&jwe_of(&t));
        jwe[0] = b64(h.as_bytes());
        wrap(&a, &jwe.join("."))
    };
    let kid = format!("{CLUSTER}:{}", a.encryption_key_hash());
    for (h, reason) in [
        (
            format!(r#"{{"alg":"dir","enc":"A256GCM","kid":"{kid}"}}"#),
            AuthError::BadAlgorithm,
        ),
        (
            format!(r#"{{"alg":"A128KW","enc":"A128CBC-HS256","kid":"{kid}"}}"#),
            AuthError::BadAlgorithm,
        ),
        (
            r#"{"alg":"dir","enc":"A128CBC-HS256"}"#.to_owned(),
            AuthError::UnknownKey,
        ),
        (
            format!(r#"{{"alg":"dir","enc":"A128CBC-HS256","kid":"{kid}","zip":"DEF"}}"#),
            AuthError::Malformed,
        ),
        ("not json".to_owned(), AuthError::Malformed),
    ] {
        assert_eq!(a.authenticate(&header_with(&h), NOW), Err(reason), "{h}");
    }
    // Not five parts, or a non-empty encrypted key.
    let mut jwe = parts(&jwe_of(&t));
    jwe[1] = "AAAA".into();
    assert_eq!(
        a.authenticate(&wrap(&a, &jwe.join(".")), NOW),
        Err(AuthError::Malformed)
    );
    assert_eq!(
        a.authenticate(&wrap(&a, "a.b.c"), NOW),
        Err(AuthError::Malformed)
    );
    assert_eq!(a.cache_stats().len, 1, "only the sound token was cached");
}

#[test]
fn jwe_kid_after_rotate_encryption() {
    let a = authority();
    let t = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    a.authenticate(&t, NOW).unwrap(); // cached
    let (kid, hash, enc_hash) = (a.kid(), a.key_hash(), a.encryption_key_hash());
    a.rotate_encryption(&KEY_B).unwrap();
    assert_eq!(
        (a.kid(), a.key_hash()),
        (kid, hash),
        "signing key unchanged"
    );
    assert_ne!(a.encryption_key_hash(), enc_hash);
    assert_eq!(a.cache_stats().len, 0);
    assert_eq!(a.authenticate(&t, NOW), Err(AuthError::UnknownKey));
    let fresh = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    assert!(a.authenticate(&fresh, NOW).is_ok());
    // A JWE sealed with the old key bytes but labelled with the new kid fails the tag.
    let mut jwe = parts(&jwe_of(&fresh));
    let old = parts(&seal(&inner(CLUSTER, "access", NOW, NOW + 60), &KEY_A));
    jwe[2..].clone_from_slice(&old[2..]);
    assert_eq!(
        a.authenticate(&wrap(&a, &jwe.join(".")), NOW),
        Err(AuthError::BadCiphertext)
    );
    a.rotate_encryption(&KEY_A).unwrap();
    assert!(
        a.authenticate(&t, NOW).is_ok(),
        "rotating back restores old tokens"
    );
}

#[test]
fn expiry_with_leeway() {
    let a = authority(); // leeway 30
    let t = a.issue("alice", CCID, 60, NOW).unwrap();
    assert_eq!(a.authenticate(&t.token, NOW + 91), Err(AuthError::Expired));
    assert_eq!(a.cache_stats().len, 0, "expired tokens are not cached");
    let probe = |now| {
        authority()
            .authenticate(&t.token, now)
            .map(|id| id.user.to_string())
    };
    assert_eq!(probe(NOW + 90).as_deref(), Ok("alice"));
    let strict = TokenAuthority::new(CLUSTER, &pems()[0], &KEY_A, opts(0, 16)).unwrap();
    assert_eq!(
        strict.authenticate(&t.token, NOW + 61),
        Err(AuthError::Expired)
    );
    // Cached, then expired: refused from the cache and dropped.
    assert!(a.authenticate(&t.token, NOW).is_ok());
    assert_eq!(a.authenticate(&t.token, NOW + 91), Err(AuthError::Expired));
    let s = a.cache_stats();
    assert_eq!((s.len, s.hits), (0, 1));
}

#[test]
fn not_yet_valid() {
    let a = authority(); // leeway 30
    let t = a.issue("alice", CCID, 3600, NOW + 100).unwrap().token;
    assert_eq!(a.authenticate(&t, NOW), Err(AuthError::NotYetValid));
    assert_eq!(a.cache_stats().len, 0);
    assert!(a.authenticate(&t, NOW + 70).is_ok(), "within the leeway");
    // iat in the future but nbf not: still refused.
    let mut c = inner(CLUSTER, "access", NOW + 100, NOW + 3600);
    c["nbf"] = json!(NOW);
    assert_eq!(
        authority().authenticate(&wrap(&a, &seal(&c, &KEY_A)), NOW),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn other_clusters_claims_under_our_keys() {
    let a = authority();
    let jwe = seal(&inner(OTHER_CLUSTER, "access", NOW, NOW + 60), &KEY_A);
    assert_eq!(
        a.authenticate(&wrap(&a, &jwe), NOW),
        Err(AuthError::WrongIssuer)
    );
    // The control: the same forgery with our iss passes.
    let jwe = seal(&inner(CLUSTER, "access", NOW, NOW + 60), &KEY_A);
    assert!(a.authenticate(&wrap(&a, &jwe), NOW).is_ok());
}

#[test]
fn wrong_types() {
    let a = authority();
    let refresh = a.issue_refresh(CCID, 600, NOW).unwrap().token;
    assert_eq!(a.authenticate(&refresh, NOW), Err(AuthError::WrongType));
    // Inner claims that say refresh.
    let jwe = seal(&inner(CLUSTER, "refresh", NOW, NOW + 60), &KEY_A);
    assert_eq!(
        a.authenticate(&wrap(&a, &jwe), NOW),
        Err(AuthError::WrongType)
    );
    // Signed claims that are neither: malformed.
    let t = forge(&ucm_header(&a.kid()), r#"{"sub":"alice"}"#, &pems()[0]);
    assert_eq!(a.authenticate(&t, NOW), Err(AuthError::Malformed));
    // Inner claims missing what we need.
    let mut c = inner(CLUSTER, "access", NOW, NOW + 60);
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(
        a.authenticate(&wrap(&a, &seal(&c, &KEY_A)), NOW),
        Err(AuthError::Malformed)
    );
    assert_eq!(a.cache_stats().len, 0);
}

#[test]
fn revoke_user_wide() {
    let a = authority();
    let cached = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    let uncached = a.issue("alice", CCID2, 3600, NOW).unwrap().token;
    let bob = a.issue("bob", CCID, 3600, NOW).unwrap().token;
    a.authenticate(&cached, NOW).unwrap();
    a.authenticate(&bob, NOW).unwrap();
    assert_eq!(a.cache_stats().len, 2);
    a.revoke("alice", None, NOW + 1);
    assert_eq!(a.cache_stats().len, 1, "alice's entry purged");
    assert_eq!(a.authenticate(&cached, NOW + 5), Err(AuthError::Revoked));
    assert_eq!(a.authenticate(&uncached, NOW + 5), Err(AuthError::Revoked));
    assert!(a.authenticate(&bob, NOW + 5).is_ok());
    // Issued at the cut-off or later: valid, and cached again.
    let later = a.issue("alice", CCID, 3600, NOW + 1).unwrap().token;
    assert!(a.authenticate(&later, NOW + 5).is_ok());
    assert!(a.authenticate(&later, NOW + 5).is_ok());
    assert_eq!(a.cache_stats().len, 2);
    // An older cut-off does not move it back.
    a.revoke("alice", None, NOW - 100);
    assert_eq!(a.authenticate(&cached, NOW + 5), Err(AuthError::Revoked));
    // Also without a cache.
    let b = TokenAuthority::new(CLUSTER, &pems()[0], &KEY_A, opts(30, 0)).unwrap();
    b.revoke("alice", None, NOW + 1);
    assert_eq!(b.authenticate(&cached, NOW), Err(AuthError::Revoked));
    assert!(b.authenticate(&later, NOW).is_ok());
}

#[test]
fn revoke_one_client() {
    let a = authority();
    let one = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    let two = a.issue("alice", CCID2, 3600, NOW).unwrap().token;
    a.authenticate(&one, NOW).unwrap();
    a.authenticate(&two, NOW).unwrap();
    a.revoke("alice", Some(CCID), NOW + 1);
    assert_eq!(a.cache_stats().len, 1);
    assert_eq!(a.authenticate(&one, NOW), Err(AuthError::Revoked));
    assert!(a.authenticate(&two, NOW).is_ok(), "other client untouched");
    assert_eq!(a.cache_stats().hits, 1, "and still answered from the cache");
    let fresh = a.issue("alice", CCID, 3600, NOW + 1).unwrap().token;
    assert!(a.authenticate(&fresh, NOW + 1).is_ok());
    // A user-wide cut-off on top reaches the other client too.
    a.revoke("alice", None, NOW + 1);
    assert_eq!(a.authenticate(&two, NOW), Err(AuthError::Revoked));
    assert!(a.authenticate(&fresh, NOW + 1).is_ok());
}

#[test]
fn a_reused_signature_gets_the_original_identity_or_nothing() {
    let a = authority();
    let alice = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    let bob = a.issue("bob", CCID, 3600, NOW).unwrap().token;
    // Bob's header and payload under alice's signature segment.
    let signature = alice.rsplit('.').next().unwrap();
    let (bob_signed, _) = bob.rsplit_once('.').unwrap();
    let spliced = format!("{bob_signed}.{signature}");
    // Not yet cached: the signature check refuses it.
    assert_eq!(a.authenticate(&spliced, NOW), Err(AuthError::BadSignature));
    // Cached: the hit is alice's verified entry, never bob's unverified claims.
    assert_eq!(&*a.authenticate(&alice, NOW).unwrap().user, "alice");
    assert_eq!(&*a.authenticate(&spliced, NOW).unwrap().user, "alice");
    // And it goes with alice's entry: revoked with her.
    a.revoke("alice", None, NOW + 1);
    assert_eq!(a.authenticate(&spliced, NOW), Err(AuthError::BadSignature));
}

#[test]
fn a_verification_racing_a_revocation_is_not_cached() {
    let a = authority();
    let t = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    let id = a.authenticate(&t, NOW).unwrap();
    let digest = TokenDigest::of(&t);
    // As if the verification had started (epoch 0) before a revocation of somebody else...
    a.revoke("bob", None, NOW + 1);
    a.rotate_encryption(&KEY_A).unwrap();
    assert_eq!(a.cache.admit(Some(digest), &id, 0, NOW), Ok(()));
    assert_eq!(a.cache_stats().len, 0, "stale epoch: not inserted");
    // ...or of alice herself: refused outright.
    a.revoke("alice", None, NOW + 1);
    assert_eq!(
        a.cache.admit(Some(digest), &id, 99, NOW),
        Err(AuthError::Revoked)
    );
}

#[test]
fn garbage_and_oversized_are_malformed() {
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
        assert_eq!(
            a.verify_refresh(input, NOW),
            Err(AuthError::Malformed),
            "{input:?}"
        );
    }
    // Six are well shaped, each tried as an access and as a refresh token.
    assert_eq!(
        a.cache_stats().verifications,
        12,
        "only the well-shaped ones were decoded"
    );
    let t = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    for cut in [1, 10, 100, t.len() / 2, t.len() - 1] {
        assert!(a.authenticate(&t[..cut], NOW).is_err());
    }
    assert!(a.authenticate(&format!("{t}."), NOW).is_err());
    // A JWS within bounds whose payload is huge still passes the screen only to MAX_TOKEN_LEN.
    let padded = format!("{t}{}", "A".repeat(MAX_TOKEN_LEN - t.len() + 1));
    assert_eq!(a.authenticate(&padded, NOW), Err(AuthError::Malformed));
    assert_eq!(a.cache_stats().len, 0);
}

#[test]
fn cache_hit_costs_no_crypto() {
    let a = authority();
    let t = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    let first = a.authenticate(&t, NOW).unwrap();
    let s = a.cache_stats();
    assert_eq!(
        (s.len, s.hits, s.misses, s.verifications, s.decryptions),
        (1, 0, 1, 1, 1)
    );
    for i in 0..10 {
        assert_eq!(a.authenticate(&t, NOW + i).as_ref(), Ok(&first));
    }
    let s = a.cache_stats();
    assert_eq!(
        (s.len, s.hits, s.misses, s.verifications, s.decryptions),
        (1, 10, 1, 1, 1)
    );
    // Two tokens for the same user are two entries.
    let t2 = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    assert_ne!(a.authenticate(&t2, NOW).unwrap().token_id, first.token_id);
    assert_eq!(a.cache_stats().len, 2);
}

#[test]
fn rotation_clears_the_cache() {
    let a = authority();
    let old = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    a.authenticate(&old, NOW).unwrap();
    let (old_kid, old_hash) = (a.kid(), a.key_hash());
    a.rotate(&pems()[1]).unwrap();
    assert_ne!(a.kid(), old_kid);
    assert_ne!(a.key_hash(), old_hash);
    assert_eq!(a.cache_stats().len, 0);
    assert_eq!(a.authenticate(&old, NOW), Err(AuthError::UnknownKey));
    let new = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    assert!(a.authenticate(&new, NOW).is_ok());
    // A failed rotation keeps the current key.
    assert!(a.rotate("garbage").is_err());
    assert!(a.authenticate(&new, NOW).is_ok());
    // Rotating back restores the old key and with it its tokens.
    a.rotate(&pems()[0]).unwrap();
    assert_eq!(a.kid(), old_kid);
    assert!(a.authenticate(&old, NOW).is_ok());
    assert_eq!(a.authenticate(&new, NOW), Err(AuthError::UnknownKey));
}

#[test]
fn stale_epoch_is_not_cached() {
    let a = authority();
    let t = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    let id = a.authenticate(&t, NOW).unwrap();
    a.rotate(&pems()[0]).unwrap();
    // As if a verification with the pre-rotation key finished after the rotation.
    assert_eq!(
        a.cache.admit(Some(TokenDigest::of(&t)), &id, 0, NOW),
        Ok(())
    );
    assert_eq!(a.cache_stats().len, 0);
}

#[test]
fn cache_stays_within_capacity() {
    let a = TokenAuthority::new(CLUSTER, &pems()[0], &KEY_A, opts(30, 16)).unwrap();
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
    for t in &tokens {
        assert!(a.authenticate(&t.token, NOW).is_ok());
    }
    // Expired entries go first, and on a sweep.
    let len = a.cache_stats().len;
    assert_eq!(a.purge_expired(NOW + 10_000), len);
    assert_eq!(a.cache_stats().len, 0);
}

#[test]
fn zero_capacity_disables_cache() {
    let a = TokenAuthority::new(CLUSTER, &pems()[0], &KEY_A, opts(30, 0)).unwrap();
    let t = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    assert!(a.authenticate(&t, NOW).is_ok());
    assert!(a.authenticate(&t, NOW).is_ok());
    let s = a.cache_stats();
    assert_eq!((s.len, s.capacity, s.hits, s.misses), (0, 0, 0, 0));
    assert_eq!((s.verifications, s.decryptions), (2, 2));
}

#[test]
fn concurrent_use_with_rotation_and_revocation() {
    let a = Arc::new(authority());
    let alice = a.issue("alice", CCID, 3600, NOW).unwrap().token;
    let bob = a.issue("bob", CCID, 3600, NOW).unwrap().token;
    std::thread::scope(|s| {
        for t in [&alice, &bob, &alice, &bob] {
            let a = &a;
            s.spawn(move || {
                for _ in 0..200 {
                    // Either answer is fine mid-race; a panic or another reason is not.
                    match a.authenticate(t, NOW) {
                        Ok(_) | Err(AuthError::Revoked) => {}
                        Err(e) => panic!("{e:?}"),
                    }
                }
            });
        }
        s.spawn(|| {
            for _ in 0..20 {
                a.rotate_encryption(&KEY_A).unwrap();
            }
            a.revoke("alice", None, NOW + 1);
        });
    });
    // After the revocation, alice's token is refused however the race went, bob's is not.
    assert_eq!(a.authenticate(&alice, NOW), Err(AuthError::Revoked));
    assert!(a.authenticate(&bob, NOW).is_ok());
    let dyn_auth: Arc<dyn Authenticator> = a;
    assert!(dyn_auth.authenticate(&bob, NOW).is_ok());
}

#[test]
fn kids_and_hashes() {
    let a = authority();
    let b = TokenAuthority::new(CLUSTER, &pems()[0], &KEY_A, opts(0, 0)).unwrap();
    assert_eq!((a.kid(), a.key_hash()), (b.kid(), b.key_hash()));
    let hash = a.key_hash();
    assert_eq!(hash.len(), 64);
    assert!(hash.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(a.kid(), format!("{CLUSTER}:{hash}"));
    let spki = KeyPair::from_pem(&pems()[0])
        .unwrap()
        .subject_public_key_info();
    assert_eq!(hash, hex::encode(Sha256::digest(&spki)));
    assert_eq!(a.encryption_key_hash(), hex::encode(Sha256::digest(KEY_A)));
    assert_ne!(a.encryption_key_hash(), hex::encode(KEY_A));
    let debug = format!("{a:?}");
    assert!(
        !debug.contains("PRIVATE") && !debug.contains(&hex::encode(KEY_A)),
        "{debug}"
    );
    // The cluster UUID is normalised.
    let upper =
        TokenAuthority::new(&CLUSTER.to_uppercase(), &pems()[0], &KEY_A, opts(0, 0)).unwrap();
    assert_eq!(upper.cluster_uuid(), CLUSTER);
    // Random keys differ.
    assert_ne!(generate_encryption_key(), generate_encryption_key());
}

#[test]
fn key_errors() {
    assert!(matches!(
        TokenAuthority::new("not-a-uuid", &pems()[0], &KEY_A, opts(0, 0)),
        Err(KeyError::BadClusterUuid(_))
    ));
    assert!(matches!(
        TokenAuthority::new(CLUSTER, "garbage", &KEY_A, opts(0, 0)),
        Err(KeyError::BadPem(_))
    ));
    let ec = KeyPair::generate().unwrap().serialize_pem();
    assert!(matches!(
        TokenAuthority::new(CLUSTER, &ec, &KEY_A, opts(0, 0)),
        Err(KeyError::NotRsa)
    ));
}
