//! Registrations: at most one binding per configured device (UCM registers a device once),
//! an expiry index, and the set of devices seen since start (for `;x-cisco-newreg`).
//!
//! Slots are a `Vec` indexed by [`DeviceId`], sized from the configuration at start, so a
//! lookup is an index, not a hash. The store is behind one `std::sync::Mutex`: every operation
//! is a few hundred nanoseconds of in-memory work and never awaits, so an async mutex would
//! only add cost (the same reasoning as mini-redis' `Db`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cluster::{DeviceId, NodeId};
use crate::net::{ListenerKind, Transport};

/// One registered device: where it is and which client holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI (inside `<>`), e.g. `sip:<uuid>@10.10.10.10:62162;transport=tls`.
    pub contact_uri: Box<str>,
    /// `+sip.instance`, which tells one client from another.
    pub instance: Option<Box<str>>,
    pub call_id: Box<str>,
    pub cseq: u32,
    /// Hash of the top Via's `branch`: tells a retransmission from a new request.
    pub branch: u64,
    /// The request that last set this binding was answered with `;x-cisco-newreg`; a
    /// retransmission of it is answered the same way.
    pub newreg: bool,
    pub expires_at: Instant,
    /// Unix seconds, for listings.
    pub registered_at: u64,
    pub node: NodeId,
    pub listener: ListenerKind,
    pub transport: Transport,
    pub source: SocketAddr,
    /// The token's user, when the device registered with a bearer token.
    pub user: Option<Arc<str>>,
}

/// What a REGISTER asks the store to do.
#[derive(Debug)]
pub struct Update {
    pub binding: Binding,
    /// The client asked to take the device over from another client (Jabber's
    /// `Reason: ...cisco-alarm:111...` with a real `+sip.instance`).
    pub force: bool,
    /// A `Contact: *` removal: it carries no instance, so its Call-ID identifies the client.
    pub wildcard: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new binding; `first_since_start` drives `;x-cisco-newreg`.
    New { first_since_start: bool },
    /// The same client refreshed its binding.
    Refreshed,
    /// The request that set the binding, again (same Call-ID, CSeq and branch): answered as
    /// it was, nothing changes.
    Retransmission { newreg: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// UCM: `403` `Warning: 399 <node> "Registration is active for another client"`.
    #[error("registration is active for another client")]
    ActiveForAnotherClient,
    /// RFC 3261 §10.3 step 7: same Call-ID, CSeq not higher than the binding's (or than a
    /// removed binding's, for a delayed request), and not a retransmission.
    #[error("CSeq {got} is lower than the binding's {current}")]
    OutOfOrder { current: u32, got: u32 },
    #[error("the registrar holds its maximum of {limit} bindings")]
    Full { limit: usize },
}

/// Shared handle; cloning is cheap.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the purge task when an earlier expiry is scheduled.
    expiry_changed: Notify,
    max_bindings: usize,
}

#[derive(Debug)]
struct State {
    slots: Vec<Option<Binding>>,
    /// What a client removed, so a delayed older REGISTER cannot bring the binding back.
    removed: Vec<Option<Tombstone>>,
    seen: Vec<bool>,
    expirations: BTreeSet<(Instant, DeviceId)>,
    count: usize,
}

impl Store {
    pub fn new(devices: usize, max_bindings: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots: vec![None; devices],
                    removed: vec![None; devices],
                    seen: vec![false; devices],
                    expirations: BTreeSet::new(),
                    count: 0,
                }),
                expiry_changed: Notify::new(),
                max_bindings,
            }),
        }
    }

    /// Adds or refreshes the device's binding, applying the duplicate-client and CSeq rules.
    pub fn register(
        &self,
        device: DeviceId,
        update: Update,
        now: Instant,
    ) -> Result<Registered, StoreError> {
        let mut state = self.lock();
        let idx = device.0 as usize;
        let outcome = match state.live(idx, now) {
            Some(cur) => match relate(cur, &update)? {
                Relation::SameClient => Registered::Refreshed,
                Relation::Retransmission => {
                    return Ok(Registered::Retransmission { newreg: cur.newreg });
                }
                Relation::TakenOver => Registered::New {
                    first_since_start: false,
                },
            },
            None => {
                if let Some(t) = &state.removed[idx] {
                    let new = &update.binding;
                    if now < t.until
                        && t.call_id == call_id_hash(&new.call_id)
                        && new.cseq <= t.cseq
                    {
                        return Err(StoreError::OutOfOrder {
                            current: t.cseq,
                            got: new.cseq,
                        });
                    }
                }
                // An expired binding the purge task has not reached yet is replaced, not added.
                if state.slots[idx].is_none() && state.count >= self.shared.max_bindings {
                    return Err(StoreError::Full {
                        limit: self.shared.max_bindings,
                    });
                }
                Registered::New {
                    first_since_start: !state.seen[idx],
                }
            }
        };
        let mut binding = update.binding;
        binding.newreg = outcome
            == (Registered::New {
                first_since_start: true,
            });
        let expires_at = binding.expires_at;
        let earliest = state.expirations.first().map(|e| e.0);
        state.removed[idx] = None;
        state.put(idx, device, binding);
        state.seen[idx] = true;
        drop(state);
        if earliest.is_none_or(|e| expires_at < e) {
            self.shared.expiry_changed.notify_one();
        }
        Ok(outcome)
    }

    /// Removes the device's binding (`Expires: 0` or `Contact: *`). Another client's live
    /// binding is left alone unless forced.
    pub fn unregister(
        &self,
        device: DeviceId,
        update: &Update,
        now: Instant,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let idx = device.0 as usize;
        let tombstone = match state.live(idx, now) {
            None => return Ok(false),
            Some(cur) => {
                relate(cur, update)?;
                Tombstone {
                    call_id: call_id_hash(&update.binding.call_id),
                    cseq: update.binding.cseq,
                    until: cur.expires_at,
                }
            }
        };
        state.remove(idx, device);
        state.removed[idx] = Some(tombstone);
        Ok(true)
    }

    pub fn lookup(&self, device: DeviceId, now: Instant) -> Option<Binding> {
        self.lock().live(device.0 as usize, now).cloned()
    }

    /// Whether the device's live binding was made on this Call-ID.
    pub fn holds_call_id(&self, device: DeviceId, call_id: &str, now: Instant) -> bool {
        self.lock()
            .live(device.0 as usize, now)
            .is_some_and(|b| *b.call_id == *call_id)
    }

    /// Live bindings in device order.
    pub fn list(&self, now: Instant) -> Vec<(DeviceId, Binding)> {
        let state = self.lock();
        state
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Some(b) if b.expires_at > now => Some((DeviceId(i as u32), b.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes expired bindings; returns the next expiry, if any.
    pub fn purge_expired(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        while let Some(&(at, device)) = state.expirations.first() {
            if at > now {
                return Some(at);
            }
            state.remove(device.0 as usize, device);
        }
        None
    }

    /// Runs until `cancel` fires, dropping bindings as they expire.
    pub async fn purge_task(self, cancel: tokio_util::sync::CancellationToken) {
        loop {
            let next = self.purge_expired(Instant::now());
            let wait = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = wait => {}
                () = self.shared.expiry_changed.notified() => {}
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock would be a bug in the few lines above, none of
        // which can panic on input; recover the data rather than take the daemon down.
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn live(&self, idx: usize, now: Instant) -> Option<&Binding> {
        self.slots[idx].as_ref().filter(|b| b.expires_at > now)
    }

    fn put(&mut self, idx: usize, device: DeviceId, binding: Binding) {
        let at = binding.expires_at;
        match self.slots[idx].replace(binding) {
            Some(old) => {
                self.expirations.remove(&(old.expires_at, device));
            }
            None => self.count += 1,
        }
        self.expirations.insert((at, device));
    }

    fn remove(&mut self, idx: usize, device: DeviceId) {
        if let Some(old) = self.slots[idx].take() {
            self.expirations.remove(&(old.expires_at, device));
            self.count -= 1;
        }
    }
}

/// A client's removal of its binding: Call-ID (hashed), CSeq, and until when it matters
/// (the removed binding's own expiry: after it, an old REGISTER is as good as a new one).
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    call_id: u64,
    cseq: u32,
    until: Instant,
}

fn call_id_hash(call_id: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the hash only compares one client's Call-IDs with each other.
    let mut h = std::hash::DefaultHasher::new();
    call_id.hash(&mut h);
    h.finish()
}

/// How a request relates to the device's live binding.
enum Relation {
    SameClient,
    Retransmission,
    /// Another client, forcing the takeover.
    TakenOver,
}

/// Same client: the same `+sip.instance`; a binding without one is matched by Call-ID
/// (RFC 3261 §10.2.4: a UA keeps its Call-ID across refreshes). A client that registered
/// with an instance must keep naming it, except in a `Contact: *` removal, which has none:
/// otherwise anyone knowing the Call-ID could take the binding over by leaving it out.
fn relate(cur: &Binding, update: &Update) -> Result<Relation, StoreError> {
    let new = &update.binding;
    let same = match (&cur.instance, &new.instance) {
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => update.wildcard && cur.call_id == new.call_id,
        (None, _) => cur.call_id == new.call_id,
    };
    if !same {
        return if update.force {
            Ok(Relation::TakenOver)
        } else {
            Err(StoreError::ActiveForAnotherClient)
        };
    }
    if cur.call_id == new.call_id && new.cseq <= cur.cseq {
        if new.cseq == cur.cseq && new.branch == cur.branch {
            return Ok(Relation::Retransmission);
        }
        return Err(StoreError::OutOfOrder {
            current: cur.cseq,
            got: new.cseq,
        });
    }
    Ok(Relation::SameClient)
}

// Interim re-keying for configuration reloads (crate::registrar::Registrar::replace_cluster);
// kept in its own block so the multi-contact store can bring its own.
impl Store {
    /// Re-indexes the store for a new device list of `new_len` devices: every binding, removal
    /// record and "seen since start" flag of device `old` moves to `map(old)`; those mapped to
    /// `None` (devices no longer configured) or past `new_len` are dropped. Atomic: done under
    /// the store's lock, so no operation sees a half-moved store.
    pub fn rekey(&self, new_len: usize, map: impl Fn(DeviceId) -> Option<DeviceId>) {
        let mut state = self.lock();
        let mut slots = vec![None; new_len];
        let mut removed = vec![None; new_len];
        let mut seen = vec![false; new_len];
        let mut expirations = BTreeSet::new();
        let mut count = 0;
        let old_len = state.slots.len();
        for i in 0..old_len {
            let old = DeviceId(i as u32);
            let Some(new) = map(old).filter(|n| (n.0 as usize) < new_len) else {
                continue;
            };
            let j = new.0 as usize;
            if let Some(b) = state.slots[i].take() {
                expirations.insert((b.expires_at, new));
                count += 1;
                slots[j] = Some(b);
            }
            removed[j] = state.removed[i].take();
            seen[j] = state.seen[i];
        }
        state.slots = slots;
        state.removed = removed;
        state.seen = seen;
        state.expirations = expirations;
        state.count = count;
        drop(state);
        // The earliest expiry may have left with a dropped device; let the purge task re-plan.
        self.shared.expiry_changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn binding(instance: Option<&str>, call_id: &str, cseq: u32, expires_at: Instant) -> Binding {
        Binding {
            contact_uri: "sip:a@127.0.0.1:5000".into(),
            instance: instance.map(Into::into),
            call_id: call_id.into(),
            cseq,
            branch: u64::from(cseq),
            newreg: false,
            expires_at,
            registered_at: 0,
            node: NodeId(0),
            listener: ListenerKind::OAuth,
            transport: Transport::Tls,
            source: "127.0.0.1:5000".parse().unwrap(),
            user: None,
        }
    }

    fn update(b: Binding, force: bool) -> Update {
        Update {
            binding: b,
            force,
            wildcard: false,
        }
    }

    const D: DeviceId = DeviceId(1);

    #[tokio::test(start_paused = true)]
    async fn first_registration_then_refresh_then_reregistration_after_expiry() {
        let store = Store::new(3, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(120);
        let r = store.register(D, update(binding(Some("i1"), "c1", 1, exp), false), now);
        assert_eq!(
            r,
            Ok(Registered::New {
                first_since_start: true
            })
        );
        let r = store.register(D, update(binding(Some("i1"), "c1", 2, exp), false), now);
        assert_eq!(r, Ok(Registered::Refreshed));
        assert_eq!(store.len(), 1);

        tokio::time::advance(Duration::from_secs(121)).await;
        let now = Instant::now();
        assert_eq!(store.lookup(D, now), None);
        let r = store.register(
            D,
            update(
                binding(Some("i1"), "c1", 3, now + Duration::from_secs(120)),
                false,
            ),
            now,
        );
        assert_eq!(
            r,
            Ok(Registered::New {
                first_since_start: false
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_client_is_refused_unless_forced() {
        let store = Store::new(3, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(120);
        store
            .register(D, update(binding(Some("i1"), "c1", 1, exp), false), now)
            .unwrap();
        let other = binding(Some("i2"), "c2", 1, exp);
        assert_eq!(
            store.register(D, update(other.clone(), false), now),
            Err(StoreError::ActiveForAnotherClient)
        );
        assert_eq!(
            store.unregister(D, &update(other.clone(), false), now),
            Err(StoreError::ActiveForAnotherClient)
        );
        assert_eq!(
            store.register(D, update(other, true), now),
            Ok(Registered::New {
                first_since_start: false
            })
        );
        assert_eq!(
            store.lookup(D, now).unwrap().instance.as_deref(),
            Some("i2")
        );
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lower_cseq_on_the_same_call_id_is_out_of_order() {
        let store = Store::new(3, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(120);
        store
            .register(D, update(binding(None, "c1", 5, exp), false), now)
            .unwrap();
        assert_eq!(
            store.register(D, update(binding(None, "c1", 4, exp), false), now),
            Err(StoreError::OutOfOrder { current: 5, got: 4 })
        );
        // A retransmission (same CSeq and branch) is answered as the original was...
        assert_eq!(
            store.register(D, update(binding(None, "c1", 5, exp), false), now),
            Ok(Registered::Retransmission { newreg: true })
        );
        // ...but the same CSeq on another branch is a new request reusing it.
        let mut reused = binding(None, "c1", 5, exp);
        reused.branch = 99;
        assert_eq!(
            store.register(D, update(reused, false), now),
            Err(StoreError::OutOfOrder { current: 5, got: 5 })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn full_store_refuses_new_devices_but_not_refreshes() {
        let store = Store::new(3, 1);
        let now = Instant::now();
        let exp = now + Duration::from_secs(120);
        store
            .register(D, update(binding(None, "c1", 1, exp), false), now)
            .unwrap();
        assert_eq!(
            store.register(DeviceId(2), update(binding(None, "c2", 1, exp), false), now),
            Err(StoreError::Full { limit: 1 })
        );
        assert!(
            store
                .register(D, update(binding(None, "c1", 2, exp), false), now)
                .is_ok()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn purge_task_drops_expired_bindings() {
        let store = Store::new(3, 10);
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(store.clone().purge_task(cancel.clone()));
        let now = Instant::now();
        store
            .register(
                D,
                update(binding(None, "c1", 1, now + Duration::from_secs(30)), false),
                now,
            )
            .unwrap();
        store
            .register(
                DeviceId(2),
                update(binding(None, "c2", 1, now + Duration::from_secs(90)), false),
                now,
            )
            .unwrap();
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(store.len(), 1);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(store.len(), 0);
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn unregister_removes_and_listing_shows_live_bindings() {
        let store = Store::new(3, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(120);
        let b = binding(Some("i1"), "c1", 1, exp);
        store.register(D, update(b.clone(), false), now).unwrap();
        let stored = Binding {
            newreg: true,
            ..b.clone()
        };
        assert_eq!(store.list(now), vec![(D, stored)]);
        assert_eq!(
            store.unregister(D, &update(b.clone(), false), now),
            Ok(true)
        );
        assert!(store.list(now).is_empty());
        assert_eq!(store.unregister(D, &update(b, false), now), Ok(false));
    }

    #[tokio::test(start_paused = true)]
    async fn leaving_out_the_instance_does_not_take_a_binding_over() {
        let store = Store::new(3, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(120);
        store
            .register(D, update(binding(Some("i1"), "c1", 1, exp), false), now)
            .unwrap();
        assert_eq!(
            store.register(D, update(binding(None, "c1", 2, exp), false), now),
            Err(StoreError::ActiveForAnotherClient)
        );
        let star = Update {
            binding: binding(None, "c1", 3, now),
            force: false,
            wildcard: true,
        };
        assert_eq!(store.unregister(D, &star, now), Ok(true));
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_binding_not_yet_purged_does_not_count_toward_full() {
        let store = Store::new(3, 1);
        let now = Instant::now();
        store
            .register(
                D,
                update(binding(None, "c1", 1, now + Duration::from_secs(1)), false),
                now,
            )
            .unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        let r = store.register(
            D,
            update(
                binding(None, "c2", 1, now + Duration::from_secs(120)),
                false,
            ),
            now,
        );
        assert_eq!(
            r,
            Ok(Registered::New {
                first_since_start: false
            })
        );
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_older_register_does_not_revive_a_removed_binding() {
        let store = Store::new(3, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(120);
        store
            .register(D, update(binding(Some("i1"), "c1", 13, exp), false), now)
            .unwrap();
        let off = Update {
            binding: binding(Some("i1"), "c1", 14, now),
            force: false,
            wildcard: false,
        };
        assert_eq!(store.unregister(D, &off, now), Ok(true));
        assert_eq!(
            store.register(D, update(binding(Some("i1"), "c1", 13, exp), false), now),
            Err(StoreError::OutOfOrder {
                current: 14,
                got: 13
            })
        );
        // A newer request from that client, or any request from another Call-ID, registers.
        assert!(
            store
                .register(D, update(binding(Some("i1"), "c1", 15, exp), false), now)
                .is_ok()
        );
    }
}
