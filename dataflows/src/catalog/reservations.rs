//! `StockReservations`: stock held through the inventory API rather than by an order.
//! Keyed by reservation id.
//!
//! In: reserve and release commands at `2t`, the product aggregate's replies at `2t + 1`.
//! Out: reservation events, stock requests, rejections.
//!
//! Invariant: as for orders, a reservation holds every line or none, and a release
//! gives back exactly what is held.

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use crate::catalog::{AwaitedLines, CatalogOp, StockReply};
use crate::events::{
    ReservationHeld, ReservationRejected, ReservationReleased, ReservationRequested,
};
use crate::model::*;
use crate::orders::OrderOut;
use crate::shared::input::Input;
use crate::shared::ordered::{key_hash, Emitter, KeyedOrdered};
use crate::shared::sharded::ShardedMap;

pub type ReservationIn = Input<ReservationOp>;

/// The input of the reservation aggregate for a command, if it is a reservation's.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<ReservationIn> {
    matches!(
        command,
        Command::ReserveStock { .. } | Command::ReleaseReservation { .. }
    )
    .then(|| Input::command(seq, ts, ReservationOp::Command(command)))
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReservationOp {
    Command(Command),
    Reply(StockReply),
}

impl ReservationOp {
    fn reservation_id(&self) -> &str {
        match self {
            ReservationOp::Reply(reply) => &reply.order_id,
            ReservationOp::Command(Command::ReserveStock { reservation_id, .. })
            | ReservationOp::Command(Command::ReleaseReservation { reservation_id }) => {
                reservation_id
            }
            ReservationOp::Command(_) => "",
        }
    }
}

struct Reservation {
    awaited: AwaitedLines,
    held: Vec<PricedLine>,
    release_requested: bool,
    /// Held now; false before the answers and after a release or a refusal.
    holding: bool,
}

pub trait StockReservations<'scope> {
    /// Runs the reservation aggregate; its outputs have the order saga's shape.
    fn stock_reservations(self) -> Stream<'scope, Time, Vec<OrderOut>>;
}

impl<'scope> StockReservations<'scope> for Stream<'scope, Time, Vec<ReservationIn>> {
    fn stock_reservations(self) -> Stream<'scope, Time, Vec<OrderOut>> {
        let mut reservations: ShardedMap<Str, Reservation> = ShardedMap::default();
        self.keyed_ordered(
            "StockReservations",
            |input: &ReservationIn| key_hash(input.op.reservation_id()),
            move |_time, inputs, out| {
                for input in inputs {
                    let mut emit = Emitter::new(
                        input.seq,
                        input.phase,
                        input.sub.saturating_mul(16),
                        input.ts,
                        &mut *out,
                    );
                    match input.op {
                        ReservationOp::Command(Command::ReserveStock {
                            reservation_id,
                            items,
                        }) => reserve(&mut reservations, &mut emit, reservation_id, items),
                        ReservationOp::Command(Command::ReleaseReservation { reservation_id }) => {
                            release(&mut reservations, &mut emit, reservation_id)
                        }
                        ReservationOp::Command(_) => {}
                        ReservationOp::Reply(reply) => answer(&mut reservations, &mut emit, reply),
                    }
                }
            },
        )
    }
}

fn reserve(
    reservations: &mut ShardedMap<Str, Reservation>,
    emit: &mut Emitter<'_, OrderOut>,
    reservation_id: Str,
    items: Vec<Line>,
) {
    if reservations.contains_key(&reservation_id) {
        return emit.conflict(
            "reservation_exists",
            format!("reservation {reservation_id} already exists"),
        );
    }
    if items.is_empty()
        || items.len() > usize::from(u16::MAX)
        || items.iter().any(|line| line.quantity <= 0)
    {
        return emit.reject(
            RejectionKind::Invalid {
                field: "items".into(),
            },
            "a reservation needs lines with positive quantities",
        );
    }
    emit.event(ReservationRequested {
        reservation_id: reservation_id.clone(),
        items: items.clone(),
    });
    for (line, item) in items.iter().enumerate() {
        let op = CatalogOp::Reserve {
            product_id: item.product_id.clone(),
            holder: Holder::Reservation,
            order_id: reservation_id.clone(),
            line: line as u16,
            quantity: item.quantity,
        };
        emit.stock(line as u16, op);
    }
    let reservation = Reservation {
        awaited: AwaitedLines::new(items.len()),
        held: Vec::new(),
        release_requested: false,
        holding: false,
    };
    reservations.insert(reservation_id, reservation);
}

fn release(
    reservations: &mut ShardedMap<Str, Reservation>,
    emit: &mut Emitter<'_, OrderOut>,
    reservation_id: Str,
) {
    let Some(reservation) = reservations.get_mut(&reservation_id) else {
        return emit.reject(
            RejectionKind::NotFound,
            format!("reservation {reservation_id} does not exist"),
        );
    };
    if reservation.awaited.is_waiting() {
        reservation.release_requested = true;
    } else if reservation.holding {
        reservation.holding = false;
        release_all(emit, &reservation_id, std::mem::take(&mut reservation.held));
        emit.event(ReservationReleased { reservation_id });
    } else {
        emit.conflict(
            "reservation_not_held",
            format!("reservation {reservation_id} holds no stock"),
        );
    }
}

/// Second round: once every line is answered, hold all of them or give back the rest.
fn answer(
    reservations: &mut ShardedMap<Str, Reservation>,
    emit: &mut Emitter<'_, OrderOut>,
    reply: StockReply,
) {
    let reservation_id = reply.order_id.clone();
    let Some(reservation) = reservations.get_mut(&reservation_id) else {
        return;
    };
    let Some((granted, refused)) = reservation.awaited.answer(reply) else {
        return;
    };
    match (refused, reservation.release_requested) {
        (Some(reason), _) => {
            release_all(emit, &reservation_id, granted);
            emit.event(ReservationRejected {
                reservation_id,
                reason,
            });
        }
        (None, true) => {
            release_all(emit, &reservation_id, granted);
            emit.event(ReservationReleased { reservation_id });
        }
        (None, false) => {
            reservation.holding = true;
            reservation.held = granted.clone();
            emit.event(ReservationHeld {
                reservation_id,
                lines: granted,
            });
        }
    }
}

fn release_all(emit: &mut Emitter<'_, OrderOut>, reservation_id: &Str, held: Vec<PricedLine>) {
    for (line, held) in held.into_iter().enumerate() {
        let op = CatalogOp::Release {
            product_id: held.product_id,
            order_id: reservation_id.clone(),
            quantity: held.quantity,
        };
        emit.stock(line as u16, op);
    }
}
