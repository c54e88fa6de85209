//! Rows that are not a context's own: the calls to the outside world the saga waits
//! for (`EffectRow`), and the idempotency keys seen (`IdempotencyRow`).

use serde::{Deserialize, Serialize};

use crate::events::{PaymentInitiated, RefundRequested, ShipmentCreated};
use crate::model::*;

/// A call to the outside world the saga is waiting for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EffectRow {
    Charge {
        payment_id: Str,
        order_id: Str,
        amount_cents: i64,
        currency: Str,
        card: CardToken,
    },
    Refund {
        refund_id: Str,
        payment_id: Str,
        order_id: Str,
        amount_cents: i64,
    },
    Ship {
        shipment_id: Str,
        order_id: Str,
        address: Option<Str>,
    },
}

impl EffectRow {
    pub fn effect_id(&self) -> &Str {
        match self {
            EffectRow::Charge { payment_id, .. } => payment_id,
            EffectRow::Refund { refund_id, .. } => refund_id,
            EffectRow::Ship { shipment_id, .. } => shipment_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IdempotencyRow {
    pub key: Str,
    pub fingerprint: Str,
    pub first_seq: Seq,
    /// Log time of the first use; the key is forgotten `IDEMPOTENCY_TTL_MS` later.
    pub ts: Ts,
}

impl IdempotencyRow {
    /// Whether the key still binds a request arriving at log time `now`.
    pub fn is_live(&self, now: Ts) -> bool {
        now < self.ts.saturating_add(IDEMPOTENCY_TTL_MS)
    }
}

pub(crate) fn step_effect(row: &mut Option<EffectRow>, event: &Event) {
    *row = match &event.body {
        EventBody::PaymentInitiated(PaymentInitiated {
            payment_id,
            order_id,
            amount_cents,
            currency,
            card,
        }) => Some(EffectRow::Charge {
            payment_id: payment_id.clone(),
            order_id: order_id.clone(),
            amount_cents: *amount_cents,
            currency: currency.clone(),
            card: card.clone(),
        }),
        EventBody::RefundRequested(RefundRequested {
            refund_id,
            payment_id,
            order_id,
            amount_cents,
            ..
        }) => Some(EffectRow::Refund {
            refund_id: refund_id.clone(),
            payment_id: payment_id.clone(),
            order_id: order_id.clone(),
            amount_cents: *amount_cents,
        }),
        EventBody::ShipmentCreated(ShipmentCreated {
            shipment_id,
            order_id,
            address,
        }) => Some(EffectRow::Ship {
            shipment_id: shipment_id.clone(),
            order_id: order_id.clone(),
            address: address.clone(),
        }),
        _ => None,
    };
}
