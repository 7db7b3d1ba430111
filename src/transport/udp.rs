//! The UDP listener (port 5060). Registrar work is in-memory and short, so datagrams are
//! handled inline: the socket's receive buffer is the only queue, and it is bounded by
//! `limits.udp_recv_buffer_bytes`. Work per datagram is bounded too: one datagram of at most
//! `max_message_bytes`, a request line of at most 1 KiB and `max_headers` headers, parsed once,
//! answered with at most one datagram, no task spawned.
//!
//! Responses go back to the datagram's source address and port, whatever the top Via says.
//! With `rport` that is RFC 3581 §4; without it, RFC 3261 §18.2.2 would send to the Via's
//! `received` address and sent-by port (5060 when absent). A lab registrar deviates on purpose:
//! behind a NAT, or from a client whose Via names a port it does not listen on, the source is
//! the only address that reaches the client, and it is where every SIP phone listens for
//! answers to what it sent.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Limits};

use crate::cluster::NodeId;
use crate::net::{ListenerKind, Peer, Transport};
use crate::registrar::Registrar;

/// Binds a SIP UDP socket with the configured buffer sizes, set before binding so no datagram
/// meets the default buffer. The sizes the kernel granted are read back; when it capped one, a
/// warning (once per process) names the sysctl to raise.
pub fn bind_udp(addr: SocketAddr, limits: &crate::config::Limits) -> io::Result<UdpSocket> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    bind_udp_warning_once(addr, limits, &WARNED)
}

/// [`bind_udp`] with the "warned already" flag passed in, so a test can watch its own warning.
fn bind_udp_warning_once(
    addr: SocketAddr,
    limits: &crate::config::Limits,
    warned: &AtomicBool,
) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // A failure here leaves the kernel default, which still works: it is logged, not fatal.
    let recv = limits.udp_recv_buffer_bytes;
    let send = limits.udp_send_buffer_bytes;
    if let Err(error) = socket.set_recv_buffer_size(recv) {
        tracing::warn!(%addr, %error, "could not set the UDP receive buffer size");
    }
    if let Err(error) = socket.set_send_buffer_size(send) {
        tracing::warn!(%addr, %error, "could not set the UDP send buffer size");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let granted_recv = granted(socket.recv_buffer_size()?);
    let granted_send = granted(socket.send_buffer_size()?);
    tracing::debug!(%addr, granted_recv, granted_send, "udp socket buffers");
    let capped = granted_recv < recv || granted_send < send;
    if capped && !warned.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            %addr,
            asked_recv = recv,
            granted_recv,
            asked_send = send,
            granted_send,
            "the kernel capped the UDP socket buffers: raise net.core.rmem_max / \
             net.core.wmem_max (sysctl) to at least the configured \
             limits.udp_recv_buffer_bytes / udp_send_buffer_bytes, or bursts of datagrams \
             may be dropped"
        );
    }
    UdpSocket::from_std(socket.into())
}

/// The buffer size asked for that a read-back size stands for: Linux doubles the value it
/// stores (for its bookkeeping, socket(7)) and reports the doubled one.
fn granted(read_back: usize) -> usize {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        read_back / 2
    } else {
        read_back
    }
}

pub async fn serve_udp(
    socket: UdpSocket,
    node: NodeId,
    registrar: Registrar,
    limits: Limits,
    cancel: CancellationToken,
) {
    // A datagram can carry at most 65,507 bytes of payload; anything larger than the message
    // limit is refused by the codec.
    let mut buf = vec![0u8; 65_536];
    // No explicit yield: under a flood `recv_from` is always ready, but each call spends tokio's
    // cooperative budget, so the task yields to the runtime every budget's worth of datagrams
    // and the stream connections keep being served (tests/integration/hostile.rs, flood test,
    // on a one-thread runtime).
    loop {
        let (len, addr) = tokio::select! {
            () = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here on Linux; they concern one peer.
                Err(error) => {
                    tracing::debug!(%error, "udp receive error");
                    continue;
                }
            },
        };
        let peer = Peer {
            addr,
            node,
            listener: ListenerKind::Sip,
            transport: Transport::Udp,
            cert_names: None,
        };
        let reply = match codec::frame_datagram(&buf[..len], limits) {
            Ok(Some(message)) => registrar.handle(message, &peer),
            Ok(None) => None,
            Err(error) => match answerable(&error) {
                Some(reason) => {
                    // Leading CRLFs are keep-alive padding, as `frame_datagram` skips them.
                    let mut msg = &buf[..len];
                    while let Some(rest) = msg.strip_prefix(b"\r\n") {
                        msg = rest;
                    }
                    registrar.handle_unframed(msg, &peer, reason)
                }
                None => {
                    tracing::debug!(%addr, %error, "dropped datagram");
                    None
                }
            },
        };
        if let Some(reply) = reply
            && let Err(error) = socket.send_to(&reply, addr).await
        {
            tracing::debug!(%addr, %error, "udp send failed");
        }
    }
}

/// The `400` reason for a framing error a request can still be answered for: a datagram holds
/// the whole message, so unlike on a stream the next one does not depend on it.
fn answerable(error: &codec::CodecError) -> Option<&'static str> {
    match error {
        codec::CodecError::TruncatedBody => Some("Content-Length beyond the datagram"),
        codec::CodecError::InvalidContentLength => Some("Invalid Content-Length"),
        codec::CodecError::Malformed(codec::UNTERMINATED) => Some("Header section not terminated"),
        _ => None,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written while a test runs, for asserting on warnings.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn take(&self) -> String {
            String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
        }
    }

    /// `None` where the kernel does not show the sysctl (inside many containers it exists in
    /// the host's network namespace only).
    fn sysctl(name: &str) -> Option<usize> {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Asks for more than `net.core.rmem_max` / `wmem_max`: the socket gets exactly the cap,
    /// and one warning (not one per socket) names the sysctl and both sizes.
    #[tokio::test]
    async fn buffers_above_the_kernel_cap_are_capped_and_warned_about_once() {
        let (Some(rmem_max), Some(wmem_max)) = (sysctl("rmem_max"), sysctl("wmem_max")) else {
            eprintln!("SKIPPED: net.core.rmem_max/wmem_max are not visible here");
            return;
        };
        let mut limits = crate::config::Settings::lab().unwrap().limits;
        // Within the configuration's own range (at most 1 GiB), above the kernel's.
        limits.udp_recv_buffer_bytes = rmem_max + (64 << 10);
        limits.udp_send_buffer_bytes = wmem_max + (64 << 10);
        if limits.udp_recv_buffer_bytes > 1 << 30 || limits.udp_send_buffer_bytes > 1 << 30 {
            eprintln!("SKIPPED: the kernel allows buffers above the configuration's 1 GiB");
            return;
        }

        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let warned = AtomicBool::new(false);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();

        let socket = bind_udp_warning_once(any, &limits, &warned).unwrap();
        let sock = socket2::SockRef::from(&socket);
        assert_eq!(granted(sock.recv_buffer_size().unwrap()), rmem_max);
        assert_eq!(granted(sock.send_buffer_size().unwrap()), wmem_max);
        let text = log.take();
        assert_eq!(text.matches(" WARN ").count(), 1, "{text}");
        assert!(
            text.contains("the kernel capped the UDP socket buffers"),
            "{text}"
        );
        assert!(text.contains("net.core.rmem_max"), "{text}");
        assert!(
            text.contains(&format!("asked_recv={}", limits.udp_recv_buffer_bytes)),
            "{text}"
        );
        assert!(text.contains(&format!("granted_recv={rmem_max}")), "{text}");
        assert!(text.contains(&format!("granted_send={wmem_max}")), "{text}");

        // The second node's socket: capped the same, not warned again.
        let again = bind_udp_warning_once(any, &limits, &warned).unwrap();
        assert_eq!(
            granted(socket2::SockRef::from(&again).recv_buffer_size().unwrap()),
            rmem_max
        );
        assert_eq!(log.take(), "");

        // Within the caps: the size asked for, and no warning even with a fresh flag.
        limits.udp_recv_buffer_bytes = 64 << 10;
        limits.udp_send_buffer_bytes = 64 << 10;
        let fits = bind_udp_warning_once(any, &limits, &AtomicBool::new(false)).unwrap();
        assert_eq!(
            granted(socket2::SockRef::from(&fits).recv_buffer_size().unwrap()),
            64 << 10
        );
        assert_eq!(log.take(), "");
    }
}
