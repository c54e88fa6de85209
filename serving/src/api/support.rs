//! Customer support (`/api/v1/support/tickets*`): tickets a customer opens about their
//! account or an order, the conversation with the staff, and the service-level times
//! by priority. The staff are callers with `support:read` / `support:write`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dataflows::model::{log_ts, Assignee, Command as DomainCommand, Str};
use dataflows::model::{TicketPriority, TicketStatus};
use dataflows::views::TicketRow;
use queries::Snapshot;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Command, Path, QueryPairs};
use super::json::{self, Rfc3339};
use super::validate::{hidden, Validator};
use super::{admit, new_id, read_page, run_fresh, Admission, App};
use crate::auth::{Caller, Principal};

/// Longest message, in characters.
const MAX_BODY_CHARS: usize = 10_000;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenTicket {
    /// Whose ticket: the caller's own when left out (the staff may open one for anyone).
    user_id: Option<String>,
    subject: String,
    /// The first message.
    body: String,
    /// An order of the user's it is about.
    order_id: Option<String>,
    /// `low`, `normal` (the default), `high` or `urgent`.
    priority: Option<TicketPriority>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeTicket {
    status: Option<TicketStatus>,
    priority: Option<TicketPriority>,
    /// A member of the staff (any id the staff use), or null for nobody; left out, the
    /// assignee stays.
    #[serde(default, deserialize_with = "present")]
    assignee: Option<Option<String>>,
}

/// A field that may be null: `Some(None)` when it is null, `None` when it is absent.
fn present<'de, D: Deserializer<'de>>(value: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(value).map(Some)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Comment {
    body: String,
}

/// A ticket as the API shows it.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Ticket")]
pub struct TicketView<'a> {
    id: &'a str,
    user_id: &'a str,
    subject: &'a str,
    order_id: Option<&'a str>,
    status: TicketStatus,
    priority: TicketPriority,
    assignee: Option<&'a str>,
    created_at: Rfc3339,
    updated_at: Rfc3339,
    first_response_at: Option<Rfc3339>,
    resolved_at: Option<Rfc3339>,
    /// When the staff's first answer is due, and the resolution, by priority.
    first_response_due_at: Rfc3339,
    resolution_due_at: Rfc3339,
    /// Whether they came, or are still awaited, past due (at the views' log time).
    first_response_breached: bool,
    resolution_breached: bool,
    comment_count: usize,
    /// The conversation, oldest first; with a single ticket only.
    #[serde(skip_serializing_if = "Option::is_none")]
    comments: Option<Vec<CommentView<'a>>>,
}

#[derive(Serialize, JsonSchema)]
#[schemars(rename = "TicketComment")]
pub struct CommentView<'a> {
    id: &'a str,
    author_id: &'a str,
    /// From the staff, rather than the customer.
    staff: bool,
    body: &'a str,
    at: Rfc3339,
}

impl<'a> TicketView<'a> {
    /// A deleted user's ticket shows its conversation erased, as the history does.
    fn of(snapshot: &Snapshot, row: &'a TicketRow, with_comments: bool) -> TicketView<'a> {
        let now = log_ts(snapshot.frontier);
        let erased = snapshot.is_erased(&row.user_id);
        let text = |text: &'a str| if erased { ::sql::ERASED } else { text };
        let (respond_by, resolve_by) = row.due();
        let (first_late, resolution_late) = row.breached(now);
        TicketView {
            id: &row.ticket_id,
            user_id: &row.user_id,
            subject: text(&row.subject),
            order_id: row.order_id.as_deref(),
            status: row.status,
            priority: row.priority,
            assignee: row.assignee.as_deref(),
            created_at: Rfc3339(row.created_at),
            updated_at: Rfc3339(row.updated_at),
            first_response_at: row.first_response_at.map(Rfc3339),
            resolved_at: row.resolved_at.map(Rfc3339),
            first_response_due_at: Rfc3339(respond_by),
            resolution_due_at: Rfc3339(resolve_by),
            first_response_breached: first_late,
            resolution_breached: resolution_late,
            comment_count: row.comments.len(),
            comments: with_comments.then(|| {
                (row.comments.iter())
                    .map(|comment| CommentView {
                        id: &comment.comment_id,
                        author_id: &comment.author_id,
                        staff: comment.staff,
                        body: text(&comment.body),
                        at: Rfc3339(comment.at),
                    })
                    .collect()
            }),
        }
    }
}

/// A message a person wrote: 1 to `MAX_BODY_CHARS` characters, lines allowed.
fn check_body(validator: &mut Validator, body: &str, field: &str) {
    let length = body.trim().chars().count();
    validator
        .check(
            length > 0 && length <= MAX_BODY_CHARS,
            field,
            "must be 1 to 10000 characters",
        )
        .check(
            !body.chars().any(|c| hidden(c) && c != '\n' && c != '\t'),
            field,
            "must not contain control, zero-width or bidirectional-override characters",
        );
}

fn one(snapshot: &Snapshot, id: &str) -> ApiResult<TicketRow> {
    (snapshot.tickets.get(id).cloned()).ok_or_else(|| ApiError::not_found("ticket", id))
}

fn answer(app: &App, id: &str, status: StatusCode) -> ApiResult<Response> {
    let snapshot = app.views.read();
    let row = one(&snapshot, id)?;
    let view = TicketView::of(&snapshot, &row, true);
    Ok((status, Json(json::to_value(view))).into_response())
}

/// `POST /support/tickets`: 201 with the ticket and its first message.
pub async fn open(
    State(app): State<App>,
    Caller(caller): Caller,
    command: Command<OpenTicket>,
) -> ApiResult<Response> {
    let Command { body, idempotency } = command;
    let user_id = caller.user_or(body.user_id.as_deref())?;
    caller.require_owner_or(&user_id, "support:write")?;
    let mut validator = Validator::default();
    validator.text(&body.subject, "subject", 200);
    check_body(&mut validator, &body.body, "body");
    validator.finish()?;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh {
        let snapshot = app.views.read();
        if !snapshot.users.contains_key(&user_id) {
            return Err(ApiError::invalid_field(
                "user_id",
                format!("user {user_id:?} does not exist"),
            ));
        }
        if let Some(order_id) = &body.order_id {
            let theirs = (snapshot.orders.get(order_id)).is_some_and(|o| *o.user_id == *user_id);
            if !theirs {
                return Err(ApiError::invalid_field(
                    "order_id",
                    format!("{order_id:?} is not an order of user {user_id}"),
                ));
            }
        }
    }
    let ticket_id = new_id("tkt", &idempotency);
    let command = DomainCommand::OpenTicket {
        ticket_id: ticket_id.as_str().into(),
        user_id: user_id.into(),
        subject: body.subject.trim().into(),
        body: body.body.trim().into(),
        order_id: body.order_id.map(Str::from),
        priority: body.priority.unwrap_or(TicketPriority::Normal),
        comment_id: new_id("cmt", &idempotency).into(),
    };
    run_fresh(&app, admission, idempotency, command).await?;
    let ticket = answer(&app, &ticket_id, StatusCode::OK)?;
    Ok(super::created(
        format!("/api/v1/support/tickets/{ticket_id}"),
        ticket,
    ))
}

/// `GET /support/tickets?user_id&status&limit&cursor`: a customer's tickets (the
/// caller's own when `user_id` is left out), or every ticket for the staff, by id.
pub async fn list(
    State(app): State<App>,
    Caller(caller): Caller,
    query: QueryPairs,
) -> ApiResult<json::Rendered> {
    let limit = query.limit()?;
    let after = query.get("cursor").unwrap_or("").to_string();
    let status = match query.get("status") {
        None => None,
        Some(text) => Some(
            serde_json::from_value::<TicketStatus>(serde_json::Value::from(text)).map_err(
                |_| ApiError::invalid_field("status", "must be open, pending, resolved or closed"),
            )?,
        ),
    };
    let user = match query.get("user_id") {
        None if caller.has_scope("support:read") => None,
        given => Some(caller.user_or(given)?),
    };
    match &user {
        Some(user) => caller.require_owner_or(user, "support:read")?,
        None => caller.require("support:read")?,
    }
    read_page(&app, move |snapshot| {
        let wanted = |row: &&TicketRow| status.is_none_or(|status| row.status == status);
        let found: Vec<&TicketRow> = match &user {
            Some(user) => (snapshot.tickets_of(user, &after))
                .filter(wanted)
                .take(limit + 1)
                .collect(),
            None => (snapshot.tickets.after(&after))
                .filter(wanted)
                .take(limit + 1)
                .collect(),
        };
        let cursor = |row: &&TicketRow| row.ticket_id.to_string();
        let page = json::Page::of(found, limit, cursor, |row| {
            TicketView::of(snapshot, row, false)
        });
        Ok(page.render())
    })
    .await
}

/// `GET /support/tickets/{id}`: the ticket with its conversation; its customer's, or
/// the staff's.
pub async fn get(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = one(&app.views.read(), &id)?;
    caller.require_owner_or(&row.user_id, "support:read")?;
    answer(&app, &id, StatusCode::OK)
}

/// `GET /support/tickets/{id}/chat/stream`: the ticket's conversation as it goes, for
/// its customer and the staff alike: a `snapshot` event with the ticket and every
/// message, then an `update` event at each change (a message, a new status), each the
/// ticket's row out and in, resumable with `Last-Event-ID` (`/views/tickets/changes`
/// for one ticket).
pub async fn chat(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let row = one(&app.views.read(), &id)?;
    caller.require_owner_or(&row.user_id, "support:read")?;
    let filter = crate::changefeed::Filter {
        view: crate::changefeed::Followed::Tickets,
        id: Some(id),
        user_id: None,
    };
    super::changes::follow(app, &caller, filter, &headers).await
}

/// Whether `caller` speaks for the staff on `row`: not its customer, with the scope.
fn staff(caller: &Principal, row: &TicketRow) -> bool {
    caller.user_id() != Some(&*row.user_id) && caller.has_scope("support:write")
}

/// `PUT /support/tickets/{id}`: the staff set status, priority and assignee; the
/// customer may only resolve or close their own.
pub async fn change(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    command: Command<ChangeTicket>,
) -> ApiResult<Response> {
    let Command { body, idempotency } = command;
    let row = one(&app.views.read(), &id)?;
    caller.require_owner_or(&row.user_id, "support:write")?;
    if !caller.has_scope("support:write") {
        let closing = matches!(
            body.status,
            Some(TicketStatus::Resolved | TicketStatus::Closed)
        );
        if !closing || body.priority.is_some() || body.assignee.is_some() {
            return Err(caller.refusal(
                "a customer may only resolve or close their ticket; the rest is the staff's".into(),
            ));
        }
    }
    if let Some(Some(assignee)) = &body.assignee {
        let mut validator = Validator::default();
        validator.text(assignee, "assignee", 128).finish()?;
    }
    let admission = admit(&app, &idempotency)?;
    let command = DomainCommand::ChangeTicket {
        ticket_id: id.as_str().into(),
        status: body.status,
        priority: body.priority,
        assignee: match body.assignee {
            None => Assignee::Unchanged,
            Some(None) => Assignee::Nobody,
            Some(Some(staff)) => Assignee::To(staff.trim().into()),
        },
    };
    run_fresh(&app, admission, idempotency, command).await?;
    answer(&app, &id, StatusCode::OK)
}

/// `POST /support/tickets/{id}/comments`: a message from the customer or the staff;
/// 201 with the ticket.
pub async fn comment(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    command: Command<Comment>,
) -> ApiResult<Response> {
    let Command { body, idempotency } = command;
    let row = one(&app.views.read(), &id)?;
    caller.require_owner_or(&row.user_id, "support:write")?;
    let mut validator = Validator::default();
    check_body(&mut validator, &body.body, "body");
    validator.finish()?;
    let admission = admit(&app, &idempotency)?;
    let command = DomainCommand::CommentOnTicket {
        ticket_id: id.as_str().into(),
        comment_id: new_id("cmt", &idempotency).into(),
        // A customer by their id; the staff by their token's user or their key.
        author_id: caller
            .user_id()
            .map_or_else(|| caller.label(), String::from)
            .into(),
        staff: staff(&caller, &row),
        body: body.body.trim().into(),
    };
    run_fresh(&app, admission, idempotency, command).await?;
    answer(&app, &id, StatusCode::CREATED)
}
