use std::fmt::Debug;
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// Where "now" comes from. Injected so that tests are deterministic.
pub trait Clock: Send + Sync + Debug {
    /// The current instant, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock for tests: starts at a given instant and advances by a fixed step on every reading.
#[derive(Debug)]
pub struct ManualClock {
    next: Mutex<DateTime<Utc>>,
    step: Duration,
}

impl ManualClock {
    /// A clock whose first reading is `start`, each later one `step` after the previous.
    pub fn new(start: DateTime<Utc>, step: Duration) -> Self {
        Self { next: Mutex::new(start), step }
    }

    /// Moves the clock by `by` without reading it.
    pub fn advance(&self, by: Duration) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *next += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let now = *next;
        *next += self.step;
        now
    }
}
