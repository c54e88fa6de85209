//! Dashboards (`/api/v1/dashboards*`): the built-in boards, their panels' values as the
//! views move, their Server-Sent Events, and the page's files.

use axum::http::StatusCode;
use serde_json::Value;

use crate::support::{SseEvent, TestApp, ADMIN_KEY};

const ADMIN: &[(&str, &str)] = &[("x-api-key", ADMIN_KEY)];

/// The value of panel `id` in a board document (a snapshot event or a GET).
fn panel<'a>(board: &'a Value, id: &str) -> &'a Value {
    board["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|panel| panel["id"] == id)
        .unwrap_or_else(|| panic!("no panel {id} in {board}"))
}

fn rows(value: &Value) -> Vec<Vec<Value>> {
    serde_json::from_value(value["rows"].clone()).unwrap_or_else(|_| panic!("rows: {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_built_in_panel_reads_the_views_the_orders_move() {
    let t = TestApp::new().await;
    let listed = t.get("/api/v1/dashboards").await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let ids: Vec<&str> = listed.body["dashboards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|board| board["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["operations", "inventory", "payments"]);
    for board in listed.body["dashboards"].as_array().unwrap() {
        for panel in board["panels"].as_array().unwrap() {
            let chart = panel["chart"].as_str().unwrap();
            assert!(
                ["stat", "timeseries", "bar", "table"].contains(&chart),
                "{panel}"
            );
            assert!(
                panel["source"]["sql"].is_string() || panel["source"]["process"].is_string(),
                "{panel}"
            );
            assert!(panel.get("value").is_none(), "the list has no values");
        }
    }

    let mug = t.product("MUG", 1250, 3).await;
    let ann = t.user("ann@example.com").await;
    let paid = t.paid_order(&ann, &mug, 2, "4242424242424242").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{:?}", paid.body);
    let declined = t.paid_order(&ann, &mug, 1, "4000000000000002").await;
    assert_eq!(declined.status, StatusCode::CREATED, "{:?}", declined.body);
    for (order, settled_as) in [
        (&paid, ["confirmed", "shipped"]),
        (&declined, ["cancelled"; 2]),
    ] {
        let id = order.body["id"].as_str().unwrap();
        let settled = t.get(&format!("/api/v1/orders/{id}?wait=settled")).await;
        let status = settled.body["status"].as_str().unwrap_or_default();
        assert!(settled_as.contains(&status), "{:?}", settled.body);
    }

    let boards: Vec<Value> = {
        let mut boards = Vec::new();
        for id in ids {
            let board = t.get(&format!("/api/v1/dashboards/{id}")).await;
            assert_eq!(board.status, StatusCode::OK, "{:?}", board.body);
            // Every query of every built-in panel runs.
            for panel in board.body["panels"].as_array().unwrap() {
                assert!(panel["value"]["error"].is_null(), "{panel}");
                assert!(panel["value"]["columns"].is_array(), "{panel}");
            }
            assert!(board.body["frontier"].as_u64().unwrap() > 0);
            boards.push(board.body);
        }
        boards
    };
    let [operations, inventory, payments] = &boards[..] else {
        unreachable!()
    };
    assert_eq!(
        rows(&panel(operations, "orders_today")["value"]),
        [[Value::from(2.0)]]
    );
    assert_eq!(
        rows(&panel(operations, "revenue_today")["value"]),
        [[Value::from("USD"), Value::from(2500.0)]]
    );
    let success = rows(&panel(operations, "payment_success")["value"]);
    assert_eq!(success, [[Value::from(0.5)]]);
    // The series: the minute as milliseconds, then each measure.
    let minutes = rows(&panel(operations, "orders_per_minute")["value"]);
    assert_eq!(minutes.len(), 1, "{minutes:?}");
    assert_eq!(minutes[0][0].as_i64().unwrap() % 60_000, 0);
    assert_eq!(minutes[0][1], 2.0);
    assert!(panel(operations, "orders_per_minute")["value"]["anomalies"].is_array());
    assert_eq!(
        rows(&panel(inventory, "top_products")["value"]),
        [[Value::from("Product MUG"), Value::from(2.0)]]
    );
    let declines = rows(&panel(payments, "decline_reasons")["value"]);
    assert_eq!(declines.len(), 1, "{declines:?}");
    assert_eq!(declines[0][1], 1.0);
}

/// The next `update` event that changes panel `id`, and that panel's new value.
async fn next_change(stream: &mut crate::support::EventStream, id: &str) -> (SseEvent, Value) {
    loop {
        let event = stream.next().await;
        assert_eq!(event.event, "update", "{:?}", event.data);
        let changed = event.data["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|panel| panel["id"] == id)
            .map(|panel| panel["value"].clone());
        if let Some(value) = changed {
            return (event, value);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_dashboard_is_its_panels_then_each_change() {
    let t = TestApp::new().await;
    let mug = t.product("MUG", 1000, 10).await;
    let ann = t.user("ann@example.com").await;
    let (status, mut stream) = t
        .stream("/api/v1/dashboards/operations/stream", ADMIN)
        .await;
    assert_eq!(status, StatusCode::OK);
    let snapshot = stream.next().await;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(snapshot.data["id"], "operations");
    assert_eq!(
        rows(&panel(&snapshot.data, "orders_today")["value"]),
        [[Value::from(0.0)]]
    );
    // A second follower shares the computation, and starts from the same board.
    let (_, mut second) = t
        .stream("/api/v1/dashboards/operations/stream", ADMIN)
        .await;
    assert_eq!(
        second.next().await.data["frontier"],
        snapshot.data["frontier"]
    );

    for placed in 1..=2 {
        let order = t.order(&ann, &mug, 1).await;
        assert_eq!(order.status, StatusCode::CREATED, "{:?}", order.body);
        let (event, value) = next_change(&mut stream, "orders_today").await;
        assert_eq!(rows(&value), [[Value::from(placed as f64)]]);
        assert!(
            event.data["frontier"].as_u64().unwrap() > snapshot.data["frontier"].as_u64().unwrap()
        );
        // Only panels that changed are sent.
        assert!(event.data["panels"].as_array().unwrap().len() < 9);
    }
    let (_, value) = next_change(&mut second, "orders_today").await;
    assert!(rows(&value)[0][0].as_f64().unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_refuse_what_they_do_not_know_and_whom_they_do_not_serve() {
    let t = TestApp::new().await;
    let missing = t.get("/api/v1/dashboards/sales").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.content_type, "application/problem+json");
    assert!(
        missing.body["detail"]
            .as_str()
            .unwrap()
            .contains("operations, inventory, payments"),
        "{:?}",
        missing.body
    );
    let (status, _) = t.stream("/api/v1/dashboards/sales/stream", ADMIN).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    t.user("ann@example.com").await;
    let customer = format!(
        "Bearer {}",
        crate::auth::sign_in(&t, "ann@example.com").await
    );
    let refused = t
        .send(
            "GET",
            "/api/v1/dashboards/operations",
            None,
            &[("authorization", &customer)],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let (status, _) = t
        .stream(
            "/api/v1/dashboards/operations/stream",
            &[("authorization", customer.as_str())],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let anonymous = t.send_raw("GET", "/api/v1/dashboards", None, &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_come_from_the_binary() {
    let t = TestApp::new().await;
    for path in ["/dashboard", "/dashboard/payments"] {
        let page = t.send_raw("GET", path, None, &[]).await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(page.content_type.starts_with("text/html"));
        let html = String::from_utf8(page.raw).unwrap();
        assert!(
            html.contains("/dashboard/assets/uPlot.iife.min.js"),
            "{html}"
        );
        // Nothing from anywhere else.
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );
        let policy = page.headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
    }
    for (file, media) in [
        ("dashboard.js", "text/javascript"),
        ("dashboard.css", "text/css"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
    ] {
        let asset = t
            .send_raw("GET", &format!("/dashboard/assets/{file}"), None, &[])
            .await;
        assert_eq!(asset.status, StatusCode::OK, "{file}");
        assert!(asset.content_type.starts_with(media), "{file}");
        assert!(!asset.raw.is_empty());
    }
    let missing = t
        .send_raw("GET", "/dashboard/assets/../../etc/passwd", None, &[])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.content_type, "application/problem+json");
}
