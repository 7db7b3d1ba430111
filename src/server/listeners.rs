//! The daemon's stream listeners as things that can be closed and opened again while it runs:
//! `utils sipOAuth-mode disable|enable` closes and reopens 5090/5091 of every node, and a
//! reload moves a listener whose port changed.
//!
//! A closed listener keeps its port **reserved**: a socket bound (with `SO_REUSEADDR`) but not
//! listening, so a connection attempt is refused exactly as when nothing is bound, and opening
//! it again is `listen(2)` on the same port, also when the port was chosen by the kernel (port
//! 0 in tests). The reservation is not exclusive: on Linux another socket that also sets
//! `SO_REUSEADDR` may bind the same port while ours is not listening, and whichever listens
//! first gets it; opening then fails with `EADDRINUSE`, reported to the caller, who closes
//! again what it opened (`utils sipOAuth-mode enable` is all or nothing). Closing a listener cancels its accept loop **and its connections** (their
//! cancellation tokens are children of the listener's): UCM closes 5090/5091 by restarting
//! the CallManager service, which drops them too, and a client then meets the mode it must
//! re-register under.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::BoundListener;
use crate::cluster::NodeId;
use crate::config::Limits;
use crate::net::{Service, Transport};
use crate::tls::TlsSlot;
use crate::transport::{self, App, StreamListener};

/// Backlog of every stream listener (what tokio's `TcpListener::bind` uses).
const BACKLOG: i32 = 1024;

/// Every stream listener of every node.
pub(super) struct StreamSet {
    entries: Mutex<Vec<Entry>>,
    limits: Limits,
    /// The server's token: cancelling it stops every listener (shutdown).
    cancel: CancellationToken,
    tasks: TaskTracker,
    admission: transport::Admission,
    runtime: tokio::runtime::Handle,
}

pub(super) struct Entry {
    pub(super) node: NodeId,
    pub(super) node_name: Arc<str>,
    pub(super) app: App,
    pub(super) tls: Option<TlsSlot>,
    /// Where it listens (or would): the port bound, not the configured one, on port 0.
    pub(super) addr: SocketAddr,
    state: State,
}

enum State {
    Serving {
        cancel: CancellationToken,
        done: JoinHandle<()>,
    },
    Reserved(Socket),
    Free,
}

impl Entry {
    /// Binds `addr` (reserved, not yet listening).
    pub(super) fn bind(
        node: NodeId,
        node_name: Arc<str>,
        app: App,
        tls: Option<TlsSlot>,
        addr: SocketAddr,
    ) -> io::Result<Self> {
        let socket = reserve(addr)?;
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .unwrap_or(addr);
        Ok(Self {
            node,
            node_name,
            app,
            tls,
            addr,
            state: State::Reserved(socket),
        })
    }

    pub(super) fn service(&self) -> Service {
        self.app.service()
    }

    pub(super) fn transport(&self) -> Transport {
        if self.tls.is_some() {
            Transport::Tls
        } else {
            Transport::Tcp
        }
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(self.state, State::Serving { .. })
    }

    pub(super) fn listing(&self) -> BoundListener {
        BoundListener {
            node: self.node,
            node_name: self.node_name.clone(),
            service: self.service(),
            transport: self.transport(),
            addr: self.addr,
        }
    }
}

/// A socket bound to `addr` that does not accept yet.
fn reserve(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As tokio's `TcpListener::bind`: connections of a closed listener in TIME_WAIT must not
    // keep its port from opening again.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A listener that did not open, with the reason.
#[derive(Debug)]
pub(super) struct OpenError {
    pub(super) listener: BoundListener,
    pub(super) source: io::Error,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = &self.listener;
        write!(
            f,
            "cannot listen on {} for the {} {} listener of node {}: {}",
            l.addr,
            l.service.name(),
            l.transport.name(),
            l.node_name,
            self.source
        )
    }
}

impl StreamSet {
    pub(super) fn new(
        entries: Vec<Entry>,
        limits: Limits,
        cancel: CancellationToken,
        tasks: TaskTracker,
        admission: transport::Admission,
    ) -> Self {
        Self {
            entries: Mutex::new(entries),
            limits,
            cancel,
            tasks,
            admission,
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Every listener, open or not.
    pub(super) fn all(&self) -> Vec<(BoundListener, bool)> {
        self.lock()
            .iter()
            .map(|e| (e.listing(), e.is_open()))
            .collect()
    }

    /// What the listener of `node` for `service` serves, and with which TLS slot.
    pub(super) fn app_of(&self, node: NodeId, service: Service) -> Option<App> {
        self.lock()
            .iter()
            .find(|e| e.node == node && e.service() == service)
            .map(|e| e.app.clone())
    }

    pub(super) fn tls_of(&self, node: NodeId, service: Service) -> Option<TlsSlot> {
        self.lock()
            .iter()
            .find(|e| e.node == node && e.service() == service)
            .and_then(|e| e.tls.clone())
    }

    /// Starts accepting on every listener `which` selects that is not open; returns those
    /// that could not (the others are open).
    pub(super) fn open(&self, which: impl Fn(&Entry) -> bool) -> Vec<OpenError> {
        let _context = self.runtime.enter();
        let mut errors = Vec::new();
        for e in self.lock().iter_mut().filter(|e| which(e) && !e.is_open()) {
            match self.start(e) {
                Ok(()) => {}
                Err(source) => errors.push(OpenError {
                    listener: e.listing(),
                    source,
                }),
            }
        }
        errors
    }

    fn start(&self, e: &mut Entry) -> io::Result<()> {
        let socket = match std::mem::replace(&mut e.state, State::Free) {
            State::Reserved(s) => s,
            State::Free => reserve(e.addr)?,
            serving @ State::Serving { .. } => {
                e.state = serving;
                return Ok(());
            }
        };
        if let Err(error) = socket.listen(BACKLOG) {
            e.state = State::Reserved(socket);
            return Err(error);
        }
        // On error the socket is gone (state `Free`): the next open binds afresh.
        let listener = TcpListener::from_std(socket.into())?;
        let cancel = self.cancel.child_token();
        let done = self.tasks.spawn(transport::serve_stream_listener(
            StreamListener {
                listener,
                node: e.node,
                app: e.app.clone(),
                tls: e.tls.clone(),
            },
            self.limits,
            cancel.clone(),
            self.tasks.clone(),
            self.admission.clone(),
        ));
        e.state = State::Serving { cancel, done };
        Ok(())
    }

    /// Stops every open listener `which` selects and closes its connections; waits until its
    /// socket is closed, then reserves the port again. Blocks: call it on the blocking pool.
    pub(super) fn close(&self, which: impl Fn(&Entry) -> bool) {
        let mut stopping = Vec::new();
        for e in self.lock().iter_mut().filter(|e| which(e)) {
            if let State::Serving { cancel, done } = std::mem::replace(&mut e.state, State::Free) {
                cancel.cancel();
                stopping.push((e.addr, done));
            }
        }
        for (addr, done) in stopping {
            // The accept loop owns the socket: once it returned, the port is free.
            let _ = self.runtime.block_on(done);
            let mut entries = self.lock();
            if let Some(e) = entries
                .iter_mut()
                .find(|e| e.addr == addr && matches!(e.state, State::Free))
            {
                match reserve(addr) {
                    Ok(s) => e.state = State::Reserved(s),
                    Err(error) => {
                        tracing::warn!(%addr, %error, "could not reserve a closed listener's port");
                    }
                }
            }
        }
    }

    /// Replaces the entries `which` selects by `new` ones (already bound, reserved): the old
    /// ones are closed first, the new ones are opened when `open` says so. For a reload whose
    /// ports changed. Blocks like [`Self::close`].
    pub(super) fn replace(
        &self,
        which: impl Fn(&Entry) -> bool,
        new: Vec<Entry>,
        open: impl Fn(&Entry) -> bool,
    ) -> Vec<OpenError> {
        self.close(&which);
        let new_addrs: Vec<SocketAddr> = new.iter().map(|e| e.addr).collect();
        {
            let mut entries = self.lock();
            entries.retain(|e| !which(e));
            entries.extend(new);
        }
        self.open(|e| new_addrs.contains(&e.addr) && open(e))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // Every change to an entry is a single assignment; a poisoned lock holds whole entries.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
