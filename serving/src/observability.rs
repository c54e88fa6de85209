//! Prometheus exposition (`--metrics-listen`, `127.0.0.1:9090` by default): what
//! operators scrape. Requests, the log and the providers are measured as they happen
//! (counters and histograms through the `metrics` facade); the state of the views, the
//! business figures and the process are read when Prometheus scrapes.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dataflows::model::log_ts;
use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::api::App;
use crate::runtime::Tidemark;

/// Latency buckets (seconds): from a cached read to a slow provider.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Commands per group commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// A kind of metric, as Prometheus types it.
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric this process exports, with what Prometheus' `# HELP` says of it.
pub struct Exported {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub help: &'static str,
}

/// Every metric this process exports (histograms by their base name): described to
/// the recorder from here, and what dashboards and their tests may name.
pub const EXPORTED: &[Exported] = &[
    Exported {
        name: "tidemark_http_requests_total",
        kind: Kind::Counter,
        unit: None,
        help: "HTTP requests answered, by method, route pattern and status",
    },
    Exported {
        name: "tidemark_http_request_duration_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Time to answer an HTTP request (to its headers), by method and route pattern",
    },
    Exported {
        name: "tidemark_log_append_duration_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "From handing commands to the log to their being durable (group commit and fsync)",
    },
    Exported {
        name: "tidemark_command_visible_duration_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "From commands being durable to the views showing their effects (the dataflow)",
    },
    Exported {
        name: "tidemark_log_group_commit_commands",
        kind: Kind::Histogram,
        unit: None,
        help: "Commands written and fsynced together by the embedded log (one group commit)",
    },
    Exported {
        name: "tidemark_log_fsync_duration_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Writing and fsyncing one group commit of the embedded log",
    },
    Exported {
        name: "tidemark_provider_call_duration_seconds",
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Calls to the payment provider and the carrier, by provider, operation and outcome (a batch of charges is one call)",
    },
    Exported {
        name: "tidemark_view_rows",
        kind: Kind::Gauge,
        unit: None,
        help: "Rows in each view",
    },
    Exported {
        name: "tidemark_changefeed_readers",
        kind: Kind::Gauge,
        unit: None,
        help: "Open readers of the views' changefeeds",
    },
    Exported {
        name: "tidemark_changefeed_readers_behind_total",
        kind: Kind::Counter,
        unit: None,
        help: "Changefeed readers that fell behind and started again from a snapshot",
    },
    Exported {
        name: "tidemark_view_unmatched_retractions_total",
        kind: Kind::Counter,
        unit: None,
        help: "Retractions of rows the views did not hold: an inconsistency, zero unless something is wrong",
    },
    Exported {
        name: "tidemark_effects_pending",
        kind: Kind::Gauge,
        unit: None,
        help: "Calls to providers the saga waits for",
    },
    Exported {
        name: "tidemark_log_end_position",
        kind: Kind::Gauge,
        unit: None,
        help: "The position the next command will get",
    },
    Exported {
        name: "tidemark_metrics_lag_seconds",
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "How far (in log time) the metric views are behind the read models",
    },
    Exported {
        name: "tidemark_kafka_commands_unapplied",
        kind: Kind::Gauge,
        unit: None,
        help: "Kafka mode: commands in the topic this process has not applied yet (its consumer lag)",
    },
    Exported {
        name: "tidemark_ready",
        kind: Kind::Gauge,
        unit: None,
        help: "1 once the views have caught up with the log and the log takes appends",
    },
    Exported {
        name: "tidemark_provider_circuit_open",
        kind: Kind::Gauge,
        unit: None,
        help: "1 while a provider's circuit breaker pauses calls",
    },
    Exported {
        name: "tidemark_orders_per_minute",
        kind: Kind::Gauge,
        unit: None,
        help: "Orders placed per minute over the last 5 minutes of log time",
    },
    Exported {
        name: "tidemark_average_order_value_cents",
        kind: Kind::Gauge,
        unit: None,
        help: "Average paid order today, by currency, in minor units",
    },
    Exported {
        name: "tidemark_payment_success_ratio",
        kind: Kind::Gauge,
        unit: None,
        help: "Of the charges decided in the last hour, those that succeeded",
    },
    Exported {
        name: "tidemark_inventory_turnover_ratio",
        kind: Kind::Gauge,
        unit: None,
        help: "Units shipped over average units on hand, all products",
    },
    Exported {
        name: "process_cpu_seconds_total",
        kind: Kind::Counter,
        unit: Some(Unit::Seconds),
        help: "CPU time of this process, user and system",
    },
    Exported {
        name: "process_resident_memory_bytes",
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Resident memory of this process",
    },
    Exported {
        name: "process_open_fds",
        kind: Kind::Gauge,
        unit: None,
        help: "Open file descriptors of this process",
    },
];

/// Whether `name` is one of `EXPORTED` (a histogram by its base name).
pub fn is_exported(name: &str) -> bool {
    EXPORTED.iter().any(|metric| metric.name == name)
}

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("tidemark_log_group_commit_commands".into()),
                    BATCH_BUCKETS,
                )
            })
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Only this module installs one.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    for metric in EXPORTED {
        let (name, help) = (metric.name, metric.help);
        match (&metric.kind, metric.unit) {
            (Kind::Counter, Some(unit)) => describe_counter!(name, unit, help),
            (Kind::Counter, None) => describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => describe_gauge!(name, help),
            (Kind::Histogram, Some(unit)) => describe_histogram!(name, unit, help),
            (Kind::Histogram, None) => describe_histogram!(name, help),
        }
    }
}

/// The metrics listener's routes: `GET /metrics`.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        // As the API answers them: problem documents.
        .fallback(crate::api::not_found)
        .method_not_allowed_fallback(crate::api::method_not_allowed)
        .with_state(app)
}

async fn metrics(State(app): State<App>) -> Response {
    let text = scrape(&app).await;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The exposition now, with the log's consumer lag asked of the broker (Kafka mode).
pub async fn scrape(app: &App) -> String {
    let log = std::sync::Arc::clone(&app.log);
    let unapplied =
        tokio::task::spawn_blocking(move || log.unapplied(std::time::Duration::from_secs(2))).await;
    // A broker that does not answer leaves no figure rather than a wrong one.
    if let Ok(Ok(Some(behind))) = unapplied {
        gauge!("tidemark_kafka_commands_unapplied").set(behind as f64);
    }
    render(app)
}

/// The exposition now: what was recorded, and the state read at this moment.
pub fn render(app: &Tidemark) -> String {
    let handle = handle();
    observe_state(app);
    observe_process();
    handle.render()
}

fn observe_state(app: &Tidemark) {
    let snapshot = app.views.read();
    for (view, rows) in [
        ("products", snapshot.products.len()),
        ("users", snapshot.users.len()),
        ("carts", snapshot.carts.len()),
        ("orders", snapshot.orders.len()),
        ("payments", snapshot.payments.len()),
        ("shipments", snapshot.shipments.len()),
        ("reservations", snapshot.reservations.len()),
        ("reports", snapshot.reports.len()),
        ("api_keys", snapshot.api_keys.len()),
        ("sessions", snapshot.sessions.len()),
        ("sign_ins", snapshot.sign_ins.len()),
    ] {
        gauge!("tidemark_view_rows", "view" => view).set(rows as f64);
    }
    gauge!("tidemark_changefeed_readers").set(app.changefeeds.readers() as f64);
    counter!("tidemark_view_unmatched_retractions_total")
        .absolute(snapshot.unmatched_retractions());
    gauge!("tidemark_effects_pending").set(snapshot.effects.len() as f64);
    gauge!("tidemark_log_end_position").set(app.log.durable_end() as f64);
    let lag_ms = log_ts(app.views.frontier()).saturating_sub(log_ts(app.views.metrics_frontier()));
    gauge!("tidemark_metrics_lag_seconds").set(lag_ms as f64 / 1000.0);
    let ready = app.is_ready() && app.log_available();
    gauge!("tidemark_ready").set(f64::from(u8::from(ready)));
    for (provider, breaker) in [
        ("payment", &app.payment_breaker),
        ("carrier", &app.carrier_breaker),
    ] {
        let open = breaker.state() == "open";
        gauge!("tidemark_provider_circuit_open", "provider" => provider)
            .set(f64::from(u8::from(open)));
    }
    let kpis = app.views.read_consistent().kpis();
    gauge!("tidemark_orders_per_minute").set(kpis.orders_per_minute.last_5m);
    for (currency, average) in &kpis.average_order_cents {
        if let Some(today) = average.today {
            gauge!("tidemark_average_order_value_cents", "currency" => currency.to_string())
                .set(today);
        }
    }
    if let Some(rate) = kpis.payment_success_rate.last_hour {
        gauge!("tidemark_payment_success_ratio").set(rate);
    }
    if let Some(turnover) = kpis.inventory_turnover.overall {
        gauge!("tidemark_inventory_turnover_ratio").set(turnover);
    }
}

/// CPU, memory and descriptors of this process, from `/proc` (Linux; elsewhere none).
fn observe_process() {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), rss is field 24 (in pages).
    let number = |index: usize| {
        fields
            .get(index - 3)
            .and_then(|field| field.parse::<f64>().ok())
    };
    // Clock ticks per second and the page size: 100 and 4 KiB on Linux's usual builds.
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    if let (Some(user), Some(system)) = (number(14), number(15)) {
        counter!("process_cpu_seconds_total").absolute(((user + system) / TICKS) as u64);
    }
    if let Some(pages) = number(24) {
        gauge!("process_resident_memory_bytes").set(pages * PAGE);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge!("process_open_fds").set(fds.count() as f64);
    }
}

/// Notes the route pattern a request matched, for `track` outside the router.
#[derive(Clone)]
pub struct Route(pub String);

/// Inside the router: which route pattern answered (`/api/v1/orders/{id}`), never the
/// path itself, which would make a series per order.
pub async fn mark_route(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response
            .extensions_mut()
            .insert(Route(matched.as_str().to_string()));
    }
    response
}

/// Around everything: counts each answer by method, route and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let _ = handle();
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<Route>()
        .map_or_else(|| "unmatched".to_string(), |route| route.0.clone());
    let took = started.elapsed();
    crate::pulse::pulse().record(&route, response.status().as_u16(), took);
    let status = response.status().as_u16().to_string();
    histogram!("tidemark_http_request_duration_seconds", "method" => method, "route" => route.clone())
        .record(took.as_secs_f64());
    counter!("tidemark_http_requests_total", "method" => method, "route" => route, "status" => status)
        .increment(1);
    response
}
