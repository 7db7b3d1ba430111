//! Transports: accept loops and connection tasks for UDP, TCP, TLS and mutual TLS. They frame
//! input ([`codec`]), hand each message with its [`Peer`] to the registrar, and write back
//! what it returns. Every loop stops on its cancellation token.

pub mod codec;
mod stream;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

pub use stream::{StreamListener, serve_stream_listener};
pub use udp::serve_udp;

use crate::cluster::NodeId;
use crate::policy::ListenerKind;

/// How a message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// Who sent a message, and where it arrived.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub node: NodeId,
    pub listener: ListenerKind,
    pub transport: Transport,
    /// CN and DNS SANs of the client certificate verified at the TLS handshake, lower-cased.
    pub cert_names: Option<Arc<[String]>>,
}
