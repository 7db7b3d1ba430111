//! The UDP listener (port 5060). Registrar work is in-memory and short, so datagrams are
//! handled inline: the socket's receive buffer is the only queue, and it is bounded.

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Limits};

use crate::cluster::NodeId;
use crate::net::{ListenerKind, Peer, Transport};
use crate::registrar::Registrar;

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
        let message = match codec::frame_datagram(&buf[..len], limits) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(error) => {
                tracing::debug!(%addr, %error, "dropped datagram");
                continue;
            }
        };
        let peer = Peer {
            addr,
            node,
            listener: ListenerKind::Sip,
            transport: Transport::Udp,
            cert_names: None,
        };
        if let Some(reply) = registrar.handle(message, &peer) {
            if let Err(error) = socket.send_to(&reply, addr).await {
                tracing::debug!(%addr, %error, "udp send failed");
            }
        }
    }
}
