//! The TFTP wire format: RFC 1350 packets (RRQ, WRQ, DATA, ACK, ERROR) and RFC 2347's OACK and
//! request options. Parsing borrows from the datagram and never panics; encoders build
//! complete datagrams. No I/O here.

use std::borrow::Cow;

/// Largest block size RFC 2348 allows (a 65,507-byte UDP payload less IP options margin).
pub const MAX_BLKSIZE: u16 = 65_464;
/// Smallest block size RFC 2348 allows.
pub const MIN_BLKSIZE: u16 = 8;
/// RFC 1350's block size, used when the client does not negotiate one.
pub const DEFAULT_BLKSIZE: u16 = 512;

const OP_RRQ: u16 = 1;
const OP_WRQ: u16 = 2;
const OP_DATA: u16 = 3;
const OP_ACK: u16 = 4;
const OP_ERROR: u16 = 5;
const OP_OACK: u16 = 6;

/// One TFTP datagram, borrowing its strings and payload from the buffer it was parsed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ: read request.
    Read(Request<'a>),
    /// WRQ: write request.
    Write(Request<'a>),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack(u16),
    Error {
        code: u16,
        message: Cow<'a, str>,
    },
    /// RFC 2347 option acknowledgment: (name, value) pairs.
    Oack(Vec<(&'a str, &'a str)>),
}

/// An RRQ or WRQ: file name, transfer mode and RFC 2347 options in the order sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub filename: &'a str,
    pub mode: Mode,
    pub options: Vec<(&'a str, &'a str)>,
}

/// Transfer mode of a request (compared case-insensitively on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
    /// RFC 1350's obsolete `mail` mode; never served.
    Mail,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Octet => "octet",
            Self::Netascii => "netascii",
            Self::Mail => "mail",
        }
    }
}

/// RFC 1350 / RFC 2347 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// "Not defined, see error message".
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    /// RFC 2347: the client refused our OACK.
    OptionRefused = 8,
}

/// Why a datagram is not a TFTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PacketError {
    #[error("datagram shorter than its opcode and fields")]
    TooShort,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("string field without its terminating NUL")]
    Unterminated,
    #[error("string field is not UTF-8")]
    NotUtf8,
    #[error("empty file name")]
    EmptyFilename,
    /// Well-formed request, but a mode other than octet, netascii or mail.
    #[error("unknown transfer mode")]
    UnknownMode,
    #[error("option name without a value")]
    OddOptions,
}

/// Parses one datagram.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, PacketError> {
    let [hi, lo, rest @ ..] = buf else {
        return Err(PacketError::TooShort);
    };
    let opcode = u16::from_be_bytes([*hi, *lo]);
    Ok(match opcode {
        OP_RRQ => Packet::Read(parse_request(rest)?),
        OP_WRQ => Packet::Write(parse_request(rest)?),
        OP_DATA => {
            let (block, data) = split_u16(rest)?;
            Packet::Data { block, data }
        }
        OP_ACK => {
            // Trailing bytes after the block number are tolerated, as tftp-hpa does.
            let (block, _) = split_u16(rest)?;
            Packet::Ack(block)
        }
        OP_ERROR => {
            let (code, rest) = split_u16(rest)?;
            // Lenient: a message without its NUL (or a truncated datagram) is still an error.
            let end = memchr::memchr(0, rest).unwrap_or(rest.len());
            Packet::Error {
                code,
                message: String::from_utf8_lossy(&rest[..end]),
            }
        }
        OP_OACK => Packet::Oack(parse_options(rest)?),
        other => return Err(PacketError::UnknownOpcode(other)),
    })
}

/// DATA `block` carrying `payload`.
pub fn data(block: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub fn ack(block: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(4);
    out.extend_from_slice(&OP_ACK.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out
}

pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    // A NUL inside the message would end it early on the wire; drop any.
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
    out
}

pub fn oack<N: AsRef<str>, V: AsRef<str>>(options: &[(N, V)]) -> Vec<u8> {
    let mut out = OP_OACK.to_be_bytes().to_vec();
    push_options(&mut out, options);
    out
}

/// An RRQ (`write == false`) or WRQ; for clients (the tests use it).
pub fn request<N: AsRef<str>, V: AsRef<str>>(
    write: bool,
    filename: &str,
    mode: Mode,
    options: &[(N, V)],
) -> Vec<u8> {
    let op = if write { OP_WRQ } else { OP_RRQ };
    let mut out = op.to_be_bytes().to_vec();
    push_cstr(&mut out, filename);
    push_cstr(&mut out, mode.name());
    push_options(&mut out, options);
    out
}

fn parse_request(buf: &[u8]) -> Result<Request<'_>, PacketError> {
    let (filename, rest) = split_cstr(buf)?;
    let (mode, rest) = split_cstr(rest)?;
    if filename.is_empty() {
        return Err(PacketError::EmptyFilename);
    }
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else if mode.eq_ignore_ascii_case("mail") {
        Mode::Mail
    } else {
        return Err(PacketError::UnknownMode);
    };
    Ok(Request {
        filename,
        mode,
        options: parse_options(rest)?,
    })
}

fn parse_options(mut buf: &[u8]) -> Result<Vec<(&str, &str)>, PacketError> {
    let mut options = Vec::new();
    while !buf.is_empty() {
        let (name, rest) = split_cstr(buf)?;
        if rest.is_empty() {
            return Err(PacketError::OddOptions);
        }
        let (value, rest) = split_cstr(rest)?;
        options.push((name, value));
        buf = rest;
    }
    Ok(options)
}

fn split_u16(buf: &[u8]) -> Result<(u16, &[u8]), PacketError> {
    match buf {
        [hi, lo, rest @ ..] => Ok((u16::from_be_bytes([*hi, *lo]), rest)),
        _ => Err(PacketError::TooShort),
    }
}

fn split_cstr(buf: &[u8]) -> Result<(&str, &[u8]), PacketError> {
    let end = memchr::memchr(0, buf).ok_or(PacketError::Unterminated)?;
    let s = std::str::from_utf8(&buf[..end]).map_err(|_| PacketError::NotUtf8)?;
    Ok((s, &buf[end + 1..]))
}

fn push_cstr(out: &mut Vec<u8>, s: &str) {
    out.extend(s.bytes().filter(|&b| b != 0));
    out.push(0);
}

fn push_options<N: AsRef<str>, V: AsRef<str>>(out: &mut Vec<u8>, options: &[(N, V)]) {
    for (name, value) in options {
        push_cstr(out, name.as_ref());
        push_cstr(out, value.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_OPTIONS: &[(&str, &str)] = &[];

    #[test]
    fn good_packets() {
        let cases: &[(&[u8], Packet<'_>)] = &[
            (
                b"\0\x01SEP001122334455.cnf.xml\0octet\0",
                Packet::Read(Request {
                    filename: "SEP001122334455.cnf.xml",
                    mode: Mode::Octet,
                    options: vec![],
                }),
            ),
            (
                b"\0\x01/a\0NetASCII\0blksize\x001428\0TSIZE\x000\0",
                Packet::Read(Request {
                    filename: "/a",
                    mode: Mode::Netascii,
                    options: vec![("blksize", "1428"), ("TSIZE", "0")],
                }),
            ),
            (
                b"\0\x02f\0mail\0",
                Packet::Write(Request {
                    filename: "f",
                    mode: Mode::Mail,
                    options: vec![],
                }),
            ),
            (
                b"\0\x03\xff\xfeabc",
                Packet::Data {
                    block: 0xfffe,
                    data: b"abc",
                },
            ),
            (
                b"\0\x03\0\x01",
                Packet::Data {
                    block: 1,
                    data: b"",
                },
            ),
            (b"\0\x04\0\x07", Packet::Ack(7)),
            (b"\0\x04\0\x07junk", Packet::Ack(7)),
            (
                b"\0\x05\0\x01File not found\0",
                Packet::Error {
                    code: 1,
                    message: "File not found".into(),
                },
            ),
            (
                b"\0\x05\0\x08no nul",
                Packet::Error {
                    code: 8,
                    message: "no nul".into(),
                },
            ),
            (
                b"\0\x06tsize\x003072\0",
                Packet::Oack(vec![("tsize", "3072")]),
            ),
            (b"\0\x06", Packet::Oack(vec![])),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes).as_ref(), Ok(want), "{bytes:?}");
        }
    }

    #[test]
    fn bad_packets() {
        let cases: &[(&[u8], PacketError)] = &[
            (b"", PacketError::TooShort),
            (b"\0", PacketError::TooShort),
            (b"\0\x00", PacketError::UnknownOpcode(0)),
            (b"\0\x07x\0", PacketError::UnknownOpcode(7)),
            (b"\x01\x01", PacketError::UnknownOpcode(257)),
            (b"\0\x01", PacketError::Unterminated),
            (b"\0\x01file", PacketError::Unterminated),
            (b"\0\x01file\0", PacketError::Unterminated),
            (b"\0\x01file\0octet", PacketError::Unterminated),
            (b"\0\x01\0octet\0", PacketError::EmptyFilename),
            (b"\0\x01f\0binary\0", PacketError::UnknownMode),
            (b"\0\x01f\xff\0octet\0", PacketError::NotUtf8),
            (b"\0\x01f\0octet\0blksize\0", PacketError::OddOptions),
            (b"\0\x01f\0octet\0blksize\x00512", PacketError::Unterminated),
            (b"\0\x03\0", PacketError::TooShort),
            (b"\0\x04\0", PacketError::TooShort),
            (b"\0\x05\0", PacketError::TooShort),
            (b"\0\x06tsize\0", PacketError::OddOptions),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), Err(want.clone()), "{bytes:?}");
        }
    }

    #[test]
    fn encoders_round_trip() {
        let rrq = request(false, "a.cnf.xml", Mode::Octet, &[("blksize", "1428")]);
        assert_eq!(rrq, b"\0\x01a.cnf.xml\0octet\0blksize\x001428\0");
        let Ok(Packet::Read(r)) = parse(&rrq) else {
            panic!("not an RRQ")
        };
        assert_eq!(r.options, [("blksize", "1428")]);
        let wrq = request(true, "x", Mode::Netascii, NO_OPTIONS);
        assert!(matches!(parse(&wrq), Ok(Packet::Write(r)) if r.mode == Mode::Netascii));
        assert_eq!(data(9, b"xy"), b"\0\x03\0\x09xy");
        assert_eq!(ack(0x0102), b"\0\x04\x01\x02");
        assert_eq!(
            error(ErrorCode::UnknownTransferId, "Unknown\0 transfer ID"),
            b"\0\x05\0\x05Unknown transfer ID\0"
        );
        assert_eq!(
            oack(&[("tsize", "0".to_string())]),
            b"\0\x06tsize\x000\0".to_vec()
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x7f7f_2026);
        for _ in 0..50_000 {
            let len = rng.usize(0..40);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Bias towards valid opcodes and NULs so the deeper paths are reached.
            if len >= 2 && rng.bool() {
                buf[0] = 0;
                buf[1] = rng.u8(1..=6);
            }
            for b in buf.iter_mut().skip(2) {
                if rng.u8(..8) == 0 {
                    *b = 0;
                }
            }
            let _ = parse(&buf);
        }
    }
}
