//! The bytes in flight: what the listener's connections hold of messages not yet
//! answered (read buffers and the frames being ingested), bounded across all
//! connections by `mllp.max_bytes_in_flight`.
//!
//! Each connection may hold [`FREE_PER_CONNECTION`] without asking, so ordinary
//! messages (a few kilobytes) never wait on the budget; a connection whose buffer
//! must grow beyond that takes the difference from the shared budget first, waiting
//! for other connections to give some back, at most `bytes_in_flight_wait` in all per
//! message. While it waits it reads nothing, so TCP holds the sender back; if the wait
//! runs out, the listener gives up on that message and answers it `AR` (send again
//! later).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// What one connection may buffer without drawing on the shared budget.
pub(crate) const FREE_PER_CONNECTION: usize = 32 * 1024;

/// The shared budget.
#[derive(Debug)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
}

/// One connection's part of the budget; given back when dropped.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<Budget>,
    /// Bytes taken from the budget (beyond the free part).
    held: usize,
}

impl Budget {
    /// A budget of `bytes` (capped at what a semaphore can count).
    pub(crate) fn new(bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        })
    }

    /// A new connection's share, holding nothing yet.
    pub(crate) fn share(self: &Arc<Self>) -> Share {
        Share {
            budget: self.clone(),
            held: 0,
        }
    }

    /// Bytes nobody holds now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

impl Share {
    /// Makes sure this connection may hold `bytes` in all, waiting up to `wait` for
    /// the difference; `false` if it did not come in time (what was held before is
    /// still held).
    pub(crate) async fn hold(&mut self, bytes: usize, wait: Duration) -> bool {
        let wanted = bytes.saturating_sub(FREE_PER_CONNECTION);
        if wanted <= self.held {
            return true;
        }
        let Ok(more) = u32::try_from(wanted - self.held) else {
            return false;
        };
        let acquire = self.budget.bytes.acquire_many(more);
        match tokio::time::timeout(wait, acquire).await {
            Ok(Ok(permit)) => {
                permit.forget();
                self.held = wanted;
                true
            }
            Ok(Err(_)) | Err(_) => false,
        }
    }

    /// Gives back what this connection holds beyond `bytes`.
    pub(crate) fn keep(&mut self, bytes: usize) {
        let wanted = bytes.saturating_sub(FREE_PER_CONNECTION);
        if self.held > wanted {
            self.budget.bytes.add_permits(self.held - wanted);
            self.held = wanted;
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.keep(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;
    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn small_buffers_are_free_and_large_ones_draw_on_the_budget() {
        let budget = Budget::new(2 * MIB);
        let mut a = budget.share();
        assert!(a.hold(FREE_PER_CONNECTION, WAIT).await);
        assert_eq!(budget.available(), 2 * MIB);
        assert!(a.hold(FREE_PER_CONNECTION + MIB, WAIT).await);
        assert_eq!(budget.available(), MIB);
        a.keep(FREE_PER_CONNECTION + 1024);
        assert_eq!(budget.available(), 2 * MIB - 1024);
        drop(a);
        assert_eq!(budget.available(), 2 * MIB);
    }

    #[tokio::test]
    async fn a_connection_over_the_budget_waits_then_gets_what_another_gives_back() {
        let budget = Budget::new(MIB);
        let mut first = budget.share();
        assert!(first.hold(FREE_PER_CONNECTION + MIB, WAIT).await);
        let mut second = budget.share();
        let waiting =
            tokio::spawn(async move { second.hold(FREE_PER_CONNECTION + MIB, WAIT).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing is free yet");
        first.keep(0);
        assert!(waiting.await.unwrap_or_else(|e| panic!("{e}")));
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_keeps_what_was_held() {
        let budget = Budget::new(MIB);
        let mut first = budget.share();
        assert!(first.hold(FREE_PER_CONNECTION + MIB / 2, WAIT).await);
        let mut second = budget.share();
        assert!(second.hold(FREE_PER_CONNECTION + MIB / 4, WAIT).await);
        assert!(
            !second
                .hold(FREE_PER_CONNECTION + MIB, Duration::from_millis(20))
                .await
        );
        assert_eq!(budget.available(), MIB / 4);
        drop((first, second));
        assert_eq!(budget.available(), MIB);
    }
}
