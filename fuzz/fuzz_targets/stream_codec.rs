//! Stream framing and datagram validation on hostile bytes.
//!
//! Input: two bytes of limits, two bytes seeding the split points, then the stream. The stream is
//! fed to [`SipCodec`] in chunks (decode until `None` after each chunk, then `decode_eof`), and
//! once whole; both must give the same frames, and the same verdict (error or not), because the
//! codec promises that framing does not depend on how TCP or TLS split the bytes. No frame may
//! exceed `max_message_bytes`. The same bytes then go through [`frame_datagram`].

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sip_oauth_registrar::transport::codec::{Frame, Limits, SipCodec, frame_datagram};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let [a, b, s0, s1, stream @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_message_bytes: 16 + usize::from(*a) * 16,
        max_headers: 1 + usize::from(*b % 64),
    };

    let whole = decode(stream, limits, &mut |_| stream.len());
    let mut seed = u16::from_le_bytes([*s0, *s1]) as usize | 1;
    let split = decode(stream, limits, &mut |rest| {
        // A cheap LCG: chunks of 1 to 64 bytes, reproducible from the input.
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        ((seed >> 8) % 64 + 1).min(rest)
    });
    assert_eq!(whole, split, "framing depends on how the stream was split");

    if let Ok(Some(message)) = frame_datagram(stream, limits) {
        assert!(
            message.len() <= limits.max_message_bytes,
            "datagram over the limit"
        );
        assert!(!message.is_empty());
    }
});

/// Frames decoded from `stream` fed in chunks of `next_chunk(remaining)` bytes, and whether
/// decoding ended in an error.
fn decode(
    stream: &[u8],
    limits: Limits,
    next_chunk: &mut dyn FnMut(usize) -> usize,
) -> (Vec<Frame>, bool) {
    let mut codec = SipCodec::new(limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let push = |frames: &mut Vec<Frame>, frame: Frame| {
        if let Frame::Message(m) = &frame {
            assert!(m.len() <= limits.max_message_bytes, "frame over the limit");
            assert!(!m.is_empty());
        }
        frames.push(frame);
    };
    while !rest.is_empty() {
        let n = next_chunk(rest.len()).max(1);
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => push(&mut frames, frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => push(&mut frames, frame),
            Ok(None) => return (frames, false),
            Err(_) => return (frames, true),
        }
    }
}
