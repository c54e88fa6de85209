//! The gateway in front of every route: rate limits per caller and tier, CORS, request
//! deadlines and compression (the brief's api-gateway, as tower layers and one
//! middleware step in `auth::authenticate`).
//!
//! Rate limits are GCRA buckets (governor), one per caller: a client address for
//! callers without credentials (`public`), the user or the key otherwise
//! (`authenticated`, or `premium` for keys with the `premium` scope and for users, and
//! their keys, whose loyalty tier is premium). Administrators
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
    /// `member` says whether the caller acts for a user whose loyalty tier is premium.
    pub fn bucket(
        &self,
        principal: &Principal,
        client: Client,
        member: bool,
    ) -> Option<(Tier, String)> {
        let admin = principal.has_scope(ADMIN);
        if admin && !self.limit_admins {
            return None;
        }
        let tier = match principal {
            Principal::Anonymous => Tier::Public,
            Principal::Key { scopes, .. } if scopes.iter().any(|scope| &**scope == PREMIUM) => {
                Tier::Premium
            }
            _ if member => Tier::Premium,
            _ => Tier::Authenticated,
        };
        let bucket = match principal {
            Principal::Anonymous => format!("ip:{client}"),
            known => known.label(),
        };
        Some((tier, bucket))
    }

    /// Takes one request from the bucket: its allowance, or 429 with `Retry-After` and
    /// the allowance (nothing remaining), boxed: refusals are the rare path.
    pub fn check(&self, tier: Tier, bucket: &str) -> Result<Allowance, Box<(ApiError, Allowance)>> {
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
                Err(Box::new((error, allowance)))
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
                HeaderName::from_static("x-request-id"),
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

/// An API version being retired: its answers say so (`Deprecation`, RFC 9745, and
/// `Sunset`, RFC 8594, with a `Link` to what replaces it), and once it is past its
/// sunset it answers `410 version_retired`. Configured as
/// `[[gateway.retired]] prefix = "/api/v1"`, `deprecated_at = "2027-01-01T00:00:00Z"`,
/// `sunset_at = "2027-07-01T00:00:00Z"`, `link = "https://docs.example/migrate"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retirement {
    /// The version's path prefix, such as `/api/v1`.
    pub prefix: String,
    /// When it was (or will be) deprecated (RFC 3339).
    pub deprecated_at: String,
    /// When it stops answering (RFC 3339), if that is decided.
    #[serde(default)]
    pub sunset_at: Option<String>,
    /// Where its users read how to move on.
    #[serde(default)]
    pub link: Option<String>,
}

fn instant(field: &str, value: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|at| at.to_utc())
        .map_err(|_| {
            format!("{field} {value:?} is not an RFC 3339 time such as 2027-01-01T00:00:00Z")
        })
}

impl Retirement {
    /// Whether it is well-formed: what `config` checks at start-up.
    pub fn check(&self) -> Result<(), String> {
        self.announcement().map(|_| ())
    }

    /// The headers its answers carry and its sunset, worked out once: what
    /// `retirements` serves with.
    pub fn announcement(&self) -> Result<Announcement, String> {
        let prefix = &self.prefix;
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            return Err(format!("prefix {prefix:?} is not a path such as /api/v1"));
        }
        let deprecated = instant("deprecated_at", &self.deprecated_at)?;
        let sunset = match &self.sunset_at {
            Some(sunset) => Some(instant("sunset_at", sunset)?),
            None => None,
        };
        if sunset.is_some_and(|sunset| sunset < deprecated) {
            return Err(format!("{prefix}: sunset_at is before deprecated_at"));
        }
        let mut headers = vec![(
            HeaderName::from_static("deprecation"),
            HeaderValue::from_str(&format!("@{}", deprecated.timestamp())).expect("digits"),
        )];
        if let Some(sunset) = sunset {
            let date = sunset.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
            headers.push((
                HeaderName::from_static("sunset"),
                HeaderValue::from_str(&date).expect("an HTTP date"),
            ));
        }
        if let Some(link) = &self.link {
            let value = (link.starts_with("https://") || link.starts_with("http://"))
                .then(|| HeaderValue::from_str(&format!("<{link}>; rel=\"deprecation\"")).ok())
                .flatten()
                .filter(|_| !link.contains(['<', '>', ' ', '"']))
                .ok_or_else(|| format!("{prefix}: link {link:?} is not an http(s) URL"))?;
            headers.push((header::LINK, value));
        }
        Ok(Announcement {
            prefix: prefix.clone(),
            sunset,
            headers,
        })
    }
}

/// A retired version as it is served: its prefix, its sunset, and the headers of its
/// answers.
#[derive(Clone, Debug)]
pub struct Announcement {
    prefix: String,
    sunset: Option<chrono::DateTime<chrono::Utc>>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Announcement {
    fn covers(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

/// Announces the retirement of the version a request is for, or refuses it past its
/// sunset. `now` is the wall clock: this is the HTTP layer, not a dataflow.
pub async fn retirements(
    axum::extract::State(retired): axum::extract::State<std::sync::Arc<Vec<Announcement>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(retirement) = retired
        .iter()
        .find(|retirement| retirement.covers(request.uri().path()))
    else {
        return next.run(request).await;
    };
    let mut response = match retirement.sunset {
        Some(sunset) if chrono::Utc::now() >= sunset => {
            use axum::response::IntoResponse;
            ApiError::new(
                StatusCode::GONE,
                "version_retired",
                format!(
                    "{} was retired on {}; use its successor",
                    retirement.prefix,
                    sunset.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            )
            .into_response()
        }
        _ => next.run(request).await,
    };
    let headers = response.headers_mut();
    for (name, value) in &retirement.headers {
        headers.append(name, value.clone());
    }
    response
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
        let (error, allowance) = *limits.check(Tier::Public, "ip:a").expect_err("over quota");
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
