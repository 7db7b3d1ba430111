//! The TFTP server's HTTP face (axum): `GET`/`HEAD /<file>` on HTTP 6970 and HTTPS 6971.
//!
//! | request | 6970 (HTTP) | 6971 (HTTPS) |
//! |---|---|---|
//! | `<device>.cnf.xml`, device not under OAuth | `200` | `200` |
//! | `<device>.cnf.xml`, device under OAuth | `403` | `Authorization: Bearer <token>` of the owner: `200`; no or bad token: `401` + `WWW-Authenticate: Bearer realm="<sip_realm>"`; another user's (or an inactive owner's) token: `403` |
//! | `<device>.cnf.xml.sgn` | `404` | as `.cnf.xml`, answered with the unsigned file |
//! | unknown device or file | `404` | `404` |
//! | a name outside `[A-Za-z0-9._-]`, or with `..` (traversal) | `400` | `400` |
//! | another method | `405` + `Allow: GET,HEAD` | same |
//!
//! Names are looked up, never joined to a path ([`Provisioning::lookup`]). A device under
//! OAuth gets `403` on plain HTTP rather than `404`: device names are not secrets (they travel
//! in every REGISTER, and phones' are `SEP<MAC>`), the file is; the `403` tells an operator why.
//!
//! Files go out with `Content-Type: text/xml` (what UCM's TFTP HTTP service sends for
//! `.cnf.xml`; a safe choice either way, as every client parses the body as XML),
//! `Content-Length`, and `Cache-Control: no-cache`: a client may keep the file but must
//! revalidate, since a changed configuration changes it. Errors are short `text/plain` bodies.
//! `HEAD` gets the headers of the `GET`, no body.
//!
//! The token is checked with the daemon's [`Authenticator`](crate::auth::Authenticator) (the
//! registrar's), so tokens of outside identity providers open files as they register devices.
//! The realm in the challenge is the cluster's `sip_realm` (UCM's "SIP Realm Station"), the
//! realm of those same tokens on SIP.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::{Lookup, Provisioning};
use crate::auth::unix_now;
use crate::cluster::{Cluster, DeviceId};
use crate::net::WebPort;
use crate::sip::grammar::{Credential, parse_bearer_credential};

/// The routes of one TFTP HTTP port: `port` is [`WebPort::TftpHttp`] (6970) or
/// [`WebPort::TftpHttps`] (6971); anything but the latter is treated as plain HTTP.
pub fn router(state: Arc<Provisioning>, port: WebPort) -> Router {
    // `get` answers HEAD as well (axum drops the body and keeps the headers); other methods get
    // 405 with `Allow: GET,HEAD`.
    Router::new()
        .route("/{file}", get(serve))
        .with_state(Files {
            state,
            https: port == WebPort::TftpHttps,
        })
}

#[derive(Clone)]
struct Files {
    state: Arc<Provisioning>,
    https: bool,
}

async fn serve(
    State(files): State<Files>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    // One model for the lookup, the owner check and the rendering.
    let model = files.state.model();
    let device = match files.state.lookup_in(&model, &name, files.https) {
        Lookup::BadName => return text(StatusCode::BAD_REQUEST, "bad file name\n".into()),
        // `lookup` admitted the name's characters, so echoing it is safe.
        Lookup::Unknown => return text(StatusCode::NOT_FOUND, format!("{name} not found\n")),
        Lookup::Open(device) => device,
        Lookup::OAuth(_) if !files.https => {
            return text(
                StatusCode::FORBIDDEN,
                "this file is served over HTTPS, to its owner's bearer token\n".into(),
            );
        }
        Lookup::OAuth(device) => {
            if let Err(refusal) = authorize(&files.state, &model.cluster, &headers, device) {
                return refusal.response(&model.cluster.params.sip_realm);
            }
            device
        }
    };
    (
        [
            (header::CONTENT_TYPE, "text/xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        files.state.render_in(&model.cluster, device),
    )
        .into_response()
}

/// Why a file under OAuth was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// `401`: no credential (`None`), or an unusable one (the RFC 6750 error code).
    Challenge(Option<&'static str>),
    /// `403`: a valid token, but not of the device's (active) owner.
    NotOwner,
}

impl Refusal {
    fn response(self, realm: &str) -> Response {
        match self {
            Self::Challenge(error) => challenge(realm, error),
            Self::NotOwner => text(
                StatusCode::FORBIDDEN,
                "the token's user is not this device's owner\n".into(),
            ),
        }
    }
}

/// Checks the `Authorization: Bearer` token against `device`'s owner. Both forms are
/// accepted: RFC 6750's `Bearer <token>` and Cisco's `Bearer token="<token>"`.
fn authorize(
    state: &Provisioning,
    cluster: &Cluster,
    headers: &HeaderMap,
    device: DeviceId,
) -> Result<(), Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Refusal::Challenge(None));
    };
    let credential = value
        .to_str()
        .ok()
        .and_then(|v| parse_bearer_credential(v).ok());
    let token = match &credential {
        Some(Credential::Bearer(t)) => *t,
        Some(Credential::CiscoToken(t)) => t.as_ref(),
        None => return Err(Refusal::Challenge(Some("invalid_request"))),
    };
    let identity = state
        .authenticator()
        .authenticate(token, unix_now())
        .map_err(|error| {
            tracing::debug!(reason = error.reason(), "config file token refused");
            Refusal::Challenge(Some("invalid_token"))
        })?;
    let device = cluster.device(device);
    let active = cluster.user(&device.owner).is_some_and(|u| u.active);
    if *identity.user != *device.owner || !active {
        tracing::debug!(user = %identity.user, device = %device.name,
            "config file refused: token user is not the active owner");
        return Err(Refusal::NotOwner);
    }
    Ok(())
}

/// `401` with RFC 6750's challenge; `error` when a credential was sent but is no good.
fn challenge(realm: &str, error: Option<&str>) -> Response {
    let value = match error {
        Some(e) => format!("Bearer realm=\"{realm}\", error=\"{e}\""),
        None => format!("Bearer realm=\"{realm}\""),
    };
    let mut response = text(
        StatusCode::UNAUTHORIZED,
        "a bearer token is required\n".into(),
    );
    // The realm comes from the configuration; fall back to no realm rather than panic if it
    // is ever not a valid header value.
    let value =
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, value);
    response
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
