//! The customer support context: tickets, each a conversation between a customer and
//! the support staff, with its status, priority, assignee and service-level timers.
//!
//! `Tickets`: one aggregate keyed by ticket id.
//! In: ticket opens, changes and comments. Out: `ticket.*` events and rejections.
//! Invariants: a ticket id names one ticket and a comment id one comment of it; a
//! closed ticket takes no changes and no comments; a ticket holds at most
//! `MAX_COMMENTS`; a customer's comment on a ticket waiting for them (`pending`) or
//! `resolved` opens it again.

pub mod events;
pub mod views;

use std::collections::{HashMap, HashSet};

use timely::dataflow::Stream;

use crate::events::{TicketCommented, TicketCreated, TicketUpdated};
use crate::model::*;
use crate::shared::input::{Decided, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered};

/// Most comments one ticket holds.
pub const MAX_COMMENTS: usize = 1000;

pub type TicketIn = Input<Command>;

/// The input of the ticket aggregate for a command, if it is a ticket's.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<TicketIn> {
    matches!(
        command,
        Command::OpenTicket { .. } | Command::ChangeTicket { .. } | Command::CommentOnTicket { .. }
    )
    .then(|| Input::command(seq, ts, command))
}

struct Ticket {
    status: TicketStatus,
    priority: TicketPriority,
    assignee: Option<Str>,
    comments: HashSet<Str>,
}

impl Ticket {
    fn updated(&self, ticket_id: &Str) -> TicketUpdated {
        TicketUpdated {
            ticket_id: ticket_id.clone(),
            status: self.status,
            priority: self.priority,
            assignee: self.assignee.clone(),
        }
    }
}

/// The ticket a change or a message is for, unless it is missing or closed (then the
/// command's refusal).
fn still_open<'a>(
    tickets: &'a mut HashMap<Str, Ticket>,
    ticket_id: &Str,
    decided: &Decided,
) -> Result<&'a mut Ticket, Box<Result<Event, Rejection>>> {
    match tickets.get_mut(ticket_id) {
        None => Err(Box::new(
            decided.not_found(format!("ticket {ticket_id} does not exist")),
        )),
        Some(ticket) if ticket.status == TicketStatus::Closed => Err(Box::new(decided.conflict(
            "ticket_closed",
            format!("ticket {ticket_id} is closed; open a new one"),
        ))),
        Some(ticket) => Ok(ticket),
    }
}

pub trait Tickets<'scope> {
    fn tickets(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>>;
}

impl<'scope> Tickets<'scope> for Stream<'scope, Time, Vec<TicketIn>> {
    fn tickets(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>> {
        let mut tickets: HashMap<Str, Ticket> = HashMap::new();
        self.keyed_ordered(
            "Tickets",
            |input: &TicketIn| key_hash(input.op.aggregate_id()),
            move |_time, inputs, out| {
                for input in inputs {
                    let mut decided = Decided::of(&input);
                    match input.op {
                        Command::OpenTicket {
                            ticket_id,
                            user_id,
                            subject,
                            body,
                            order_id,
                            priority,
                            comment_id,
                        } => {
                            if tickets.contains_key(&ticket_id) {
                                out.push(decided.conflict(
                                    "ticket_exists",
                                    format!("ticket {ticket_id} already exists"),
                                ));
                                continue;
                            }
                            tickets.insert(
                                ticket_id.clone(),
                                Ticket {
                                    status: TicketStatus::Open,
                                    priority,
                                    assignee: None,
                                    comments: HashSet::from([comment_id.clone()]),
                                },
                            );
                            out.push(decided.event(TicketCreated {
                                ticket_id: ticket_id.clone(),
                                user_id: user_id.clone(),
                                subject,
                                order_id,
                                priority,
                            }));
                            out.push(decided.event(TicketCommented {
                                ticket_id,
                                comment_id,
                                author_id: user_id,
                                staff: false,
                                body,
                            }));
                        }
                        Command::ChangeTicket {
                            ticket_id,
                            status,
                            priority,
                            assignee,
                        } => {
                            let ticket = match still_open(&mut tickets, &ticket_id, &decided) {
                                Ok(ticket) => ticket,
                                Err(refused) => {
                                    out.push(*refused);
                                    continue;
                                }
                            };
                            ticket.status = status.unwrap_or(ticket.status);
                            ticket.priority = priority.unwrap_or(ticket.priority);
                            match assignee {
                                Assignee::Unchanged => {}
                                Assignee::To(staff) => ticket.assignee = Some(staff),
                                Assignee::Nobody => ticket.assignee = None,
                            }
                            out.push(decided.event(ticket.updated(&ticket_id)));
                        }
                        Command::CommentOnTicket {
                            ticket_id,
                            comment_id,
                            author_id,
                            staff,
                            body,
                        } => {
                            let ticket = match still_open(&mut tickets, &ticket_id, &decided) {
                                Ok(ticket) => ticket,
                                Err(refused) => {
                                    out.push(*refused);
                                    continue;
                                }
                            };
                            if ticket.comments.contains(&comment_id) {
                                out.push(decided.conflict(
                                    "comment_exists",
                                    format!("comment {comment_id} already exists"),
                                ));
                                continue;
                            }
                            if ticket.comments.len() >= MAX_COMMENTS {
                                out.push(decided.conflict(
                                    "too_many_comments",
                                    format!(
                                        "ticket {ticket_id} holds {MAX_COMMENTS} comments, \
                                         the most; open a new one"
                                    ),
                                ));
                                continue;
                            }
                            ticket.comments.insert(comment_id.clone());
                            out.push(decided.event(TicketCommented {
                                ticket_id: ticket_id.clone(),
                                comment_id,
                                author_id,
                                staff,
                                body,
                            }));
                            let waiting = matches!(
                                ticket.status,
                                TicketStatus::Pending | TicketStatus::Resolved
                            );
                            if !staff && waiting {
                                ticket.status = TicketStatus::Open;
                                out.push(decided.event(ticket.updated(&ticket_id)));
                            }
                        }
                        _ => {}
                    }
                }
            },
        )
    }
}
