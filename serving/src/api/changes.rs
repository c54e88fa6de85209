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
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::Event as Sse;
use axum::response::Response;
use serde_json::json;

use super::error::{ApiError, ApiResult};
use super::extract::QueryPairs;
use super::{render, App};
use crate::auth::{Caller, Principal};
use crate::changefeed::{Filter, Followed, Following, Frame};
use queries::Start;

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
    follow(app, &caller, filter, &headers).await
}

/// The changefeed of the rows `filter` names, as `caller` may follow them: from the
/// `Last-Event-ID` in `headers` if every change since is kept, else from a snapshot.
pub(crate) async fn follow(
    app: App,
    caller: &Principal,
    filter: Filter,
    headers: &HeaderMap,
) -> ApiResult<Response> {
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
    let mut feed = Feed {
        app,
        filter,
        queued: VecDeque::new(),
        following: None,
    };
    feed.start(resume_from).await;
    let held = super::sse::Held::new(&feed.app, headers, caller);
    let app = feed.app.clone();
    Ok(super::sse::respond(&app, feed, held))
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
            Followed::Orders | Followed::Payments | Followed::Shipments | Followed::Tickets
        )
    {
        return Err(ApiError::invalid_field(
            "user_id",
            "only orders, payments, shipments and tickets belong to users",
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

/// One reader's stream: what is queued to send, then the updates it follows.
struct Feed {
    app: App,
    filter: Filter,
    queued: VecDeque<Sse>,
    following: Option<Following>,
}

impl Feed {
    /// Starts from `resume_from` if every change since is kept, or from a snapshot.
    async fn start(&mut self, resume_from: Option<u64>) {
        let (views, closing) = (&self.app.views, self.app.streams_closing());
        let following = (self.app.changefeeds)
            .follow(views, closing, self.filter.clone(), resume_from)
            .await;
        // None: the server is stopping, and the stream ends.
        let Some(following) = following else {
            self.following = None;
            return;
        };
        let filter = self.filter.clone();
        let start = match &following.start {
            Start::Snapshot(snapshot) => {
                let snapshot = Arc::clone(snapshot);
                render(&self.app, move || vec![filter.snapshot(&snapshot)]).await
            }
            Start::Resume(replay) => {
                let (replay, snapshot) = (replay.clone(), self.app.views.read());
                render(&self.app, move || {
                    (replay.iter())
                        .filter_map(|changes| filter.update(changes, &snapshot))
                        .collect()
                })
                .await
            }
        };
        // An error: the server is stopping.
        let Ok(frames) = start else {
            self.following = None;
            return;
        };
        self.queued.extend(frames.iter().map(event));
        self.following = Some(following);
    }

    async fn next_event(&mut self) -> Option<Sse> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(event);
            }
            let following = self.following.as_mut()?;
            // One that fell behind skips what it still holds: a snapshot follows.
            let frame = match following.lagged() {
                true => None,
                false => following.frames.recv().await,
            };
            match frame {
                Some(frame) => return Some(event(&frame)),
                None if following.lagged() => {
                    let capacity = self.app.views.changefeed_capacity();
                    self.queued.push_back(Sse::default().event("resync").data(
                        json!({
                            "reason": format!(
                                "this reader fell more than {capacity} updates behind; a fresh snapshot follows"
                            )
                        })
                        .to_string(),
                    ));
                    self.start(None).await;
                }
                // The server is stopping.
                None => self.following = None,
            }
        }
    }
}

impl super::sse::Events for Feed {
    fn next(&mut self) -> impl std::future::Future<Output = Option<Sse>> + Send {
        self.next_event()
    }
}

fn event(frame: &Frame) -> Sse {
    Sse::default()
        .event(frame.kind)
        .id(frame.frontier.to_string())
        .data(&frame.data)
}
