//! The registrar handle every listener holds, and how a configuration reload swaps the
//! cluster model under it.
//!
//! A request resolves a [`DeviceId`] against the cluster model and later writes the store at
//! that index. Device ids are positions in the configuration, so a reload that adds, removes
//! or reorders devices changes them: a request that resolved its id against the old model
//! must never write into the re-keyed store. The model and the store's indexing therefore
//! change together under a write lock, and a request holds the read lock from its first
//! look at the model to its last store write. [`Engine::handle`] is synchronous (no `.await`
//! inside), so the read side is one uncontended atomic on entry and one on exit, and a reload
//! waits at most for the requests already being handled.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use super::{Engine, Store, challenge};
use crate::auth::Authenticator;
use crate::cluster::{Cluster, DeviceId, LiveMode};
use crate::net::Peer;

/// The registrar: the cluster model, the binding store and the credential check.
/// Cheap to clone; every listener task holds one.
#[derive(Clone)]
pub struct Registrar {
    engine: Arc<RwLock<Engine>>,
    /// The same store the engine writes; kept here so listings need no lock of ours.
    store: Store,
}

/// What a cluster swap did to the registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rekeyed {
    /// Bindings kept (their device is still configured, perhaps at another position).
    pub kept: usize,
    /// Bindings dropped with their device.
    pub dropped: usize,
}

impl Registrar {
    pub fn new(cluster: Arc<Cluster>, store: Store, auth: Arc<dyn Authenticator>) -> Self {
        Self {
            engine: Arc::new(RwLock::new(Engine::new(cluster, store.clone(), auth))),
            store,
        }
    }

    /// Follows `mode` (the live `ClusterSIPOAuthMode`) instead of the configuration's value.
    pub fn with_mode(self, mode: LiveMode) -> Self {
        self.write().mode = mode;
        self
    }

    /// The cluster model in force.
    pub fn cluster(&self) -> Arc<Cluster> {
        self.read().cluster.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Handles one framed message; returns the bytes to send back, if any.
    pub fn handle(&self, bytes: &[u8], peer: &Peer) -> Option<Vec<u8>> {
        self.read().handle(bytes, peer)
    }

    /// A datagram the transport could not frame: `400` if it is a request with a Via (see
    /// [`Engine::handle_unframed`]).
    pub fn handle_unframed(
        &self,
        bytes: &[u8],
        peer: &Peer,
        reason: &'static str,
    ) -> Option<Vec<u8>> {
        self.read().handle_unframed(bytes, peer, reason)
    }

    /// Makes `cluster` the model of every next request. Bindings follow their device by name
    /// (a device that moved in the list keeps its registration); bindings of devices no
    /// longer configured are dropped. Requests in flight finish on the old model first.
    pub fn replace_cluster(&self, cluster: Arc<Cluster>) -> Rekeyed {
        let mut engine = self.write();
        let old = engine.cluster.clone();
        let map = |id: DeviceId| {
            old.devices
                .get(id.0 as usize)
                .and_then(|d| cluster.device_by_name(&d.name))
        };
        // An AOR binding's line is its DN's index on the device: a reload may reorder lines.
        let line = |id: DeviceId, line: u16| {
            let old_device = old.devices.get(id.0 as usize)?;
            let dn = &old_device.lines.get(usize::from(line))?.dn;
            let new_device = cluster.device(cluster.device_by_name(&old_device.name)?);
            let i = new_device.lines.iter().position(|l| l.dn == *dn)?;
            u16::try_from(i).ok()
        };
        let before = self.store.len();
        self.store.rekey(cluster.devices.len(), map, line);
        let kept = self.store.len();
        engine.challenge = challenge(&cluster);
        engine.cluster = cluster;
        Rekeyed {
            kept,
            dropped: before.saturating_sub(kept),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Engine> {
        // A panic inside `handle` would be a bug; the engine holds no half-made state (the
        // store has its own lock), so keep serving.
        self.engine.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Engine> {
        self.engine.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;
    use crate::auth::{AuthError, Identity};
    use crate::cluster::NodeId;
    use crate::config::Settings;
    use crate::net::{ListenerKind, Transport};

    struct NoTokens;

    impl Authenticator for NoTokens {
        fn authenticate(&self, _: &str, _: u64) -> Result<Identity, AuthError> {
            Err(AuthError::Malformed)
        }
    }

    /// The lab plus legacy (open admission) devices `SIPrace0..7`.
    fn cluster() -> Cluster {
        let mut toml = crate::config::LAB_CONFIG.to_owned();
        for i in 0..8 {
            toml.push_str(&format!(
                "\n[[devices]]\nname = \"SIPrace{i}\"\nproduct_type = \"Third-party SIP Device \
                 (Advanced)\"\nowner = \"bob\"\nprofile = \"Universal Device Template - \
                 Model-independent Security Profile\"\nlines = [{{ dn = \"40{i}0\", \
                 display_name = \"Race\", contact = \"00000000-0000-4000-8000-00000000000{i}\" }}]\n"
            ));
        }
        Settings::from_toml(&toml).unwrap().cluster
    }

    /// The same cluster with its devices in reverse order: every device id changes.
    fn reversed(c: &Cluster) -> Cluster {
        let mut devices = c.devices.clone();
        devices.reverse();
        Cluster::new(
            c.params.clone(),
            c.nodes.clone(),
            c.profiles.clone(),
            c.users.clone(),
            devices,
            c.expressway.clone(),
        )
    }

    fn register(device: &str, dn: &str, cseq: u32) -> Vec<u8> {
        format!(
            "REGISTER sip:10.10.10.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.10.10.10:5060;branch=z9hG4bK{cseq}x{device}\r\n\
             From: <sip:{dn}@10.10.10.1>;tag=1\r\n\
             To: <sip:{dn}@10.10.10.1>\r\n\
             Call-ID: call-{device}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{device}@10.10.10.10:5060>;+u.sip!devicename.ccm.cisco.com=\"{device}\"\r\n\
             Expires: 3600\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// Registrations race cluster swaps that move every device: no binding ever lands on
    /// another device's slot, and none is lost.
    #[test]
    fn requests_racing_reloads_never_write_under_a_stale_device_id() {
        let a = Arc::new(cluster());
        let b = Arc::new(reversed(&a));
        let store = Store::new(a.devices.len(), 1000);
        let registrar = Registrar::new(a.clone(), store.clone(), Arc::new(NoTokens));
        const WORKERS: usize = 4;
        // Rounds every worker makes while swaps run: with fewer, a worker scheduled late on
        // a loaded machine could see no swap at all, and the test would prove nothing.
        const ROUNDS: u32 = 200;
        let stop = AtomicBool::new(false);
        let start = std::sync::Barrier::new(WORKERS + 1);
        let rounds: Vec<AtomicU32> = (0..WORKERS).map(|_| AtomicU32::new(0)).collect();
        let mut swaps = 0u32;
        std::thread::scope(|scope| {
            for t in 0..WORKERS as u32 {
                let registrar = registrar.clone();
                let (stop, start, done) = (&stop, &start, &rounds[t as usize]);
                scope.spawn(move || {
                    let peer = Peer {
                        addr: SocketAddr::from(([10, 10, 10, 10], 5060)),
                        node: NodeId(0),
                        listener: ListenerKind::Sip,
                        transport: Transport::Udp,
                        cert_names: None,
                    };
                    start.wait();
                    let mut cseq = 1;
                    while !stop.load(Ordering::Relaxed) {
                        for i in [t, t + 4] {
                            let reply = registrar
                                .handle(
                                    &register(&format!("SIPrace{i}"), &format!("40{i}0"), cseq),
                                    &peer,
                                )
                                .unwrap();
                            assert!(
                                reply.starts_with(b"SIP/2.0 200 OK\r\n"),
                                "{}",
                                String::from_utf8_lossy(&reply)
                            );
                        }
                        cseq += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            start.wait();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while rounds.iter().any(|r| r.load(Ordering::Relaxed) < ROUNDS)
                && std::time::Instant::now() < deadline
            {
                registrar.replace_cluster(if swaps.is_multiple_of(2) {
                    b.clone()
                } else {
                    a.clone()
                });
                swaps += 1;
                std::thread::yield_now();
            }
            stop.store(true, Ordering::Relaxed);
        });
        for (t, r) in rounds.iter().enumerate() {
            let r = r.load(Ordering::Relaxed);
            assert!(
                r >= ROUNDS,
                "worker {t} made {r} rounds before the deadline"
            );
        }
        assert!(swaps >= 2, "{swaps} swaps");
        let cluster = registrar.cluster();
        let bindings = store.list(tokio::time::Instant::now());
        assert_eq!(bindings.len(), 8);
        for (id, binding) in bindings {
            let name = &cluster.device(id).name;
            assert_eq!(
                &*binding.call_id,
                format!("call-{name}"),
                "binding under {name}"
            );
        }
    }

    /// A reload that reorders a device's lines: an RFC 3261 client's binding stays with its DN.
    #[test]
    fn aor_bindings_follow_their_dn_when_a_reload_reorders_lines() {
        let toml = crate::config::LAB_CONFIG.replace(
            r#"lines = [{ dn = "3001", display_name = "Legacy", contact = "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b03" }]"#,
            r#"lines = [{ dn = "3001", display_name = "Legacy", contact = "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b03" }, { dn = "3002", display_name = "Legacy 2", contact = "9e8d7c6b-5a49-4837-a261-5f4e3d2c1b04" }]"#,
        );
        let a = Arc::new(Settings::from_toml(&toml).unwrap().cluster);
        let device = a.device_by_name("SIPlegacy1").unwrap();
        assert_eq!(
            a.device(device).lines.len(),
            2,
            "the lab's SIPlegacy1 line changed"
        );
        let mut devices = a.devices.clone();
        devices[device.0 as usize].lines.reverse();
        let b = Arc::new(Cluster::new(
            a.params.clone(),
            a.nodes.clone(),
            a.profiles.clone(),
            a.users.clone(),
            devices,
            a.expressway.clone(),
        ));
        let store = Store::new(a.devices.len(), 1000);
        let registrar = Registrar::new(a, store.clone(), Arc::new(NoTokens));
        let peer = Peer {
            addr: SocketAddr::from(([10, 10, 10, 10], 5060)),
            node: NodeId(0),
            listener: ListenerKind::Sip,
            transport: Transport::Udp,
            cert_names: None,
        };
        let request = "REGISTER sip:10.10.10.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP 10.10.10.10:5060;branch=z9hG4bK1\r\n\
             From: <sip:3002@10.10.10.1>;tag=1\r\n\
             To: <sip:3002@10.10.10.1>\r\n\
             Call-ID: aor-3002\r\n\
             CSeq: 1 REGISTER\r\n\
             Contact: <sip:3002@10.10.10.10:5060>\r\n\
             Content-Length: 0\r\n\r\n";
        let reply = registrar.handle(request.as_bytes(), &peer).unwrap();
        assert!(
            reply.starts_with(b"SIP/2.0 200 OK\r\n"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        let now = tokio::time::Instant::now();
        assert_eq!(store.bindings(device, 1, now).len(), 1);
        registrar.replace_cluster(b);
        // 3002 is the first line now; 3001, the second, has nothing.
        let on_3002 = store.bindings(device, 0, now);
        assert_eq!(on_3002.len(), 1);
        assert_eq!(&*on_3002[0].contact_uri, "sip:3002@10.10.10.10:5060");
        assert!(store.bindings(device, 1, now).is_empty());
    }
}
