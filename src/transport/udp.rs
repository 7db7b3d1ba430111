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
    static WARNED: AtomicBool = AtomicBool::new(false);
    let capped = granted_recv < recv || granted_send < send;
    if capped && !WARNED.swap(true, Ordering::Relaxed) {
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
                Some(reason) => registrar.handle_unframed(&buf[..len], &peer, reason),
                None => {
                    tracing::debug!(%addr, %error, "dropped datagram");
                    None
                }
            },
        };
        if let Some(reply) = reply {
            if let Err(error) = socket.send_to(&reply, addr).await {
                tracing::debug!(%addr, %error, "udp send failed");
            }
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
