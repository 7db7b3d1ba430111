//! REGISTER handling: the staged pipeline parse → port rule → credential → Contact/Expires →
//! store → reply. Each stage returns early with an [`Outcome`] carrying the reply and a
//! stable reason code; [`Registrar::handle`] is the one place that encodes and logs it.
//! Nothing here touches a socket: transports hand in bytes and a [`Peer`](crate::net::Peer) and write back
//! what they are given.

mod live;
pub mod store;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::time::{Duration, Instant};

use crate::auth::{AuthError, Authenticator, unix_now};
use crate::cluster::{Cluster, DeviceId, LiveMode};
use crate::net::{ListenerKind, Peer};
use crate::policy::{self, Admission};
use crate::sip::grammar::{self, ContactList, NameAddr};
use crate::sip::response::{self, Reply};
use crate::sip::{self, Method, ParseError, Request};
pub use live::{Registrar, Rekeyed};
pub use store::{AorUpdate, Binding, Listed, Registered, Store, StoreError, Update};

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

/// The registrar's state for one cluster model: the model, the binding store and the
/// credential check. [`Registrar`] holds it behind a lock so a reload can swap the model.
struct Engine {
    cluster: Arc<Cluster>,
    mode: LiveMode,
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

    fn reason(mut self, reason: &'static str) -> Self {
        self.reason = reason;
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

impl Engine {
    fn new(cluster: Arc<Cluster>, store: Store, auth: Arc<dyn Authenticator>) -> Self {
        Self {
            mode: LiveMode::new(cluster.params.sip_oauth_mode),
            challenge: challenge(&cluster),
            cluster,
            store,
            auth,
            log_budget: Arc::default(),
        }
    }

    /// Handles one framed message; returns the bytes to send back, if any.
    fn handle(&self, bytes: &[u8], peer: &Peer) -> Option<Vec<u8>> {
        self.answer(sip::parse(bytes), peer)
    }

    /// Answers a datagram the transport could not frame (a Content-Length beyond the datagram,
    /// not a number, or no blank line): `400` if it is a request with a Via, as RFC 3261 §18.3
    /// and RFC 4475 §3.1.2.2, §3.1.2.3 and §3.3.9 ask.
    fn handle_unframed(&self, bytes: &[u8], peer: &Peer, reason: &'static str) -> Option<Vec<u8>> {
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
        let contacts = parse_contacts(req).map_err(|e| {
            // RFC 3261 §10.3 takes the AOR from To (step 3) before it reads a Contact (step
            // 6): a To that is no SIP URI is the first fault (RFC 4475 §3.3.4). Checked on
            // this error path only; `identify` reads To for every other request.
            match grammar::parse_name_addr(&req.echo.to) {
                Err(_) => self.bad_request(peer, "Malformed To header"),
                Ok(to) if grammar::parse_sip_uri(to.uri).is_err() => {
                    self.bad_request(peer, "To is not a sip: or sips: URI")
                }
                Ok(_) => self.contact_error(peer, e),
            }
        })?;
        // On the OAuth ports the token comes before anything is looked up: without one, a
        // missing device or line, a device of another profile and a registered one all get the
        // same 407, so an unauthenticated scanner learns nothing (README, "What each port
        // reveals"). The cluster's OAuth mode is on wherever these ports are bound.
        let token_user = if peer.listener.is_oauth() {
            Some(self.authenticate(req)?)
        } else {
            None
        };
        let (device, line) = self.identify(req, &contacts, peer)?;
        let profile = self.cluster.profile_of(device);

        let admission =
            policy::admit(self.mode.get(), profile, peer.listener).map_err(|reject| {
                let mut reply = Reply::new(403, "Forbidden");
                if reject == policy::PortReject::PortMismatch {
                    reply = reply.header("Retry-After", PORT_MISMATCH_RETRY_AFTER);
                }
                let reply = reply.header("Warning", self.warning(peer, reject.warning_text()));
                Outcome::new(reply, reject.reason()).device(device)
            })?;
        let user = self.admit(admission, token_user, req, peer, device)?;

        let now = Instant::now();
        let binding = |uri: &str, instance: Option<&str>, expires: Duration| Binding {
            contact_uri: uri.into(),
            instance: instance.map(Into::into),
            call_id: req.echo.call_id.as_str().into(),
            cseq: req.cseq_number,
            branch: branch_hash(&req.echo),
            newreg: false,
            device_named: false,
            q: None,
            line,
            uri_key: 0,
            expires_at: now + expires,
            registered_at: unix_now(),
            node: peer.node,
            listener: peer.listener,
            transport: peer.transport,
            source: peer.addr,
            user: user.clone(),
        };
        let contact = match contacts {
            Contacts::Query => {
                return Ok(self.listing(device, self.store.bindings(device, line, now)));
            }
            Contacts::Star => {
                if requested_expires(req, None).map_err(|r| self.bad_request(peer, r))? != 0 {
                    return Err(self.bad_request(peer, "Contact: * needs Expires: 0"));
                }
                let request = binding("", None, Duration::ZERO);
                return self
                    .store
                    .update_aor(device, AorUpdate::RemoveAll(request), now)
                    .map(|listed| self.listing(device, listed).reason("unregistered"))
                    .map_err(|e| self.store_error(e, peer, device));
            }
            Contacts::Aor(entries) => {
                return self.register_aor(req, peer, device, &entries, binding, now);
            }
            Contacts::Cisco(c) => c,
        };
        let instance = contact.param("+sip.instance").flatten();
        let update = |expires: Duration| Update {
            binding: binding(contact.uri, instance, expires),
            force: is_forced(req, Some(&contact)),
            wildcard: false,
        };
        let requested =
            requested_expires(req, Some(&contact)).map_err(|r| self.bad_request(peer, r))?;
        if requested == 0 {
            return self
                .store
                .unregister(device, &update(Duration::ZERO), now)
                .map(|_| Outcome::new(Reply::new(200, "OK"), "unregistered").device(device))
                .map_err(|e| self.store_error(e, peer, device));
        }
        if requested < self.cluster.params.min_expires_secs {
            return Err(self.interval_too_brief(device));
        }

        // UCM grants its keepalive interval whatever the client asked (spec §4).
        let granted = self.cluster.params.keepalive_interval_secs;
        let registered = self
            .store
            .register(device, update(Duration::from_secs(granted.into())), now)
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
                    echo_contact(&contact),
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

    /// A non-Cisco client's REGISTER: RFC 3261 §10.3, one binding per Contact, each with its
    /// own expiry, all applied or none.
    fn register_aor(
        &self,
        req: &Request,
        peer: &Peer,
        device: DeviceId,
        entries: &[NameAddr<'_>],
        binding: impl Fn(&str, Option<&str>, Duration) -> Binding,
        now: Instant,
    ) -> Result<Outcome, Outcome> {
        let min = self.cluster.params.min_expires_secs;
        // Such clients choose their interval (RFC 3261 §10.2.1), but get no more than the
        // keepalive interval UCM gives its own clients: a binding that a client or a scanner
        // left behind is gone within it, and cannot hold a DN for an hour.
        let max = self.cluster.params.keepalive_interval_secs;
        // More Contacts than the cap could ever accept (each existing binding touched and the
        // cap's worth added) are refused before any work per Contact, and before the store's
        // lock: a 64 KB datagram holds thousands. It is the cap's 403: the request is valid
        // SIP, only too much for this AOR's limit.
        if entries.len() > self.store.max_contacts_per_request() {
            return Err(self.store_error(
                StoreError::TooManyBindings {
                    limit: self.store.max_bindings_per_aor(),
                },
                peer,
                device,
            ));
        }
        let mut bindings = Vec::with_capacity(entries.len());
        for entry in entries {
            // Bindings are told apart by URI equality (RFC 3261 §19.1.4): each URI is parsed
            // once, here, into the key the store compares.
            let key = grammar::parse_sip_uri(entry.uri)
                .map(|uri| store::UriKey::of(&uri))
                .map_err(|_| self.bad_request(peer, "Malformed Contact URI"))?;
            let requested =
                requested_expires(req, Some(entry)).map_err(|r| self.bad_request(peer, r))?;
            if requested != 0 && requested < min {
                return Err(self.interval_too_brief(device));
            }
            let q = match entry.param("q") {
                None => None,
                Some(v) => Some(
                    v.and_then(parse_qvalue)
                        .ok_or_else(|| self.bad_request(peer, "Malformed q parameter"))?,
                ),
            };
            let mut b = binding(
                entry.uri,
                entry.param("+sip.instance").flatten(),
                Duration::from_secs(requested.min(max).into()),
            );
            b.q = q;
            b.uri_key = key.short();
            bindings.push((b, key));
        }
        let listed = self
            .store
            .update_aor(device, AorUpdate::Contacts(bindings), now)
            .map_err(|e| self.store_error(e, peer, device))?;
        let reason = if listed.is_empty() {
            "unregistered"
        } else {
            "registered"
        };
        Ok(self.listing(device, listed).reason(reason))
    }

    /// `200` listing bindings with the seconds each has left and its `q` (RFC 3261 §10.3
    /// step 8).
    fn listing(&self, device: DeviceId, listed: Vec<Listed>) -> Outcome {
        let mut reply = Reply::new(200, "OK");
        for b in listed {
            let mut value = format!("<{}>;expires={}", b.contact_uri, b.expires_in);
            if let Some(q) = b.q {
                value.push_str(";q=");
                value.push_str(&format_qvalue(q));
            }
            reply = reply.header("Contact", value);
        }
        Outcome::new(reply, "query").device(device)
    }

    fn interval_too_brief(&self, device: DeviceId) -> Outcome {
        let min = self.cluster.params.min_expires_secs;
        let reply = Reply::new(423, "Interval Too Brief").header("Min-Expires", min.to_string());
        Outcome::new(reply, "interval_too_brief").device(device)
    }

    /// The device named by Cisco's Contact feature tag, else the one owning the AOR's line;
    /// and the index of that line on the device.
    fn identify(
        &self,
        req: &Request,
        contacts: &Contacts<'_>,
        peer: &Peer,
    ) -> Result<(DeviceId, u16), Outcome> {
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
            Contacts::Cisco(c) => c.param(DEVICE_NAME_PARAM).flatten(),
            Contacts::Star | Contacts::Query | Contacts::Aor(_) => None,
        };
        match named {
            Some(name) => {
                let device = self
                    .cluster
                    .device_by_name(name)
                    .ok_or_else(|| not_found("unknown_device", "Device not found"))?;
                match self.line_of(device, dn) {
                    Some(line) => Ok((device, line)),
                    None => {
                        Err(not_found("unknown_line", "Line not found on device").device(device))
                    }
                }
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
                    .and_then(|d| Some((d, self.line_of(d, dn)?)))
                    .ok_or_else(|| not_found("unknown_aor", "Directory number not found"))
            }
        }
    }

    /// The index of the device's line with this DN. Past `u16::MAX` lines (no device has
    /// that many; UCM's largest have a few dozen) the line is not found.
    fn line_of(&self, device: DeviceId, dn: &str) -> Option<u16> {
        let lines = &self.cluster.device(device).lines;
        let i = lines.iter().position(|l| *l.dn == *dn)?;
        u16::try_from(i).ok()
    }

    /// Checks what the port rule asks for; returns the token's user for bearer admission.
    fn admit(
        &self,
        admission: Admission,
        token_user: Option<Arc<str>>,
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
            Admission::Bearer => {
                let user = match token_user {
                    Some(user) => user,
                    None => self.authenticate(req)?,
                };
                self.authorize(user, peer, device).map(Some)
            }
        }
    }

    /// The user of the request's valid bearer token, else the 407 challenge. It knows nothing
    /// of the device, so its answer cannot depend on one.
    fn authenticate(&self, req: &Request) -> Result<Arc<str>, Outcome> {
        let challenge = |reason: &'static str| {
            let reply = Reply::new(407, "Proxy Authentication Required")
                .header("Proxy-Authenticate", &*self.challenge);
            Outcome::new(reply, reason)
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
        self.auth
            .authenticate(&token, unix_now())
            .map(|identity| identity.user)
            .map_err(|e: AuthError| challenge(e.reason()).refused_credential())
    }

    /// Whether the token's user may register the device.
    fn authorize(
        &self,
        user: Arc<str>,
        peer: &Peer,
        device: DeviceId,
    ) -> Result<Arc<str>, Outcome> {
        let forbidden = |reason: &'static str, text: &'static str| {
            let reply = Reply::new(403, "Forbidden").header("Warning", self.warning(peer, text));
            Outcome::new(reply, reason)
                .device(device)
                .refused_credential()
        };
        let known = self
            .cluster
            .user(&user)
            .ok_or_else(|| forbidden("unknown_user", "Token user is not the device owner"))?;
        if *self.cluster.device(device).owner != *user {
            return Err(forbidden("not_owner", "Token user is not the device owner"));
        }
        if !known.active {
            return Err(forbidden("inactive_user", "User is not active"));
        }
        Ok(user)
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
            // A policy refusal, not an outage: a 503 would send an RFC 3263 client to another
            // server and ask it to come back, while only removing a binding (or letting one
            // expire) makes room (README, "Which registration rules apply to which client").
            StoreError::TooManyBindings { .. } => (
                Reply::new(403, "Forbidden").header(
                    "Warning",
                    self.warning(peer, "Too many bindings for this address-of-record"),
                ),
                "too_many_bindings",
            ),
            StoreError::DuplicateContact => (
                Reply::new(400, "Bad Request")
                    .header("Warning", self.warning(peer, "Duplicate Contact")),
                "bad_request",
            ),
        };
        Outcome::new(reply, reason).device(device)
    }

    fn contact_error(&self, peer: &Peer, e: ContactError) -> Outcome {
        match e {
            ContactError::Malformed(reason) => self.bad_request(peer, reason),
            ContactError::UnsupportedScheme => {
                let reply = Reply::new(416, "Unsupported URI Scheme").header(
                    "Warning",
                    self.warning(peer, "Contact URI scheme is not sip or sips"),
                );
                Outcome::new(reply, "unsupported_uri_scheme")
            }
        }
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

fn challenge(cluster: &Cluster) -> Arc<str> {
    format!("Bearer realm=\"{}\"", cluster.params.sip_realm).into()
}

enum Contacts<'a> {
    /// No Contact: a query for the current bindings (RFC 3261 §10.2.3).
    Query,
    Star,
    /// A Cisco client naming its device: UCM's one-binding-per-device rules.
    Cisco(NameAddr<'a>),
    /// Any other client: RFC 3261 §10.3, a binding per Contact.
    Aor(Vec<NameAddr<'a>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContactError {
    Malformed(&'static str),
    /// A Contact URI of another scheme than sip/sips (RFC 3261 §8.2.2.1: 416).
    UnsupportedScheme,
}

fn parse_contacts(req: &Request) -> Result<Contacts<'_>, ContactError> {
    use ContactError::Malformed;
    let mut star = false;
    let mut entries: Vec<NameAddr<'_>> = Vec::new();
    for value in &req.contacts {
        match grammar::parse_contact_list(value)
            .map_err(|_| Malformed("Malformed Contact header"))?
        {
            ContactList::Star => star = true,
            ContactList::Entries(list) if entries.is_empty() => entries = list,
            ContactList::Entries(list) => entries.extend(list),
        }
    }
    if star {
        // RFC 3261 §10.2.2: `*` stands alone.
        return if entries.is_empty() && req.contacts.len() == 1 {
            Ok(Contacts::Star)
        } else {
            Err(Malformed("Contact: * must be the only Contact"))
        };
    }
    // The scheme only: a full parse allocates, and the Cisco path never needed it. The
    // RFC 3261 path parses its URIs in full (`register_aor`).
    for e in &entries {
        let scheme = e.uri.split_once(':').map(|(scheme, _)| scheme.trim());
        match scheme {
            Some(s) if s.eq_ignore_ascii_case("sip") || s.eq_ignore_ascii_case("sips") => {}
            Some(_) => return Err(ContactError::UnsupportedScheme),
            None => return Err(Malformed("Malformed Contact URI")),
        }
    }
    if entries.iter().any(|e| e.params.has(DEVICE_NAME_PARAM)) {
        return match (entries.pop(), entries.is_empty()) {
            (Some(entry), true) => Ok(Contacts::Cisco(entry)),
            _ => Err(Malformed("One Contact per REGISTER is supported")),
        };
    }
    Ok(if entries.is_empty() {
        Contacts::Query
    } else {
        Contacts::Aor(entries)
    })
}

/// An RFC 3261 §25.1 `qvalue` (`0` to `1`, at most three decimals), in thousandths.
fn parse_qvalue(text: &str) -> Option<u16> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Thousandths back to a `qvalue`, without trailing zeros (`500` -> `0.5`).
fn format_qvalue(q: u16) -> String {
    if q >= 1000 {
        return "1".into();
    }
    let digits = format!("{q:03}");
    match digits.trim_end_matches('0') {
        "" => "0".into(),
        d => format!("0.{d}"),
    }
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
    fn qvalues_follow_the_rfc_3261_grammar() {
        let good = [
            ("0", 0, "0"),
            ("0.", 0, "0"),
            ("0.5", 500, "0.5"),
            ("0.500", 500, "0.5"),
            ("0.05", 50, "0.05"),
            ("0.001", 1, "0.001"),
            ("1", 1000, "1"),
            ("1.000", 1000, "1"),
        ];
        for (text, q, back) in good {
            assert_eq!(parse_qvalue(text), Some(q), "{text}");
            assert_eq!(format_qvalue(q), back, "{text}");
        }
        for bad in [
            "", "1.001", "1.5", "2", "0.1234", ".5", "-0", "0.5x", "00.5", "+1", "0.\u{e9}",
        ] {
            assert_eq!(parse_qvalue(bad), None, "{bad:?}");
        }
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
