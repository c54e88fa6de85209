//! The gateway in front of every route: rate limits per caller and tier, CORS, request
//! deadlines and compression (the brief's api-gateway, as tower layers and one
//! middleware step in `auth::authenticate`).
//!
//! Rate limits are GCRA buckets (governor), one per caller: a client address for
//! callers without credentials (`public`), the user or the key otherwise
//! (`authenticated`, or `premium` for keys with the `premium` scope). Administrators
//! are not limited unless `gateway.limit_admins` is set. Each bucket holds a minute's
//! quota and refills continuously, so a client may burst its whole quota and then
//! sustain its rate. The counts live in this process: with several servers behind a
//! balancer each enforces its own, so a client's budget is the quota times the servers
//! its requests reach.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::error::ApiError;
use crate::api::extract::Client;
use crate::auth::{Principal, ADMIN};
use crate::config::GatewayConfig;

/// The scope that puts an API key in the premium tier.
pub const PREMIUM: &str = "premium";

/// The rate-limit tiers of the brief.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Public,
    Authenticated,
    Premium,
}

type Limiter = DefaultKeyedRateLimiter<String, StateInformationMiddleware>;

/// One keyed limiter per tier.
pub struct RateLimits {
    limit_admins: bool,
    tiers: [(Tier, u32, Limiter); 3],
    checks: AtomicU64,
}

/// What a caller's bucket held when the request was let through or refused: the
/// `RateLimit-*` headers (IETF draft `ratelimit-headers`).
#[derive(Clone, Copy, Debug)]
pub struct Allowance {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
}

/// How often (in checks) buckets idle long enough to be full again are dropped.
const SWEEP_EVERY: u64 = 16_384;

impl RateLimits {
    pub fn new(config: &GatewayConfig) -> RateLimits {
        let limiter = |per_minute: u32| {
            let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_minute(per_minute))
                .with_middleware::<StateInformationMiddleware>()
        };
        RateLimits {
            limit_admins: config.limit_admins,
            tiers: [
                (
                    Tier::Public,
                    config.public_per_minute,
                    limiter(config.public_per_minute),
                ),
                (
                    Tier::Authenticated,
                    config.authenticated_per_minute,
                    limiter(config.authenticated_per_minute),
                ),
                (
                    Tier::Premium,
                    config.premium_per_minute,
                    limiter(config.premium_per_minute),
                ),
            ],
            checks: AtomicU64::new(0),
        }
    }

    /// The tier and bucket of a caller; none for a caller who is not limited.
    pub fn bucket(&self, principal: &Principal, client: Client) -> Option<(Tier, String)> {
        let admin = principal.has_scope(ADMIN);
        if admin && !self.limit_admins {
            return None;
        }
        let tier = match principal {
            Principal::Anonymous => Tier::Public,
            Principal::Key { scopes, .. } if scopes.iter().any(|scope| &**scope == PREMIUM) => {
                Tier::Premium
            }
            _ => Tier::Authenticated,
        };
        let bucket = match principal {
            Principal::Anonymous => format!("ip:{client}"),
            known => known.label(),
        };
        Some((tier, bucket))
    }

    /// Takes one request from the bucket: its allowance, or 429 with `Retry-After` and
    /// the allowance (nothing remaining).
    pub fn check(&self, tier: Tier, bucket: &str) -> Result<Allowance, (ApiError, Allowance)> {
        let (_, limit, limiter) = self
            .tiers
            .iter()
            .find(|(t, _, _)| *t == tier)
            .expect("every tier has a limiter");
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for (_, _, limiter) in &self.tiers {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
        let refill = Duration::from_secs(60) / (*limit).max(1);
        let key = bucket.to_string();
        match limiter.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Ok(Allowance {
                    limit: *limit,
                    remaining,
                    reset_s: (refill * limit.saturating_sub(remaining))
                        .as_secs_f64()
                        .ceil() as u64,
                })
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                let wait_s = wait.as_secs_f64().ceil().max(1.0) as u64;
                let allowance = Allowance {
                    limit: *limit,
                    remaining: 0,
                    reset_s: (refill * *limit).as_secs_f64().ceil() as u64,
                };
                let error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "more than {limit} requests a minute ({} tier); retry in {wait_s} s",
                        tier.name()
                    ),
                )
                .retry_after(wait_s);
                Err((error, allowance))
            }
        }
    }
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Public => "public",
            Tier::Authenticated => "authenticated",
            Tier::Premium => "premium",
        }
    }
}

impl Allowance {
    /// Writes the `RateLimit-Limit`, `-Remaining` and `-Reset` headers.
    pub fn write(&self, response: &mut Response) {
        let headers = response.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", u64::from(self.limit)),
            ("ratelimit-remaining", u64::from(self.remaining)),
            ("ratelimit-reset", self.reset_s),
        ] {
            headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
        }
    }
}

/// The CORS layer for `origins` (`*`, or exact origins); none when no origin is
/// allowed, so browsers get the same-origin policy.
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-api-key"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("x-correlation-id"),
                header::IF_NONE_MATCH,
            ])
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                header::LOCATION,
                header::ETAG,
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// Whether `origin` is one `gateway.cors_origins` may name: `*`, or
/// `http(s)://host[:port]` with nothing after.
pub fn valid_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '@'])
        && HeaderValue::from_str(origin).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in ["*", "https://shop.example", "http://localhost:5173"] {
            assert!(valid_origin(good), "{good}");
        }
        for bad in [
            "",
            "shop.example",
            "https://",
            "https://shop.example/",
            "https://shop.example/path",
            "ftp://shop.example",
            "https://user@shop.example",
        ] {
            assert!(!valid_origin(bad), "{bad}");
        }
    }

    #[test]
    fn a_bucket_lets_its_quota_through_then_refuses_with_a_wait() {
        let limits = RateLimits::new(&GatewayConfig {
            public_per_minute: 3,
            ..GatewayConfig::default()
        });
        let remaining: Vec<u32> = (0..3)
            .map(|_| {
                limits
                    .check(Tier::Public, "ip:a")
                    .expect("within quota")
                    .remaining
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let (error, allowance) = limits.check(Tier::Public, "ip:a").expect_err("over quota");
        assert_eq!(error.status, StatusCode::TOO_MANY_REQUESTS);
        assert!((1..=20).contains(&error.retry_after_s.expect("a wait")));
        assert_eq!((allowance.limit, allowance.remaining), (3, 0));
        // Another caller has a bucket of its own.
        assert_eq!(
            limits
                .check(Tier::Public, "ip:b")
                .expect("own quota")
                .remaining,
            2
        );
    }
}
