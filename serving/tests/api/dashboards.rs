//! Dashboards (`/api/v1/dashboards*`): the built-in boards, their panels' values as the
//! views move, their Server-Sent Events, and the page's files.

use axum::http::StatusCode;
use serde_json::{json, Value};

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
            .contains("GET /api/v1/dashboards lists them"),
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

/// The next `snapshot` event, skipping updates.
async fn next_snapshot(stream: &mut crate::support::EventStream) -> Value {
    loop {
        let event = stream.next().await;
        match event.event.as_str() {
            "snapshot" => return event.data,
            "update" => continue,
            other => panic!("{other}: {:?}", event.data),
        }
    }
}

fn desk(title: &str, panels: Value) -> Value {
    json!({"id": "sales-desk", "title": title, "description": "What the desk watches.", "panels": panels})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_dashboard_is_computed_followed_changed_and_deleted_and_outlives_a_restart() {
    let t = TestApp::new().await;
    let mug = t.product("MUG", 1000, 10).await;
    let ann = t.user("ann@example.com").await;
    let orders = json!({"id": "orders", "title": "Orders", "chart": "stat",
        "source": {"sql": "SELECT count(*) AS orders FROM orders"}});
    let p99 = json!({"id": "p99", "title": "API p99", "chart": "stat",
        "source": {"process": "p99_latency_ms"}, "unit": "ms"});
    let created = t
        .post(
            "/api/v1/dashboards",
            desk("Sales desk", json!([orders, p99])),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["id"], "sales-desk");
    assert_eq!(created.body["built_in"], false);
    assert_eq!(created.body["version"], 1);
    assert_eq!(
        created.body["panels"][0]["source"]["sql"],
        "SELECT count(*) AS orders FROM orders"
    );
    assert_eq!(
        created.body["panels"][1]["source"]["process"],
        "p99_latency_ms"
    );
    assert_eq!(created.body["panels"][1]["unit"], "ms");

    let listed = t.get("/api/v1/dashboards").await;
    let ids: Vec<&str> = (listed.body["dashboards"].as_array().unwrap().iter())
        .map(|board| board["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["operations", "inventory", "payments", "sales-desk"]);
    assert_eq!(listed.body["dashboards"][0]["built_in"], true);

    let (status, mut stream) = t
        .stream("/api/v1/dashboards/sales-desk/stream", ADMIN)
        .await;
    assert_eq!(status, StatusCode::OK);
    let first = next_snapshot(&mut stream).await;
    assert_eq!(first["title"], "Sales desk");
    assert_eq!(
        rows(&panel(&first, "orders")["value"]),
        [[Value::from(0.0)]]
    );
    assert!(panel(&first, "p99")["value"]["rows"].is_array(), "{first}");

    let order = t.order(&ann, &mug, 1).await;
    assert_eq!(order.status, StatusCode::CREATED, "{:?}", order.body);
    let (_, value) = next_change(&mut stream, "orders").await;
    assert_eq!(rows(&value), [[Value::from(1.0)]]);

    // A new definition reaches the followers as a new snapshot.
    let revenue = json!({"id": "revenue", "title": "Revenue", "chart": "bar", "unit": "cents",
        "source": {"sql": "SELECT currency, sum(total_cents) AS cents FROM orders GROUP BY currency"}});
    let updated = t
        .put(
            "/api/v1/dashboards/sales-desk",
            json!({"title": "Sales desk, with revenue", "panels": [orders, revenue]}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.body["version"], 2);
    assert_eq!(updated.body["description"], "");
    let second = next_snapshot(&mut stream).await;
    assert_eq!(second["title"], "Sales desk, with revenue");
    assert_eq!(
        rows(&panel(&second, "revenue")["value"]),
        [[Value::from("USD"), Value::from(1000.0)]]
    );
    assert!(second["panels"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["id"] != "p99"));
    let read = t.get("/api/v1/dashboards/sales-desk").await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(
        rows(&panel(&read.body, "orders")["value"]),
        [[Value::from(1.0)]]
    );

    // One saved without an id is given one.
    let kept = t
        .post(
            "/api/v1/dashboards",
            json!({"title": "Kept", "panels": [orders]}),
        )
        .await;
    assert_eq!(kept.status, StatusCode::CREATED, "{:?}", kept.body);
    let kept_id = kept.body["id"].as_str().unwrap().to_string();
    assert!(kept_id.starts_with("dsh_"), "{kept_id}");
    assert_eq!(
        kept.headers["location"].to_str().unwrap(),
        format!("/api/v1/dashboards/{kept_id}")
    );

    // Deleted: its followers are told, and it is gone.
    let deleted = t
        .send("DELETE", "/api/v1/dashboards/sales-desk", None, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    let end = loop {
        let event = stream.next().await;
        if event.event != "update" {
            break event;
        }
    };
    assert_eq!(end.event, "end", "{:?}", end.data);
    assert_eq!(end.data["code"], "dashboard_deleted");
    stream.ends().await;
    assert_eq!(
        t.get("/api/v1/dashboards/sales-desk").await.status,
        StatusCode::NOT_FOUND
    );
    let again = t
        .send("DELETE", "/api/v1/dashboards/sales-desk", None, &[])
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);

    // The saved dashboards are state in the log: a restart replays them.
    let before = t.get("/api/v1/dashboards").await.body;
    let t = t.restart(1).await;
    let after = t.get("/api/v1/dashboards").await.body;
    assert_eq!(before, after);
    assert_eq!(after["dashboards"].as_array().unwrap().len(), 4);
    assert_eq!(after["dashboards"][3]["id"], kept_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_a_dashboard_checks_every_field_and_every_query() {
    let t = TestApp::new().await;
    let fields = |reply: &crate::support::Reply| -> Vec<String> {
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:?}",
            reply.body
        );
        assert_eq!(reply.content_type, "application/problem+json");
        (reply.body["errors"].as_array().expect("errors").iter())
            .map(|error| error["field"].as_str().unwrap().to_string())
            .collect()
    };
    let sql = |id: &str, query: &str| json!({"id": id, "title": id, "chart": "table", "source": {"sql": query}});

    // Each query is planned over the views before anything is saved.
    let bad_queries = t
        .post(
            "/api/v1/dashboards",
            desk(
                "Desk",
                json!([
                    sql("fine", "SELECT count(*) FROM orders"),
                    sql("column", "SELECT nope FROM orders"),
                    sql("table", "SELECT * FROM nowhere"),
                    sql("write", "DELETE FROM orders"),
                    sql("syntax", "SELEC 1"),
                ]),
            ),
        )
        .await;
    assert_eq!(
        fields(&bad_queries),
        [
            "panels[1].source.sql",
            "panels[2].source.sql",
            "panels[3].source.sql",
            "panels[4].source.sql"
        ]
    );

    let bad_fields = t
        .post(
            "/api/v1/dashboards",
            json!({"id": "Sales Desk", "title": " ", "panels": [
                {"id": "a", "title": "A", "chart": "stat", "source": {"process": "uptime"}, "unit": "dollars"},
                {"id": "a", "title": "B", "chart": "stat", "source": {"sql": ""}, "anomaly_series": ["orders"]},
                {"id": "c", "title": "C", "chart": "timeseries", "source": {"sql": "SELECT 1"}, "anomaly_series": ["weather"]},
            ]}),
        )
        .await;
    assert_eq!(
        fields(&bad_fields),
        [
            "id",
            "title",
            "panels[0].unit",
            "panels[0].source.process",
            "panels[1].id",
            "panels[1].anomaly_series",
            "panels[1].source.sql",
            "panels[2].anomaly_series",
        ]
    );
    let no_panels = t.post("/api/v1/dashboards", desk("Desk", json!([]))).await;
    assert_eq!(fields(&no_panels), ["panels"]);
    let unknown = t
        .post(
            "/api/v1/dashboards",
            json!({"title": "Desk", "panels": [], "colour": "red"}),
        )
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        unknown.body
    );
    let chart = t
        .post(
            "/api/v1/dashboards",
            desk(
                "Desk",
                json!([{"id": "a", "title": "A", "chart": "pie", "source": {"sql": "SELECT 1"}}]),
            ),
        )
        .await;
    assert_eq!(
        chart.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        chart.body
    );
    let malformed = t
        .send("POST", "/api/v1/dashboards", Some("{\"title\": "), &[])
        .await;
    assert_eq!(
        malformed.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        malformed.body
    );
    assert_eq!(
        t.get("/api/v1/dashboards").await.body["dashboards"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Built-in boards are not to be changed, and their ids are taken.
    let one = json!([sql("orders", "SELECT count(*) FROM orders")]);
    let taken = t
        .post(
            "/api/v1/dashboards",
            json!({"id": "operations", "title": "Mine", "panels": one}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{:?}", taken.body);
    assert_eq!(taken.body["code"], "dashboard_exists");
    let change = t
        .put(
            "/api/v1/dashboards/operations",
            json!({"title": "Mine", "panels": one}),
        )
        .await;
    assert_eq!(change.status, StatusCode::CONFLICT, "{:?}", change.body);
    assert_eq!(change.body["code"], "dashboard_built_in");
    let delete = t
        .send("DELETE", "/api/v1/dashboards/operations", None, &[])
        .await;
    assert_eq!(delete.status, StatusCode::CONFLICT, "{:?}", delete.body);

    // An id names one dashboard; only a saved one changes; the path names it.
    let created = t
        .post("/api/v1/dashboards", desk("Desk", one.clone()))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let twice = t
        .post("/api/v1/dashboards", desk("Desk", one.clone()))
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "{:?}", twice.body);
    assert_eq!(twice.body["code"], "dashboard_exists");
    let missing = t
        .put(
            "/api/v1/dashboards/nowhere",
            json!({"title": "Desk", "panels": one}),
        )
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{:?}", missing.body);
    let moved = t
        .put(
            "/api/v1/dashboards/sales-desk",
            json!({"id": "other", "title": "Desk", "panels": one}),
        )
        .await;
    assert_eq!(fields(&moved), ["id"]);

    // The same request again under one Idempotency-Key saves one dashboard.
    let key = [("idempotency-key", "desk-copy-1")];
    let body = json!({"title": "Copy", "panels": one}).to_string();
    let first = t
        .send("POST", "/api/v1/dashboards", Some(&body), &key)
        .await;
    let replay = t
        .send("POST", "/api/v1/dashboards", Some(&body), &key)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(replay.body["id"], first.body["id"], "{:?}", replay.body);
    assert_eq!(
        t.get("/api/v1/dashboards").await.body["dashboards"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
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
