//! `GET /api/v1/views/{name}/changes`: a view's changefeed as Server-Sent Events, like
//! Materialize's SUBSCRIBE. First a `snapshot` event with the view's rows at a frontier,
//! then an `update` event for each publication that changed a row the reader follows,
//! with each changed row and its diff (+1 in, -1 out; a changed row is its old version
//! out and its new one in). Every event's id is the frontier it brings the reader to,
//! so a client that reconnects with `Last-Event-ID` resumes without a gap or a repeat,
//! or gets a fresh snapshot when the changes since are no longer kept. A reader that
//! falls too far behind gets a `resync` event and a fresh snapshot: it never holds the
//! dataflow back, and never costs more memory than the store's bounded changefeed.
//! The metric views are followed the same way, at the metric views' own frontiers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use dataflows::analytics::{Dim, Metric};
use dataflows::views::{MetricRow, Row};
use queries::{Changes, Snapshot, Start, Subscription};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;

use super::error::{ApiError, ApiResult};
use super::extract::QueryPairs;
use super::App;
use crate::auth::{Caller, Principal};

/// The views a client can follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Followed {
    Orders,
    Products,
    Stock,
    Payments,
    Shipments,
    /// A metric view (`orders_per_minute`, ...), at the metric views' frontiers.
    Metric(Metric),
}

impl Followed {
    const ALL: [(&'static str, Followed); 5] = [
        ("orders", Followed::Orders),
        ("products", Followed::Products),
        ("stock", Followed::Stock),
        ("payments", Followed::Payments),
        ("shipments", Followed::Shipments),
    ];

    fn named(name: &str) -> Option<Followed> {
        let metric = || {
            (Metric::ALL.iter())
                .find(|metric| metric.name() == name)
                .map(|metric| Followed::Metric(*metric))
        };
        (Self::ALL.iter())
            .find(|(known, _)| *known == name)
            .map(|(_, view)| *view)
            .or_else(metric)
    }

    /// Every name a client can follow.
    fn names() -> Vec<&'static str> {
        let views = Self::ALL.iter().map(|(name, _)| *name);
        views
            .chain(Metric::ALL.iter().map(|metric| metric.name()))
            .collect()
    }

    /// The view's changefeed, from `resume_from` if every change since is kept.
    fn subscribe(self, app: &App, resume_from: Option<u64>) -> Subscription {
        match self {
            Followed::Metric(_) => app.views.subscribe_metrics(resume_from),
            _ => app.views.subscribe(resume_from),
        }
    }

    /// The scope that lets a caller follow every user's rows; customers follow their
    /// own. `None`: anyone follows every row (the public catalog).
    fn scope(self) -> Option<&'static str> {
        match self {
            Followed::Products | Followed::Stock => None,
            Followed::Orders | Followed::Shipments => Some("orders:read"),
            Followed::Payments => Some("payment:read"),
            Followed::Metric(_) => Some("analytics:read"),
        }
    }
}

/// Which rows of the view one reader follows.
struct Filter {
    view: Followed,
    /// One row, by its id (an order's, a product's, ...).
    id: Option<String>,
    /// One user's rows (orders; payments and shipments by their order's user).
    user_id: Option<String>,
}

impl Filter {
    /// The row as JSON, if it is one this reader follows. `snapshot` finds the order a
    /// payment or a shipment belongs to. Only the rows kept are serialised.
    fn pick(&self, row: &Row, snapshot: &Snapshot) -> Option<Value> {
        let (id, order_id) = match (self.view, row) {
            (Followed::Orders, Row::Order(order)) => (&*order.order_id, &*order.order_id),
            (Followed::Products, Row::Product(product)) => (&*product.product_id, ""),
            (Followed::Stock, Row::Stock(stock)) => (&*stock.product_id, ""),
            (Followed::Payments, Row::Payment(payment)) => {
                (&*payment.payment_id, &*payment.order_id)
            }
            (Followed::Shipments, Row::Shipment(shipment)) => {
                (&*shipment.shipment_id, &*shipment.order_id)
            }
            (Followed::Metric(metric), Row::Metric(row)) if row.metric == metric => (&*row.id, ""),
            _ => return None,
        };
        if self.id.as_deref().is_some_and(|wanted| wanted != id) {
            return None;
        }
        if let Some(user_id) = &self.user_id {
            let owner = match row {
                Row::Order(order) => Some(&*order.user_id),
                _ => snapshot.orders.get(order_id).map(|order| &*order.user_id),
            };
            if owner != Some(user_id.as_str()) {
                return None;
            }
        }
        match row {
            Row::Order(order) => Some(to_json(&**order)),
            Row::Product(product) => Some(to_json(&**product)),
            Row::Stock(stock) => Some(to_json(&**stock)),
            Row::Payment(payment) => Some(to_json(&**payment)),
            Row::Shipment(shipment) => Some(to_json(&**shipment)),
            Row::Metric(row) => Some(metric_json(row)),
            _ => None,
        }
    }

    /// Every row of the view this reader follows, at the snapshot's frontier.
    fn rows(&self, snapshot: &Snapshot) -> Vec<Value> {
        let rows: Box<dyn Iterator<Item = Row>> = match self.view {
            Followed::Orders => Box::new(snapshot.orders.shared_rows().cloned().map(Row::Order)),
            Followed::Products => {
                Box::new(snapshot.products.shared_rows().cloned().map(Row::Product))
            }
            Followed::Stock => Box::new(snapshot.stock_rows().map(Row::Stock)),
            Followed::Payments => {
                Box::new(snapshot.payments.shared_rows().cloned().map(Row::Payment))
            }
            Followed::Shipments => {
                Box::new(snapshot.shipments.shared_rows().cloned().map(Row::Shipment))
            }
            Followed::Metric(metric) => Box::new(
                snapshot
                    .metric(metric)
                    .shared_rows()
                    .cloned()
                    .map(Row::Metric),
            ),
        };
        rows.filter_map(|row| self.pick(&row, snapshot)).collect()
    }
}

fn to_json(row: &impl serde::Serialize) -> Value {
    super::json::to_value(row)
}

/// A metric row as its SQL table has it: `{id, key columns..., measures..., derived...}`;
/// minutes in Unix milliseconds, days as `YYYY-MM-DD`.
fn metric_json(row: &MetricRow) -> Value {
    let table = row.metric.table();
    let mut object = serde_json::Map::new();
    object.insert("id".into(), json!(row.id));
    for ((name, _), dim) in table.keys.iter().zip(row.key.iter()) {
        let value = match dim {
            Dim::Minute(minute) => json!(minute),
            Dim::Day(day) => {
                // Days from the common era's first to the Unix epoch's.
                let date = i32::try_from(*day + 719_163)
                    .ok()
                    .and_then(chrono::NaiveDate::from_num_days_from_ce_opt);
                date.map_or(json!(day), |date| json!(date.to_string()))
            }
            Dim::Text(text) => json!(text),
            Dim::Int(int) => json!(int),
        };
        object.insert((*name).into(), value);
    }
    for (name, measure) in table.measures.iter().zip(row.measures.iter()) {
        object.insert((*name).into(), json!(measure));
    }
    for (name, derived) in row.derived() {
        let derived = derived.filter(|value| value.is_finite());
        object.insert(name.into(), json!(derived));
    }
    Value::Object(object)
}

/// Longest a `Last-Event-ID` can be: a frontier is a 64-bit number.
const MAX_EVENT_ID: usize = 20;

/// `GET /views/{name}/changes`.
pub async fn changes(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(name): Path<String>,
    query: QueryPairs,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(view) = Followed::named(&name) else {
        let names = Followed::names();
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "there is no view {name:?} to follow; there are {}",
                names.join(", ")
            ),
        ));
    };
    let filter = filter(view, &caller, &query)?;
    let resume_from = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|id| id.len() <= MAX_EVENT_ID)
                .and_then(|id| id.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "Last-Event-ID",
                        "must be the id of an event this feed sent: a frontier, a whole number",
                    )
                })?,
        ),
    };
    let subscription = view.subscribe(&app, resume_from);
    let mut feed = Feed {
        app,
        filter,
        queued: VecDeque::new(),
        updates: None,
    };
    feed.start(subscription);
    let closing = Box::pin(feed.app.streams_closing());
    let stream = futures::stream::unfold((feed, closing), |(mut feed, mut closing)| async move {
        let event = tokio::select! {
            event = feed.next() => event?,
            // The server is stopping: the client reconnects (to another server, or to
            // this one once it is back) with the last id it had.
            () = &mut closing => return None,
        };
        Some((Ok::<_, Infallible>(event), (feed, closing)))
    });
    Ok(axum::response::Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The rows a caller may follow: customers only their own (and asking for another
/// user's is refused); callers with the view's scope, anyone's. The metric views belong
/// to nobody: they need the scope.
fn filter(view: Followed, caller: &Principal, query: &QueryPairs) -> ApiResult<Filter> {
    if let (Followed::Metric(_), Some(scope)) = (view, view.scope()) {
        caller.require(scope)?;
    }
    let id = query.get("id").map(str::to_string);
    let user_id = query.get("user_id").map(str::to_string);
    if user_id.is_some()
        && !matches!(
            view,
            Followed::Orders | Followed::Payments | Followed::Shipments
        )
    {
        return Err(ApiError::invalid_field(
            "user_id",
            "only orders, payments and shipments belong to users",
        ));
    }
    for (field, value) in [("id", &id), ("user_id", &user_id)] {
        if value
            .as_ref()
            .is_some_and(|value| value.is_empty() || value.len() > 128)
        {
            return Err(ApiError::invalid_field(
                field,
                "must be 1 to 128 characters",
            ));
        }
    }
    let user_id = match view.scope() {
        None => user_id,
        Some(scope) if caller.has_scope(scope) => user_id,
        Some(scope) => match caller.user_id() {
            // Not a user, and without the scope: refused (401 or 403).
            None => {
                caller.require(scope)?;
                user_id
            }
            Some(me) => {
                if let Some(asked) = &user_id {
                    caller.require_owner_or(asked, scope)?;
                }
                Some(me.to_string())
            }
        },
    };
    Ok(Filter { view, id, user_id })
}

/// One reader's stream: what is queued to send, then the store's changes.
struct Feed {
    app: App,
    filter: Filter,
    queued: VecDeque<Sse>,
    updates: Option<tokio::sync::broadcast::Receiver<Arc<Changes>>>,
}

impl Feed {
    fn start(&mut self, subscription: Subscription) {
        let Subscription {
            start,
            frontier,
            updates,
        } = subscription;
        match start {
            Start::Snapshot(snapshot) => {
                let rows = self.filter.rows(&snapshot);
                self.queued.push_back(event(
                    "snapshot",
                    frontier,
                    json!({"frontier": frontier, "rows": rows}),
                ));
            }
            Start::Resume(replay) => {
                for changes in replay {
                    self.queue(&changes);
                }
            }
        }
        self.updates = Some(updates);
    }

    fn queue(&mut self, changes: &Changes) {
        let snapshot = self.app.views.read();
        let changed: Vec<Value> = (changes.updates.iter())
            .filter_map(|(row, diff)| {
                let row = self.filter.pick(row, &snapshot)?;
                Some(json!({"row": row, "diff": diff}))
            })
            .collect();
        if !changed.is_empty() {
            self.queued.push_back(event(
                "update",
                changes.frontier,
                json!({"frontier": changes.frontier, "changes": changed}),
            ));
        }
    }

    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            let updates = self.updates.as_mut()?;
            match updates.recv().await {
                Ok(changes) => self.queue(&changes),
                Err(RecvError::Lagged(missed)) => {
                    self.queued.push_back(Sse::default().event("resync").data(
                        json!({
                            "reason": format!(
                                "this reader fell {missed} publications behind; a fresh snapshot follows"
                            )
                        })
                        .to_string(),
                    ));
                    let subscription = self.filter.view.subscribe(&self.app, None);
                    self.start(subscription);
                }
                // The store is gone: the server is stopping.
                Err(RecvError::Closed) => self.updates = None,
            }
        }
    }
}

fn event(kind: &str, frontier: u64, data: Value) -> Sse {
    Sse::default()
        .event(kind)
        .id(frontier.to_string())
        .data(data.to_string())
}
