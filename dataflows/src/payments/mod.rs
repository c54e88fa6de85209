//! Payments: the payment read model and what the saga makes of a provider's answers.
//! The payment's state machine runs inside the order saga (`orders::saga`), since a
//! payment belongs to exactly one order; its rows are in `views.rs`. Saved cards are
//! an aggregate of their own (`methods.rs`).

pub mod events;
pub mod methods;
pub mod views;

use crate::model::{Command, PaymentOutcome};
use crate::views::EffectRow;

/// Most refunds one payment may have: each is a provider call and a row in the payment.
pub const MAX_REFUNDS_PER_PAYMENT: usize = 100;

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
