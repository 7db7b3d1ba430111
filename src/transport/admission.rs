//! Who may open one more connection: the process-wide budget (`limits.max_connections`, sized to
//! the open-file limit) and the per-source cap (`limits.max_connections_per_source`), shared by
//! every stream listener of the process so one address cannot take the budget from the others
//! by spreading its connections over several ports.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared by all stream listeners; cheap to clone.
#[derive(Clone)]
pub struct Admission {
    process: Arc<Semaphore>,
    sources: Arc<Sources>,
}

struct Sources {
    cap: usize,
    // A plain mutex: held for one map operation, never across an await.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Process,
    Source,
}

impl Refusal {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::Process => "limits.max_connections reached",
            Self::Source => "limits.max_connections_per_source reached",
        }
    }
}

/// Held for the life of one connection; gives its places back when dropped.
pub(super) struct Ticket {
    _process: OwnedSemaphorePermit,
    _source: SourceSlot,
}

struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self
            .sources
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            // The map holds only sources with open connections: its size is bounded by the
            // connection budget, not by how many addresses ever connected.
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

impl Admission {
    pub fn new(max_connections: usize, max_per_source: usize) -> Self {
        Self {
            process: Arc::new(Semaphore::new(max_connections)),
            sources: Arc::new(Sources {
                cap: max_per_source,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A place for one more connection from `ip`, or why there is none.
    pub(super) fn admit(&self, ip: IpAddr) -> Result<Ticket, Refusal> {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d: one source either way.
        let ip = ip.to_canonical();
        let source = {
            let mut open = self
                .sources
                .open
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = open.entry(ip).or_insert(0);
            if *n >= self.sources.cap {
                return Err(Refusal::Source);
            }
            *n += 1;
            SourceSlot {
                sources: self.sources.clone(),
                ip,
            }
        };
        // On refusal `source` drops here and gives its place back.
        let process = self
            .process
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Process)?;
        Ok(Ticket {
            _process: process,
            _source: source,
        })
    }

    /// Connections open from `ip` now.
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        let open = self
            .sources
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

/// At most one log line per interval for a kind of event that a client can trigger at will
/// (refused connections): a flood must not turn into a flood of log lines. The lines that were
/// held back are counted in the next one.
pub(super) struct LogBudget {
    interval: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LogBudget {
    pub(super) fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    pub(super) fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.held_back += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.held_back))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_cap_counts_across_tickets_and_frees_on_drop() {
        let a = Admission::new(10, 2);
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t1 = a.admit(v4).unwrap();
        let t2 = a.admit(mapped).unwrap();
        assert_eq!(t2._source.ip, v4, "a mapped address is the IPv4 source");
        assert_eq!(a.admit(v4).err(), Some(Refusal::Source));
        let t3 = a.admit(other).unwrap();
        assert_eq!(a.open_from(v4), 2);
        drop(t1);
        assert_eq!(a.open_from(v4), 1);
        let _t4 = a.admit(v4).unwrap();
        drop((t2, t3));
        assert_eq!(a.open_from(other), 0);
        assert!(
            a.sources.open.lock().unwrap().len() == 1,
            "closed sources leave the map"
        );
    }

    #[test]
    fn process_budget_refusal_gives_the_source_place_back() {
        let a = Admission::new(1, 5);
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let _held = a.admit(ip).unwrap();
        assert_eq!(a.admit(ip).err(), Some(Refusal::Process));
        assert_eq!(a.open_from(ip), 1, "the refused connection holds no place");
    }

    #[test]
    fn log_budget_holds_back_within_the_interval_and_counts() {
        let mut b = LogBudget::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(b.allow(t0), Some(0));
        assert_eq!(b.allow(t0 + Duration::from_millis(10)), None);
        assert_eq!(b.allow(t0 + Duration::from_millis(900)), None);
        assert_eq!(b.allow(t0 + Duration::from_millis(1000)), Some(2));
        assert_eq!(b.allow(t0 + Duration::from_millis(1001)), None);
    }
}
