//! The token service on HTTPS 8443, driven over real TLS with hyper's client: the password,
//! code and refresh grants, the login form, revocation, key regeneration, restarts, and the
//! 4xx answers to bad input. Tokens it issues register on 5090.

use std::time::Duration;

use sip_oauth_registrar::auth::Authenticator;
use sip_oauth_registrar::net::ListenerKind::OAuth;
use sip_oauth_registrar::net::Transport::Tls;
use sip_oauth_registrar::oauth::AuthzKey;

use crate::harness::*;

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
const TOKEN_PATH: &str = "/ssosp/oauth/token";
const SCOPE: &str = "UnifiedCommunications:readwrite";

fn client_id(n: u8) -> String {
    format!("C{}", format!("{n:02x}").repeat(32))
}

fn encode(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap()
}

/// `GET /ssosp/oauth/authorize?<query>` on node `node`'s 8443.
async fn authorize_get(s: &TestServer, node: u16, query: &str) -> HttpAnswer {
    https(
        s.web(node),
        s.lab_ca().cert_pem(),
        http_request("GET", &format!("/ssosp/oauth/authorize?{query}"), &[], ""),
    )
    .await
}

async fn post_token(s: &TestServer, pairs: &[(&str, &str)]) -> HttpAnswer {
    s.post_form(TOKEN_PATH, pairs).await
}

async fn password_grant(s: &TestServer, user: &str, password: &str, client: &str) -> HttpAnswer {
    post_token(
        s,
        &[
            ("grant_type", "password"),
            ("username", user),
            ("password", password),
            ("client_id", client),
            ("scope", SCOPE),
        ],
    )
    .await
}

async fn refresh_grant(s: &TestServer, refresh: &str, client: &str) -> HttpAnswer {
    post_token(
        s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", client),
        ],
    )
    .await
}

/// Registers CSFrado on 5090 with `token`; returns the final status (407 when refused).
async fn register_rado(s: &TestServer, token: &str) -> u16 {
    let mut c = Client::tls(s.addr(0, OAuth, Tls), s.lab_ca().cert_pem(), None).await;
    let first = Register::jabber("CSFrado", "1010");
    assert_eq!(c.register(&first).await.status, 407);
    c.register(&first.next().bearer(token)).await.status
}

fn assert_no_store(a: &HttpAnswer) {
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert_eq!(a.header("pragma"), Some("no-cache"));
    assert!(
        a.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn password_grant_tokens_register_and_refresh() {
    let s = TestServer::lab().await;
    let client = client_id(1);
    let a = password_grant(&s, "rado", "lab", &client).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_store(&a);
    let body = a.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], SCOPE);
    let access = body["access_token"].as_str().unwrap().to_owned();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(access.split('.').count(), 3);
    assert_eq!(register_rado(&s, &access).await, 200);

    // The store holds the refresh token, bound to the user and client.
    let records = s.server().token_service().store().list();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].user, "rado");
    assert_eq!(records[0].client_id, client);

    let a = refresh_grant(&s, &refresh, &client).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_store(&a);
    let fresh = a.json()["access_token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, access);
    assert!(
        a.json().get("refresh_token").is_none(),
        "the refresh token is not rotated"
    );
    assert_eq!(register_rado(&s, &fresh).await, 200);

    // Another client cannot use it; an access token is not a refresh token.
    let a = refresh_grant(&s, &refresh, &client_id(2)).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"], "invalid_grant");
    let a = refresh_grant(&s, &access, &client).await;
    assert_eq!(a.json()["error"], "invalid_grant");
    assert!(
        a.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("wrong_type")
    );
}

#[tokio::test]
async fn bad_credentials_and_inactive_users_are_refused() {
    let s = TestServer::lab().await;
    for (user, password, text) in [
        ("rado", "wrong", "invalid username or password"),
        ("nobody", "lab", "invalid username or password"),
        ("mallory", "lab", "the user is not active"),
    ] {
        let a = password_grant(&s, user, password, &client_id(1)).await;
        assert_eq!(a.status, 400, "{user}");
        assert_no_store(&a);
        assert_eq!(a.json()["error"], "invalid_grant");
        assert_eq!(a.json()["error_description"], text);
    }
    // Someone else's token does not register rado's device.
    let a = password_grant(&s, "alice", "lab", &client_id(1)).await;
    let alice = a.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(register_rado(&s, &alice).await, 403);
}

#[tokio::test]
async fn code_flow_through_the_login_form_with_pkce() {
    let s = TestServer::lab().await;
    let ca = s.lab_ca().cert_pem().to_owned();
    let client = client_id(3);
    let redirect = "https://client.example/cb";
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"; // RFC 7636 appendix B
    let query = encode(&[
        ("response_type", "code"),
        ("client_id", &client),
        ("scope", SCOPE),
        ("redirect_uri", redirect),
        ("state", "xyz<&>"),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]);
    let a = authorize_get(&s, 0, &query).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let page = a.text();
    assert!(page.contains("<form method=\"post\" action=\"/ssosp/oauth/authorize\">"));
    assert!(
        page.contains("name=\"state\" value=\"xyz&lt;&amp;&gt;\""),
        "escaped: {page}"
    );
    assert!(page.contains("name=\"password\" type=\"password\""));
    assert_eq!(a.header("x-frame-options"), Some("DENY"));
    assert_eq!(
        a.header("content-security-policy"),
        Some("frame-ancestors 'none'")
    );

    // What the browser posts: the hidden fields plus the credentials.
    let form = |password: &str| {
        encode(&[
            ("response_type", "code"),
            ("client_id", &client),
            ("scope", SCOPE),
            ("redirect_uri", redirect),
            ("state", "xyz<&>"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("username", "rado"),
            ("password", password),
        ])
    };
    let a = https(
        s.web(0),
        &ca,
        http_request("POST", "/ssosp/oauth/authorize", &[FORM], form("nope")),
    )
    .await;
    assert_eq!(a.status, 401);
    assert!(a.text().contains("invalid username or password"));
    assert!(a.header("location").is_none());

    let a = https(
        s.web(0),
        &ca,
        http_request("POST", "/ssosp/oauth/authorize", &[FORM], form("lab")),
    )
    .await;
    assert_eq!(a.status, 302, "{}", a.text());
    let location = a.header("location").unwrap().to_owned();
    let query = location
        .strip_prefix("https://client.example/cb?")
        .expect(&location);
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("state").as_deref(), Some("xyz<&>"));
    let code = get("code").unwrap();

    let exchange = |verifier: &str| {
        vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code.clone()),
            ("client_id".to_owned(), client.clone()),
            ("redirect_uri".to_owned(), redirect.to_owned()),
            ("code_verifier".to_owned(), verifier.to_owned()),
        ]
    };
    let pairs = exchange(verifier);
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let a = post_token(&s, &pairs).await;
    assert_eq!(a.status, 200, "{}", a.text());
    let access = a.json()["access_token"].as_str().unwrap().to_owned();
    assert!(a.json()["refresh_token"].is_string());
    assert_eq!(register_rado(&s, &access).await, 200);
    // A code is single-use.
    let a = post_token(&s, &pairs).await;
    assert_eq!(a.json()["error"], "invalid_grant");
}

#[tokio::test]
async fn a_wrong_pkce_verifier_burns_the_code() {
    let s = TestServer::lab().await;
    let ca = s.lab_ca().cert_pem().to_owned();
    let client = client_id(4);
    let redirect = "http://127.0.0.1:9/cb?app=1";
    let body = encode(&[
        ("response_type", "code"),
        ("client_id", &client),
        ("redirect_uri", redirect),
        ("code_challenge", "secret-plain-challenge"),
        ("username", "alice"),
        ("password", "lab"),
    ]);
    let a = https(
        s.web(0),
        &ca,
        http_request("POST", "/ssosp/oauth/authorize", &[FORM], body),
    )
    .await;
    assert_eq!(a.status, 302);
    let location = a.header("location").unwrap();
    assert!(
        location.starts_with("http://127.0.0.1:9/cb?app=1&code="),
        "{location}"
    );
    let code = location.rsplit("code=").next().unwrap().to_owned();
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", client.as_str()),
        ("redirect_uri", redirect),
    ];
    let mut wrong = base.to_vec();
    wrong.push(("code_verifier", "other"));
    assert_eq!(
        post_token(&s, &wrong).await.json()["error"],
        "invalid_grant"
    );
    let mut right = base.to_vec();
    right.push(("code_verifier", "secret-plain-challenge"));
    assert_eq!(
        post_token(&s, &right).await.json()["error"],
        "invalid_grant",
        "the first (wrong) exchange consumed the code"
    );
}

#[tokio::test]
async fn implicit_grant_puts_the_token_in_the_fragment() {
    let s = TestServer::lab().await;
    let body = encode(&[
        ("response_type", "token"),
        ("client_id", &client_id(5)),
        ("redirect_uri", "jabber://oauth"),
        ("state", "s1"),
        ("scope", SCOPE),
        ("username", "rado"),
        ("password", "lab"),
    ]);
    let a = https(
        s.web(1),
        s.lab_ca().cert_pem(),
        http_request("POST", "/ssosp/oauth/authorize", &[FORM], body),
    )
    .await;
    assert_eq!(a.status, 302);
    let location = a.header("location").unwrap();
    let fragment = location.strip_prefix("jabber://oauth#").expect(location);
    let params: Vec<(String, String)> = serde_urlencoded::from_str(fragment).unwrap();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("token_type").as_deref(), Some("Bearer"));
    assert_eq!(get("expires_in").as_deref(), Some("3600"));
    assert_eq!(get("state").as_deref(), Some("s1"));
    assert!(get("refresh_token").is_none());
    assert_eq!(register_rado(&s, &get("access_token").unwrap()).await, 200);
}

#[tokio::test]
async fn without_the_refresh_login_flow_only_the_implicit_grant_is_served() {
    let s = TestServer::start(&lab_with(&[(
        "oauth_refresh_login_flow = true",
        "oauth_refresh_login_flow = false",
    )]))
    .await;
    let query = encode(&[
        ("response_type", "code"),
        ("client_id", &client_id(6)),
        ("redirect_uri", "http://127.0.0.1:8080/cb"),
        ("state", "q"),
    ]);
    let a = authorize_get(&s, 0, &query).await;
    assert_eq!(a.status, 302);
    let location = a.header("location").unwrap();
    assert!(
        location.starts_with("http://127.0.0.1:8080/cb?error=unsupported_response_type&"),
        "{location}"
    );
    assert!(location.ends_with("&state=q"));
    let a = password_grant(&s, "rado", "lab", &client_id(6)).await;
    assert_eq!(a.status, 200);
    assert!(a.json().get("refresh_token").is_none());
}

#[tokio::test]
async fn bad_requests_get_clear_4xx() {
    let s = TestServer::start(&lab_with(&[(
        "max_message_bytes = 65536",
        "max_message_bytes = 4096",
    )]))
    .await;
    let ca = s.lab_ca().cert_pem().to_owned();
    let c = client_id(7);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "no grant_type",
            vec![("client_id", &c)],
            400,
            "invalid_request",
        ),
        (
            "unknown grant",
            vec![("grant_type", "client_credentials"), ("client_id", &c)],
            400,
            "unsupported_grant_type",
        ),
        (
            "duplicate",
            vec![
                ("grant_type", "password"),
                ("grant_type", "password"),
                ("client_id", &c),
            ],
            400,
            "invalid_request",
        ),
        (
            "bad client",
            vec![("grant_type", "password"), ("client_id", "jabber")],
            401,
            "invalid_client",
        ),
        (
            "no client",
            vec![("grant_type", "password")],
            400,
            "invalid_request",
        ),
        (
            "bad scope",
            vec![
                ("grant_type", "password"),
                ("client_id", &c),
                ("scope", "openid"),
                ("username", "rado"),
                ("password", "lab"),
            ],
            400,
            "invalid_scope",
        ),
        (
            "no password",
            vec![
                ("grant_type", "password"),
                ("client_id", &c),
                ("username", "rado"),
            ],
            400,
            "invalid_request",
        ),
    ];
    for (what, pairs, status, error) in cases {
        let a = post_token(&s, &pairs).await;
        assert_eq!(a.status, status, "{what}: {}", a.text());
        assert_eq!(a.json()["error"], error, "{what}");
        assert_no_store(&a);
    }
    // Not a form; wrong method; too big; malformed percent-encoding.
    let a = https(
        s.web(0),
        &ca,
        http_request(
            "POST",
            TOKEN_PATH,
            &[("content-type", "application/json")],
            "{}",
        ),
    )
    .await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let a = https(s.web(0), &ca, http_request("GET", TOKEN_PATH, &[], "")).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("POST"));
    let a = https(
        s.web(0),
        &ca,
        http_request(
            "POST",
            TOKEN_PATH,
            &[FORM],
            "a=".to_owned() + &"x".repeat(8192),
        ),
    )
    .await;
    assert_eq!(a.status, 413);
    let a = https(
        s.web(0),
        &ca,
        http_request("POST", TOKEN_PATH, &[FORM], "grant_type=%ZZ"),
    )
    .await;
    assert_eq!(a.status, 400);

    // Authorization requests that cannot be redirected get a page, never a Location.
    for query in [
        encode(&[("response_type", "code"), ("redirect_uri", "https://c/cb")]),
        encode(&[
            ("response_type", "code"),
            ("client_id", &c),
            ("redirect_uri", "/relative"),
        ]),
        encode(&[
            ("response_type", "code"),
            ("client_id", &c),
            ("redirect_uri", "https://c/cb#f"),
        ]),
        encode(&[
            ("client_id", &c),
            ("client_id", &c),
            ("redirect_uri", "https://c/cb"),
        ]),
        // Another web site: never sent a token, a code or an error (no open redirect).
        encode(&[
            ("response_type", "token"),
            ("client_id", &c),
            ("redirect_uri", "https://evil.example/steal"),
        ]),
        encode(&[
            ("response_type", "id_token"),
            ("client_id", &c),
            ("redirect_uri", "https://evil.example/steal"),
        ]),
    ] {
        let a = authorize_get(&s, 0, &query).await;
        assert_eq!(a.status, 400, "{query}");
        assert!(a.header("location").is_none());
        assert!(a.text().contains("Bad authorization request"));
    }
    // A bad response_type with a good redirect_uri goes back to the client (RFC 6749 §4.1.2.1).
    let query = encode(&[
        ("response_type", "id_token"),
        ("client_id", &c),
        ("redirect_uri", "https://client.example/cb"),
    ]);
    let a = authorize_get(&s, 0, &query).await;
    assert_eq!(a.status, 302);
    assert!(
        a.header("location")
            .unwrap()
            .starts_with("https://client.example/cb?error=unsupported_response_type")
    );
    // The daemon is still there.
    assert_eq!(password_grant(&s, "rado", "lab", &c).await.status, 200);
}

/// Waits for the next whole second: revocation compares whole-second issue times.
async fn next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(
        1000 - u64::from(now.subsec_millis()) + 20,
    ))
    .await;
}

#[tokio::test]
async fn revocation_needs_an_application_user_and_ends_every_token_of_the_user() {
    let s = TestServer::lab().await;
    let ca = s.lab_ca().cert_pem().to_owned();
    let client = client_id(8);
    let grant = password_grant(&s, "rado", "lab", &client).await.json();
    let access = grant["access_token"].as_str().unwrap().to_owned();
    let refresh = grant["refresh_token"].as_str().unwrap().to_owned();
    let other = password_grant(&s, "alice", "lab", &client).await.json();
    assert_eq!(register_rado(&s, &access).await, 200);

    let revoke = |auth: Option<&'static str>, query: &str| {
        let mut headers = Vec::new();
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        http_request("GET", &format!("/ssosp/token/revoke?{query}"), &headers, "")
    };
    // admin:lab, admin:bad, rado:lab (an end user, not an application user)
    for auth in [None, Some("Basic YWRtaW46YmFk"), Some("Basic cmFkbzpsYWI=")] {
        let a = https(s.web(0), &ca, revoke(auth, "user_id=rado")).await;
        assert_eq!(a.status, 401, "{auth:?}");
        assert_eq!(a.header("www-authenticate"), Some("Basic realm=\"ssosp\""));
    }
    let a = https(
        s.web(0),
        &ca,
        revoke(Some("Basic YWRtaW46bGFi"), "user_id=nobody"),
    )
    .await;
    assert_eq!(a.status, 404);
    let a = https(
        s.web(0),
        &ca,
        revoke(Some("Basic YWRtaW46bGFi"), "user_id=rado"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["user_id"], "rado");
    assert_eq!(a.json()["refresh_tokens_revoked"], 1);

    // The refresh token is dead, and the access token is re-challenged even though cached.
    let a = refresh_grant(&s, &refresh, &client).await;
    assert_eq!(a.json()["error"], "invalid_grant");
    assert!(
        a.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    assert_eq!(register_rado(&s, &access).await, 407);
    // Alice is untouched.
    let alice_refresh = other["refresh_token"].as_str().unwrap();
    let a = refresh_grant(&s, alice_refresh, &client).await;
    assert_eq!(a.status, 200);
    // A new login after the revocation works.
    next_second().await;
    let fresh = password_grant(&s, "rado", "lab", &client).await.json();
    assert_eq!(
        register_rado(&s, fresh["access_token"].as_str().unwrap()).await,
        200
    );
}

#[tokio::test]
async fn keys_refresh_tokens_and_revocations_survive_a_restart() {
    let mut s = TestServer::lab().await;
    let client = client_id(9);
    let kept = password_grant(&s, "rado", "lab", &client).await.json();
    let doomed = password_grant(&s, "alice", "lab", &client).await.json();
    let signing = s.server().token_service().key_hash(AuthzKey::Signing);
    let encryption = s.server().token_service().key_hash(AuthzKey::Encryption);
    let a = https(
        s.web(0),
        s.lab_ca().cert_pem(),
        http_request(
            "POST",
            "/ssosp/token/revoke?user_id=alice",
            &[("authorization", "Basic YWRtaW46bGFi")],
            "",
        ),
    )
    .await;
    assert_eq!(a.status, 200);

    s.restart().await;
    let service = s.server().token_service();
    assert_eq!(service.key_hash(AuthzKey::Signing), signing);
    assert_eq!(service.key_hash(AuthzKey::Encryption), encryption);
    assert_eq!(
        register_rado(&s, kept["access_token"].as_str().unwrap()).await,
        200
    );
    for (grant, status) in [(&kept, 200), (&doomed, 400)] {
        let t = grant["refresh_token"].as_str().unwrap();
        let a = refresh_grant(&s, t, &client).await;
        assert_eq!(a.status, status, "{}", a.text());
    }
    // Alice's access token from before the revocation stays refused after the restart.
    let alice_access = doomed["access_token"].as_str().unwrap();
    let id = s
        .server()
        .tokens()
        .authenticate(alice_access, unix_now())
        .map(|_| ())
        .map_err(|e| e.reason());
    assert_eq!(id, Err("revoked"));
}

#[tokio::test]
async fn key_regeneration_ends_every_outstanding_token_at_once() {
    for key in [AuthzKey::Signing, AuthzKey::Encryption] {
        let mut s = TestServer::lab().await;
        let client = client_id(10);
        let grant = password_grant(&s, "rado", "lab", &client).await.json();
        let access = grant["access_token"].as_str().unwrap().to_owned();
        assert_eq!(
            register_rado(&s, &access).await,
            200,
            "cached before the regeneration"
        );
        let before = s.server().token_service().key_hash(key);
        // Through the daemon's admin socket, as `cli -c` sends it.
        let word = key.title().to_ascii_lowercase();
        let out = sip_oauth_registrar::admin::run_command(
            s.state.path(),
            &format!("set key regen authz {word}"),
        )
        .await
        .unwrap();
        let after = s.server().token_service().key_hash(key);
        assert_ne!(before, after, "{key:?}");
        assert!(
            out.ends_with(&format!("{} key hash: {after}\n", key.title())),
            "{out}"
        );
        let shown = sip_oauth_registrar::admin::run_command(
            s.state.path(),
            &format!("show key authz {word}"),
        )
        .await
        .unwrap();
        assert_eq!(shown, format!("{} key hash: {after}\n", key.title()));
        assert_eq!(
            register_rado(&s, &access).await,
            407,
            "{key:?}: access token dead"
        );
        let a = refresh_grant(&s, grant["refresh_token"].as_str().unwrap(), &client).await;
        assert_eq!(
            a.json()["error"],
            "invalid_grant",
            "{key:?}: refresh token dead"
        );
        next_second().await;
        let fresh = password_grant(&s, "rado", "lab", &client).await.json();
        let fresh = fresh["access_token"].as_str().unwrap().to_owned();
        assert_eq!(
            register_rado(&s, &fresh).await,
            200,
            "{key:?}: new tokens work"
        );
        // The new key is the one on disk: a restart keeps it and its tokens.
        s.restart().await;
        assert_eq!(s.server().token_service().key_hash(key), after);
        assert_eq!(
            register_rado(&s, &fresh).await,
            200,
            "{key:?}: after restart"
        );
    }
}

/// Signs rado in through the login form (code flow); returns the code.
async fn login_for_code(
    s: &TestServer,
    client: &str,
    redirect: &str,
    challenge: Option<&str>,
) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", redirect),
        ("username", "rado"),
        ("password", "lab"),
    ];
    if let Some(c) = challenge {
        pairs.push(("code_challenge", c));
        pairs.push(("code_challenge_method", "S256"));
    }
    let a = https(
        s.web(0),
        s.lab_ca().cert_pem(),
        http_request("POST", "/ssosp/oauth/authorize", &[FORM], encode(&pairs)),
    )
    .await;
    assert_eq!(a.status, 302, "{}", a.text());
    let location = a.header("location").unwrap();
    location.rsplit("code=").next().unwrap().to_owned()
}

#[tokio::test]
async fn a_code_is_bound_to_its_client_redirect_and_challenge() {
    let s = TestServer::lab().await;
    let client = client_id(11);
    let redirect = "http://127.0.0.1:8080/cb";
    let exchange =
        |code: String, client: String, redirect: &'static str, verifier: Option<&'static str>| {
            let s = &s;
            async move {
                let mut pairs = vec![
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("client_id", client.as_str()),
                    ("redirect_uri", redirect),
                ];
                if let Some(v) = verifier {
                    pairs.push(("code_verifier", v));
                }
                post_token(s, &pairs).await.json()
            }
        };
    let cases = [
        ("another client", client_id(12), redirect, None, None),
        (
            "another redirect_uri",
            client.clone(),
            "http://127.0.0.1:8081/cb",
            None,
            None,
        ),
        (
            "no code_verifier for a challenge",
            client.clone(),
            redirect,
            Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            None,
        ),
    ];
    for (what, who, to, challenge, verifier) in cases {
        let code = login_for_code(&s, &client, redirect, challenge).await;
        let answer = exchange(code, who, to, verifier).await;
        assert_eq!(answer["error"], "invalid_grant", "{what}: {answer}");
    }
    // The right exchange works; a made-up code does not.
    let code = login_for_code(&s, &client, redirect, None).await;
    let answer = exchange(code, client.clone(), redirect, None).await;
    assert!(answer["access_token"].is_string(), "{answer}");
    let answer = exchange("0".repeat(64), client.clone(), redirect, None).await;
    assert_eq!(answer["error"], "invalid_grant");
}

#[tokio::test]
async fn a_failed_key_regeneration_keeps_the_old_key_in_force_and_on_disk() {
    let s = TestServer::lab().await;
    let client = client_id(13);
    let grant = password_grant(&s, "rado", "lab", &client).await.json();
    let access = grant["access_token"].as_str().unwrap().to_owned();
    let service = s.server().token_service();
    let before = service.key_hash(AuthzKey::Signing);
    let on_disk = std::fs::read(s.state.path().join("keys/authz-signing.pem")).unwrap();
    // Make the key directory unwritable the way root cannot bypass: a file where it was.
    let keys = s.state.path().join("keys");
    let moved = s.state.path().join("keys.moved");
    std::fs::rename(&keys, &moved).unwrap();
    std::fs::write(&keys, b"not a directory").unwrap();
    let error =
        sip_oauth_registrar::admin::run_command(s.state.path(), "set key regen authz signing")
            .await
            .unwrap_err()
            .to_string();
    assert!(error.contains("cannot write"), "{error}");
    std::fs::remove_file(&keys).unwrap();
    std::fs::rename(&moved, &keys).unwrap();
    assert_eq!(
        service.key_hash(AuthzKey::Signing),
        before,
        "old key still in force"
    );
    assert_eq!(
        std::fs::read(keys.join("authz-signing.pem")).unwrap(),
        on_disk,
        "old key still on disk"
    );
    // Outstanding access tokens still register; refresh tokens were revoked before the
    // regeneration was attempted (the safe side of a half-done regeneration).
    assert_eq!(register_rado(&s, &access).await, 200);
}
