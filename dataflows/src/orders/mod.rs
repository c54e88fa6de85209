//! Orders: carts, orders and the `order_fulfillment` saga.
//!
//! `saga.rs` is the order aggregate and process manager (`OrderFulfillment`: reserve
//! stock, charge, ship; compensations cancel, release, refund, cancel the shipment);
//! `carts.rs` the cart aggregate (`ShoppingCarts`); `views.rs` the order and cart rows.
//! The rules here say what an order may be and what a client may ask of it.

pub mod carts;
pub mod events;
mod saga;
pub mod views;

pub use saga::*;

use crate::catalog::MAX_QUANTITY;
use crate::model::{CancelReason, Line};

/// Most lines one order may have.
pub const MAX_LINES_PER_ORDER: usize = 100;

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
    /// The line at this position of the lines given asks for no units or too many, or
    /// is the first line of a product whose lines add up to too many.
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
    // Where each merged line was first named among the lines given.
    let mut first_named: Vec<usize> = Vec::new();
    for (position, line) in lines.into_iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(LineProblem::Quantity(position));
        }
        match merged
            .iter_mut()
            .position(|held| held.product_id == line.product_id)
        {
            Some(index) => {
                let held = &mut merged[index];
                held.quantity = held.quantity.saturating_add(line.quantity);
                if held.quantity > MAX_QUANTITY {
                    return Err(LineProblem::Quantity(first_named[index]));
                }
            }
            None => {
                merged.push(line);
                first_named.push(position);
            }
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
        // Positions are those of the lines given, not of the merged ones.
        assert_eq!(
            order_lines([line("b", 1), line("a", MAX_QUANTITY), line("a", 1)]),
            Err(LineProblem::Quantity(1))
        );
        assert_eq!(
            order_lines([line("a", 1), line("a", 1), line("b", 0)]),
            Err(LineProblem::Quantity(2))
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
}
