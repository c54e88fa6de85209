//! A small shop with a known history, fed through the real dataflow: three products,
//! two users, four orders (paid and shipped, out of stock, waiting for payment,
//! declined), a partial refund and a cart. Log time starts at 2023-11-14T22:13:20Z.

use std::sync::Arc;

use dataflows::model::{CancelReason, CardToken, Command, Line, PaymentOutcome};
use queries::testkit::Harness;
use queries::Snapshot;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

pub fn shop() -> (Harness, Arc<Snapshot>) {
    let mut h = Harness::new(2);
    h.batch(vec![
        product("p_mug", "MUG", "Mug", 1200, "USD", 10, 2),
        product("p_tee", "TEE", "T-shirt", 2500, "USD", 5, 1),
        product("p_cap", "CAP", "Cap", 900, "EUR", 2, 3),
        user("u_ada", "ada@example.com", "Ada"),
        user("u_bob", "bob@example.com", "Bob"),
    ]);
    h.append(
        DAY_MS,
        vec![
            order("o1", "u_ada", &[("p_mug", 2), ("p_tee", 1)], Some("visa")),
            order("o2", "u_bob", &[("p_cap", 3)], None),
            order("o3", "u_bob", &[("p_tee", 1)], None),
            Command::CreateCart {
                cart_id: "c1".into(),
                user_id: "u_ada".into(),
            },
        ]
        .into_iter()
        .map(dataflows::model::Envelope::new)
        .collect(),
    );
    h.batch(vec![
        Command::PaymentResult {
            payment_id: "pay_o1".into(),
            order_id: "o1".into(),
            outcome: PaymentOutcome::Approved {
                charge_id: "ch_1".into(),
            },
        },
        Command::SetCartItem {
            cart_id: "c1".into(),
            product_id: "p_mug".into(),
            quantity: 3,
            currency: "USD".into(),
        },
    ]);
    h.batch(vec![Command::ShipmentDispatched {
        shipment_id: "shp_o1".into(),
        order_id: "o1".into(),
        carrier: "ups".into(),
        tracking_number: "1Z1".into(),
    }]);
    h.append(
        DAY_MS,
        vec![dataflows::model::Envelope::new(order(
            "o4",
            "u_ada",
            &[("p_cap", 1)],
            Some("mastercard"),
        ))],
    );
    h.batch(vec![
        Command::PaymentResult {
            payment_id: "pay_o4".into(),
            order_id: "o4".into(),
            outcome: PaymentOutcome::Declined {
                decline_code: "insufficient_funds".into(),
            },
        },
        Command::RequestRefund {
            payment_id: "pay_o1".into(),
            order_id: "o1".into(),
            amount_cents: Some(500),
            reason: "damaged".into(),
        },
    ]);
    h.batch(vec![Command::RefundResult {
        refund_id: "re_o1_1".into(),
        payment_id: "pay_o1".into(),
        order_id: "o1".into(),
        succeeded: true,
    }]);
    let snapshot = h.store.read();
    assert_eq!(
        snapshot.orders["o2"].cancel_reason,
        Some(CancelReason::OutOfStock),
        "the fixture is what the .slt files expect"
    );
    (h, snapshot)
}

fn product(
    id: &str,
    sku: &str,
    name: &str,
    price_cents: i64,
    currency: &str,
    stock: i64,
    reorder_point: i64,
) -> Command {
    Command::CreateProduct {
        product_id: id.into(),
        sku: sku.into(),
        name: name.into(),
        price_cents,
        currency: currency.into(),
        initial_stock: stock,
        warehouse_id: None,
        reorder_point,
    }
}

fn user(id: &str, email: &str, name: &str) -> Command {
    Command::CreateUser {
        user_id: id.into(),
        email: email.into(),
        name: name.into(),
        password_hash: "$argon2id$not-a-real-hash".into(),
    }
}

fn order(id: &str, user: &str, lines: &[(&str, i64)], brand: Option<&str>) -> Command {
    Command::PlaceOrder {
        order_id: id.into(),
        user_id: user.into(),
        items: lines
            .iter()
            .map(|(product, quantity)| Line {
                product_id: (*product).into(),
                quantity: *quantity,
            })
            .collect(),
        payment: brand.map(|brand| CardToken {
            token: format!("tok_{id}").into(),
            brand: brand.into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2030,
        }),
        shipping_address: Some("1 Main St".into()),
        cart_id: None,
    }
}
