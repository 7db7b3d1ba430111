//! Responses in UCM's header order: Via, From, To (with a fresh tag), Date, Call-ID, Server,
//! CSeq, then the response's own headers, Content-Type and Content-Length (docs/ucm.md §4).
//!
//! The top Via gets `received` and `rport` from the request's source address (RFC 3261
//! §18.2.1, RFC 3581 §4), written straight into the response: nothing is allocated for it.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Echo;

/// What varies between responses.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub reason: &'static str,
    /// Response-specific headers, in order, after CSeq.
    pub headers: Vec<(&'static str, String)>,
    /// Content-Type and body.
    pub body: Option<(&'static str, &'static [u8])>,
}

impl Reply {
    pub fn new(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            reason,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Writes the response to a request that came from `source`. `to_tag` is used only when the
/// request's To has no tag yet.
pub fn encode(
    echo: &Echo,
    reply: &Reply,
    server: &str,
    to_tag: u32,
    source: SocketAddr,
) -> Vec<u8> {
    // Sized once: echoed values, our headers and the body, plus room for the fixed header
    // names, Date, the To tag and the top Via's `received`/`rport`, so nothing reallocates.
    let echoed = echo.vias.iter().map(|v| v.len() + 7).sum::<usize>()
        + echo.from.len()
        + echo.to.len()
        + echo.call_id.len()
        + echo.cseq.len()
        + server.len();
    let ours = reply
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum::<usize>()
        + reply.body.map_or(0, |(t, b)| t.len() + b.len() + 16);
    let mut out = String::with_capacity(256 + echoed + ours);
    // `write!` into a String cannot fail.
    let _ = write!(out, "SIP/2.0 {} {}\r\n", reply.status, reply.reason);
    for (i, via) in echo.vias.iter().enumerate() {
        out.push_str("Via: ");
        if i == 0 {
            write_top_via(&mut out, via, source);
        } else {
            out.push_str(via);
        }
        out.push_str("\r\n");
    }
    let _ = write!(out, "From: {}\r\n", echo.from);
    if has_tag(&echo.to) {
        let _ = write!(out, "To: {}\r\n", echo.to);
    } else {
        let _ = write!(out, "To: {};tag={to_tag}\r\n", echo.to);
    }
    with_date(|date| {
        let _ = write!(out, "Date: {date}\r\n");
    });
    let _ = write!(out, "Call-ID: {}\r\n", echo.call_id);
    let _ = write!(out, "Server: {server}\r\n");
    let _ = write!(out, "CSeq: {}\r\n", echo.cseq);
    for (name, value) in &reply.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let body: &[u8] = match reply.body {
        Some((content_type, body)) => {
            let _ = write!(out, "Content-Type: {content_type}\r\n");
            body
        }
        None => &[],
    };
    let _ = write!(out, "Content-Length: {}\r\n\r\n", body.len());
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Writes the top Via header value as the response echoes it (RFC 3261 §18.2.1, RFC 3581 §4):
///
/// - with `rport` (empty or not: a client must send it empty, and a value it sent anyway is
///   replaced), `received=<source address>;rport=<source port>` take its place, even when the
///   address equals the sent-by host;
/// - without `rport`, `;received=<source address>` is appended when the sent-by host is a name
///   or an address other than the source;
/// - otherwise, and when the value cannot be read as a Via, it is echoed as received.
///
/// A `received` the request already carried is replaced when ours is written. Only the first
/// via-parm of a comma-separated value is the top Via; the rest is echoed as received. IPv6
/// addresses are written without brackets (RFC 3261's `received` grammar); an IPv4-mapped
/// source (a dual-stack socket) counts as the IPv4 address it maps.
pub fn write_top_via(out: &mut String, via: &str, source: SocketAddr) {
    let Some(top) = TopVia::read(via) else {
        out.push_str(via);
        return;
    };
    let ip = source.ip().to_canonical();
    if !top.rport && top.host == Some(ip) {
        out.push_str(via);
        return;
    }
    let port = source.port();
    out.push_str(&via[..top.params_start]);
    let mut wrote = false;
    for param in via[top.params_start..top.end].split(';').skip(1) {
        let name = param_name(param);
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        if !name.eq_ignore_ascii_case("rport") {
            out.push(';');
            out.push_str(param);
        } else if !wrote {
            // In place of the first `rport`; a second one is dropped.
            out.push_str(";received=");
            push_ip(out, ip);
            let _ = write!(out, ";rport={port}");
            wrote = true;
        }
    }
    if !wrote {
        out.push_str(";received=");
        push_ip(out, ip);
    }
    out.push_str(&via[top.end..]);
}

/// `Ipv4Addr`'s `Display` goes through the formatter's padding support, which costs more than
/// the rest of the Via rewrite together: IPv4 is written digit by digit.
fn push_ip(out: &mut String, ip: IpAddr) {
    let IpAddr::V4(v4) = ip else {
        let _ = write!(out, "{ip}");
        return;
    };
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// Where the parts of a Via header value's first via-parm are.
struct TopVia {
    /// The sent-by host as an address; `None` for a domain name.
    host: Option<IpAddr>,
    /// Byte offset just past sent-by: the via-params follow, each after a `;`.
    params_start: usize,
    /// End of the first via-parm: the value's end, or the comma before the next via-parm.
    end: usize,
    /// Whether an `rport` parameter is present.
    rport: bool,
}

impl TopVia {
    /// `SIP / 2.0 / UDP host[:port] *(;param)`; LWS is allowed around `/`, `;`, `=` and
    /// between the protocol and sent-by (RFC 3261 §20.42, §25.1).
    fn read(via: &str) -> Option<Self> {
        let bytes = via.as_bytes();
        // The end of this via-parm: the first comma outside a quoted string (a quote is rare:
        // the byte loop runs only after one).
        let mut end = via.len();
        if let Some(i) = memchr::memchr2(b',', b'"', bytes) {
            let mut quoted = false;
            for (j, &b) in bytes.iter().enumerate().skip(i) {
                match b {
                    b'"' => quoted = !quoted,
                    b',' if !quoted => {
                        end = j;
                        break;
                    }
                    _ => {}
                }
            }
        }
        let top = &via[..end];
        // sent-protocol: two slashes, then the transport token.
        let first = top.find('/')?;
        let second = first + 1 + top[first + 1..].find('/')?;
        let is_ws = |b: &u8| matches!(b, b' ' | b'\t');
        let mut i = second + 1;
        while bytes.get(i).is_some_and(is_ws) {
            i += 1;
        }
        let transport = i;
        while i < end && !is_ws(&bytes[i]) && bytes[i] != b';' {
            i += 1;
        }
        if i == transport {
            return None;
        }
        while i < end && is_ws(&bytes[i]) {
            i += 1;
        }
        // sent-by: host, an IPv6 reference in brackets, then an optional `:port`.
        let host_start = i;
        let host = if bytes.get(i) == Some(&b'[') {
            let close = i + top[i..].find(']')?;
            i = close + 1;
            Some(top[host_start + 1..close].parse::<IpAddr>().ok()?)
        } else {
            while i < end && !matches!(bytes[i], b':' | b';' | b' ' | b'\t') {
                i += 1;
            }
            top[host_start..i].parse::<IpAddr>().ok()
        }
        .map(|ip| ip.to_canonical());
        if i == host_start {
            return None;
        }
        // The port, and any LWS before the first `;`.
        let params_start = host_start + top[host_start..].find(';').unwrap_or(end - host_start);
        let rest = top[i..params_start].trim_matches([' ', '\t']);
        if !(rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|p| p.trim_start().bytes().all(|b| b.is_ascii_digit())))
        {
            return None;
        }
        let params = &bytes[params_start..end];
        let rport = memchr::memchr_iter(b';', params).any(|semi| {
            let name = &params[semi + 1..];
            let skip = name.iter().take_while(|b| is_ws(b)).count();
            let name = &name[skip..];
            name.get(..5)
                .is_some_and(|n| n.eq_ignore_ascii_case(b"rport"))
                && matches!(name.get(5), None | Some(b' ' | b'\t' | b'=' | b';'))
        });
        Some(Self {
            host,
            params_start,
            end,
            rport,
        })
    }
}

/// A via-param's name, without the LWS around it.
fn param_name(param: &str) -> &str {
    param
        .split('=')
        .next()
        .unwrap_or_default()
        .trim_matches([' ', '\t'])
}

/// A new To tag: UCM uses decimal numbers such as `441122775`.
pub fn new_tag() -> u32 {
    fastrand::u32(1_000_000..u32::MAX)
}

fn has_tag(to: &str) -> bool {
    // The tag is a header parameter: after the closing '>' when there is one.
    let params = match to.rfind('>') {
        Some(i) => &to[i..],
        None => to,
    };
    params.split(';').skip(1).any(|p| {
        p.trim_start()
            .get(..4)
            .is_some_and(|n| n.eq_ignore_ascii_case("tag="))
    })
}

thread_local! {
    /// RFC 1123 date, formatted once per second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn with_date(f: impl FnOnce(&str)) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        f(text);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_tag_detection() {
        assert!(!has_tag("<sip:1010@10.10.10.1>"));
        assert!(has_tag("<sip:1010@10.10.10.1>;tag=1"));
        assert!(has_tag("<sip:1010@10.10.10.1>; TAG=1"));
        assert!(!has_tag("<sip:1010@10.10.10.1;tag=uri-param>"));
        assert!(has_tag("sip:1010@10.10.10.1;tag=x"));
    }

    fn top_via(via: &str, source: &str) -> String {
        let mut out = String::new();
        write_top_via(&mut out, via, source.parse().unwrap());
        out
    }

    #[test]
    fn an_empty_rport_gets_the_source_port_and_received_even_when_the_host_matches() {
        // RFC 3581 §4: `received` is added whether or not it equals the sent-by host.
        assert_eq!(
            top_via(
                "SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff",
                "10.1.1.1:9988"
            ),
            "SIP/2.0/UDP 10.1.1.1:4540;received=10.1.1.1;rport=9988;branch=z9hG4bKkjshdyff"
        );
        // The RFC's own example: a NAT in between.
        assert_eq!(
            top_via(
                "SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bKkjshdyff",
                "192.0.2.1:9988"
            ),
            "SIP/2.0/UDP 10.1.1.1:4540;received=192.0.2.1;rport=9988;branch=z9hG4bKkjshdyff"
        );
        // Last parameter, no port in sent-by.
        assert_eq!(
            top_via(
                "SIP/2.0/UDP pc.example.com;branch=z9hG4bK1;rport",
                "192.0.2.1:5060"
            ),
            "SIP/2.0/UDP pc.example.com;branch=z9hG4bK1;received=192.0.2.1;rport=5060"
        );
    }

    #[test]
    fn an_rport_with_a_value_is_replaced_by_the_source_port() {
        assert_eq!(
            top_via(
                "SIP/2.0/UDP 10.1.1.1:4540;branch=z9hG4bK1;rport=4540",
                "192.0.2.1:9988"
            ),
            "SIP/2.0/UDP 10.1.1.1:4540;branch=z9hG4bK1;received=192.0.2.1;rport=9988"
        );
        // A `received` the client wrote is replaced, and a second `rport` dropped.
        assert_eq!(
            top_via(
                "SIP/2.0/UDP 10.1.1.1:4540;received=1.2.3.4;rport=1;rport;branch=z9hG4bK1",
                "192.0.2.1:9988"
            ),
            "SIP/2.0/UDP 10.1.1.1:4540;received=192.0.2.1;rport=9988;branch=z9hG4bK1"
        );
    }

    #[test]
    fn without_rport_received_is_added_only_when_the_host_differs() {
        let via = "SIP/2.0/TLS 10.10.10.10:62162;branch=z9hG4bK00001188";
        // Matching host: echoed as received (the port does not matter, RFC 3261 §18.2.1).
        assert_eq!(top_via(via, "10.10.10.10:62162"), via);
        assert_eq!(top_via(via, "10.10.10.10:1"), via);
        // Another address: `received` appended.
        assert_eq!(
            top_via(via, "127.0.0.1:40000"),
            format!("{via};received=127.0.0.1")
        );
        // A domain name always differs.
        assert_eq!(
            top_via("SIP/2.0/UDP bobspc.biloxi.com:5060", "192.0.2.4:5060"),
            "SIP/2.0/UDP bobspc.biloxi.com:5060;received=192.0.2.4"
        );
        // A stale `received` is replaced.
        assert_eq!(
            top_via(
                "SIP/2.0/UDP 10.0.0.1;received=10.0.0.9;branch=z9hG4bK1",
                "192.0.2.4:5060"
            ),
            "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;received=192.0.2.4"
        );
    }

    #[test]
    fn ipv6_sources_and_hosts() {
        // Brackets in sent-by, none in `received` (RFC 3261's grammar).
        assert_eq!(
            top_via(
                "SIP/2.0/UDP [2001:db8::9]:5060;rport;branch=z9hG4bK1",
                "[2001:db8::1]:6000"
            ),
            "SIP/2.0/UDP [2001:db8::9]:5060;received=2001:db8::1;rport=6000;branch=z9hG4bK1"
        );
        let via = "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1";
        assert_eq!(top_via(via, "[2001:db8::1]:6000"), via);
        assert_eq!(
            top_via(via, "[2001:db8::2]:6000"),
            format!("{via};received=2001:db8::2")
        );
        // An IPv4-mapped source (dual-stack socket) is the IPv4 address.
        let via = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1";
        assert_eq!(top_via(via, "[::ffff:192.0.2.1]:5060"), via);
        assert_eq!(
            top_via("SIP/2.0/UDP 192.0.2.1;rport", "[::ffff:192.0.2.1]:7"),
            "SIP/2.0/UDP 192.0.2.1;received=192.0.2.1;rport=7"
        );
    }

    #[test]
    fn odd_whitespace_and_case() {
        assert_eq!(
            top_via(
                "SIP / 2.0 / UDP   10.1.1.1 : 4540 ; RPORT ; branch = z9hG4bK1",
                "192.0.2.1:9988"
            ),
            "SIP / 2.0 / UDP   10.1.1.1 : 4540 ;received=192.0.2.1;rport=9988; branch = z9hG4bK1"
        );
        assert_eq!(
            top_via("SIP/2.0/udp 10.1.1.1\t;Rport=", "192.0.2.1:9988"),
            "SIP/2.0/udp 10.1.1.1\t;received=192.0.2.1;rport=9988"
        );
        let via = "SIP/2.0/TCP 10.1.1.1 ; branch=z9hG4bK1";
        assert_eq!(top_via(via, "10.1.1.1:1"), via);
    }

    #[test]
    fn only_the_first_via_parm_of_a_value_is_the_top_via() {
        assert_eq!(
            top_via(
                "SIP/2.0/UDP 10.1.1.1;rport;x=\"a,b\", SIP/2.0/UDP 10.2.2.2;rport",
                "192.0.2.1:9"
            ),
            "SIP/2.0/UDP 10.1.1.1;received=192.0.2.1;rport=9;x=\"a,b\", SIP/2.0/UDP 10.2.2.2;rport"
        );
    }

    #[test]
    fn unreadable_vias_are_echoed_as_received() {
        for via in [
            "",
            "garbage",
            "SIP/2.0/UDP",
            "SIP/2.0/ ;rport",
            "SIP/2.0/UDP [::1;rport",
            "SIP/2.0/UDP 2001:db8::1;rport",
            "SIP/2.0/UDP 10.0.0.1:50x0;rport",
        ] {
            assert_eq!(top_via(via, "192.0.2.1:9"), via, "{via:?}");
        }
    }

    #[test]
    fn encode_rewrites_only_the_top_via() {
        let echo = Echo {
            vias: vec![
                "SIP/2.0/UDP 10.1.1.1:4540;rport;branch=z9hG4bK1".into(),
                "SIP/2.0/UDP 10.9.9.9:5060;rport;branch=z9hG4bK0".into(),
            ],
            from: "<sip:a@b>;tag=1".into(),
            to: "<sip:a@b>".into(),
            call_id: "c".into(),
            cseq: "1 REGISTER".into(),
        };
        let out = encode(
            &echo,
            &Reply::new(200, "OK"),
            "S",
            1,
            "192.0.2.1:9988".parse().unwrap(),
        );
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.split("\r\n").skip(1);
        assert_eq!(
            lines.next(),
            Some("Via: SIP/2.0/UDP 10.1.1.1:4540;received=192.0.2.1;rport=9988;branch=z9hG4bK1")
        );
        assert_eq!(
            lines.next(),
            Some("Via: SIP/2.0/UDP 10.9.9.9:5060;rport;branch=z9hG4bK0")
        );
    }
}
