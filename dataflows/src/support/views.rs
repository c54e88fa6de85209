//! Ticket read model: each ticket with its conversation and its service-level times.

use serde::{Deserialize, Serialize};

use crate::events::{TicketCommented, TicketCreated, TicketUpdated};
use crate::model::*;

/// How long the staff have to answer a ticket first, and to resolve it, from when it
/// was opened (log time), by priority.
pub fn service_levels(priority: TicketPriority) -> (Ts, Ts) {
    const HOUR: Ts = 3_600_000;
    match priority {
        TicketPriority::Urgent => (HOUR, 8 * HOUR),
        TicketPriority::High => (4 * HOUR, 24 * HOUR),
        TicketPriority::Normal => (24 * HOUR, 72 * HOUR),
        TicketPriority::Low => (72 * HOUR, 168 * HOUR),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TicketComment {
    pub comment_id: Str,
    pub author_id: Str,
    pub staff: bool,
    pub body: Str,
    pub at: Ts,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TicketRow {
    pub ticket_id: Str,
    pub user_id: Str,
    pub subject: Str,
    pub order_id: Option<Str>,
    pub status: TicketStatus,
    pub priority: TicketPriority,
    pub assignee: Option<Str>,
    pub created_at: Ts,
    pub updated_at: Ts,
    /// The staff's first answer.
    pub first_response_at: Option<Ts>,
    /// When it was last resolved or closed; none while it is open or pending.
    pub resolved_at: Option<Ts>,
    pub comments: Box<[TicketComment]>,
}

impl TicketRow {
    /// When the first answer and the resolution are due.
    pub fn due(&self) -> (Ts, Ts) {
        let (respond, resolve) = service_levels(self.priority);
        (self.created_at + respond, self.created_at + resolve)
    }

    /// Whether the first answer and the resolution came (or, still awaited, are) later
    /// than due, at log time `now`.
    pub fn breached(&self, now: Ts) -> (bool, bool) {
        let (respond_by, resolve_by) = self.due();
        (
            self.first_response_at.unwrap_or(now) > respond_by,
            self.resolved_at.unwrap_or(now) > resolve_by,
        )
    }
}

pub(crate) fn step_ticket(row: &mut Option<TicketRow>, event: &Event) {
    match &event.body {
        EventBody::TicketCreated(TicketCreated {
            ticket_id,
            user_id,
            subject,
            order_id,
            priority,
        }) => {
            *row = Some(TicketRow {
                ticket_id: ticket_id.clone(),
                user_id: user_id.clone(),
                subject: subject.clone(),
                order_id: order_id.clone(),
                status: TicketStatus::Open,
                priority: *priority,
                assignee: None,
                created_at: event.ts,
                updated_at: event.ts,
                first_response_at: None,
                resolved_at: None,
                comments: Box::new([]),
            })
        }
        EventBody::TicketUpdated(TicketUpdated {
            status,
            priority,
            assignee,
            ..
        }) => {
            if let Some(row) = row.as_mut() {
                let ends = matches!(status, TicketStatus::Resolved | TicketStatus::Closed);
                row.resolved_at = match (ends, row.resolved_at) {
                    (true, Some(at)) if row.status == *status => Some(at),
                    (true, _) => Some(event.ts),
                    (false, _) => None,
                };
                row.status = *status;
                row.priority = *priority;
                row.assignee = assignee.clone();
                row.updated_at = event.ts;
            }
        }
        EventBody::TicketCommented(TicketCommented {
            comment_id,
            author_id,
            staff,
            body,
            ..
        }) => {
            if let Some(row) = row.as_mut() {
                if *staff && row.first_response_at.is_none() {
                    row.first_response_at = Some(event.ts);
                }
                push_boxed(
                    &mut row.comments,
                    TicketComment {
                        comment_id: comment_id.clone(),
                        author_id: author_id.clone(),
                        staff: *staff,
                        body: body.clone(),
                        at: event.ts,
                    },
                );
                row.updated_at = event.ts;
            }
        }
        _ => {}
    }
}
