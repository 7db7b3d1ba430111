//! Independent JOSE check: tokens of a real `TokenAuthority`, verified and decrypted by Python's
//! `jwcrypto` (tests/interop/jose_check.py), which must also reject tampered tokens.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use sip_oauth_registrar::auth::{
    AuthError, AuthOptions, Authenticator, TokenAuthority, generate_encryption_key,
};

const CCID: &str = "C3b0affefe1439041683e9c2c37d36f438ef0ef27c0938adc6226e0c03d169f2a";
const JWCRYPTO: &str = "jwcrypto==1.5.6";

/// jwcrypto installed once per test binary under the target's tmp dir.
fn pydeps() -> &'static Path {
    static DEPS: OnceLock<PathBuf> = OnceLock::new();
    DEPS.get_or_init(|| crate::harness::pip_target("pydeps", &[JWCRYPTO], "jwcrypto"))
}

struct Fixture {
    dir: tempfile::TempDir,
    authority: TokenAuthority,
    signing_pem: String,
}

impl Fixture {
    fn new() -> Self {
        let signing_pem = sip_oauth_registrar::pki::generate_rsa_signing_key_pem().unwrap();
        let key = generate_encryption_key();
        let authority = TokenAuthority::new(
            "8d0d5324-f4f0-4b0b-811e-4a59fdb6b722",
            &signing_pem,
            &key,
            AuthOptions::default(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let public = rcgen::KeyPair::from_pem(&signing_pem)
            .unwrap()
            .public_key_pem();
        std::fs::write(dir.path().join("public.pem"), public).unwrap();
        let jwk = json!({ "kty": "oct", "k": URL_SAFE_NO_PAD.encode(key) });
        std::fs::write(dir.path().join("key.jwk"), jwk.to_string()).unwrap();
        Self {
            dir,
            authority,
            signing_pem,
        }
    }

    fn check(&self, token: &str) -> Output {
        let path = self.dir.path().join("token");
        std::fs::write(&path, token).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/jose_check.py");
        Command::new("python3")
            .arg(script)
            .arg(&path)
            .arg(self.dir.path().join("public.pem"))
            .arg(self.dir.path().join("key.jwk"))
            .env("PYTHONPATH", pydeps())
            .output()
            .expect("python3 runs")
    }

    fn accepted(&self, token: &str) -> Value {
        let out = self.check(token);
        assert!(
            out.status.success(),
            "jwcrypto refused our token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn assert_rejected(&self, token: &str, what: &str) {
        let out = self.check(token);
        assert!(
            !out.status.success(),
            "jwcrypto accepted a token with {what}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("rejected:"), "{what}: {stderr}");
    }
}

#[test]
fn jwcrypto_verifies_and_decrypts_our_access_token() {
    let f = Fixture::new();
    let now = 1_700_000_000;
    let issued = f.authority.issue("rado", CCID, 3600, now).unwrap();
    let out = f.accepted(&issued.token);
    assert_eq!(out["jws_header"]["alg"], "RS256");
    assert_eq!(out["jws_header"]["kid"], f.authority.kid());
    assert_eq!(out["jwe_header"]["alg"], "dir");
    assert_eq!(out["jwe_header"]["enc"], "A128CBC-HS256");
    let claims = &out["claims"];
    assert_eq!(claims["sub"], "rado");
    assert_eq!(claims["iss"], f.authority.cluster_uuid());
    assert_eq!(claims["ctyp"], "access");
    assert_eq!(claims["scope"], "UnifiedCommunications:readwrite");
    assert_eq!(claims["tid"], issued.token_id.as_str());
    assert_eq!(claims["ccid"], CCID);
    assert_eq!(claims["exp"], now + 3600);
}

#[test]
fn jwcrypto_verifies_our_refresh_token() {
    let f = Fixture::new();
    let issued = f
        .authority
        .issue_refresh(CCID, 86_400, 1_700_000_000)
        .unwrap();
    let out = f.accepted(&issued.token);
    let payload = &out["payload"];
    assert_eq!(payload["ctyp"], "refresh");
    assert_eq!(payload["iss"], f.authority.cluster_uuid());
    assert_eq!(payload["tid"], issued.token_id.as_str());
    assert!(
        out.get("claims").is_none(),
        "a refresh token is not encrypted"
    );
}

#[test]
fn jwcrypto_rejects_tampered_tokens() {
    let f = Fixture::new();
    let token = f
        .authority
        .issue("rado", CCID, 3600, 1_700_000_000)
        .unwrap()
        .token;
    let parts: Vec<&str> = token.split('.').collect();
    // A signature byte flipped.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let bad_sig = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    f.assert_rejected(&bad_sig, "a flipped signature byte");
    // A ciphertext byte flipped, then validly re-signed: only the JWE's tag can catch it.
    let payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let mut jwe: Vec<String> = payload["private"]
        .as_str()
        .unwrap()
        .split('.')
        .map(str::to_owned)
        .collect();
    let mut ciphertext = URL_SAFE_NO_PAD.decode(&jwe[3]).unwrap();
    ciphertext[0] ^= 1;
    jwe[3] = URL_SAFE_NO_PAD.encode(&ciphertext);
    let payload = json!({ "private": jwe.join(".") }).to_string();
    let input = format!("{}.{}", parts[0], URL_SAFE_NO_PAD.encode(payload));
    let key = EncodingKey::from_rsa_pem(f.signing_pem.as_bytes()).unwrap();
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::RS256).unwrap();
    let resigned = format!("{input}.{sig}");
    f.assert_rejected(&resigned, "a tampered JWE ciphertext");
    // Our own verifier agrees, with the JWE reason.
    assert_eq!(
        f.authority.authenticate(&resigned, 1_700_000_000),
        Err(AuthError::BadCiphertext)
    );
}
