//! Responses in UCM's header order: Via, From, To (with a fresh tag), Date, Call-ID, Server,
//! CSeq, then the response's own headers, Content-Type and Content-Length (spec §4).

use std::cell::RefCell;
use std::fmt::Write as _;
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

/// Writes the response. `to_tag` is used only when the request's To has no tag yet.
pub fn encode(echo: &Echo, reply: &Reply, server: &str, to_tag: u32) -> Vec<u8> {
    let mut out = String::with_capacity(512 + echo.vias.iter().map(String::len).sum::<usize>());
    // `write!` into a String cannot fail.
    let _ = write!(out, "SIP/2.0 {} {}\r\n", reply.status, reply.reason);
    for via in &echo.vias {
        let _ = write!(out, "Via: {via}\r\n");
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
}
