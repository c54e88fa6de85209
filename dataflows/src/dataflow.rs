//! The whole tidemark dataflow: commands in; events, view rows and rejections out.
//!
//! Wiring only: each context says which commands are its own (`route`), its operators
//! decide, and their outputs are split here into what goes to another aggregate and
//! what everyone emits alike (events and refusals, `Outcome`).

use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Concatenate, ConnectLoop, Feedback};
use timely::dataflow::{Scope, Stream};

use crate::analytics;
use crate::auth::sessions::{self, Sessions};
use crate::auth::tokens::{self as access_tokens, AccessTokens};
use crate::auth::{self, ApiKeys};
use crate::catalog::reservations::{self, ReservationOp, StockReservations};
use crate::catalog::{self, CatalogOut, ReserveStock, SkuIn, StockReply};
use crate::idempotency::{Admissions, AdmitOnce};
use crate::model::*;
use crate::orders::carts::{self, ShoppingCarts};
use crate::orders::{self, OrderFulfillment, OrderOp, OrderOut};
use crate::payments::methods::{self as payment_methods, PaymentMethods};
use crate::reporting::{self, Reports};
use crate::shared::claims::ClaimUnique;
use crate::shared::input::Outcome;
use crate::support::{self, Tickets};
use crate::users::loyalty::Loyalty;
use crate::users::sign_ins::{self, SignIns};
use crate::users::{self, EmailIn, UserAccounts, UserOut};
use crate::views::{read_models, Row};

/// A command as it enters the dataflow: its log position, its batch timestamp, itself.
pub type Record = (Seq, Ts, Envelope);

pub struct Outputs<'scope> {
    pub events: Stream<'scope, Time, Vec<Event>>,
    pub rejections: Stream<'scope, Time, Vec<Rejection>>,
    pub rows: VecCollection<'scope, Time, Row, isize>,
}

/// Builds the dataflow over `commands` in `scope`.
pub fn build<'scope>(
    scope: Scope<'scope, Time>,
    commands: Stream<'scope, Time, Vec<Record>>,
    features: crate::engine::Features,
) -> Outputs<'scope> {
    let admitted = commands.admit_once();
    let passed = admitted.passed();

    // Orders and stock, with the product aggregate's replies fed back one round later.
    let (reply_loop, replies) = scope.feedback::<Vec<StockReply>>(1);
    let order_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| orders::route(seq, ts, command))
        .concat(replies.clone().flat_map(|reply| {
            (reply.holder == Holder::Order).then(|| reply.into_input(OrderOp::Reply))
        }))
        .order_fulfillment();
    let reservation_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| reservations::route(seq, ts, command))
        .concat(replies.flat_map(|reply| {
            (reply.holder == Holder::Reservation).then(|| reply.into_input(ReservationOp::Reply))
        }))
        .stock_reservations();
    // Orders and reservations speak to the product aggregate the same way.
    let order_out = order_out.concat(reservation_out);
    // Creates and sku changes claim their sku first; released skus come back a round later.
    let (sku_loop, sku_releases) = scope.feedback::<Vec<SkuIn>>(1);
    let (claimed, sku_rejections) = passed
        .clone()
        .flat_map(|(seq, ts, command)| catalog::route_claim(seq, ts, command))
        .concat(sku_releases)
        .claim_unique("ClaimSku", catalog::SKU_TAKEN);
    let catalog_in = scope.concatenate([
        passed
            .clone()
            .flat_map(|(seq, ts, command)| catalog::route(seq, ts, command)),
        claimed,
        order_out.clone().flat_map(|out| match out {
            OrderOut::Stock(request) => Some(request),
            _ => None,
        }),
    ]);
    let catalog_out = catalog_in.reserve_stock();
    catalog_out
        .clone()
        .flat_map(|out| match out {
            CatalogOut::ReleaseSku(release) => Some(release),
            _ => None,
        })
        .connect_loop(sku_loop);
    catalog_out
        .clone()
        .flat_map(|out| match out {
            CatalogOut::Reply(reply) => Some(reply),
            _ => None,
        })
        .connect_loop(reply_loop);

    // Users, with released e-mail addresses fed back one round later.
    let (release_loop, releases) = scope.feedback::<Vec<EmailIn>>(1);
    let (claimed, email_rejections) = passed
        .clone()
        .flat_map(|(seq, ts, command)| users::route_claim(seq, ts, &command))
        .concat(releases)
        .claim_unique("ClaimEmail", users::EMAIL_TAKEN);
    let user_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| users::route(seq, ts, command))
        .concat(claimed)
        .user_accounts();
    user_out
        .clone()
        .flat_map(|out| match out {
            UserOut::Release(release) => Some(release),
            _ => None,
        })
        .connect_loop(release_loop);

    let cart_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| carts::route(seq, ts, command))
        .shopping_carts();
    let report_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| reporting::route(seq, ts, command))
        .reports();
    let key_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| auth::route(seq, ts, command))
        .api_keys();
    let sign_in_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| sign_ins::route(seq, ts, command))
        .sign_ins();
    let token_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| access_tokens::route(seq, ts, command))
        .access_tokens();
    let ticket_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| support::route(seq, ts, command))
        .tickets();
    let method_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| payment_methods::route(seq, ts, &command))
        .payment_methods();
    let session_out = passed
        .flat_map(|(seq, ts, command)| sessions::route(seq, ts, command))
        .sessions();

    // One operator each gathers every aggregate's events and refusals.
    // Completed orders earn their buyers points; refunds take them back.
    let loyalty = events_of(&order_out).loyalty();
    let events = scope.concatenate([
        events_of(&order_out),
        loyalty,
        events_of(&catalog_out),
        events_of(&user_out),
        events_of(&cart_out),
        events_of(&report_out),
        events_of(&key_out),
        events_of(&sign_in_out),
        events_of(&token_out),
        events_of(&session_out),
        events_of(&method_out),
        events_of(&ticket_out),
    ]);
    let rejections = scope.concatenate([
        rejections_of(&admitted),
        rejections_of(&order_out),
        rejections_of(&catalog_out),
        sku_rejections,
        rejections_of(&user_out),
        email_rejections,
        rejections_of(&cart_out),
        rejections_of(&report_out),
        rejections_of(&key_out),
        rejections_of(&sign_in_out),
        rejections_of(&token_out),
        rejections_of(&session_out),
        rejections_of(&method_out),
        rejections_of(&ticket_out),
    ]);

    let idempotency = admitted.rows();
    let rows = read_models(events.clone()).concat(idempotency);
    // The metric views are a dataflow of their own (see `engine`); the anomalies are
    // events, so they are decided here, in log order, like every other event.
    let events = if features.metrics {
        let anomalies = analytics::anomaly::anomalies(events.clone(), rejections.clone());
        events.concat(anomalies)
    } else {
        events
    };
    Outputs {
        events,
        rejections,
        rows,
    }
}

/// The events among an aggregate's outputs.
fn events_of<'scope, O: Outcome + Clone + 'static>(
    outputs: &Stream<'scope, Time, Vec<O>>,
) -> Stream<'scope, Time, Vec<Event>> {
    outputs.clone().flat_map(Outcome::event)
}

/// The refusals among an aggregate's outputs.
fn rejections_of<'scope, O: Outcome + Clone + 'static>(
    outputs: &Stream<'scope, Time, Vec<O>>,
) -> Stream<'scope, Time, Vec<Rejection>> {
    outputs.clone().flat_map(Outcome::rejection)
}
