//! The HTTP layer's pulse: request rate, the share of server errors and latency
//! quantiles over the last minute (for the operations dashboard), and each service's
//! service-level figures over the last hour against the architecture brief's
//! objectives (for `/api/v1/kpis`). Prometheus keeps the full histograms
//! (`tidemark_http_request_duration_seconds`); this is the same traffic as rolling
//! windows the process can read without a Prometheus server. It measures the HTTP
//! layer, so it runs on the wall clock; the dataflows never read it.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::Serialize;

/// Latency buckets: bucket `i` holds durations up to `FIRST_BOUND_MS * GROWTH^i`, so
/// a quantile is known to within a quarter of its value.
const BUCKETS: usize = 64;
const FIRST_BOUND_MS: f64 = 0.1;
const GROWTH: f64 = 1.25;

/// The last minute, by the second.
const PULSE_SLOTS: usize = 60;
/// The last hour, by the minute.
const SLO_SLOTS: usize = 60;
const MINUTE: u64 = 60;

#[derive(Clone, Copy)]
struct Slot {
    /// Which slot since the process began this one counts; stale slots are skipped.
    index: u64,
    requests: u64,
    server_errors: u64,
    latency: [u32; BUCKETS],
}

const EMPTY: Slot = Slot {
    index: u64::MAX,
    requests: 0,
    server_errors: 0,
    latency: [0; BUCKETS],
};

impl Slot {
    fn count(&mut self, index: u64, status: u16, bucket: usize) {
        if self.index != index {
            *self = Slot { index, ..EMPTY };
        }
        self.requests += 1;
        self.server_errors += u64::from(status >= 500);
        self.latency[bucket] += 1;
    }
}

/// Requests, server errors and latencies summed over some slots.
struct Totals {
    requests: u64,
    server_errors: u64,
    latency: [u64; BUCKETS],
}

impl Totals {
    fn of<'a>(slots: impl Iterator<Item = &'a Slot>) -> Totals {
        let mut totals = Totals {
            requests: 0,
            server_errors: 0,
            latency: [0; BUCKETS],
        };
        for slot in slots {
            totals.requests += slot.requests;
            totals.server_errors += slot.server_errors;
            for (total, count) in totals.latency.iter_mut().zip(slot.latency) {
                *total += u64::from(count);
            }
        }
        totals
    }

    fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.server_errors as f64 / self.requests as f64)
    }

    /// The upper bound of the bucket the `q` quantile falls in.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.requests == 0 {
            return None;
        }
        let rank = ((self.requests as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        let bucket = self.latency.iter().position(|count| {
            seen += count;
            seen >= rank
        })?;
        Some(FIRST_BOUND_MS * GROWTH.powi(bucket as i32))
    }
}

/// The services of the architecture brief the API's routes belong to, each with its
/// objectives; `All` is every route, against the brief's overall `sla_metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Users,
    Orders,
    Payments,
    Inventory,
    All,
}

impl Service {
    const COUNT: usize = 5;
    const EACH: [Service; 4] = [
        Service::Users,
        Service::Orders,
        Service::Payments,
        Service::Inventory,
    ];

    /// The service a route pattern (`/api/v1/orders/{id}`) belongs to, if one of the
    /// brief's four.
    pub fn of_route(route: &str) -> Option<Service> {
        let path = route.strip_prefix("/api/v1").unwrap_or(route);
        let first = path.trim_start_matches('/').split('/').next()?;
        match first {
            "users" | "oauth2" | ".well-known" => Some(Service::Users),
            "orders" | "carts" => Some(Service::Orders),
            "payments" => Some(Service::Payments),
            "products" | "inventory" => Some(Service::Inventory),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Service::Users => "users",
            Service::Orders => "orders",
            Service::Payments => "payments",
            Service::Inventory => "inventory",
            Service::All => "all",
        }
    }

    /// The brief's objectives: availability, p99 latency (ms), error rate.
    fn objectives(self) -> Objectives {
        let (availability, p99_ms, error_rate) = match self {
            Service::Users => (0.9995, 50.0, 0.001),
            Service::Orders => (0.999, 100.0, 0.005),
            Service::Payments => (0.9999, 200.0, 0.0001),
            Service::Inventory => (0.999, 75.0, 0.001),
            Service::All => (0.999, 100.0, 0.001),
        };
        Objectives {
            availability,
            p99_ms,
            error_rate,
        }
    }
}

/// What a service promises.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Objectives {
    /// The share of good minutes.
    pub availability: f64,
    pub p99_ms: f64,
    /// The share of answers that are server errors.
    pub error_rate: f64,
}

/// One service's figures over the window, against its objectives.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct ServiceLevel {
    pub service: &'static str,
    pub requests: u64,
    /// The share of the window's minutes that were good: a minute is bad when more of
    /// its answers were server errors (5xx) than the error-rate objective allows.
    /// Minutes without requests are good.
    pub availability: f64,
    /// The 99th percentile of the time to answer, to within a quarter; null without
    /// requests.
    pub p99_ms: Option<f64>,
    /// Server errors (5xx) over all answers; null without requests.
    pub error_rate: Option<f64>,
    pub objectives: Objectives,
    /// Whether every figure meets its objective; null without requests.
    pub met: Option<bool>,
}

/// Every service's figures over the last hour (or since the process started).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct ServiceLevels {
    /// How many minutes the figures cover: up to 60.
    pub window_minutes: u64,
    /// `users` (with sign-in and OAuth), `orders` (with carts), `payments`,
    /// `inventory` (with the catalog), then `all` routes.
    pub services: Vec<ServiceLevel>,
}

pub struct Pulse {
    started: Instant,
    windows: Mutex<Windows>,
}

struct Windows {
    /// The last minute of every route, by the second.
    seconds: [Slot; PULSE_SLOTS],
    /// The last hour of each service, by the minute, by `Service` (`All` last).
    minutes: [[Slot; SLO_SLOTS]; Service::COUNT],
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
            windows: Mutex::new(Windows {
                seconds: [EMPTY; PULSE_SLOTS],
                minutes: [[EMPTY; SLO_SLOTS]; Service::COUNT],
            }),
        }
    }

    /// Counts one answer of `route` (its pattern, or `unmatched`).
    pub fn record(&self, route: &str, status: u16, took: Duration) {
        self.record_at(self.started.elapsed().as_secs(), route, status, took);
    }

    fn record_at(&self, second: u64, route: &str, status: u16, took: Duration) {
        let millis = took.as_secs_f64() * 1000.0;
        let bucket = if millis <= FIRST_BOUND_MS {
            0
        } else {
            ((millis / FIRST_BOUND_MS).ln() / GROWTH.ln()).ceil() as usize
        };
        let bucket = bucket.min(BUCKETS - 1);
        let service = Service::of_route(route);
        let minute = second / MINUTE;
        let mut windows = self.windows.lock();
        windows.seconds[second as usize % PULSE_SLOTS].count(second, status, bucket);
        for service in service.into_iter().chain([Service::All]) {
            let slot = &mut windows.minutes[service as usize][minute as usize % SLO_SLOTS];
            slot.count(minute, status, bucket);
        }
    }

    /// The requests of the last full minute (the current second is still counting).
    pub fn read(&self) -> Reading {
        self.read_at(self.started.elapsed().as_secs())
    }

    fn read_at(&self, now: u64) -> Reading {
        let oldest = now.saturating_sub(PULSE_SLOTS as u64);
        let windows = self.windows.lock();
        let totals = Totals::of(
            (windows.seconds.iter()).filter(|slot| slot.index >= oldest && slot.index < now),
        );
        let seconds = now.clamp(1, PULSE_SLOTS as u64) as f64;
        Reading {
            requests_per_second: totals.requests as f64 / seconds,
            error_rate: totals.error_rate(),
            p50_ms: totals.quantile(0.5),
            p99_ms: totals.quantile(0.99),
        }
    }

    /// Each service's figures over the last hour, the current minute included.
    pub fn service_levels(&self) -> ServiceLevels {
        self.service_levels_at(self.started.elapsed().as_secs())
    }

    fn service_levels_at(&self, now: u64) -> ServiceLevels {
        let minute = now / MINUTE;
        let oldest = (minute + 1).saturating_sub(SLO_SLOTS as u64);
        let window_minutes = minute + 1 - oldest;
        let windows = self.windows.lock();
        let services = (Service::EACH.into_iter().chain([Service::All]))
            .map(|service| {
                let objectives = service.objectives();
                let slots: Vec<&Slot> = (windows.minutes[service as usize].iter())
                    .filter(|slot| slot.index >= oldest && slot.index <= minute)
                    .collect();
                let bad_minutes = (slots.iter())
                    .filter(|slot| {
                        slot.server_errors as f64 > objectives.error_rate * slot.requests as f64
                    })
                    .count() as u64;
                let totals = Totals::of(slots.into_iter());
                let availability = (window_minutes - bad_minutes) as f64 / window_minutes as f64;
                let p99_ms = totals.quantile(0.99);
                let error_rate = totals.error_rate();
                let met = (totals.requests > 0).then(|| {
                    availability >= objectives.availability
                        && p99_ms.is_some_and(|p99| p99 <= objectives.p99_ms)
                        && error_rate.is_some_and(|rate| rate <= objectives.error_rate)
                });
                ServiceLevel {
                    service: service.name(),
                    requests: totals.requests,
                    availability,
                    p99_ms,
                    error_rate,
                    objectives,
                    met,
                }
            })
            .collect();
        ServiceLevels {
            window_minutes,
            services,
        }
    }
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
            pulse.record_at(5, "/api/v1/orders", 200, Duration::from_millis(2));
        }
        pulse.record_at(5, "/api/v1/orders", 500, Duration::from_millis(40));
        pulse.record_at(5, "/api/v1/orders", 503, Duration::from_millis(40));
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

    #[test]
    fn routes_belong_to_the_briefs_services() {
        for (route, service) in [
            ("/api/v1/users/{id}", Some(Service::Users)),
            ("/oauth2/token", Some(Service::Users)),
            ("/api/v1/carts/{id}/items", Some(Service::Orders)),
            ("/api/v1/orders", Some(Service::Orders)),
            ("/api/v1/payments/{id}/refund", Some(Service::Payments)),
            ("/api/v1/inventory/reserve", Some(Service::Inventory)),
            ("/api/v1/products/search", Some(Service::Inventory)),
            ("/api/v1/sql", None),
            ("unmatched", None),
        ] {
            assert_eq!(Service::of_route(route), service, "{route}");
        }
    }

    fn level<'a>(levels: &'a ServiceLevels, name: &str) -> &'a ServiceLevel {
        (levels.services.iter())
            .find(|level| level.service == name)
            .unwrap()
    }

    #[test]
    fn a_minute_with_too_many_server_errors_is_unavailable() {
        let pulse = Pulse::new();
        // Minute 0: 1,000 good orders. Minute 1: 990 good and 10 server errors, 1% of
        // them, over the orders service's 0.5%. Minute 2: one slow payment.
        for _ in 0..1000 {
            pulse.record_at(10, "/api/v1/orders", 201, Duration::from_millis(5));
        }
        for i in 0..1000 {
            let status = if i < 10 { 503 } else { 200 };
            pulse.record_at(70, "/api/v1/orders/{id}", status, Duration::from_millis(5));
        }
        pulse.record_at(130, "/api/v1/payments", 201, Duration::from_millis(300));
        pulse.record_at(130, "/api/v1/sql", 200, Duration::from_millis(1));

        let levels = pulse.service_levels_at(150);
        assert_eq!(levels.window_minutes, 3);
        let orders = level(&levels, "orders");
        assert_eq!(orders.requests, 2000);
        assert_eq!(orders.availability, 2.0 / 3.0);
        assert_eq!(orders.error_rate, Some(10.0 / 2000.0));
        assert!(orders.p99_ms.unwrap() < 10.0);
        assert_eq!(orders.met, Some(false));
        let payments = level(&levels, "payments");
        assert_eq!(payments.availability, 1.0);
        assert!(payments.p99_ms.unwrap() >= 300.0);
        assert_eq!(payments.met, Some(false), "over its 200 ms");
        let users = level(&levels, "users");
        assert_eq!((users.requests, users.met), (0, None));
        assert_eq!(level(&levels, "all").requests, 2002);

        // An hour on, only the last 60 minutes count, and they were quiet.
        let later = pulse.service_levels_at(130 + 3600);
        assert_eq!(later.window_minutes, 60);
        let orders = level(&later, "orders");
        assert_eq!((orders.requests, orders.availability), (0, 1.0));
    }
}
