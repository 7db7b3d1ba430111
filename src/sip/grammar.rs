//! Tokenizer for the SIP header values the registrar reads (why not rsip: `docs/sip.md`):
//! Contact / From / To entries with quoted parameter values such as
//! Jabber's `+sip.instance="<urn:uuid:...>"`, the SIP URIs inside them, and the Bearer credential
//! of `Proxy-Authorization` / `Authorization` in both Cisco's `token="..."` form and RFC 6750's.
//!
//! It follows RFC 3261 §25.1 (`name-addr`, `addr-spec`, `generic-param`, `quoted-string`) and
//! RFC 7235 §2.1 (`credentials`). The input is untrusted network text: every function returns a
//! [`GrammarError`] instead of panicking, and scanning stops only on ASCII delimiters so that every
//! slice lands on a UTF-8 character boundary. Results borrow from the input; a value is copied only
//! when a `\x` escape inside a quoted string has to be resolved.

use std::borrow::Cow;

/// What was wrong with a header value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    /// Nothing (or only whitespace) where a value or a list entry was required.
    #[error("empty value")]
    Empty,
    /// A `"` without its closing quote; `at` is the byte offset of the opening quote.
    #[error("unterminated quoted string starting at byte {at}")]
    UnterminatedQuote {
        /// Byte offset of the opening `"`.
        at: usize,
    },
    /// A `<` without its closing `>`; `at` is the byte offset of the `<`.
    #[error("unterminated '<' at byte {at}")]
    UnterminatedAngle {
        /// Byte offset of the `<`.
        at: usize,
    },
    /// A character the grammar does not allow at this place.
    #[error("unexpected {found:?} at byte {at}, expected {expected}")]
    Unexpected {
        /// Byte offset of the character in the value given to the public function.
        at: usize,
        /// The offending character.
        found: char,
        /// What the grammar wanted there.
        expected: &'static str,
    },
    /// The value ended where the grammar wanted more.
    #[error("value ends where {expected} was expected")]
    UnexpectedEnd {
        /// What the grammar wanted there.
        expected: &'static str,
    },
    /// A URI that is not a well-formed `sip:`/`sips:` URI (or, inside a name-addr, not a URI).
    #[error("bad URI: {0}")]
    BadUri(&'static str),
    /// A URI whose scheme is neither `sip` nor `sips`.
    #[error("URI scheme is not sip or sips")]
    UnsupportedScheme,
    /// A port that is empty, not decimal, or above 65535.
    #[error("bad port")]
    BadPort,
    /// An authorization header whose scheme is not `Bearer` (the scheme is carried, capped at
    /// [`MAX_SCHEME_ECHO`] bytes).
    #[error("credential scheme is {0:?}, not Bearer")]
    NotBearer(String),
    /// A `Bearer` credential without a token.
    #[error("Bearer credential without a token")]
    MissingToken,
    /// A parameter that must appear at most once appeared twice.
    #[error("duplicate parameter {0:?}")]
    DuplicateParam(&'static str),
}

/// Longest scheme name copied into [`GrammarError::NotBearer`]: the name is hostile input and only
/// needed for a log line.
pub const MAX_SCHEME_ECHO: usize = 64;

/// Header parameters (`;name=value` / `;flag`), in order, names as written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Params<'a>(pub Vec<(&'a str, Option<Cow<'a, str>>)>);

impl<'a> Params<'a> {
    /// Case-insensitive lookup of the first parameter called `name`. `None`: absent;
    /// `Some(None)`: flag without value; `Some(Some(v))`: value, quotes removed and `\x` escapes
    /// resolved.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// Whether a parameter called `name` (case-insensitive) is present, with or without value.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The parameters in order, names as written.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&str>)> + '_ {
        self.0.iter().map(|(n, v)| (*n, v.as_deref()))
    }

    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One name-addr or addr-spec with its header parameters (From, To, one Contact entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name: quotes removed and escapes resolved; an unquoted one (a sequence of tokens)
    /// is kept as written, inner whitespace included.
    pub display_name: Option<Cow<'a, str>>,
    /// The URI inside `<...>`, or the bare addr-spec without header params.
    pub uri: &'a str,
    /// Header params after `>` (for a bare addr-spec: everything after the first `;` belongs to
    /// the header, RFC 3261 §20.10).
    pub params: Params<'a>,
    /// The whole entry, trimmed of surrounding whitespace, for echoing byte for byte.
    pub raw: &'a str,
}

impl<'a> NameAddr<'a> {
    /// Case-insensitive header parameter lookup, as [`Params::get`].
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.get(name)
    }

    /// The `tag` parameter's value, if present with a value.
    pub fn tag(&self) -> Option<&str> {
        self.params.get("tag").flatten()
    }

    /// Parses [`Self::uri`] as a SIP URI.
    pub fn sip_uri(&self) -> Result<SipUri<'a>, GrammarError> {
        parse_sip_uri(self.uri)
    }
}

/// The value of a Contact header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactList<'a> {
    /// `Contact: *` (remove all bindings).
    Star,
    /// One or more entries, in order.
    Entries(Vec<NameAddr<'a>>),
}

/// A parsed `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `sip` or `sips`, as written.
    pub scheme: &'a str,
    /// The user part, without `:password`.
    pub user: Option<&'a str>,
    /// Host name or address; an IPv6 reference keeps its brackets.
    pub host: &'a str,
    /// The port, if written.
    pub port: Option<u16>,
    /// URI parameters, as written (`%HH` escapes are not decoded).
    pub params: Params<'a>,
}

/// The bearer credential from a Proxy-Authorization or Authorization header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    /// Cisco's form: `Bearer token="<jwt>"` (an auth-param; other auth-params such as realm= may
    /// appear in any order, comma-separated, whitespace tolerant).
    CiscoToken(Cow<'a, str>),
    /// RFC 6750 / RFC 8898 form: `Bearer <token68>`.
    Bearer(&'a str),
}

/// Parses one name-addr or addr-spec with header parameters (a From or To value, or a Contact
/// value with a single entry).
pub fn parse_name_addr(value: &str) -> Result<NameAddr<'_>, GrammarError> {
    let mut c = Cursor::new(value);
    let entry = c.name_addr(false)?;
    // `name_addr(false)` already stops only at the end or with an error; this is a guard.
    c.skip_lws();
    match c.peek() {
        None => Ok(entry),
        Some(_) => Err(c.unexpected("end of header")),
    }
}

/// Comma-separated Contact entries; commas inside quoted strings or `<...>` do not split. `*`
/// alone -> [`ContactList::Star`].
pub fn parse_contact_list(value: &str) -> Result<ContactList<'_>, GrammarError> {
    let trimmed = value.trim_matches(is_lws_char);
    if trimmed.is_empty() {
        return Err(GrammarError::Empty);
    }
    if trimmed == "*" {
        return Ok(ContactList::Star);
    }
    let mut c = Cursor::new(value);
    let mut entries = Vec::new();
    loop {
        entries.push(c.name_addr(true)?);
        c.skip_lws();
        match c.peek() {
            None => return Ok(ContactList::Entries(entries)),
            Some(b',') => c.pos += 1,
            Some(_) => return Err(c.unexpected("',' or end of header")),
        }
    }
}

/// Parses a `sip:` / `sips:` URI (scheme case-insensitive); anything else is an error. `?headers`
/// are ignored.
pub fn parse_sip_uri(uri: &str) -> Result<SipUri<'_>, GrammarError> {
    let uri = uri.trim_matches(is_lws_char);
    if uri.is_empty() {
        return Err(GrammarError::Empty);
    }
    let b = uri.as_bytes();
    let colon = memchr::memchr(b':', b).ok_or(GrammarError::BadUri("missing scheme"))?;
    let scheme = sub(uri, 0, colon)?;
    if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return Err(GrammarError::UnsupportedScheme);
    }
    let rest = colon + 1;
    // '@' is allowed neither in hostport nor in URI params, so the first one ends the userinfo.
    let (user, host_start) = match memchr::memchr(b'@', tail(b, rest)) {
        Some(off) => {
            let at = rest + off;
            let userinfo = sub(uri, rest, at)?;
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if user.is_empty() {
                return Err(GrammarError::BadUri("empty user"));
            }
            if !all_in(user, USER) {
                return Err(GrammarError::BadUri("bad character in user"));
            }
            if password.is_some_and(|p| !all_in(p, PASSWORD)) {
                return Err(GrammarError::BadUri("bad character in password"));
            }
            (Some(user), at + 1)
        }
        None => (None, rest),
    };
    let hp_end = tail(b, host_start)
        .iter()
        .position(|&c| c == b';' || c == b'?')
        .map_or(b.len(), |off| host_start + off);
    let (host, port) = parse_hostport(sub(uri, host_start, hp_end)?)?;

    let mut params = Vec::new();
    let mut i = hp_end;
    while b.get(i) == Some(&b';') {
        i += 1;
        let name_end = scan(b, i, PARAMCHAR);
        let name = sub(uri, i, name_end)?;
        if name.is_empty() {
            return Err(GrammarError::BadUri("empty URI parameter name"));
        }
        i = name_end;
        let value = if b.get(i) == Some(&b'=') {
            let value_end = scan(b, i + 1, PARAMCHAR);
            let value = sub(uri, i + 1, value_end)?;
            if value.is_empty() {
                return Err(GrammarError::BadUri("empty URI parameter value"));
            }
            i = value_end;
            Some(Cow::Borrowed(value))
        } else {
            None
        };
        params.push((name, value));
    }
    match b.get(i) {
        None | Some(b'?') => Ok(SipUri {
            scheme,
            user,
            host,
            port,
            params: Params(params),
        }),
        Some(_) => Err(GrammarError::BadUri("bad character in URI parameters")),
    }
}

/// Checks a Via header value: one or more comma-separated `sent-protocol LWS sent-by
/// *(SEMI via-params)` (RFC 3261 §20.42, §25.1), LWS allowed around `/`, `:`, `;`, `=` and `,`.
/// Nothing is kept: a response echoes the value as received.
pub fn check_via(value: &str) -> Result<(), GrammarError> {
    let mut c = Cursor::new(value);
    loop {
        c.skip_lws();
        for (i, expected) in ["protocol name", "protocol version", "transport"]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                c.skip_lws();
                if c.peek() != Some(b'/') {
                    return Err(c.unexpected("'/' in the sent-protocol"));
                }
                c.pos += 1;
                c.skip_lws();
            }
            if c.take_while(TOKEN).is_empty() {
                return Err(c.unexpected(expected));
            }
        }
        let before_lws = c.pos;
        c.skip_lws();
        if c.pos == before_lws {
            return Err(c.unexpected("whitespace before the sent-by"));
        }
        if c.peek() == Some(b'[') {
            let Some(off) = memchr::memchr(b']', c.rest()) else {
                return Err(c.unexpected("']' closing the IPv6 reference"));
            };
            c.pos += off + 1;
        } else if c.take_while(HOST).is_empty() {
            return Err(c.unexpected("sent-by host"));
        }
        c.skip_lws();
        if c.peek() == Some(b':') {
            c.pos += 1;
            c.skip_lws();
            let port = c.take_while(HOST);
            if parse_port(port).is_err() {
                return Err(c.unexpected("sent-by port"));
            }
            c.skip_lws();
        }
        loop {
            match c.peek() {
                None => return Ok(()),
                Some(b',') => {
                    c.pos += 1;
                    break;
                }
                Some(b';') => {
                    c.pos += 1;
                    c.skip_lws();
                    c.generic_param()?;
                    c.skip_lws();
                }
                Some(_) => return Err(c.unexpected("';', ',' or end of header")),
            }
        }
    }
}

/// The bearer credential from a Proxy-Authorization or Authorization header value. The scheme
/// is compared case-insensitively; another scheme -> [`GrammarError::NotBearer`]; `Bearer` with
/// nothing, or with auth-params but no `token`, -> [`GrammarError::MissingToken`].
pub fn parse_bearer_credential(value: &str) -> Result<Credential<'_>, GrammarError> {
    let mut c = Cursor::new(value);
    c.skip_lws();
    if c.at_end() {
        return Err(GrammarError::Empty);
    }
    let scheme = c.take_while(TOKEN);
    if scheme.is_empty() {
        return Err(c.unexpected("authentication scheme"));
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Token chars are ASCII, so any byte index is a char boundary.
        let shown = scheme
            .get(..scheme.len().min(MAX_SCHEME_ECHO))
            .unwrap_or(scheme);
        return Err(GrammarError::NotBearer(shown.to_owned()));
    }
    let after_scheme = c.pos;
    c.skip_lws();
    if c.at_end() {
        return Err(GrammarError::MissingToken);
    }
    if c.pos == after_scheme {
        return Err(c.unexpected("whitespace after the scheme"));
    }

    // RFC 7235: credentials are either one token68 or a list of auth-params. A token68 is the
    // whole rest of the value; anything else is read as auth-params.
    let start = c.pos;
    let body = c.take_while(TOKEN68);
    while c.peek() == Some(b'=') {
        c.pos += 1;
    }
    let token68_end = c.pos;
    c.skip_lws();
    if !body.is_empty() && c.at_end() {
        return Ok(Credential::Bearer(c.slice(start, token68_end)?));
    }
    c.pos = start;

    let mut token = None;
    loop {
        // `#auth-param` allows empty list elements.
        c.skip_lws();
        match c.peek() {
            None => break,
            Some(b',') => {
                c.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = c.take_while(TOKEN);
        if name.is_empty() {
            return Err(c.unexpected("auth-param name"));
        }
        c.skip_lws();
        match c.peek() {
            Some(b'=') => c.pos += 1,
            Some(_) => return Err(c.unexpected("'=' after auth-param name")),
            None => {
                return Err(GrammarError::UnexpectedEnd {
                    expected: "'=' after auth-param name",
                });
            }
        }
        c.skip_lws();
        let value = match c.peek() {
            Some(b'"') => c.quoted()?,
            Some(_) => {
                let v = c.take_while(TOKEN);
                if v.is_empty() {
                    return Err(c.unexpected("auth-param value"));
                }
                Cow::Borrowed(v)
            }
            None => {
                return Err(GrammarError::UnexpectedEnd {
                    expected: "auth-param value",
                });
            }
        };
        if name.eq_ignore_ascii_case("token") {
            // Two tokens could be read differently by two components; refuse rather than pick.
            if token.is_some() {
                return Err(GrammarError::DuplicateParam("token"));
            }
            token = Some(value);
        }
        c.skip_lws();
        match c.peek() {
            None => break,
            Some(b',') => c.pos += 1,
            Some(_) => return Err(c.unexpected("',' between auth-params")),
        }
    }
    match token {
        Some(t) if !t.is_empty() => Ok(Credential::CiscoToken(t)),
        _ => Err(GrammarError::MissingToken),
    }
}

// Byte classes. Every class holds ASCII bytes only, so a run of class bytes always starts and
// ends on a char boundary.

/// RFC 3261 `token`.
const TOKEN: u8 = 1;
/// Unquoted header-param value: visible ASCII except separators. Wider than RFC 3261's
/// `token / host` so that `host:port` values such as Expressway's `orig-hostport` are accepted.
const HVALUE: u8 = 1 << 1;
/// RFC 3261 `paramchar` (URI parameter names and values).
const PARAMCHAR: u8 = 1 << 2;
/// RFC 3261 `user` characters.
const USER: u8 = 1 << 3;
/// RFC 3261 `password` characters.
const PASSWORD: u8 = 1 << 4;
/// Host name or IPv4 address characters.
const HOST: u8 = 1 << 5;
/// Inside an IPv6 reference.
const IPV6: u8 = 1 << 6;
/// RFC 7235 `token68`, without the trailing `=` padding.
const TOKEN68: u8 = 1 << 7;

static CLASSES: [u8; 256] = build_classes();

const fn contains(set: &[u8], b: u8) -> bool {
    let mut i = 0;
    while i < set.len() {
        if set[i] == b {
            return true;
        }
        i += 1;
    }
    false
}

const fn build_classes() -> [u8; 256] {
    const UNRESERVED_MARK: &[u8] = b"-_.!~*'()%";
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 128 {
        let b = i as u8;
        let alnum = b.is_ascii_alphanumeric();
        let mut class = 0;
        if alnum || contains(b"-.!%*_+`'~", b) {
            class |= TOKEN;
        }
        if b.is_ascii_graphic() && !contains(b"\";,<>=\\", b) {
            class |= HVALUE;
        }
        if alnum || contains(UNRESERVED_MARK, b) || contains(b"[]/:&+$", b) {
            class |= PARAMCHAR;
        }
        if alnum || contains(UNRESERVED_MARK, b) || contains(b"&=+$,;?/", b) {
            class |= USER;
        }
        if alnum || contains(UNRESERVED_MARK, b) || contains(b"&=+$,", b) {
            class |= PASSWORD;
        }
        if alnum || b == b'-' || b == b'.' {
            class |= HOST;
        }
        if b.is_ascii_hexdigit() || b == b':' || b == b'.' {
            class |= IPV6;
        }
        if alnum || contains(b"-._~+/", b) {
            class |= TOKEN68;
        }
        table[i] = class;
        i += 1;
    }
    table
}

fn is(b: u8, class: u8) -> bool {
    CLASSES[usize::from(b)] & class != 0
}

fn all_in(s: &str, class: u8) -> bool {
    s.bytes().all(|b| is(b, class))
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_lws_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// `b[from..]`, empty when `from` is past the end.
fn tail(b: &[u8], from: usize) -> &[u8] {
    b.get(from..).unwrap_or_default()
}

/// End of the run of `class` bytes starting at `from`.
fn scan(b: &[u8], from: usize, class: u8) -> usize {
    from + tail(b, from).iter().take_while(|&&c| is(c, class)).count()
}

/// `s[a..b]` for URI parsing; the indices come from ASCII delimiters, so the error is a guard.
fn sub(s: &str, a: usize, b: usize) -> Result<&str, GrammarError> {
    s.get(a..b)
        .ok_or(GrammarError::BadUri("split inside a character"))
}

fn parse_hostport(hp: &str) -> Result<(&str, Option<u16>), GrammarError> {
    if hp.is_empty() {
        return Err(GrammarError::BadUri("empty host"));
    }
    let (host, port) = if hp.starts_with('[') {
        let close = hp
            .find(']')
            .ok_or(GrammarError::BadUri("unterminated IPv6 reference"))?;
        let inner = sub(hp, 1, close)?;
        if inner.is_empty() || !inner.contains(':') || !all_in(inner, IPV6) {
            return Err(GrammarError::BadUri("bad IPv6 reference"));
        }
        let after = sub(hp, close + 1, hp.len())?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(GrammarError::BadUri("junk after IPv6 reference")),
        };
        (sub(hp, 0, close + 1)?, port)
    } else {
        let (host, port) = match hp.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        };
        if host.is_empty() || !all_in(host, HOST) {
            return Err(GrammarError::BadUri("bad host"));
        }
        (host, port)
    };
    Ok((host, port.map(parse_port).transpose()?))
}

fn parse_port(p: &str) -> Result<u16, GrammarError> {
    // `u16::from_str` would also take a leading '+'.
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(GrammarError::BadPort);
    }
    p.parse().map_err(|_| GrammarError::BadPort)
}

/// Checks the shape RFC 3986 gives every URI: `scheme ":" something`, no whitespace or
/// delimiters of the surrounding header. The scheme-specific part is left to
/// [`parse_sip_uri`], because a Contact may legally carry another scheme.
fn check_uri_shape(uri: &str) -> Result<(), GrammarError> {
    let b = uri.as_bytes();
    if b.is_empty() {
        return Err(GrammarError::BadUri("empty URI"));
    }
    if b.iter()
        .any(|&c| is_lws(c) || matches!(c, b'<' | b'>' | b'"'))
    {
        return Err(GrammarError::BadUri(
            "whitespace, quote or angle bracket in URI",
        ));
    }
    let scheme_len = b
        .iter()
        .take_while(|&&c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        .count();
    if !b.first().is_some_and(u8::is_ascii_alphabetic) || b.get(scheme_len) != Some(&b':') {
        return Err(GrammarError::BadUri("missing scheme"));
    }
    if scheme_len + 1 == b.len() {
        return Err(GrammarError::BadUri("nothing after the scheme"));
    }
    Ok(())
}

/// Resolves `\x` quoted-pairs. Char-wise, so it cannot split a multi-byte character.
fn unescape(content: &str) -> String {
    let mut out = String::with_capacity(content.len());
    let mut chars = content.chars();
    while let Some(ch) = chars.next() {
        if ch == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// A position in a header value. `pos` only ever stops right before an ASCII byte or at the
/// end, so slices between two stops are valid `str` slices.
struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.b.len()
    }

    fn rest(&self) -> &'a [u8] {
        tail(self.b, self.pos)
    }

    fn skip_lws(&mut self) {
        while self.peek().is_some_and(is_lws) {
            self.pos += 1;
        }
    }

    fn take_while(&mut self, class: u8) -> &'a str {
        let start = self.pos;
        self.pos = scan(self.b, start, class);
        // Class bytes are ASCII, so both ends are char boundaries; the fallback is unreachable.
        self.s.get(start..self.pos).unwrap_or_default()
    }

    fn slice(&self, a: usize, b: usize) -> Result<&'a str, GrammarError> {
        self.s
            .get(a..b)
            .ok_or_else(|| self.unexpected_at(a, "a character boundary"))
    }

    fn unexpected_at(&self, at: usize, expected: &'static str) -> GrammarError {
        match self.s.get(at..).and_then(|r| r.chars().next()) {
            Some(found) => GrammarError::Unexpected {
                at,
                found,
                expected,
            },
            None => GrammarError::UnexpectedEnd { expected },
        }
    }

    fn unexpected(&self, expected: &'static str) -> GrammarError {
        self.unexpected_at(self.pos, expected)
    }

    /// A quoted-string at `pos` (which holds `"`); returns its content with escapes resolved.
    fn quoted(&mut self) -> Result<Cow<'a, str>, GrammarError> {
        let open = self.pos;
        let mut i = open + 1;
        let mut escaped = false;
        loop {
            let rest = tail(self.b, i);
            let Some(off) = memchr::memchr2(b'"', b'\\', rest) else {
                return Err(GrammarError::UnterminatedQuote { at: open });
            };
            if rest.get(off) == Some(&b'\\') {
                // A quoted-pair: the next byte is literal, even `"` or `\`.
                escaped = true;
                i += off + 2;
                continue;
            }
            let close = i + off;
            let content = self.slice(open + 1, close)?;
            self.pos = close + 1;
            return Ok(if escaped {
                Cow::Owned(unescape(content))
            } else {
                Cow::Borrowed(content)
            });
        }
    }

    /// A `<...>` at `pos` (which holds `<`); returns the trimmed URI inside.
    fn angle(&mut self) -> Result<&'a str, GrammarError> {
        let open = self.pos;
        let Some(off) = memchr::memchr(b'>', tail(self.b, open + 1)) else {
            return Err(GrammarError::UnterminatedAngle { at: open });
        };
        let close = open + 1 + off;
        // LAQUOT and RAQUOT take whitespace outside the brackets only: `< sip:a@h >` is an
        // addr-spec with spaces (RFC 4475 §3.1.2.14), refused by the shape check.
        let uri = self.slice(open + 1, close)?;
        check_uri_shape(uri)?;
        self.pos = close + 1;
        Ok(uri)
    }

    /// A bare addr-spec: up to the first `;`, `,` or whitespace.
    fn addr_spec(&mut self) -> Result<&'a str, GrammarError> {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if b == b';' || b == b',' || is_lws(b) {
                break;
            }
            // A URI with `?headers` must be in `<>` (RFC 3261 §20, RFC 4475 §3.1.2.13).
            if matches!(b, b'<' | b'>' | b'"' | b'?') {
                return Err(self.unexpected("addr-spec character"));
            }
            self.pos += 1;
        }
        let uri = self.slice(start, self.pos)?;
        check_uri_shape(uri)?;
        Ok(uri)
    }

    /// One entry: `[display-name] <uri> *(;param)` or `addr-spec *(;param)`. In a list, stops
    /// before the `,` that ends the entry.
    fn name_addr(&mut self, in_list: bool) -> Result<NameAddr<'a>, GrammarError> {
        self.skip_lws();
        let start = self.pos;
        let (display_name, uri) = match self.peek() {
            None => return Err(GrammarError::Empty),
            Some(b',') if in_list => return Err(GrammarError::Empty),
            Some(b'"') => {
                let name = self.quoted()?;
                self.skip_lws();
                if self.peek() != Some(b'<') {
                    return Err(self.unexpected("'<' after the display name"));
                }
                (Some(name), self.angle()?)
            }
            Some(b'<') => (None, self.angle()?),
            Some(_) => {
                // `*(token LWS) <` is a display name; anything else (a scheme's ':' comes
                // first) is an addr-spec.
                let run = self
                    .rest()
                    .iter()
                    .take_while(|&&b| is(b, TOKEN) || is_lws(b))
                    .count();
                let lt = self.pos + run;
                if self.b.get(lt) == Some(&b'<') {
                    let name = self.slice(self.pos, lt)?.trim_end_matches(is_lws_char);
                    self.pos = lt;
                    (Some(Cow::Borrowed(name)), self.angle()?)
                } else {
                    (None, self.addr_spec()?)
                }
            }
        };
        let mut end = self.pos;
        let mut params = Vec::new();
        loop {
            self.skip_lws();
            match self.peek() {
                None => break,
                Some(b',') if in_list => break,
                Some(b';') => self.pos += 1,
                Some(_) if in_list => return Err(self.unexpected("';', ',' or end of header")),
                Some(_) => return Err(self.unexpected("';' or end of header")),
            }
            self.skip_lws();
            params.push(self.generic_param()?);
            end = self.pos;
        }
        Ok(NameAddr {
            display_name,
            uri,
            params: Params(params),
            raw: self.slice(start, end)?,
        })
    }

    /// `token [= (token / host / quoted-string)]`; leaves `pos` right after the param.
    fn generic_param(&mut self) -> Result<(&'a str, Option<Cow<'a, str>>), GrammarError> {
        let name = self.take_while(TOKEN);
        if name.is_empty() {
            return Err(self.unexpected("parameter name"));
        }
        let after_name = self.pos;
        self.skip_lws();
        if self.peek() != Some(b'=') {
            self.pos = after_name;
            return Ok((name, None));
        }
        self.pos += 1;
        self.skip_lws();
        let value = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            let v = self.take_while(HVALUE);
            if v.is_empty() {
                return Err(self.unexpected("parameter value"));
            }
            Cow::Borrowed(v)
        };
        Ok((name, Some(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type P = &'static [(&'static str, Option<&'static str>)];

    const JABBER_CONTACT: &str = "<sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@10.10.10.10:62162;\
transport=tls>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-882323451234>\";\
+u.sip!devicename.ccm.cisco.com=\"CSFrado\";+u.sip!model.ccm.cisco.com=\"503\";video";

    const MRA_CONTACT: &str = "<sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@192.0.2.20:5061;\
transport=tls;orig-hostport=10.1.1.5:51234>;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-\
882323451234>\";+u.sip!devicename.ccm.cisco.com=\"CSFrado\";+u.sip!model.ccm.cisco.com=\"503\";\
video;+u.sip!userid.ccm.cisco.com=\"rado\";x-cisco-mra-ha=AR_SK;x-cisco-reg-id=1";

    const MRA_CONTACT_HEADER_HOSTPORT: &str = "<sip:a8ae9f92@192.0.2.20:5061;transport=tls>;\
orig-hostport=10.1.1.5:51234;+u.sip!userid.ccm.cisco.com=\"rado\";x-cisco-mra-ha=AR_SK;\
x-cisco-reg-id=1";

    struct Case {
        name: &'static str,
        input: &'static str,
        display: Option<&'static str>,
        uri: &'static str,
        params: P,
        raw: &'static str,
    }

    const INSTANCE: &str = "<urn:uuid:00000000-0000-0000-0000-882323451234>";

    const CASES: &[Case] = &[
        Case {
            name: "jabber contact of docs/ucm.md §4",
            input: JABBER_CONTACT,
            display: None,
            uri: "sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@10.10.10.10:62162;transport=tls",
            params: &[
                ("+sip.instance", Some(INSTANCE)),
                ("+u.sip!devicename.ccm.cisco.com", Some("CSFrado")),
                ("+u.sip!model.ccm.cisco.com", Some("503")),
                ("video", None),
            ],
            raw: JABBER_CONTACT,
        },
        Case {
            name: "expressway-c rewritten contact",
            input: MRA_CONTACT,
            display: None,
            uri: "sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@192.0.2.20:5061;transport=tls;\
orig-hostport=10.1.1.5:51234",
            params: &[
                ("+sip.instance", Some(INSTANCE)),
                ("+u.sip!devicename.ccm.cisco.com", Some("CSFrado")),
                ("+u.sip!model.ccm.cisco.com", Some("503")),
                ("video", None),
                ("+u.sip!userid.ccm.cisco.com", Some("rado")),
                ("x-cisco-mra-ha", Some("AR_SK")),
                ("x-cisco-reg-id", Some("1")),
            ],
            raw: MRA_CONTACT,
        },
        Case {
            name: "orig-hostport as a header param (host:port value)",
            input: MRA_CONTACT_HEADER_HOSTPORT,
            display: None,
            uri: "sip:a8ae9f92@192.0.2.20:5061;transport=tls",
            params: &[
                ("orig-hostport", Some("10.1.1.5:51234")),
                ("+u.sip!userid.ccm.cisco.com", Some("rado")),
                ("x-cisco-mra-ha", Some("AR_SK")),
                ("x-cisco-reg-id", Some("1")),
            ],
            raw: MRA_CONTACT_HEADER_HOSTPORT,
        },
        Case {
            name: "escaped quotes in display name and value",
            input: r#""Rado \"the\" \\ Admin" <sip:1010@10.10.10.1>;x-note="a \"b\"; <c>, d""#,
            display: Some(r#"Rado "the" \ Admin"#),
            uri: "sip:1010@10.10.10.1",
            params: &[("x-note", Some(r#"a "b"; <c>, d"#))],
            raw: r#""Rado \"the\" \\ Admin" <sip:1010@10.10.10.1>;x-note="a \"b\"; <c>, d""#,
        },
        Case {
            name: "odd whitespace and tabs",
            input: " \t\"CSF\"\t <sip:a@h:5060;transport=tls> \t; \texpires \t=\t 60 \t;  \
video\t ;q = \"0.5\"  \t",
            display: Some("CSF"),
            uri: "sip:a@h:5060;transport=tls",
            params: &[("expires", Some("60")), ("video", None), ("q", Some("0.5"))],
            raw: "\"CSF\"\t <sip:a@h:5060;transport=tls> \t; \texpires \t=\t 60 \t;  \
video\t ;q = \"0.5\"",
        },
        Case {
            name: "ipv6 host",
            input: "<sip:1010@[2001:db8::1]:5061;transport=tls>;expires=3600",
            display: None,
            uri: "sip:1010@[2001:db8::1]:5061;transport=tls",
            params: &[("expires", Some("3600"))],
            raw: "<sip:1010@[2001:db8::1]:5061;transport=tls>;expires=3600",
        },
        Case {
            name: "bare addr-spec: params belong to the header",
            input: "sip:1010@10.0.0.1;expires=60",
            display: None,
            uri: "sip:1010@10.0.0.1",
            params: &[("expires", Some("60"))],
            raw: "sip:1010@10.0.0.1;expires=60",
        },
        Case {
            name: "bare addr-spec alone",
            input: "  sips:1010@example.com  ",
            display: None,
            uri: "sips:1010@example.com",
            params: &[],
            raw: "sips:1010@example.com",
        },
        Case {
            name: "from with tag",
            input: "<sip:1010@10.10.10.1>;tag=882323451234089000003bdd-00005eff",
            display: None,
            uri: "sip:1010@10.10.10.1",
            params: &[("tag", Some("882323451234089000003bdd-00005eff"))],
            raw: "<sip:1010@10.10.10.1>;tag=882323451234089000003bdd-00005eff",
        },
        Case {
            name: "to without tag",
            input: "<sip:1010@10.10.10.1>",
            display: None,
            uri: "sip:1010@10.10.10.1",
            params: &[],
            raw: "<sip:1010@10.10.10.1>",
        },
        Case {
            name: "token display name, TAG in capitals",
            input: "Rado  Ban <sips:1010@cucm.example.com>;TAG=441122775",
            display: Some("Rado  Ban"),
            uri: "sips:1010@cucm.example.com",
            params: &[("TAG", Some("441122775"))],
            raw: "Rado  Ban <sips:1010@cucm.example.com>;TAG=441122775",
        },
        Case {
            name: "non-ascii quoted display name",
            input: "\"Radó € 😀\" <sip:1010@h>",
            display: Some("Radó € 😀"),
            uri: "sip:1010@h",
            params: &[],
            raw: "\"Radó € 😀\" <sip:1010@h>",
        },
    ];

    fn params_of<'p>(p: &'p Params<'_>) -> Vec<(&'p str, Option<&'p str>)> {
        p.iter().collect()
    }

    fn check(case: &Case, got: &NameAddr<'_>) {
        let n = case.name;
        assert_eq!(
            got.display_name.as_deref(),
            case.display,
            "{n}: display name"
        );
        assert_eq!(got.uri, case.uri, "{n}: uri");
        assert_eq!(params_of(&got.params), case.params.to_vec(), "{n}: params");
        assert_eq!(got.raw, case.raw, "{n}: raw");
    }

    #[test]
    fn name_addr_table() {
        for case in CASES {
            let got = parse_name_addr(case.input)
                .unwrap_or_else(|e| panic!("{}: {e} ({:?})", case.name, case.input));
            check(case, &got);
            // Each case also parses as a one-entry Contact list.
            match parse_contact_list(case.input) {
                Ok(ContactList::Entries(v)) => {
                    assert_eq!(v.len(), 1, "{}", case.name);
                    check(case, &v[0]);
                }
                other => panic!("{}: {other:?}", case.name),
            }
        }
    }

    #[test]
    fn jabber_contact_fields() {
        let c = parse_name_addr(JABBER_CONTACT).unwrap();
        assert_eq!(
            c.param("+u.sip!DeviceName.ccm.cisco.com"),
            Some(Some("CSFrado"))
        );
        assert_eq!(c.param("+u.sip!model.ccm.cisco.com"), Some(Some("503")));
        assert_eq!(c.param("+sip.instance"), Some(Some(INSTANCE)));
        assert_eq!(c.param("video"), Some(None));
        assert!(c.params.has("VIDEO"));
        assert_eq!(c.param("expires"), None);
        assert_eq!(c.tag(), None);
        assert_eq!(c.raw, JABBER_CONTACT);
        // Nothing was unescaped, so nothing was copied.
        assert!(
            c.params
                .0
                .iter()
                .all(|(_, v)| !matches!(v, Some(Cow::Owned(_))))
        );
        let uri = c.sip_uri().unwrap();
        assert_eq!(uri.scheme, "sip");
        assert_eq!(uri.user, Some("a8ae9f92-4b07-a0d7-d701-29320aed1e2e"));
        assert_eq!(uri.host, "10.10.10.10");
        assert_eq!(uri.port, Some(62162));
        assert_eq!(uri.params.get("transport"), Some(Some("tls")));
        // UCM's 200 OK echoes the Contact with a trailing flag on a first registration.
        let echoed = format!("{JABBER_CONTACT};x-cisco-newreg");
        let c = parse_name_addr(&echoed).unwrap();
        assert_eq!(c.param("x-cisco-newreg"), Some(None));
        assert_eq!(c.params.len(), 5);
        assert_eq!(c.raw, echoed);
    }

    #[test]
    fn expressway_contact_fields() {
        let c = parse_name_addr(MRA_CONTACT).unwrap();
        let uri = c.sip_uri().unwrap();
        assert_eq!(uri.host, "192.0.2.20");
        assert_eq!(uri.port, Some(5061));
        assert_eq!(
            uri.params.get("orig-hostport"),
            Some(Some("10.1.1.5:51234"))
        );
        assert_eq!(c.param("+u.sip!userid.ccm.cisco.com"), Some(Some("rado")));
        assert_eq!(c.param("x-cisco-mra-ha"), Some(Some("AR_SK")));
        assert_eq!(c.param("x-cisco-reg-id"), Some(Some("1")));
        assert_eq!(c.raw, MRA_CONTACT);
    }

    #[test]
    fn from_to_tags() {
        let from =
            parse_name_addr("<sip:1010@10.10.10.1>;tag=882323451234089000003bdd-00005eff").unwrap();
        assert_eq!(from.tag(), Some("882323451234089000003bdd-00005eff"));
        let to = parse_name_addr("\"Line 1\" <sip:1010@10.10.10.1> ; Tag = 441122775 ").unwrap();
        assert_eq!(to.tag(), Some("441122775"));
        assert_eq!(to.display_name.as_deref(), Some("Line 1"));
        let no_tag = parse_name_addr("<sip:1010@10.10.10.1>;tag").unwrap();
        assert_eq!(no_tag.tag(), None);
        assert_eq!(no_tag.param("tag"), Some(None));
    }

    #[test]
    fn escapes_allocate_only_when_needed() {
        let c = parse_name_addr(r#""A \"B\"" <sip:a@h>;x="1\\2";y="plain""#).unwrap();
        assert!(matches!(c.display_name, Some(Cow::Owned(ref s)) if s == r#"A "B""#));
        assert!(matches!(c.params.0[0].1, Some(Cow::Owned(ref s)) if s == r"1\2"));
        assert!(matches!(c.params.0[1].1, Some(Cow::Borrowed("plain"))));
    }

    #[test]
    fn contact_lists() {
        let two = "<sip:a@h1:5060>;expires=60 , \"B, Jr. <x>\" <sip:b@h2;lr>;q=0.5;\
+sip.instance=\"<urn:uuid:1,2>\"\t";
        let cases: &[(&str, &[(&str, P)])] = &[
            (
                two,
                &[
                    ("<sip:a@h1:5060>;expires=60", &[("expires", Some("60"))]),
                    (
                        "\"B, Jr. <x>\" <sip:b@h2;lr>;q=0.5;+sip.instance=\"<urn:uuid:1,2>\"",
                        &[
                            ("q", Some("0.5")),
                            ("+sip.instance", Some("<urn:uuid:1,2>")),
                        ],
                    ),
                ],
            ),
            (
                "sip:a@h;expires=0,sip:b@h",
                &[
                    ("sip:a@h;expires=0", &[("expires", Some("0"))]),
                    ("sip:b@h", &[]),
                ],
            ),
            (
                "<sip:a@h;x=1,2>,<sip:b@h>",
                &[("<sip:a@h;x=1,2>", &[]), ("<sip:b@h>", &[])],
            ),
        ];
        for (input, expected) in cases {
            let Ok(ContactList::Entries(got)) = parse_contact_list(input) else {
                panic!("{input:?}: {:?}", parse_contact_list(input));
            };
            assert_eq!(got.len(), expected.len(), "{input:?}");
            for (g, (raw, params)) in got.iter().zip(expected.iter()) {
                assert_eq!(g.raw, *raw, "{input:?}");
                assert_eq!(params_of(&g.params), params.to_vec(), "{input:?}");
            }
        }
        assert_eq!(parse_contact_list("*"), Ok(ContactList::Star));
        assert_eq!(parse_contact_list(" \t* "), Ok(ContactList::Star));
    }

    fn unx(at: usize, found: char, expected: &'static str) -> GrammarError {
        GrammarError::Unexpected {
            at,
            found,
            expected,
        }
    }

    fn end(expected: &'static str) -> GrammarError {
        GrammarError::UnexpectedEnd { expected }
    }

    #[test]
    fn name_addr_errors() {
        use GrammarError as E;
        const IN_URI: &str = "whitespace, quote or angle bracket in URI";
        const PARAM_OR_END: &str = "';' or end of header";
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            (" \t ", E::Empty),
            ("\"Rado <sip:a@h>", E::UnterminatedQuote { at: 0 }),
            ("\"Rado\\\" <sip:a@h>", E::UnterminatedQuote { at: 0 }),
            ("<sip:a@h>;x=\"abc", E::UnterminatedQuote { at: 12 }),
            ("<sip:a@h>;x=\"abc\\", E::UnterminatedQuote { at: 12 }),
            ("<sip:a@h;transport=tls", E::UnterminatedAngle { at: 0 }),
            ("Rado <sip:a@h", E::UnterminatedAngle { at: 5 }),
            ("<>", E::BadUri("empty URI")),
            ("<a@h>", E::BadUri("missing scheme")),
            ("<sip:>", E::BadUri("nothing after the scheme")),
            ("<sip:a b@h>", E::BadUri(IN_URI)),
            ("<<sip:a@h>>", E::BadUri(IN_URI)),
            (
                "\"Rado\" sip:a@h",
                unx(7, 's', "'<' after the display name"),
            ),
            ("<sip:a@h> x", unx(10, 'x', PARAM_OR_END)),
            ("<sip:a@h>;", end("parameter name")),
            ("<sip:a@h>;=1", unx(10, '=', "parameter name")),
            ("<sip:a@h>;x=", end("parameter value")),
            ("<sip:a@h>;x=;y", unx(12, ';', "parameter value")),
            ("<sip:a@h>;é=1", unx(10, 'é', "parameter name")),
            ("<sip:a@h>, <sip:b@h>", unx(9, ',', PARAM_OR_END)),
            ("sip:a@h>", unx(7, '>', "addr-spec character")),
            // RFC 4475 §3.1.2.13-15: headers outside `<>`, spaces inside, a comma in a name.
            (
                "sip:a@h?Route=%3Csip:x%3E",
                unx(7, '?', "addr-spec character"),
            ),
            ("\"W, T\" < sip:a@h >", E::BadUri(IN_URI)),
            ("\"W, T\" <sip:a@h\t>", E::BadUri(IN_URI)),
            ("Bell, Alexander <sip:a@h>", E::BadUri("missing scheme")),
        ];
        for (input, want) in cases {
            assert_eq!(parse_name_addr(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn via_values() {
        for ok in [
            "SIP/2.0/TLS 10.10.10.10:62162;branch=z9hG4bK00001188;rport",
            "SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw",
            "SIP / 2.0 / TCP h.example.com ; branch = a , SIP/2.0/UDP 192.0.2.1 ; branch= b",
            "SIP/2.0/UDP [2001:db8::1]:5060;received=2001:db8::2;x=\"q, ;\"",
            "SIP/2.0/UNKNOWN h:1;branch=z9hG4bK-.!%66*_+`'~",
        ] {
            assert_eq!(check_via(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/2.0/UDP h;branch=a,",
            "SIP/2.0/UDP h;",
            "SIP/2.0/UDP h,,SIP/2.0/UDP g",
            "SIP/2.0/UDPh",
            "SIP/2.0 h",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0/UDP h:",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP h x",
        ] {
            assert!(check_via(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn contact_list_errors() {
        use GrammarError as E;
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            ("<sip:a@h>,", E::Empty),
            ("<sip:a@h>,,<sip:b@h>", E::Empty),
            (",<sip:a@h>", E::Empty),
            ("*, <sip:a@h>", E::BadUri("missing scheme")),
            ("\"a,b <sip:a@h>", E::UnterminatedQuote { at: 0 }),
            ("<sip:a@h>, <sip:b@h", E::UnterminatedAngle { at: 11 }),
            (
                "<sip:a@h> <sip:b@h>",
                unx(10, '<', "';', ',' or end of header"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_contact_list(input).as_ref(), Err(want), "{input:?}");
        }
    }

    struct UriCase {
        input: &'static str,
        scheme: &'static str,
        user: Option<&'static str>,
        host: &'static str,
        port: Option<u16>,
        params: P,
    }

    const URI_CASES: &[UriCase] = &[
        UriCase {
            input: "sip:a8ae9f92-4b07-a0d7-d701-29320aed1e2e@10.10.10.10:62162;transport=tls",
            scheme: "sip",
            user: Some("a8ae9f92-4b07-a0d7-d701-29320aed1e2e"),
            host: "10.10.10.10",
            port: Some(62162),
            params: &[("transport", Some("tls"))],
        },
        UriCase {
            input: "sip:u@192.0.2.20:5061;transport=tls;orig-hostport=10.1.1.5:51234",
            scheme: "sip",
            user: Some("u"),
            host: "192.0.2.20",
            port: Some(5061),
            params: &[
                ("transport", Some("tls")),
                ("orig-hostport", Some("10.1.1.5:51234")),
            ],
        },
        UriCase {
            input: "sips:alice:s3cr%65t@cucm.example.com:5061;transport=tls;lr?subject=x&to=a@b",
            scheme: "sips",
            user: Some("alice"),
            host: "cucm.example.com",
            port: Some(5061),
            params: &[("transport", Some("tls")), ("lr", None)],
        },
        UriCase {
            input: "SIP:1010@[2001:db8::1]:5061",
            scheme: "SIP",
            user: Some("1010"),
            host: "[2001:db8::1]",
            port: Some(5061),
            params: &[],
        },
        UriCase {
            input: "sip:[::ffff:10.0.0.1];maddr=[2001:db8::2]",
            scheme: "sip",
            user: None,
            host: "[::ffff:10.0.0.1]",
            port: None,
            params: &[("maddr", Some("[2001:db8::2]"))],
        },
        UriCase {
            input: "sip:10.10.10.1",
            scheme: "sip",
            user: None,
            host: "10.10.10.1",
            port: None,
            params: &[],
        },
        UriCase {
            input: "sip:+1;phone-context=x;user=phone@h",
            scheme: "sip",
            user: Some("+1;phone-context=x;user=phone"),
            host: "h",
            port: None,
            params: &[],
        },
        UriCase {
            input: "Sips:a@h?x=y",
            scheme: "Sips",
            user: Some("a"),
            host: "h",
            port: None,
            params: &[],
        },
    ];

    #[test]
    fn sip_uri_table() {
        for c in URI_CASES {
            let input = c.input;
            let u = parse_sip_uri(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(u.scheme, c.scheme, "{input:?}");
            assert_eq!(u.user, c.user, "{input:?}");
            assert_eq!(u.host, c.host, "{input:?}");
            assert_eq!(u.port, c.port, "{input:?}");
            assert_eq!(params_of(&u.params), c.params.to_vec(), "{input:?}");
        }
    }

    #[test]
    fn sip_uri_errors() {
        use GrammarError as E;
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            ("tel:+15551234", E::UnsupportedScheme),
            ("http://example.com", E::UnsupportedScheme),
            ("urn:uuid:0000", E::UnsupportedScheme),
            ("example.com", E::BadUri("missing scheme")),
            ("sip:", E::BadUri("empty host")),
            ("sip:a@", E::BadUri("empty host")),
            ("sip:@h", E::BadUri("empty user")),
            ("sip::pw@h", E::BadUri("empty user")),
            ("sip:a b@h", E::BadUri("bad character in user")),
            ("sip:a:p w@h", E::BadUri("bad character in password")),
            ("sip:a@h_x", E::BadUri("bad host")),
            ("sip:a@:5060", E::BadUri("bad host")),
            ("sip:a@h:", E::BadPort),
            ("sip:a@h:99999", E::BadPort),
            ("sip:a@h:65536", E::BadPort),
            ("sip:a@h:+50", E::BadPort),
            ("sip:a@h:50x", E::BadPort),
            ("sip:a@h:1234567", E::BadPort),
            (
                "sip:a@[2001:db8::1",
                E::BadUri("unterminated IPv6 reference"),
            ),
            ("sip:a@[]", E::BadUri("bad IPv6 reference")),
            ("sip:a@[zz::1]", E::BadUri("bad IPv6 reference")),
            ("sip:a@[::1]x", E::BadUri("junk after IPv6 reference")),
            ("sip:a@[::1]:", E::BadPort),
            ("sip:a@h;", E::BadUri("empty URI parameter name")),
            ("sip:a@h;=x", E::BadUri("empty URI parameter name")),
            ("sip:a@h;x=", E::BadUri("empty URI parameter value")),
            ("sip:a@h;x=\"y\"", E::BadUri("empty URI parameter value")),
            (
                "sip:a@h;x=y z",
                E::BadUri("bad character in URI parameters"),
            ),
            (
                "sip:a@h;x=a@b",
                E::BadUri("bad character in URI parameters"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_sip_uri(input).as_ref(), Err(want), "{input:?}");
        }
    }

    fn cisco(token: &str) -> Credential<'_> {
        Credential::CiscoToken(Cow::Borrowed(token))
    }

    #[test]
    fn bearer_table() {
        const JWT: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMDEwIn0.c2ln-_";
        let cisco_form = format!("Bearer token=\"{JWT}\"");
        let rfc_form = format!("Bearer {JWT}");
        let cases: &[(&str, Credential<'_>)] = &[
            (&cisco_form, cisco(JWT)),
            (&rfc_form, Credential::Bearer(JWT)),
            ("bearer token=\"abc\"", cisco("abc")),
            ("BEARER   token = \"abc\"", cisco("abc")),
            ("Bearer realm=\"ccmsipline\", token=\"abc\"", cisco("abc")),
            ("Bearer token=\"abc\",realm=\"ccmsipline\"", cisco("abc")),
            (
                "Bearer\trealm=ccmsipline ,\t token=\"abc\" , ",
                cisco("abc"),
            ),
            ("Bearer , token=abc.def-ghi", cisco("abc.def-ghi")),
            (
                "Bearer token=\"a\\\"b\"",
                Credential::CiscoToken("a\"b".into()),
            ),
            ("Bearer token=\"a,b\", realm=\"x\"", cisco("a,b")),
            (
                "  bearer   mF_9.B5f-4.1JqM  ",
                Credential::Bearer("mF_9.B5f-4.1JqM"),
            ),
            ("Bearer abc+/def==", Credential::Bearer("abc+/def==")),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_bearer_credential(input).as_ref(),
                Ok(want),
                "{input:?}"
            );
        }
    }

    #[test]
    fn bearer_errors() {
        use GrammarError as E;
        let long = format!("{} x=y", "A".repeat(200));
        let cases: &[(&str, E)] = &[
            ("", E::Empty),
            ("  ", E::Empty),
            ("Bearer", E::MissingToken),
            ("Bearer   ", E::MissingToken),
            ("Bearer realm=\"ccmsipline\"", E::MissingToken),
            ("Bearer token=\"\"", E::MissingToken),
            (
                "Digest username=\"1010\", realm=\"ccmsipline\"",
                E::NotBearer("Digest".into()),
            ),
            ("Basic dXNlcjpwYXNz", E::NotBearer("Basic".into())),
            ("Bearerx token=\"a\"", E::NotBearer("Bearerx".into())),
            (&long, E::NotBearer("A".repeat(MAX_SCHEME_ECHO))),
            (
                "Bearer token=\"a\", token=\"b\"",
                E::DuplicateParam("token"),
            ),
            ("Bearer token=\"abc", E::UnterminatedQuote { at: 13 }),
            ("Bearer realm=x, token=", end("auth-param value")),
            (
                "Bearer realm, token=\"a\"",
                unx(12, ',', "'=' after auth-param name"),
            ),
            (
                "Bearer token=\"a\" realm=\"b\"",
                unx(17, 'r', "',' between auth-params"),
            ),
            (
                "Bearer,token=\"a\"",
                unx(6, ',', "whitespace after the scheme"),
            ),
            ("\"Bearer\" x", unx(0, '"', "authentication scheme")),
            ("Bearer abc def", unx(11, 'd', "'=' after auth-param name")),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_bearer_credential(input).as_ref(),
                Err(want),
                "{input:?}"
            );
        }
    }

    /// Calls every entry point; on success checks the borrow invariants that callers rely on.
    fn exercise(input: &str) {
        if let Ok(na) = parse_name_addr(input) {
            assert!(input.contains(na.raw));
            assert_eq!(na.raw, na.raw.trim_matches(is_lws_char));
            let _ = na.sip_uri();
        }
        if let Ok(ContactList::Entries(v)) = parse_contact_list(input) {
            assert!(!v.is_empty());
            for e in &v {
                assert!(input.contains(e.raw));
                let _ = e.sip_uri();
            }
        }
        let _ = parse_sip_uri(input);
        let _ = parse_bearer_credential(input);
    }

    fn corpus() -> Vec<String> {
        let mut all: Vec<String> = CASES.iter().map(|c| c.input.to_owned()).collect();
        all.extend(
            [
                "<sip:a@h1:5060>;expires=60 , \"B, Jr.\" <sip:b@h2;lr>;q=0.5;+sip.instance=\"<u>\"",
                "sip:1010@10.0.0.1;expires=60",
                "sips:alice:secret@cucm.example.com:5061;transport=tls?subject=x",
                "sip:1010@[2001:db8::1]:5061",
                "Bearer realm=\"ccmsipline\", token=\"eyJhbGciOiJSUzI1NiJ9.e30.c2ln\"",
                "Bearer token=\"a\\\"b\",realm=x",
                "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln==",
                "Digest username=\"1010\"",
                "*",
                "\"Radó \\é\" <sip:é@h>;é=\"€\\😀\"",
            ]
            .map(str::to_owned),
        );
        all
    }

    #[test]
    fn no_panic_on_prefixes_suffixes_and_mutations() {
        const DELIMS: &[char] = &[
            '"', '\\', '<', '>', ';', ',', '=', ':', '@', '[', ']', ' ', 'é',
        ];
        for input in corpus() {
            let bounds: Vec<usize> = input
                .char_indices()
                .map(|(i, _)| i)
                .chain([input.len()])
                .collect();
            for &i in &bounds {
                exercise(&input[..i]);
                exercise(&input[i..]);
            }
            // Replace each character by each delimiter in turn.
            for w in bounds.windows(2) {
                for d in DELIMS {
                    let mut m = String::with_capacity(input.len() + 4);
                    m.push_str(&input[..w[0]]);
                    m.push(*d);
                    m.push_str(&input[w[1]..]);
                    exercise(&m);
                }
            }
        }
    }

    #[test]
    fn no_panic_on_random_input() {
        const ALPHABET: &[char] = &[
            '<', '>', '"', '\\', ';', ',', '=', ':', '@', '[', ']', '?', '*', ' ', '\t', '\r',
            '\n', 's', 'i', 'p', 'a', 'B', 'e', 'r', 't', 'o', 'k', 'n', '1', '.', '+', '!', 'é',
            '€', '😀', '\0',
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed_0a07_2026);
        let mut s = String::new();
        for round in 0..4000 {
            s.clear();
            let len = rng.usize(0..80);
            if round % 2 == 0 {
                let prefix = ["", "sip:", "<sip:a@h>;", "Bearer ", "\"x\" <"][rng.usize(0..5)];
                s.push_str(prefix);
                for _ in 0..len {
                    s.push(ALPHABET[rng.usize(0..ALPHABET.len())]);
                }
            } else {
                let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                s.push_str(&String::from_utf8_lossy(&bytes));
            }
            exercise(&s);
        }
    }
}
