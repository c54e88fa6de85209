//! Catalog: products, their stock, and reservations of stock.
//!
//! `stock.rs` is the product aggregate (`ReserveStock`: creates, updates, adjustments,
//! reservations and releases, first come first served in log order) with the sku
//! claims (`ClaimSku`); `reservations.rs` holds stock through the inventory API
//! (`StockReservations`); `views.rs` the product, stock and reservation rows.
//! The limits here bound what the catalog takes, for HTTP clients and the log alike.

pub mod events;
pub mod reservations;
mod stock;
pub mod views;

pub use stock::*;

/// Most units one order line, stock adjustment or cart entry may carry.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Most money a single price may state (minor units). With at most `MAX_QUANTITY` units
/// a line and `orders::MAX_LINES_PER_ORDER` lines an order, no total can overflow an i64.
pub const MAX_PRICE_CENTS: i64 = 10_000_000_000;

/// Units a product can still promise: what is on hand less what orders hold.
pub fn available(on_hand: i64, reserved: i64) -> i64 {
    on_hand.saturating_sub(reserved)
}

/// Whether a stock adjustment of `delta` is one the catalog takes at all.
pub fn adjustment_in_bounds(delta: i64) -> bool {
    delta != 0 && (-MAX_QUANTITY..=MAX_QUANTITY).contains(&delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjustments_are_bounded_both_ways() {
        assert!(adjustment_in_bounds(-MAX_QUANTITY));
        assert!(!adjustment_in_bounds(i64::MIN));
        assert!(!adjustment_in_bounds(0));
    }
}
