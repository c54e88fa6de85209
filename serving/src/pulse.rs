//! The HTTP layer's pulse over the last minute: request rate, the share of server
//! errors and latency quantiles, for the operations dashboard. Prometheus keeps the
//! full histograms (`tidemark_http_request_duration_seconds`); this is the same
//! traffic as a rolling window the process can read without a Prometheus server.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How many one-second slots the window holds.
const WINDOW_SECONDS: usize = 60;
/// Latency buckets: bucket `i` holds durations up to `FIRST_BOUND_MS * GROWTH^i`, so
/// a quantile is known to within a quarter of its value.
const BUCKETS: usize = 64;
const FIRST_BOUND_MS: f64 = 0.1;
const GROWTH: f64 = 1.25;

#[derive(Clone, Copy)]
struct Slot {
    /// Which second since the window began this slot counts; stale slots are skipped.
    second: u64,
    requests: u64,
    server_errors: u64,
    latency: [u32; BUCKETS],
}

const EMPTY: Slot = Slot {
    second: u64::MAX,
    requests: 0,
    server_errors: 0,
    latency: [0; BUCKETS],
};

pub struct Pulse {
    started: Instant,
    slots: Mutex<[Slot; WINDOW_SECONDS]>,
}

/// The last minute's requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub requests_per_second: f64,
    /// Answers with a 5xx status over all answers; `None` without requests.
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Pulse {
    fn new() -> Pulse {
        Pulse {
            started: Instant::now(),
            slots: Mutex::new([EMPTY; WINDOW_SECONDS]),
        }
    }

    /// Counts one answer.
    pub fn record(&self, status: u16, took: Duration) {
        self.record_at(self.started.elapsed().as_secs(), status, took);
    }

    fn record_at(&self, second: u64, status: u16, took: Duration) {
        let millis = took.as_secs_f64() * 1000.0;
        let bucket = if millis <= FIRST_BOUND_MS {
            0
        } else {
            ((millis / FIRST_BOUND_MS).ln() / GROWTH.ln()).ceil() as usize
        };
        let mut slots = self.slots.lock();
        let slot = &mut slots[(second % WINDOW_SECONDS as u64) as usize];
        if slot.second != second {
            *slot = Slot { second, ..EMPTY };
        }
        slot.requests += 1;
        slot.server_errors += u64::from(status >= 500);
        slot.latency[bucket.min(BUCKETS - 1)] += 1;
    }

    /// The requests of the last full minute (the current second is still counting).
    pub fn read(&self) -> Reading {
        self.read_at(self.started.elapsed().as_secs())
    }

    fn read_at(&self, now: u64) -> Reading {
        let oldest = now.saturating_sub(WINDOW_SECONDS as u64);
        let (mut requests, mut errors, mut latency) = (0u64, 0u64, [0u64; BUCKETS]);
        for slot in self.slots.lock().iter() {
            if slot.second >= oldest && slot.second < now {
                requests += slot.requests;
                errors += slot.server_errors;
                for (total, count) in latency.iter_mut().zip(slot.latency) {
                    *total += u64::from(count);
                }
            }
        }
        let seconds = now.clamp(1, WINDOW_SECONDS as u64) as f64;
        Reading {
            requests_per_second: requests as f64 / seconds,
            error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
            p50_ms: quantile(&latency, requests, 0.5),
            p99_ms: quantile(&latency, requests, 0.99),
        }
    }
}

/// The upper bound of the bucket the `q` quantile falls in.
fn quantile(latency: &[u64; BUCKETS], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    let bucket = latency.iter().position(|count| {
        seen += count;
        seen >= rank
    })?;
    Some(FIRST_BOUND_MS * GROWTH.powi(bucket as i32))
}

/// The process's pulse.
pub fn pulse() -> &'static Pulse {
    static PULSE: OnceLock<Pulse> = OnceLock::new();
    PULSE.get_or_init(Pulse::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_bucket_of_their_rank() {
        let pulse = Pulse::new();
        for _ in 0..98 {
            pulse.record_at(5, 200, Duration::from_millis(2));
        }
        pulse.record_at(5, 500, Duration::from_millis(40));
        pulse.record_at(5, 503, Duration::from_millis(40));
        // The current second is still counting.
        assert_eq!(pulse.read_at(5).error_rate, None);
        // A minute later, those requests have left the window.
        assert_eq!(pulse.read_at(66).error_rate, None);
        let reading = pulse.read_at(6);
        assert_eq!(reading.error_rate, Some(0.02));
        let p50 = reading.p50_ms.unwrap();
        assert!((2.0..2.5).contains(&p50), "{p50}");
        let p99 = reading.p99_ms.unwrap();
        assert!((40.0..50.0).contains(&p99), "{p99}");
    }
}
