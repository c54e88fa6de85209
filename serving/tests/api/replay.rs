//! Replaying the log rebuilds the same views, byte for byte, on any number of workers.

use std::time::Duration;

use serde_json::json;

use crate::support::{card, TestApp};

pub async fn settle(t: &TestApp) {
    let mut frontier = t.app.views.subscribe_frontier();
    while !t.app.views.read().effects.is_empty() {
        tokio::time::timeout(Duration::from_secs(10), frontier.changed())
            .await
            .expect("effects settle")
            .expect("open");
    }
}

/// Every view's rows, the metric views included, once these have caught up.
pub async fn view_bytes(t: &TestApp) -> Vec<u8> {
    let snapshot = t
        .app
        .views
        .read_settled(Duration::from_secs(30))
        .await
        .expect("the metric views catch up");
    serde_json::to_vec(&snapshot.rows()).expect("rows serialise")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_identical_views() {
    let t = TestApp::new().await;
    let a = t.product("R-A", 500, 6).await;
    let b = t.product("R-B", 900, 2).await;
    let user = t.user("replay@example.com").await;
    let cards = [
        "4242424242424242",
        "4000000000000002",
        "4100000000000019",
        "5555555555554444",
    ];
    let mut orders = Vec::new();
    for (i, number) in cards.iter().cycle().take(10).enumerate() {
        let items = if i % 2 == 0 {
            json!([{"product_id": a, "quantity": 1}])
        } else {
            json!([{"product_id": a, "quantity": 1}, {"product_id": b, "quantity": 1}])
        };
        let placed = t
            .post(
                "/api/v1/orders",
                json!({"user_id": user, "items": items, "payment_method": card(number)}),
            )
            .await;
        orders.push(placed.body["id"].as_str().unwrap().to_string());
    }
    t.post(&format!("/api/v1/orders/{}/cancel", orders[3]), json!({}))
        .await;
    t.post(
        "/api/v1/inventory/adjust",
        json!({"product_id": b, "delta": 3, "reason": "restock"}),
    )
    .await;
    settle(&t).await;
    let before = view_bytes(&t).await;
    assert!(before.len() > 1000);

    let t = t.restart(4).await;
    assert_eq!(
        view_bytes(&t).await,
        before,
        "4 workers replaying the log build the same views"
    );
    let t = t.restart(1).await;
    assert_eq!(
        view_bytes(&t).await,
        before,
        "1 worker replaying the log builds the same views"
    );
}
