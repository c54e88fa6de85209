//! Dashboards: named sets of panels, each a chart of one SQL query over the live views
//! (the metric views mostly) or of the HTTP layer's pulse. A panel's value is its query's
//! answer at one frontier of the metric views, so every panel of a board agrees with the
//! others and with `/api/v1/sql`. Followers of a board share one computation of it
//! (`Boards`): it runs again when the metric views move, at most every
//! `MIN_INTERVAL`, and each follower is sent only the panels that changed.
//!
//! The built-in boards are compiled in; the others are saved through the API as
//! commands in the log, and read from the `dashboards` view like any other state.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use dataflows::analytics::{Dim, Metric};
pub use dataflows::model::Chart;
use dataflows::model::{DashboardDefinition, PanelDefinition, PanelSource, Str, Ts};
use dataflows::views::DashboardRow;
use parking_lot::Mutex;
use queries::Snapshot;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::api::json::Rfc3339;
use crate::runtime::Tidemark;

/// Where a panel's figures come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A query over the live views, as `POST /api/v1/sql` runs it.
    Sql(Str),
    /// A figure of the last minute's HTTP requests.
    Pulse(Figure),
    /// A figure this server does not know.
    Unknown(Str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    RequestsPerSecond,
    ErrorRate,
    P99LatencyMs,
}

impl Figure {
    pub const ALL: [Figure; 3] = [
        Figure::RequestsPerSecond,
        Figure::ErrorRate,
        Figure::P99LatencyMs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Figure::RequestsPerSecond => "requests_per_second",
            Figure::ErrorRate => "error_rate",
            Figure::P99LatencyMs => "p99_latency_ms",
        }
    }

    pub fn named(name: &str) -> Option<Figure> {
        Figure::ALL.into_iter().find(|figure| figure.name() == name)
    }
}

/// The units a panel's figures can be in.
pub const UNITS: &[&str] = &["cents", "ratio", "ms", "per_second", "days"];

#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    pub id: Str,
    pub title: Str,
    pub chart: Chart,
    pub source: Source,
    /// What the figures count: one of `UNITS` (`cents` are minor units of the row's
    /// currency), or plain counts.
    pub unit: Option<Str>,
    /// The per-minute series of `anomalies` marked on this panel.
    pub anomalies: Vec<Str>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dashboard {
    pub id: Str,
    pub title: Str,
    pub description: Str,
    pub panels: Vec<Panel>,
    /// A saved board's version and times; `None` for a built-in one.
    pub saved: Option<Saved>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saved {
    pub version: u64,
    pub created_at: Ts,
    pub updated_at: Ts,
}

/// The last hour of a per-minute metric view.
macro_rules! last_hour {
    ($columns:literal, $view:literal) => {
        concat!(
            "SELECT minute, ",
            $columns,
            " FROM ",
            $view,
            " WHERE minute > (SELECT max(minute) FROM ",
            $view,
            ") - INTERVAL '1 hour' ORDER BY minute"
        )
    };
}

fn sql(id: &str, title: &str, chart: Chart, query: &str) -> Panel {
    Panel {
        id: id.into(),
        title: title.into(),
        chart,
        source: Source::Sql(query.into()),
        unit: None,
        anomalies: Vec::new(),
    }
}

impl Panel {
    fn unit(mut self, unit: &str) -> Panel {
        self.unit = Some(unit.into());
        self
    }

    fn anomalies(mut self, series: &[&str]) -> Panel {
        self.anomalies = series.iter().map(|&name| name.into()).collect();
        self
    }
}

fn pulse(id: &str, title: &str, figure: Figure, unit: &str) -> Panel {
    Panel {
        id: id.into(),
        title: title.into(),
        chart: Chart::Stat,
        source: Source::Pulse(figure),
        unit: Some(unit.into()),
        anomalies: Vec::new(),
    }
}

/// The built-in dashboards.
fn built_in_boards() -> Vec<Dashboard> {
    vec![
        Dashboard {
            id: "operations".into(),
            title: "Operations".into(),
            description:
                "Orders, revenue and payments as they happen, and how the API is answering.".into(),
            panels: vec![
                sql(
                    "orders_today",
                    "Orders today",
                    Chart::Stat,
                    "SELECT coalesce(sum(orders_placed), 0) AS orders FROM conversion_funnel \
                 WHERE day = (SELECT max(day) FROM conversion_funnel)",
                ),
                sql(
                    "orders_per_minute",
                    "Orders per minute",
                    Chart::Timeseries,
                    last_hour!("orders, orders_last_5m", "orders_per_minute"),
                )
                .anomalies(&["orders"]),
                sql(
                    "revenue_today",
                    "Revenue today",
                    Chart::Stat,
                    "SELECT currency, revenue_cents FROM sales_daily \
                 WHERE day = (SELECT max(day) FROM sales_daily) ORDER BY currency",
                )
                .unit("cents"),
                sql(
                    "average_order_value",
                    "Average order value today",
                    Chart::Stat,
                    "SELECT currency, average_order_cents FROM sales_daily \
                 WHERE day = (SELECT max(day) FROM sales_daily) ORDER BY currency",
                )
                .unit("cents"),
                sql(
                    "payment_success",
                    "Payment success today",
                    Chart::Stat,
                    "SELECT CAST(sum(succeeded) AS DOUBLE) \
                 / nullif(sum(succeeded + declined + fraudulent), 0) AS success_rate \
                 FROM payment_success WHERE day = (SELECT max(day) FROM payment_success)",
                )
                .unit("ratio"),
                pulse(
                    "p99_latency",
                    "API p99 latency (last minute)",
                    Figure::P99LatencyMs,
                    "ms",
                ),
                pulse(
                    "error_rate",
                    "API error rate (last minute)",
                    Figure::ErrorRate,
                    "ratio",
                ),
                pulse(
                    "request_rate",
                    "API requests (last minute)",
                    Figure::RequestsPerSecond,
                    "per_second",
                ),
                sql(
                    "rejections",
                    "Refused commands per minute",
                    Chart::Timeseries,
                    last_hour!("rejections", "orders_per_minute"),
                )
                .anomalies(&["rejections"]),
            ],
            saved: None,
        },
        Dashboard {
            id: "inventory".into(),
            title: "Inventory".into(),
            description: "What is running low, when it runs out at the current pace, and how fast \
            stock turns."
                .into(),
            panels: vec![
                sql(
                    "low_stock",
                    "Low stock",
                    Chart::Table,
                    "SELECT coalesce(p.name, l.product_id) AS product, p.sku, l.available, \
                 l.reorder_point FROM low_stock l LEFT JOIN products p ON p.id = l.product_id \
                 ORDER BY l.available, l.product_id LIMIT 20",
                ),
                sql(
                    "days_to_stockout",
                    "Days until stock-out",
                    Chart::Bar,
                    "SELECT coalesce(p.name, f.product_id) AS product, f.days_until_stockout \
                 FROM stock_forecast f LEFT JOIN products p ON p.id = f.product_id \
                 WHERE f.days_until_stockout IS NOT NULL \
                 ORDER BY f.days_until_stockout, product LIMIT 10",
                )
                .unit("days"),
                sql(
                    "turnover",
                    "Inventory turnover",
                    Chart::Bar,
                    "SELECT coalesce(p.name, t.product_id) AS product, t.turnover \
                 FROM inventory_turnover t LEFT JOIN products p ON p.id = t.product_id \
                 WHERE t.turnover IS NOT NULL ORDER BY t.turnover DESC, product LIMIT 10",
                ),
                sql(
                    "top_products",
                    "Top products (units sold)",
                    Chart::Bar,
                    "SELECT coalesce(p.name, t.product_id) AS product, t.units \
                 FROM top_products t LEFT JOIN products p ON p.id = t.product_id \
                 ORDER BY t.rank",
                ),
                sql(
                    "stock_movements",
                    "Units received and shipped per day",
                    Chart::Timeseries,
                    "SELECT day, sum(received) AS received, sum(shipped) AS shipped \
                 FROM inventory_daily GROUP BY day ORDER BY day DESC LIMIT 30",
                ),
            ],
            saved: None,
        },
        Dashboard {
            id: "payments".into(),
            title: "Payments".into(),
            description: "Which charges succeed, why the others are declined, refunds and fraud."
                .into(),
            panels: vec![
            sql(
                "success_by_brand",
                "Success rate by card brand",
                Chart::Bar,
                "SELECT card_brand, CAST(sum(succeeded) AS DOUBLE) \
                 / nullif(sum(succeeded + declined + fraudulent), 0) AS success_rate \
                 FROM payment_success GROUP BY card_brand ORDER BY card_brand",
            )
            .unit("ratio"),
            sql(
                "decline_reasons",
                "Decline reasons",
                Chart::Bar,
                "SELECT decline_code, sum(payments) AS payments FROM payment_declines \
                 GROUP BY decline_code ORDER BY payments DESC, decline_code",
            ),
            sql(
                "refunds",
                "Refunds",
                Chart::Table,
                "SELECT currency, sum(refunds) AS refunds, sum(refunded_cents) AS refunded_cents \
                 FROM sales_daily GROUP BY currency ORDER BY currency",
            ),
            sql(
                "payments_per_minute",
                "Payments per minute",
                Chart::Timeseries,
                last_hour!("payments_succeeded, payments_failed", "orders_per_minute"),
            )
            .anomalies(&["payments_failed"]),
            sql(
                "fraud_flags",
                "Fraud flags per minute",
                Chart::Timeseries,
                last_hour!("fraud_flags", "orders_per_minute"),
            )
            .anomalies(&["fraud_flags"]),
        ],
            saved: None,
        },
    ]
}

/// Most rows a panel shows.
const MAX_PANEL_ROWS: usize = 500;
/// Shortest time between two computations of a followed board.
const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// How often a followed board is computed while the views stand still (its pulse
/// panels move with time).
const PULSE_INTERVAL: Duration = Duration::from_secs(2);

static BUILT_IN: LazyLock<Vec<Arc<Dashboard>>> =
    LazyLock::new(|| built_in_boards().into_iter().map(Arc::new).collect());

/// The built-in dashboards, in the order they are listed.
pub fn built_in() -> &'static [Arc<Dashboard>] {
    &BUILT_IN
}

pub fn is_built_in(id: &str) -> bool {
    built_in().iter().any(|board| &*board.id == id)
}

/// The dashboard `id` as `snapshot` has it: a built-in one, or a saved one.
pub fn find(snapshot: &Snapshot, id: &str) -> Option<Arc<Dashboard>> {
    let built_in = built_in().iter().find(|board| &*board.id == id).cloned();
    built_in.or_else(|| {
        let row = snapshot.dashboards.get(id)?;
        Some(Arc::new(Dashboard::saved(row)))
    })
}

/// Every dashboard: the built-in ones, then the saved ones by id.
pub fn all(snapshot: &Snapshot) -> Vec<Arc<Dashboard>> {
    let saved = snapshot.dashboards.values().map(Dashboard::saved);
    (built_in().iter().cloned())
        .chain(saved.map(Arc::new))
        .collect()
}

/// A dashboard as the API shows it: its definition, and with `GET /dashboards/{id}`
/// each panel's value at one frontier.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DashboardView {
    pub id: Str,
    pub title: Str,
    pub description: Str,
    /// Compiled into the server (and not to be changed), or saved through the API.
    pub built_in: bool,
    /// A saved board's version: 1 when created, one more at each update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Rfc3339>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Rfc3339>,
    pub panels: Vec<PanelView>,
    /// The frontier of the metric views every value was read at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontier: Option<u64>,
}

/// `GET /dashboards`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct DashboardList {
    pub dashboards: Vec<DashboardView>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct PanelView {
    pub id: Str,
    pub title: Str,
    pub chart: Chart,
    /// What the figures count: `cents` (minor units of the row's currency), `ratio`,
    /// `ms`, `per_second`, `days`, or null for plain counts.
    pub unit: Option<Str>,
    pub source: SourceView,
    /// The per-minute series of the `anomalies` view marked on this panel.
    pub anomaly_series: Vec<Str>,
    /// The panel's figures, with the board's values.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<PanelValue>")]
    pub value: Option<Value>,
}

/// Where a panel's figures come from.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum SourceView {
    /// A query over the live views, as `POST /sql` runs it.
    Sql { sql: Str },
    /// A figure of the API's last minute: `p99_latency_ms`, `error_rate` or
    /// `requests_per_second`.
    Process { process: Str },
}

/// A panel's value, as `chart_rows` and `compute` make it (the schema only).
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct PanelValue {
    /// The columns, each `{name, type}` (SQL type names).
    #[serde(skip_serializing_if = "Option::is_none")]
    columns: Option<Vec<PanelColumn>>,
    /// The rows, one value per column; times as Unix milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<Vec<Vec<Value>>>,
    /// The anomalies marked on a timeseries: `[minute, series, value, lower, upper]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    anomalies: Option<Vec<Anomaly>>,
    /// Why the panel's query failed, instead of the rest.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `[minute, series, value, lower, upper]`.
type Anomaly = (i64, String, Option<f64>, Option<f64>, Option<f64>);

#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct PanelColumn {
    name: String,
    r#type: String,
}

impl Dashboard {
    /// A saved dashboard, from its row of the `dashboards` view.
    pub fn saved(row: &DashboardRow) -> Dashboard {
        let DashboardDefinition {
            title,
            description,
            panels,
        } = &row.definition;
        Dashboard {
            id: row.dashboard_id.clone(),
            title: title.clone(),
            description: description.clone(),
            panels: panels.iter().map(Panel::saved).collect(),
            saved: Some(Saved {
                version: row.version,
                created_at: row.created_at,
                updated_at: row.updated_at,
            }),
        }
    }

    /// The definition, as listed.
    pub fn definition(&self) -> DashboardView {
        DashboardView {
            id: self.id.clone(),
            title: self.title.clone(),
            description: self.description.clone(),
            built_in: self.saved.is_none(),
            version: self.saved.map(|saved| saved.version),
            created_at: self.saved.map(|saved| Rfc3339(saved.created_at)),
            updated_at: self.saved.map(|saved| Rfc3339(saved.updated_at)),
            panels: self.panels.iter().map(Panel::definition).collect(),
            frontier: None,
        }
    }
}

impl Panel {
    fn saved(panel: &PanelDefinition) -> Panel {
        Panel {
            id: panel.id.clone(),
            title: panel.title.clone(),
            chart: panel.chart,
            source: match &panel.source {
                PanelSource::Sql(sql) => Source::Sql(sql.clone()),
                // Checked when it was saved; a name this server no longer knows shows
                // as the panel's error.
                PanelSource::Process(name) => match Figure::named(name) {
                    Some(figure) => Source::Pulse(figure),
                    None => Source::Unknown(name.clone()),
                },
            },
            unit: panel.unit.clone(),
            anomalies: panel.anomaly_series.clone(),
        }
    }

    fn definition(&self) -> PanelView {
        let source = match &self.source {
            Source::Sql(sql) => SourceView::Sql { sql: sql.clone() },
            Source::Pulse(figure) => SourceView::Process {
                process: figure.name().into(),
            },
            Source::Unknown(name) => SourceView::Process {
                process: name.clone(),
            },
        };
        PanelView {
            id: self.id.clone(),
            title: self.title.clone(),
            chart: self.chart,
            unit: self.unit.clone(),
            source,
            anomaly_series: self.anomalies.clone(),
            value: None,
        }
    }
}

/// A board's panels at one frontier of the metric views.
#[derive(Clone, Debug, PartialEq)]
pub struct Board {
    /// The definition the values were computed for.
    pub dashboard: Arc<Dashboard>,
    pub frontier: u64,
    /// Each panel's value, in the board's order: `{"columns", "rows"}` (and the
    /// `anomalies` marked on it), or `{"error"}` when its query failed.
    pub values: Vec<Value>,
}

impl Board {
    /// The definition with each panel's value.
    pub fn view(&self) -> DashboardView {
        let mut view = self.dashboard.definition();
        for (panel, value) in view.panels.iter_mut().zip(&self.values) {
            panel.value = Some(value.clone());
        }
        view.frontier = Some(self.frontier);
        view
    }
}

/// Every panel of `dashboard` over `snapshot` (the metric views' consistent one).
pub async fn compute(app: &Tidemark, dashboard: Arc<Dashboard>, snapshot: Arc<Snapshot>) -> Board {
    let mut values = Vec::with_capacity(dashboard.panels.len());
    for panel in &dashboard.panels {
        let value = match &panel.source {
            Source::Sql(query) => {
                let answer = app
                    .sql
                    .run(
                        Arc::clone(&snapshot),
                        query.to_string(),
                        None,
                        Some(MAX_PANEL_ROWS),
                    )
                    .await;
                match answer
                    .map_err(|error| error.to_string())
                    .and_then(|answer| sql::output::chart_rows(&answer).map_err(|e| e.to_string()))
                {
                    Ok(mut value) => {
                        if !panel.anomalies.is_empty() {
                            value["anomalies"] = anomalies(&snapshot, &panel.anomalies, &value);
                        }
                        value
                    }
                    Err(error) => json!({ "error": error }),
                }
            }
            Source::Pulse(figure) => {
                let reading = crate::pulse::pulse().read();
                let figure_value = match figure {
                    Figure::RequestsPerSecond => Some(reading.requests_per_second),
                    Figure::ErrorRate => reading.error_rate,
                    Figure::P99LatencyMs => reading.p99_ms,
                };
                json!({
                    "columns": [{"name": figure.name(), "type": "double precision"}],
                    "rows": [[figure_value]],
                })
            }
            Source::Unknown(name) => json!({ "error": format!("no figure {name:?}") }),
        };
        values.push(value);
    }
    Board {
        dashboard,
        frontier: snapshot.frontier,
        values,
    }
}

/// The anomalies of `series` from the first minute the panel shows on:
/// `[[minute_ms, series, value, lower, upper], ...]`.
fn anomalies(snapshot: &Snapshot, series: &[Str], value: &Value) -> Value {
    let from = value["rows"][0][0].as_i64().unwrap_or(i64::MIN);
    let marks: Vec<Value> = snapshot
        .metric(Metric::Anomalies)
        .values()
        .filter_map(|row| {
            let (Dim::Minute(minute), Dim::Text(name)) = (&row.key[0], &row.key[1]) else {
                return None;
            };
            let minute = *minute as i64;
            (minute >= from && series.contains(name)).then(|| {
                let measure = |name| row.measure(name);
                json!([
                    minute,
                    name,
                    measure("value"),
                    measure("lower"),
                    measure("upper")
                ])
            })
        })
        .collect();
    Value::Array(marks)
}

/// Where a followed board's newest computation is published: `None` until the first.
type Published = Arc<watch::Sender<Option<Arc<Board>>>>;

/// The boards being followed, each computed once for all its followers.
#[derive(Default)]
pub struct Boards {
    followed: Mutex<HashMap<Str, Published>>,
}

impl Boards {
    /// The newest computation of dashboard `id`, and each one after: `None` until the
    /// first is done. The board is computed while anyone follows it and it exists; the
    /// sender is dropped once it is deleted (or the server stops).
    pub fn follow(&self, app: &Arc<Tidemark>, id: Str) -> watch::Receiver<Option<Arc<Board>>> {
        let mut followed = self.followed.lock();
        if let Some(board) = followed.get(&id) {
            return board.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        followed.insert(id.clone(), Arc::clone(&tx));
        tokio::spawn(keep_computing(Arc::clone(app), id, tx));
        rx
    }
}

/// Computes dashboard `id` each time the metric views move (and every
/// `PULSE_INTERVAL`), with its newest definition, until nobody follows it or it is
/// deleted.
async fn keep_computing(app: Arc<Tidemark>, id: Str, board: Published) {
    let mut frontier = app.views.subscribe_metrics_frontier();
    let mut closing = std::pin::pin!(app.streams_closing());
    let stop = || {
        app.dashboards.followed.lock().remove(&id);
    };
    loop {
        let dashboard = {
            // Checked and removed together with `follow`'s lookup, so a new follower
            // either finds this task alive or starts another.
            let mut followed = app.dashboards.followed.lock();
            match find(&app.views.read(), &id) {
                Some(dashboard) if board.receiver_count() > 0 => dashboard,
                _ => {
                    followed.remove(&id);
                    return;
                }
            }
        };
        frontier.mark_unchanged();
        let next = compute(&app, dashboard, app.views.read_consistent()).await;
        board.send_if_modified(|held| {
            let changed = held.as_deref() != Some(&next);
            if changed {
                *held = Some(Arc::new(next));
            }
            changed
        });
        tokio::time::sleep(MIN_INTERVAL).await;
        tokio::select! {
            changed = frontier.changed() => {
                // The store is gone: the server is stopping.
                if changed.is_err() {
                    return stop();
                }
            }
            () = tokio::time::sleep(PULSE_INTERVAL) => {}
            () = &mut closing => return stop(),
        }
    }
}
