//! A read-only TFTP server (RFC 1350, with the blksize/tsize/timeout options of RFC 2347–2349)
//! serving rendered config files to phones that do not use SIP OAuth (UCM's port 69; the lab
//! uses 6969).
//!
//! Files come from a [`FileSource`] callback, looked up by name only: never the file system.
//!
//! # Why not a crate
//! `async-tftp` (the kept async TFTP crate) was checked first. It runs its transfers on its own
//! `async-executor`/`async-io` (smol) executor inside `serve()` rather than on our tokio runtime,
//! its `Handler` opens `&Path`s and returns `AsyncRead`ers (file-system shaped), it has no
//! transfer cap and no cancellation other than dropping the future. The protocol needed here
//! (read-only, in-memory files) is small, so it is written out: [`packet`] is the wire format,
//! this module the listener and the per-transfer state machine.
//!
//! # Behaviour
//! - RRQ in `octet` or `netascii` mode; netascii translates LF → CR LF and CR → CR NUL before
//!   sending (`tsize` then reports the translated length, which is what the client receives).
//!   `mail` mode → ERROR 4. Cisco phones use octet.
//! - WRQ → ERROR 2 "Access violation" (the request is legal TFTP; we refuse it, as tftp-hpa
//!   does for files it will not write), sent from the listening port.
//! - Leading `/` are stripped from file names: clients send both `SEP….cnf.xml` and
//!   `/SEP….cnf.xml`, and tftp-hpa's `-s` (secure, chroot) mode serves both as the same file.
//!   The rest goes to [`FileSource`] as is. Unknown name → ERROR 1 "File not found".
//! - Options (RFC 2347, names case-insensitive, first occurrence wins, unknown ones ignored):
//!   `blksize` 8..=65464, clamped down to [`TftpLimits::max_blksize`]; `timeout` 1..=5 s (RFC
//!   2349 allows up to 255, and a server may leave an option out: a long timeout would let a
//!   silent client hold a transfer slot for minutes);
//!   `tsize` answered with the file's size (left out for an empty file: curl takes
//!   `tsize 0` in an OACK for an error). Out-of-range values drop that option. An OACK is
//!   sent only when at least one option is accepted; otherwise DATA 1 follows directly.
//! - Each transfer runs in its own task from a fresh UDP socket bound to the listening IP and
//!   port 0 (RFC 1350's TID). A datagram from any other address gets ERROR 5 "Unknown transfer
//!   ID" and the transfer goes on.
//! - The last DATA (or OACK) is resent when no ACK comes within the timeout, up to
//!   [`TftpLimits::retries`] times, then the transfer is dropped silently. Until the client has
//!   ACKed once (proving it receives at its address), the first packet is resent only once: a
//!   spoofed RRQ makes the server send two packets to its victim, not six. Old or duplicate
//!   ACKs are ignored, never answered (no Sorcerer's Apprentice). ERROR from the client ends the
//!   transfer; a DATA/RRQ/WRQ/OACK from the client gets ERROR 4 and ends it; unparsable
//!   datagrams are dropped.
//! - Block numbers roll over from 65535 to 0 (as tftp-hpa and curl do), so file size is not
//!   capped by the protocol.
//! - At most [`TftpLimits::max_transfers`] transfers at a time per listening socket (node), and
//!   at most [`MAX_TRANSFERS_PER_CLIENT`] per client IP address, so one address cannot take
//!   every slot; more → ERROR 0 "Server busy, try again later" from the listening port. A repeated RRQ from a client address whose
//!   transfer is still running is dropped (it is a retransmission).
//! - On the listening port, malformed datagrams and stray DATA/ACK/ERROR are dropped without a
//!   reply (no reflection). On cancel, running transfers send ERROR 0 and stop.
//! - The listening socket's IP is used for transfer sockets; bound to a wildcard address on a
//!   multi-homed host, replies leave from whichever address routing picks.

pub mod packet;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::packet::{ErrorCode, MAX_BLKSIZE, MIN_BLKSIZE, Mode, Packet, PacketError};

/// Longest retransmission timeout a client may negotiate (RFC 2349 allows 255 s; a value
/// above this is left out of the OACK and the default applies).
pub const MAX_NEGOTIATED_TIMEOUT_SECS: u64 = 5;
/// Transfers one client IP address may run at once on one listening socket.
pub const MAX_TRANSFERS_PER_CLIENT: usize = 4;
/// Resends of the first packet before the client has ACKed anything: it has not shown that it
/// receives at the address it claims, which may be a spoofed victim's.
const UNPROVEN_RETRIES: u32 = 1;

/// Where files come from: the daemon passes a closure that renders a non-OAuth device's config
/// file by name, `None` for anything else. Called once per read request, in the transfer's task.
pub type FileSource = Arc<dyn Fn(&str) -> Option<Vec<u8>> + Send + Sync>;

/// Bounds on what TFTP clients can make the server hold or send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TftpLimits {
    /// Concurrent transfers (each holds one UDP socket and the file in memory).
    pub max_transfers: usize,
    /// Retransmission timeout when the client does not negotiate `timeout`.
    pub timeout: Duration,
    /// Resends of one DATA/OACK before the transfer is abandoned.
    pub retries: u32,
    /// Largest `blksize` granted (clamped to 8..=65464).
    pub max_blksize: u16,
}

impl Default for TftpLimits {
    /// 64 transfers, 1 s timeout, 5 retries, and blocks up to 1428 bytes: 1428 + 4 (TFTP) + 8
    /// (UDP) + 40 (IPv6) = 1480 fits a 1500-byte Ethernet MTU unfragmented over IPv4 and IPv6.
    fn default() -> Self {
        Self {
            max_transfers: 64,
            timeout: Duration::from_secs(1),
            retries: 5,
            max_blksize: 1428,
        }
    }
}

/// Serves RRQs on `socket` until `cancel`; each transfer runs in its own task (tracked on
/// `tasks`) from its own ephemeral UDP socket bound to the same IP, as RFC 1350's TID rule asks.
pub async fn serve(
    socket: UdpSocket,
    files: FileSource,
    limits: TftpLimits,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let local_ip = match socket.local_addr() {
        Ok(addr) => addr.ip(),
        Err(error) => {
            tracing::warn!(%error, "tftp: listening socket has no address");
            return;
        }
    };
    // `max_transfers` caps sockets and rendered files held at once; a client that never ACKs
    // holds its permit for 2 × timeout at most (at most 5 s each), and one client IP holds at
    // most MAX_TRANSFERS_PER_CLIENT of them.
    let permits = Arc::new(Semaphore::new(limits.max_transfers));
    let active = Active::default();
    // Requests fit in 512 bytes (RFC 2347); a larger datagram is read truncated, which almost
    // always makes it malformed and dropped.
    let mut buf = vec![0u8; 2048];
    loop {
        let (len, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP errors from earlier sends surface here on Linux; they concern one peer.
                Err(error) => {
                    tracing::debug!(%error, "tftp receive error");
                    continue;
                }
            },
        };
        let request = match packet::parse(&buf[..len]) {
            Ok(Packet::Read(request)) => request,
            Ok(Packet::Write(request)) => {
                tracing::info!(%peer, file = request.filename, "tftp write refused");
                let reply = packet::error(ErrorCode::AccessViolation, "Access violation");
                send_reply(&socket, &reply, peer).await;
                continue;
            }
            Err(PacketError::UnknownMode) => {
                let reply = packet::error(ErrorCode::IllegalOperation, "Unknown transfer mode");
                send_reply(&socket, &reply, peer).await;
                continue;
            }
            Ok(other) => {
                tracing::debug!(%peer, packet = ?other, "tftp: stray packet on the listening port");
                continue;
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "tftp: dropped datagram");
                continue;
            }
        };
        if request.mode == Mode::Mail {
            let reply = packet::error(ErrorCode::IllegalOperation, "Mail mode not supported");
            send_reply(&socket, &reply, peer).await;
            continue;
        }
        let guard = match active.claim(peer) {
            Claim::Granted(guard) => guard,
            Claim::Running => {
                tracing::debug!(%peer, "tftp: repeated RRQ during its transfer");
                continue;
            }
            Claim::TooMany => {
                tracing::info!(%peer, max = MAX_TRANSFERS_PER_CLIENT, "tftp: client transfer limit reached");
                let reply = packet::error(ErrorCode::NotDefined, "Server busy, try again later");
                send_reply(&socket, &reply, peer).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::info!(%peer, max = limits.max_transfers, "tftp: transfer limit reached");
            let reply = packet::error(ErrorCode::NotDefined, "Server busy, try again later");
            send_reply(&socket, &reply, peer).await;
            continue;
        };
        let transfer_socket = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(%peer, %error, "tftp: cannot bind a transfer socket");
                let reply = packet::error(ErrorCode::NotDefined, "Server busy, try again later");
                send_reply(&socket, &reply, peer).await;
                continue;
            }
        };
        let name = request.filename.trim_start_matches('/').to_owned();
        let span = tracing::debug_span!("tftp", %peer, file = %name);
        let job = Job {
            name,
            mode: request.mode,
            options: request
                .options
                .iter()
                .map(|&(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
                .collect(),
        };
        let transfer = Transfer {
            socket: transfer_socket,
            peer,
            timeout: limits.timeout,
            retries: limits.retries,
            proven: false,
            cancel: cancel.child_token(),
        };
        tasks.spawn(run(transfer, job, Arc::clone(&files), limits, permit, guard).instrument(span));
    }
}

/// What one RRQ asked for, owned so it can move into the transfer's task.
struct Job {
    /// Without leading `/`.
    name: String,
    mode: Mode,
    /// Lower-cased names, in request order.
    options: Vec<(String, String)>,
}

/// Options granted for one transfer.
#[derive(Debug, PartialEq, Eq)]
struct Negotiated {
    blksize: usize,
    timeout: Duration,
    /// The OACK's (name, value) pairs, empty when no option was accepted.
    oack: Vec<(&'static str, String)>,
}

/// RFC 2347–2349 negotiation for a file of `size` bytes.
fn negotiate(options: &[(String, String)], size: usize, limits: &TftpLimits) -> Negotiated {
    let max_blksize = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let mut out = Negotiated {
        blksize: usize::from(packet::DEFAULT_BLKSIZE),
        timeout: limits.timeout,
        oack: Vec::new(),
    };
    let mut seen = HashSet::new();
    for (name, value) in options {
        if !seen.insert(name.as_str()) {
            continue;
        }
        match name.as_str() {
            "blksize" => {
                // Too large a value is clamped (RFC 2348 lets the server answer smaller);
                // below 8 or unparsable, the option is ignored.
                let Ok(asked) = value.parse::<u64>() else {
                    continue;
                };
                if asked < u64::from(MIN_BLKSIZE) {
                    continue;
                }
                let granted = u16::try_from(asked).map_or(max_blksize, |a| a.min(max_blksize));
                out.blksize = usize::from(granted);
                out.oack.push(("blksize", granted.to_string()));
            }
            "timeout" => {
                let Ok(secs @ 1..=MAX_NEGOTIATED_TIMEOUT_SECS) = value.parse::<u64>() else {
                    continue;
                };
                out.timeout = Duration::from_secs(secs);
                out.oack.push(("timeout", secs.to_string()));
            }
            // In an RRQ the client sends 0 and the server answers with the size (RFC 2349).
            // Not for an empty file: curl refuses "tsize 0" in an OACK ("invalid tsize"), and
            // leaving an option out is always allowed.
            "tsize" if size > 0 => out.oack.push(("tsize", size.to_string())),
            _ => {}
        }
    }
    out
}

/// RFC 1350 netascii: CR LF line ends, and a bare CR sent as CR NUL.
fn to_netascii(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 16);
    for &b in bytes {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            _ => out.push(b),
        }
    }
    out
}

/// One transfer's task: look the file up, negotiate, send it block by block.
async fn run(
    mut transfer: Transfer,
    job: Job,
    files: FileSource,
    limits: TftpLimits,
    _permit: OwnedSemaphorePermit,
    _guard: ActiveGuard,
) {
    let Some(mut bytes) = files(&job.name) else {
        tracing::info!("tftp: file not found");
        transfer
            .send(&packet::error(ErrorCode::FileNotFound, "File not found"))
            .await;
        return;
    };
    if job.mode == Mode::Netascii {
        bytes = to_netascii(&bytes);
    }
    let negotiated = negotiate(&job.options, bytes.len(), &limits);
    transfer.timeout = negotiated.timeout;
    if !negotiated.oack.is_empty()
        && let Err(end) = transfer.exchange(&packet::oack(&negotiated.oack), 0).await
    {
        tracing::debug!(%end, "tftp: transfer ended at the OACK");
        return;
    }
    let blksize = negotiated.blksize;
    // The last block is shorter than blksize, so a file of a whole number of blocks ends with
    // an empty one.
    let blocks = bytes.len() / blksize + 1;
    for i in 0..blocks {
        let chunk = &bytes[i * blksize..((i + 1) * blksize).min(bytes.len())];
        // Block numbers start at 1 and roll over from 65535 to 0.
        let block = ((i + 1) % 65_536) as u16;
        if let Err(end) = transfer.exchange(&packet::data(block, chunk), block).await {
            tracing::debug!(%end, block, "tftp: transfer ended");
            return;
        }
    }
    tracing::debug!(bytes = bytes.len(), blksize, "tftp: transfer complete");
}

/// The socket and clock of one transfer (one TID pair).
struct Transfer {
    socket: UdpSocket,
    peer: SocketAddr,
    timeout: Duration,
    retries: u32,
    /// The client has ACKed something: it receives at `peer`.
    proven: bool,
    cancel: CancellationToken,
}

/// Why a transfer stopped early.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("no ACK after every retry")]
    TimedOut,
    #[error("server shutting down")]
    Cancelled,
    #[error("client sent ERROR {code}: {message}")]
    Peer { code: u16, message: String },
    #[error("client sent a packet a reading client never sends")]
    Illegal,
    #[error("socket error: {0}")]
    Io(std::io::Error),
}

impl Transfer {
    /// Sends `packet` and waits for ACK `block`, resending on timeout.
    async fn exchange(&mut self, packet: &[u8], block: u16) -> Result<(), End> {
        // An ACK is 4 bytes; room for an ERROR with a long message.
        let mut buf = [0u8; 1024];
        let mut sends = 0u32;
        loop {
            if let Err(error) = self.socket.send_to(packet, self.peer).await {
                return Err(End::Io(error));
            }
            sends += 1;
            let deadline = Instant::now() + self.timeout;
            loop {
                let (len, from) = tokio::select! {
                    () = self.cancel.cancelled() => {
                        self.send(&packet::error(ErrorCode::NotDefined, "Server shutting down"))
                            .await;
                        return Err(End::Cancelled);
                    }
                    () = sleep_until(deadline) => break,
                    r = self.socket.recv_from(&mut buf) => match r {
                        Ok(r) => r,
                        Err(error) => return Err(End::Io(error)),
                    },
                };
                if from != self.peer {
                    let reply = packet::error(ErrorCode::UnknownTransferId, "Unknown transfer ID");
                    send_reply(&self.socket, &reply, from).await;
                    continue;
                }
                match packet::parse(&buf[..len]) {
                    Ok(Packet::Ack(b)) if b == block => {
                        self.proven = true;
                        return Ok(());
                    }
                    // An old or duplicate ACK: answering it would double every later block.
                    Ok(Packet::Ack(_)) | Err(_) => {}
                    Ok(Packet::Error { code, message }) => {
                        return Err(End::Peer {
                            code,
                            message: message.into_owned(),
                        });
                    }
                    Ok(_) => {
                        self.send(&packet::error(
                            ErrorCode::IllegalOperation,
                            "Illegal TFTP operation",
                        ))
                        .await;
                        return Err(End::Illegal);
                    }
                }
            }
            let retries = if self.proven {
                self.retries
            } else {
                self.retries.min(UNPROVEN_RETRIES)
            };
            if sends > retries {
                return Err(End::TimedOut);
            }
        }
    }

    async fn send(&self, packet: &[u8]) {
        send_reply(&self.socket, packet, self.peer).await;
    }
}

async fn send_reply(socket: &UdpSocket, packet: &[u8], to: SocketAddr) {
    if let Err(error) = socket.send_to(packet, to).await {
        tracing::debug!(%to, %error, "tftp send failed");
    }
}

/// Client addresses with a transfer running, so a retransmitted RRQ does not start a second,
/// and how many each client IP runs.
#[derive(Default, Clone)]
struct Active(Arc<Mutex<ActiveSet>>);

#[derive(Default)]
struct ActiveSet {
    peers: HashSet<SocketAddr>,
    per_ip: std::collections::HashMap<std::net::IpAddr, usize>,
}

enum Claim {
    Granted(ActiveGuard),
    /// This address already has a transfer running (a retransmitted RRQ).
    Running,
    /// This IP already runs [`MAX_TRANSFERS_PER_CLIENT`] transfers.
    TooMany,
}

/// Removes its address from [`Active`] when the transfer's task ends.
struct ActiveGuard {
    set: Active,
    peer: SocketAddr,
}

impl Active {
    fn claim(&self, peer: SocketAddr) -> Claim {
        // Held only for an insert or remove, never across an await; a poisoned set is still a
        // valid set.
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if set.peers.contains(&peer) {
            return Claim::Running;
        }
        let count = set.per_ip.entry(peer.ip()).or_default();
        if *count >= MAX_TRANSFERS_PER_CLIENT {
            return Claim::TooMany;
        }
        *count += 1;
        set.peers.insert(peer);
        Claim::Granted(ActiveGuard {
            set: self.clone(),
            peer,
        })
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let mut set = self.set.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.peers.remove(&self.peer);
        if let Some(count) = set.per_ip.get_mut(&self.peer.ip()) {
            *count -= 1;
            if *count == 0 {
                set.per_ip.remove(&self.peer.ip());
            }
        }
    }
}
