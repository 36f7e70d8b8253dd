//! Who may hold an MLLP connection: at most `max_connections` in all and
//! `max_per_peer` from one sender, so one client (a flood of idle connections, a
//! sender stuck reconnecting) cannot take the slots every other EHR needs.
//!
//! A sender is its IPv4 address, or its IPv6 /64 network (one host is normally
//! given a whole /64, so counting single IPv6 addresses would bound nothing).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How often, at most, a refused connection is logged (the rest are counted).
pub(crate) const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot is taken.
    Full,
    /// This sender holds as many connections as one sender may.
    PeerFull,
}

/// The connection slots, in all and per sender.
#[derive(Debug)]
pub(crate) struct Admission {
    max_connections: usize,
    max_per_peer: usize,
    state: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    open: usize,
    by_sender: HashMap<IpAddr, usize>,
}

/// A slot held by one connection; given back when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    sender: IpAddr,
}

impl Admission {
    pub(crate) fn new(max_connections: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            max_connections: max_connections.max(1),
            max_per_peer: max_per_peer.max(1),
            state: Mutex::new(Slots::default()),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a connection from `peer`, or says why there is none.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admitted, Refusal> {
        let sender = sender_of(peer);
        let mut slots = self.slots();
        if slots.open >= self.max_connections {
            return Err(Refusal::Full);
        }
        let held = slots.by_sender.entry(sender).or_insert(0);
        if *held >= self.max_per_peer {
            return Err(Refusal::PeerFull);
        }
        *held += 1;
        slots.open += 1;
        Ok(Admitted {
            admission: self.clone(),
            sender,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    pub(crate) fn open(&self) -> usize {
        self.slots().open
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut slots = self.admission.slots();
        slots.open = slots.open.saturating_sub(1);
        if let Some(held) = slots.by_sender.get_mut(&self.sender) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                slots.by_sender.remove(&self.sender);
            }
        }
    }
}

/// The key connections are counted under: an IPv4 address (also when it arrives
/// IPv4-mapped on an IPv6 socket), or an IPv6 address's /64.
fn sender_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// Logs refused connections at most once per [`REFUSAL_LOG_INTERVAL`], with how
/// many were refused since the last line: a flood must not flood the log too.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    state: Mutex<RefusalState>,
}

#[derive(Debug, Default)]
struct RefusalState {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    /// Counts a refusal; returns how many refusals the line to write now covers
    /// (this one included), or `None` while the last line is recent.
    pub(crate) fn refused(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.unlogged += 1;
        match state.last {
            Some(last) if now.duration_since(last) < REFUSAL_LOG_INTERVAL => None,
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.unlogged))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn one_sender_is_held_to_its_share_and_others_still_get_in() {
        let admission = Admission::new(10, 2);
        let a1 = admission.admit(ip("10.0.0.1"));
        let a2 = admission.admit(ip("10.0.0.1"));
        assert!(a1.is_ok() && a2.is_ok());
        assert_eq!(
            admission.admit(ip("10.0.0.1")).err(),
            Some(Refusal::PeerFull)
        );
        // The same address arriving IPv4-mapped is the same sender.
        assert_eq!(
            admission.admit(ip("::ffff:10.0.0.1")).err(),
            Some(Refusal::PeerFull)
        );
        let b = admission.admit(ip("10.0.0.2"));
        assert!(b.is_ok());
        assert_eq!(admission.open(), 3);
        drop(a1);
        assert!(admission.admit(ip("10.0.0.1")).is_ok());
        drop((a2, b));
        assert_eq!(admission.open(), 0);
    }

    #[test]
    fn the_total_bounds_every_sender_together() {
        let admission = Admission::new(3, 2);
        let held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|a| admission.admit(ip(a)))
            .collect();
        assert!(held.iter().all(Result::is_ok));
        assert_eq!(admission.admit(ip("10.0.0.4")).err(), Some(Refusal::Full));
    }

    #[test]
    fn ipv6_senders_are_counted_by_their_64() {
        let admission = Admission::new(10, 1);
        let _a = admission.admit(ip("2001:db8:1:2::1"));
        assert_eq!(
            admission.admit(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Refusal::PeerFull)
        );
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn refusals_are_logged_at_most_once_per_interval_with_a_count() {
        let log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.refused(start), Some(1));
        for i in 1..100 {
            assert_eq!(log.refused(start + Duration::from_millis(i)), None);
        }
        let later = start + REFUSAL_LOG_INTERVAL;
        assert_eq!(log.refused(later), Some(100), "99 held back plus this one");
        assert_eq!(log.refused(later), None);
    }
}
