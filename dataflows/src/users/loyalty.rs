//! `Loyalty`: points for completed orders, taken back for refunds. Keyed by order id.
//!
//! In: the order context's events (`order.created` names the user, `order.reserved` the
//! total, `order.completed` earns, `refund.processed` takes back). Out:
//! `loyalty.points_earned` and `loyalty.points_reversed`, each naming the user; the
//! `loyalty` view sums them per user and gives the tier.
//! Invariants: an order earns `points_for(total)` once, when it completes; its refunds
//! take back, in all, the share of those points that the refunded share of its total
//! is (rounded down), so an order never gives back more than it earned and a user's
//! balance never goes below zero.

use std::collections::HashMap;

use timely::dataflow::operators::vec::Map;
use timely::dataflow::Stream;

use crate::events::{LoyaltyPointsEarned, LoyaltyPointsReversed};
use crate::model::*;
use crate::shared::ordered::{key_hash, KeyedOrdered};

/// Points per whole unit (100 minor units) of an order's total, in any currency.
pub const POINTS_PER_UNIT: i64 = 1;
/// The points (earned, less those taken back) that make a user premium.
pub const PREMIUM_POINTS: i64 = 1000;
/// The phase loyalty events carry: after the saga's rounds, before the anomalies.
pub const LOYALTY_PHASE: u8 = 2;

/// The points an order of `total_cents` earns.
pub fn points_for(total_cents: i64) -> i64 {
    total_cents.max(0) / 100 * POINTS_PER_UNIT
}

/// The points `refunded_cents` of an order of `total_cents` that earned `earned` takes
/// back, in all (the refunds before it included).
pub fn points_refunded(earned: i64, refunded_cents: i64, total_cents: i64) -> i64 {
    if total_cents <= 0 {
        return earned;
    }
    let refunded = refunded_cents.clamp(0, total_cents);
    (i128::from(earned) * i128::from(refunded) / i128::from(total_cents)) as i64
}

/// A user's standing, from their points.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    #[default]
    Standard,
    Premium,
}

impl Tier {
    pub fn of(points: i64) -> Tier {
        if points >= PREMIUM_POINTS {
            Tier::Premium
        } else {
            Tier::Standard
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "standard",
            Tier::Premium => "premium",
        }
    }
}

/// Whether the loyalty operator reads `event`.
fn counts(event: &Event) -> bool {
    matches!(
        event.body,
        EventBody::OrderCreated(_)
            | EventBody::OrderReserved(_)
            | EventBody::OrderCompleted(_)
            | EventBody::RefundProcessed(_)
    )
}

#[derive(Default)]
struct Order {
    user_id: Str,
    total_cents: i64,
    earned: i64,
    refunded_cents: i64,
    reversed: i64,
}

pub trait Loyalty<'scope> {
    /// The loyalty events the order context's `events` cause.
    fn loyalty(self) -> Stream<'scope, Time, Vec<Event>>;
}

impl<'scope> Loyalty<'scope> for Stream<'scope, Time, Vec<Event>> {
    fn loyalty(self) -> Stream<'scope, Time, Vec<Event>> {
        let mut orders: HashMap<Str, Order> = HashMap::new();
        self.flat_map(|event| counts(&event).then_some(event))
            .keyed_ordered(
                "Loyalty",
                |event: &Event| key_hash(event.body.order_id().map_or("", |id| id)),
                move |_time, events, out| {
                    for event in events {
                        // One loyalty event at most per event read, numbered after it.
                        let caused = |body: EventBody| Event {
                            seq: event.seq,
                            phase: LOYALTY_PHASE,
                            sub: (u16::from(event.phase) << 12) | event.sub,
                            ts: event.ts,
                            body,
                        };
                        match &event.body {
                            EventBody::OrderCreated(created) => {
                                orders.insert(
                                    created.order_id.clone(),
                                    Order {
                                        user_id: created.user_id.clone(),
                                        ..Order::default()
                                    },
                                );
                            }
                            EventBody::OrderReserved(reserved) => {
                                if let Some(order) = orders.get_mut(&reserved.order_id) {
                                    order.total_cents = reserved.total_cents;
                                }
                            }
                            EventBody::OrderCompleted(completed) => {
                                let Some(order) = orders.get_mut(&completed.order_id) else {
                                    continue;
                                };
                                let points = points_for(order.total_cents);
                                if order.earned > 0 || points == 0 {
                                    continue;
                                }
                                order.earned = points;
                                // Refunds before completion take their share at once.
                                let reversed = points_refunded(
                                    points,
                                    order.refunded_cents,
                                    order.total_cents,
                                );
                                order.reversed = reversed;
                                out.push(caused(
                                    LoyaltyPointsEarned {
                                        user_id: order.user_id.clone(),
                                        order_id: completed.order_id.clone(),
                                        points: points - reversed,
                                    }
                                    .into(),
                                ));
                            }
                            EventBody::RefundProcessed(refund) => {
                                let Some(order) = orders.get_mut(&refund.order_id) else {
                                    continue;
                                };
                                order.refunded_cents += refund.amount_cents;
                                if order.earned == 0 {
                                    continue;
                                }
                                let reversed = points_refunded(
                                    order.earned,
                                    order.refunded_cents,
                                    order.total_cents,
                                );
                                let points = reversed - order.reversed;
                                if points <= 0 {
                                    continue;
                                }
                                order.reversed = reversed;
                                out.push(caused(
                                    LoyaltyPointsReversed {
                                        user_id: order.user_id.clone(),
                                        order_id: refund.order_id.clone(),
                                        refund_id: refund.refund_id.clone(),
                                        points,
                                    }
                                    .into(),
                                ));
                            }
                            _ => {}
                        }
                    }
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_come_from_whole_units_and_go_back_in_proportion() {
        assert_eq!(points_for(12_999), 129);
        assert_eq!(points_for(99), 0);
        assert_eq!(points_refunded(129, 0, 12_999), 0);
        assert_eq!(points_refunded(129, 6_500, 12_999), 64);
        assert_eq!(points_refunded(129, 12_999, 12_999), 129);
        // Never more than was earned, whatever is refunded.
        assert_eq!(points_refunded(129, 50_000, 12_999), 129);
        assert_eq!(Tier::of(999), Tier::Standard);
        assert_eq!(Tier::of(1000), Tier::Premium);
    }
}
