//! A circuit breaker around an outbound provider (the payment provider, the carrier).
//!
//! Closed, calls go through; after `failures_to_open` consecutive failures a retry can
//! fix (an outage, not a declined card) it opens, and calls are not made for
//! `cool_down`; then it half-opens and lets one call through as a probe: its success
//! closes the breaker, its failure opens it again. A call the breaker holds back fails
//! as retryable, so its effect stays pending and the executor tries again with backoff:
//! an order waiting on an open breaker waits, and is never lost.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct Breaker {
    name: &'static str,
    failures_to_open: u32,
    cool_down: Duration,
    state: Mutex<State>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out since `since`; everything else waits for its outcome, or for
    /// a cool-down more if it never comes (a caller was let through and made no call),
    /// when another probe goes.
    HalfOpen {
        since: Instant,
    },
}

impl Breaker {
    pub fn new(name: &'static str, failures_to_open: u32, cool_down: Duration) -> Breaker {
        Breaker {
            name,
            failures_to_open: failures_to_open.max(1),
            cool_down,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Whether a call may be made at `now`; when it may not, the error to fail it with.
    pub fn allow(&self, now: Instant) -> Result<(), connectors::Error> {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { since: now };
                tracing::info!(
                    provider = self.name,
                    "circuit half-open: probing the provider"
                );
                Ok(())
            }
            State::HalfOpen { since } if now >= since + self.cool_down => {
                *state = State::HalfOpen { since: now };
                Ok(())
            }
            State::Open { .. } | State::HalfOpen { .. } => Err(connectors::Error::Provider {
                message: format!(
                    "the {} provider is failing; calls are paused (circuit open)",
                    self.name
                ),
                retryable: true,
            }),
        }
    }

    /// Records a call's outcome at `now`: `ok` is false only for failures a retry can fix.
    pub fn record(&self, ok: bool, now: Instant) {
        let mut state = self.state.lock();
        *state = match (*state, ok) {
            (State::HalfOpen { .. }, true) => {
                tracing::info!(
                    provider = self.name,
                    "circuit closed: the provider answers again"
                );
                State::Closed { failures: 0 }
            }
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.failures_to_open => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => {
                tracing::warn!(
                    provider = self.name,
                    cool_down_ms = self.cool_down.as_millis() as u64,
                    "circuit open: the provider keeps failing; pausing calls"
                );
                State::Open {
                    until: now + self.cool_down,
                }
            }
        };
    }

    /// Records the outcome of a provider call's result.
    pub fn observe<T>(&self, result: &connectors::Result<T>) {
        let failed = matches!(result, Err(error) if error.is_retryable());
        self.record(!failed, Instant::now());
    }

    /// `closed`, `open` or `half_open`, for `/health/ready`.
    pub fn state(&self) -> &'static str {
        match *self.state.lock() {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_probes_once_after_the_cool_down() {
        let breaker = Breaker::new("payments", 3, Duration::from_secs(10));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        // A success between failures starts the count again.
        for ok in [false, false, true, false, false] {
            assert!(breaker.allow(at(0)).is_ok());
            breaker.record(ok, at(0));
        }
        assert_eq!(breaker.state(), "closed");
        breaker.record(false, at(1));
        assert_eq!(breaker.state(), "open");
        let held = breaker.allow(at(5)).expect_err("open");
        assert!(held.is_retryable());
        // After the cool-down one probe goes through; the others wait for it.
        assert!(breaker.allow(at(11)).is_ok());
        assert_eq!(breaker.state(), "half_open");
        assert!(breaker.allow(at(11)).is_err());
        // A failed probe opens it again for another cool-down.
        breaker.record(false, at(12));
        assert!(breaker.allow(at(21)).is_err());
        assert!(breaker.allow(at(22)).is_ok());
        breaker.record(true, at(22));
        assert_eq!(breaker.state(), "closed");
        assert!(breaker.allow(at(22)).is_ok());
    }

    #[test]
    fn a_probe_whose_outcome_never_comes_is_replaced_after_a_cool_down() {
        let breaker = Breaker::new("carrier", 1, Duration::from_secs(10));
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        breaker.record(false, at(0));
        // Let through at 10 and nothing recorded: the breaker does not stay shut.
        assert!(breaker.allow(at(10)).is_ok());
        assert!(breaker.allow(at(15)).is_err());
        assert!(breaker.allow(at(20)).is_ok());
        assert!(breaker.allow(at(21)).is_err());
        breaker.record(true, at(21));
        assert_eq!(breaker.state(), "closed");
    }
}
