//! Unit tests of [`super`]: keys made with rcgen, tokens signed with `jsonwebtoken` (fine here;
//! the integration test `outside_idp` uses tokens from an independent provider).

use std::sync::OnceLock;

use jsonwebtoken::{EncodingKey, Header};
use rcgen::KeyPair;
use serde_json::json;

use super::*;

const ISS: &str = "https://idp.example.com/realms/lab";
const AUD: &str = "sip-registrar";
const NOW: u64 = 1_800_000_000;

/// Key pairs shared by all tests (RSA generation costs tens of ms): RSA, P-256, Ed25519, and a
/// second RSA key that no issuer trusts.
struct TestKeys {
    rsa: KeyPair,
    ec: KeyPair,
    ed: KeyPair,
    other_rsa: KeyPair,
}

fn keys() -> &'static TestKeys {
    static KEYS: OnceLock<TestKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = |alg| KeyPair::generate_for(alg).expect("aws-lc-rs generates keys");
        TestKeys {
            rsa: make(&rcgen::PKCS_RSA_SHA256),
            ec: make(&rcgen::PKCS_ECDSA_P256_SHA256),
            ed: make(&rcgen::PKCS_ED25519),
            other_rsa: make(&rcgen::PKCS_RSA_SHA256),
        }
    })
}

fn encoding_key(pair: &KeyPair, alg: Algorithm) -> EncodingKey {
    let pem = pair.serialize_pem();
    match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
    }
    .expect("rcgen PKCS#8 PEM")
}

fn sign(pair: &KeyPair, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key(pair, alg)).expect("sign")
}

fn claims() -> Value {
    json!({
        "iss": ISS, "aud": AUD, "sub": "alice", "iat": NOW - 10, "exp": NOW + 300,
        "jti": "token-1", "preferred_username": "alice@lab", "azp": "phone-app",
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().expect("object").remove(key);
    claims
}

fn config(keys: &str) -> IssuerConfig {
    let toml = format!("issuer = {ISS:?}\naudience = [{AUD:?}]\nkeys = {keys}\n");
    toml::from_str(&toml).expect("issuer TOML")
}

/// A temp dir with `rsa.pem`, `ec.pem`, `ed.pem` (public keys) and `jwks.json` (the RSA key as
/// `kid` "rsa-1" and the P-256 key as "ec-1").
fn key_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = keys();
    std::fs::write(dir.path().join("rsa.pem"), k.rsa.public_key_pem()).unwrap();
    std::fs::write(dir.path().join("ec.pem"), k.ec.public_key_pem()).unwrap();
    std::fs::write(dir.path().join("ed.pem"), k.ed.public_key_pem()).unwrap();
    let jwk = |pair: &KeyPair, alg, kid: &str| {
        let mut jwk = Jwk::from_encoding_key(&encoding_key(pair, alg), alg).expect("jwk");
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(jwk).expect("jwk json")
    };
    let set = json!({ "keys": [
        jwk(&k.rsa, Algorithm::RS256, "rsa-1"),
        jwk(&k.ec, Algorithm::ES256, "ec-1"),
        // Skipped, not fatal: an encryption key and a symmetric key.
        { "kty": "RSA", "use": "enc", "kid": "enc-1", "n": "AQAB", "e": "AQAB" },
        { "kty": "oct", "kid": "hmac-1", "k": "c2VjcmV0" },
    ]});
    std::fs::write(dir.path().join("jwks.json"), set.to_string()).unwrap();
    dir
}

async fn load(configs: Vec<IssuerConfig>, dir: &Path) -> Arc<ExternalIssuers> {
    ExternalIssuers::load(configs, dir).await.expect("load")
}

async fn pem_issuers(dir: &Path) -> Arc<ExternalIssuers> {
    load(
        vec![config(r#"{ pem_files = ["rsa.pem", "ec.pem", "ed.pem"] }"#)],
        dir,
    )
    .await
}

async fn jwks_issuers(dir: &Path) -> Arc<ExternalIssuers> {
    load(vec![config(r#"{ jwks_file = "jwks.json" }"#)], dir).await
}

#[tokio::test]
async fn pem_keys_accept_rs256_es256_eddsa() {
    let dir = key_dir();
    let ext = pem_issuers(dir.path()).await;
    let k = keys();
    for (pair, alg) in [
        (&k.rsa, Algorithm::RS256),
        (&k.ec, Algorithm::ES256),
        (&k.ed, Algorithm::EdDSA),
    ] {
        let token = sign(pair, alg, None, &claims());
        assert!(ext.handles(&token), "{alg:?}");
        let id = ext
            .authenticate(&token, NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(&*id.user, "alice");
        assert_eq!(id.expires_at, NOW + 300);
        assert_eq!(&*id.token_id, "token-1");
        // A `kid` the PEM keys cannot name still finds them (they have none).
        let token = sign(pair, alg, Some("whatever"), &claims());
        assert!(ext.authenticate(&token, NOW).is_ok(), "{alg:?} with kid");
    }
}

#[tokio::test]
async fn jwks_file_selects_by_kid() {
    let dir = key_dir();
    let ext = jwks_issuers(dir.path()).await;
    let k = keys();
    let token = sign(&k.rsa, Algorithm::RS256, Some("rsa-1"), &claims());
    assert_eq!(&*ext.authenticate(&token, NOW).unwrap().user, "alice");
    let token = sign(&k.ec, Algorithm::ES256, Some("ec-1"), &claims());
    assert_eq!(&*ext.authenticate(&token, NOW).unwrap().user, "alice");
    // No kid: two keys in the set, one fits ES256, so it is used.
    let token = sign(&k.ec, Algorithm::ES256, None, &claims());
    assert!(ext.authenticate(&token, NOW).is_ok());
}

#[tokio::test]
async fn unknown_kid_is_unknown_key() {
    let dir = key_dir();
    let ext = jwks_issuers(dir.path()).await;
    let token = sign(&keys().rsa, Algorithm::RS256, Some("rsa-2"), &claims());
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::UnknownKey));
    // The encryption key was skipped, so its kid is unknown too.
    let token = sign(&keys().rsa, Algorithm::RS256, Some("enc-1"), &claims());
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn kid_of_another_key_type_is_bad_algorithm() {
    let dir = key_dir();
    let ext = jwks_issuers(dir.path()).await;
    let token = sign(&keys().ec, Algorithm::ES256, Some("rsa-1"), &claims());
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::BadAlgorithm));
}

#[tokio::test]
async fn wrong_issuer() {
    let dir = key_dir();
    let ext = pem_issuers(dir.path()).await;
    let other = with(claims(), "iss", json!("https://evil.example.com"));
    let token = sign(&keys().rsa, Algorithm::RS256, None, &other);
    assert!(!ext.handles(&token));
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::WrongIssuer));
    let token = sign(
        &keys().rsa,
        Algorithm::RS256,
        None,
        &without(claims(), "iss"),
    );
    assert!(!ext.handles(&token));
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::WrongIssuer));
}

#[tokio::test]
async fn audience_must_match_one_of_ours() {
    let dir = key_dir();
    let ext = pem_issuers(dir.path()).await;
    let rsa = &keys().rsa;
    let token = sign(
        rsa,
        Algorithm::RS256,
        None,
        &with(claims(), "aud", json!("other")),
    );
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::WrongAudience));
    let both = with(claims(), "aud", json!(["other", AUD]));
    assert!(
        ext.authenticate(&sign(rsa, Algorithm::RS256, None, &both), NOW)
            .is_ok()
    );
    let token = sign(rsa, Algorithm::RS256, None, &without(claims(), "aud"));
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::Malformed));
}

#[tokio::test]
async fn exp_required_and_checked_against_caller_clock() {
    let dir = key_dir();
    let ext = pem_issuers(dir.path()).await;
    let rsa = &keys().rsa;
    let token = sign(rsa, Algorithm::RS256, None, &without(claims(), "exp"));
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::Malformed));
    let token = sign(
        rsa,
        Algorithm::RS256,
        None,
        &with(claims(), "exp", json!("soon")),
    );
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::Malformed));
    // Default leeway 60 s.
    let token = sign(rsa, Algorithm::RS256, None, &claims());
    assert_eq!(ext.authenticate(&token, NOW + 361), Err(AuthError::Expired));
    assert!(ext.authenticate(&token, NOW + 360).is_ok());
    // Now cached: the cache answers expiry the same way.
    assert_eq!(ext.authenticate(&token, NOW + 361), Err(AuthError::Expired));
}

#[tokio::test]
async fn nbf_in_the_future_is_not_yet_valid() {
    let dir = key_dir();
    let ext = pem_issuers(dir.path()).await;
    let early = with(claims(), "nbf", json!(NOW + 100));
    let token = sign(&keys().rsa, Algorithm::RS256, None, &early);
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::NotYetValid));
    assert!(ext.authenticate(&token, NOW + 40).is_ok());
}

#[tokio::test]
async fn algorithm_not_allowed() {
    let dir = key_dir();
    let mut es_only = config(r#"{ pem_files = ["rsa.pem", "ec.pem"] }"#);
    es_only.algorithms = vec!["ES256".into()];
    let ext = load(vec![es_only], dir.path()).await;
    let token = sign(&keys().rsa, Algorithm::RS256, None, &claims());
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::BadAlgorithm));
    let token = sign(&keys().ec, Algorithm::ES256, None, &claims());
    assert!(ext.authenticate(&token, NOW).is_ok());
}

#[tokio::test]
async fn hs256_with_the_public_key_as_secret_is_refused() {
    let dir = key_dir();
    let ext = jwks_issuers(dir.path()).await;
    let public_pem = keys().rsa.public_key_pem();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let key = EncodingKey::from_secret(public_pem.as_bytes());
    let token = jsonwebtoken::encode(&header, &claims(), &key).unwrap();
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::BadAlgorithm));
    // Nor can HS256 be configured.
    let mut hs = config(r#"{ jwks_file = "jwks.json" }"#);
    hs.algorithms = vec!["HS256".into()];
    let err = ExternalIssuers::load(vec![hs], dir.path())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("public-key algorithms only"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_signature() {
    let dir = key_dir();
    let ext = jwks_issuers(dir.path()).await;
    let k = keys();
    let token = sign(&k.rsa, Algorithm::RS256, Some("rsa-1"), &claims());
    let (body, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let tampered = format!("{body}.{flipped}{}", &sig[1..]);
    assert_eq!(
        ext.authenticate(&tampered, NOW),
        Err(AuthError::BadSignature)
    );
    // Claims changed under a valid header and signature.
    let (header, _) = body.split_once('.').unwrap();
    let other = sign(
        &k.rsa,
        Algorithm::RS256,
        Some("rsa-1"),
        &with(claims(), "sub", json!("mallory")),
    );
    let payload = other.split('.').nth(1).unwrap();
    let spliced = format!("{header}.{payload}.{sig}");
    assert_eq!(
        ext.authenticate(&spliced, NOW),
        Err(AuthError::BadSignature)
    );
    // Signed by a key nobody trusts, claiming a trusted kid.
    let token = sign(&k.other_rsa, Algorithm::RS256, Some("rsa-1"), &claims());
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::BadSignature));
}

#[tokio::test]
async fn user_claim_must_be_a_non_empty_string() {
    let dir = key_dir();
    let ext = pem_issuers(dir.path()).await;
    let rsa = &keys().rsa;
    for bad in [
        without(claims(), "sub"),
        with(claims(), "sub", json!("")),
        with(claims(), "sub", json!(42)),
        with(claims(), "sub", json!("ali\nce")),
        with(claims(), "sub", json!("x".repeat(MAX_USER_LEN + 1))),
    ] {
        let token = sign(rsa, Algorithm::RS256, None, &bad);
        assert_eq!(
            ext.authenticate(&token, NOW),
            Err(AuthError::Malformed),
            "{bad}"
        );
    }

    let mut by_name = config(r#"{ pem_files = ["rsa.pem"] }"#);
    by_name.user_claim = "preferred_username".into();
    let ext = load(vec![by_name], dir.path()).await;
    let token = sign(rsa, Algorithm::RS256, None, &claims());
    assert_eq!(&*ext.authenticate(&token, NOW).unwrap().user, "alice@lab");
}

#[tokio::test]
async fn token_id_is_jti_or_a_hash() {
    let dir = key_dir();
    let ext = pem_issuers(dir.path()).await;
    let token = sign(
        &keys().rsa,
        Algorithm::RS256,
        None,
        &without(claims(), "jti"),
    );
    let id = ext.authenticate(&token, NOW).unwrap();
    assert_eq!(id.token_id.len(), 16);
    assert!(id.token_id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        &*id.token_id,
        &hex::encode(Sha256::digest(token.as_bytes()))[..16]
    );
}

#[tokio::test]
async fn garbage_is_malformed() {
    let dir = key_dir();
    let ext = pem_issuers(dir.path()).await;
    let huge = format!("{}.b.c", "a".repeat(MAX_TOKEN_LEN));
    for garbage in [
        "",
        "a",
        "a.b",
        "a.b.c",
        "a..c",
        "a.b.c.d",
        "not a token",
        &huge,
    ] {
        assert!(!ext.handles(garbage), "{garbage:?}");
        assert_eq!(
            ext.authenticate(garbage, NOW),
            Err(AuthError::Malformed),
            "{garbage:?}"
        );
    }
    // `alg: none` is not a known algorithm to the JWT library: malformed header.
    let none = format!(
        "{}.{}.",
        "eyJhbGciOiJub25lIn0", "eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbS9yZWFsbXMvbGFiIn0"
    );
    assert_eq!(ext.authenticate(&none, NOW), Err(AuthError::Malformed));
}

#[tokio::test]
async fn cached_answer_matches_and_survives_only_its_key_set() {
    let dir = key_dir();
    let ext = jwks_issuers(dir.path()).await;
    let token = sign(&keys().rsa, Algorithm::RS256, Some("rsa-1"), &claims());
    let first = ext.authenticate(&token, NOW).unwrap();
    assert_eq!(ext.lock_cache().map.len(), 1);
    assert_eq!(ext.authenticate(&token, NOW + 1).unwrap(), first);

    // A key set that only adds a key keeps the cache; one that drops `rsa-1` invalidates it.
    let issuer = &ext.issuers[0];
    let json = std::fs::read(dir.path().join("jwks.json")).unwrap();
    assert_eq!(issuer.install(keys_from_jwks(&json).unwrap()), 0);
    assert!(ext.authenticate(&token, NOW).is_ok());
    let only_ec: Vec<_> = keys_from_jwks(&json)
        .unwrap()
        .into_iter()
        .filter(|k| k.kid.as_deref() == Some("ec-1"))
        .collect();
    assert_eq!(issuer.install(only_ec), 1);
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn unreachable_jwks_url_is_not_fatal() {
    // Port 9 (discard) on loopback: nothing listens there on a test machine.
    let mut down = config(r#"{ jwks_url = "http://127.0.0.1:9/jwks" }"#);
    down.fetch_timeout_secs = 2;
    let ext = load(vec![down], Path::new(".")).await;
    assert!(!ext.is_empty());
    let token = sign(&keys().rsa, Algorithm::RS256, Some("rsa-1"), &claims());
    assert!(ext.handles(&token));
    assert_eq!(ext.authenticate(&token, NOW), Err(AuthError::UnknownKey));
    // The unknown kid asked the refresh task for a fetch.
    let remote = ext.issuers[0].remote.as_ref().unwrap();
    assert!(remote.wanted.load(Ordering::Relaxed));
    assert!(!remote.lock_state().last_ok);
}

#[tokio::test]
async fn config_errors_name_the_issuer() {
    let dir = key_dir();
    let k = keys();
    std::fs::write(dir.path().join("private.pem"), k.rsa.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("junk.json"), "{\"keys\": 3}").unwrap();
    std::fs::write(dir.path().join("empty.json"), "{\"keys\": []}").unwrap();
    let cases = [
        (
            config(r#"{ pem_files = ["private.pem"] }"#),
            "expected PUBLIC KEY",
        ),
        (config(r#"{ pem_files = ["missing.pem"] }"#), "cannot read"),
        (config(r#"{ pem_files = [] }"#), "pem_files is empty"),
        (config(r#"{ jwks_file = "junk.json" }"#), "not a JWK set"),
        (
            config(r#"{ jwks_file = "empty.json" }"#),
            "no usable signature key",
        ),
        (
            config(r#"{ jwks_url = "http://idp.example.com/jwks" }"#),
            "loopback",
        ),
        (
            config(r#"{ jwks_url = "ftp://127.0.0.1/jwks" }"#),
            "must be https",
        ),
    ];
    for (cfg, expected) in cases {
        let err = ExternalIssuers::load(vec![cfg], dir.path())
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(ISS) && text.contains(expected), "{text}");
    }
    let twice = vec![config(r#"{ jwks_file = "jwks.json" }"#); 2];
    let err = ExternalIssuers::load(twice, dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");
    let mut no_aud = config(r#"{ jwks_file = "jwks.json" }"#);
    no_aud.audience.clear();
    assert!(
        ExternalIssuers::load(vec![no_aud], dir.path())
            .await
            .is_err()
    );
}

#[test]
fn toml_shape() {
    #[derive(Deserialize)]
    struct Cluster {
        identity_providers: Vec<IssuerConfig>,
    }
    let cluster: Cluster = toml::from_str(
        r#"
        [[identity_providers]]
        issuer = "https://login.example.com/realms/voice"
        audience = ["sip-registrar"]
        user_claim = "preferred_username"
        keys = { jwks_url = "https://login.example.com/realms/voice/protocol/openid-connect/certs" }
        ca_file = "lab-ca.pem"
        refresh_interval_secs = 600

        [[identity_providers]]
        issuer = "https://sts.example.net"
        audience = ["api://sip", "sip"]
        algorithms = ["ES256"]
        keys = { pem_files = ["sts-1.pem", "sts-2.pem"] }
        "#,
    )
    .expect("example TOML");
    let [a, b] = &cluster.identity_providers[..] else {
        panic!("two entries");
    };
    assert_eq!(a.user_claim, "preferred_username");
    assert_eq!(a.algorithms, ["RS256", "ES256", "EdDSA"]);
    assert_eq!(a.leeway_secs, 60);
    assert_eq!(a.fetch_timeout_secs, 5);
    assert_eq!(a.min_refetch_interval_secs, 30);
    assert_eq!(a.refresh_interval_secs, 600);
    assert!(matches!(&a.keys, KeySource::JwksUrl(u) if u.ends_with("/certs")));
    assert_eq!(b.user_claim, "sub");
    assert_eq!(
        b.keys,
        KeySource::PemFiles(vec!["sts-1.pem".into(), "sts-2.pem".into()])
    );
    // Unknown keys and two key sources are refused.
    let typo = "issuer = \"x\"\naudience = [\"a\"]\nkeys = { jwks_file = \"j\" }\nleway_secs = 1\n";
    assert!(toml::from_str::<IssuerConfig>(typo).is_err());
    let two = "issuer = \"x\"\naudience = [\"a\"]\nkeys = { jwks_file = \"j\", pem_files = [] }\n";
    assert!(toml::from_str::<IssuerConfig>(two).is_err());
}

#[test]
fn loopback_rule() {
    assert!(check_url("http://127.0.0.1:8080/jwks").is_ok());
    assert!(check_url("http://127.3.2.1/jwks").is_ok());
    assert!(check_url("http://[::1]:8080/jwks").is_ok());
    assert!(check_url("https://idp.example.com/jwks").is_ok());
    assert!(check_url("http://localhost/jwks").is_err());
    assert!(check_url("http://10.0.0.1/jwks").is_err());
    assert!(check_url("http://[::ffff:127.0.0.1]/jwks").is_err());
    assert!(check_url("/jwks").is_err());
}
