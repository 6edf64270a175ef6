//! How many lines a kind of event may write to the server's log at INFO: a token bucket
//! (`burst` at once, then `per_second`); past it the event is logged at DEBUG, and the
//! next line at INFO says how many were held back. For events an unauthenticated peer
//! can cause at will — a refused TLS handshake costs it one connection —, so a flood of
//! them cannot fill the log (an outside pass: 2,582 lines a second from one process).
//! Every such event is counted in the metrics all the same.

use std::{
    sync::{LazyLock, Mutex, PoisonError},
    time::Instant,
};

use crate::budgets::Budgets;

/// A budget of INFO lines for one kind of event: one [`Budgets`] bucket, and a count of
/// the events held back since the last INFO line.
pub(crate) struct LogBudget {
    lines: Budgets,
    held: Mutex<u64>,
}

/// Refused and timed-out TLS handshakes, from every peer.
pub(crate) static HANDSHAKE_REFUSALS: LazyLock<LogBudget> =
    LazyLock::new(|| LogBudget::new(60, 1.0));

/// The one key of the one bucket.
const ALL: &str = "";

impl LogBudget {
    pub(crate) fn new(burst: u32, per_second: f64) -> Self {
        Self {
            lines: Budgets::new(burst, per_second),
            held: Mutex::new(0),
        }
    }

    /// `Some(held back)` when this event may be logged at INFO — with how many were
    /// logged at DEBUG only since the last one that was —, `None` when it goes to DEBUG.
    pub(crate) fn take(&self) -> Option<u64> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Option<u64> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if self.lines.take(ALL, now).is_ok() {
            Some(std::mem::take(&mut *held))
        } else {
            *held += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::LogBudget;

    #[test]
    fn a_burst_then_a_steady_rate_and_what_was_held_back_is_told() {
        let budget = LogBudget::new(3, 1.0);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(budget.take_at(start), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(budget.take_at(start), None);
        }
        assert_eq!(budget.take_at(start + Duration::from_millis(500)), None);
        assert_eq!(budget.take_at(start + Duration::from_secs(1)), Some(6));
        assert_eq!(budget.take_at(start + Duration::from_secs(1)), None);
    }
}
