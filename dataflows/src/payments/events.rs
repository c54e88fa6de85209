//! The payments context's part of the event catalogue: charges and refunds (`payment.*`, `fraud.*`, `refund.*`).
//! `crate::events::EventBody` names each of these on the event bus.

use crate::events::records;
use crate::model::{CardToken, Str};

records! {
    /// The saga asked the provider to charge an order's total.
    pub struct PaymentInitiated {
        pub payment_id: Str,
        pub order_id: Str,
        pub amount_cents: i64,
        pub currency: Str,
        pub card: CardToken,
    }

    /// The provider charged the card.
    pub struct PaymentCompleted {
        pub payment_id: Str,
        pub order_id: Str,
        pub charge_id: Str,
    }

    /// The provider declined the charge.
    pub struct PaymentFailed {
        pub payment_id: Str,
        pub order_id: Str,
        pub decline_code: Str,
    }

    /// The provider refused the charge as fraudulent.
    pub struct FraudDetected {
        pub payment_id: Str,
        pub order_id: Str,
    }

    /// A refund of part or all of a charge was asked for.
    pub struct RefundRequested {
        pub refund_id: Str,
        pub payment_id: Str,
        pub order_id: Str,
        pub amount_cents: i64,
        pub reason: Str,
    }

    /// The provider paid a refund back.
    pub struct RefundProcessed {
        pub refund_id: Str,
        pub payment_id: Str,
        pub order_id: Str,
        pub amount_cents: i64,
    }

    /// The provider refused a refund.
    pub struct RefundFailed {
        pub refund_id: Str,
        pub payment_id: Str,
        pub order_id: Str,
    }

    /// A card was saved for its user to pay with (`POST /payment-methods`).
    pub struct PaymentMethodAdded {
        pub method_id: Str,
        pub user_id: Str,
        pub card: CardToken,
    }

    /// A saved card was removed: by its user, or with the user's account.
    pub struct PaymentMethodRemoved {
        pub method_id: Str,
        pub user_id: Str,
    }
}
