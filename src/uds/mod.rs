//! User Data Services (UDS) on the HTTPS (8443) listener: the resources Jabber reads before it
//! registers (docs/ucm.md §9), as Cisco's public UDS documentation shapes them.
//!
//! # Covered
//!
//! | path | auth | answer |
//! |---|---|---|
//! | `GET /cucm-uds/version` | none | `<versionInformation>` with `<version>` |
//! | `GET /cucm-uds/servers` | none | `<servers>`: one `<server>` per node, publisher first |
//! | `GET /cucm-uds/clusterUser?username=<u>` (or `email=`, `useridentifier=`) | none | `<clusterUser>`: `<result found="true" uri=…>`, `<homeCluster serversUri=…>`, `<homeClusterDetails>`; or `<result found="false"/>` |
//! | `GET /cucm-uds/user/<id>` | the user itself | `<user>` |
//! | `GET /cucm-uds/user/<id>/devices` | the user itself | `<devices>`: one `<device>` per device the user owns |
//!
//! Every document starts with an XML declaration, carries the `version` attribute and a `uri`
//! attribute, and is sent as `Content-Type: application/xml`. Any other path under
//! `/cucm-uds/` is a `404` whose plain-text body lists the table above; another method on a
//! covered path is a `405` with `Allow`.
//!
//! # Authentication
//!
//! `user/<id>` and `user/<id>/devices` take either HTTP Basic with the end user's id and
//! password (checked by [`TokenService::login`], which bounds the argon2 work; `503` with
//! `Retry-After` when its queue is full) or `Authorization: Bearer <access token>` (checked by
//! the daemon's [`Authenticator`]: the cluster's tokens and outside issuers, as on SIP). The
//! user must exist and be active. No or bad credentials: `401` with
//! `WWW-Authenticate: Basic realm="Cisco Web Services Realm"` (plus a `Bearer` challenge with
//! `error="invalid_token"` when a bearer token was refused). A user may read only itself
//! (`403`), as UDS's end-user resources allow. A user id longer than 256 bytes, with a
//! control character or with `/` (UDS does not support it, and `%2F` decodes to it) is a `400`
//! before any credential is checked.
//!
//! # Documentation followed, and what is ours
//!
//! Followed: Cisco DevNet "User Data Services" API reference (developer.cisco.com/docs/
//! user-data-services: System Resources `clusterUser`, `servers`, `version`; User Resources
//! `user`, `devices`; the Authentication page: HTTP Basic with end-user credentials, or SSO /
//! OAuth). Element names, nesting and order are those of its examples.
//!
//! Ours (guessed or not published):
//! - `version`: the documentation shows `x.y.z` (`12.5.1` for a 12.5(1) server); ours is
//!   `cluster.server_version` cut or padded to three numeric parts, a missing third being `1`
//!   (UCM releases are `x.y(1)`): `12.5` → `12.5.1`, `14` → `14.0.1`.
//! - `uri` attributes name the publisher (`https://<address>:<https port>`), whichever node
//!   answered; the Host header is never echoed.
//! - `<server>` and `<homeCluster>` are node addresses (names need DNS a lab rarely has), with
//!   `:<port>` appended only when a node's HTTPS port is not 8443.
//! - `clusterUser`: users have no mail address in the configuration, so `email=<local>@<any
//!   domain>` (and `useridentifier=`, a UPN) names the user whose id is the local part (a
//!   value without `@` is taken whole). Precedence when several are given: `username`,
//!   `email`, `useridentifier`; none is a `400`. `homeClusterDetails` answers `false` twice
//!   (no self-provisioning here). Inactive users are found (UCM's lookup does not judge them).
//! - `<id>` elements are stable UUIDs derived from the cluster UUID and the name, not UCM's
//!   pkids. `user`: personal fields the model lacks are present and empty; `displayName`,
//!   `phoneNumber` and `primaryExtension` come from the first line of the user's first device;
//!   `serviceProfile` points at `http://<publisher>:<tftp_http_port>/SPDefault.cnf.xml` as the
//!   documented example does, though that file is not served here (404), and each device's
//!   `uri` names `user/<id>/device/<pkid>`, a resource not covered (404): both are there for
//!   the documents' shape, not to be followed.
//! - `devices`: `<model>` is the product type name (as UCM's is, e.g. `Cisco 8861`);
//!   `<modelNumber>` (UCM's `typemodel` number, only where we know it: 503 for CSF…) and
//!   `<configFile><uri>…</uri></configFile>` are our additions, shaped like `user`'s
//!   `serviceProfile`. The URL is `https://<node>:<tftp_https_port>/<device>.cnf.xml` for a
//!   device with an OAuth profile while the cluster is in SIP OAuth mode, else
//!   `http://<node>:<tftp_http_port>/<device>.cnf.xml`; the node is the first of the device's
//!   group. `<protocol>` is always `SIP`, `<type>` always `Phone`, the description the name.
//! - The realm `Cisco Web Services Realm` is UCM's Tomcat realm as seen on the wire, not in the
//!   UDS documentation; error bodies are plain text (the documentation shows none).

mod xml;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::auth::{Authenticator, unix_now};
use crate::cluster::{Cluster, SharedCluster, User};
use crate::oauth::TokenService;
use crate::oauth::http::basic_credentials;
use crate::provisioning::Provisioning;

pub use xml::{config_file_url, model_number};

/// The UDS resources' shared state.
pub struct Uds {
    /// The token service's handle: a configuration reload swaps both at once.
    cluster: SharedCluster,
    tokens: Arc<TokenService>,
    authenticator: Arc<dyn Authenticator>,
    /// The config files' state: the ports their URLs name (the bound ones).
    provisioning: Arc<Provisioning>,
    site: xml::Site,
}

impl Uds {
    /// UDS over `tokens`' cluster (so the two never disagree), checking passwords with
    /// `tokens` and bearer tokens with `authenticator` (the registrar's).
    pub fn new(
        tokens: Arc<TokenService>,
        authenticator: Arc<dyn Authenticator>,
        provisioning: Arc<Provisioning>,
    ) -> Self {
        let cluster = tokens.shared_cluster();
        // The node list and version need a restart (a reload refuses or warns), so the
        // site's base address and version are fixed here.
        let site = {
            let c = cluster.load();
            xml::Site::new(&c, uds_version(&c.params.server_version))
        };
        Self {
            cluster,
            tokens,
            authenticator,
            provisioning,
            site,
        }
    }
}

/// The covered `/cucm-uds/` routes, and a `404` naming them for the rest of `/cucm-uds/`.
pub fn router(uds: Arc<Uds>) -> Router {
    Router::new()
        .route("/cucm-uds/version", get(version))
        .route("/cucm-uds/servers", get(servers))
        .route("/cucm-uds/clusterUser", get(cluster_user))
        .route("/cucm-uds/user/{id}", get(user))
        .route("/cucm-uds/user/{id}/devices", get(devices))
        .route("/cucm-uds", any(not_covered))
        .route("/cucm-uds/{*rest}", any(not_covered))
        .with_state(uds)
}

/// The `version` attribute for a configured `server_version`: three numeric parts.
pub fn uds_version(server_version: &str) -> String {
    let mut parts: Vec<String> = server_version
        .split('.')
        .take(3)
        .map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                "0".into()
            } else {
                digits
            }
        })
        .collect();
    while parts.len() < 2 {
        parts.push("0".into());
    }
    if parts.len() < 3 {
        parts.push("1".into());
    }
    parts.join(".")
}

/// Longest user id or query value accepted.
const MAX_ID_LEN: usize = 256;

/// What the supported-resources `404` says.
const COVERED: &str = "GET /cucm-uds/version\n\
    GET /cucm-uds/servers\n\
    GET /cucm-uds/clusterUser?username=<user> (or email=, useridentifier=)\n\
    GET /cucm-uds/user/<user>          (Basic or Bearer authentication of <user>)\n\
    GET /cucm-uds/user/<user>/devices  (Basic or Bearer authentication of <user>)\n";

/// Why a request is refused; [`Reject::into_response`] is the one place that shapes the answer.
#[derive(Debug)]
enum Reject {
    BadRequest(String),
    /// No usable credentials; `invalid_token` when a bearer token was refused.
    Unauthorized {
        invalid_token: bool,
    },
    Forbidden,
    /// The password checks are saturated.
    Busy,
    Internal,
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let (status, text) = match &self {
            Self::BadRequest(why) => (StatusCode::BAD_REQUEST, why.clone()),
            Self::Unauthorized { .. } => (
                StatusCode::UNAUTHORIZED,
                "end user credentials required (HTTP Basic or an OAuth bearer token)".into(),
            ),
            Self::Forbidden => (
                StatusCode::FORBIDDEN,
                "a user may read only its own UDS resources".into(),
            ),
            Self::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many logins at once; retry".into(),
            ),
            Self::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the UDS answer could not be made".into(),
            ),
        };
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{text}\n"),
        )
            .into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized { invalid_token } => {
                headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static(BASIC));
                if invalid_token {
                    headers.append(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(BEARER_INVALID),
                    );
                }
            }
            Self::Busy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

const BASIC: &str = "Basic realm=\"Cisco Web Services Realm\"";
const BEARER_INVALID: &str = "Bearer realm=\"Cisco Web Services Realm\", error=\"invalid_token\"";

async fn version(State(uds): State<Arc<Uds>>) -> Response {
    answer(xml::version(&uds.site), false)
}

async fn servers(State(uds): State<Arc<Uds>>) -> Response {
    answer(xml::servers(&uds.site, &uds.cluster.load()), false)
}

async fn cluster_user(State(uds): State<Arc<Uds>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let cluster = uds.cluster.load();
    let user = match lookup_cluster_user(&cluster, &query) {
        Ok(user) => user,
        Err(reject) => return reject.into_response(),
    };
    answer(xml::cluster_user(&uds.site, &cluster, &query, user), false)
}

async fn user(State(uds): State<Arc<Uds>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let cluster = match uds.authorize(&id, &headers).await {
        Ok(cluster) => cluster,
        Err(reject) => return reject.into_response(),
    };
    match cluster.user(&id) {
        Some(user) => answer(xml::user(&uds.site, &cluster, user), true),
        None => Reject::Forbidden.into_response(),
    }
}

async fn devices(
    State(uds): State<Arc<Uds>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let cluster = match uds.authorize(&id, &headers).await {
        Ok(cluster) => cluster,
        Err(reject) => return reject.into_response(),
    };
    match cluster.user(&id) {
        Some(user) => answer(
            xml::devices(
                &uds.site,
                &cluster,
                &uds.provisioning.ports(),
                uds.provisioning.oauth_mode(),
                user,
            ),
            true,
        ),
        None => Reject::Forbidden.into_response(),
    }
}

async fn not_covered(uri: axum::http::Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!(
            "UDS resource {} is not emulated here. Supported:\n{COVERED}",
            uri.path()
        ),
    )
        .into_response()
}

impl Uds {
    /// The cluster model in force, once the request's credentials prove to be those of the
    /// user `id` names, who is in it.
    async fn authorize(&self, id: &str, headers: &HeaderMap) -> Result<Arc<Cluster>, Reject> {
        check_id(id)?;
        let who = self.authenticate(headers).await?;
        if *who != *id {
            tracing::info!(user = %who, requested = id, "UDS refused: another user's data");
            return Err(Reject::Forbidden);
        }
        // Checked by both credential paths; the model is loaded after them, so a reload in
        // between that removed the user refuses here.
        let cluster = self.cluster.load_full();
        match cluster.user(id) {
            Some(_) => Ok(cluster),
            None => Err(Reject::Forbidden),
        }
    }

    /// The active end user the `Authorization` header proves.
    async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<str>, Reject> {
        let missing = Reject::Unauthorized {
            invalid_token: false,
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(missing);
        };
        let value = value.to_str().map_err(|_| {
            Reject::BadRequest("the Authorization header is not visible ASCII".into())
        })?;
        let value = value.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            let Some((user, password)) = basic_credentials(headers) else {
                return Err(missing);
            };
            return match self.tokens.login(&user, &password).await {
                Ok(user) => Ok(user),
                Err(e) if e.code == "invalid_grant" => Err(missing),
                Err(e) if e.code == "temporarily_unavailable" => Err(Reject::Busy),
                Err(e) => {
                    tracing::error!(error = %e, "UDS password check failed");
                    Err(Reject::Internal)
                }
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(missing);
        }
        let refused = Reject::Unauthorized {
            invalid_token: true,
        };
        // RFC 6750's `Bearer <token>` and Cisco's `Bearer token="<token>"`, as on SIP and 6971.
        let token = match crate::sip::grammar::parse_bearer_credential(value) {
            Ok(crate::sip::grammar::Credential::CiscoToken(t)) => t,
            Ok(crate::sip::grammar::Credential::Bearer(t)) => t.into(),
            Err(_) => rest.trim().into(),
        };
        let identity = match self.authenticator.authenticate(&token, unix_now()) {
            Ok(identity) => identity,
            Err(e) => {
                tracing::info!(reason = e.reason(), "UDS refused: bearer token");
                return Err(refused);
            }
        };
        match self.cluster.load().user(&identity.user) {
            Some(u) if u.active => Ok(u.id.clone()),
            _ => {
                tracing::info!(user = %identity.user, "UDS refused: unknown or inactive user");
                Err(refused)
            }
        }
    }
}

fn check_id(id: &str) -> Result<(), Reject> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Reject::BadRequest(format!(
            "a user id has 1 to {MAX_ID_LEN} bytes"
        )));
    }
    if id.chars().any(|c| c == '/' || c.is_control()) {
        return Err(Reject::BadRequest(
            "a user id has no '/' and no control character".into(),
        ));
    }
    Ok(())
}

/// The user a `clusterUser` query names, if any; `400` for a query without a filter, with a
/// repeated one, or with an over-long value or a control character.
fn lookup_cluster_user<'c>(cluster: &'c Cluster, query: &str) -> Result<Option<&'c User>, Reject> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|_| Reject::BadRequest("malformed query string".into()))?;
    let one = |name: &str| -> Result<Option<&str>, Reject> {
        let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        let first = values.next();
        if values.next().is_some() {
            return Err(Reject::BadRequest(format!("parameter {name} is repeated")));
        }
        match first {
            Some(v) if v.len() > MAX_ID_LEN => Err(Reject::BadRequest(format!(
                "parameter {name} is longer than {MAX_ID_LEN} bytes"
            ))),
            Some(v) if v.chars().any(char::is_control) => Err(Reject::BadRequest(format!(
                "parameter {name} has a control character"
            ))),
            Some(v) if !v.is_empty() => Ok(Some(v.as_str())),
            _ => Ok(None),
        }
    };
    let id = if let Some(u) = one("username")? {
        u.to_owned()
    } else if let Some(e) = one("email")?.or(one("useridentifier")?) {
        // Users have no mail address in the model: the local part names the user.
        e.split_once('@').map_or(e, |(local, _)| local).to_owned()
    } else {
        return Err(Reject::BadRequest(
            "clusterUser needs one of the parameters username, email, useridentifier".into(),
        ));
    };
    Ok(cluster.user(&id))
}

/// Fuzzing entry point (`fuzz/fuzz_targets/http_inputs.rs`), not an API: the `clusterUser`
/// query and the user id of a path, on arbitrary text. Only panics matter.
#[doc(hidden)]
pub fn fuzz_inputs(cluster: &Cluster, query: &str, id: &str) {
    let _ = lookup_cluster_user(cluster, query);
    let _ = check_id(id);
}

/// `200` with an XML document; user data is marked uncacheable.
fn answer(document: std::io::Result<Vec<u8>>, private: bool) -> Response {
    let body = match document {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "UDS document could not be written");
            return Reject::Internal.into_response();
        }
    };
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response();
    if private {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::{LAB_CONFIG, Settings};

    #[test]
    fn versions() {
        assert_eq!(uds_version("12.5"), "12.5.1");
        assert_eq!(uds_version("14"), "14.0.1");
        assert_eq!(uds_version("12.5.1.11900-20"), "12.5.1");
        assert_eq!(uds_version("15.0.2"), "15.0.2");
        assert_eq!(uds_version("14.0(1)"), "14.0.1");
        assert_eq!(uds_version(""), "0.0.1");
    }

    #[test]
    fn cluster_user_queries() {
        let cluster = Settings::from_toml(LAB_CONFIG).unwrap().cluster;
        let found = |q: &str| {
            lookup_cluster_user(&cluster, q)
                .unwrap()
                .map(|u| u.id.to_string())
        };
        assert_eq!(found("username=rado").as_deref(), Some("rado"));
        assert_eq!(found("email=rado%40example.com").as_deref(), Some("rado"));
        assert_eq!(found("useridentifier=alice@lab").as_deref(), Some("alice"));
        assert_eq!(found("useridentifier=bob").as_deref(), Some("bob"));
        assert_eq!(found("username=nobody"), None);
        assert_eq!(found("username=mallory").as_deref(), Some("mallory"));
        assert_eq!(found("username=rado&email=x@y").as_deref(), Some("rado"));
        for bad in [
            "",
            "first=rado",
            "username=a&username=b",
            "username=",
            "email=a%00",
        ] {
            assert!(lookup_cluster_user(&cluster, bad).is_err(), "{bad}");
        }
        let long = format!("username={}", "a".repeat(MAX_ID_LEN + 1));
        assert!(lookup_cluster_user(&cluster, &long).is_err());
    }

    #[test]
    fn ids() {
        assert!(check_id("rado").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("../../etc/passwd").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id(&"a".repeat(MAX_ID_LEN + 1)).is_err());
    }
}
