//! Time, as the server sees it: the system clock in production, a clock a test can move.
//!
//! Everything that depends on "now" — acceptance times, key validity, give-to-get
//! windows — reads one [`Clock`], so a test can step past a window instead of waiting.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use time::OffsetDateTime;

/// Seconds since the Unix epoch, from the system or from a test's hand.
#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System,
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that stands still at `start` until the returned handle moves it.
    pub fn manual(start: i64) -> (Self, Arc<AtomicI64>) {
        let now = Arc::new(AtomicI64::new(start));
        (Self(Source::Manual(now.clone())), now)
    }

    /// Now, in seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        match &self.0 {
            Source::System => OffsetDateTime::now_utc().unix_timestamp(),
            Source::Manual(now) => now.load(Ordering::SeqCst),
        }
    }

    /// Now as a date-time (UTC).
    pub fn now_utc(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.now())
            .unwrap_or_else(|_| OffsetDateTime::now_utc())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

/// An end of validity (exclusive) as [`format_time`] writes it, but the last one the
/// exchange allows, the end of 9999-12-31 (10000-01-01T00:00:00Z, past what RFC 3339
/// can write), as that date: as `--valid-until` and key files read it, the whole day.
pub fn format_until(unix: i64) -> String {
    if unix == crate::calendar::LAST_SECOND + 1 {
        "9999-12-31".to_owned()
    } else {
        format_time(unix)
    }
}

/// A wait for messages: `250 ms` below a second (never `0.0 s`), `2.5 s` from one.
pub fn format_wait(wait: std::time::Duration) -> String {
    if wait < std::time::Duration::from_secs(1) {
        format!("{} ms", wait.as_millis().max(1))
    } else {
        format!("{:.1} s", wait.as_secs_f64())
    }
}

/// RFC 3339 for messages; the raw number if it is out of range.
pub fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}
