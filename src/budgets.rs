//! Per-principal budgets of calls that leave a durable trace: a token bucket for each
//! principal (`burst` at once, then `per_second`), remembered for a bounded number of
//! principals.
//!
//! Every audit record is a write and a leaf of the transparency log for good, so what a
//! caller in a loop can make the server record is bounded: refusals (`server/refusals.rs`)
//! and reads on record (`Context::take_read`) each draw on a budget of this kind, as do
//! lookups, the INFO lines a caller's refusals write, and ([`crate::log_budget`]) those of
//! refused handshakes.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// Principals whose budgets are remembered; past this they all start full again (there
/// are as many principals as certificates the operator issued).
const REMEMBERED: usize = 4096;

/// Calls of one kind each principal may have in progress at once.
pub(crate) struct InFlight {
    most: usize,
    counts: std::sync::Arc<Mutex<HashMap<String, usize>>>,
}

/// One call in progress, counted until dropped.
pub(crate) struct Entered {
    principal: String,
    counts: std::sync::Arc<Mutex<HashMap<String, usize>>>,
}

impl InFlight {
    pub(crate) fn new(most: usize) -> Self {
        Self {
            most: most.max(1),
            counts: std::sync::Arc::default(),
        }
    }

    /// One more call of `principal` in progress, unless it has `most` already.
    pub(crate) fn enter(&self, principal: &str) -> Option<Entered> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(principal.to_owned()).or_default();
        if *count >= self.most {
            return None;
        }
        *count += 1;
        Some(Entered {
            principal: principal.to_owned(),
            counts: self.counts.clone(),
        })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.principal) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.principal);
            }
        }
    }
}

/// One token bucket per principal.
pub(crate) struct Budgets {
    burst: f64,
    per_second: f64,
    /// Principal → what is left and when it was last used.
    left: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Budgets {
    /// Budgets of `burst` at once, regaining `per_second` (more than 0).
    pub(crate) fn new(burst: u32, per_second: f64) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: per_second.max(f64::MIN_POSITIVE),
            left: Mutex::default(),
        }
    }

    /// Takes one from `principal`'s budget, or says how long until it has one again.
    pub(crate) fn take(&self, principal: &str, now: Instant) -> Result<(), Duration> {
        let mut budgets = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        let left = self.settled(&mut budgets, principal, now);
        if *left >= 1.0 {
            *left -= 1.0;
            Ok(())
        } else {
            Err(self.wait(*left))
        }
    }

    /// What `principal`'s budget in `budgets` holds at `now`, counted up to then.
    fn settled<'b>(
        &self,
        budgets: &'b mut HashMap<String, (f64, Instant)>,
        principal: &str,
        now: Instant,
    ) -> &'b mut f64 {
        if budgets.len() >= REMEMBERED && !budgets.contains_key(principal) {
            budgets.clear();
        }
        let (left, at) = budgets
            .entry(principal.to_owned())
            .or_insert((self.burst, now));
        *left = self.regained(*left, *at, now);
        *at = now;
        left
    }

    /// Takes `amount` more from `principal`'s budget for work already done, into debt if
    /// need be: a call whose cost is known only once it has run is charged for it, and
    /// its caller waits that much longer for the next.
    pub(crate) fn charge(&self, principal: &str, amount: f64, now: Instant) {
        if amount <= 0.0 {
            return;
        }
        let mut budgets = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        *self.settled(&mut budgets, principal, now) -= amount;
    }

    /// Whether [`Self::take`] would give `principal` one now, taking nothing: for a call
    /// to be refused before it does costly work that the budget would refuse after.
    pub(crate) fn peek(&self, principal: &str, now: Instant) -> Result<(), Duration> {
        let budgets = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        match budgets.get(principal) {
            Some(&(left, at)) if self.regained(left, at, now) < 1.0 => {
                Err(self.wait(self.regained(left, at, now)))
            }
            _ => Ok(()),
        }
    }

    /// What a budget of `left` at `at` holds at `now`.
    fn regained(&self, left: f64, at: Instant, now: Instant) -> f64 {
        (left + now.saturating_duration_since(at).as_secs_f64() * self.per_second).min(self.burst)
    }

    /// How long until a budget holding `left` (less than one, perhaps in debt) has one.
    fn wait(&self, left: f64) -> Duration {
        Duration::try_from_secs_f64((1.0 - left) / self.per_second).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::Budgets;

    /// A principal gets a burst, then `per_second`; another principal has its own
    /// budget; a refusal says when the next one is due.
    #[test]
    fn each_principal_gets_a_burst_then_a_steady_rate() {
        let budgets = Budgets::new(60, 2.0);
        let start = Instant::now();
        let burst = (0..1000)
            .filter(|_| budgets.take("a", start).is_ok())
            .count();
        assert_eq!(burst, 60);
        assert_eq!(budgets.peek("a", start), Err(Duration::from_millis(500)));
        assert_eq!(budgets.take("a", start), Err(Duration::from_millis(500)));
        assert_eq!(
            budgets.peek("b", start),
            Ok(()),
            "a principal not seen has its burst"
        );
        assert!(budgets.take("b", start).is_ok());
        let later = start + Duration::from_secs(10);
        let regained = (0..1000)
            .filter(|_| budgets.take("a", later).is_ok())
            .count();
        assert_eq!(regained, 20);
        assert!(
            budgets
                .peek("a", later + Duration::from_millis(500))
                .is_ok()
        );
        assert!(
            budgets
                .peek("a", later + Duration::from_millis(400))
                .is_err()
        );
        let much_later = later + Duration::from_secs(3600);
        let again = (0..1000)
            .filter(|_| budgets.take("a", much_later).is_ok())
            .count();
        assert_eq!(again, 60, "a budget never holds more than its burst");
    }

    /// Work charged after the fact puts a budget in debt: the next is due once the debt
    /// and one more have been regained.
    #[test]
    fn a_charge_is_paid_back_before_the_next_call() {
        let budgets = Budgets::new(10, 1.0);
        let start = Instant::now();
        assert!(budgets.take("a", start).is_ok());
        budgets.charge("a", 20.0, start);
        // 10 - 1 - 20 = -11: twelve seconds until one is left.
        assert_eq!(budgets.take("a", start), Err(Duration::from_secs(12)));
        assert!(budgets.take("a", start + Duration::from_secs(11)).is_err());
        assert!(budgets.take("a", start + Duration::from_secs(12)).is_ok());
        budgets.charge("b", 0.0, start);
        assert!(
            budgets.take("b", start).is_ok(),
            "nothing charged, nothing owed"
        );
    }
}
