//! Domain rules that the HTTP layer checks early and the dataflow enforces again, since a
//! Kafka commands topic can be written by other tools. Each is defined here, once.

use crate::model::{CancelReason, Command, Line, PaymentOutcome};
use crate::views::EffectRow;

/// Most units one order line, stock adjustment or cart entry may carry.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Most money a single price may state (minor units). With at most `MAX_QUANTITY` units
/// a line and `MAX_LINES_PER_ORDER` lines an order, no total can overflow an i64.
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;
/// Most lines one order may have.
pub const MAX_LINES_PER_ORDER: usize = 100;
/// Most refunds one payment may have: each is a provider call and a row in the payment.
pub const MAX_REFUNDS_PER_PAYMENT: usize = 100;

/// Units a product can still promise: what is on hand less what orders hold.
pub fn available(on_hand: i64, reserved: i64) -> i64 {
    on_hand.saturating_sub(reserved)
}

/// Whether a stock adjustment of `delta` is one the catalog takes at all.
pub fn adjustment_in_bounds(delta: i64) -> bool {
    delta != 0 && (-MAX_QUANTITY..=MAX_QUANTITY).contains(&delta)
}

/// The reasons a client may give for cancelling an order. The others (out of stock,
/// payment declined, fraud suspected, invalid items) only the domain decides.
pub fn client_may_cancel_for(reason: CancelReason) -> bool {
    matches!(
        reason,
        CancelReason::CustomerRequest | CancelReason::AdminRequest
    )
}

/// Why an order's lines are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineProblem {
    /// No lines, or more than `MAX_LINES_PER_ORDER` (after merging).
    Count,
    /// The line at this index (of the merged lines) asks for no units or too many.
    Quantity(usize),
}

impl LineProblem {
    pub fn message(&self) -> String {
        match self {
            LineProblem::Count => format!("an order has 1 to {MAX_LINES_PER_ORDER} lines"),
            LineProblem::Quantity(_) => {
                format!("must be between 1 and {MAX_QUANTITY} (lines of one product add up)")
            }
        }
    }
}

/// An order's lines as the domain takes them: lines of the same product merged into the
/// first, in the order first named, each with 1 to `MAX_QUANTITY` units in all, and 1 to
/// `MAX_LINES_PER_ORDER` lines.
pub fn order_lines(lines: impl IntoIterator<Item = Line>) -> Result<Vec<Line>, LineProblem> {
    let mut merged: Vec<Line> = Vec::new();
    for line in lines {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(LineProblem::Quantity(merged.len()));
        }
        match merged
            .iter_mut()
            .position(|held| held.product_id == line.product_id)
        {
            Some(index) => {
                let held = &mut merged[index];
                held.quantity = held.quantity.saturating_add(line.quantity);
                if held.quantity > MAX_QUANTITY {
                    return Err(LineProblem::Quantity(index));
                }
            }
            None => merged.push(line),
        }
        if merged.len() > MAX_LINES_PER_ORDER {
            return Err(LineProblem::Count);
        }
    }
    if merged.is_empty() {
        return Err(LineProblem::Count);
    }
    Ok(merged)
}

/// What a provider's permanent refusal means for the saga: a charge that cannot be
/// made is a declined payment (`processing_error`), a refund that cannot be made a
/// failed refund. A shipment has no such answer: it waits for a carrier that works.
pub fn after_permanent_failure(effect: &EffectRow) -> Option<Command> {
    match effect {
        EffectRow::Charge {
            payment_id,
            order_id,
            ..
        } => Some(Command::PaymentResult {
            payment_id: payment_id.clone(),
            order_id: order_id.clone(),
            outcome: PaymentOutcome::Declined {
                decline_code: "processing_error".into(),
            },
        }),
        EffectRow::Refund {
            refund_id,
            payment_id,
            order_id,
            ..
        } => Some(Command::RefundResult {
            refund_id: refund_id.clone(),
            payment_id: payment_id.clone(),
            order_id: order_id.clone(),
            succeeded: false,
        }),
        EffectRow::Ship { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product: &str, quantity: i64) -> Line {
        Line {
            product_id: product.into(),
            quantity,
        }
    }

    #[test]
    fn duplicate_lines_merge_within_the_quantity_bound() {
        let merged = order_lines([line("a", 2), line("b", 1), line("a", 3)]).unwrap();
        assert_eq!(merged, vec![line("a", 5), line("b", 1)]);
        assert_eq!(
            order_lines([line("a", MAX_QUANTITY), line("a", 1)]),
            Err(LineProblem::Quantity(0))
        );
    }

    #[test]
    fn counts_and_quantities_are_bounded() {
        assert_eq!(order_lines([]), Err(LineProblem::Count));
        assert_eq!(order_lines([line("a", 0)]), Err(LineProblem::Quantity(0)));
        assert_eq!(
            order_lines([line("a", i64::MIN)]),
            Err(LineProblem::Quantity(0))
        );
        let many = (0..=MAX_LINES_PER_ORDER).map(|n| line(&format!("p{n}"), 1));
        assert_eq!(order_lines(many), Err(LineProblem::Count));
    }

    #[test]
    fn adjustments_are_bounded_both_ways() {
        assert!(adjustment_in_bounds(-MAX_QUANTITY));
        assert!(!adjustment_in_bounds(i64::MIN));
        assert!(!adjustment_in_bounds(0));
    }
}
