//! The token service's HTTP face on 8443 (axum): UCM's paths, RFC 6749 shapes.
//!
//! | path | methods | what |
//! |---|---|---|
//! | `/ssosp/oauth/authorize` | GET, POST | login form; implicit grant (`response_type=token`: the token in the redirect fragment) and, with the refresh login flow, the code grant (`response_type=code`, optional PKCE) |
//! | `/ssosp/oauth/token` | POST | `password`, `authorization_code` and `refresh_token` grants; JSON answers and errors, `Cache-Control: no-store` |
//! | `/ssosp/token/revoke` | GET, POST, DELETE | `?user_id=<u>[&client_id=<c>]`, HTTP Basic of an application user |
//!
//! Parameters are read once each: a repeated parameter is an `invalid_request` (RFC 6749 §3.1),
//! an empty one counts as absent. An authorization request whose `client_id` or `redirect_uri`
//! is bad is answered with a `400` page, never redirected (§4.1.2.1).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Serialize;

use super::service::{
    Authorization, Challenge, Grant, OAuthError, SCOPE, TokenService, is_client_id,
};

/// Longest `redirect_uri`, `state` or PKCE value accepted.
const MAX_PARAM_LEN: usize = 2048;

/// The routes of the token service.
pub fn router(service: Arc<TokenService>) -> Router {
    Router::new()
        .route(
            "/ssosp/oauth/authorize",
            get(authorize_form).post(authorize_login),
        )
        .route("/ssosp/oauth/token", post(token))
        .route(
            "/ssosp/token/revoke",
            get(revoke).post(revoke).delete(revoke),
        )
        .with_state(service)
}

/// Request parameters, as sent (query string or form body).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(bytes: &[u8]) -> Result<Self, OAuthError> {
        serde_urlencoded::from_bytes(bytes)
            .map(Self)
            .map_err(|_| OAuthError::invalid_request("malformed parameters"))
    }

    /// The parameter's value; `None` when absent or empty.
    fn one(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        let mut found = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = found.next();
        if found.next().is_some() {
            return Err(OAuthError::invalid_request(format!(
                "duplicate parameter {name}"
            )));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.one(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }

    fn bounded(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        match self.one(name)? {
            Some(v) if v.len() > MAX_PARAM_LEN => Err(OAuthError::invalid_request(format!(
                "parameter {name} is longer than {MAX_PARAM_LEN} bytes"
            ))),
            v => Ok(v),
        }
    }
}

// ---- token endpoint -------------------------------------------------------------------------

#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    scope: &'static str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

async fn token(
    State(service): State<Arc<TokenService>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token_grant(service, &headers, &body).await {
        Ok(grant) => token_answer(&grant),
        Err(e) => error_answer(&e),
    }
}

async fn token_grant(
    service: Arc<TokenService>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Grant, OAuthError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let p = Params::parse(body)?;
    let grant_type = p.required("grant_type")?;
    let client_id = client_id(&p)?;
    if let Some(scope) = p.bounded("scope")?
        && !scope.split(' ').any(|s| s == SCOPE)
    {
        return Err(OAuthError::new(
            "invalid_scope",
            format!("scope must include {SCOPE}"),
        ));
    }
    match grant_type {
        "password" => {
            let user = service
                .login(p.required("username")?, p.required("password")?)
                .await?;
            service.grant(user, client_id).await
        }
        "refresh_token" => {
            // Two RSA operations and a store lookup: off the async workers, like the rest of
            // the token service's blocking work.
            let token = p.required("refresh_token")?.to_owned();
            let client_id = client_id.to_owned();
            tokio::task::spawn_blocking(move || service.refresh(&token, &client_id))
                .await
                .map_err(|e| OAuthError::new("server_error", e.to_string()))?
        }
        "authorization_code" => {
            if !service.refresh_login_flow() {
                return Err(OAuthError::new(
                    "unsupported_grant_type",
                    "the code grant needs the OAuth with Refresh Login Flow enterprise parameter",
                ));
            }
            service
                .exchange_code(
                    p.required("code")?,
                    client_id,
                    p.required("redirect_uri")?,
                    p.bounded("code_verifier")?,
                )
                .await
        }
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported"),
        )),
    }
}

fn client_id(p: &Params) -> Result<&str, OAuthError> {
    let id = p.required("client_id")?;
    if is_client_id(id) {
        Ok(id)
    } else {
        Err(OAuthError::new(
            "invalid_client",
            "client_id must be C followed by 64 hex digits",
        ))
    }
}

fn token_answer(grant: &Grant) -> Response {
    let body = TokenBody {
        access_token: &grant.access.token,
        token_type: "Bearer",
        expires_in: grant.expires_in,
        refresh_token: grant.refresh.as_ref().map(|r| r.token.as_str()),
        scope: SCOPE,
    };
    json(StatusCode::OK, &body)
}

fn error_answer(e: &OAuthError) -> Response {
    let status = match e.code {
        "invalid_client" => StatusCode::UNAUTHORIZED,
        "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = json(
        status,
        &ErrorBody {
            error: e.code,
            error_description: &e.description,
        },
    );
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ssosp\""),
        );
    }
    response
}

/// JSON with RFC 6749 §5.1's caching headers: tokens must never be cached.
fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json;charset=UTF-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        bytes,
    )
        .into_response()
}

// ---- authorization endpoint ---------------------------------------------------------------

/// A checked authorization request.
struct AuthRequest {
    implicit: bool,
    client_id: String,
    redirect_uri: String,
    state: Option<String>,
    challenge: Option<Challenge>,
}

/// What is wrong with an authorization request: shown as a page, or sent back to the client.
enum AuthProblem {
    Page(String),
    Redirect {
        redirect_uri: String,
        implicit: bool,
        state: Option<String>,
        error: OAuthError,
    },
}

fn check_authorization(p: &Params, service: &TokenService) -> Result<AuthRequest, AuthProblem> {
    let flow = service.refresh_login_flow();
    let page = |e: OAuthError| AuthProblem::Page(e.description);
    let client_id = client_id(p).map_err(page)?.to_owned();
    let redirect_uri = p.required("redirect_uri").map_err(page)?;
    if redirect_uri.len() > MAX_PARAM_LEN || !service.redirect_allowed(redirect_uri) {
        return Err(AuthProblem::Page(
            "redirect_uri must be an absolute URI without a fragment, and either listed in \
             tokens.redirect_uris, an http URI on a loopback address, or a private-use scheme"
                .into(),
        ));
    }
    let redirect_uri = redirect_uri.to_owned();
    let response_type = p.one("response_type").map_err(page)?;
    let state = p.bounded("state").map_err(page)?.map(str::to_owned);
    let implicit = response_type == Some("token");
    let redirect = |error| AuthProblem::Redirect {
        redirect_uri: redirect_uri.clone(),
        implicit,
        state: state.clone(),
        error,
    };
    let supported = match response_type {
        Some("token") => true,
        Some("code") => flow,
        _ => false,
    };
    if !supported {
        return Err(redirect(OAuthError::new(
            "unsupported_response_type",
            if flow {
                "response_type must be token or code"
            } else {
                "response_type must be token (the refresh login flow is off)"
            },
        )));
    }
    if let Some(scope) = p.bounded("scope").map_err(page)?
        && !scope.split(' ').any(|s| s == SCOPE)
    {
        return Err(redirect(OAuthError::new(
            "invalid_scope",
            format!("scope must include {SCOPE}"),
        )));
    }
    let challenge = match (
        p.bounded("code_challenge").map_err(page)?,
        p.one("code_challenge_method").map_err(page)?,
    ) {
        (None, None) => None,
        (Some(c), None | Some("plain")) => Some(Challenge::Plain(c.to_owned())),
        (Some(c), Some("S256")) => Some(Challenge::S256(c.to_owned())),
        _ => {
            return Err(redirect(OAuthError::invalid_request(
                "code_challenge_method must be S256 or plain, with a code_challenge",
            )));
        }
    };
    Ok(AuthRequest {
        implicit,
        client_id,
        redirect_uri,
        state,
        challenge,
    })
}

async fn authorize_form(
    State(service): State<Arc<TokenService>>,
    RawQuery(query): RawQuery,
) -> Response {
    let p = match Params::parse(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return bad_page(&e.description),
    };
    match check_authorization(&p, &service) {
        Ok(_) => login_page(StatusCode::OK, &p, None),
        Err(problem) => problem_answer(problem),
    }
}

async fn authorize_login(State(service): State<Arc<TokenService>>, body: Bytes) -> Response {
    let p = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return bad_page(&e.description),
    };
    let request = match check_authorization(&p, &service) {
        Ok(r) => r,
        Err(problem) => return problem_answer(problem),
    };
    let (Ok(Some(username)), Ok(Some(password))) = (p.one("username"), p.one("password")) else {
        return login_page(
            StatusCode::BAD_REQUEST,
            &p,
            Some("Enter a user name and a password."),
        );
    };
    let user = match service.login(username, password).await {
        Ok(u) => u,
        Err(e) if e.code == "invalid_grant" => {
            return login_page(StatusCode::UNAUTHORIZED, &p, Some(&e.description));
        }
        Err(e) => return error_answer(&e),
    };
    let outcome = if request.implicit {
        service
            .implicit_grant(user, &request.client_id)
            .await
            .map(|g| {
                vec![
                    ("access_token", g.access.token),
                    ("token_type", "Bearer".to_owned()),
                    ("expires_in", g.expires_in.to_string()),
                    ("scope", SCOPE.to_owned()),
                ]
            })
    } else {
        let authorization = Authorization {
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            challenge: request.challenge.clone(),
        };
        service
            .issue_code(user, &authorization)
            .map(|code| vec![("code", code)])
    };
    let mut pairs = match outcome {
        Ok(pairs) => pairs,
        Err(error) => {
            return problem_answer(AuthProblem::Redirect {
                redirect_uri: request.redirect_uri,
                implicit: request.implicit,
                state: request.state,
                error,
            });
        }
    };
    if let Some(state) = request.state {
        pairs.push(("state", state));
    }
    redirect(&request.redirect_uri, request.implicit, &pairs)
}

fn problem_answer(problem: AuthProblem) -> Response {
    match problem {
        AuthProblem::Page(text) => bad_page(&text),
        AuthProblem::Redirect {
            redirect_uri,
            implicit,
            state,
            error,
        } => {
            let mut pairs = vec![
                ("error", error.code.to_owned()),
                ("error_description", error.description),
            ];
            if let Some(state) = state {
                pairs.push(("state", state));
            }
            redirect(&redirect_uri, implicit, &pairs)
        }
    }
}

/// `302` to the client: parameters in the fragment for the implicit grant (RFC 6749 §4.2.2),
/// in the query otherwise (§4.1.2).
fn redirect(uri: &str, fragment: bool, pairs: &[(&str, String)]) -> Response {
    let encoded = serde_urlencoded::to_string(pairs).unwrap_or_default();
    let separator = if fragment {
        '#'
    } else if uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{uri}{separator}{encoded}");
    match HeaderValue::from_str(&location) {
        Ok(value) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, value),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        Err(_) => bad_page("redirect_uri cannot be used in a Location header"),
    }
}

fn bad_page(text: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html><head><title>Bad authorization request</title></head>\
         <body><h1>Bad authorization request</h1><p>{}</p></body></html>\n",
        escape(text)
    );
    (StatusCode::BAD_REQUEST, Html(html)).into_response()
}

/// The login form; it posts the authorization request back with the credentials.
fn login_page(status: StatusCode, p: &Params, error: Option<&str>) -> Response {
    const CARRIED: [&str; 7] = [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    ];
    let mut hidden = String::new();
    for name in CARRIED {
        if let Ok(Some(value)) = p.one(name) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">\n",
                escape(value)
            ));
        }
    }
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e))
    });
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Sign in</title></head>\n\
         <body><h1>Cisco Unified Communications Manager</h1>\n{error}\
         <form method=\"post\" action=\"/ssosp/oauth/authorize\">\n{hidden}\
         <label>Username <input name=\"username\" autocomplete=\"username\"></label>\n\
         <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label>\n\
         <button type=\"submit\">Sign In</button>\n</form></body></html>\n"
    );
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            // A login form must not be framed by another site (clickjacking).
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        Html(html),
    )
        .into_response()
}

/// Text for HTML element content and double-quoted attribute values.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

// ---- revocation -----------------------------------------------------------------------------

#[derive(Serialize)]
struct RevokeBody<'a> {
    user_id: &'a str,
    client_id: Option<&'a str>,
    refresh_tokens_revoked: usize,
}

async fn revoke(
    State(service): State<Arc<TokenService>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Some((user, pass)) = basic_credentials(&headers) else {
        return unauthorized();
    };
    if service.app_login(&user, &pass).await.is_err() {
        tracing::info!(app_user = %user, "revocation refused: bad credentials");
        return unauthorized();
    }
    let result = async {
        let p = Params::parse(query.unwrap_or_default().as_bytes())?;
        let user_id = p.required("user_id")?;
        let client = match p.one("client_id")? {
            Some(c) if !is_client_id(c) => {
                return Err(OAuthError::invalid_request(
                    "client_id must be C followed by 64 hex digits",
                ));
            }
            c => c,
        };
        if service.cluster().user(user_id).is_none() {
            return Err(OAuthError::new("not_found", format!("no user {user_id:?}")));
        }
        let n = service.revoke(user_id, client).await?;
        Ok(json(
            StatusCode::OK,
            &RevokeBody {
                user_id,
                client_id: client,
                refresh_tokens_revoked: n,
            },
        ))
    }
    .await;
    match result {
        Ok(r) => r,
        Err(e) if e.code == "not_found" => {
            let mut r = error_answer(&e);
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        }
        Err(e) => error_answer(&e),
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"ssosp\"")],
        "application user credentials required\n",
    )
        .into_response()
}

/// RFC 7617 `Basic` credentials: user and password.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// Fuzzing entry point (`fuzz/fuzz_targets/http_inputs.rs`), not an API: the parameter parser
/// (query string or form body), the authorization request check and HTTP Basic credentials, on
/// arbitrary bytes. Answers are dropped; only panics matter.
#[doc(hidden)]
pub fn fuzz_inputs(params: &[u8], authorization: &[u8], service: &TokenService) {
    if let Ok(p) = Params::parse(params) {
        let _ = client_id(&p);
        for name in [
            "grant_type",
            "username",
            "password",
            "refresh_token",
            "code",
            "user_id",
        ] {
            let _ = p.required(name);
        }
        for name in ["redirect_uri", "state", "code_verifier", "scope"] {
            let _ = p.bounded(name);
        }
        let _ = check_authorization(&p, service);
    }
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value);
        let _ = basic_credentials(&headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::oauth::service::{is_allowed_redirect, is_redirect_uri};

    #[test]
    fn redirect_uris() {
        for good in [
            "https://client.example/cb",
            "http://127.0.0.1:8080/cb?x=1",
            "com.cisco.jabber:/oauth",
            "jabber://callback",
        ] {
            assert!(is_redirect_uri(good), "{good}");
        }
        for bad in [
            "",
            "/relative",
            "https://x/cb#frag",
            "https:///nohost",
            "https:",
            "1abc://x",
            "https://x/a b",
            "javascript",
        ] {
            assert!(!is_redirect_uri(bad), "{bad}");
        }
    }

    #[test]
    fn allowed_redirects() {
        let listed = vec!["https://client.example/cb".to_owned()];
        for ok in [
            "https://client.example/cb",
            "http://127.0.0.1:8080/cb?x=1",
            "http://127.5.6.7/cb",
            "http://[::1]:9/cb",
            "http://localhost:1234/",
            "com.cisco.jabber:/oauth",
            "jabber://callback",
        ] {
            assert!(is_allowed_redirect(ok, &listed), "{ok}");
        }
        for refused in [
            "https://client.example/cb2",
            "https://evil.example/",
            "http://evil.example/",
            "http://127.0.0.1.evil.example/",
            "http://user@127.0.0.1:80@evil.example/",
            "http://10.0.0.1/cb",
            "javascript:alert(1)",
            "data:text/html,x",
            "HTTPS://client.example/cb",
        ] {
            assert!(!is_allowed_redirect(refused, &listed), "{refused}");
        }
    }

    #[test]
    fn duplicate_and_empty_parameters() {
        let p = Params::parse(b"a=1&a=2&b=&c=3").unwrap();
        assert_eq!(p.one("a").unwrap_err().code, "invalid_request");
        assert_eq!(p.one("b").unwrap(), None);
        assert_eq!(p.one("c").unwrap(), Some("3"));
        assert!(p.required("d").is_err());
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn basic_credentials_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWRtaW46bGFiOng="),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("admin".into(), "lab:x".into()))
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(basic_credentials(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_credentials(&h), None);
    }
}
