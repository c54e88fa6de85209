//! `StockReservations`: stock held through the inventory API rather than by an order.
//! Keyed by reservation id.
//!
//! In: reserve and release commands at `2t`, the product aggregate's replies at `2t + 1`.
//! Out: reservation events, stock requests, rejections.
//!
//! Invariant: as for orders, a reservation holds every line or none, and a release
//! gives back exactly what is held.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use crate::catalog::{AwaitedLines, CatalogIn, CatalogOp, StockReply};
use crate::model::*;
use crate::ordered::{key_hash, KeyedOrdered};
use crate::orders::OrderOut;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReservationIn {
    pub seq: Seq,
    pub phase: u8,
    pub sub: u16,
    pub ts: Ts,
    pub op: ReservationOp,
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
        let mut reservations: HashMap<String, Reservation> = HashMap::new();
        self.keyed_ordered(
            "StockReservations",
            |input: &ReservationIn| key_hash(input.op.reservation_id()),
            move |_time, inputs, out| {
                for input in inputs {
                    let (seq, phase, ts) = (input.seq, input.phase, input.ts);
                    let mut sub: u16 = input.sub.saturating_mul(16);
                    let mut event = |out: &mut Vec<OrderOut>, body| {
                        out.push(OrderOut::Event(Event {
                            seq,
                            phase,
                            sub,
                            ts,
                            body,
                        }));
                        sub += 1;
                    };
                    let reject = |out: &mut Vec<OrderOut>, kind, detail: String| {
                        out.push(OrderOut::Rejected(Rejection {
                            seq,
                            ts,
                            kind,
                            detail,
                        }))
                    };
                    let release_all = |out: &mut Vec<OrderOut>, id: &str, held: Vec<PricedLine>| {
                        for (line, held) in held.into_iter().enumerate() {
                            let op = CatalogOp::Release {
                                product_id: held.product_id,
                                order_id: id.to_string(),
                                quantity: held.quantity,
                            };
                            out.push(OrderOut::Stock(CatalogIn {
                                seq,
                                phase,
                                sub: line as u16,
                                ts,
                                op,
                            }));
                        }
                    };
                    match input.op {
                        ReservationOp::Command(Command::ReserveStock {
                            reservation_id,
                            items,
                        }) => {
                            if reservations.contains_key(&reservation_id) {
                                let detail = format!("reservation {reservation_id} already exists");
                                reject(
                                    out,
                                    RejectionKind::Conflict {
                                        code: "reservation_exists".into(),
                                    },
                                    detail,
                                );
                                continue;
                            }
                            if items.is_empty()
                                || items.len() > usize::from(u16::MAX)
                                || items.iter().any(|line| line.quantity <= 0)
                            {
                                let detail = "a reservation needs lines with positive quantities"
                                    .to_string();
                                reject(
                                    out,
                                    RejectionKind::Invalid {
                                        field: "items".into(),
                                    },
                                    detail,
                                );
                                continue;
                            }
                            event(
                                out,
                                EventBody::ReservationRequested {
                                    reservation_id: reservation_id.clone(),
                                    items: items.clone(),
                                },
                            );
                            for (line, item) in items.iter().enumerate() {
                                let op = CatalogOp::Reserve {
                                    product_id: item.product_id.clone(),
                                    holder: Holder::Reservation,
                                    order_id: reservation_id.clone(),
                                    line: line as u16,
                                    quantity: item.quantity,
                                };
                                out.push(OrderOut::Stock(CatalogIn {
                                    seq,
                                    phase,
                                    sub: line as u16,
                                    ts,
                                    op,
                                }));
                            }
                            let awaited = AwaitedLines::new(items.len());
                            reservations.insert(
                                reservation_id,
                                Reservation {
                                    awaited,
                                    held: Vec::new(),
                                    release_requested: false,
                                    holding: false,
                                },
                            );
                        }
                        ReservationOp::Command(Command::ReleaseReservation { reservation_id }) => {
                            let Some(reservation) = reservations.get_mut(&reservation_id) else {
                                reject(
                                    out,
                                    RejectionKind::NotFound,
                                    format!("reservation {reservation_id} does not exist"),
                                );
                                continue;
                            };
                            if reservation.awaited.is_waiting() {
                                reservation.release_requested = true;
                            } else if reservation.holding {
                                reservation.holding = false;
                                release_all(
                                    out,
                                    &reservation_id,
                                    std::mem::take(&mut reservation.held),
                                );
                                event(out, EventBody::ReservationReleased { reservation_id });
                            } else {
                                let detail = format!("reservation {reservation_id} holds no stock");
                                reject(
                                    out,
                                    RejectionKind::Conflict {
                                        code: "reservation_not_held".into(),
                                    },
                                    detail,
                                );
                            }
                        }
                        ReservationOp::Command(_) => {}
                        ReservationOp::Reply(reply) => {
                            let reservation_id = reply.order_id.clone();
                            let Some(reservation) = reservations.get_mut(&reservation_id) else {
                                continue;
                            };
                            let Some((granted, refused)) = reservation.awaited.answer(reply) else {
                                continue;
                            };
                            match (refused, reservation.release_requested) {
                                (Some(reason), _) => {
                                    release_all(out, &reservation_id, granted);
                                    event(
                                        out,
                                        EventBody::ReservationRejected {
                                            reservation_id,
                                            reason,
                                        },
                                    );
                                }
                                (None, true) => {
                                    release_all(out, &reservation_id, granted);
                                    event(out, EventBody::ReservationReleased { reservation_id });
                                }
                                (None, false) => {
                                    reservation.holding = true;
                                    reservation.held = granted.clone();
                                    event(
                                        out,
                                        EventBody::ReservationHeld {
                                            reservation_id,
                                            lines: granted,
                                        },
                                    );
                                }
                            }
                        }
                    }
                }
            },
        )
    }
}
