//! The support context's part of the event catalogue (`ticket.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::{Str, TicketPriority, TicketStatus};

records! {
    /// A customer opened a ticket (its first message follows as `ticket.commented`).
    pub struct TicketCreated {
        pub ticket_id: Str,
        pub user_id: Str,
        pub subject: Str,
        /// The order it is about, if any.
        pub order_id: Option<Str>,
        pub priority: TicketPriority,
    }

    /// A ticket's status, priority or assignee changed; every field is its value after.
    pub struct TicketUpdated {
        pub ticket_id: Str,
        pub status: TicketStatus,
        pub priority: TicketPriority,
        pub assignee: Option<Str>,
    }

    /// A message on a ticket, from its customer or from the staff.
    pub struct TicketCommented {
        pub ticket_id: Str,
        pub comment_id: Str,
        pub author_id: Str,
        pub staff: bool,
        pub body: Str,
    }
}
