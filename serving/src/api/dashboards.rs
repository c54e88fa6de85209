//! Dashboards over HTTP: their definitions and values (`/api/v1/dashboards*`), each
//! board's changes as Server-Sent Events, and the page that draws them (`/dashboard`),
//! served from the binary with its chart library (uPlot, vendored), no CDN.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::Event as Sse;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use dataflows::analytics::anomaly::SERIES;
use dataflows::model::{Command as DomainCommand, DashboardDefinition, PanelDefinition};
use dataflows::model::{PanelSource, Str};
use queries::Snapshot;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::error::{ApiError, ApiResult, FieldError};
use super::extract::Command;
use super::sql::MAX_SQL_BYTES;
use super::validate::{hidden, Validator};
use super::{admit, new_id, run_fresh, Admission, App};
use crate::auth::Caller;
use crate::dashboards::{self, Board, Chart, Dashboard, DashboardList, DashboardView, Figure};

fn found(snapshot: &Snapshot, id: &str) -> ApiResult<Arc<Dashboard>> {
    dashboards::find(snapshot, id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no dashboard {id:?}; GET /api/v1/dashboards lists them"),
        )
    })
}

/// `GET /dashboards`: every dashboard's definition, the built-in ones first.
pub async fn list(State(app): State<App>) -> Json<DashboardList> {
    let dashboards = dashboards::all(&app.views.read())
        .iter()
        .map(|dashboard| dashboard.definition())
        .collect();
    Json(DashboardList { dashboards })
}

/// `GET /dashboards/{id}`: the definition with each panel's value, read once every
/// command acknowledged before the request is in the metric views.
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<DashboardView>> {
    let timeout = Duration::from_millis(app.config.command_timeout_ms);
    let snapshot = app
        .views
        .read_settled(timeout)
        .await
        .map_err(crate::runtime::Error::from)?;
    let dashboard = found(&snapshot, &id)?;
    let board = dashboards::compute(&app, dashboard, snapshot).await;
    Ok(Json(board.view()))
}

/// Most dashboards saved at once.
const MAX_DASHBOARDS: usize = 1000;
/// Most panels on one dashboard: each is a query run whenever the views move.
const MAX_PANELS: usize = 24;

/// A dashboard to save.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveDashboard {
    /// With `POST`, the id to save it under (1 to 64 lower-case letters, digits, `-`
    /// and `_`); one is made when it is left out. With `PUT`, the path's or nothing.
    id: Option<String>,
    title: String,
    #[serde(default)]
    description: String,
    /// 1 to 24 panels.
    panels: Vec<SavePanel>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SavePanel {
    /// Unique within the dashboard, as its id is.
    id: String,
    title: String,
    chart: Chart,
    /// `{"sql": "SELECT ..."}`, a query over the live views as `POST /sql` runs it, or
    /// `{"process": "p99_latency_ms"}` (or `error_rate`, `requests_per_second`).
    source: PanelSource,
    /// `cents`, `ratio`, `ms`, `per_second` or `days`; none for plain counts.
    #[serde(default)]
    unit: Option<String>,
    /// Series of the `anomalies` view to mark on a timeseries panel: `orders`,
    /// `payments_failed`, `fraud_flags`, `rejections`.
    #[serde(default)]
    anomaly_series: Vec<String>,
}

/// Dashboard and panel ids: they appear in paths and in the page's addresses.
fn slug(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

const SLUG: &str =
    "must be 1 to 64 lower-case letters, digits, '-' and '_', starting with a letter or digit";

/// The definition `body` asks for, once every field is checked and every query plans
/// over the views (an unknown table or column, a syntax error or a write is 422 naming
/// the panel).
async fn definition(app: &App, body: SaveDashboard) -> ApiResult<DashboardDefinition> {
    let mut validator = Validator::default();
    if let Some(id) = &body.id {
        validator.check(slug(id), "id", SLUG);
    }
    validator.text(&body.title, "title", 200);
    validator
        .check(
            body.description.chars().count() <= 2000,
            "description",
            "must be at most 2000 characters",
        )
        .check(
            !body.description.chars().any(|c| hidden(c) && c != '\n'),
            "description",
            "must not contain control, zero-width or bidirectional-override characters",
        )
        .check(
            (1..=MAX_PANELS).contains(&body.panels.len()),
            "panels",
            "must hold 1 to 24 panels",
        );
    let mut ids = HashSet::new();
    for (i, panel) in body.panels.iter().enumerate() {
        let field = |name: &str| format!("panels[{i}].{name}");
        validator
            .check(slug(&panel.id), &field("id"), SLUG)
            .check(
                ids.insert(panel.id.as_str()),
                &field("id"),
                "is another panel's id too",
            )
            .text(&panel.title, &field("title"), 200)
            .check(
                (panel.unit.as_deref()).is_none_or(|unit| dashboards::UNITS.contains(&unit)),
                &field("unit"),
                "must be one of cents, ratio, ms, per_second, days, or null",
            )
            .check(
                panel.anomaly_series.is_empty() || panel.chart == Chart::Timeseries,
                &field("anomaly_series"),
                "marks only timeseries panels",
            );
        for series in &panel.anomaly_series {
            validator.check(
                SERIES.contains(&series.as_str()),
                &field("anomaly_series"),
                "must name orders, payments_failed, fraud_flags or rejections",
            );
        }
        match &panel.source {
            PanelSource::Sql(sql) => validator.check(
                !sql.trim().is_empty() && sql.len() <= MAX_SQL_BYTES,
                &field("source.sql"),
                &format!("must be a query of 1 to {MAX_SQL_BYTES} bytes"),
            ),
            PanelSource::Process(name) => validator.check(
                Figure::named(name).is_some(),
                &field("source.process"),
                "must be p99_latency_ms, error_rate or requests_per_second",
            ),
        };
    }
    validator.finish()?;

    let snapshot = app.views.read();
    let mut errors = Vec::new();
    for (i, panel) in body.panels.iter().enumerate() {
        if let PanelSource::Sql(sql) = &panel.source {
            if let Err(error) = app.sql.check(Arc::clone(&snapshot), sql.to_string()).await {
                errors.push(FieldError::new(
                    format!("panels[{i}].source.sql"),
                    error.to_string(),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors));
    }
    let text = |text: &str| Str::from(text.trim());
    Ok(DashboardDefinition {
        title: text(&body.title),
        description: text(&body.description),
        panels: (body.panels.into_iter())
            .map(|panel| PanelDefinition {
                id: panel.id.into(),
                title: text(&panel.title),
                chart: panel.chart,
                source: match panel.source {
                    PanelSource::Sql(sql) => PanelSource::Sql(text(&sql)),
                    process => process,
                },
                unit: panel.unit.map(Str::from),
                anomaly_series: panel.anomaly_series.into_iter().map(Str::from).collect(),
            })
            .collect(),
    })
}

fn built_in(id: &str) -> ApiError {
    ApiError::conflict(
        "dashboard_built_in",
        format!("{id} is a built-in dashboard and cannot be changed; save a copy under another id"),
    )
}

/// The saved dashboard `id` as the views have it, after a command about it.
fn saved(app: &App, id: &str) -> ApiResult<Json<DashboardView>> {
    let dashboard = found(&app.views.read(), id)?;
    Ok(Json(dashboard.definition()))
}

/// `POST /dashboards`: 201 with the dashboard's definition.
pub async fn create(
    State(app): State<App>,
    command: Command<SaveDashboard>,
) -> ApiResult<Response> {
    let Command { body, idempotency } = command;
    let id = body.id.clone();
    let definition = definition(&app, body).await?;
    let admission = admit(&app, &idempotency)?;
    let id = id.unwrap_or_else(|| new_id("dsh", &idempotency));
    if admission == Admission::Fresh {
        if dashboards::is_built_in(&id) {
            return Err(ApiError::conflict(
                "dashboard_exists",
                format!("{id} is a built-in dashboard's id"),
            ));
        }
        let saved = app.views.read().dashboards.len();
        if saved >= MAX_DASHBOARDS {
            return Err(ApiError::conflict(
                "too_many_dashboards",
                format!("there are {saved} dashboards, the most kept; delete one first"),
            ));
        }
    }
    let command = DomainCommand::CreateDashboard {
        dashboard_id: id.as_str().into(),
        definition,
    };
    run_fresh(&app, admission, idempotency, command).await?;
    Ok(super::created(
        format!("/api/v1/dashboards/{id}"),
        saved(&app, &id)?,
    ))
}

/// `PUT /dashboards/{id}`: a saved dashboard's new definition, whole; its followers
/// are sent it at once.
pub async fn update(
    State(app): State<App>,
    Path(id): Path<String>,
    command: Command<SaveDashboard>,
) -> ApiResult<Json<DashboardView>> {
    let Command { body, idempotency } = command;
    if body.id.as_ref().is_some_and(|given| *given != id) {
        return Err(ApiError::invalid_field(
            "id",
            "must be the path's id, or left out",
        ));
    }
    if dashboards::is_built_in(&id) {
        return Err(built_in(&id));
    }
    let definition = definition(&app, body).await?;
    let admission = admit(&app, &idempotency)?;
    let command = DomainCommand::UpdateDashboard {
        dashboard_id: id.as_str().into(),
        definition,
    };
    run_fresh(&app, admission, idempotency, command).await?;
    saved(&app, &id)
}

/// `DELETE /dashboards/{id}`: 204; its followers' streams end.
pub async fn delete(State(app): State<App>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if dashboards::is_built_in(&id) {
        return Err(built_in(&id));
    }
    if !app.views.read().dashboards.contains_key(&id) {
        return Err(ApiError::not_found("dashboard", &id));
    }
    let command = DomainCommand::DeleteDashboard {
        dashboard_id: id.into(),
    };
    run_fresh(&app, Admission::Fresh, None, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /dashboards/{id}/stream`: a `snapshot` event with every panel's value, then an
/// `update` event with the panels that changed each time the board is computed again,
/// a new `snapshot` when its definition changes, and an `end` event when it is
/// deleted. A reader is only ever sent the newest board: one that reads slowly skips
/// boards, never piles them up.
pub async fn stream(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let dashboard = found(&app.views.read(), &id)?;
    let boards = app.dashboards.follow(&app, dashboard.id.clone());
    let follower = Follower {
        app: app.clone(),
        id: dashboard.id.clone(),
        boards,
        sent: None,
        ended: false,
    };
    let held = super::sse::Held::new(&app, &headers, &caller);
    Ok(super::sse::respond(&app, follower, held))
}

struct Follower {
    app: App,
    id: Str,
    boards: watch::Receiver<Option<Arc<Board>>>,
    /// The board this reader was last sent.
    sent: Option<Arc<Board>>,
    ended: bool,
}

impl super::sse::Events for Follower {
    fn next(&mut self) -> impl std::future::Future<Output = Option<Sse>> + Send {
        self.next_board()
    }
}

impl Follower {
    async fn next_board(&mut self) -> Option<Sse> {
        loop {
            let newest = self.boards.borrow_and_update().clone();
            match (newest, &self.sent) {
                (Some(board), sent)
                    if sent
                        .as_ref()
                        .is_none_or(|sent| sent.dashboard != board.dashboard) =>
                {
                    let event = Sse::default()
                        .event("snapshot")
                        .json_data(board.view())
                        .unwrap_or_default();
                    self.sent = Some(board);
                    return Some(event);
                }
                (Some(board), Some(sent)) if board != *sent => {
                    let changed: Vec<Value> = (board.dashboard.panels.iter())
                        .zip(board.values.iter().zip(&sent.values))
                        .filter(|(_, (new, old))| new != old)
                        .map(|(panel, (new, _))| json!({"id": panel.id, "value": new}))
                        .collect();
                    let frontier = board.frontier;
                    self.sent = Some(board);
                    if !changed.is_empty() {
                        return Some(
                            Sse::default()
                                .event("update")
                                .data(json!({"frontier": frontier, "panels": changed}).to_string()),
                        );
                    }
                }
                _ => {}
            }
            if self.boards.changed().await.is_err() {
                // The board's computation ended: the dashboard was deleted, or the
                // server is stopping.
                let deleted = dashboards::find(&self.app.views.read(), &self.id).is_none();
                if !deleted || std::mem::replace(&mut self.ended, true) {
                    return None;
                }
                let detail = format!("dashboard {} was deleted", self.id);
                return Some(
                    Sse::default()
                        .event("end")
                        .data(json!({"code": "dashboard_deleted", "detail": detail}).to_string()),
                );
            }
        }
    }
}

/// The page's files, compiled in.
const PAGE: &str = include_str!("dashboard/index.html");
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/dashboard.js"),
    ),
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/dashboard.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_str!("dashboard/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("dashboard/vendor/uPlot.min.css"),
    ),
];

/// Scripts and styles from this server only; the page talks to nobody else.
const PAGE_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// `GET /dashboard` and `GET /dashboard/{id}`: the page; it reads the board from the
/// path and its credential from the fragment (`#key=...`) or asks for one.
pub async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    response
}

/// `GET /dashboard/assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some((_, media_type, body)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "no such file of the dashboard page",
        )
        .into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    // The files change only with the binary.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}
