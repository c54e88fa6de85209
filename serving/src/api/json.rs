//! View rows as the JSON the HTTP contract promises.

use dataflows::model::{Line, PricedLine, Ts};
use dataflows::views::*;
use queries::Snapshot;
use serde_json::{json, Value};

pub fn rfc3339(ms: Ts) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

pub fn stock(snapshot: &Snapshot, product_id: &str) -> Value {
    let level = snapshot.stock_of(product_id);
    json!({"product_id": product_id, "on_hand": level.on_hand, "reserved": level.reserved, "available": level.available()})
}

pub fn product(snapshot: &Snapshot, row: &ProductRow) -> Value {
    let level = snapshot.stock_of(&row.product_id);
    json!({
        "id": row.product_id,
        "sku": row.sku,
        "name": row.name,
        "price_cents": row.price_cents,
        "currency": row.currency,
        "reorder_point": row.reorder_point,
        "warehouse_id": row.warehouse_id,
        "stock": {"on_hand": level.on_hand, "reserved": level.reserved, "available": level.available()},
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    })
}

pub fn user(row: &UserRow) -> Value {
    json!({
        "id": row.user_id,
        "email": row.email,
        "name": row.name,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    })
}

/// A cart with its lines at today's prices. A product's currency can change after it was
/// put in; a cart whose lines no longer share one currency has no single subtotal, so
/// `subtotal_cents` and `currency` are null and each line names its own currency.
pub fn cart(snapshot: &Snapshot, row: &CartRow) -> Value {
    let mut subtotal = 0i64;
    let mut currencies: Vec<&str> = Vec::new();
    let items: Vec<Value> = row
        .items
        .iter()
        .map(|line| {
            let product = snapshot.products.get(&line.product_id);
            let price = product.map_or(0, |p| p.price_cents);
            let currency = product.map(|p| &*p.currency);
            if let Some(currency) = currency.filter(|c| !currencies.contains(c)) {
                currencies.push(currency);
            }
            subtotal = price.saturating_mul(line.quantity).saturating_add(subtotal);
            json!({"product_id": line.product_id, "quantity": line.quantity, "unit_price_cents": price, "currency": currency, "line_total_cents": price.saturating_mul(line.quantity)})
        })
        .collect();
    let (subtotal, currency) = match currencies.as_slice() {
        [] => (Some(0), None),
        [one] => (Some(subtotal), Some(*one)),
        _ => (None, None),
    };
    json!({
        "id": row.cart_id,
        "user_id": row.user_id,
        "items": items,
        "subtotal_cents": subtotal,
        "currency": currency,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    })
}

/// The lines of an order or a reservation: priced once stock is held, as asked before.
fn lines(items: &[Line], held: &[PricedLine]) -> Vec<Value> {
    if held.is_empty() {
        return items
            .iter()
            .map(|line| json!({"product_id": line.product_id, "quantity": line.quantity}))
            .collect();
    }
    held.iter()
        .map(|line| {
            json!({
                "product_id": line.product_id,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
                "line_total_cents": line.unit_price_cents.saturating_mul(line.quantity),
            })
        })
        .collect()
}

pub fn order(row: &OrderRow) -> Value {
    let items = lines(&row.items, &row.lines);
    let history: Vec<Value> = row
        .history
        .iter()
        .map(|change| {
            let mut entry = json!({"status": change.status, "at": rfc3339(change.at)});
            if let Some(reason) = change.reason {
                entry["reason"] = json!(reason);
            }
            entry
        })
        .collect();
    json!({
        "id": row.order_id,
        "user_id": row.user_id,
        "status": row.status,
        "cancel_reason": row.cancel_reason,
        "items": items,
        "total_cents": row.total_cents,
        "currency": if row.currency.is_empty() { Value::Null } else { json!(row.currency) },
        "payment_id": row.payment_id(),
        "shipment_id": row.shipment_id(),
        "cart_id": row.cart_id,
        "shipping_address": row.shipping_address,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
        "status_history": history,
    })
}

pub fn refund(payment: &PaymentRow, row: &RefundRow) -> Value {
    json!({"id": row.refund_id, "payment_id": payment.payment_id, "amount_cents": row.amount_cents, "currency": payment.currency, "status": row.status, "reason": row.reason})
}

pub fn payment(row: &PaymentRow) -> Value {
    json!({
        "id": row.payment_id,
        "order_id": row.order_id,
        "status": row.status,
        "amount_cents": row.amount_cents,
        "currency": row.currency,
        "captured_cents": row.captured_cents,
        "refunded_cents": row.refunded_cents,
        "card": {"brand": row.card_brand, "last4": row.card_last4},
        "charge_id": row.charge_id,
        "decline_code": row.decline_code,
        "fraud_suspected": row.fraud,
        "refunds": row.refunds.iter().map(|r| refund(row, r)).collect::<Vec<_>>(),
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    })
}

pub fn shipment(row: &ShipmentRow) -> Value {
    json!({
        "id": row.shipment_id,
        "order_id": row.order_id,
        "status": row.status,
        "carrier": row.carrier,
        "tracking_number": row.tracking_number,
        "address": row.address,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    })
}

/// A page of a list: `{items, next_cursor}`.
pub fn page(items: Vec<Value>, next_cursor: Option<String>) -> Value {
    json!({"items": items, "next_cursor": next_cursor})
}

pub fn reservation(row: &ReservationRow) -> Value {
    let items = lines(&row.items, &row.lines);
    json!({
        "id": row.reservation_id,
        "status": row.status,
        "reason": row.reason,
        "items": items,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    })
}
