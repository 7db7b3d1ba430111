//! SIP parsing and the whole REGISTER pipeline on hostile bytes: [`sip::parse`], then a real
//! [`Registrar`] over the lab cluster handling the bytes as if they came from the OAuth listener
//! (5090, TLS), the plain SIP listener (5060, UDP) and the MRA listener (5091, Expressway-C's
//! mutual TLS). No panic, and no reply to a message that is not a request.
//!
//! To let the fuzzer past authentication, every `@TOKEN@` in the input is replaced with a valid
//! access token of the lab user `rado` (owner of `CSFrado`), issued once at start; the seed
//! corpus has Jabber's REGISTER (docs/ucm.md §4) with and without it.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use sip_oauth_registrar::auth::{AuthOptions, TokenAuthority, generate_encryption_key, unix_now};
use sip_oauth_registrar::cluster::NodeId;
use sip_oauth_registrar::config::Settings;
use sip_oauth_registrar::net::{ListenerKind, Peer, Transport};
use sip_oauth_registrar::pki::generate_rsa_signing_key_pem;
use sip_oauth_registrar::registrar::{Registrar, Store};
use sip_oauth_registrar::sip;

const MARKER: &[u8] = b"@TOKEN@";
const CLIENT_ID: &str = "C3b0affefe1439041683e9c2c37d36f438ef0ef27c0938adc6226e0c03d169f2a";

struct Fixture {
    registrar: Registrar,
    token: Vec<u8>,
    peers: [Peer; 3],
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
                cache_capacity: settings.tokens.cache_entries,
            },
        )
        .expect("token authority"),
    );
    let token = tokens
        .issue("rado", CLIENT_ID, 24 * 3600, unix_now())
        .expect("token issue")
        .token
        .into_bytes();
    let store = Store::new(cluster.devices.len(), settings.limits.max_bindings);
    let peer = |listener, transport, port, cert_names: Option<&[&str]>| Peer {
        addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 10, 10, 10)), port),
        node: NodeId(0),
        listener,
        transport,
        cert_names: cert_names.map(|n| n.iter().map(|s| (*s).to_owned()).collect()),
    };
    Fixture {
        registrar: Registrar::new(cluster, store, tokens),
        token,
        peers: [
            peer(ListenerKind::OAuth, Transport::Tls, 62162, None),
            peer(ListenerKind::Sip, Transport::Udp, 5060, None),
            peer(
                ListenerKind::MraOAuth,
                Transport::Tls,
                41000,
                Some(&["exp-c.domain-1.com"]),
            ),
        ],
    }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let bytes = with_token(data, &f.token);
    let request = sip::parse(&bytes);
    for peer in &f.peers {
        let reply = f.registrar.handle(&bytes, peer);
        // The UDP transport's path for datagrams it could not frame.
        if let Some(reply) = f
            .registrar
            .handle_unframed(&bytes, peer, "Content-Length beyond the datagram")
        {
            assert_no_injection(&reply);
        }
        if bytes.starts_with(b"SIP/") {
            assert!(reply.is_none(), "a response was answered");
        }
        if let Some(reply) = reply {
            assert!(
                reply.starts_with(b"SIP/2.0 "),
                "reply is not a SIP response"
            );
            assert!(request.is_ok() || reply.len() < 64 * 1024);
            assert_no_injection(&reply);
        }
    }
});

/// Every LF of a reply's header section ends a CRLF, and any other control character is
/// escaped: nothing a request carried became a line of its own.
fn assert_no_injection(reply: &[u8]) {
    let head_end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(reply.len());
    let head = &reply[..head_end];
    for (i, &b) in head.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && head[i - 1] == b'\r', "lone LF in a reply"),
            b'\r' => assert!(head.get(i + 1) == Some(&b'\n'), "lone CR in a reply"),
            b'\t' => {}
            // A quoted-pair (RFC 3261 §25.1) may escape other control characters.
            _ => assert!(
                b >= 0x20 && b != 0x7f || (i > 0 && head[i - 1] == b'\\'),
                "control byte {b:#x} in a reply"
            ),
        }
    }
}

fn with_token(data: &[u8], token: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while !rest.is_empty() {
        if rest.starts_with(MARKER) {
            out.extend_from_slice(token);
            rest = &rest[MARKER.len()..];
        } else {
            out.push(rest[0]);
            rest = &rest[1..];
        }
    }
    out
}
