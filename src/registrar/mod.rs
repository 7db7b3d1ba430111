//! REGISTER handling: the staged pipeline parse → port rule → credential → Contact/Expires →
//! store → reply. Each stage returns early with an [`Outcome`] carrying the reply and a
//! stable reason code; [`Registrar::handle`] is the one place that encodes and logs it.
//! Nothing here touches a socket: transports hand in bytes and a [`Peer`](crate::net::Peer) and write back
//! what they are given.

pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::time::{Duration, Instant};

use crate::auth::{AuthError, Authenticator, unix_now};
use crate::cluster::{Cluster, DeviceId};
use crate::net::{ListenerKind, Peer};
use crate::policy::{self, Admission};
use crate::sip::grammar::{self, ContactList, NameAddr};
use crate::sip::response::{self, Reply};
use crate::sip::{self, Method, ParseError, Request};
pub use store::{Binding, Registered, Store, StoreError, Update};

/// What requests other than REGISTER may be.
const ALLOW: &str = "REGISTER, OPTIONS";
/// Contact feature tags Cisco clients name themselves with (spec §2, §4).
const DEVICE_NAME_PARAM: &str = "+u.sip!devicename.ccm.cisco.com";
const NEWREG: &str = ";x-cisco-newreg";
const SUPPORTED: &str = "X-cisco-srtp-fallback,X-cisco-sis-9.1.0";
const SUPPORTED_AR_SK: &str = "X-cisco-srtp-fallback,X-cisco-sis-9.1.0,X-cisco-supports-AR_SK";
/// Expires a client gets when it asks for none (RFC 3261 §10.3 leaves it to the registrar).
const DEFAULT_EXPIRES: u32 = 3600;
/// UCM's port-mismatch 403 carries this (spec §5).
const PORT_MISMATCH_RETRY_AFTER: &str = "35";
const REMOTECC_RESPONSE_TYPE: &str = "application/x-cisco-remotecc-response+xml";
const REMOTECC_RESPONSE: &[u8] = b"<x-cisco-remotecc-response>
<response>
<code>200</code>
<optionsind>
<combine max=\"6\">
<remotecc><status/></remotecc>
<service-control/>
</combine>
<dialog usage=\"hook status\"><unot/></dialog>
<dialog usage=\"shared line\"><unot/></dialog>
<presence usage=\"blf speed dial\"><unot/></presence>
<joinreq></joinreq>
</optionsind>
</response>
</x-cisco-remotecc-response>
";

/// The registrar: the cluster model, the binding store and the credential check.
/// Cheap to clone; every listener task holds one.
#[derive(Clone)]
pub struct Registrar {
    cluster: Arc<Cluster>,
    store: Store,
    auth: Arc<dyn Authenticator>,
    challenge: Arc<str>,
    log_budget: Arc<LogBudget>,
}

/// A reply and the reason code it is logged (and later counted) under.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Reply,
    pub reason: &'static str,
    pub device: Option<DeviceId>,
    /// A credential was presented and refused: logged at `info` (a lab user wants to see why
    /// a client is re-challenged), within the log budget (20 lines a second).
    pub refused_credential: bool,
}

impl Outcome {
    fn new(reply: Reply, reason: &'static str) -> Self {
        Self {
            reply,
            reason,
            device: None,
            refused_credential: false,
        }
    }

    fn device(mut self, device: DeviceId) -> Self {
        self.device = Some(device);
        self
    }

    fn refused_credential(mut self) -> Self {
        self.refused_credential = true;
        self
    }
}

/// `info` lines per second for refused credentials; beyond it they go to `debug` and the next
/// `info` line says how many were held back. A flood of bad tokens must not become a flood of
/// log lines (one per datagram).
const LOG_BUDGET: u32 = 20;

/// A per-second budget of log lines, shared by every listener task; two atomics, no lock.
#[derive(Default)]
struct LogBudget {
    /// The unix second the count is for.
    second: AtomicU64,
    /// Lines taken in that second.
    taken: AtomicU32,
    /// Lines held back since the last one logged.
    held: AtomicU32,
}

impl LogBudget {
    /// `Some(held back before this one)` when this line may be logged.
    fn take(&self, now_unix: u64) -> Option<u32> {
        if self.second.swap(now_unix, Ordering::Relaxed) != now_unix {
            self.taken.store(0, Ordering::Relaxed);
        }
        if self.taken.fetch_add(1, Ordering::Relaxed) < LOG_BUDGET {
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

impl Registrar {
    pub fn new(cluster: Arc<Cluster>, store: Store, auth: Arc<dyn Authenticator>) -> Self {
        let challenge = format!("Bearer realm=\"{}\"", cluster.params.sip_realm).into();
        Self {
            cluster,
            store,
            auth,
            challenge,
            log_budget: Arc::default(),
        }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one framed message; returns the bytes to send back, if any.
    pub fn handle(&self, bytes: &[u8], peer: &Peer) -> Option<Vec<u8>> {
        self.answer(sip::parse(bytes), peer)
    }

    /// Answers a datagram the transport could not frame (a Content-Length beyond the datagram,
    /// not a number, or no blank line): `400` if it is a request with a Via, as RFC 3261 §18.3
    /// and RFC 4475 §3.1.2.2, §3.1.2.3 and §3.3.9 ask.
    pub fn handle_unframed(
        &self,
        bytes: &[u8],
        peer: &Peer,
        reason: &'static str,
    ) -> Option<Vec<u8>> {
        self.answer(Err(sip::unframed(bytes, reason)), peer)
    }

    fn answer(&self, parsed: Result<Request, ParseError>, peer: &Peer) -> Option<Vec<u8>> {
        let (echo, outcome) = match parsed {
            Ok(req) => {
                let outcome = match req.method {
                    // ACK is never answered (RFC 3261 §17.2.1).
                    Method::Ack => return None,
                    Method::Other => Outcome::new(
                        Reply::new(405, "Method Not Allowed").header("Allow", ALLOW),
                        "method_not_allowed",
                    ),
                    _ => match self.unsupported(&req, peer) {
                        Some(refusal) => refusal,
                        None if req.method == Method::Register => self.register(&req, peer),
                        None => {
                            Outcome::new(Reply::new(200, "OK").header("Allow", ALLOW), "options")
                        }
                    },
                };
                (req.echo, outcome)
            }
            Err(ParseError::NotARequest) => {
                tracing::debug!(%peer.addr, "dropped a message that is not a request");
                return None;
            }
            Err(ParseError::BadRequest { echo, reason }) => {
                let reply =
                    Reply::new(400, "Bad Request").header("Warning", self.warning(peer, reason));
                (*echo, Outcome::new(reply, "bad_request"))
            }
            Err(ParseError::Refused {
                echo,
                status,
                phrase,
                reason,
            }) => {
                let mut reply =
                    Reply::new(status, phrase).header("Warning", self.warning(peer, reason));
                if status == 501 {
                    reply = reply.header("Allow", ALLOW);
                }
                (*echo, Outcome::new(reply, "refused"))
            }
        };
        let device = outcome.device.map(|d| &*self.cluster.device(d).name);
        match outcome
            .refused_credential
            .then(|| self.log_budget.take(unix_now()))
            .flatten()
        {
            Some(held_back) => tracing::info!(
                %peer.addr,
                listener = peer.listener.name(),
                status = outcome.reply.status,
                reason = outcome.reason,
                device,
                held_back,
                "credential refused"
            ),
            None => tracing::debug!(
                %peer.addr,
                listener = peer.listener.name(),
                status = outcome.reply.status,
                reason = outcome.reason,
                device,
                "answered"
            ),
        }
        Some(response::encode(
            &echo,
            &outcome.reply,
            &self.cluster.server_header,
            response::new_tag(),
            peer.addr,
        ))
    }

    /// RFC 3261 §8.2.2, after the method (§8.2.1): a Request-URI scheme other than SIP's is
    /// `416`, and any `Require` option is `420` listing it, since none is supported.
    fn unsupported(&self, req: &Request, peer: &Peer) -> Option<Outcome> {
        if !req.request_uri_is_sip {
            let reply = Reply::new(416, "Unsupported URI Scheme")
                .header("Warning", self.warning(peer, "Unsupported URI scheme"));
            return Some(Outcome::new(reply, "unsupported_uri_scheme"));
        }
        if !req.require.is_empty() {
            let reply =
                Reply::new(420, "Bad Extension").header("Unsupported", req.require.join(", "));
            return Some(Outcome::new(reply, "bad_extension"));
        }
        None
    }

    fn register(&self, req: &Request, peer: &Peer) -> Outcome {
        match self.try_register(req, peer) {
            Ok(o) | Err(o) => o,
        }
    }

    fn try_register(&self, req: &Request, peer: &Peer) -> Result<Outcome, Outcome> {
        let contacts = parse_contacts(req).map_err(|reason| self.bad_request(peer, reason))?;
        let device = self.identify(req, &contacts, peer)?;
        let profile = self.cluster.profile_of(device);

        let admission = policy::admit(self.cluster.params.sip_oauth_mode, profile, peer.listener)
            .map_err(|reject| {
            let mut reply = Reply::new(403, "Forbidden");
            if reject == policy::PortReject::PortMismatch {
                reply = reply.header("Retry-After", PORT_MISMATCH_RETRY_AFTER);
            }
            let reply = reply.header("Warning", self.warning(peer, reject.warning_text()));
            Outcome::new(reply, reject.reason()).device(device)
        })?;
        let user = self.admit(admission, req, peer, device)?;

        let now = Instant::now();
        let update = |contact: Option<&NameAddr<'_>>, expires: Duration| Update {
            binding: Binding {
                contact_uri: contact.map_or("", |c| c.uri).into(),
                instance: contact
                    .and_then(|c| c.param("+sip.instance").flatten())
                    .map(Into::into),
                call_id: req.echo.call_id.as_str().into(),
                cseq: req.cseq_number,
                branch: branch_hash(&req.echo),
                newreg: false,
                expires_at: now + expires,
                registered_at: unix_now(),
                node: peer.node,
                listener: peer.listener,
                transport: peer.transport,
                source: peer.addr,
                user: user.clone(),
            },
            force: is_forced(req, contact),
            wildcard: contact.is_none(),
        };

        let entry = match &contacts {
            Contacts::Query => return Ok(self.query(device, now)),
            Contacts::Star => None,
            Contacts::One(c) => Some(c),
        };
        let requested = requested_expires(req, entry).map_err(|r| self.bad_request(peer, r))?;
        if requested == 0 {
            return self
                .store
                .unregister(device, &update(entry, Duration::ZERO), now)
                .map(|_| Outcome::new(Reply::new(200, "OK"), "unregistered").device(device))
                .map_err(|e| self.store_error(e, peer, device));
        }
        // Past here the request registers, so it names exactly one contact.
        let Some(contact) = entry else {
            return Err(self.bad_request(peer, "Contact: * needs Expires: 0"));
        };
        let min = self.cluster.params.min_expires_secs;
        if requested < min {
            let reply =
                Reply::new(423, "Interval Too Brief").header("Min-Expires", min.to_string());
            return Err(Outcome::new(reply, "interval_too_brief").device(device));
        }

        // UCM grants its keepalive interval whatever the client asked (spec §4).
        let granted = self.cluster.params.keepalive_interval_secs;
        let registered = self
            .store
            .register(
                device,
                update(Some(contact), Duration::from_secs(granted.into())),
                now,
            )
            .map_err(|e| self.store_error(e, peer, device))?;

        let newreg = matches!(
            registered,
            Registered::New {
                first_since_start: true
            } | Registered::Retransmission { newreg: true }
        );
        let supported = if peer.listener == ListenerKind::MraOAuth
            && contact.param("x-cisco-mra-ha").flatten() == Some("AR_SK")
        {
            SUPPORTED_AR_SK
        } else {
            SUPPORTED
        };
        let mut reply = Reply::new(200, "OK")
            .header("Expires", granted.to_string())
            .header(
                "Contact",
                format!(
                    "{}{}",
                    echo_contact(contact),
                    if newreg { NEWREG } else { "" }
                ),
            )
            .header("Supported", supported);
        if req.has_remotecc() {
            reply.body = Some((REMOTECC_RESPONSE_TYPE, REMOTECC_RESPONSE));
        }
        let reason = match registered {
            Registered::New { .. } => "registered",
            Registered::Refreshed => "refreshed",
            Registered::Retransmission { .. } => "retransmission",
        };
        Ok(Outcome::new(reply, reason).device(device))
    }

    /// `200` listing the device's binding, with the seconds it has left.
    fn query(&self, device: DeviceId, now: Instant) -> Outcome {
        let mut reply = Reply::new(200, "OK");
        if let Some(b) = self.store.lookup(device, now) {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            reply = reply.header("Contact", format!("<{}>;expires={left}", b.contact_uri));
        }
        Outcome::new(reply, "query").device(device)
    }

    /// The device named by Cisco's Contact feature tag, else the one owning the AOR's line.
    fn identify(
        &self,
        req: &Request,
        contacts: &Contacts<'_>,
        peer: &Peer,
    ) -> Result<DeviceId, Outcome> {
        let not_found = |reason: &'static str, text: &'static str| {
            let reply = Reply::new(404, "Not Found").header("Warning", self.warning(peer, text));
            Outcome::new(reply, reason)
        };
        let to = grammar::parse_name_addr(&req.echo.to)
            .map_err(|_| self.bad_request(peer, "Malformed To header"))?;
        let aor = grammar::parse_sip_uri(to.uri)
            .map_err(|_| self.bad_request(peer, "To is not a sip: or sips: URI"))?;
        let dn = aor.user.unwrap_or_default();
        let named = match contacts {
            Contacts::One(c) => c.param(DEVICE_NAME_PARAM).flatten(),
            Contacts::Star | Contacts::Query => None,
        };
        match named {
            Some(name) => {
                let device = self
                    .cluster
                    .device_by_name(name)
                    .ok_or_else(|| not_found("unknown_device", "Device not found"))?;
                if !self
                    .cluster
                    .device(device)
                    .lines
                    .iter()
                    .any(|l| *l.dn == *dn)
                {
                    return Err(
                        not_found("unknown_line", "Line not found on device").device(device)
                    );
                }
                Ok(device)
            }
            None => {
                let devices = self.cluster.devices_by_dn(dn);
                // On a shared line, a `Contact: *` removal or a query is for the device this
                // client registered (same Call-ID), not simply the first with the line.
                let now = Instant::now();
                let own = devices
                    .iter()
                    .copied()
                    .find(|&d| self.store.holds_call_id(d, &req.echo.call_id, now));
                own.or_else(|| devices.first().copied())
                    .ok_or_else(|| not_found("unknown_aor", "Directory number not found"))
            }
        }
    }

    /// Checks what the port rule asks for; returns the token's user for bearer admission.
    fn admit(
        &self,
        admission: Admission,
        req: &Request,
        peer: &Peer,
        device: DeviceId,
    ) -> Result<Option<Arc<str>>, Outcome> {
        match admission {
            Admission::Open => Ok(None),
            Admission::DeviceCertificate => {
                let name = &self.cluster.device(device).name;
                let named = peer
                    .cert_names
                    .as_ref()
                    .is_some_and(|names| names.iter().any(|n| n.eq_ignore_ascii_case(name)));
                if named {
                    Ok(None)
                } else {
                    let reply = Reply::new(403, "Forbidden")
                        .header("Warning", self.warning(peer, "TLS authentication failure"));
                    Err(Outcome::new(reply, "tls_authentication_failure").device(device))
                }
            }
            Admission::Bearer => self.bearer(req, peer, device).map(Some),
        }
    }

    fn bearer(&self, req: &Request, peer: &Peer, device: DeviceId) -> Result<Arc<str>, Outcome> {
        let challenge = |reason: &'static str| {
            let reply = Reply::new(407, "Proxy Authentication Required")
                .header("Proxy-Authenticate", &*self.challenge);
            Outcome::new(reply, reason).device(device)
        };
        let Some(header) = req.credential_header() else {
            return Err(challenge("challenge"));
        };
        let token = match grammar::parse_bearer_credential(header) {
            Ok(grammar::Credential::CiscoToken(t)) => t,
            Ok(grammar::Credential::Bearer(t)) => t.into(),
            Err(_) => return Err(challenge("credential_not_bearer")),
        };
        // No UCM text exists for a bad or expired token: re-challenge, and the client
        // refreshes its token (spec §4).
        let identity = self
            .auth
            .authenticate(&token, unix_now())
            .map_err(|e: AuthError| challenge(e.reason()).refused_credential())?;
        let forbidden = |reason: &'static str, text: &'static str| {
            let reply = Reply::new(403, "Forbidden").header("Warning", self.warning(peer, text));
            Outcome::new(reply, reason)
                .device(device)
                .refused_credential()
        };
        let user = self
            .cluster
            .user(&identity.user)
            .ok_or_else(|| forbidden("unknown_user", "Token user is not the device owner"))?;
        if *self.cluster.device(device).owner != *identity.user {
            return Err(forbidden("not_owner", "Token user is not the device owner"));
        }
        if !user.active {
            return Err(forbidden("inactive_user", "User is not active"));
        }
        Ok(identity.user)
    }

    fn store_error(&self, e: StoreError, peer: &Peer, device: DeviceId) -> Outcome {
        let (reply, reason) = match e {
            StoreError::ActiveForAnotherClient => (
                Reply::new(403, "Forbidden").header(
                    "Warning",
                    self.warning(peer, "Registration is active for another client"),
                ),
                "active_for_another_client",
            ),
            StoreError::OutOfOrder { .. } => (
                Reply::new(400, "Bad Request")
                    .header("Warning", self.warning(peer, "Out of order CSeq")),
                "out_of_order_cseq",
            ),
            StoreError::Full { .. } => (
                Reply::new(503, "Service Unavailable").header("Retry-After", "60"),
                "store_full",
            ),
        };
        Outcome::new(reply, reason).device(device)
    }

    fn bad_request(&self, peer: &Peer, reason: &'static str) -> Outcome {
        let reply = Reply::new(400, "Bad Request").header("Warning", self.warning(peer, reason));
        Outcome::new(reply, "bad_request")
    }

    /// `399 <node> "<text>"`, as UCM writes its Warning headers.
    fn warning(&self, peer: &Peer, text: &str) -> String {
        format!("399 {} \"{text}\"", self.cluster.node(peer.node).name)
    }
}

enum Contacts<'a> {
    /// No Contact: a query for the current bindings (RFC 3261 §10.2.3).
    Query,
    Star,
    One(NameAddr<'a>),
}

fn parse_contacts(req: &Request) -> Result<Contacts<'_>, &'static str> {
    let mut found = None;
    for value in &req.contacts {
        let list = grammar::parse_contact_list(value).map_err(|_| "Malformed Contact header")?;
        let next = match list {
            ContactList::Star => Contacts::Star,
            ContactList::Entries(mut entries) => match (entries.pop(), entries.is_empty()) {
                (Some(entry), true) => Contacts::One(entry),
                _ => return Err("One Contact per REGISTER is supported"),
            },
        };
        if found.replace(next).is_some() {
            return Err("One Contact per REGISTER is supported");
        }
    }
    Ok(found.unwrap_or(Contacts::Query))
}

/// The Contact's `expires` parameter, else the Expires header, else the default.
fn requested_expires(req: &Request, contact: Option<&NameAddr<'_>>) -> Result<u32, &'static str> {
    let text = match contact.and_then(|c| c.param("expires")) {
        Some(Some(v)) => Some(v),
        Some(None) => return Err("Malformed expires parameter"),
        None => req.expires.as_deref(),
    };
    match text {
        None => Ok(DEFAULT_EXPIRES),
        // RFC 3261 §20.19: delta-seconds; values past 2^32-1 mean "a long time".
        Some(t) => match t.trim().parse::<u64>() {
            Ok(v) => Ok(u32::try_from(v).unwrap_or(u32::MAX)),
            Err(_) => Err("Malformed Expires"),
        },
    }
}

/// Jabber takes a device over from another client with `cisco-alarm:111` in Reason and a real
/// `+sip.instance` (spec §4).
fn is_forced(req: &Request, contact: Option<&NameAddr<'_>>) -> bool {
    let alarm = req.reason.as_deref().is_some_and(|r| {
        r.match_indices("cisco-alarm:111")
            .any(|(i, m)| !r[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()))
    });
    let instance = contact
        .and_then(|c| c.param("+sip.instance").flatten())
        .is_some_and(|i| !i.is_empty());
    alarm && instance
}

/// The Contact as the client sent it, minus any `expires` header parameter: the 200's
/// `Expires` is what was granted, and RFC 3261 §10.2.4 gives a Contact `expires` precedence.
fn echo_contact<'a>(contact: &NameAddr<'a>) -> std::borrow::Cow<'a, str> {
    let raw = contact.raw;
    if contact.param("expires").is_none() {
        return raw.into();
    }
    // `uri` is a slice of `raw` (the grammar is zero-copy): header parameters follow it.
    let Some(uri_end) = (contact.uri.as_ptr() as usize)
        .checked_sub(raw.as_ptr() as usize)
        .map(|offset| offset + contact.uri.len())
        .filter(|&end| raw.is_char_boundary(end))
    else {
        return raw.into();
    };
    // Split what follows the URI on `;` outside quoted strings; the first piece is the `>`.
    let rest = &raw[uri_end..];
    let mut pieces = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                pieces.push(&rest[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    pieces.push(&rest[start..]);
    let is_expires = |p: &str| {
        let name = p.split('=').next().unwrap_or_default().trim();
        name.eq_ignore_ascii_case("expires")
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..uri_end]);
    out.push_str(pieces[0]);
    for p in pieces[1..].iter().filter(|p| !is_expires(p)) {
        out.push(';');
        out.push_str(p);
    }
    out.into()
}

/// Hash of the top Via's `branch` parameter (RFC 3261 §17.2.3 transaction id), or of the whole
/// top Via when it has none (an RFC 2543 client).
fn branch_hash(echo: &sip::Echo) -> u64 {
    use std::hash::{Hash, Hasher};
    let via = echo.vias.first().map_or("", String::as_str);
    // `;branch=` is lower-case in practice: search as is, lower-case only to be sure.
    let at = via
        .find(";branch=")
        .or_else(|| via.to_ascii_lowercase().find(";branch="));
    let branch = match at {
        Some(i) => {
            let v = &via[i + 8..];
            &v[..v.find([';', ',', ' ']).unwrap_or(v.len())]
        }
        None => via,
    };
    let mut h = std::hash::DefaultHasher::new();
    branch.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_holds_back_beyond_its_rate_and_counts() {
        let budget = LogBudget::default();
        for _ in 0..LOG_BUDGET {
            assert_eq!(budget.take(100), Some(0));
        }
        assert_eq!(budget.take(100), None);
        assert_eq!(budget.take(100), None);
        assert_eq!(
            budget.take(101),
            Some(2),
            "a new second: the held-back count is told"
        );
        assert_eq!(budget.take(101), Some(0));
    }

    #[test]
    fn echo_contact_drops_only_the_expires_parameter() {
        let cases = [
            (
                "<sip:a@b>;expires=60;+sip.instance=\"<urn:x>\"",
                "<sip:a@b>;+sip.instance=\"<urn:x>\"",
            ),
            ("<sip:a@b> ; expires = 60", "<sip:a@b> "),
            ("<sip:a@b>;\tEXPIRES=60;video", "<sip:a@b>;video"),
            (
                "<sip:a@b>;x=\"p;expires=1\";expires=60",
                "<sip:a@b>;x=\"p;expires=1\"",
            ),
            (
                "<sip:a@b>;x=\"q\\\";expires=1\";y",
                "<sip:a@b>;x=\"q\\\";expires=1\";y",
            ),
            ("<sip:a@b;expires=5>;video", "<sip:a@b;expires=5>;video"),
            ("sip:a@b;expires=60", "sip:a@b"),
        ];
        for (input, want) in cases {
            let parsed = grammar::parse_name_addr(input).unwrap();
            assert_eq!(echo_contact(&parsed), want, "{input}");
        }
    }
}
