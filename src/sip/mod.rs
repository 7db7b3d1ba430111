//! SIP messages: [`parse`] turns bytes into a [`Request`]
//! holding the header values the registrar needs, once; [`response`] writes replies in UCM's
//! header order. No I/O here.
//!
//! The request line and header fields are split here (RFC 3261 §7, §25.1); the values the
//! registrar reads (Via, From, To, Contact, Bearer credentials) are parsed by [`grammar`].
//! rsip 0.4 did the splitting until it failed RFC 4475's valid messages; see the Standards
//! section of the README.

pub mod grammar;
pub mod response;

/// The headers every response echoes (RFC 3261 §8.2.6.2), as received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Echo {
    pub vias: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: String,
}

impl Echo {
    /// No control character but HTAB in any value a response copies, except escaped by a
    /// quoted-pair where RFC 3261 §25.1 has quoted strings (Via parameters, From/To display
    /// names: RFC 4475 §3.1.1.2 quotes a NUL there). Call-ID and CSeq have no quoting.
    fn is_safe_to_echo(&self) -> bool {
        self.vias.iter().all(|v| no_bare_control(v))
            && no_bare_control(&self.from)
            && no_bare_control(&self.to)
            && !self.call_id.bytes().any(is_control)
            && !self.cseq.bytes().any(is_control)
    }
}

/// A control character other than HTAB (RFC 3261 §25.1 allows them only quoted).
fn is_control(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// No control character unless escaped by a quoted-pair (`\` before it).
fn no_bare_control(v: &str) -> bool {
    let v = v.as_bytes();
    !(0..v.len()).any(|i| is_control(v[i]) && (i == 0 || v[i - 1] != b'\\'))
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
    /// The Request-URI is a `sip:` or `sips:` URI; any other (well-formed) scheme is answered
    /// `416` (RFC 3261 §8.2.2.1).
    pub request_uri_is_sip: bool,
    pub echo: Echo,
    pub cseq_number: u32,
    /// Every Contact header value, in order (a value may hold several entries).
    pub contacts: Vec<String>,
    pub expires: Option<String>,
    pub proxy_authorization: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub reason: Option<String>,
    /// The option-tags of every `Require` header, in order (RFC 3261 §8.2.2.3).
    pub require: Vec<String>,
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

/// Longest request line parsed. UDP datagrams are handled inline, so a 64 KB URI must not hold
/// a listener; a REGISTER's Request-URI is a domain, and 1 KiB leaves room for any real one.
pub const MAX_REQUEST_LINE: usize = 1024;

/// Methods of RFC 3261 and its extensions; others are answered `501 Not Implemented`
/// (RFC 3261 §8.2.1).
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
    // The request line and the header fields are split here, not by a SIP crate: rsip 0.4
    // refused valid RFC 4475 messages (LWS around the Via's `/`, `;` in a URI's user part,
    // long values) and took twice our whole parse for a REGISTER. The values are kept as written; the few the
    // registrar reads are checked by `grammar` below.
    let (head, body) = bytes.split_at(head_end);
    let Ok(head) = std::str::from_utf8(head) else {
        return Err(salvage(bytes, "Header section is not UTF-8"));
    };
    // Every LF here ends a CRLF (bare ones were refused above); a char split finds them with
    // memchr, where a "\r\n" pattern took a fifth of the parse time.
    let mut head_lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let Some((method_token, uri, version)) = head_lines.next().and_then(request_line) else {
        return Err(salvage(bytes, "Malformed Request-Line"));
    };
    // SIP-Version is case-insensitive (RFC 3261 §7.1).
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(salvage(bytes, "Only SIP/2.0 is supported"));
    }
    let mut out = Request {
        method: Method::Other,
        method_name: "",
        uri: uri.to_owned(),
        request_uri_is_sip: false,
        echo: Echo::default(),
        cseq_number: 0,
        contacts: Vec::new(),
        expires: None,
        proxy_authorization: None,
        authorization: None,
        content_type: None,
        reason: None,
        require: Vec::new(),
        body: body.to_vec(),
    };
    let mut have = Have::default();
    for line in head_lines.filter(|l| !l.is_empty()) {
        // HCOLON = *( SP / HTAB ) ":" SWS (RFC 3261 §25.1).
        let Some((name, value)) = line.split_once(':') else {
            return Err(salvage(bytes, "Malformed header line"));
        };
        let name = name.trim_end_matches([' ', '\t']);
        if !is_token(name) {
            return Err(salvage(bytes, "Malformed header line"));
        }
        out.header(name, value.trim_matches([' ', '\t']), &mut have);
    }
    // Without a Via there is nowhere to send an answer; with control characters in what an
    // answer echoes, none is sent (they would reach the client's parser as written).
    if out.echo.vias.is_empty() || !out.echo.is_safe_to_echo() {
        return Err(ParseError::NotARequest);
    }
    if have.dup {
        return Err(bad(out.echo, "Duplicate From, To, Call-ID or CSeq header"));
    }
    let missing = [
        (out.echo.from.is_empty(), "Missing From header"),
        (out.echo.to.is_empty(), "Missing To header"),
        (out.echo.call_id.is_empty(), "Missing Call-ID header"),
        (out.echo.cseq.is_empty(), "Missing CSeq header"),
    ];
    if let Some((_, reason)) = missing.iter().find(|(m, _)| *m) {
        return Err(bad(out.echo, reason));
    }
    // A 200 echoes the Contact: none of its control characters may reach the client unquoted.
    if !out.contacts.iter().all(|c| no_bare_control(c)) {
        return Err(bad(out.echo, "Malformed Contact header"));
    }
    // The headers every response echoes must parse, or the client could not match the answer
    // (RFC 4475 §3.1.2.1, §3.1.2.6, §3.1.2.14, §3.1.2.15).
    if out.echo.vias.iter().any(|v| grammar::check_via(v).is_err()) {
        return Err(bad(out.echo, "Malformed Via header"));
    }
    if grammar::parse_name_addr(&out.echo.from).is_err() {
        return Err(bad(out.echo, "Malformed From header"));
    }
    if grammar::parse_name_addr(&out.echo.to).is_err() {
        return Err(bad(out.echo, "Malformed To header"));
    }
    // Methods are case-sensitive (RFC 3261 §7.1): `register` is an unknown method.
    let Some(method_name) = KNOWN_METHODS.iter().copied().find(|m| *m == method_token) else {
        return Err(ParseError::Refused {
            echo: Box::new(out.echo),
            status: 501,
            phrase: "Not Implemented",
            reason: "Method not implemented",
        });
    };
    out.method_name = method_name;
    out.method = match method_name {
        "REGISTER" => Method::Register,
        "OPTIONS" => Method::Options,
        "ACK" => Method::Ack,
        _ => Method::Other,
    };
    match request_uri(uri) {
        Ok(is_sip) => out.request_uri_is_sip = is_sip,
        Err(reason) => return Err(bad(out.echo, reason)),
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
    fn once(&mut self, slot: &mut String, value: &str) {
        if slot.is_empty() {
            value.clone_into(slot);
        } else {
            self.dup = true;
        }
    }
}

impl Request {
    /// Keeps the value of a header the registrar reads; names are case-insensitive and may be
    /// compact (RFC 3261 §7.3.3).
    fn header(&mut self, name: &str, value: &str, have: &mut Have) {
        let is = |full: &str, compact: &str| {
            name.eq_ignore_ascii_case(full) || name.eq_ignore_ascii_case(compact)
        };
        if is("Via", "v") {
            self.echo.vias.push(value.to_owned());
        } else if is("From", "f") {
            have.once(&mut self.echo.from, value);
        } else if is("To", "t") {
            have.once(&mut self.echo.to, value);
        } else if is("Call-ID", "i") {
            have.once(&mut self.echo.call_id, value);
        } else if name.eq_ignore_ascii_case("CSeq") {
            have.once(&mut self.echo.cseq, value);
        } else if is("Contact", "m") {
            self.contacts.push(value.to_owned());
        } else if name.eq_ignore_ascii_case("Expires") {
            self.expires = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("Proxy-Authorization") {
            self.proxy_authorization = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("Authorization") {
            self.authorization = Some(value.to_owned());
        } else if is("Content-Type", "c") {
            self.content_type = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("Reason") {
            self.reason = Some(value.to_owned());
        } else if name.eq_ignore_ascii_case("Require") {
            // Echoed in `Unsupported`: tokens only (RFC 3261 §20.32 option-tag), each once, so
            // a repeated tag cannot make a 420 larger than its request.
            for tag in value.split(',').map(|t| t.trim_matches([' ', '\t'])) {
                if is_token(tag) && !self.require.iter().any(|t| t.eq_ignore_ascii_case(tag)) {
                    self.require.push(tag.to_owned());
                }
            }
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

/// When a message cannot be parsed, a line scan still finds what a `400` must echo, so a client
/// learns why instead of timing out. Without a request line and a Via nothing is answered.
fn salvage(bytes: &[u8], reason: &'static str) -> ParseError {
    // Reached also for datagrams the transport could not frame, whose lines nobody checked: a
    // lone CR or LF would be echoed as a line break of its own (header injection).
    if scan_lines(bytes).bare_line_break {
        return ParseError::NotARequest;
    }
    let head_end = memchr::memmem::find(bytes, b"\r\n\r\n").unwrap_or(bytes.len());
    // Non-UTF-8 values (e.g. a Latin-1 display name) are refused; the lines a 400 echoes are
    // ASCII in practice, so a lossy view still answers the client.
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    // Extra SPs or LWS in the Request-URI (RFC 4475 §3.1.2.8-10) still make a request to
    // answer: a token first, a SIP version last.
    let mut parts = request_line.split(' ').filter(|p| !p.is_empty());
    let (Some(method), Some(version)) = (parts.next(), parts.next_back()) else {
        return ParseError::NotARequest;
    };
    if parts.next().is_none()
        || !is_token(method)
        || !version
            .get(..4)
            .is_some_and(|v| v.eq_ignore_ascii_case("SIP/"))
    {
        return ParseError::NotARequest;
    }
    let refusal = if request_line.len() > MAX_REQUEST_LINE {
        Some((414, "Request-URI Too Long"))
    } else if !version.eq_ignore_ascii_case("SIP/2.0") {
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
    if echo.vias.is_empty() || !echo.is_safe_to_echo() {
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

/// The error for a request the transport could not frame: `400` with `reason` if it has a
/// request line and a Via, else nothing.
pub fn unframed(bytes: &[u8], reason: &'static str) -> ParseError {
    salvage(bytes, reason)
}

/// RFC 3261 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// `Method SP Request-URI SP SIP-Version`, with exactly one SP between them and none after
/// (RFC 3261 §7.1, §25.1).
fn request_line(line: &str) -> Option<(&str, &str, &str)> {
    let mut parts = line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() || b >= 0x80);
    (is_token(method) && visible(uri) && visible(version)).then_some((method, uri, version))
}

/// Checks a Request-URI's syntax; `Ok(true)` for a `sip:`/`sips:` URI, `Ok(false)` for another
/// scheme (a well-formed request, answered `416` by the registrar).
fn request_uri(uri: &str) -> Result<bool, &'static str> {
    const MALFORMED: &str = "Malformed Request-URI";
    // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" (RFC 3986 §3.1); this also
    // refuses a name-addr such as `<sip:...>` (RFC 4475 §3.1.2.7).
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(MALFORMED);
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok || rest.is_empty() {
        return Err(MALFORMED);
    }
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return Ok(false);
    }
    if grammar::parse_sip_uri(uri).is_err() {
        return Err(MALFORMED);
    }
    // `?headers` are not allowed in a Request-URI (RFC 3261 §19.1.1, RFC 4475 §3.1.2.11). The
    // user part may hold `?` but no `@`: the host part starts after the first `@`, where
    // `grammar::parse_sip_uri` ends the userinfo too.
    let host_part = rest.find('@').map_or(rest, |at| &rest[at + 1..]);
    if host_part.contains('?') {
        return Err("Headers in the Request-URI");
    }
    Ok(true)
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
