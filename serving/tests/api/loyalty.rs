//! Loyalty (`GET /users/{id}/loyalty`): delivered orders earn points, refunds take
//! their share back, and the tier the points give shows on the user and in the
//! gateway's quota.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::orders::wait_for_status;
use crate::support::TestApp;

/// Waits until the user's loyalty, read as `headers` says, is `points`.
async fn points_become(t: &TestApp, user: &str, headers: &[(&str, &str)], points: i64) -> Value {
    let mut frontier = t.app.views.subscribe_frontier();
    loop {
        let reply = t
            .send(
                "GET",
                &format!("/api/v1/users/{user}/loyalty"),
                None,
                headers,
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        if reply.body["points"] == points {
            return reply.body;
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), frontier.changed())
            .await
            .unwrap_or_else(|_| panic!("points stay at {}", reply.body["points"]))
            .expect("open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_orders_earn_points_refunds_take_them_back_and_premium_buyers_get_more() {
    let t = TestApp::configured(|config| {
        config.gateway.authenticated_per_minute = 300;
        config.gateway.premium_per_minute = 3000;
    })
    .await;
    let chair = t.product("CHAIR", 60_000, 10).await;
    let ann = t.user("ann@example.com").await;
    let bob = t.user("bob@example.com").await;
    let (as_ann, as_bob) = (t.bearer(&ann), t.bearer(&bob));
    let ann_h = [("authorization", as_ann.as_str())];

    let none = points_become(&t, &ann, &ann_h, 0).await;
    assert_eq!(
        none,
        json!({"user_id": ann, "points": 0, "earned": 0, "reversed": 0, "orders": 0,
               "tier": "standard", "premium_points": 1000, "points_per_unit": 1,
               "updated_at": null})
    );

    // Two chairs at 600.00: 1,200 points, once delivered, not before.
    let placed = t.paid_order(&ann, &chair, 2, "4242424242424242").await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let order = placed.body["id"].as_str().unwrap().to_string();
    let shipped = wait_for_status(&t, &order, "shipped").await;
    assert_eq!(points_become(&t, &ann, &ann_h, 0).await["orders"], 0);
    let shipment = shipped["shipment_id"].as_str().unwrap();
    let delivered = t
        .post(&format!("/api/v1/shipments/{shipment}/deliver"), json!({}))
        .await;
    assert_eq!(delivered.status, StatusCode::OK, "{:?}", delivered.body);
    let earned = points_become(&t, &ann, &ann_h, 1200).await;
    assert_eq!(
        (earned["orders"].as_u64(), earned["tier"].as_str()),
        (Some(1), Some("premium"))
    );
    assert!(earned["updated_at"].as_str().unwrap().ends_with('Z'));

    // The tier shows on the user, and the gateway gives the premium quota.
    let user = t
        .send("GET", &format!("/api/v1/users/{ann}"), None, &ann_h)
        .await;
    assert_eq!(user.body["tier"], "premium", "{:?}", user.body);
    assert_eq!(user.headers["ratelimit-limit"], "3000");
    let other = t
        .send(
            "GET",
            &format!("/api/v1/users/{bob}"),
            None,
            &[("authorization", &as_bob)],
        )
        .await;
    assert_eq!(other.body["tier"], "standard");
    assert_eq!(other.headers["ratelimit-limit"], "300");

    // A quarter refunded takes a quarter of the points back: 900, standard again.
    let payment = shipped["payment_id"].as_str().unwrap();
    let refund = t
        .post(
            &format!("/api/v1/payments/{payment}/refund"),
            json!({"amount_cents": 30_000}),
        )
        .await;
    assert_eq!(refund.status, StatusCode::CREATED, "{:?}", refund.body);
    let after = points_become(&t, &ann, &ann_h, 900).await;
    assert_eq!(
        (after["earned"].as_i64(), after["reversed"].as_i64()),
        (Some(1200), Some(300))
    );
    assert_eq!(after["tier"], "standard");
    let user = t
        .send("GET", &format!("/api/v1/users/{ann}"), None, &ann_h)
        .await;
    assert_eq!(user.body["tier"], "standard");
    assert_eq!(user.headers["ratelimit-limit"], "300");

    // Another customer may not read them; an administrator may; nobody's are 404.
    let refused = t
        .send(
            "GET",
            &format!("/api/v1/users/{ann}/loyalty"),
            None,
            &[("authorization", &as_bob)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    assert_eq!(
        t.get(&format!("/api/v1/users/{ann}/loyalty")).await.body["points"],
        900
    );
    let missing = t.get("/api/v1/users/usr_nobody/loyalty").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.content_type, "application/problem+json");
}
