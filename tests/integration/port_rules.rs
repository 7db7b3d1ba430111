//! Every row of the README's port rule table, over real sockets on every listener kind.

use sip_oauth_registrar::net::ListenerKind::{self, MraOAuth, OAuth, Sip, SipSecure};
use sip_oauth_registrar::net::Transport::{self, Tcp, Tls, Udp};
use sip_oauth_registrar::pki::CertAndKey;

use crate::harness::*;

const PORT_MISMATCH: &str = "SIP OAuth Registration port Mismatch";
const TLS_FAILURE: &str = "TLS authentication failure";

/// device, DN, listener, transport, client certificate, expected outcome
type Row<'a> = (
    &'a str,
    &'a str,
    ListenerKind,
    Transport,
    Option<&'a CertAndKey>,
    Expect,
);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Challenge,
    /// On an OAuth port, a device the port does not fit: the 407 like any other without a
    /// token (nothing about the device is told before one), then with its owner's token the
    /// port rule's 403.
    ChallengeThenForbidden {
        owner: &'static str,
        text: &'static str,
    },
    Ok,
    Forbidden(&'static str),
}

async fn attempt(
    s: &TestServer,
    node: u16,
    kind: ListenerKind,
    transport: Transport,
    device: &str,
    dn: &str,
    cert: Option<&CertAndKey>,
) -> Response {
    let mut reg = Register::jabber(device, dn);
    reg.transport = match transport {
        Udp => "UDP",
        Tcp => "TCP",
        Tls => "TLS",
    };
    attempt_raw(s, node, kind, transport, &reg, cert).await
}

fn check(r: &Response, expect: Expect, node: &str, row: &str) {
    match expect {
        Expect::Challenge => {
            assert_eq!(r.status, 407, "{row}: {}", r.raw);
            assert_eq!(
                r.header("Proxy-Authenticate"),
                Some("Bearer realm=\"ccmsipline\""),
                "{row}"
            );
        }
        Expect::Ok => assert_eq!(r.status, 200, "{row}: {}", r.raw),
        Expect::ChallengeThenForbidden { .. } => check(r, Expect::Challenge, node, row),
        Expect::Forbidden(text) => {
            assert_eq!(r.status, 403, "{row}: {}", r.raw);
            assert_eq!(
                r.warning(),
                Some(format!("399 {node} \"{text}\"").as_str()),
                "{row}"
            );
            if text == PORT_MISMATCH {
                assert_eq!(r.header("Retry-After"), Some("35"), "{row}");
            }
        }
    }
}

#[tokio::test]
async fn cluster_oauth_mode_on() {
    let s = TestServer::lab().await;
    let ca = s.lab_ca();
    let exp_c = s.expressway_cert();
    let lsc = ca.issue_client("SEP0011223344AA", &[]).unwrap();
    let wrong_lsc = ca.issue_client("SEP999999999999", &[]).unwrap();
    use Expect::*;
    let rows: &[Row<'_>] = &[
        // OAuth device
        ("CSFrado", "1010", OAuth, Tls, None, Challenge),
        ("CSFrado", "1010", MraOAuth, Tls, Some(&exp_c), Challenge),
        ("CSFrado", "1010", Sip, Udp, None, Forbidden(PORT_MISMATCH)),
        ("CSFrado", "1010", Sip, Tcp, None, Forbidden(PORT_MISMATCH)),
        (
            "CSFrado",
            "1010",
            SipSecure,
            Tls,
            None,
            Forbidden(PORT_MISMATCH),
        ),
        (
            "SEP001122334455",
            "2002",
            Sip,
            Udp,
            None,
            Forbidden(PORT_MISMATCH),
        ),
        ("SEP001122334455", "2002", OAuth, Tls, None, Challenge),
        // Non-OAuth, non-secure device
        (
            "SIPlegacy1",
            "3001",
            OAuth,
            Tls,
            None,
            ChallengeThenForbidden {
                owner: "bob",
                text: PORT_MISMATCH,
            },
        ),
        (
            "SIPlegacy1",
            "3001",
            MraOAuth,
            Tls,
            Some(&exp_c),
            ChallengeThenForbidden {
                owner: "bob",
                text: PORT_MISMATCH,
            },
        ),
        ("SIPlegacy1", "3001", Sip, Udp, None, Ok),
        ("SIPlegacy1", "3001", Sip, Tcp, None, Ok),
        ("SIPlegacy1", "3001", SipSecure, Tls, None, Ok),
        // Non-OAuth, encrypted device (certificate on 5061)
        (
            "SEP0011223344AA",
            "2003",
            OAuth,
            Tls,
            None,
            ChallengeThenForbidden {
                owner: "bob",
                text: PORT_MISMATCH,
            },
        ),
        ("SEP0011223344AA", "2003", SipSecure, Tls, Some(&lsc), Ok),
        (
            "SEP0011223344AA",
            "2003",
            SipSecure,
            Tls,
            None,
            Forbidden(TLS_FAILURE),
        ),
        (
            "SEP0011223344AA",
            "2003",
            SipSecure,
            Tls,
            Some(&wrong_lsc),
            Forbidden(TLS_FAILURE),
        ),
        (
            "SEP0011223344AA",
            "2003",
            Sip,
            Udp,
            None,
            Forbidden(TLS_FAILURE),
        ),
    ];
    for (node, name) in [(0u16, s.node_name(0)), (1, s.node_name(1))] {
        for &(device, dn, kind, transport, cert, expect) in rows {
            let row = format!(
                "node {name}: {device} on {kind:?}/{transport:?} cert={}",
                cert.is_some()
            );
            let r = attempt(&s, node, kind, transport, device, dn, cert).await;
            check(&r, expect, &name, &row);
            if let ChallengeThenForbidden { owner, text } = expect {
                let reg = Register::jabber(device, dn).bearer(&s.token(owner));
                let r = attempt_raw(&s, node, kind, transport, &reg, cert).await;
                check(&r, Forbidden(text), &name, &format!("{row} with a token"));
            }
            // Leave no binding behind, so rows do not see each other's registrations.
            if r.status == 200 {
                let mut off = Register::jabber(device, dn);
                off.expires = Some("0".into());
                let _ = attempt_raw(&s, node, kind, transport, &off, cert).await;
            }
        }
    }
}

async fn attempt_raw(
    s: &TestServer,
    node: u16,
    kind: ListenerKind,
    transport: Transport,
    reg: &Register,
    cert: Option<&CertAndKey>,
) -> Response {
    let addr = s.addr(node, kind, transport);
    let mut c = match transport {
        Udp => Client::udp(addr).await,
        Tcp => Client::tcp(addr).await,
        Tls => Client::tls(addr, s.lab_ca().cert_pem(), cert).await,
    };
    c.register(reg).await
}

#[tokio::test]
async fn cluster_oauth_mode_off() {
    let s = TestServer::start(&lab_with(&[(
        "sip_oauth_mode = true",
        "sip_oauth_mode = false",
    )]))
    .await;
    let node = s.node_name(0);
    assert_eq!(
        s.try_addr(0, OAuth, Tls),
        None,
        "OAuth ports are bound only in SIP OAuth mode"
    );
    assert_eq!(s.try_addr(0, MraOAuth, Tls), None);
    assert_eq!(s.try_addr(1, OAuth, Tls), None);

    let ca = s.lab_ca();
    let lsc = ca.issue_client("CSFrado", &[]).unwrap();
    use Expect::*;
    let r = attempt(&s, 0, SipSecure, Tls, "CSFrado", "1010", Some(&lsc)).await;
    check(
        &r,
        Ok,
        &node,
        "OAuth profile, mode off, 5061 with certificate",
    );
    let r = attempt(&s, 0, Sip, Udp, "CSFalice", "2001", None).await;
    check(
        &r,
        Forbidden(TLS_FAILURE),
        &node,
        "OAuth profile, mode off, 5060",
    );
    let r = attempt(&s, 0, Sip, Tcp, "SIPlegacy1", "3001", None).await;
    check(&r, Ok, &node, "non-secure device, mode off, 5060");
}
