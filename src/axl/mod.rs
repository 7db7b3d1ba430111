//! AXL, UCM's administrative SOAP API (docs/ucm.md §10), as far as Expressway-C needs it: `POST
//! /axl/` on HTTPS 8443, SOAP 1.1, HTTP Basic authentication of an application user
//! (`[[app_users]]`), and the operations
//!
//! - `addExpresswayCConfiguration`, `updateExpresswayCConfiguration`,
//!   `getExpresswayCConfiguration`, `listExpresswayCConfiguration`,
//!   `removeExpresswayCConfiguration` on the [`ExpresswayStore`];
//! - `executeSQLQuery` for the read-only queries of [`crate::expressway::sql`].
//!
//! The `SOAPAction` header is optional and not checked: the operation is the first element of
//! the SOAP Body. Errors are SOAP faults (HTTP 500) with AXL's `axlError` detail; the
//! `axlcode`s are UCM's where known (-239 duplicate, 5007 not found) and ours otherwise:
//!
//! | axlcode | faultcode | when |
//! |---|---|---|
//! | -239 | Client | the host is already in the table |
//! | 5007 | Client | no entry with that HostNameOrIP or uuid |
//! | 5003 | Client | missing or invalid element, unsupported or non-SELECT SQL, bad envelope |
//! | 5002 | Client | an operation this emulator does not implement |
//! | 5000 | Server | the table could not be written |
//!
//! Without valid credentials the answer is `401` with `WWW-Authenticate: Basic realm="AXL"`
//! (UCM answers the same way, before any SOAP). The body is bounded by the HTTPS listener's
//! limits (`limits.max_message_bytes`).

pub mod soap;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use crate::expressway::{Changes, ExpresswayError, ExpresswayStore, Key, NewEntry, Record, sql};
use crate::oauth::TokenService;
use soap::{Element, FaultCode, W, text};

/// What the AXL handlers act on.
pub struct Axl {
    /// Checks the application user's password (bounded argon2 checks).
    pub tokens: Arc<TokenService>,
    pub expressway: Arc<ExpresswayStore>,
    /// The cluster's SIP OAuth mode, for `executeSQLQuery` (live: `utils sipOAuth-mode`).
    pub sip_oauth_mode: crate::cluster::LiveMode,
}

/// `POST /axl/` (and `/axl`).
pub fn router(axl: Arc<Axl>) -> Router {
    Router::new()
        .route("/axl/", post(handle))
        .route("/axl", post(handle))
        .with_state(axl)
}

/// An AXL fault: SOAP faultcode, axlcode and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub code: FaultCode,
    pub axlcode: i32,
    pub message: String,
}

impl Fault {
    fn client(axlcode: i32, message: impl Into<String>) -> Self {
        Self {
            code: FaultCode::Client,
            axlcode,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::client(INVALID, message)
    }
}

impl From<ExpresswayError> for Fault {
    fn from(e: ExpresswayError) -> Self {
        match &e {
            ExpresswayError::Duplicate { .. } => Self::client(
                DUPLICATE,
                format!(
                    "Could not insert new row - duplicate value in a UNIQUE INDEX column \
                     (Unique Index:): {e}"
                ),
            ),
            ExpresswayError::NotFound { .. } => Self::client(
                NOT_FOUND,
                format!(
                    "Item not valid: The specified ExpresswayCConfiguration was not found ({e})"
                ),
            ),
            ExpresswayError::Invalid { .. } => Self::invalid(e.to_string()),
            _ => {
                tracing::error!(error = %e, "AXL: the Expressway-C table could not be written");
                Self {
                    code: FaultCode::Server,
                    axlcode: SERVER,
                    message: "the Expressway-C table could not be written".into(),
                }
            }
        }
    }
}

const DUPLICATE: i32 = -239;
const NOT_FOUND: i32 = 5007;
const INVALID: i32 = 5003;
const UNKNOWN_OPERATION: i32 = 5002;
const SERVER: i32 = 5000;

/// Runs one request body: the operation's name (for logs and the fault's `request`) and the
/// response envelope, or a fault. Blocking (a change writes the table's file).
pub fn dispatch(
    store: &ExpresswayStore,
    sip_oauth_mode: bool,
    body: &[u8],
) -> (String, Result<Vec<u8>, Fault>) {
    let op = match soap::parse_request(body) {
        Ok(op) => op,
        Err(e) => return (String::new(), Err(Fault::invalid(e.to_string()))),
    };
    let name = op.name.clone();
    let result = operation(store, sip_oauth_mode, &op).and_then(|write| {
        soap::response(&name, write).map_err(|e| Fault {
            code: FaultCode::Server,
            axlcode: SERVER,
            message: e.to_string(),
        })
    });
    (name, result)
}

type Body = Box<dyn FnOnce(&mut W) -> std::io::Result<()>>;

fn operation(store: &ExpresswayStore, sip_oauth_mode: bool, op: &Element) -> Result<Body, Fault> {
    Ok(match op.name.as_str() {
        "addExpresswayCConfiguration" => {
            let c = op
                .child("expresswayCConfiguration")
                .ok_or_else(|| Fault::invalid("expresswayCConfiguration is required"))?;
            let host = c
                .text_of("HostNameOrIP")
                .ok_or_else(|| Fault::invalid("HostNameOrIP is required"))?;
            let r = store.add(NewEntry {
                host: host.to_owned(),
                description: c.text_of("description").unwrap_or("").to_owned(),
                names: c
                    .text_of("X509SubjectNameorSubjectAlternateName")
                    .unwrap_or("")
                    .to_owned(),
            })?;
            standard(&r)
        }
        "updateExpresswayCConfiguration" => {
            let changes = Changes {
                host: op.text_of("newHostNameOrIP").map(str::to_owned),
                description: op.text_of("description").map(str::to_owned),
                names: op
                    .text_of("X509SubjectNameorSubjectAlternateName")
                    .map(str::to_owned),
            };
            standard(&store.update(&key(op)?, changes)?)
        }
        "removeExpresswayCConfiguration" => standard(&store.remove(&key(op)?)?),
        "getExpresswayCConfiguration" => {
            let r = store.get(&key(op)?)?;
            let tags = Tags::of(op.child("returnedTags"));
            Box::new(move |w| {
                w.create_element("return")
                    .write_inner_content(|w| row(w, &r, tags))?;
                Ok(())
            })
        }
        "listExpresswayCConfiguration" => {
            let criteria = op
                .child("searchCriteria")
                .ok_or_else(|| Fault::invalid("searchCriteria is required"))?;
            let host = criteria.text_of("HostNameOrIP");
            let description = criteria.text_of("description");
            if host.is_none() && description.is_none() {
                return Err(Fault::invalid(
                    "at least one element under searchCriteria has to be given",
                ));
            }
            let number = |name| -> Result<Option<usize>, Fault> {
                op.text_of(name)
                    .map(|t| {
                        t.trim()
                            .parse::<usize>()
                            .map_err(|_| Fault::invalid(format!("{name} must be a number")))
                    })
                    .transpose()
            };
            let first = number("first")?;
            // Skip applies only with first (schema note).
            let skip = first.and(number("skip")?).unwrap_or(0);
            let rows: Vec<Record> = store
                .list()
                .into_iter()
                .filter(|r| host.is_none_or(|p| like(p, &r.host)))
                .filter(|r| description.is_none_or(|p| like(p, &r.description)))
                .skip(skip)
                .take(first.unwrap_or(usize::MAX))
                .collect();
            let tags = Tags::of(op.child("returnedTags"));
            Box::new(move |w| {
                w.create_element("return").write_inner_content(|w| {
                    for r in &rows {
                        row(w, r, tags)?;
                    }
                    Ok(())
                })?;
                Ok(())
            })
        }
        "executeSQLQuery" => {
            let query = op
                .text_of("sql")
                .ok_or_else(|| Fault::invalid("sql is required"))?;
            let parsed = sql::parse(query).map_err(|e| Fault::invalid(e.to_string()))?;
            let result = sql::run(parsed, &store.list(), sip_oauth_mode);
            Box::new(move |w| {
                w.create_element("return").write_inner_content(|w| {
                    for r in &result.rows {
                        w.create_element("row").write_inner_content(|w| {
                            for (column, value) in result.columns.iter().zip(r) {
                                text(w, column, value)?;
                            }
                            Ok(())
                        })?;
                    }
                    Ok(())
                })?;
                Ok(())
            })
        }
        other => {
            return Err(Fault::client(
                UNKNOWN_OPERATION,
                format!("Unknown or unsupported operation: {other}"),
            ));
        }
    })
}

/// Which optional elements a get or list returns: those named under `returnedTags`, or all
/// when there is none (or it is empty).
#[derive(Debug, Clone, Copy)]
struct Tags {
    host: bool,
    description: bool,
    names: bool,
}

impl Tags {
    fn of(returned: Option<&Element>) -> Self {
        match returned {
            Some(t) if !t.children.is_empty() => Self {
                host: t.child("HostNameOrIP").is_some(),
                description: t.child("description").is_some(),
                names: t.child("X509SubjectNameorSubjectAlternateName").is_some(),
            },
            _ => Self {
                host: true,
                description: true,
                names: true,
            },
        }
    }
}

/// `<expresswayCConfiguration uuid="{…}">` with the returned tags.
fn row(w: &mut W, r: &Record, tags: Tags) -> std::io::Result<()> {
    let uuid = r.axl_uuid();
    w.create_element("expresswayCConfiguration")
        .with_attribute(("uuid", uuid.as_str()))
        .write_inner_content(|w| {
            if tags.host {
                text(w, "HostNameOrIP", &r.host)?;
            }
            if tags.description {
                text(w, "description", &r.description)?;
            }
            if tags.names {
                text(w, "X509SubjectNameorSubjectAlternateName", &r.names)?;
            }
            Ok(())
        })?;
    Ok(())
}

/// `<return>{UUID}</return>`.
fn standard(r: &Record) -> Body {
    let uuid = r.axl_uuid();
    Box::new(move |w| text(w, "return", &uuid))
}

/// The entry a get, update or remove names: `uuid` or `HostNameOrIP`.
fn key(op: &Element) -> Result<Key, Fault> {
    if let Some(uuid) = op.text_of("uuid") {
        return Ok(Key::Pkid(uuid.to_owned()));
    }
    op.text_of("HostNameOrIP")
        .map(|h| Key::Host(h.to_owned()))
        .ok_or_else(|| Fault::invalid("HostNameOrIP or uuid is required"))
}

/// SQL `LIKE`, case-insensitive (UCM's AXL list searches): `%` any run, `_` one character.
fn like(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let v: Vec<char> = value.to_lowercase().chars().collect();
    // Classic wildcard match with one backtrack point: linear in practice, never exponential.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '%')
}

async fn handle(State(axl): State<Arc<Axl>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some((user, pass)) = crate::oauth::http::basic_credentials(&headers) else {
        return unauthorized();
    };
    match axl.tokens.app_login(&user, &pass).await {
        Ok(_) => {}
        Err(e) if e.code == "temporarily_unavailable" => {
            return (StatusCode::SERVICE_UNAVAILABLE, e.description).into_response();
        }
        Err(_) => {
            tracing::info!(user, "AXL: authentication failed");
            return unauthorized();
        }
    }
    let worker = axl.clone();
    let (operation, result) = match tokio::task::spawn_blocking(move || {
        dispatch(&worker.expressway, worker.sip_oauth_mode.get(), &body)
    })
    .await
    {
        Ok(r) => r,
        Err(error) => {
            tracing::error!(%error, "AXL request panicked");
            (
                String::new(),
                Err(Fault {
                    code: FaultCode::Server,
                    axlcode: SERVER,
                    message: "internal error".into(),
                }),
            )
        }
    };
    match result {
        Ok(xml) => {
            tracing::info!(user, operation, "AXL request");
            (StatusCode::OK, [(header::CONTENT_TYPE, XML)], xml).into_response()
        }
        Err(f) => {
            tracing::info!(
                user,
                operation,
                axlcode = f.axlcode,
                message = f.message,
                "AXL fault"
            );
            match soap::fault(f.code, f.axlcode, &f.message, &operation) {
                Ok(xml) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    [(header::CONTENT_TYPE, XML)],
                    xml,
                )
                    .into_response(),
                Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            }
        }
    }
}

const XML: &str = "text/xml; charset=utf-8";

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::WWW_AUTHENTICATE, "Basic realm=\"AXL\""),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        "AXL needs HTTP Basic authentication of an application user\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests;
