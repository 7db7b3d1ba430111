//! Framing of SIP messages on stream transports (TCP, TLS) and validation of UDP datagrams.
//!
//! Everything here sees hostile bytes straight off the network, so it never panics, bounds every
//! buffer by [`Limits`], and rejects obvious junk as early as it can. It finds message boundaries
//! only (RFC 3261 §18.3, §7.5); parsing the message itself is left to the SIP layer.
//!
//! Stream rules:
//! - The header section ends at the first CRLFCRLF. The body is exactly `Content-Length` bytes
//!   (header `Content-Length` or compact `l`, any case); no such header on a stream means no body.
//! - Between messages (RFC 3261 §7.5, RFC 5626 §3.5.1): CRLFCRLF at the start of a frame is a
//!   keep-alive [`Frame::Ping`]; any other CRLF there is padding (or a pong) and is skipped.
//!   A CRLF counts as padding only once the two bytes after it are known not to be CRLF, so a
//!   buffer holding just `\r\n` or `\r\n\r` waits for more bytes. This makes the decision
//!   independent of how TCP or TLS happened to split the bytes. CRLFCRLFCRLF is a ping followed
//!   by padding. A partial ping left at end of stream is discarded silently.
//! - The first byte of a message must be an RFC 3261 token character (a method name or `SIP/`),
//!   so a TLS handshake or binary junk on a plain port fails at once instead of filling the buffer.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;
use tokio_util::codec::{Decoder, Encoder};

/// RFC 5626 §3.5.1 keep-alive ping, as it appears on the wire.
pub const PING: &[u8] = b"\r\n\r\n";
/// RFC 5626 §3.5.1 keep-alive pong, the answer the caller writes for each [`Frame::Ping`].
pub const PONG: &[u8] = b"\r\n";

const CRLF: &[u8] = b"\r\n";
/// The [`CodecError::Malformed`] text of a datagram without the blank line ending its headers.
pub const UNTERMINATED: &str = "header section not terminated";
const HEADER_END: &[u8] = b"\r\n\r\n";

/// One unit read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole SIP message: start line, headers, blank line and exactly Content-Length body bytes.
    Message(Bytes),
    /// RFC 5626 §3.5.1 keep-alive ping (CRLFCRLF); the caller answers with a single CRLF pong.
    Ping,
}

/// Bounds applied to every message, on streams and datagrams alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted message: header section (with its blank line) plus body, in bytes.
    pub max_message_bytes: usize,
    /// Largest accepted number of header fields; the start line and continuation lines do not
    /// count.
    pub max_headers: usize,
}

/// Why a stream or datagram was rejected. After any error on a stream the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Reading from the transport failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The header section, or header section plus body, is longer than the limit.
    #[error("message larger than {limit} bytes")]
    MessageTooLarge {
        /// The configured `max_message_bytes`.
        limit: usize,
    },
    /// The header section has more header fields than the limit.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The configured `max_headers`.
        limit: usize,
    },
    /// Content-Length is not a decimal number that fits, or several disagree.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// The message ended before Content-Length body bytes (a datagram, or a stream at EOF).
    #[error("body shorter than Content-Length")]
    TruncatedBody,
    /// The bytes are not a SIP message at all.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// Where the decoder is within the current frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At a frame boundary, where padding CRLFs and pings may appear.
    Idle,
    /// Inside a header section. No CRLFCRLF starts before `scanned` and no NUL lies before it,
    /// so the next search resumes there.
    Header { scanned: usize },
    /// Header section parsed; the message is complete once `total` bytes are buffered.
    Body { total: usize },
}

/// Splits a TCP or TLS byte stream into [`Frame`]s.
#[derive(Debug, Clone)]
pub struct SipCodec {
    limits: Limits,
    state: State,
    header_end: memmem::Finder<'static>,
}

impl SipCodec {
    /// A decoder at the start of a stream.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            state: State::Idle,
            header_end: memmem::Finder::new(HEADER_END),
        }
    }

    /// The limits this codec enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn too_large(&self) -> CodecError {
        CodecError::MessageTooLarge {
            limit: self.limits.max_message_bytes,
        }
    }
}

impl Decoder for SipCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        loop {
            match self.state {
                State::Idle => {
                    if buf.starts_with(PING) {
                        buf.advance(PING.len());
                        return Ok(Some(Frame::Ping));
                    }
                    // Empty, or a prefix of a ping: whether this is padding or a ping split by
                    // the transport is only known once more bytes arrive.
                    if PING.starts_with(&buf[..]) {
                        return Ok(None);
                    }
                    if buf.starts_with(CRLF) {
                        buf.advance(CRLF.len());
                        continue;
                    }
                    if !buf.first().is_some_and(|b| is_token_char(*b)) {
                        return Err(CodecError::Malformed("junk before start line"));
                    }
                    self.state = State::Header { scanned: 0 };
                }
                State::Header { scanned } => {
                    let max = self.limits.max_message_bytes;
                    // Bytes past the limit can never belong to an acceptable header section.
                    let window_end = buf.len().min(max);
                    let from = scanned.min(window_end);
                    let window = &buf[from..window_end];
                    let Some(i) = self.header_end.find(window) else {
                        if bare_nul(&buf[..window_end], from) {
                            return Err(CodecError::Malformed("NUL byte in header section"));
                        }
                        if window_end == max {
                            return Err(self.too_large());
                        }
                        // The last three bytes may begin a CRLFCRLF; look at them again.
                        self.state = State::Header {
                            scanned: window_end.saturating_sub(HEADER_END.len() - 1).max(from),
                        };
                        return Ok(None);
                    };
                    if bare_nul(&buf[..from + i], from) {
                        return Err(CodecError::Malformed("NUL byte in header section"));
                    }
                    let end = from + i;
                    let content_length =
                        parse_header_section(&buf[..end], self.limits.max_headers)?;
                    let total = (end + HEADER_END.len())
                        .checked_add(content_length.unwrap_or(0))
                        .filter(|total| *total <= max)
                        .ok_or_else(|| self.too_large())?;
                    self.state = State::Body { total };
                }
                State::Body { total } => {
                    if buf.len() < total {
                        // Bounded by max_message_bytes, checked when the state was entered.
                        buf.reserve(total - buf.len());
                        return Ok(None);
                    }
                    self.state = State::Idle;
                    return Ok(Some(Frame::Message(buf.split_to(total).freeze())));
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        match self.state {
            State::Idle => {
                // Only a partial ping can be left here: trailing padding, not an error.
                buf.clear();
                Ok(None)
            }
            State::Header { .. } => Err(CodecError::Malformed("stream ended in header section")),
            State::Body { .. } => Err(CodecError::TruncatedBody),
        }
    }
}

impl Encoder<Bytes> for SipCodec {
    type Error = io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// Validates one UDP datagram and trims it to its message.
///
/// Returns `Ok(None)` for a keep-alive: an empty datagram or one of only CR, LF and space.
/// Otherwise returns the header section plus Content-Length body bytes; bytes after the body are
/// discarded and, with no Content-Length, the rest of the datagram is the body (RFC 3261 §18.3).
/// Leading CRLFs are skipped as on streams. STUN keep-alives (RFC 5626 §4.4.2) are not SIP and
/// come back as [`CodecError::Malformed`]; demultiplex them before calling this.
pub fn frame_datagram(buf: &[u8], limits: Limits) -> Result<Option<&[u8]>, CodecError> {
    if buf.iter().all(|b| matches!(b, b'\r' | b'\n' | b' ')) {
        return Ok(None);
    }
    let mut msg = buf;
    while let Some(rest) = msg.strip_prefix(CRLF) {
        msg = rest;
    }
    if !msg.first().is_some_and(|b| is_token_char(*b)) {
        return Err(CodecError::Malformed("junk before start line"));
    }
    let max = limits.max_message_bytes;
    let too_large = || CodecError::MessageTooLarge { limit: max };
    let window = &msg[..msg.len().min(max)];
    let Some(end) = memmem::find(window, HEADER_END) else {
        return Err(if msg.len() > max {
            too_large()
        } else {
            CodecError::Malformed(UNTERMINATED)
        });
    };
    if bare_nul(&msg[..end], 0) {
        return Err(CodecError::Malformed("NUL byte in header section"));
    }
    let content_length = parse_header_section(&msg[..end], limits.max_headers)?;
    let header_len = end + HEADER_END.len();
    // header_len <= window.len() <= msg.len(), since the match lies inside the window.
    let available = msg.len() - header_len;
    let body_len = content_length.unwrap_or(available);
    let total = header_len
        .checked_add(body_len)
        .filter(|total| *total <= max)
        .ok_or_else(too_large)?;
    if body_len > available {
        return Err(CodecError::TruncatedBody);
    }
    Ok(Some(&msg[..total]))
}

/// A NUL in `bytes[from..]` other than in a quoted-pair (`\` NUL, which RFC 3261 §25.1 allows
/// in a quoted string: RFC 4475 §3.1.1.2). Binary junk has bare NULs.
fn bare_nul(bytes: &[u8], from: usize) -> bool {
    memchr::memchr_iter(0, bytes.get(from..).unwrap_or_default())
        .any(|i| from + i == 0 || bytes[from + i - 1] != b'\\')
}

/// Checks the shape of a header section (without its final CRLFCRLF), counts its header fields
/// and returns its Content-Length, if any.
fn parse_header_section(section: &[u8], max_headers: usize) -> Result<Option<usize>, CodecError> {
    let mut lines = crlf_lines(section);
    let start_line = lines.next().map_or(&[][..], |(s, e)| &section[s..e]);
    if !start_line.first().is_some_and(|b| is_token_char(*b)) {
        return Err(CodecError::Malformed("missing or invalid start line"));
    }
    if memchr::memchr2(b'\r', b'\n', start_line).is_some() {
        return Err(CodecError::Malformed("lone CR or LF in header section"));
    }

    let mut headers = 0usize;
    let mut content_length = None;
    // Span of the Content-Length value being gathered; it grows over continuation lines, which
    // are contiguous with their header line in `section`.
    let mut pending_value: Option<(usize, usize)> = None;
    for (start, end) in lines {
        let line = &section[start..end];
        // The parser drops a message with a lone CR or LF (it would be echoed as a line break
        // of its own); framing must see the same lines, or a `Content-Length` after a lone LF
        // would frame the stream differently from an intermediary that splits on LF alone
        // (request smuggling). So the stream is closed.
        if memchr::memchr2(b'\r', b'\n', line).is_some() {
            return Err(CodecError::Malformed("lone CR or LF in header section"));
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if headers == 0 {
                return Err(CodecError::Malformed(
                    "continuation line before first header",
                ));
            }
            if let Some(span) = pending_value.as_mut() {
                span.1 = end;
            }
            continue;
        }
        merge_content_length(&mut content_length, pending_value.take(), section)?;
        headers += 1;
        if headers > max_headers {
            return Err(CodecError::TooManyHeaders { limit: max_headers });
        }
        let colon =
            memchr::memchr(b':', line).ok_or(CodecError::Malformed("header line without colon"))?;
        let name = trim_end_whitespace(&line[..colon]);
        if name.is_empty() {
            return Err(CodecError::Malformed("empty header name"));
        }
        if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
            pending_value = Some((start + colon + 1, end));
        }
    }
    merge_content_length(&mut content_length, pending_value, section)?;
    Ok(content_length)
}

/// Folds one Content-Length value into the one seen so far; repeats must agree.
fn merge_content_length(
    seen: &mut Option<usize>,
    value_span: Option<(usize, usize)>,
    section: &[u8],
) -> Result<(), CodecError> {
    let Some((start, end)) = value_span else {
        return Ok(());
    };
    let value = parse_content_length(section.get(start..end).unwrap_or_default())?;
    match *seen {
        Some(previous) if previous != value => Err(CodecError::InvalidContentLength),
        _ => {
            *seen = Some(value);
            Ok(())
        }
    }
}

/// Parses a Content-Length value: decimal digits with optional surrounding whitespace (which may
/// include the CRLF of a folded line). Signs, inner spaces and overflow are all rejected.
fn parse_content_length(value: &[u8]) -> Result<usize, CodecError> {
    let is_ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n');
    let start = value.iter().position(|b| !is_ws(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    let digits = value.get(start..end).unwrap_or_default();
    if digits.is_empty() {
        return Err(CodecError::InvalidContentLength);
    }
    digits.iter().try_fold(0usize, |acc, b| {
        if !b.is_ascii_digit() {
            return Err(CodecError::InvalidContentLength);
        }
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(usize::from(b - b'0')))
            .ok_or(CodecError::InvalidContentLength)
    })
}

/// Yields `(start, end)` of each CRLF-separated line of `section`, the last one unterminated.
fn crlf_lines(section: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut pos = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let rest = section.get(pos..).unwrap_or_default();
        match memmem::find(rest, CRLF) {
            Some(i) => {
                let line = (pos, pos + i);
                pos += i + CRLF.len();
                Some(line)
            }
            None => {
                done = true;
                Some((pos, section.len()))
            }
        }
    })
}

fn trim_end_whitespace(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// RFC 3261 `token` characters: what a method name (or `SIP/2.0`) starts with.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_message_bytes: 4096,
        max_headers: 32,
    };

    const REGISTER: &[u8] = b"REGISTER sip:example.com SIP/2.0\r\n\
        Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK776asdhds\r\n\
        To: <sip:alice@example.com>\r\n\
        From: <sip:alice@example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710\r\n\
        CSeq: 1 REGISTER\r\n\
        Content-Length: 5\r\n\
        \r\n\
        hello";

    const OPTIONS: &[u8] = b"OPTIONS sip:example.com SIP/2.0\r\nCSeq: 2 OPTIONS\r\n\r\n";

    /// Decodes every complete frame in `buf`, panicking on errors.
    fn drain(codec: &mut SipCodec, buf: &mut BytesMut) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(buf).unwrap() {
            frames.push(frame);
        }
        frames
    }

    fn decode_one(input: &[u8]) -> Result<Option<Frame>, CodecError> {
        SipCodec::new(LIMITS).decode(&mut BytesMut::from(input))
    }

    fn message(bytes: &[u8]) -> Frame {
        Frame::Message(Bytes::copy_from_slice(bytes))
    }

    fn with_content_length(header: &str, body: &str) -> Vec<u8> {
        format!("MESSAGE sip:bob@example.com SIP/2.0\r\nCSeq: 1 MESSAGE\r\n{header}\r\n\r\n{body}")
            .into_bytes()
    }

    #[test]
    fn one_message() {
        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from(REGISTER);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(message(REGISTER)));
        assert!(buf.is_empty());
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn two_back_to_back() {
        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from([REGISTER, OPTIONS].concat().as_slice());
        let frames = drain(&mut codec, &mut buf);
        assert_eq!(frames, vec![message(REGISTER), message(OPTIONS)]);
        assert!(buf.is_empty());
    }

    #[test]
    fn split_at_every_offset() {
        // Padding, a message, a ping, padding and a message: exercises every state boundary.
        let input = [b"\r\n", REGISTER, b"\r\n\r\n", b"\r\n", OPTIONS].concat();
        let expected = vec![message(REGISTER), Frame::Ping, message(OPTIONS)];
        for split in 0..=input.len() {
            let mut codec = SipCodec::new(LIMITS);
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&input[..split]);
            let mut frames = drain(&mut codec, &mut buf);
            buf.extend_from_slice(&input[split..]);
            frames.extend(drain(&mut codec, &mut buf));
            assert_eq!(frames, expected, "split at {split}");
            assert!(buf.is_empty(), "split at {split}");
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = [REGISTER, b"\r\n\r\n", OPTIONS, REGISTER].concat();
        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in &input {
            buf.extend_from_slice(&[*byte]);
            frames.extend(drain(&mut codec, &mut buf));
        }
        let expected = vec![
            message(REGISTER),
            Frame::Ping,
            message(OPTIONS),
            message(REGISTER),
        ];
        assert_eq!(frames, expected);
    }

    #[test]
    fn body_split_across_reads() {
        let mut codec = SipCodec::new(LIMITS);
        let cut = REGISTER.len() - 3;
        let mut buf = BytesMut::from(&REGISTER[..cut]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        // The header section was parsed; the buffer now has room for the whole body.
        assert_eq!(
            codec.state,
            State::Body {
                total: REGISTER.len()
            }
        );
        assert!(buf.capacity() >= REGISTER.len());
        buf.extend_from_slice(&REGISTER[cut..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(message(REGISTER)));
    }

    #[test]
    fn compact_content_length() {
        let input = with_content_length("l:3", "abc");
        assert_eq!(decode_one(&input).unwrap(), Some(message(&input)));
        let input = with_content_length("L : 3", "abc");
        assert_eq!(decode_one(&input).unwrap(), Some(message(&input)));
    }

    #[test]
    fn a_lone_lf_or_cr_in_the_header_section_closes_the_stream() {
        // An intermediary splitting on LF alone would see a Content-Length here and frame
        // 100 body bytes; the stream is closed instead of framed either way.
        for line_break in ["\n", "\r"] {
            let input = format!(
                "OPTIONS sip:a SIP/2.0\r\nX: a{line_break}Content-Length: 100\r\nVia: SIP/2.0/UDP h\r\n\r\n"
            );
            assert!(
                matches!(decode_one(input.as_bytes()), Err(CodecError::Malformed(_))),
                "{line_break:?}"
            );
            let limits = Limits {
                max_message_bytes: 65536,
                max_headers: 64,
            };
            assert!(matches!(
                frame_datagram(input.as_bytes(), limits),
                Err(CodecError::Malformed(_))
            ));
        }
    }

    #[test]
    fn content_length_with_spaces() {
        let input = with_content_length("Content-Length :  12 ", "hello world!");
        assert_eq!(decode_one(&input).unwrap(), Some(message(&input)));
        let input = with_content_length("content-LENGTH:\t2\t", "hi");
        assert_eq!(decode_one(&input).unwrap(), Some(message(&input)));
    }

    #[test]
    fn content_length_folded_onto_continuation_line() {
        let input = with_content_length("Content-Length:\r\n 2", "hi");
        assert_eq!(decode_one(&input).unwrap(), Some(message(&input)));
    }

    #[test]
    fn missing_content_length_means_no_body() {
        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from([OPTIONS, OPTIONS].concat().as_slice());
        assert_eq!(
            drain(&mut codec, &mut buf),
            vec![message(OPTIONS), message(OPTIONS)]
        );
    }

    #[test]
    fn ping() {
        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from(PING);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Ping));
        assert!(buf.is_empty());
    }

    #[test]
    fn ping_split_by_transport_is_still_a_ping() {
        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from(&b"\r\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\r");
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Frame::Ping));
    }

    #[test]
    fn lone_crlf_is_skipped() {
        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from([b"\r\n", OPTIONS, b"\r\n", OPTIONS].concat().as_slice());
        assert_eq!(
            drain(&mut codec, &mut buf),
            vec![message(OPTIONS), message(OPTIONS)]
        );
        // Ping followed by padding.
        let mut buf = BytesMut::from([b"\r\n\r\n\r\n", OPTIONS].concat().as_slice());
        assert_eq!(
            drain(&mut codec, &mut buf),
            vec![Frame::Ping, message(OPTIONS)]
        );
    }

    #[test]
    fn ping_between_messages() {
        let mut codec = SipCodec::new(LIMITS);
        let input = [REGISTER, PING, PING, OPTIONS].concat();
        let mut buf = BytesMut::from(input.as_slice());
        let expected = vec![
            message(REGISTER),
            Frame::Ping,
            Frame::Ping,
            message(OPTIONS),
        ];
        assert_eq!(drain(&mut codec, &mut buf), expected);
    }

    #[test]
    fn eof_discards_partial_ping_and_reports_truncation() {
        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from(&b"\r\n\r"[..]);
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        assert!(buf.is_empty());

        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from(&REGISTER[..REGISTER.len() - 1]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::TruncatedBody)
        ));

        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from(&REGISTER[..20]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(CodecError::Malformed(_))
        ));

        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from(OPTIONS);
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(message(OPTIONS)));
        assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    }

    #[test]
    fn oversize_header_section_errors_without_waiting() {
        let limits = Limits {
            max_message_bytes: 1024,
            max_headers: 32,
        };
        // A large buffer with no end of header section: rejected on the first call.
        let mut input = b"REGISTER sip:example.com SIP/2.0\r\nX-Junk: ".to_vec();
        input.resize(64 * 1024, b'a');
        let mut codec = SipCodec::new(limits);
        let result = codec.decode(&mut BytesMut::from(input.as_slice()));
        assert!(matches!(
            result,
            Err(CodecError::MessageTooLarge { limit: 1024 })
        ));

        // Fed in chunks: the error comes with the chunk that reaches the limit.
        let mut codec = SipCodec::new(limits);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let err = loop {
            buf.extend_from_slice(&input[fed..fed + 100]);
            fed += 100;
            match codec.decode(&mut buf) {
                Ok(None) => assert!(fed < 1024),
                Ok(Some(frame)) => panic!("unexpected {frame:?}"),
                Err(err) => break err,
            }
        };
        assert!(matches!(err, CodecError::MessageTooLarge { .. }));
        assert_eq!(fed, 1100);
    }

    #[test]
    fn header_section_at_the_limit() {
        // The end of the header section exactly at the limit is accepted; one byte more is not.
        let limits = Limits {
            max_message_bytes: OPTIONS.len(),
            max_headers: 32,
        };
        let mut buf = BytesMut::from(OPTIONS);
        let frame = SipCodec::new(limits).decode(&mut buf).unwrap();
        assert_eq!(frame, Some(message(OPTIONS)));

        let limits = Limits {
            max_message_bytes: OPTIONS.len() - 1,
            ..limits
        };
        let mut buf = BytesMut::from([OPTIONS, OPTIONS].concat().as_slice());
        let result = SipCodec::new(limits).decode(&mut buf);
        assert!(matches!(result, Err(CodecError::MessageTooLarge { .. })));
    }

    #[test]
    fn oversize_content_length_errors_before_body() {
        let input = with_content_length("Content-Length: 1000000", "");
        let result = decode_one(&input);
        assert!(matches!(
            result,
            Err(CodecError::MessageTooLarge { limit: 4096 })
        ));

        // Header section plus body one byte over the limit.
        let header_len = with_content_length("Content-Length: 0000", "").len();
        let body = LIMITS.max_message_bytes - header_len + 1;
        let input = with_content_length(&format!("Content-Length: {body:04}"), "");
        let result = decode_one(&input);
        assert!(matches!(result, Err(CodecError::MessageTooLarge { .. })));
        let input = with_content_length(&format!("Content-Length: {:04}", body - 1), "");
        assert_eq!(decode_one(&input).unwrap(), None);
    }

    #[test]
    fn too_many_headers() {
        let limits = Limits {
            max_message_bytes: 4096,
            max_headers: 3,
        };
        let three = b"OPTIONS sip:a SIP/2.0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let frame = SipCodec::new(limits).decode(&mut BytesMut::from(&three[..]));
        assert_eq!(frame.unwrap(), Some(message(three)));

        let four = b"OPTIONS sip:a SIP/2.0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        let result = SipCodec::new(limits).decode(&mut BytesMut::from(&four[..]));
        assert!(matches!(
            result,
            Err(CodecError::TooManyHeaders { limit: 3 })
        ));
        let result = frame_datagram(four, limits);
        assert!(matches!(
            result,
            Err(CodecError::TooManyHeaders { limit: 3 })
        ));
    }

    #[test]
    fn continuation_lines_not_counted() {
        let limits = Limits {
            max_message_bytes: 4096,
            max_headers: 3,
        };
        let input = b"OPTIONS sip:a SIP/2.0\r\nA: 1\r\n 1b\r\n\t1c\r\nB: 2\r\n 2b\r\nC: 3\r\n\r\n";
        let frame = SipCodec::new(limits).decode(&mut BytesMut::from(&input[..]));
        assert_eq!(frame.unwrap(), Some(message(input)));
    }

    #[test]
    fn bad_content_length() {
        let cases = [
            "Content-Length: abc",
            "Content-Length: -1",
            "Content-Length: +1",
            "Content-Length: 1 2",
            "Content-Length: 0x10",
            "Content-Length:",
            "Content-Length:   ",
            "Content-Length: 99999999999999999999999999",
            "Content-Length: 1\r\nl: 2",
            "Content-Length: 1\r\nContent-Length: 0",
        ];
        for header in cases {
            let input = with_content_length(header, "xx");
            let result = decode_one(&input);
            assert!(
                matches!(result, Err(CodecError::InvalidContentLength)),
                "{header:?}: {result:?}"
            );
            let result = frame_datagram(&input, LIMITS);
            assert!(
                matches!(result, Err(CodecError::InvalidContentLength)),
                "{header:?}: {result:?}"
            );
        }
        // Repeats that agree are fine.
        let input = with_content_length("Content-Length: 2\r\nl: 02", "xx");
        assert_eq!(decode_one(&input).unwrap(), Some(message(&input)));
    }

    #[test]
    fn malformed_input() {
        // A TLS ClientHello on a plain TCP port fails on its first byte.
        let result = decode_one(&[0x16, 0x03, 0x01, 0x02, 0x00]);
        assert!(matches!(result, Err(CodecError::Malformed(_))));
        assert!(matches!(
            decode_one(b" OPTIONS"),
            Err(CodecError::Malformed(_))
        ));
        // NUL is caught before the header section ends.
        let result = decode_one(b"OPTIONS sip:a SIP/2.0\r\nX: a\0b");
        assert!(matches!(result, Err(CodecError::Malformed(_))));
        let cases: [&[u8]; 4] = [
            b"OPTIONS sip:a SIP/2.0\r\nX: a\0b\r\n\r\n",
            b"OPTIONS sip:a SIP/2.0\r\nno colon here\r\n\r\n",
            b"OPTIONS sip:a SIP/2.0\r\n : empty name\r\n\r\n",
            b"OPTIONS sip:a SIP/2.0\r\n\tfolded: before any header\r\n\r\n",
        ];
        for input in cases {
            let result = decode_one(input);
            assert!(
                matches!(result, Err(CodecError::Malformed(_))),
                "{result:?}"
            );
            let result = frame_datagram(input, LIMITS);
            assert!(
                matches!(result, Err(CodecError::Malformed(_))),
                "{result:?}"
            );
        }
        // A NUL in the body is fine.
        let input = with_content_length("l: 3", "a\0b");
        assert_eq!(decode_one(&input).unwrap(), Some(message(&input)));
        // So is a quoted-pair NUL in a display name (RFC 4475 §3.1.1.2), also when the stream
        // splits it from its backslash.
        let input = b"OPTIONS sip:a SIP/2.0\r\nTo: \"NUL:\\\0\" <sip:a>\r\n\r\n";
        assert_eq!(decode_one(input).unwrap(), Some(message(input)));
        assert_eq!(frame_datagram(input, LIMITS).unwrap(), Some(&input[..]));
        let split = input.iter().position(|&b| b == 0).unwrap();
        let mut codec = SipCodec::new(LIMITS);
        let mut buf = BytesMut::from(&input[..split]);
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&input[split..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(message(input)));
    }

    #[test]
    fn encoder_writes_bytes_as_is() {
        let mut codec = SipCodec::new(LIMITS);
        let mut dst = BytesMut::new();
        codec.encode(Bytes::from_static(PONG), &mut dst).unwrap();
        codec
            .encode(Bytes::from_static(REGISTER), &mut dst)
            .unwrap();
        assert_eq!(&dst[..], [PONG, REGISTER].concat().as_slice());
    }

    #[test]
    fn errors_read_as_reasons() {
        let err = CodecError::MessageTooLarge { limit: 10 };
        assert_eq!(err.to_string(), "message larger than 10 bytes");
        let err = CodecError::Malformed("NUL byte in header section");
        assert_eq!(
            err.to_string(),
            "malformed message: NUL byte in header section"
        );
    }

    #[test]
    fn datagram_keep_alive() {
        for input in [&b""[..], b"\r\n", b"\r\n\r\n", b" ", b"\r\n \n\r"] {
            assert_eq!(frame_datagram(input, LIMITS).unwrap(), None, "{input:?}");
        }
    }

    #[test]
    fn datagram_exact_and_trimmed() {
        assert_eq!(frame_datagram(REGISTER, LIMITS).unwrap(), Some(REGISTER));
        let padded = [REGISTER, b"trailing junk\r\n\r\n"].concat();
        assert_eq!(frame_datagram(&padded, LIMITS).unwrap(), Some(REGISTER));
        let leading = [b"\r\n", REGISTER].concat();
        assert_eq!(frame_datagram(&leading, LIMITS).unwrap(), Some(REGISTER));
    }

    #[test]
    fn datagram_truncated_body() {
        let result = frame_datagram(&REGISTER[..REGISTER.len() - 1], LIMITS);
        assert!(matches!(result, Err(CodecError::TruncatedBody)));
    }

    #[test]
    fn datagram_missing_content_length_takes_rest() {
        let input = [OPTIONS, b"v=0\r\n"].concat();
        assert_eq!(
            frame_datagram(&input, LIMITS).unwrap(),
            Some(input.as_slice())
        );
        assert_eq!(frame_datagram(OPTIONS, LIMITS).unwrap(), Some(OPTIONS));
    }

    #[test]
    fn datagram_limits_and_junk() {
        let limits = Limits {
            max_message_bytes: 64,
            max_headers: 32,
        };
        let big = [OPTIONS, &[b'x'; 64][..]].concat();
        let result = frame_datagram(&big, limits);
        assert!(matches!(
            result,
            Err(CodecError::MessageTooLarge { limit: 64 })
        ));
        let result = frame_datagram(&[b'A'; 100], limits);
        assert!(matches!(result, Err(CodecError::MessageTooLarge { .. })));
        let result = frame_datagram(b"OPTIONS sip:a SIP/2.0\r\nCSeq: 1", limits);
        assert!(matches!(result, Err(CodecError::Malformed(_))));
        // A STUN binding request.
        let result = frame_datagram(&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42], limits);
        assert!(matches!(result, Err(CodecError::Malformed(_))));
    }

    /// Random inputs, random chunking and random limits must never panic, and whatever comes out
    /// must respect the limits and reframe identically as a datagram.
    #[test]
    fn fuzz_never_panics() {
        const PIECES: &[&[u8]] = &[
            b"\r\n",
            b"\r",
            b"\n",
            b"\r\n\r\n",
            b"\r\n ",
            b"Content-Length:",
            b"content-length :",
            b"l:",
            b" ",
            b"\t",
            b"0",
            b"5",
            b"12",
            b"-",
            b"99999999999999999999999",
            b"INVITE sip:a SIP/2.0\r\n",
            b"X: y\r\n",
            b"\0",
            b":",
            REGISTER,
            OPTIONS,
        ];
        let mut rng = fastrand::Rng::with_seed(0x5EED_C0DEC);
        for _ in 0..3000 {
            let mut input = Vec::new();
            if rng.bool() {
                for _ in 0..rng.usize(0..24) {
                    if rng.u8(0..4) == 0 {
                        input.extend((0..rng.usize(0..16)).map(|_| rng.u8(..)));
                    } else {
                        input.extend_from_slice(PIECES[rng.usize(0..PIECES.len())]);
                    }
                }
            } else {
                input.extend_from_slice(&[REGISTER, OPTIONS, PING, REGISTER].concat());
                for _ in 0..rng.usize(1..6) {
                    let at = rng.usize(0..input.len());
                    match rng.u8(0..3) {
                        0 => input[at] = rng.u8(..),
                        1 => input.insert(at, rng.u8(..)),
                        _ => {
                            input.remove(at);
                        }
                    }
                }
            }
            let limits = Limits {
                max_message_bytes: rng.usize(0..1024),
                max_headers: rng.usize(0..10),
            };

            if let Ok(Some(msg)) = frame_datagram(&input, limits) {
                assert!(msg.len() <= limits.max_message_bytes);
            }

            let mut codec = SipCodec::new(limits);
            let mut buf = BytesMut::new();
            let mut fed = 0;
            'feed: while fed < input.len() {
                let chunk = rng.usize(1..=input.len() - fed);
                buf.extend_from_slice(&input[fed..fed + chunk]);
                fed += chunk;
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(Frame::Message(msg))) => {
                            assert!(msg.len() <= limits.max_message_bytes);
                            let reframed = frame_datagram(&msg, limits).unwrap();
                            assert_eq!(reframed, Some(&msg[..]));
                        }
                        Ok(Some(Frame::Ping)) => {}
                        Ok(None) => break,
                        Err(_) => break 'feed,
                    }
                }
            }
            let _ = codec.decode_eof(&mut buf);
        }
    }
}
