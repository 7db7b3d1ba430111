//! Stream listeners (TCP 5060, TLS 5061/5090, mutual TLS 5091, and the HTTP side listeners):
//! accept, take a connection permit, shake hands under a deadline, then hand the stream to what
//! the listener serves. SIP connections read frames and answer them in order on the connection
//! (requests on one connection are handled sequentially, as hickory-dns does); HTTP connections
//! go to [`crate::web`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::{Admission, LogBudget, Refusal};
use super::codec::{self, Frame, SipCodec};

use crate::cluster::NodeId;
use crate::config::Limits;
use crate::net::{ListenerKind, Peer, Service, Transport, WebPort};
use crate::registrar::Registrar;
use crate::tls::TlsSlot;

/// One bound stream listener and what it needs to serve.
pub struct StreamListener {
    pub listener: TcpListener,
    pub node: NodeId,
    pub app: App,
    /// `None` for plain TCP. Read at every handshake, so a swapped configuration applies to
    /// the next connection.
    pub tls: Option<TlsSlot>,
}

/// What a stream listener serves.
#[derive(Clone)]
pub enum App {
    Sip(ListenerKind, Registrar),
    Web(WebPort, axum::Router),
}

impl App {
    pub fn service(&self) -> Service {
        match self {
            Self::Sip(kind, _) => Service::Sip(*kind),
            Self::Web(port, _) => Service::Web(*port),
        }
    }
}

/// Accepts connections until `cancel` fires; connection tasks are tracked in `tasks` so a
/// shutdown can wait for them.
pub async fn serve_stream_listener(
    l: StreamListener,
    limits: Limits,
    cancel: CancellationToken,
    tasks: TaskTracker,
    admission: Admission,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections_per_listener));
    let service = l.app.service();
    // Refusals are the client's doing: at most one line a second per listener.
    let mut refusal_log = LogBudget::new(Duration::from_secs(1));
    loop {
        let (stream, addr) = tokio::select! {
            () = cancel.cancelled() => return,
            r = l.listener.accept() => match r {
                Ok(r) => r,
                Err(error) => {
                    // EMFILE/ENFILE and friends pass; back off instead of spinning on them.
                    tracing::warn!(%error, listener = service.name(), "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // A listener permit, then the process budget and the per-source cap: one listener
        // cannot starve the others, one address cannot take the budget from other clients, and
        // all of them together stay within the open-file limit. A refused connection is dropped
        // here, before any TLS work.
        let admitted = match permits.clone().try_acquire_owned() {
            Err(_) => Err("limits.max_connections_per_listener reached"),
            Ok(permit) => admission
                .admit(addr.ip())
                .map(|ticket| (permit, ticket))
                .map_err(Refusal::reason),
        };
        let (permit, ticket) = match admitted {
            Ok(admitted) => admitted,
            Err(reason) => {
                if let Some(held_back) = refusal_log.allow(std::time::Instant::now()) {
                    tracing::info!(
                        %addr,
                        listener = service.name(),
                        reason,
                        refused_since_last_line = held_back,
                        "connection limit reached, closing new connection"
                    );
                }
                continue;
            }
        };
        // Small replies: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let app = l.app.clone();
        let node = l.node;
        let cancel = cancel.child_token();
        // The configuration in force now is the one this connection shakes hands with.
        let acceptor = l
            .tls
            .as_ref()
            .map(|slot| TlsAcceptor::from(slot.load_full()));
        tasks.spawn(async move {
            let _admitted = (permit, ticket);
            let Some(acceptor) = acceptor else {
                app.serve(stream, addr, node, Transport::Tcp, None, limits, cancel)
                    .await;
                return;
            };
            let Some(tls) = handshake(acceptor, stream, addr, service, &limits, &cancel).await
            else {
                return;
            };
            let cert_names = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|leaf| crate::tls::certificate_names(leaf).into());
            app.serve(tls, addr, node, Transport::Tls, cert_names, limits, cancel)
                .await;
        });
    }
}

impl App {
    #[allow(clippy::too_many_arguments)] // one call site per transport, each reads plainly
    async fn serve<S>(
        self,
        stream: S,
        addr: SocketAddr,
        node: NodeId,
        transport: Transport,
        cert_names: Option<Arc<[String]>>,
        limits: Limits,
        cancel: CancellationToken,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        match self {
            Self::Sip(listener, registrar) => {
                let peer = Peer {
                    addr,
                    node,
                    listener,
                    transport,
                    cert_names,
                };
                serve_connection(stream, peer, registrar, limits, cancel).await;
            }
            Self::Web(_, router) => {
                crate::web::serve_connection(stream, addr, router, limits, cancel).await;
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    addr: SocketAddr,
    service: Service,
    limits: &Limits,
    cancel: &CancellationToken,
) -> Option<TlsStream<TcpStream>> {
    let accept = acceptor.accept(stream).into_fallible();
    // A client that never finishes its handshake must not hold a shutdown until the handshake
    // timeout: the shutdown deadline may be shorter.
    let shaken = tokio::select! {
        () = cancel.cancelled() => {
            tracing::debug!(%addr, listener = service.name(), "TLS handshake cut by shutdown");
            return None;
        }
        r = tokio::time::timeout(limits.tls_handshake_timeout, accept) => r,
    };
    match shaken {
        Err(_) => {
            tracing::debug!(%addr, listener = service.name(), "TLS handshake timed out");
            None
        }
        Ok(Err((error, stream))) => {
            tracing::debug!(%addr, listener = service.name(), %error, "TLS handshake failed");
            if service == Service::Sip(ListenerKind::MraOAuth) {
                // UCM resets the connection after its fatal alert on the MRA port (docs/ucm.md §3);
                // rustls has already written the alert, a zero linger turns the close into RST.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            }
            None
        }
        Ok(Ok(tls)) => Some(tls),
    }
}

async fn serve_connection<S>(
    mut stream: S,
    peer: Peer,
    registrar: Registrar,
    limits: Limits,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut codec = SipCodec::new(codec::Limits {
        max_message_bytes: limits.max_message_bytes,
        max_headers: limits.max_headers,
    });
    let mut buf = BytesMut::with_capacity(4096);
    let mut started: Option<tokio::time::Instant> = None;
    let result: Result<(), Closed> = async {
        loop {
            // Answer every complete frame already buffered before reading again.
            while let Some(frame) = codec.decode(&mut buf)? {
                // The message clock measures only the message being received now.
                started = None;
                let reply = match frame {
                    Frame::Ping => Some(codec::PONG.to_vec()),
                    Frame::Message(bytes) => registrar.handle(&bytes, &peer),
                };
                if let Some(reply) = reply {
                    write(&mut stream, &reply, limits.idle_timeout).await?;
                }
            }
            // Between messages the idle timeout applies; once a message has begun, it must
            // complete by its deadline however the sender trickles it.
            let now = tokio::time::Instant::now();
            // Left-over CR/LF (a single-CRLF keep-alive, or half a ping) is not a message.
            let idle = buf.iter().all(|&b| b == b'\r' || b == b'\n');
            let deadline = if idle {
                started = None;
                now + limits.idle_timeout
            } else {
                let begun = *started.get_or_insert(now);
                (begun + limits.message_timeout).min(now + limits.idle_timeout)
            };
            let read = tokio::select! {
                () = cancel.cancelled() => return Err(Closed::Shutdown),
                r = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => r,
            };
            match read {
                Err(_) if started.is_none() => return Err(Closed::Idle),
                Err(_) => return Err(Closed::SlowMessage),
                Ok(Err(e)) => return Err(Closed::Io(e)),
                Ok(Ok(0)) => {
                    // Complete frames were taken above; this only reports a cut-off message.
                    codec.decode_eof(&mut buf)?;
                    return Ok(());
                }
                Ok(Ok(_)) => {}
            }
        }
    }
    .await;
    match result {
        Ok(()) => tracing::trace!(%peer.addr, "connection closed by peer"),
        Err(reason) => {
            // As an error, so the subscriber prints the cause after the reason.
            let reason: &(dyn std::error::Error + 'static) = &reason;
            tracing::debug!(%peer.addr, listener = peer.listener.name(), reason, "closing connection")
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    deadline: Duration,
) -> Result<(), Closed> {
    // A peer that stops reading must not pin the task forever.
    match tokio::time::timeout(deadline, async {
        stream.write_all(bytes).await?;
        stream.flush().await
    })
    .await
    {
        Err(_) => Err(Closed::Idle),
        Ok(r) => r.map_err(Closed::Io),
    }
}

#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("server shutting down")]
    Shutdown,
    #[error("idle timeout")]
    Idle,
    #[error("message not completed within the message timeout")]
    SlowMessage,
    #[error("i/o error")]
    Io(#[source] io::Error),
    #[error("framing error")]
    Codec(#[from] codec::CodecError),
}
