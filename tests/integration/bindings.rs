//! RFC 3261 §10.3 for non-Cisco clients on the legacy ports (UDP and TCP to 5060): several
//! Contacts per REGISTER with their own expiry, refreshed and removed one by one, `*`, the
//! per-AOR cap, `q`, non-SIP Contacts, and a scanner's binding not locking a client out. Cisco
//! clients keep the one-binding-per-device rule. Then what the OAuth ports reveal before a token.

use sip_oauth_registrar::net::ListenerKind::{self, MraOAuth, OAuth, Sip};
use sip_oauth_registrar::net::Transport::{self, Tcp, Tls, Udp};
use sip_oauth_registrar::registrar::Listed;
use tokio::time::Instant;

use crate::harness::*;

/// DN 3001 belongs to SIPlegacy1, a non-secure device: registered without credentials on 5060.
const DN: &str = "3001";

fn contacts(r: &Response) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Contact"))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// `(URI, seconds left)` from the 200's Contact headers `<uri>;expires=N[;q=..]`.
fn listed(r: &Response) -> Vec<(String, u64)> {
    contacts(r)
        .iter()
        .map(|c| {
            let (uri, rest) = c
                .strip_prefix('<')
                .and_then(|c| c.split_once(">;expires="))
                .unwrap_or_else(|| panic!("Contact shape: {c}"));
            let secs = rest.split(';').next().unwrap().parse().unwrap();
            (uri.to_owned(), secs)
        })
        .collect()
}

/// SIPlegacy1's bindings for its `line` (0: DN 3001), the Cisco one included.
fn stored_on(s: &TestServer, line: u16) -> Vec<Listed> {
    let device = s.settings.cluster.device_by_name("SIPlegacy1").unwrap();
    s.server()
        .registrar()
        .store()
        .bindings(device, line, Instant::now())
}

fn stored(s: &TestServer) -> Vec<Listed> {
    stored_on(s, 0)
}

fn client_register(transport: Transport, contact: &str) -> Register {
    let mut r = Register::plain(DN);
    r.transport = match transport {
        Udp => "UDP",
        Tcp => "TCP",
        Tls => "TLS",
    };
    r.contact = Some(contact.into());
    r
}

async fn connect(s: &TestServer, transport: Transport) -> Client {
    match transport {
        Udp => Client::udp(s.addr(0, Sip, Udp)).await,
        _ => Client::tcp(s.addr(0, Sip, Tcp)).await,
    }
}

const A: &str = "sip:3001@127.0.0.1:5071";
const B: &str = "sip:3001@127.0.0.1:5072;transport=tcp";

#[tokio::test]
async fn contacts_are_bound_refreshed_and_removed_one_by_one() {
    let s = TestServer::lab().await;
    for transport in [Udp, Tcp] {
        let mut c = connect(&s, transport).await;
        let t = format!("{transport:?}");
        // Two Contacts, each with its own expires; the header's 3600 is for neither.
        let reg = client_register(transport, &format!("<{A}>;expires=60, <{B}>;expires=100"));
        let r = c.register(&reg).await;
        assert_eq!(r.status, 200, "{t}: {}", r.raw);
        assert_eq!(listed(&r), [(A.to_owned(), 60), (B.to_owned(), 100)], "{t}");
        assert_eq!(r.header("Expires"), None, "{t}: each binding has its own");
        assert_eq!(stored(&s).len(), 2, "{t}");

        // Refresh A alone, in another spelling of the same URI (RFC 3261 §19.1.4): B stays.
        let mut refresh = reg.next();
        refresh.contact = Some("<SIP:3001@127.0.0.1:5071>;expires=90".into());
        let r = c.register(&refresh).await;
        assert_eq!(r.status, 200, "{t}: {}", r.raw);
        let now = listed(&r);
        assert_eq!(now.len(), 2, "{t}: {now:?}");
        assert_eq!(now[0], ("SIP:3001@127.0.0.1:5071".to_owned(), 90), "{t}");
        assert_eq!(now[1].0, B, "{t}");
        assert!((99..=100).contains(&now[1].1), "{t}: {now:?}");

        // Remove B (its own expires=0, in its own Contact header): A stays.
        let mut off = refresh.next();
        off.contact = Some(format!("<{B}>;expires=0"));
        let r = c.register(&off).await;
        assert_eq!(r.status, 200, "{t}: {}", r.raw);
        let now = listed(&r);
        assert_eq!(now.len(), 1, "{t}: {now:?}");
        assert!(now[0].0.eq_ignore_ascii_case(A), "{t}: {now:?}");
        let store = stored(&s);
        assert_eq!(store.len(), 1, "{t}");
        assert!(store[0].contact_uri.eq_ignore_ascii_case(A), "{t}");

        // A query (no Contact) lists without changing anything.
        let query = off.next();
        let bytes = String::from_utf8(query.bytes())
            .unwrap()
            .replace(&format!("Contact: {}\r\n", query.contact_value()), "");
        let r = c.request(bytes.as_bytes()).await;
        assert_eq!(r.status, 200, "{t}: {}", r.raw);
        assert_eq!(listed(&r).len(), 1, "{t}");

        // `*` with Expires: 0 removes every binding of the AOR.
        let mut star = query.next();
        star.contact = Some("*".into());
        star.expires = Some("0".into());
        let r = c.register(&star).await;
        assert_eq!(r.status, 200, "{t}: {}", r.raw);
        assert!(contacts(&r).is_empty(), "{t}: {}", r.raw);
        assert!(stored(&s).is_empty(), "{t}");
        assert!(s.server().registrar().store().is_empty(), "{t}");
    }
}

#[tokio::test]
async fn contacts_in_separate_headers_and_expires_header_fallback() {
    let s = TestServer::lab().await;
    let mut c = connect(&s, Tcp).await;
    // The Expires header applies to a Contact without its own; the grant is capped at the
    // keepalive interval (120 s in the lab).
    let reg = client_register(Tcp, &format!("<{A}>")).header(format!("Contact: <{B}>;expires=70"));
    let r = c.register(&reg).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(listed(&r), [(A.to_owned(), 120), (B.to_owned(), 70)]);

    // Below Min-Expires: 423 for the whole request, nothing changes.
    let mut brief = reg.next();
    brief.contact = Some(format!("<{A}>;expires=3600, <sip:new@127.0.0.1>;expires=5"));
    let r = c.register(&brief).await;
    assert_eq!(r.status, 423, "{}", r.raw);
    assert_eq!(r.header("Min-Expires"), Some("60"));
    assert_eq!(stored(&s).len(), 2);

    // `*` beside another Contact is malformed (RFC 3261 §10.2.2).
    let mut mixed = brief.next();
    mixed.contact = Some("*".into());
    mixed.expires = Some("0".into());
    let mixed = mixed.header(format!("Contact: <{A}>"));
    assert_eq!(c.register(&mixed).await.status, 400);
    assert_eq!(stored(&s).len(), 2);
}

#[tokio::test]
async fn the_per_aor_cap_refuses_the_whole_request_with_403() {
    let s = TestServer::start(&lab_with(&[(
        "max_bindings_per_aor = 10",
        "max_bindings_per_aor = 2",
    )]))
    .await;
    let node = s.node_name(0);
    let mut c = connect(&s, Udp).await;
    let reg = client_register(Udp, &format!("<{A}>, <{B}>"));
    assert_eq!(c.register(&reg).await.status, 200);

    let mut third = client_register(Udp, "<sip:3001@127.0.0.1:5073>");
    third.call_id = "another-client@127.0.0.1".into();
    let r = c.register(&third).await;
    assert_eq!(r.status, 403, "{}", r.raw);
    assert!(r.raw.starts_with("SIP/2.0 403 Forbidden\r\n"));
    assert_eq!(
        r.warning(),
        Some(format!("399 {node} \"Too many bindings for this address-of-record\"").as_str())
    );
    assert_eq!(stored(&s).len(), 2, "nothing was added");

    // Removing one while adding one fits; refreshing at the cap is fine.
    let mut swap = reg.next();
    swap.contact = Some(format!("<{A}>;expires=0, <sip:3001@127.0.0.1:5073>"));
    let r = c.register(&swap).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let uris: Vec<String> = listed(&r).into_iter().map(|(u, _)| u).collect();
    assert_eq!(uris, [B, "sip:3001@127.0.0.1:5073"]);
    let mut refresh = swap.next();
    refresh.contact = Some(format!("<{B}>"));
    assert_eq!(c.register(&refresh).await.status, 200);
}

#[tokio::test]
async fn q_values_are_kept_and_returned_and_validated() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    let mut c = connect(&s, Udp).await;
    let reg = client_register(Udp, &format!("<{A}>;q=0.500, <{B}>;q=1.0"));
    let r = c.register(&reg).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        contacts(&r),
        [
            format!("<{A}>;expires=120;q=0.5"),
            format!("<{B}>;expires=120;q=1")
        ]
    );
    assert_eq!(
        stored(&s).iter().map(|b| b.q).collect::<Vec<_>>(),
        [Some(500), Some(1000)]
    );

    for bad in ["1.5", "0.1234", "2", "-0.1", ".5", "0.5x", "1.001"] {
        let mut r = reg.next();
        r.contact = Some(format!("<sip:3001@127.0.0.1:5079>;q={bad}"));
        let r = c.register(&r).await;
        assert_eq!(r.status, 400, "q={bad}: {}", r.raw);
        assert_eq!(
            r.warning(),
            Some(format!("399 {node} \"Malformed q parameter\"").as_str()),
            "q={bad}"
        );
    }
    assert_eq!(stored(&s).len(), 2);
}

#[tokio::test]
async fn a_non_sip_contact_gets_416() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    for transport in [Udp, Tcp] {
        let mut c = connect(&s, transport).await;
        for contact in [
            "<tel:+15551234>",
            "<mailto:bob@example.com>",
            "<http://example.com/>",
            &format!("<{A}>, <tel:3001>"),
        ] {
            let r = c.register(&client_register(transport, contact)).await;
            assert!(
                r.raw.starts_with("SIP/2.0 416 Unsupported URI Scheme\r\n"),
                "{transport:?} {contact}: {}",
                r.raw
            );
            assert_eq!(
                r.warning(),
                Some(format!("399 {node} \"Contact URI scheme is not sip or sips\"").as_str())
            );
        }
    }
    // A sip: URI that is not one is malformed, not unsupported.
    let mut c = connect(&s, Udp).await;
    let r = c.register(&client_register(Udp, "<sip:@127.0.0.1>")).await;
    assert_eq!(r.status, 400, "{}", r.raw);
    assert_eq!(
        r.warning(),
        Some(format!("399 {node} \"Malformed Contact URI\"").as_str())
    );
    assert!(stored(&s).is_empty());
}

/// The issue's report: sipvicious `svwar` probed DN 3001, then baresip registering the DN was
/// locked out for 120 s. A scanner's binding is one binding of the AOR; the client gets its own.
#[tokio::test]
async fn a_scanners_binding_does_not_lock_out_a_client() {
    let s = TestServer::lab().await;
    let server = s.addr(0, Sip, Udp);
    // svwar's REGISTER: From/To/Contact all the extension, Contact host the scanner's address.
    let mut scanner = Client::udp(server).await;
    let probe = format!(
        "REGISTER sip:{ip} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1234567890;rport\r\n\
         Max-Forwards: 70\r\n\
         To: \"3001\"<sip:3001@{ip}>\r\n\
         From: \"3001\"<sip:3001@{ip}>;tag=6331323433363137363133\r\n\
         User-Agent: friendly-scanner\r\n\
         Call-ID: 958117462718183818330112\r\n\
         Contact: sip:3001@127.0.0.1:5061\r\n\
         CSeq: 1 REGISTER\r\n\
         Accept: application/sdp\r\n\
         Content-Length: 0\r\n\r\n",
        ip = server.ip()
    );
    let r = scanner.request(probe.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.raw);

    // baresip: its own Contact, +sip.instance, Call-ID; asks for 3600 s.
    let mut baresip = Client::udp(server).await;
    let contact = "<sip:3001-0x5581b2c0@127.0.0.1:46021;transport=udp>;\
                   +sip.instance=\"<urn:uuid:6e9d4c5e-2f1a-4c8e-9a36-3f3c1f0e0b11>\"";
    let mut reg = client_register(Udp, contact);
    reg.call_id = "b3c8a1f0e2d94a77".into();
    let r = baresip.register(&reg).await;
    assert_eq!(r.status, 200, "no 403 for another client: {}", r.raw);
    let uris: Vec<String> = listed(&r).into_iter().map(|(u, _)| u).collect();
    assert_eq!(
        uris,
        [
            "sip:3001@127.0.0.1:5061",
            "sip:3001-0x5581b2c0@127.0.0.1:46021;transport=udp"
        ]
    );

    // baresip restarts: new Call-ID, CSeq from 1, same Contact: its binding is replaced.
    let mut restarted = reg.clone();
    restarted.call_id = "0f1e2d3c4b5a6978".into();
    restarted.cseq = 1;
    let r = baresip.register(&restarted).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(listed(&r).len(), 2);
    let store = stored(&s);
    assert_eq!(store.len(), 2);
    assert_eq!(
        s.server()
            .registrar()
            .store()
            .list(Instant::now())
            .iter()
            .filter(|(_, b)| &*b.call_id == "0f1e2d3c4b5a6978")
            .count(),
        1
    );
}

/// A Cisco client (naming the device) keeps UCM's rule: one client per device, 403 for a second.
#[tokio::test]
async fn a_cisco_duplicate_still_gets_403_beside_aor_bindings() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    let mut c = connect(&s, Udp).await;
    // An RFC 3261 client's binding on the line does not stand in the Cisco client's way...
    assert_eq!(
        c.register(&client_register(Udp, &format!("<{A}>")))
            .await
            .status,
        200
    );
    let mut first = Register::jabber("SIPlegacy1", DN);
    first.transport = "UDP";
    let r = c.register(&first).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("Expires"), Some("120"));
    // ...but a second Cisco client for the device is refused as UCM does.
    let mut second = Register::jabber("SIPlegacy1", DN);
    second.transport = "UDP";
    second.instance = Some("<urn:uuid:00000000-0000-0000-0000-000000000002>".into());
    let r = c.register(&second).await;
    assert_eq!(r.status, 403, "{}", r.raw);
    assert_eq!(
        r.warning(),
        Some(format!("399 {node} \"Registration is active for another client\"").as_str())
    );
    // Two Contacts from a Cisco client are still refused.
    let mut two = first.next();
    two.contact = Some(format!("{}, <{A}>", first.contact_value()));
    let r = c.register(&two).await;
    assert_eq!(r.status, 400, "{}", r.raw);
    assert_eq!(
        r.warning(),
        Some(format!("399 {node} \"One Contact per REGISTER is supported\"").as_str())
    );
    assert_eq!(stored(&s).len(), 2);
}

/// The 407 without a token with Via, the To tag and Call-ID taken out: what a scanner compares.
fn normalized(r: &Response) -> String {
    let mut out = r.raw.lines().next().unwrap().to_owned();
    for (n, v) in &r.headers {
        let v = match n.as_str() {
            "Via" | "Call-ID" | "Date" => continue,
            "To" => v.split(";tag=").next().unwrap(),
            _ => v.as_str(),
        };
        out.push_str(&format!("\n{n}: {v}"));
    }
    out
}

async fn oauth_attempt(s: &TestServer, kind: ListenerKind, reg: &Register) -> Response {
    let cert = (kind == MraOAuth).then(|| s.expressway_cert());
    let mut c = Client::tls(s.addr(0, kind, Tls), s.lab_ca().cert_pem(), cert.as_ref()).await;
    c.register(reg).await
}

#[tokio::test]
async fn oauth_ports_tell_nothing_about_devices_before_a_token() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    // (device named in Contact, DN): the To user is the same for all so the 407s can be
    // compared whole.
    let cases: &[(Option<&str>, &str, &str)] = &[
        (Some("CSFrado"), "1010", "registrable OAuth device"),
        (Some("CSFnobody"), "1010", "missing device"),
        (Some("CSFrado"), "9999", "missing line"),
        (Some("SIPlegacy1"), "3001", "device of a non-OAuth profile"),
        (None, "4444", "missing DN, plain client"),
        (None, "3001", "non-OAuth DN, plain client"),
    ];
    for kind in [OAuth, MraOAuth] {
        let mut answers = Vec::new();
        for &(device, dn, what) in cases {
            let mut reg = match device {
                Some(d) => Register::jabber(d, dn),
                None => Register::plain(dn),
            };
            reg.call_id = "same-call-id@10.10.10.10".into();
            let r = oauth_attempt(&s, kind, &reg).await;
            assert_eq!(r.status, 407, "{kind:?} {what}: {}", r.raw);
            // Only the To user differs with the DN asked for.
            answers.push(normalized(&r).replace(&format!("sip:{dn}@"), "sip:DN@"));
        }
        for (a, (_, _, what)) in answers.iter().zip(cases) {
            assert_eq!(a, &answers[0], "{kind:?}: {what} vs a registrable device");
        }
        // A token that is not valid is no better.
        let reg = Register::jabber("CSFnobody", "1010").bearer("not-a-token");
        let r = oauth_attempt(&s, kind, &reg).await;
        assert_eq!(r.status, 407, "{kind:?}: {}", r.raw);
    }

    // With a valid token, the user is authenticated: UCM's answers are revealed.
    let token = s.token("rado");
    let warning = |text: &str| format!("399 {node} \"{text}\"");
    let expect = [
        (Some("CSFnobody"), "1010", 404, "Device not found"),
        (Some("CSFrado"), "9999", 404, "Line not found on device"),
        (None, "4444", 404, "Directory number not found"),
        (
            Some("SIPlegacy1"),
            "3001",
            403,
            "SIP OAuth Registration port Mismatch",
        ),
        (
            Some("CSFalice"),
            "2001",
            403,
            "Token user is not the device owner",
        ),
    ];
    for (device, dn, status, text) in expect {
        let reg = match device {
            Some(d) => Register::jabber(d, dn),
            None => Register::plain(dn),
        }
        .bearer(&token);
        let r = oauth_attempt(&s, OAuth, &reg).await;
        assert_eq!(r.status, status, "{device:?}/{dn}: {}", r.raw);
        assert_eq!(r.warning(), Some(warning(text).as_str()), "{device:?}/{dn}");
        if status == 403 && text.contains("Mismatch") {
            assert_eq!(r.header("Retry-After"), Some("35"));
        }
    }
    // The legacy ports keep UCM's answers, no token asked.
    let mut c = Client::udp(s.addr(0, Sip, Udp)).await;
    let mut missing = Register::jabber("CSFnobody", "1010");
    missing.transport = "UDP";
    let r = c.register(&missing).await;
    assert_eq!(r.status, 404, "{}", r.raw);
    assert_eq!(r.warning(), Some(warning("Device not found").as_str()));
    let mut oauth_device = Register::jabber("CSFrado", "1010");
    oauth_device.transport = "UDP";
    let r = c.register(&oauth_device).await;
    assert_eq!(r.status, 403, "{}", r.raw);
    assert_eq!(
        r.warning(),
        Some(warning("SIP OAuth Registration port Mismatch").as_str())
    );
}

/// A 64 KB datagram of Contacts is refused with the cap's 403 before any Contact is bound
/// (and before the store's lock: the daemon answers the next client at once).
#[tokio::test]
async fn a_datagram_of_thousands_of_contacts_gets_the_caps_403() {
    let s = TestServer::lab().await;
    let node = s.node_name(0);
    let mut c = connect(&s, Udp).await;
    let many: Vec<String> = (0..2250)
        .map(|i| format!("<sip:u{i}@127.0.0.1:{}>", 10_000 + i))
        .collect();
    let reg = client_register(Udp, &many.join(","));
    let bytes = reg.bytes();
    assert!(
        bytes.len() > 60_000 && bytes.len() < 65_000,
        "{}",
        bytes.len()
    );
    let r = c.request(&bytes).await;
    assert_eq!(r.status, 403, "{}", r.raw);
    assert_eq!(
        r.warning(),
        Some(format!("399 {node} \"Too many bindings for this address-of-record\"").as_str())
    );
    assert!(stored(&s).is_empty());
    // Twice the cap (10 removals of what is not there, 10 additions) is still a request the
    // cap could take.
    let fits: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "<sip:u{i}@127.0.0.1>;expires={}",
                if i < 10 { 0 } else { 60 }
            )
        })
        .collect();
    let r = c.register(&client_register(Udp, &fits.join(","))).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(listed(&r).len(), 10);
    // One Contact more is refused by count, though applying it would fit: eleven removals of
    // nothing and ten refreshes.
    let one_more: Vec<String> = (0..21)
        .map(|i| match i {
            0..=10 => format!("<sip:gone{i}@127.0.0.1>;expires=0"),
            _ => format!("<sip:u{}@127.0.0.1>;expires=90", i - 1),
        })
        .collect();
    let mut one_more = client_register(Udp, &one_more.join(","));
    one_more.call_id = "another@127.0.0.1".into();
    let r = c.register(&one_more).await;
    assert_eq!(r.status, 403, "{}", r.raw);
    let left = stored(&s);
    assert_eq!(left.len(), 10);
    assert!(
        left.iter().all(|b| b.expires_in <= 60),
        "nothing was refreshed to 90 s: {left:?}"
    );
}

/// SIPlegacy1 with a second line, DN 3002: each DN is its own address-of-record.
#[tokio::test]
async fn each_dn_of_a_multi_line_device_is_its_own_aor() {
    let s = TestServer::start(&lab_with(&[(
        r#"lines = [{ dn = "3001", display_name = "Legacy", contact = "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b03" }]"#,
        r#"lines = [{ dn = "3001", display_name = "Legacy", contact = "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b03" }, { dn = "3002", display_name = "Legacy 2", contact = "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b04" }]"#,
    ), ("max_bindings_per_aor = 10", "max_bindings_per_aor = 1")]))
    .await;
    let mut c = connect(&s, Udp).await;
    let on = |dn: &str, contact: &str, call_id: &str| {
        let mut r = client_register(Udp, contact);
        r.dn = dn.into();
        r.call_id = call_id.into();
        r
    };
    // The same Contact for both DNs: two bindings, each under its DN's cap of one.
    let r = c
        .register(&on("3001", &format!("<{A}>"), "one@127.0.0.1"))
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let two = on("3002", &format!("<{A}>"), "two@127.0.0.1");
    let r = c.register(&two).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(listed(&r), [(A.to_owned(), 120)], "3002 lists its own only");
    assert_eq!(s.server().registrar().store().len(), 2);

    // A query for 3001 lists 3001's binding only.
    let query = on("3001", "", "q@127.0.0.1");
    let bytes = String::from_utf8(query.bytes())
        .unwrap()
        .replace("Contact: \r\n", "");
    let r = c.request(bytes.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(listed(&r).len(), 1, "{}", r.raw);

    // `*` for 3002 removes 3002's binding, not 3001's.
    let mut star = two.next();
    star.contact = Some("*".into());
    star.expires = Some("0".into());
    let r = c.register(&star).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(contacts(&r).is_empty(), "{}", r.raw);
    let left = stored_on(&s, 0);
    assert_eq!(left.len(), 1);
    assert_eq!(&*left[0].contact_uri, A);
    assert!(stored_on(&s, 1).is_empty());
}

/// A `Contact: *` on another Call-ID than the Cisco client's removes the AOR's bindings and
/// answers 200 listing the Cisco binding, which stays: it is not this client's to remove.
#[tokio::test]
async fn star_from_another_call_id_leaves_the_cisco_binding_listed() {
    let s = TestServer::lab().await;
    let mut c = connect(&s, Udp).await;
    let mut jabber = Register::jabber("SIPlegacy1", DN);
    jabber.transport = "UDP";
    assert_eq!(c.register(&jabber).await.status, 200);
    let r = c.register(&client_register(Udp, &format!("<{A}>"))).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(listed(&r).len(), 2);

    let mut star = client_register(Udp, "*");
    star.call_id = "someone-else@127.0.0.1".into();
    star.expires = Some("0".into());
    let r = c.register(&star).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let left = listed(&r);
    assert_eq!(left.len(), 1, "{}", r.raw);
    assert!(
        left[0].0.contains("a8ae9f92-4b07-a0d7-d701-29320aed1e2e"),
        "{left:?}"
    );
    assert!((119..=120).contains(&left[0].1), "{left:?}");
    let store = s.server().registrar().store();
    assert!(
        store
            .lookup(
                s.settings.cluster.device_by_name("SIPlegacy1").unwrap(),
                Instant::now()
            )
            .unwrap()
            .device_named
    );
    assert_eq!(store.len(), 1);
}
