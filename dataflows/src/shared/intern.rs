//! One allocation for each text that commands keep repeating.
//!
//! Every command decoded from the log gets new strings, and many of them name what other
//! commands named before: the user and products of an order, a card's brand, a carrier.
//! Those strings outlive the command (an order's row keeps its user and its lines, a
//! payment its card's brand), so without sharing every order held its own copy of each.
//! An `Interner` swaps such a string for the copy it already holds. The values are equal,
//! so what the dataflow computes does not depend on it; only memory does.
//!
//! Ids that are new with their command (an order's own id) are not interned: there is
//! nothing to share them with.

use std::collections::HashSet;

use crate::model::*;

/// Held strings; when `limit` are held the set starts again from empty, so a stream of
/// distinct ids cannot grow it without bound.
pub struct Interner {
    strings: HashSet<Str>,
    limit: usize,
}

impl Default for Interner {
    fn default() -> Self {
        Interner::with_limit(1 << 18)
    }
}

impl Interner {
    pub fn with_limit(limit: usize) -> Self {
        Interner {
            strings: HashSet::new(),
            limit: limit.max(1),
        }
    }

    /// Points `text` at the held copy of its value, holding this one if there is none.
    pub fn share(&mut self, text: &mut Str) {
        if let Some(held) = self.strings.get(text) {
            *text = held.clone();
            return;
        }
        if self.strings.len() >= self.limit {
            self.strings = HashSet::new();
        }
        self.strings.insert(text.clone());
    }

    fn share_lines(&mut self, lines: &mut [Line]) {
        for line in lines {
            self.share(&mut line.product_id);
        }
    }

    fn share_card(&mut self, card: &mut CardToken) {
        self.share(&mut card.brand);
        self.share(&mut card.last4);
    }

    /// Shares the strings of `command` that name products, users, currencies, carriers
    /// and other values many commands repeat.
    pub fn command(&mut self, command: &mut Command) {
        use Command::*;
        match command {
            CreateProduct {
                product_id,
                currency,
                warehouse_id,
                ..
            } => {
                self.share(product_id);
                self.share(currency);
                if let Some(warehouse) = warehouse_id {
                    self.share(warehouse);
                }
            }
            UpdateProduct {
                product_id,
                currency,
                ..
            } => {
                self.share(product_id);
                if let Some(currency) = currency {
                    self.share(currency);
                }
            }
            AdjustStock {
                product_id, reason, ..
            } => {
                self.share(product_id);
                self.share(reason);
            }
            CreateUser { user_id, .. } | UpdateUser { user_id, .. } | DeleteUser { user_id } => {
                self.share(user_id)
            }
            CreateCart { user_id, .. } => self.share(user_id),
            SetCartItem { product_id, .. } => self.share(product_id),
            PlaceOrder {
                user_id,
                items,
                payment,
                ..
            } => {
                self.share(user_id);
                self.share_lines(items);
                if let Some(card) = payment {
                    self.share_card(card);
                }
            }
            ReserveStock { items, .. } => self.share_lines(items),
            PayOrder { payment, .. } => self.share_card(payment),
            PaymentResult { outcome, .. } => match outcome {
                PaymentOutcome::Approved { .. } => {}
                PaymentOutcome::Declined { decline_code }
                | PaymentOutcome::Fraud { decline_code } => self.share(decline_code),
            },
            ShipmentDispatched { carrier, .. } => self.share(carrier),
            RequestRefund { reason, .. } => self.share(reason),
            CancelOrder { .. }
            | ReleaseReservation { .. }
            | SetOrderStatus { .. }
            | ShipmentDelivered { .. }
            | RefundResult { .. }
            | RequestReport { .. }
            | ReportResult { .. }
            | ScheduleReport { .. }
            | DeleteReportSchedule { .. }
            | AddPaymentMethod { .. }
            | OpenTicket { .. }
            | ChangeTicket { .. }
            | CommentOnTicket { .. }
            | RemovePaymentMethod { .. }
            | CreateDashboard { .. }
            | UpdateDashboard { .. }
            | DeleteDashboard { .. }
            | CreateApiKey { .. }
            | RotateApiKey { .. }
            | RevokeApiKey { .. }
            | RevokeAccessToken { .. }
            | PublishSigningKey { .. }
            | RetireSigningKey { .. }
            | OpenSession { .. }
            | GrantAuthorizationCode { .. }
            | RedeemAuthorizationCode { .. }
            | RefreshSession { .. }
            | RevokeSession { .. }
            | Authenticate { .. }
            | UnlockUser { .. }
            | StartMfa { .. }
            | ConfirmMfa { .. }
            | DisableMfa { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn order(user: &str, product: &str) -> Command {
        Command::PlaceOrder {
            order_id: "ord_1".into(),
            user_id: user.into(),
            items: vec![Line {
                product_id: product.into(),
                quantity: 1,
            }],
            payment: None,
            shipping_address: None,
            cart_id: None,
        }
    }

    fn ids(command: &Command) -> (Str, Str) {
        match command {
            Command::PlaceOrder { user_id, items, .. } => {
                (user_id.clone(), items[0].product_id.clone())
            }
            _ => unreachable!(),
        }
    }

    #[test]
    fn equal_strings_share_one_allocation_and_keep_their_value() {
        let mut interner = Interner::default();
        let (mut first, mut second) = (order("usr_a", "prd_b"), order("usr_a", "prd_b"));
        let unshared = second.clone();
        interner.command(&mut first);
        interner.command(&mut second);
        let ((user_1, product_1), (user_2, product_2)) = (ids(&first), ids(&second));
        assert!(Arc::ptr_eq(&user_1, &user_2));
        assert!(Arc::ptr_eq(&product_1, &product_2));
        assert_eq!(second, unshared);
    }

    #[test]
    fn the_held_set_starts_again_at_its_limit() {
        let mut interner = Interner::with_limit(2);
        for id in ["a", "b", "c"] {
            interner.share(&mut Str::from(id));
        }
        assert_eq!(interner.strings.len(), 1);
        let mut again = Str::from("c");
        let held = interner.strings.get("c").cloned().expect("held");
        interner.share(&mut again);
        assert!(Arc::ptr_eq(&again, &held));
    }
}
