//! Registrations: per configured device, the binding of the Cisco client that names the device
//! (UCM registers a device once) and the bindings of non-Cisco clients registering its line's
//! address-of-record under RFC 3261 §10.3 (one per Contact); an expiry index; and the set of
//! devices seen since start (for `;x-cisco-newreg`).
//!
//! Slots are a `Vec` indexed by [`DeviceId`], sized from the configuration at start, so a
//! lookup is an index, not a hash. A slot is a `SmallVec` with room for one binding inline: a
//! Cisco device's binding costs no allocation; an AOR's further bindings move to the heap. The
//! expiry index holds each slot's earliest expiry, so there is one index entry per registered
//! device and none per binding; a slot is at most `max_bindings_per_aor + 1` bindings, so
//! sweeping it on expiry is a short scan. The store is behind one `std::sync::Mutex`: every
//! operation is a few hundred nanoseconds of in-memory work and never awaits, so an async
//! mutex would only add cost (the same reasoning as mini-redis' `Db`).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use smallvec::SmallVec;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::cluster::{DeviceId, NodeId};
use crate::net::{ListenerKind, Transport};
use crate::sip::grammar;

/// One binding: where a client is and which client it is.
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
    /// Made by a Cisco client naming the device (`+u.sip!devicename.ccm.cisco.com`): the
    /// device's one binding, under UCM's rules. Otherwise an RFC 3261 binding of the AOR.
    pub device_named: bool,
    /// The Contact's `q`, in thousandths (RFC 3261 §20.10), returned as given.
    pub q: Option<u16>,
    /// Index in the device's `lines` of the DN the request's To named. AOR bindings are per
    /// line: a multi-line device's DNs are separate AORs. The Cisco binding is the device's,
    /// whatever line registered it.
    pub line: u16,
    /// [`UriKey::short`] of `contact_uri`: most different Contacts are told apart by this
    /// alone, without parsing under the store's lock. 0 for a Cisco binding (never compared).
    pub uri_key: u32,
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

/// What a Cisco client's REGISTER asks the store to do.
#[derive(Debug)]
pub struct Update {
    pub binding: Binding,
    /// The client asked to take the device over from another client (Jabber's
    /// `Reason: ...cisco-alarm:111...` with a real `+sip.instance`).
    pub force: bool,
    /// A `Contact: *` removal: it carries no instance, so its Call-ID identifies the client.
    pub wildcard: bool,
}

/// What a non-Cisco client's REGISTER asks of the AOR's bindings (RFC 3261 §10.3 steps 6-7).
#[derive(Debug)]
pub enum AorUpdate {
    /// One binding per Contact, with its URI's key; one whose `expires_at` is not after `now`
    /// is a removal. All are applied or none.
    Contacts(Vec<(Binding, UriKey)>),
    /// `Contact: *` with `Expires: 0`: the request's Call-ID, CSeq, branch and line, in a
    /// binding.
    RemoveAll(Binding),
}

/// A current binding, as the 200 lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub contact_uri: Box<str>,
    /// Seconds left, rounded up: a live binding is never listed with `expires=0`, which
    /// would read as removed.
    pub expires_in: u64,
    pub q: Option<u16>,
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
    /// The AOR would hold more than `max_bindings_per_aor` bindings of non-Cisco clients.
    #[error("the address-of-record holds its maximum of {limit} bindings")]
    TooManyBindings { limit: usize },
    /// Two Contacts of one REGISTER name the same binding (equal, or both resolving to one
    /// existing binding, one by `+sip.instance` and one by URI).
    #[error("two Contacts name the same binding")]
    DuplicateContact,
}

/// A device's bindings: at most one `device_named`, the rest the AOR's.
type Slot = SmallVec<[Binding; 1]>;

/// Bytes a device's slot takes whether registered or not (preallocated at start), for the
/// memory report.
pub const SLOT_BYTES: usize = size_of::<Slot>();

/// Bindings per AOR when the configuration does not say (`limits.max_bindings_per_aor`).
pub const DEFAULT_MAX_BINDINGS_PER_AOR: usize = 10;

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
    max_bindings_per_aor: usize,
}

#[derive(Debug)]
struct State {
    slots: Vec<Slot>,
    /// What a client removed last, so a delayed older REGISTER on its Call-ID cannot bring a
    /// binding back.
    removed: Vec<Option<Tombstone>>,
    seen: Vec<bool>,
    /// Each non-empty slot's earliest expiry.
    expirations: BTreeSet<(Instant, DeviceId)>,
    count: usize,
}

impl Store {
    pub fn new(devices: usize, max_bindings: usize) -> Self {
        Self::with_limits(devices, max_bindings, DEFAULT_MAX_BINDINGS_PER_AOR)
    }

    pub fn with_limits(devices: usize, max_bindings: usize, max_bindings_per_aor: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots: vec![Slot::new(); devices],
                    removed: vec![None; devices],
                    seen: vec![false; devices],
                    expirations: BTreeSet::new(),
                    count: 0,
                }),
                expiry_changed: Notify::new(),
                max_bindings,
                max_bindings_per_aor,
            }),
        }
    }

    /// Adds or refreshes the device's Cisco binding, applying the duplicate-client and CSeq
    /// rules.
    pub fn register(
        &self,
        device: DeviceId,
        update: Update,
        now: Instant,
    ) -> Result<Registered, StoreError> {
        let mut state = self.lock();
        let idx = device.0 as usize;
        let before = state.prune(idx, now);
        let result = self.register_pruned(&mut state, idx, update, now);
        // Whatever the outcome, the prune may have moved the slot's earliest expiry: an index
        // entry left stale would point the purge at a slot with nothing to drop.
        let notify = state.reindex(device, before);
        drop(state);
        if notify {
            self.shared.expiry_changed.notify_one();
        }
        result
    }

    fn register_pruned(
        &self,
        state: &mut State,
        idx: usize,
        update: Update,
        now: Instant,
    ) -> Result<Registered, StoreError> {
        let pos = state.slots[idx].iter().position(|b| b.device_named);
        let outcome = match pos.map(|p| &state.slots[idx][p]) {
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
                state.check_tombstone(idx, &update.binding, now)?;
                if state.count >= self.shared.max_bindings {
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
        binding.device_named = true;
        binding.uri_key = 0;
        binding.newreg = outcome
            == (Registered::New {
                first_since_start: true,
            });
        state.clear_tombstone(idx, &binding.call_id, binding.cseq);
        match pos {
            Some(p) => state.slots[idx][p] = binding,
            None => {
                state.slots[idx].push(binding);
                state.count += 1;
            }
        }
        state.seen[idx] = true;
        Ok(outcome)
    }

    /// Removes the device's Cisco binding (`Expires: 0`). Another client's live binding is
    /// left alone unless forced.
    pub fn unregister(
        &self,
        device: DeviceId,
        update: &Update,
        now: Instant,
    ) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let idx = device.0 as usize;
        let before = state.prune(idx, now);
        let Some(pos) = state.slots[idx].iter().position(|b| b.device_named) else {
            state.reindex(device, before);
            return Ok(false);
        };
        if let Err(e) = relate(&state.slots[idx][pos], update) {
            state.reindex(device, before);
            return Err(e);
        }
        let old = state.slots[idx].remove(pos);
        state.count -= 1;
        release_spill(&mut state.slots[idx]);
        state.removed[idx] = Some(Tombstone {
            call_id: call_id_hash(&update.binding.call_id),
            cseq: update.binding.cseq,
            until: old.expires_at,
        });
        state.reindex(device, before);
        Ok(true)
    }

    /// Applies a non-Cisco client's REGISTER to the AOR's bindings (RFC 3261 §10.3 steps 6-7)
    /// and returns the current bindings of the line's AOR, the device's Cisco one included.
    /// Nothing changes unless every Contact's update succeeds.
    pub fn update_aor(
        &self,
        device: DeviceId,
        update: AorUpdate,
        now: Instant,
    ) -> Result<Vec<Listed>, StoreError> {
        let mut state = self.lock();
        let idx = device.0 as usize;
        let before = state.prune(idx, now);
        let (result, line) = match update {
            AorUpdate::Contacts(bindings) => {
                let line = bindings.first().map_or(0, |(b, _)| b.line);
                (self.bind(&mut state, idx, bindings, now), line)
            }
            AorUpdate::RemoveAll(request) => {
                (remove_all(&mut state, idx, &request, now), request.line)
            }
        };
        let notify = state.reindex(device, before);
        let listed = result.map(|()| listing(&state.slots[idx], line, now));
        drop(state);
        if notify {
            self.shared.expiry_changed.notify_one();
        }
        listed
    }

    /// Most Contacts one REGISTER may carry: each existing binding of the AOR removed or
    /// refreshed, plus as many new ones as the cap allows. A request with more cannot be
    /// applied whole; the registrar refuses it before taking the lock.
    pub fn max_contacts_per_request(&self) -> usize {
        2 * self.shared.max_bindings_per_aor
    }

    pub fn max_bindings_per_aor(&self) -> usize {
        self.shared.max_bindings_per_aor
    }

    fn bind(
        &self,
        state: &mut State,
        idx: usize,
        bindings: Vec<(Binding, UriKey)>,
        now: Instant,
    ) -> Result<(), StoreError> {
        #[derive(Clone, Copy)]
        enum Action {
            Keep,
            Replace(usize),
            Remove(usize),
            Add,
        }
        // The registrar refuses more before locking; this keeps the pairwise scans below
        // bounded for any caller.
        if bindings.len() > self.max_contacts_per_request() {
            return Err(StoreError::TooManyBindings {
                limit: self.shared.max_bindings_per_aor,
            });
        }
        // First pass: decide every Contact's fate without touching the slot.
        let slot = &state.slots[idx];
        let mut actions: SmallVec<[Action; 4]> = SmallVec::with_capacity(bindings.len());
        // Existing bindings already claimed by an earlier Contact of this request.
        let mut targeted: SmallVec<[usize; 4]> = SmallVec::new();
        let (mut added, mut removed) = (0usize, 0usize);
        for (i, (new, key)) in bindings.iter().enumerate() {
            if bindings[..i]
                .iter()
                .any(|(b, k)| same_new_binding((b, k), (new, key)))
            {
                return Err(StoreError::DuplicateContact);
            }
            let removing = new.expires_at <= now;
            let found = slot
                .iter()
                .position(|b| !b.device_named && b.line == new.line && same_binding(b, new, key));
            if let Some(p) = found {
                // One by `+sip.instance`, another by URI: applying both would lose one.
                if targeted.contains(&p) {
                    return Err(StoreError::DuplicateContact);
                }
                targeted.push(p);
            }
            let action = match found {
                Some(p) => {
                    let cur = &slot[p];
                    if cur.call_id == new.call_id && new.cseq <= cur.cseq {
                        if new.cseq == cur.cseq && new.branch == cur.branch {
                            Action::Keep
                        } else {
                            return Err(StoreError::OutOfOrder {
                                current: cur.cseq,
                                got: new.cseq,
                            });
                        }
                    } else if removing {
                        removed += 1;
                        Action::Remove(p)
                    } else {
                        Action::Replace(p)
                    }
                }
                // Removing what is not there is done (a retransmitted removal included).
                None if removing => Action::Keep,
                None => {
                    state.check_tombstone(idx, new, now)?;
                    added += 1;
                    Action::Add
                }
            };
            actions.push(action);
        }
        if added > removed {
            let line = bindings.first().map_or(0, |(b, _)| b.line);
            let aor = slot
                .iter()
                .filter(|b| !b.device_named && b.line == line)
                .count();
            let limit = self.shared.max_bindings_per_aor;
            if aor + added - removed > limit {
                return Err(StoreError::TooManyBindings { limit });
            }
            let limit = self.shared.max_bindings;
            if state.count + added - removed > limit {
                return Err(StoreError::Full { limit });
            }
        }
        // Second pass: apply. A removed binding is marked expired and pruned with the rest.
        let first = bindings
            .first()
            .map(|(b, _)| (call_id_hash(&b.call_id), b.cseq));
        let mut until: Option<Instant> = None;
        for ((mut new, _), action) in bindings.into_iter().zip(actions) {
            new.device_named = false;
            new.newreg = false;
            let slot = &mut state.slots[idx];
            match action {
                Action::Keep => {}
                Action::Replace(p) => slot[p] = new,
                Action::Remove(p) => {
                    let at = slot[p].expires_at;
                    until = Some(until.map_or(at, |u| u.max(at)));
                    slot[p].expires_at = now;
                }
                Action::Add => {
                    slot.push(new);
                    state.count += 1;
                }
            }
        }
        state.prune(idx, now);
        // Every Contact of a request has its Call-ID and CSeq.
        if let Some((call_id, cseq)) = first {
            state.clear_tombstone_hashed(idx, call_id, cseq);
            if let Some(until) = until {
                let t = Tombstone {
                    call_id,
                    cseq,
                    until,
                };
                state.remember_removal(idx, t, now, false);
            }
        }
        // `seen` is left alone: `;x-cisco-newreg` is about the device's Cisco client.
        Ok(())
    }

    /// The device's Cisco binding if it has one, else its first AOR binding.
    pub fn lookup(&self, device: DeviceId, now: Instant) -> Option<Binding> {
        let state = self.lock();
        let mut live = state.slots[device.0 as usize]
            .iter()
            .filter(|b| b.expires_at > now);
        let first = live.clone().next();
        live.find(|b| b.device_named).or(first).cloned()
    }

    /// The current bindings of the device's `line`: the device's Cisco one first, then the
    /// line's AOR bindings.
    pub fn bindings(&self, device: DeviceId, line: u16, now: Instant) -> Vec<Listed> {
        listing(&self.lock().slots[device.0 as usize], line, now)
    }

    /// Whether one of the device's live bindings was made on this Call-ID.
    pub fn holds_call_id(&self, device: DeviceId, call_id: &str, now: Instant) -> bool {
        self.lock().slots[device.0 as usize]
            .iter()
            .any(|b| b.expires_at > now && *b.call_id == *call_id)
    }

    /// Live bindings in device order.
    pub fn list(&self, now: Instant) -> Vec<(DeviceId, Binding)> {
        let state = self.lock();
        state
            .slots
            .iter()
            .enumerate()
            .flat_map(|(i, s)| {
                s.iter()
                    .filter(move |b| b.expires_at > now)
                    .map(move |b| (DeviceId(i as u32), b.clone()))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves every device's bindings, tombstone and seen flag to the id `map` gives it in a
    /// store of `new_len` devices (a configuration reload names devices by name, and their
    /// ids may change); a device `map` has no id for (removed from the configuration) loses
    /// its bindings. If two devices map to one id, the first keeps it. An AOR binding follows
    /// its DN too: `line` gives the old device's old line index its new index, or none when the
    /// device no longer has that DN (the binding is dropped; the Cisco binding, the device's,
    /// stays). `map` and `line` run under the store's lock: they must be lookups, not touch
    /// the store.
    pub fn rekey(
        &self,
        new_len: usize,
        map: impl Fn(DeviceId) -> Option<DeviceId>,
        line: impl Fn(DeviceId, u16) -> Option<u16>,
    ) {
        let mut state = self.lock();
        let old_slots = std::mem::take(&mut state.slots);
        let old_removed = std::mem::take(&mut state.removed);
        let old_seen = std::mem::take(&mut state.seen);
        let mut slots = vec![Slot::new(); new_len];
        let mut removed = vec![None; new_len];
        let mut seen = vec![false; new_len];
        let mut taken = vec![false; new_len];
        let mut count = 0;
        for (i, mut slot) in old_slots.into_iter().enumerate() {
            let Some(to) = map(DeviceId(i as u32))
                .map(|d| d.0 as usize)
                .filter(|&d| d < new_len && !taken[d])
            else {
                continue;
            };
            taken[to] = true;
            slot.retain(|b| {
                if b.device_named {
                    return true;
                }
                match line(DeviceId(i as u32), b.line) {
                    Some(l) => {
                        b.line = l;
                        true
                    }
                    None => false,
                }
            });
            release_spill(&mut slot);
            count += slot.len();
            slots[to] = slot;
            removed[to] = old_removed[i];
            seen[to] = old_seen[i];
        }
        state.expirations = slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| earliest(s).map(|at| (at, DeviceId(i as u32))))
            .collect();
        state.slots = slots;
        state.removed = removed;
        state.seen = seen;
        state.count = count;
        drop(state);
        self.shared.expiry_changed.notify_one();
    }

    /// Removes expired bindings; returns the next expiry, if any.
    pub fn purge_expired(&self, now: Instant) -> Option<Instant> {
        let mut state = self.lock();
        while let Some(&(at, device)) = state.expirations.first() {
            if at > now {
                return Some(at);
            }
            // The entry goes whatever the slot holds and the slot's real earliest expiry (after
            // `now`, once pruned) goes back: each turn of the loop makes progress even if an
            // entry was stale.
            state.expirations.pop_first();
            let idx = device.0 as usize;
            state.prune(idx, now);
            if let Some(next) = earliest(&state.slots[idx]) {
                state.expirations.insert((next, device));
            }
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
    /// Drops the slot's expired bindings; returns the slot's earliest expiry as indexed
    /// before, for [`Self::reindex`].
    fn prune(&mut self, idx: usize, now: Instant) -> Option<Instant> {
        let slot = &mut self.slots[idx];
        let before = earliest(slot);
        let len = slot.len();
        slot.retain(|b| b.expires_at > now);
        self.count -= len - slot.len();
        release_spill(slot);
        before
    }

    /// Puts the slot's earliest expiry in the index in place of `before`; true when the
    /// index's first entry moved earlier (the purge task must wake).
    fn reindex(&mut self, device: DeviceId, before: Option<Instant>) -> bool {
        let after = earliest(&self.slots[device.0 as usize]);
        if before == after {
            return false;
        }
        if let Some(at) = before {
            self.expirations.remove(&(at, device));
        }
        let Some(at) = after else { return false };
        let first = self.expirations.first().map(|e| e.0);
        self.expirations.insert((at, device));
        first.is_none_or(|f| at < f)
    }

    /// RFC 3261 §10.3 step 7 for a binding that is gone: a request on the Call-ID of the
    /// last removal must be newer than it.
    fn check_tombstone(&self, idx: usize, new: &Binding, now: Instant) -> Result<(), StoreError> {
        match &self.removed[idx] {
            Some(t)
                if now < t.until
                    && t.call_id == call_id_hash(&new.call_id)
                    && new.cseq <= t.cseq =>
            {
                Err(StoreError::OutOfOrder {
                    current: t.cseq,
                    got: new.cseq,
                })
            }
            _ => Ok(()),
        }
    }

    /// Keeps `t` as the device's last removal. A slot has room for one: the Cisco client's
    /// removal takes it (`cisco`), but an AOR client's does not push out another client's that
    /// still matters. An AOR binding's delayed REGISTER is then not caught; RFC 3261 asks for
    /// no memory of removed bindings, and UCM's one-client rule is the one this guards.
    fn remember_removal(&mut self, idx: usize, t: Tombstone, now: Instant, cisco: bool) {
        let keep = !cisco
            && self.removed[idx].is_some_and(|old| old.call_id != t.call_id && now < old.until);
        if !keep {
            self.removed[idx] = Some(t);
        }
    }

    /// A newer request on the removal's Call-ID has registered: the tombstone has done its job.
    /// Another client's request, or an older one of this client, leaves it. The Call-ID is
    /// hashed only when there is a tombstone: the Cisco refresh passes here every time.
    fn clear_tombstone(&mut self, idx: usize, call_id: &str, cseq: u32) {
        if self.removed[idx].is_some() {
            self.clear_tombstone_hashed(idx, call_id_hash(call_id), cseq);
        }
    }

    fn clear_tombstone_hashed(&mut self, idx: usize, call_id: u64, cseq: u32) {
        if self.removed[idx].is_some_and(|t| t.call_id == call_id && cseq > t.cseq) {
            self.removed[idx] = None;
        }
    }
}

fn earliest(slot: &Slot) -> Option<Instant> {
    slot.iter().map(|b| b.expires_at).min()
}

/// A slot that spilled to the heap and is back to what fits inline gives its allocation back:
/// a device whose AOR once had many bindings does not keep their room for good.
fn release_spill(slot: &mut Slot) {
    if slot.spilled() && slot.len() <= slot.inline_size() {
        slot.shrink_to_fit();
    }
}

fn listing(slot: &Slot, line: u16, now: Instant) -> Vec<Listed> {
    let shown = |b: &&Binding| b.expires_at > now && (b.device_named || b.line == line);
    let mut out: Vec<Listed> = slot
        .iter()
        .filter(shown)
        .map(|b| {
            let left = b.expires_at.saturating_duration_since(now);
            Listed {
                contact_uri: b.contact_uri.clone(),
                expires_in: left.as_secs() + u64::from(left.subsec_nanos() > 0),
                q: b.q,
            }
        })
        .collect();
    // The Cisco binding first, then the AOR's in the order they were added.
    if let Some(p) = slot.iter().filter(shown).position(|b| b.device_named) {
        out[..=p].rotate_right(1);
    }
    out
}

/// `Contact: *`: removes every AOR binding (RFC 3261 §10.3 step 6: one on the request's
/// Call-ID only if the request is newer), and the Cisco binding if it is this client's
/// (same Call-ID); another Cisco client's binding is not this client's to remove.
fn remove_all(
    state: &mut State,
    idx: usize,
    request: &Binding,
    now: Instant,
) -> Result<(), StoreError> {
    let wildcard = Update {
        binding: request.clone(),
        force: false,
        wildcard: true,
    };
    let mut remove: SmallVec<[bool; 4]> = SmallVec::with_capacity(state.slots[idx].len());
    for b in &state.slots[idx] {
        remove.push(if b.device_named {
            match relate(b, &wildcard) {
                Ok(Relation::SameClient | Relation::TakenOver) => true,
                Ok(Relation::Retransmission) | Err(StoreError::ActiveForAnotherClient) => false,
                Err(e) => return Err(e),
            }
        } else if b.line != request.line {
            // Another DN of the device: another AOR.
            false
        } else {
            if b.call_id == request.call_id && request.cseq <= b.cseq {
                return Err(StoreError::OutOfOrder {
                    current: b.cseq,
                    got: request.cseq,
                });
            }
            true
        });
    }
    let mut until: Option<Instant> = None;
    let mut cisco = false;
    for (b, _) in state.slots[idx].iter_mut().zip(remove).filter(|(_, r)| *r) {
        until = Some(until.map_or(b.expires_at, |u| u.max(b.expires_at)));
        cisco |= b.device_named;
        b.expires_at = now;
    }
    let Some(until) = until else { return Ok(()) };
    state.prune(idx, now);
    let t = Tombstone {
        call_id: call_id_hash(&request.call_id),
        cseq: request.cseq,
        until,
    };
    state.remember_removal(idx, t, now, cisco);
    Ok(())
}

/// Whether an existing AOR binding is the one a new Contact names: the same `+sip.instance`
/// when both have one (a client that moved keeps it), else equal Contact URIs. The stored URI
/// is parsed only when its short key matches, which different clients' Contacts seldom do.
fn same_binding(cur: &Binding, new: &Binding, key: &UriKey) -> bool {
    match (&cur.instance, &new.instance) {
        (Some(x), Some(y)) => x == y,
        _ => cur.uri_key == key.short() && UriKey::new(&cur.contact_uri).equals(key),
    }
}

/// [`same_binding`] for two Contacts of one request: both keys are at hand, nothing is parsed.
fn same_new_binding(a: (&Binding, &UriKey), b: (&Binding, &UriKey)) -> bool {
    match (&a.0.instance, &b.0.instance) {
        (Some(x), Some(y)) => x == y,
        _ => a.1.equals(b.1),
    }
}

/// Parameters RFC 3261 §19.1.4 compares when either URI has them.
const MUST_MATCH: [&str; 5] = ["user", "ttl", "method", "maddr", "transport"];

/// A Contact URI reduced for RFC 3261 §19.1.4 comparison, made once per Contact (outside the
/// store's lock): `strong` hashes what must be equal (scheme and host case-insensitively,
/// user, port, and the `user`, `ttl`, `method`, `maddr`, `transport` parameters, absent or
/// not); `params` hashes every other parameter (name and value case-insensitively, the first
/// of a name), sorted by name, since those must agree only when both URIs have them. That
/// rule is not transitive, so no single key can stand for a URI. Hashes are keyed per process
/// so a client cannot craft a collision.
#[derive(Debug, Clone)]
pub struct UriKey {
    strong: u64,
    params: SmallVec<[(u64, Option<u64>); 2]>,
}

impl UriKey {
    /// The key of a URI; one that does not parse equals only itself, byte for byte.
    pub fn new(uri: &str) -> Self {
        match grammar::parse_sip_uri(uri) {
            Ok(parsed) => Self::of(&parsed),
            Err(_) => Self {
                strong: hash_of(&(1u8, uri)),
                params: SmallVec::new(),
            },
        }
    }

    pub fn of(uri: &grammar::SipUri<'_>) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let lower = |h: &mut dyn Hasher, s: &str| {
            for b in s.bytes() {
                h.write_u8(b.to_ascii_lowercase());
            }
            h.write_u8(0xff);
        };
        let mut h = KEYS.build_hasher();
        h.write_u8(0);
        lower(&mut h, uri.scheme);
        match uri.user {
            Some(u) => {
                h.write_u8(1);
                h.write(u.as_bytes());
                h.write_u8(0xff);
            }
            None => h.write_u8(0),
        }
        lower(&mut h, uri.host);
        h.write_u32(uri.port.map_or(u32::MAX, u32::from));
        for name in MUST_MATCH {
            match uri.params.get(name) {
                None => h.write_u8(0),
                Some(None) => h.write_u8(1),
                Some(Some(v)) => {
                    h.write_u8(2);
                    lower(&mut h, v);
                }
            }
        }
        let strong = h.finish();
        let mut params: SmallVec<[(u64, Option<u64>); 2]> = SmallVec::new();
        for (name, _) in uri.params.iter() {
            if MUST_MATCH.iter().any(|m| m.eq_ignore_ascii_case(name)) {
                continue;
            }
            let mut h = KEYS.build_hasher();
            lower(&mut h, name);
            let name_hash = h.finish();
            if params.iter().any(|(n, _)| *n == name_hash) {
                continue;
            }
            let value = uri.params.get(name).flatten().map(|v| {
                let mut h = KEYS.build_hasher();
                lower(&mut h, v);
                h.finish()
            });
            params.push((name_hash, value));
        }
        params.sort_unstable_by_key(|(n, _)| *n);
        Self { strong, params }
    }

    /// What a binding keeps of the key to skip most comparisons.
    pub fn short(&self) -> u32 {
        // Truncation is the point: a binding keeps 4 bytes, and a match is confirmed in full.
        self.strong as u32
    }

    /// RFC 3261 §19.1.4 equality of the two URIs.
    pub fn equals(&self, other: &Self) -> bool {
        if self.strong != other.strong {
            return false;
        }
        // Both sorted by name: a merge finds the names both have.
        let (mut a, mut b) = (
            self.params.iter().peekable(),
            other.params.iter().peekable(),
        );
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            match x.0.cmp(&y.0) {
                std::cmp::Ordering::Less => {
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    if x.1 != y.1 {
                        return false;
                    }
                    a.next();
                    b.next();
                }
            }
        }
        true
    }
}

static KEYS: std::sync::LazyLock<std::hash::RandomState> =
    std::sync::LazyLock::new(std::hash::RandomState::new);

fn hash_of(value: &impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher;
    KEYS.hash_one(value)
}

/// SIP URI equality, RFC 3261 §19.1.4: scheme and host case-insensitive, user case-sensitive,
/// the port only equal to itself (an absent port is not 5060), and the `user`, `ttl`,
/// `method`, `maddr` and `transport` parameters equal when either URI has them; other
/// parameters only when both have them. `%HH` escapes are compared as written. A URI that
/// does not parse equals only itself, byte for byte.
pub fn uri_eq(a: &str, b: &str) -> bool {
    UriKey::new(a).equals(&UriKey::new(b))
}

/// A client's removal of a binding: Call-ID (hashed), CSeq, and until when it matters (the
/// removed binding's own expiry: after it, an old REGISTER is as good as a new one).
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

/// How a request relates to the device's live Cisco binding.
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
            device_named: true,
            q: None,
            line: 0,
            uri_key: 0,
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
            device_named: true,
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

    fn aor(uri: &str, call_id: &str, cseq: u32, expires_at: Instant) -> Binding {
        Binding {
            contact_uri: uri.into(),
            device_named: false,
            uri_key: UriKey::new(uri).short(),
            ..binding(None, call_id, cseq, expires_at)
        }
    }

    /// The Contacts of one request, keyed as the registrar keys them.
    fn keyed(bindings: Vec<Binding>) -> AorUpdate {
        AorUpdate::Contacts(
            bindings
                .into_iter()
                .map(|b| {
                    let key = UriKey::new(&b.contact_uri);
                    (b, key)
                })
                .collect(),
        )
    }

    fn uris(listed: &[Listed]) -> Vec<(&str, u64)> {
        listed
            .iter()
            .map(|l| (&*l.contact_uri, l.expires_in))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn aor_bindings_are_added_refreshed_and_removed_one_by_one() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let secs = |s| now + Duration::from_secs(s);
        let two = keyed(vec![
            aor("sip:a@10.0.0.1:5060", "c1", 1, secs(60)),
            aor("sip:b@10.0.0.2", "c1", 1, secs(90)),
        ]);
        let listed = store.update_aor(D, two, now).unwrap();
        assert_eq!(
            uris(&listed),
            [("sip:a@10.0.0.1:5060", 60), ("sip:b@10.0.0.2", 90)]
        );
        assert_eq!(store.len(), 2);

        // Refresh one: an equal URI in another spelling (RFC 3261 §19.1.4).
        let refresh = keyed(vec![aor("SIP:a@10.0.0.1:5060", "c1", 2, secs(120))]);
        let listed = store.update_aor(D, refresh, now).unwrap();
        assert_eq!(
            uris(&listed),
            [("SIP:a@10.0.0.1:5060", 120), ("sip:b@10.0.0.2", 90)]
        );

        // Remove the other: the first stays.
        let off = keyed(vec![aor("sip:b@10.0.0.2", "c1", 3, now)]);
        let listed = store.update_aor(D, off, now).unwrap();
        assert_eq!(uris(&listed), [("SIP:a@10.0.0.1:5060", 120)]);
        assert_eq!(store.len(), 1);

        // The removed binding's delayed older REGISTER does not bring it back.
        let late = keyed(vec![aor("sip:b@10.0.0.2", "c1", 2, secs(90))]);
        assert_eq!(
            store.update_aor(D, late, now),
            Err(StoreError::OutOfOrder { current: 3, got: 2 })
        );

        // A client restarting (new Call-ID, same Contact) replaces its binding.
        let restart = keyed(vec![aor("sip:a@10.0.0.1:5060", "c2", 1, secs(30))]);
        let listed = store.update_aor(D, restart, now).unwrap();
        assert_eq!(uris(&listed), [("sip:a@10.0.0.1:5060", 30)]);
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_refuses_the_whole_request_and_counts_removals() {
        let store = Store::with_limits(3, 100, 2);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        store
            .update_aor(D, keyed(vec![aor("sip:a@h", "c1", 1, exp)]), now)
            .unwrap();
        let two_more = keyed(vec![
            aor("sip:b@h", "c2", 1, exp),
            aor("sip:c@h", "c2", 1, exp),
        ]);
        assert_eq!(
            store.update_aor(D, two_more, now),
            Err(StoreError::TooManyBindings { limit: 2 })
        );
        assert_eq!(
            uris(&store.bindings(D, 0, now)),
            [("sip:a@h", 60)],
            "nothing applied"
        );
        // Removing one while adding two fits.
        let swap = keyed(vec![
            aor("sip:a@h", "c2", 1, now),
            aor("sip:b@h", "c2", 1, exp),
            aor("sip:c@h", "c2", 1, exp),
        ]);
        let listed = store.update_aor(D, swap, now).unwrap();
        assert_eq!(uris(&listed), [("sip:b@h", 60), ("sip:c@h", 60)]);
        // A Cisco client's binding does not count toward the AOR's cap.
        store
            .register(D, update(binding(Some("i1"), "j1", 1, exp), false), now)
            .unwrap();
        assert_eq!(store.bindings(D, 0, now).len(), 3);
        assert_eq!(store.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_contacts_and_out_of_order_abort_everything() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        store
            .update_aor(D, keyed(vec![aor("sip:a@h", "c1", 5, exp)]), now)
            .unwrap();
        let dup = keyed(vec![
            aor("sip:x@h", "c1", 6, exp),
            aor("sip:x@H", "c1", 6, exp),
        ]);
        assert_eq!(
            store.update_aor(D, dup, now),
            Err(StoreError::DuplicateContact)
        );
        let stale = keyed(vec![
            aor("sip:new@h", "c1", 4, exp),
            aor("sip:a@h", "c1", 4, exp),
        ]);
        assert_eq!(
            store.update_aor(D, stale, now),
            Err(StoreError::OutOfOrder { current: 5, got: 4 })
        );
        assert_eq!(store.len(), 1, "the first Contact was not added");
    }

    #[tokio::test(start_paused = true)]
    async fn star_removes_the_aor_and_only_this_clients_cisco_binding() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        store
            .register(D, update(binding(Some("i1"), "jabber", 1, exp), false), now)
            .unwrap();
        store
            .update_aor(
                D,
                keyed(vec![
                    aor("sip:a@h", "c1", 1, exp),
                    aor("sip:b@h", "c2", 1, exp),
                ]),
                now,
            )
            .unwrap();
        assert_eq!(store.len(), 3);
        // On c1 with an older CSeq: refused, nothing removed.
        let stale = AorUpdate::RemoveAll(aor("", "c1", 1, now));
        assert_eq!(
            store.update_aor(D, stale, now),
            Err(StoreError::OutOfOrder { current: 1, got: 1 })
        );
        let star = AorUpdate::RemoveAll(aor("", "c1", 2, now));
        let listed = store.update_aor(D, star, now).unwrap();
        assert_eq!(uris(&listed), [("sip:a@127.0.0.1:5000", 60)]);
        assert!(store.lookup(D, now).unwrap().device_named);
        // Jabber's own `*` (its Call-ID) removes its binding.
        let star = AorUpdate::RemoveAll(aor("", "jabber", 2, now));
        assert!(store.update_aor(D, star, now).unwrap().is_empty());
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn aor_bindings_expire_one_by_one() {
        let store = Store::with_limits(3, 100, 10);
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(store.clone().purge_task(cancel.clone()));
        let now = Instant::now();
        store
            .update_aor(
                D,
                keyed(vec![
                    aor("sip:a@h", "c1", 1, now + Duration::from_secs(90)),
                    aor("sip:b@h", "c1", 1, now + Duration::from_secs(30)),
                ]),
                now,
            )
            .unwrap();
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert_eq!(store.len(), 1);
        assert_eq!(
            uris(&store.bindings(D, 0, Instant::now())),
            [("sip:a@h", 59)]
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(store.len(), 0);
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn rekey_moves_bindings_and_drops_removed_devices() {
        let store = Store::new(3, 100);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        store
            .register(
                DeviceId(0),
                update(binding(Some("i0"), "c0", 1, exp), false),
                now,
            )
            .unwrap();
        store
            .update_aor(
                DeviceId(1),
                keyed(vec![
                    aor("sip:a@h", "c1", 1, exp),
                    aor("sip:b@h", "c1", 1, now + Duration::from_secs(10)),
                ]),
                now,
            )
            .unwrap();
        store
            .register(
                DeviceId(2),
                update(binding(Some("i2"), "c2", 1, exp), false),
                now,
            )
            .unwrap();
        assert_eq!(store.len(), 4);
        // Device 0 left the configuration, 1 became 3, 2 became 0, in a store of 4.
        store.rekey(
            4,
            |d| match d.0 {
                1 => Some(DeviceId(3)),
                2 => Some(DeviceId(0)),
                _ => None,
            },
            |_, l| Some(l),
        );
        assert_eq!(store.len(), 3);
        assert_eq!(
            store.lookup(DeviceId(0), now).unwrap().instance.as_deref(),
            Some("i2")
        );
        assert_eq!(store.bindings(DeviceId(1), 0, now), []);
        assert_eq!(store.bindings(DeviceId(3), 0, now).len(), 2);
        // The seen flag moved with the device: no second `;x-cisco-newreg`.
        let r = store.register(
            DeviceId(0),
            update(binding(Some("i2"), "c2", 2, exp), false),
            now,
        );
        assert_eq!(r, Ok(Registered::Refreshed));
        // The expiry index moved too.
        assert_eq!(
            store.purge_expired(now + Duration::from_secs(11)),
            Some(exp)
        );
        assert_eq!(store.len(), 2);
        assert_eq!(store.purge_expired(exp), None);
        assert!(store.is_empty());
    }

    #[test]
    fn uri_equality_follows_rfc_3261() {
        let equal = [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:%61lice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            (
                "sip:carol@chicago.com;security=on",
                "sip:carol@chicago.com;newparam=5",
            ),
            ("SIPS:a@h:5061", "sips:a@H:5061"),
        ];
        for (a, b) in equal {
            assert!(uri_eq(a, b), "{a} == {b}");
            assert!(uri_eq(b, a), "{b} == {a}");
        }
        let different = [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:carol@chicago.com;security=on",
                "sip:carol@chicago.com;security=off",
            ),
            ("sip:a@h", "sips:a@h"),
            ("tel:123", "tel:1234"),
        ];
        for (a, b) in different {
            assert!(!uri_eq(a, b), "{a} != {b}");
            assert!(!uri_eq(b, a), "{b} != {a}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retransmitted_removal_is_answered_again_not_refused() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        let add = || keyed(vec![aor("sip:a@h", "c1", 1, exp)]);
        store.update_aor(D, add(), now).unwrap();
        // A retransmission of the adding request changes nothing.
        assert_eq!(store.update_aor(D, add(), now).unwrap().len(), 1);
        let off = || keyed(vec![aor("sip:a@h", "c1", 2, now)]);
        assert_eq!(store.update_aor(D, off(), now), Ok(vec![]));
        assert_eq!(store.update_aor(D, off(), now), Ok(vec![]));
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn aor_bindings_do_not_use_up_the_devices_newreg() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        store
            .update_aor(D, keyed(vec![aor("sip:a@h", "c1", 1, exp)]), now)
            .unwrap();
        assert_eq!(
            store.register(D, update(binding(Some("i1"), "j1", 1, exp), false), now),
            Ok(Registered::New {
                first_since_start: true
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_aor_removal_does_not_forget_the_cisco_clients_removal() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(120);
        store
            .register(
                D,
                update(binding(Some("i1"), "jabber", 13, exp), false),
                now,
            )
            .unwrap();
        let off = Update {
            binding: binding(Some("i1"), "jabber", 14, now),
            force: false,
            wildcard: false,
        };
        assert_eq!(store.unregister(D, &off, now), Ok(true));
        let aor_add = keyed(vec![aor("sip:a@h", "c1", 1, exp)]);
        store.update_aor(D, aor_add, now).unwrap();
        let aor_off = keyed(vec![aor("sip:a@h", "c1", 2, now)]);
        store.update_aor(D, aor_off, now).unwrap();
        assert_eq!(
            store.register(
                D,
                update(binding(Some("i1"), "jabber", 13, exp), false),
                now
            ),
            Err(StoreError::OutOfOrder {
                current: 14,
                got: 13
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_with_an_instance_keeps_one_binding_when_its_address_changes() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        let with_instance = |uri: &str, cseq| Binding {
            instance: Some("<urn:uuid:1>".into()),
            ..aor(uri, "c1", cseq, exp)
        };
        let first = keyed(vec![with_instance("sip:u@10.0.0.1:5060", 1)]);
        store.update_aor(D, first, now).unwrap();
        let moved = keyed(vec![with_instance("sip:u@192.0.2.7:40000", 2)]);
        let listed = store.update_aor(D, moved, now).unwrap();
        assert_eq!(uris(&listed), [("sip:u@192.0.2.7:40000", 60)]);
        // Without the instance, the old address is another binding.
        let other = keyed(vec![aor("sip:u@10.0.0.1:5060", "c9", 1, exp)]);
        assert_eq!(store.update_aor(D, other, now).unwrap().len(), 2);
    }

    /// Runs `f` on a thread and fails if it does not return within 10 s: a regression into an
    /// endless loop fails the test instead of hanging it.
    fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("did not return: looping under the store's lock")
    }

    #[test]
    fn a_refused_register_after_a_prune_leaves_no_stale_expiry_entry() {
        let store = Store::with_limits(3, 100, 10);
        let t = Instant::now();
        let secs = move |s| t + Duration::from_secs(s);
        store
            .update_aor(D, keyed(vec![aor("sip:a@h", "c1", 1, secs(60))]), t)
            .unwrap();
        store
            .register(D, update(binding(Some("i1"), "j1", 1, secs(120)), false), t)
            .unwrap();
        // At t+60 the AOR binding is pruned, then the other client is refused.
        assert_eq!(
            store.register(
                D,
                update(binding(Some("i2"), "j2", 1, secs(180)), false),
                secs(60)
            ),
            Err(StoreError::ActiveForAnotherClient)
        );
        let purger = store.clone();
        let next = within_10s(move || purger.purge_expired(secs(61)));
        assert_eq!(next, Some(secs(120)));
        assert_eq!(store.len(), 1);
        let purger = store.clone();
        assert_eq!(within_10s(move || purger.purge_expired(secs(121))), None);
        assert!(store.is_empty());
    }

    #[test]
    fn the_purge_heals_an_index_entry_that_is_stale() {
        let store = Store::with_limits(3, 100, 10);
        let t = Instant::now();
        let secs = move |s| t + Duration::from_secs(s);
        store
            .update_aor(D, keyed(vec![aor("sip:a@h", "c1", 1, secs(60))]), t)
            .unwrap();
        // An entry earlier than anything in the slot, as a missed reindex would leave.
        store.lock().expirations.insert((secs(10), D));
        let purger = store.clone();
        assert_eq!(
            within_10s(move || purger.purge_expired(secs(11))),
            Some(secs(60))
        );
        assert_eq!(store.len(), 1);
        assert_eq!(store.lock().expirations.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn more_contacts_than_the_cap_could_take_are_refused_whole() {
        let store = Store::with_limits(3, 100_000, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        assert_eq!(store.max_contacts_per_request(), 20);
        let many: Vec<Binding> = (0..6000)
            .map(|i| aor(&format!("sip:u{i}@10.0.0.1:5060"), "c1", 1, exp))
            .collect();
        assert_eq!(
            store.update_aor(D, keyed(many), now),
            Err(StoreError::TooManyBindings { limit: 10 })
        );
        // Ten removals of what is there and ten additions: the most a request can do.
        let ten = |from: usize, at| {
            (from..from + 10).map(move |i| aor(&format!("sip:u{i}@h"), "c1", 1, at))
        };
        store
            .update_aor(D, keyed(ten(0, exp).collect()), now)
            .unwrap();
        let swap: Vec<Binding> = (0..10)
            .map(|i| aor(&format!("sip:u{i}@h"), "c2", 1, now))
            .chain(ten(10, exp).map(|b| Binding {
                call_id: "c2".into(),
                ..b
            }))
            .collect();
        let listed = store.update_aor(D, keyed(swap), now).unwrap();
        assert_eq!(listed.len(), 10);
        assert_eq!(&*listed[0].contact_uri, "sip:u10@h");
    }

    #[tokio::test(start_paused = true)]
    async fn two_contacts_resolving_to_one_binding_are_refused() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        let with_instance = Binding {
            instance: Some("<urn:uuid:1>".into()),
            ..aor("sip:u@10.0.0.1", "c1", 1, exp)
        };
        store
            .update_aor(D, keyed(vec![with_instance.clone()]), now)
            .unwrap();
        // One Contact by instance (a new address), one by the old URI: both are the binding.
        for expires_at in [exp, now] {
            let both = keyed(vec![
                Binding {
                    contact_uri: "sip:u@192.0.2.7".into(),
                    uri_key: UriKey::new("sip:u@192.0.2.7").short(),
                    expires_at,
                    ..with_instance.clone()
                },
                aor("sip:u@10.0.0.1", "c2", 1, expires_at),
            ]);
            assert_eq!(
                store.update_aor(D, both, now),
                Err(StoreError::DuplicateContact)
            );
        }
        assert_eq!(uris(&store.bindings(D, 0, now)), [("sip:u@10.0.0.1", 60)]);
    }

    #[tokio::test(start_paused = true)]
    async fn each_line_of_a_device_is_its_own_aor() {
        let store = Store::with_limits(3, 100, 1);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        let on = |line, uri: &str, call_id: &str, cseq, at| Binding {
            line,
            ..aor(uri, call_id, cseq, at)
        };
        store
            .register(D, update(binding(Some("i1"), "jabber", 1, exp), false), now)
            .unwrap();
        store
            .update_aor(D, keyed(vec![on(0, "sip:x@h", "c1", 1, exp)]), now)
            .unwrap();
        // The same URI for the other line is another binding, under that line's own cap.
        let listed = store
            .update_aor(D, keyed(vec![on(1, "sip:x@h", "c2", 1, exp)]), now)
            .unwrap();
        assert_eq!(
            uris(&listed),
            [("sip:a@127.0.0.1:5000", 60), ("sip:x@h", 60)]
        );
        assert_eq!(store.len(), 3);
        assert_eq!(store.bindings(D, 0, now).len(), 2);
        // `*` for line 1 leaves line 0's binding and the device's Cisco binding.
        let star = AorUpdate::RemoveAll(on(1, "", "c2", 2, now));
        assert_eq!(store.update_aor(D, star, now).unwrap().len(), 1);
        assert_eq!(
            uris(&store.bindings(D, 0, now)),
            [("sip:a@127.0.0.1:5000", 60), ("sip:x@h", 60)]
        );
        assert_eq!(store.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_request_on_the_removals_call_id_keeps_the_tombstone() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(120);
        store
            .register(D, update(binding(Some("i1"), "c1", 13, exp), false), now)
            .unwrap();
        let off = update(binding(Some("i1"), "c1", 14, now), false);
        assert_eq!(store.unregister(D, &off, now), Ok(true));
        // Another client takes the device (no tombstone check: the Cisco binding is new)...
        store
            .register(D, update(binding(Some("i2"), "c2", 1, exp), false), now)
            .unwrap();
        // ...and a forced takeover on c1 with an older CSeq does not wipe c1's removal.
        store
            .register(D, update(binding(Some("i1"), "c1", 12, exp), true), now)
            .unwrap();
        assert!(store.lock().removed[D.0 as usize].is_some());
        store
            .register(D, update(binding(Some("i1"), "c1", 15, exp), false), now)
            .unwrap();
        assert!(store.lock().removed[D.0 as usize].is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_that_spilled_gives_its_heap_back() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        let three = || {
            keyed(vec![
                aor("sip:a@h", "c1", 1, exp),
                aor("sip:b@h", "c1", 1, now + Duration::from_secs(10)),
                aor("sip:c@h", "c1", 1, now + Duration::from_secs(10)),
            ])
        };
        store.update_aor(D, three(), now).unwrap();
        assert!(store.lock().slots[D.0 as usize].spilled());
        store.purge_expired(now + Duration::from_secs(10));
        assert_eq!(store.len(), 1);
        assert!(!store.lock().slots[D.0 as usize].spilled());
    }

    #[tokio::test(start_paused = true)]
    async fn seconds_left_are_rounded_up() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        store
            .update_aor(
                D,
                keyed(vec![aor("sip:a@h", "c1", 1, now + Duration::from_secs(60))]),
                now,
            )
            .unwrap();
        let later = now + Duration::from_millis(59_500);
        assert_eq!(uris(&store.bindings(D, 0, later)), [("sip:a@h", 1)]);
        let later = now + Duration::from_millis(500);
        assert_eq!(uris(&store.bindings(D, 0, later)), [("sip:a@h", 60)]);
    }

    #[tokio::test(start_paused = true)]
    async fn rekey_moves_aor_bindings_to_their_dns_new_line() {
        let store = Store::with_limits(3, 100, 10);
        let now = Instant::now();
        let exp = now + Duration::from_secs(60);
        let on = |line, uri: &str| Binding {
            line,
            ..aor(uri, "c1", 1, exp)
        };
        store
            .register(D, update(binding(Some("i1"), "jabber", 1, exp), false), now)
            .unwrap();
        store
            .update_aor(D, keyed(vec![on(0, "sip:first@h")]), now)
            .unwrap();
        store
            .update_aor(D, keyed(vec![on(1, "sip:second@h")]), now)
            .unwrap();
        // The reload swapped the device's two lines and dropped the first DN.
        store.rekey(3, Some, |_, l| (l == 1).then_some(0));
        assert_eq!(
            uris(&store.bindings(D, 0, now)),
            [("sip:a@127.0.0.1:5000", 60), ("sip:second@h", 60)]
        );
        assert_eq!(store.len(), 2);
    }
}
