//! Logging, set up once in `main`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Whether logs and progress go to a person (pretty, progress bar) or a machine (JSON).
pub fn is_json(format: LogFormat) -> bool {
    match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    }
}

/// Where traces go, when they go anywhere (`otlp_endpoint`).
pub struct Tracing {
    /// The collector's OTLP/HTTP traces URL (`Config::traces_url`).
    pub url: String,
    /// The share of new traces kept.
    pub sample_ratio: f64,
}

/// Flushes the traces still buffered when dropped: hold it until the server stops.
pub struct Traces(opentelemetry_sdk::trace::SdkTracerProvider);

impl Drop for Traces {
    fn drop(&mut self) {
        if let Err(error) = self.0.shutdown() {
            tracing::warn!(%error, "could not send the last traces");
        }
    }
}

static TRACING_ON: AtomicBool = AtomicBool::new(false);

/// Whether spans go to a collector: only then are remote parents read and trace ids
/// written into the log lines.
pub fn tracing_on() -> bool {
    TRACING_ON.load(Ordering::Relaxed)
}

/// Makes `span` a child of the caller's trace when the request carries a W3C
/// `traceparent`, and writes its trace id into the span's `trace_id` field, which
/// every log line written inside it carries.
pub fn follow_caller(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    struct Headers<'a>(&'a axum::http::HeaderMap);
    impl opentelemetry::propagation::Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|value| value.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(|name| name.as_str()).collect()
        }
    }
    let caller = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Headers(headers))
    });
    if caller.span().span_context().is_valid() {
        let _ = span.set_parent(caller);
    }
    let trace_id = span.context().span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// Names a request's span by its route (`POST /api/v1/orders`), known once the
/// router has matched it. Only while spans go to a collector (`tracing_on`).
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    span.context().span().update_name(name);
}

/// Sets up the log lines (JSON or pretty, on stderr) and, with `traces`, the export of
/// spans to an OpenTelemetry collector. Call once, outside the async runtime (the
/// exporter has a blocking HTTP client of its own). An exporter that cannot be built
/// is an error: the operator asked for traces.
pub fn init(format: LogFormat, traces: Option<Tracing>) -> Result<Option<Traces>, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    let filter = EnvFilter::try_from_env("TIDEMARK_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let lines: Boxed = if is_json(format) {
        let json = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr);
        Box::new(json)
    } else {
        Box::new(
            tracing_subscriber::fmt::layer()
                .compact()
                .with_writer(std::io::stderr),
        )
    };
    let (spans, provider): (Option<Boxed>, _) = match traces {
        None => (None, None),
        Some(traces) => {
            let provider = tracer_provider(&traces)?;
            let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "tidemark");
            let layer = tracing_opentelemetry::layer().with_tracer(tracer);
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            TRACING_ON.store(true, Ordering::Relaxed);
            (Some(Box::new(layer)), Some(Traces(provider)))
        }
    };
    let subscriber = tracing_subscriber::registry()
        .with(lines.and_then(spans))
        .with(filter);
    tracing::subscriber::set_global_default(subscriber).map_err(|error| error.to_string())?;
    // librdkafka logs through the `log` crate.
    log::set_boxed_logger(Box::new(KafkaLogs::new(tracing_log::LogTracer::new())))
        .map_err(|error| error.to_string())?;
    log::set_max_level(tracing_log::AsLog::as_log(
        &tracing::level_filters::LevelFilter::current(),
    ));
    Ok(provider)
}

/// Spans in batches to the collector, each new trace kept with `sample_ratio` (by its
/// trace id, so every span of a kept trace is kept), a caller's own decision followed.
fn tracer_provider(
    traces: &Tracing,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::Sampler;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces.url.clone())
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|error| format!("the OTLP exporter for {}: {error}", traces.url))?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(traces.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("tidemark")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

/// How often one warning stands for librdkafka's connection failures.
const TRANSPORT_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// librdkafka's records on their way to `tracing`. While a broker is away, every client
/// reports each failed connection attempt as an error, several a second. tidemark
/// reports the outage itself (`/health/ready` answers 503 `log_unavailable`, the log
/// and the event sink warn once), so these become one warning every ten seconds that
/// counts the ones it stands for. Every other record passes unchanged.
pub struct KafkaLogs<L> {
    inner: L,
    /// When the last transport failure was passed on, and how many were held back since.
    transport: Mutex<(Option<Instant>, u64)>,
}

impl<L: log::Log> KafkaLogs<L> {
    pub fn new(inner: L) -> Self {
        KafkaLogs {
            inner,
            transport: Mutex::new((None, 0)),
        }
    }

    /// `None` when the record is held back, else the number held back before it.
    fn pass_transport_failure(&self, now: Instant) -> Option<u64> {
        let mut transport = self.transport.lock();
        let (last, held) = &mut *transport;
        if last.is_some_and(|at| now.duration_since(at) < TRANSPORT_REPORT_INTERVAL) {
            *held += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(held))
    }
}

/// Whether a record comes from librdkafka at warning level or above: only those can be
/// a failed connection, and only those need their text read.
fn is_kafka_alarm(record: &log::Record<'_>) -> bool {
    record.level() <= log::Level::Warn
        && (record.target().starts_with("librdkafka") || record.target().starts_with("rdkafka"))
}

/// Whether the text of a librdkafka alarm says that it cannot reach a broker.
fn is_transport_failure(text: &str) -> bool {
    const SIGNS: [&str; 6] = [
        "BrokerTransportFailure",
        "AllBrokersDown",
        "Connection refused",
        "Connect to",
        "Disconnected",
        "Broker transport failure",
    ];
    SIGNS.iter().any(|sign| text.contains(sign))
}

impl<L: log::Log> log::Log for KafkaLogs<L> {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        if !is_kafka_alarm(record) {
            return self.inner.log(record);
        }
        let text = record.args().to_string();
        if !is_transport_failure(&text) {
            return self.inner.log(record);
        }
        let Some(held) = self.pass_transport_failure(Instant::now()) else {
            return;
        };
        let text = if held > 0 {
            format!("{text} ({held} more like it in the last {TRANSPORT_REPORT_INTERVAL:?})")
        } else {
            text
        };
        self.inner.log(
            &log::Record::builder()
                .level(log::Level::Warn)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .args(format_args!("{text}"))
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps (level, text) of what it is handed.
    #[derive(Default)]
    struct Kept(Mutex<Vec<(log::Level, String)>>);

    impl log::Log for &Kept {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            self.0
                .lock()
                .push((record.level(), record.args().to_string()));
        }
        fn flush(&self) {}
    }

    fn send(logs: &KafkaLogs<&Kept>, level: log::Level, target: &str, text: &str) {
        log::Log::log(
            logs,
            &log::Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{text}"))
                .build(),
        );
    }

    #[test]
    fn connection_failures_become_one_warning_and_other_errors_pass() {
        let kept = Kept::default();
        let logs = KafkaLogs::new(&kept);
        let refused = "librdkafka: Global error: BrokerTransportFailure (Local: Broker transport failure): 127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: Connection refused";
        for _ in 0..5 {
            send(&logs, log::Level::Error, "rdkafka::client", refused);
        }
        send(
            &logs,
            log::Level::Error,
            "librdkafka",
            "librdkafka: FAIL SASL authentication error: Authentication failed",
        );
        send(
            &logs,
            log::Level::Error,
            "serving::sinks",
            "Connection refused by the provider",
        );
        let kept = kept.0.lock().clone();
        assert_eq!(
            kept,
            vec![
                (log::Level::Warn, refused.to_string()),
                (
                    log::Level::Error,
                    "librdkafka: FAIL SASL authentication error: Authentication failed".to_string()
                ),
                (
                    log::Level::Error,
                    "Connection refused by the provider".to_string()
                ),
            ]
        );
        // Ten seconds on, the next one passes and counts the four held back.
        *logs.transport.lock() = (Some(Instant::now() - TRANSPORT_REPORT_INTERVAL), 4);
        assert_eq!(logs.pass_transport_failure(Instant::now()), Some(4));
    }
}
