//! Everything the daemon parses off its HTTP and TFTP listeners, on hostile bytes. The first
//! byte chooses the parser (its value modulo 10; its top bit is a flag where one is needed), the
//! rest is the input; where a parser takes two inputs, a NUL byte separates them.
//!
//! | mode | parser |
//! |---|---|
//! | 0 | `tftp::packet::parse` (RRQ/WRQ with RFC 2347 options, DATA, ACK, ERROR) |
//! | 1 | OAuth parameters (query or form body), the authorization request check, then `\0` and an `Authorization` value for HTTP Basic |
//! | 2 | `is_redirect_uri` and `is_allowed_redirect` |
//! | 3 | `Provisioning::lookup` of a config file name (flag: over HTTPS) |
//! | 4 | UDS `clusterUser` query, then `\0` and a user id of a path |
//! | 5 | the cluster's `TokenAuthority`: `authenticate` and `verify_refresh` on the text |
//! | 6 | a valid access token with bytes spliced in (two bytes of offset, then the bytes) |
//! | 7 | a valid refresh token, spliced the same way, to `verify_refresh` |
//! | 8 | a JWK set, as a `jwks_url` answers it |
//! | 9 | an outside issuer's JWT (ES256): input that is a JSON object becomes the claims of a token signed with the issuer's key (flag: with a `kid`), so the claim checks run; other input is the token text |
//!
//! Tokens go through `Authenticators` (the cluster's, then the outside issuer), as on 8443/6971.
//! No panic, and nothing made up is accepted.

#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use sip_oauth_registrar::auth::external::{ExternalIssuers, IssuerConfig, KeySource, fuzz_jwks};
use sip_oauth_registrar::auth::{
    AuthOptions, Authenticator, Authenticators, TokenAuthority, generate_encryption_key, unix_now,
};
use sip_oauth_registrar::cluster::Cluster;
use sip_oauth_registrar::config::Settings;
use sip_oauth_registrar::oauth::service::{is_allowed_redirect, is_redirect_uri};
use sip_oauth_registrar::oauth::store::TokenStore;
use sip_oauth_registrar::oauth::{KeyFiles, TokenService, http};
use sip_oauth_registrar::pki::generate_rsa_signing_key_pem;
use sip_oauth_registrar::provisioning::Provisioning;
use sip_oauth_registrar::{tftp, uds};

const CLIENT_ID: &str = "C3b0affefe1439041683e9c2c37d36f438ef0ef27c0938adc6226e0c03d169f2a";
const ISSUER: &str = "https://idp.example.com/realms/lab";

struct Fixture {
    cluster: Arc<Cluster>,
    tokens: Arc<TokenAuthority>,
    auth: Authenticators,
    service: TokenService,
    provisioning: Provisioning,
    access: String,
    refresh: String,
    /// Signs outside tokens with the outside issuer's key.
    idp_key: jsonwebtoken::EncodingKey,
    redirect_uris: Vec<String>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let settings = Settings::lab().expect("lab config");
    let cluster = Arc::new(settings.cluster);
    let pem = generate_rsa_signing_key_pem().expect("RSA key generation");
    let tokens = Arc::new(
        TokenAuthority::new(
            &cluster.params.uuid,
            &pem,
            &generate_encryption_key(),
            AuthOptions {
                leeway_secs: settings.tokens.leeway_secs,
                cache_capacity: 1024,
            },
        )
        .expect("token authority"),
    );
    let now = unix_now();
    let access = tokens
        .issue("rado", CLIENT_ID, 24 * 3600, now)
        .expect("issue")
        .token;
    let refresh = tokens
        .issue_refresh(CLIENT_ID, 24 * 3600, now)
        .expect("issue")
        .token;

    // One outside issuer trusting a P-256 key, from a PEM file as the configuration names it.
    let idp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let dir = std::env::temp_dir().join(format!("sip-oauth-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("idp.pem"), idp.public_key_pem()).expect("write idp.pem");
    let config = IssuerConfig {
        issuer: ISSUER.into(),
        audience: vec!["sip-registrar".into()],
        user_claim: "sub".into(),
        algorithms: vec!["ES256".into()],
        keys: KeySource::PemFiles(vec![PathBuf::from("idp.pem")]),
        ca_file: None,
        leeway_secs: 60,
        fetch_timeout_secs: 5,
        refresh_interval_secs: 900,
        min_refetch_interval_secs: 30,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let outside = runtime
        .block_on(ExternalIssuers::load(vec![config], &dir))
        .expect("outside issuer");
    let _ = std::fs::remove_dir_all(&dir);
    let idp_key =
        jsonwebtoken::EncodingKey::from_ec_pem(idp.serialize_pem().as_bytes()).expect("EC key");

    let service = TokenService::new(
        cluster.clone(),
        tokens.clone(),
        TokenStore::in_memory(),
        KeyFiles {
            signing: PathBuf::new(),
            encryption: PathBuf::new(),
        },
    )
    .with_redirect_uris(vec!["https://app.example.com/cb".into()]);
    Fixture {
        provisioning: Provisioning::new(cluster.clone(), tokens.clone()),
        auth: Authenticators {
            cluster: tokens.clone(),
            outside: Some(outside),
        },
        cluster,
        tokens,
        service,
        access,
        refresh,
        idp_key,
        redirect_uris: vec!["https://app.example.com/cb".into()],
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let f = &*FIXTURE;
    let flag = mode & 0x80 != 0;
    let text = || String::from_utf8_lossy(input);
    let now = unix_now();
    match mode % 10 {
        0 => {
            let _ = tftp::packet::parse(input);
        }
        1 => {
            let (params, authorization) = split(input);
            http::fuzz_inputs(params, authorization, &f.service);
        }
        2 => {
            let uri = text();
            if is_allowed_redirect(&uri, &f.redirect_uris) {
                assert!(is_redirect_uri(&uri));
            }
        }
        3 => {
            let _ = f.provisioning.lookup(&text(), flag);
        }
        4 => {
            let (query, id) = split(input);
            let (query, id) = (String::from_utf8_lossy(query), String::from_utf8_lossy(id));
            uds::fuzz_inputs(&f.cluster, &query, &id);
        }
        5 => {
            let token = text();
            let _ = f.auth.authenticate(&token, now);
            let _ = f.tokens.verify_refresh(&token, now);
        }
        6 => {
            let token = splice(&f.access, input);
            if let Ok(identity) = f.auth.authenticate(&token, now) {
                // The cache is keyed by the signature segment (auth/cache.rs, by design): a
                // token that keeps a verified token's signature gets that token's identity.
                // Anything else changed must be refused.
                assert_eq!(
                    signature(&token),
                    signature(&f.access),
                    "a forged token was accepted"
                );
                assert_eq!(&*identity.user, "rado");
            }
        }
        7 => {
            let token = splice(&f.refresh, input);
            if f.tokens.verify_refresh(&token, now).is_ok() {
                assert_eq!(token, f.refresh, "a changed refresh token was accepted");
            }
        }
        8 => {
            let _ = fuzz_jwks(input);
        }
        _ => {
            let token = match serde_json_object(input) {
                Some(claims) => {
                    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                    header.kid = flag.then(|| "idp-1".to_owned());
                    match jsonwebtoken::encode(&header, &claims, &f.idp_key) {
                        Ok(token) => token,
                        Err(_) => return,
                    }
                }
                None => text().into_owned(),
            };
            let _ = f.auth.authenticate(&token, now);
        }
    }
});

/// The two parts of `input` around its first NUL (the second empty without one).
fn split(input: &[u8]) -> (&[u8], &[u8]) {
    match input.iter().position(|&b| b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[]),
    }
}

/// `token` with `input[2..]` written over it at the offset `input[..2]` names (modulo its
/// length), as text: the fuzzer's bytes, lossily, so the result may be longer.
fn splice(token: &str, input: &[u8]) -> String {
    let [a, b, bytes @ ..] = input else {
        return token.to_owned();
    };
    let mut out = token.as_bytes().to_vec();
    let at = usize::from(u16::from_le_bytes([*a, *b])) % (out.len() + 1);
    let end = (at + bytes.len()).min(out.len());
    out.splice(at..end, bytes.iter().copied());
    String::from_utf8_lossy(&out).into_owned()
}

/// The text after a token's last `.`.
fn signature(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

fn serde_json_object(input: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    serde_json::from_slice(input).ok()
}
