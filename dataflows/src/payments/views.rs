//! Payment read models: the charge, its refunds and their states; and the cards users
//! saved.

use serde::{Deserialize, Serialize};

use crate::events::{
    FraudDetected, PaymentCompleted, PaymentFailed, PaymentInitiated, PaymentMethodAdded,
    RefundFailed, RefundProcessed, RefundRequested,
};
use crate::model::*;

states! {
    pub enum PaymentStatus {
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
        PartiallyRefunded = "partially_refunded",
        Refunded = "refunded",
    }
}

states! {
    pub enum RefundStatus {
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RefundRow {
    pub refund_id: Str,
    /// Log position of the command that asked for the refund: a request's answer finds
    /// its own refund by it.
    pub requested_seq: Seq,
    pub amount_cents: i64,
    pub status: RefundStatus,
    pub reason: Str,
    /// When the provider paid it back or refused it.
    pub settled_at: Option<Ts>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaymentRow {
    pub payment_id: Str,
    pub order_id: Str,
    pub status: PaymentStatus,
    pub amount_cents: i64,
    pub currency: Str,
    pub captured_cents: i64,
    pub refunded_cents: i64,
    pub card_brand: Str,
    pub card_last4: Str,
    pub charge_id: Option<Str>,
    pub decline_code: Option<Str>,
    pub fraud: bool,
    pub refunds: Box<[RefundRow]>,
    pub created_at: Ts,
    pub updated_at: Ts,
}

pub(crate) fn step_payment(row: &mut Option<PaymentRow>, event: &Event) {
    if let EventBody::PaymentInitiated(PaymentInitiated {
        payment_id,
        order_id,
        amount_cents,
        currency,
        card,
    }) = &event.body
    {
        *row = Some(PaymentRow {
            payment_id: payment_id.clone(),
            order_id: order_id.clone(),
            status: PaymentStatus::Pending,
            amount_cents: *amount_cents,
            currency: currency.clone(),
            captured_cents: 0,
            refunded_cents: 0,
            card_brand: card.brand.clone(),
            card_last4: card.last4.clone(),
            charge_id: None,
            decline_code: None,
            fraud: false,
            refunds: Box::default(),
            created_at: event.ts,
            updated_at: event.ts,
        });
        return;
    }
    let Some(row) = row.as_mut() else { return };
    row.updated_at = event.ts;
    match &event.body {
        EventBody::PaymentCompleted(PaymentCompleted { charge_id, .. }) => {
            row.status = PaymentStatus::Succeeded;
            row.captured_cents = row.amount_cents;
            row.charge_id = Some(charge_id.clone());
        }
        EventBody::PaymentFailed(PaymentFailed { decline_code, .. }) => {
            row.status = PaymentStatus::Failed;
            row.decline_code = Some(decline_code.clone());
        }
        EventBody::FraudDetected(FraudDetected { .. }) => row.fraud = true,
        EventBody::RefundRequested(RefundRequested {
            refund_id,
            amount_cents,
            reason,
            ..
        }) => push_boxed(
            &mut row.refunds,
            RefundRow {
                refund_id: refund_id.clone(),
                requested_seq: event.seq,
                amount_cents: *amount_cents,
                status: RefundStatus::Pending,
                reason: reason.clone(),
                settled_at: None,
            },
        ),
        EventBody::RefundProcessed(RefundProcessed {
            refund_id,
            amount_cents,
            ..
        }) => {
            if let Some(refund) = row
                .refunds
                .iter_mut()
                .find(|refund| refund.refund_id == *refund_id)
            {
                refund.status = RefundStatus::Succeeded;
                refund.settled_at = Some(event.ts);
            }
            row.refunded_cents += amount_cents;
            row.status = if row.refunded_cents >= row.captured_cents {
                PaymentStatus::Refunded
            } else {
                PaymentStatus::PartiallyRefunded
            };
        }
        EventBody::RefundFailed(RefundFailed { refund_id, .. }) => {
            if let Some(refund) = row
                .refunds
                .iter_mut()
                .find(|refund| refund.refund_id == *refund_id)
            {
                refund.status = RefundStatus::Failed;
                refund.settled_at = Some(event.ts);
            }
        }
        _ => {}
    }
}

/// A card a user saved: its token, brand, last four digits and expiry, never its number.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PaymentMethodRow {
    pub method_id: Str,
    pub user_id: Str,
    pub card: CardToken,
    pub created_at: Ts,
}

pub(crate) fn step_payment_method(row: &mut Option<PaymentMethodRow>, event: &Event) {
    match &event.body {
        EventBody::PaymentMethodAdded(PaymentMethodAdded {
            method_id,
            user_id,
            card,
        }) => {
            *row = Some(PaymentMethodRow {
                method_id: method_id.clone(),
                user_id: user_id.clone(),
                card: card.clone(),
                created_at: event.ts,
            })
        }
        EventBody::PaymentMethodRemoved(_) => *row = None,
        _ => {}
    }
}
