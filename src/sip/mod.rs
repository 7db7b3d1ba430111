//! SIP messages, with rsip kept behind this module: [`parse`] turns bytes into a [`Request`]
//! holding the header values the registrar needs, once; [`response`] writes replies in UCM's
//! header order. No I/O here.
//!
//! rsip 0.4 frames the message and splits headers; values it cannot type (Cisco's Contact,
//! Bearer credentials) go to [`grammar`]. See `shared/notes/rsip-0.4.md` for why.

pub mod grammar;
pub mod response;

use rsip::Header;

/// The headers every response echoes (RFC 3261 §8.2.6.2), as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo {
    pub vias: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: String,
}

/// The request methods the registrar distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Register,
    Options,
    Ack,
    Other,
}

/// A request, parsed once.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub method_name: &'static str,
    pub uri: String,
    pub echo: Echo,
    pub cseq_number: u32,
    /// Every Contact header value, in order (a value may hold several entries).
    pub contacts: Vec<String>,
    pub expires: Option<String>,
    pub proxy_authorization: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub reason: Option<String>,
    pub body: Vec<u8>,
}

/// A message that is not a request we can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A response, or bytes that are not SIP: dropped without reply, so we never reflect.
    #[error("not a SIP request")]
    NotARequest,
    /// A request we can answer with `400`, with the reason for the Warning header.
    #[error("bad request: {reason}")]
    BadRequest {
        echo: Box<Echo>,
        reason: &'static str,
    },
    /// A well-formed request we refuse for its request line: `414`, `501` or `505`.
    #[error("{status} {phrase}: {reason}")]
    Refused {
        echo: Box<Echo>,
        status: u16,
        phrase: &'static str,
        reason: &'static str,
    },
}

/// Longest request line handed to rsip. Its URI parser costs ~120 ns a byte, and UDP
/// datagrams are handled inline: a 64 KB URI would hold a listener for milliseconds. A
/// REGISTER's Request-URI is a domain; 1 KiB leaves room for any real one.
pub const MAX_REQUEST_LINE: usize = 1024;

/// Methods rsip knows; others are answered `501 Not Implemented` (RFC 3261 §8.2.1).
const KNOWN_METHODS: &[&str] = &[
    "ACK",
    "BYE",
    "CANCEL",
    "INFO",
    "INVITE",
    "MESSAGE",
    "NOTIFY",
    "OPTIONS",
    "PRACK",
    "PUBLISH",
    "REFER",
    "REGISTER",
    "SUBSCRIBE",
    "UPDATE",
];

/// Parses one framed message.
pub fn parse(bytes: &[u8]) -> Result<Request, ParseError> {
    if bytes.starts_with(b"SIP/") {
        return Err(ParseError::NotARequest);
    }
    let lines = scan_lines(bytes);
    // A lone CR or LF inside a header would be echoed into our response as a line break of
    // its own (header injection): such a message is dropped.
    if lines.bare_line_break {
        return Err(ParseError::NotARequest);
    }
    if lines.request_line > MAX_REQUEST_LINE {
        return Err(salvage(bytes, "Request-URI too long"));
    }
    let unfolded;
    let (bytes, head_end) = if lines.folded {
        // Up to the last header's CRLF: the blank line's CRLF is followed by the body, which
        // may start with a space and is not a continuation.
        unfolded = unfold(bytes, lines.head_end.saturating_sub(2));
        let end = memchr::memmem::find(&unfolded, b"\r\n\r\n").map_or(unfolded.len(), |i| i + 4);
        (&unfolded[..], end)
    } else {
        (bytes, lines.head_end)
    };
    let line_len = lines.request_line;
    // rsip sees the header section only: its parser formats the rest of its input into an
    // error string at every alternative it rejects, so a body (Jabber's remotecc multipart is
    // 1 KiB) would be copied several times per request. The transport has already framed the
    // body by Content-Length.
    let (head, body) = bytes.split_at(head_end);
    let Ok(req) = rsip::Request::try_from(head) else {
        return Err(salvage(bytes, "Malformed message"));
    };
    // rsip accepted the request line, so it is `METHOD SP URI SP SIP/2.0`: take the names as
    // written (rsip's Display re-formats and allocates; its URI form can differ from the wire).
    let line = String::from_utf8_lossy(&bytes[..line_len]);
    let mut words = line.split(' ');
    let method_token = words.next().unwrap_or_default();
    // Methods are case-sensitive (RFC 3261 §7.1); rsip is not, so `register` is refused here.
    let Some(method_name) = KNOWN_METHODS.iter().copied().find(|m| *m == method_token) else {
        return Err(salvage(bytes, "Method not implemented"));
    };
    let uri = words.next().unwrap_or_default().to_owned();
    let method = match req.method {
        rsip::Method::Register => Method::Register,
        rsip::Method::Options => Method::Options,
        rsip::Method::Ack => Method::Ack,
        _ => Method::Other,
    };
    let mut out = Request {
        method,
        method_name,
        uri,
        echo: Echo::default(),
        cseq_number: 0,
        contacts: Vec::new(),
        expires: None,
        proxy_authorization: None,
        authorization: None,
        content_type: None,
        reason: None,
        body: body.to_vec(),
    };
    let mut have = Have::default();
    for header in req.headers {
        match header {
            Header::Via(v) => out.echo.vias.push(v.into()),
            Header::From(v) => have.once(&mut out.echo.from, v.into()),
            Header::To(v) => have.once(&mut out.echo.to, v.into()),
            Header::CallId(v) => have.once(&mut out.echo.call_id, v.into()),
            Header::CSeq(v) => have.once(&mut out.echo.cseq, v.into()),
            Header::Contact(v) => out.contacts.push(v.into()),
            Header::Expires(v) => out.expires = Some(v.into()),
            Header::ProxyAuthorization(v) => out.proxy_authorization = Some(v.into()),
            Header::Authorization(v) => out.authorization = Some(v.into()),
            Header::ContentType(v) => out.content_type = Some(v.into()),
            Header::Other(name, value) => out.other(&name, value, &mut have),
            _ => {}
        }
    }
    if have.dup {
        return Err(bad(out.echo, "Duplicate From, To, Call-ID or CSeq header"));
    }
    let missing = [
        (out.echo.vias.is_empty(), "Missing Via header"),
        (out.echo.from.is_empty(), "Missing From header"),
        (out.echo.to.is_empty(), "Missing To header"),
        (out.echo.call_id.is_empty(), "Missing Call-ID header"),
        (out.echo.cseq.is_empty(), "Missing CSeq header"),
    ];
    if let Some((_, reason)) = missing.iter().find(|(m, _)| *m) {
        // Without the dialog-identifying headers a response could not be matched: drop it
        // only when there is no Via to send it back on.
        if out.echo.vias.is_empty() {
            return Err(ParseError::NotARequest);
        }
        return Err(bad(out.echo, reason));
    }
    let mut cseq = out.echo.cseq.split_ascii_whitespace();
    // Digits only (`str::parse` would take a sign); below 2**31 (RFC 3261 §8.1.1.5).
    let number = |n: &str| {
        n.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| n.parse::<u32>().ok())
            .flatten()
            .filter(|&n| n < 1 << 31)
    };
    match (cseq.next().and_then(number), cseq.next(), cseq.next()) {
        (Some(n), Some(m), None) if m == out.method_name => out.cseq_number = n,
        _ => return Err(bad(out.echo, "Malformed CSeq header")),
    }
    Ok(out)
}

/// Notes headers that must appear once (From, To, Call-ID, CSeq) appearing again.
#[derive(Default)]
struct Have {
    dup: bool,
}

impl Have {
    fn once(&mut self, slot: &mut String, value: String) {
        if slot.is_empty() {
            *slot = value;
        } else {
            self.dup = true;
        }
    }
}

impl Request {
    /// rsip leaves compact forms (RFC 3261 §7.3.3) and a few names as `Other`.
    fn other(&mut self, name: &str, value: String, have: &mut Have) {
        let compact = |c: &str| name.eq_ignore_ascii_case(c);
        if compact("v") {
            self.echo.vias.push(value);
        } else if compact("f") {
            have.once(&mut self.echo.from, value);
        } else if compact("t") {
            have.once(&mut self.echo.to, value);
        } else if compact("i") {
            have.once(&mut self.echo.call_id, value);
        } else if compact("m") {
            self.contacts.push(value);
        } else if compact("c") {
            self.content_type = Some(value);
        } else if compact("reason") {
            self.reason = Some(value);
        }
    }

    /// The bearer credential header: `Proxy-Authorization`, else `Authorization`.
    pub fn credential_header(&self) -> Option<&str> {
        self.proxy_authorization
            .as_deref()
            .or(self.authorization.as_deref())
    }

    /// Whether the body is Cisco's remotecc multipart (a `<bulkregisterreq>`/`<optionsind>`).
    pub fn has_remotecc(&self) -> bool {
        let multipart = self.content_type.as_deref().is_some_and(|c| {
            c.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/mixed")
        });
        multipart
            && memchr::memmem::find(&self.body, b"application/x-cisco-remotecc-request+xml")
                .is_some()
    }
}

fn bad(echo: Echo, reason: &'static str) -> ParseError {
    ParseError::BadRequest {
        echo: Box::new(echo),
        reason,
    }
}

/// When rsip refuses a message, a line scan still finds what a `400` must echo, so a client
/// learns why instead of timing out. Without a request line and a Via nothing is answered.
fn salvage(bytes: &[u8], reason: &'static str) -> ParseError {
    let head_end = memchr::memmem::find(bytes, b"\r\n\r\n").unwrap_or(bytes.len());
    // rsip refuses non-UTF-8 values (e.g. a Latin-1 display name); the lines a 400 echoes
    // are ASCII in practice, so a lossy view still answers the client.
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(_uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ParseError::NotARequest;
    };
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
    };
    if !is_token(method) || !version.starts_with("SIP/") {
        return ParseError::NotARequest;
    }
    let refusal = if request_line.len() > MAX_REQUEST_LINE {
        Some((414, "Request-URI Too Long"))
    } else if version != "SIP/2.0" {
        Some((505, "Version Not Supported"))
    } else if !KNOWN_METHODS.contains(&method) {
        Some((501, "Not Implemented"))
    } else {
        None
    };
    let mut echo = Echo::default();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let value = value.trim().to_owned();
        let is = |full: &str, compact: &str| {
            name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(compact)
        };
        if is("Via", "v") {
            echo.vias.push(value);
        } else if is("From", "f") && echo.from.is_empty() {
            echo.from = value;
        } else if is("To", "t") && echo.to.is_empty() {
            echo.to = value;
        } else if is("Call-ID", "i") && echo.call_id.is_empty() {
            echo.call_id = value;
        } else if is("CSeq", "CSeq") && echo.cseq.is_empty() {
            echo.cseq = value;
        }
    }
    if echo.vias.is_empty() {
        return ParseError::NotARequest;
    }
    let echo = Box::new(echo);
    match refusal {
        Some((status, phrase)) => ParseError::Refused {
            echo,
            status,
            phrase,
            reason: match status {
                414 => reason,
                505 => "Only SIP/2.0 is supported",
                _ => "Method not implemented",
            },
        },
        None => ParseError::BadRequest { echo, reason },
    }
}

/// What one pass over the header section's line breaks finds.
struct Lines {
    /// Length of the request line, without its CRLF.
    request_line: usize,
    /// Just past the blank line ending the header section (or the message length).
    head_end: usize,
    /// A CR not followed by LF, or an LF not preceded by CR.
    bare_line_break: bool,
    /// RFC 3261 §7.3.1 folding: a line starting with SP or HT continues the previous header.
    folded: bool,
}

fn scan_lines(bytes: &[u8]) -> Lines {
    let mut lines = Lines {
        request_line: bytes.len(),
        head_end: bytes.len(),
        bare_line_break: false,
        folded: false,
    };
    let mut first = true;
    for i in memchr::memchr2_iter(b'\r', b'\n', bytes) {
        if bytes[i] == b'\r' {
            if bytes.get(i + 1) != Some(&b'\n') {
                lines.bare_line_break = true;
            }
            continue;
        }
        if i == 0 || bytes[i - 1] != b'\r' {
            lines.bare_line_break = true;
            continue;
        }
        if first {
            lines.request_line = i - 1;
            first = false;
        }
        match bytes.get(i + 1) {
            Some(b' ' | b'\t') => lines.folded = true,
            Some(b'\r') if bytes.get(i + 2) == Some(&b'\n') => {
                lines.head_end = i + 3;
                break;
            }
            _ => {}
        }
    }
    lines
}

/// Replaces each CRLF + whitespace run in the header section by one SP (rare: copies).
fn unfold(bytes: &[u8], head_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < head_len {
        if bytes[i..].starts_with(b"\r\n") && matches!(bytes.get(i + 2), Some(b' ' | b'\t')) {
            i += 2;
            while matches!(bytes.get(i), Some(b' ' | b'\t')) {
                i += 1;
            }
            out.push(b' ');
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // A fold at the very end may have stepped past `head_len`: copy the rest once.
    out.extend_from_slice(&bytes[i.max(head_len)..]);
    out
}

#[cfg(test)]
mod tests;
