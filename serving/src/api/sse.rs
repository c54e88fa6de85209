//! Server-Sent Event streams (the views' changefeeds, the dashboards): each stream
//! ends when the server stops taking requests, so that the connections drain, and
//! when the credentials it was opened with no longer hold: a key revoked, a token
//! expired or its session ended. The client that reconnects is then asked for new
//! ones (401) or refused (403).

use std::convert::Infallible;
use std::future::Future;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::App;
use crate::auth::Principal;

/// A stream's events, one at a time. `None` ends the stream.
pub(crate) trait Events: Send + 'static {
    fn next(&mut self) -> impl Future<Output = Option<Sse>> + Send;
}

/// Longest a stream goes on after its credentials stop holding, when it is idle.
const RECHECK_IDLE: Duration = Duration::from_secs(5);
/// Shortest time between two checks while events flow.
const RECHECK_BUSY: Duration = Duration::from_secs(1);

/// The credentials a stream was opened with, checked again while it lasts.
pub(crate) struct Held {
    credentials: HeaderMap,
    principal: Principal,
    checked: Instant,
}

impl Held {
    /// Nothing to check when authentication is off or the caller sent no credentials
    /// (a public stream).
    pub(crate) fn new(app: &App, headers: &HeaderMap, principal: &Principal) -> Option<Held> {
        if !app.auth.enabled() || *principal == Principal::Anonymous {
            return None;
        }
        let mut credentials = HeaderMap::new();
        for name in [
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-api-key"),
        ] {
            if let Some(value) = headers.get(&name) {
                credentials.insert(name, value.clone());
            }
        }
        Some(Held {
            credentials,
            principal: principal.clone(),
            checked: Instant::now(),
        })
    }

    /// Why the stream must end, if the credentials no longer give the caller it was
    /// opened for. Unless `now`, at most once every `RECHECK_BUSY`.
    fn broken(&mut self, app: &App, now: bool) -> Option<(String, String)> {
        if !now && self.checked.elapsed() < RECHECK_BUSY {
            return None;
        }
        self.checked = Instant::now();
        match app.auth.principal(app, &self.credentials) {
            Ok(principal) if principal == self.principal => None,
            Ok(_) => Some((
                "credentials_changed".into(),
                "the credentials this stream was opened with now stand for other rights; reconnect"
                    .into(),
            )),
            Err(error) => Some((error.code, error.detail)),
        }
    }
}

/// The SSE response of `events`: keep-alive comments every 15 s; an `end` event
/// `{code, detail}` and the end of the stream once `held` no longer holds.
pub(crate) fn respond(app: &App, events: impl Events, held: Option<Held>) -> Response {
    struct Stream<E> {
        app: App,
        events: E,
        held: Option<Held>,
        recheck: tokio::time::Interval,
        closing: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
        ended: bool,
    }
    let mut recheck =
        tokio::time::interval_at(tokio::time::Instant::now() + RECHECK_IDLE, RECHECK_IDLE);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = Stream {
        app: app.clone(),
        events,
        held,
        recheck,
        closing: Box::pin(app.streams_closing()),
        ended: false,
    };
    let events = futures::stream::unfold(stream, |mut stream| async move {
        if stream.ended {
            return None;
        }
        let event = loop {
            let broken = tokio::select! {
                event = stream.events.next() => {
                    let event = event?;
                    let broken = (stream.held.as_mut())
                        .and_then(|held| held.broken(&stream.app, false));
                    match broken {
                        None => break event,
                        broken => broken,
                    }
                }
                _ = stream.recheck.tick(), if stream.held.is_some() => {
                    (stream.held.as_mut()).and_then(|held| held.broken(&stream.app, true))
                }
                // The server is stopping: the client reconnects (to another server, or
                // to this one once it is back) with the last id it had.
                () = &mut stream.closing => return None,
            };
            if let Some((code, detail)) = broken {
                stream.ended = true;
                break Sse::default()
                    .event("end")
                    .data(json!({"code": code, "detail": detail}).to_string());
            }
        };
        Some((Ok::<_, Infallible>(event), stream))
    });
    axum::response::Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
