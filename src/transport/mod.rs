//! Transports: accept loops and connection tasks for UDP, TCP, TLS and mutual TLS. They frame
//! input ([`codec`]), hand each message with its [`Peer`](crate::net::Peer) to the registrar, and write back
//! what it returns. Every loop stops on its cancellation token.

mod admission;
pub mod codec;
mod stream;
mod udp;

pub use admission::Admission;
pub use stream::{App, StreamListener, serve_stream_listener};
pub use udp::{bind_udp, serve_udp};
