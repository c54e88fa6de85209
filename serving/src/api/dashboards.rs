//! Dashboards over HTTP: their definitions and values (`/api/v1/dashboards*`), each
//! board's changes as Server-Sent Events, and the page that draws them (`/dashboard`),
//! served from the binary with its chart library (uPlot, vendored), no CDN.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::Event as Sse;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::error::{ApiError, ApiResult};
use super::App;
use crate::auth::Caller;
use crate::dashboards::{self, Board, Dashboard, DashboardList, DashboardView, DASHBOARDS};

fn found(id: &str) -> ApiResult<&'static Dashboard> {
    dashboards::find(id).ok_or_else(|| {
        let ids: Vec<&str> = DASHBOARDS.iter().map(|board| board.id).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no dashboard {id:?}; there are {}", ids.join(", ")),
        )
    })
}

/// `GET /dashboards`: every dashboard's definition.
pub async fn list() -> Json<DashboardList> {
    let dashboards = DASHBOARDS.iter().map(Dashboard::definition).collect();
    Json(DashboardList { dashboards })
}

/// `GET /dashboards/{id}`: the definition with each panel's value, read once every
/// command acknowledged before the request is in the metric views.
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<DashboardView>> {
    let dashboard = found(&id)?;
    let timeout = Duration::from_millis(app.config.command_timeout_ms);
    let snapshot = app
        .views
        .read_settled(timeout)
        .await
        .map_err(crate::runtime::Error::from)?;
    let board = dashboards::compute(&app, dashboard, snapshot).await;
    Ok(Json(board.view(dashboard)))
}

/// `GET /dashboards/{id}/stream`: a `snapshot` event with every panel's value, then an
/// `update` event with the panels that changed each time the board is computed again.
/// A reader is only ever sent the newest board: one that reads slowly skips boards,
/// never piles them up.
pub async fn stream(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let dashboard = found(&id)?;
    let boards = app.dashboards.follow(&app, dashboard);
    let follower = Follower {
        dashboard,
        boards,
        sent: None,
    };
    let held = super::sse::Held::new(&app, &headers, &caller);
    Ok(super::sse::respond(&app, follower, held))
}

struct Follower {
    dashboard: &'static Dashboard,
    boards: watch::Receiver<Option<Arc<Board>>>,
    /// The board this reader was last sent.
    sent: Option<Arc<Board>>,
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
                (Some(board), None) => {
                    let event = Sse::default()
                        .event("snapshot")
                        .json_data(board.view(self.dashboard))
                        .unwrap_or_default();
                    self.sent = Some(board);
                    return Some(event);
                }
                (Some(board), Some(sent)) if board != *sent => {
                    let changed: Vec<Value> = (self.dashboard.panels.iter())
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
            // The board's computation ended: the server is stopping.
            self.boards.changed().await.ok()?;
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
