//! `POST /api/v1/sql` as a client uses it: read-your-writes, the four answer formats,
//! and a problem for every query it will not run.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{Reply, TestApp};

async fn query(t: &TestApp, body: serde_json::Value, accept: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    t.send("POST", "/api/v1/sql", Some(&body.to_string()), &headers)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_sees_every_acknowledged_command() {
    let t = TestApp::new().await;
    let product = t.product("SQL-1", 1500, 10).await;
    let user = t.user("sql@example.com").await;
    for quantity in 1..=3 {
        let placed = t.order(&user, &product, quantity).await;
        assert_eq!(placed.status, StatusCode::CREATED);
        // Straight after the acknowledgement, SQL sees the order.
        let answer = query(
            &t,
            json!({"sql": "SELECT count(*) AS orders, sum(units) AS units FROM orders"}),
            None,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        assert_eq!(answer.content_type, "application/json");
        assert_eq!(
            answer.body["rows"],
            json!([{"orders": quantity, "units": quantity * (quantity + 1) / 2}])
        );
    }
    let answer = query(
        &t,
        json!({"sql": "SELECT o.id, p.sku, i.quantity, i.line_total_cents, o.created_at \
                       FROM orders o JOIN order_items i ON i.order_id = o.id \
                       JOIN products p ON p.id = i.product_id ORDER BY i.quantity"}),
        None,
    )
    .await;
    assert_eq!(
        answer.body["columns"],
        json!([
            {"name": "id", "type": "text"},
            {"name": "sku", "type": "text"},
            {"name": "quantity", "type": "bigint"},
            {"name": "line_total_cents", "type": "bigint"},
            {"name": "created_at", "type": "timestamp with time zone"},
        ])
    );
    assert_eq!(answer.body["row_count"], 3);
    assert_eq!(answer.body["truncated"], false);
    assert!(answer.body["frontier"].as_u64().unwrap() > 0);
    let first = &answer.body["rows"][0];
    assert_eq!(first["sku"], "SQL-1");
    assert_eq!(first["line_total_cents"], 1500);
    assert!(
        first["created_at"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_come_as_csv_arrow_or_parquet_when_asked() {
    let t = TestApp::new().await;
    t.product("FMT-1", 100, 1).await;
    t.product("FMT-2", 250, 1).await;
    let sql = json!({"sql": "SELECT sku, price_cents FROM products ORDER BY sku"});

    let csv = query(&t, sql.clone(), Some("text/csv")).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert_eq!(csv.content_type, "text/csv; charset=utf-8");
    assert_eq!(
        String::from_utf8(csv.raw).unwrap(),
        "sku,price_cents\nFMT-1,100\nFMT-2,250\n"
    );

    let arrow = query(&t, sql.clone(), Some("application/vnd.apache.arrow.stream")).await;
    assert_eq!(arrow.content_type, "application/vnd.apache.arrow.stream");
    let reader =
        sql::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(arrow.raw), None)
            .unwrap();
    let rows: usize = reader.map(|batch| batch.unwrap().num_rows()).sum();
    assert_eq!(rows, 2);

    let parquet = query(&t, sql.clone(), Some("application/vnd.apache.parquet")).await;
    assert_eq!(parquet.content_type, "application/vnd.apache.parquet");
    let reader = sql::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(parquet.raw),
    )
    .unwrap()
    .build()
    .unwrap();
    let rows: usize = reader.map(|batch| batch.unwrap().num_rows()).sum();
    assert_eq!(rows, 2);

    let refused = query(&t, sql, Some("image/png")).await;
    assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(refused.content_type, "application/problem+json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_only_and_clear_problems() {
    let t = TestApp::new().await;
    let cases = [
        (
            json!({"sql": "DROP TABLE orders"}),
            StatusCode::FORBIDDEN,
            "read_only",
        ),
        (
            json!({"sql": "INSERT INTO products (id) VALUES ('x')"}),
            StatusCode::FORBIDDEN,
            "read_only",
        ),
        (
            json!({"sql": "SELEC 1"}),
            StatusCode::BAD_REQUEST,
            "invalid_sql",
        ),
        (
            json!({"sql": "SELECT nope FROM orders"}),
            StatusCode::BAD_REQUEST,
            "invalid_sql",
        ),
        (
            json!({"sql": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"sql": 7}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"sql": "SELECT $a", "params": {"a": [1]}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"sql": "SELECT 1", "extra": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"sql": "x".repeat(70_000)}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (body, status, code) in cases {
        let answer = query(&t, body.clone(), None).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.body);
        assert_eq!(answer.content_type, "application/problem+json");
        assert_eq!(answer.body["code"], code, "{body}");
        assert!(answer.request_id.is_some());
    }
    let bad = query(&t, json!({"sql": "SELECT nope FROM orders"}), None).await;
    assert!(
        bad.body["detail"].as_str().unwrap().contains("nope"),
        "DataFusion's message: {:?}",
        bad.body
    );
    let malformed = t.send("POST", "/api/v1/sql", Some("{\"sql\": "), &[]).await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_and_the_row_cap() {
    let t = TestApp::configured(|config| config.sql.max_json_rows = 5).await;
    t.product("CAP-1", 100, 1).await;
    t.product("CAP-2", 900, 1).await;
    let named = query(
        &t,
        json!({"sql": "SELECT sku FROM products WHERE price_cents > $min", "params": {"min": 500}}),
        None,
    )
    .await;
    assert_eq!(named.body["rows"], json!([{"sku": "CAP-2"}]));
    let positional = query(
        &t,
        json!({"sql": "SELECT sku FROM products WHERE sku = $1", "params": ["CAP-1"]}),
        None,
    )
    .await;
    assert_eq!(positional.body["rows"], json!([{"sku": "CAP-1"}]));
    let capped = query(
        &t,
        json!({"sql": "SELECT value FROM generate_series(1, 100) ORDER BY value"}),
        None,
    )
    .await;
    assert_eq!(capped.body["row_count"], 5);
    assert_eq!(capped.body["truncated"], true);
    // Exports are not capped.
    let csv = query(
        &t,
        json!({"sql": "SELECT value FROM generate_series(1, 100)"}),
        Some("text/csv"),
    )
    .await;
    assert_eq!(String::from_utf8(csv.raw).unwrap().lines().count(), 101);
}

/// Business metrics as the dataflow keeps them: read through SQL at the frontier of the
/// orders they count, and on the product itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_metrics_count_the_orders_just_acknowledged() {
    let t = TestApp::new().await;
    let product = t.product("KPI-1", 2000, 20).await;
    let user = t.user("kpi@example.com").await;
    for (number, quantity) in [
        ("4242424242424242", 3),
        ("4000000000000002", 1),
        ("4242424242424242", 4),
    ] {
        let placed = t.paid_order(&user, &product, quantity, number).await;
        assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
        let order = placed.body["id"].as_str().unwrap();
        t.get(&format!("/api/v1/orders/{order}?wait=settled")).await;
    }
    let answer = query(
        &t,
        json!({"sql": "SELECT currency, orders, revenue_cents, average_order_cents FROM sales_daily"}),
        None,
    )
    .await;
    assert_eq!(
        answer.body["rows"],
        json!([{"currency": "USD", "orders": 2, "revenue_cents": 14000, "average_order_cents": 7000.0}])
    );
    let answer = query(
        &t,
        json!({"sql": "SELECT sum(orders) AS orders, sum(payments_failed) AS failed FROM orders_per_minute"}),
        None,
    )
    .await;
    assert_eq!(answer.body["rows"], json!([{"orders": 3, "failed": 1}]));
    let answer = query(
        &t,
        json!({"sql": "SELECT attempts, succeeded, declined, success_rate FROM payment_success"}),
        None,
    )
    .await;
    let rate = 2.0 / 3.0;
    assert_eq!(
        answer.body["rows"],
        json!([{"attempts": 3, "succeeded": 2, "declined": 1, "success_rate": rate}])
    );
    // 7 units sold this week, 13 available: 13 days at one a day.
    let stock = t.product_stock(&product).await;
    assert_eq!(stock["units_sold_7d"], 7, "{stock}");
    assert_eq!(stock["available"], 13);
    assert_eq!(stock["days_until_stockout"], 13.0);

    // The same figures at a glance. (The last hour, not today: a test may straddle
    // midnight.)
    let kpis = t.get("/api/v1/kpis").await;
    assert_eq!(kpis.status, StatusCode::OK);
    let kpis = kpis.body;
    assert_eq!(kpis["orders_per_minute"]["last_hour"], 3.0 / 60.0, "{kpis}");
    assert_eq!(kpis["average_order_cents"]["USD"]["last_hour"], 7000.0);
    assert_eq!(kpis["payment_success_rate"]["last_hour"], rate);
    assert_eq!(
        kpis["inventory_turnover"],
        json!({"overall": 0.0, "products": 1})
    );
    assert!(kpis["as_of"].as_str().unwrap().ends_with('Z'));
    assert!(kpis["frontier"].as_u64().unwrap() > 0);

    // The API's service levels against the brief's objectives. The pulse is the
    // process's, shared by every test in it: counts are at least this test's.
    let sla = &kpis["sla"];
    assert!(
        (1..=60).contains(&sla["window_minutes"].as_u64().unwrap()),
        "{sla}"
    );
    let services: Vec<&str> = (sla["services"].as_array().unwrap().iter())
        .map(|level| level["service"].as_str().unwrap())
        .collect();
    assert_eq!(
        services,
        ["users", "orders", "payments", "inventory", "all"]
    );
    let level = |name: &str| {
        (sla["services"].as_array().unwrap().iter())
            .find(|level| level["service"] == name)
            .unwrap()
            .clone()
    };
    let orders = level("orders");
    // Three orders placed and read, and more by the other tests.
    assert!(orders["requests"].as_u64().unwrap() >= 6, "{orders}");
    assert_eq!(
        orders["objectives"],
        json!({"availability": 0.999, "p99_ms": 100.0, "error_rate": 0.005})
    );
    assert!(orders["p99_ms"].as_f64().unwrap() > 0.0, "{orders}");
    assert!(orders["met"].is_boolean(), "{orders}");
    let availability = orders["availability"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&availability), "{orders}");
    assert_eq!(level("payments")["objectives"]["availability"], 0.9999);
    assert!(level("all")["requests"].as_u64().unwrap() >= orders["requests"].as_u64().unwrap());
}

/// Counts of each event in the history, by type (`SELECT type, count(*) FROM events`).
async fn history_counts(t: &TestApp) -> serde_json::Value {
    query(
        t,
        json!({"sql": "SELECT type, count(*) AS events, count(DISTINCT event_id) AS distinct_events \
                       FROM events GROUP BY type ORDER BY type"}),
        None,
    )
    .await
    .body["rows"]
        .clone()
}

/// Waits until the history holds `order.created` events for `orders` orders.
async fn wait_for_history(t: &TestApp, orders: usize) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let counts = history_counts(t).await;
        let created = counts
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["type"] == "order.created")
            .map_or(0, |row| row["events"].as_u64().unwrap());
        if created as usize >= orders {
            return counts;
        }
        assert!(std::time::Instant::now() < deadline, "history: {counts}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Every event goes to the Parquet history, which SQL reads as `events`; a restart
/// replays the log and writes none of them twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_holds_every_event_once_across_restarts() {
    let t = TestApp::configured(|config| config.history.flush_ms = 10).await;
    history_once_across_restarts(t).await;
}

/// The same with the history in an S3 bucket (`history.url`), moto's server standing in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_in_an_object_store_holds_every_event_once_across_restarts() {
    let s3 = connectors::testkit::S3Server::start().expect("moto's S3 server");
    let t = TestApp::configured(|config| {
        config.history.flush_ms = 10;
        config.history.url = format!(
            "s3://{}/tidemark/history",
            connectors::testkit::S3Server::BUCKET
        );
        config.history.options = s3.client_options();
    })
    .await;
    assert!(
        !t.dir.path().join("history").exists(),
        "nothing of the history is in the data directory"
    );
    history_once_across_restarts(t).await;
}

async fn history_once_across_restarts(t: TestApp) {
    let product = t.product("HIST-1", 500, 10).await;
    let user = t.user("history@example.com").await;
    let placed = t.paid_order(&user, &product, 2, "4242424242424242").await;
    let order = placed.body["id"].as_str().unwrap().to_string();
    t.get(&format!("/api/v1/orders/{order}?wait=settled")).await;
    let before = wait_for_history(&t, 1).await;
    for row in before.as_array().unwrap() {
        assert_eq!(row["events"], row["distinct_events"], "{before}");
    }
    let answer = query(
        &t,
        json!({"sql": "SELECT type, aggregate_id, position, occurred_at, data FROM events \
                       WHERE type = 'order.created'"}),
        None,
    )
    .await;
    let row = &answer.body["rows"][0];
    assert_eq!(row["aggregate_id"], order.as_str());
    assert!(row["occurred_at"].as_str().unwrap().ends_with('Z'));
    let data: serde_json::Value = serde_json::from_str(row["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["order_id"], order.as_str());
    // The JSON functions read `data`: a field, a nested one, a typed number.
    let answer = query(
        &t,
        json!({"sql": "SELECT i.data->>'order_id' AS order_id, \
                              i.data->'card'->>'brand' AS brand, \
                              json_get_int(i.data, 'amount_cents') AS amount_cents, \
                              CAST(r.data->>'total_cents' AS BIGINT) AS total_cents \
                       FROM events i JOIN events r ON r.aggregate_id = (i.data->>'order_id') \
                       WHERE i.type = 'payment.initiated' AND r.type = 'order.reserved'"}),
        None,
    )
    .await;
    let row = &answer.body["rows"][0];
    assert_eq!(row["order_id"], order.as_str(), "{}", answer.body);
    assert_eq!(row["brand"], "visa", "{}", answer.body);
    assert_eq!(row["amount_cents"], 1000, "{}", answer.body);
    assert_eq!(row["total_cents"], 1000, "{}", answer.body);

    // After a restart (the whole log replayed), the same events, once each; new ones
    // follow.
    let t = t.restart(1).await;
    t.order(&user, &product, 1).await;
    let after = wait_for_history(&t, 2).await;
    for row in after.as_array().unwrap() {
        assert_eq!(row["events"], row["distinct_events"], "{after}");
    }
    let created = after
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["type"] == "order.created")
        .unwrap();
    assert_eq!(created["events"], 2, "{after}");
}

/// Without the metric dataflow (`analytics.enabled = false`) orders run as before, and
/// the metric tables are there but empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_turned_off() {
    let t = TestApp::configured(|config| config.analytics.enabled = false).await;
    let product = t.product("OFF-1", 900, 5).await;
    let user = t.user("off@example.com").await;
    let placed = t.paid_order(&user, &product, 2, "4242424242424242").await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let order = placed.body["id"].as_str().unwrap();
    let settled = t.get(&format!("/api/v1/orders/{order}?wait=settled")).await;
    assert_eq!(settled.body["status"], "confirmed");
    let answer = query(
        &t,
        json!({"sql": "SELECT (SELECT count(*) FROM sales_daily) AS sales, \
                              (SELECT count(*) FROM orders_per_minute) AS minutes, \
                              (SELECT count(*) FROM orders) AS orders"}),
        None,
    )
    .await;
    assert_eq!(
        answer.body["rows"],
        json!([{"sales": 0, "minutes": 0, "orders": 1}])
    );
    let stock = t.product_stock(&product).await;
    assert_eq!(stock["units_sold_7d"], 0);
    assert_eq!(stock["days_until_stockout"], serde_json::Value::Null);
}

/// Deleting a user erases their personal data everywhere it is read: the live views of
/// their orders and shipments, and the history, where their events stay (the shop's
/// records) with names, addresses and e-mail erased. Others' data is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_s_personal_data_is_erased_from_the_views_and_the_history() {
    let t = TestApp::configured(|config| config.history.flush_ms = 10).await;
    let product = t.product("ERASE-1", 900, 10).await;
    let ann = t.user("ann@example.com").await;
    let bob = t.user("bob@example.com").await;
    let mut orders = Vec::new();
    for (user, address) in [
        (&ann, "1 Main St, Springfield"),
        (&bob, "2 Elm St, Shelbyville"),
    ] {
        let placed = t
            .post(
                "/api/v1/orders",
                json!({"user_id": user, "items": [{"product_id": product, "quantity": 1}],
                       "payment_method": crate::support::card("4242424242424242"),
                       "shipping_address": address}),
            )
            .await;
        assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
        let id = placed.body["id"].as_str().unwrap().to_string();
        let shipped = crate::orders::wait_for_status(&t, &id, "shipped").await;
        orders.push((id, shipped["shipment_id"].as_str().unwrap().to_string()));
    }
    wait_for_history(&t, 2).await;
    assert!(seen(&t, "ann@example.com").await > 0);
    assert!(seen(&t, "1 Main St").await > 0);

    let deleted = t
        .send("DELETE", &format!("/api/v1/users/{ann}"), None, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    {
        let t = &t;
        // The views: the order stays, without its address; Bob's keeps his.
        let (ann_order, ann_shipment) = &orders[0];
        let order = t.get(&format!("/api/v1/orders/{ann_order}")).await;
        assert_eq!(order.body["user_id"], ann.as_str());
        assert!(order.body["shipping_address"].is_null(), "{:?}", order.body);
        let shipment = t.get(&format!("/api/v1/shipments/{ann_shipment}")).await;
        assert!(shipment.body["address"].is_null(), "{:?}", shipment.body);
        let bobs = t.get(&format!("/api/v1/orders/{}", orders[1].0)).await;
        assert_eq!(bobs.body["shipping_address"], "2 Elm St, Shelbyville");
        let live = query(
            t,
            json!({"sql": "SELECT user_id, shipping_address FROM orders ORDER BY user_id = 'x', user_id"}),
            None,
        )
        .await;
        for row in live.body["rows"].as_array().unwrap() {
            assert_eq!(
                row["shipping_address"].is_null(),
                row["user_id"] == ann.as_str(),
                "{row}"
            );
        }
        // The history: every event stays, the personal data of Ann's does not.
        assert_eq!(seen(t, "ann@example.com").await, 0);
        assert_eq!(seen(t, "1 Main St").await, 0);
        assert!(seen(t, "bob@example.com").await > 0);
        assert!(seen(t, "2 Elm St").await > 0);
        let created = query(
            t,
            json!({"sql": format!("SELECT data->>'email' AS email, data->>'user_id' AS user_id FROM events WHERE type = 'user.created' AND aggregate_id = '{ann}'")}),
            None,
        )
        .await;
        assert_eq!(
            created.body["rows"][0]["email"], "[erased]",
            "{:?}",
            created.body
        );
        assert_eq!(created.body["rows"][0]["user_id"], ann.as_str());
        let placed = query(
            t,
            json!({"sql": "SELECT count(*) AS n FROM events WHERE type = 'order.created'"}),
            None,
        )
        .await;
        assert_eq!(placed.body["rows"][0]["n"], 2);
    }
    // The tombstone is in the log: after a replay the same holds.
    let t = t.restart(2).await;
    assert_eq!(seen(&t, "ann@example.com").await, 0);
    let order = t.get(&format!("/api/v1/orders/{}", orders[0].0)).await;
    assert!(order.body["shipping_address"].is_null());
}

/// How many events of the history have `text` in their data.
async fn seen(t: &TestApp, text: &str) -> u64 {
    let answer = query(
        t,
        json!({"sql": format!("SELECT count(*) AS n FROM events WHERE data LIKE '%{text}%'")}),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    answer.body["rows"][0]["n"].as_u64().unwrap()
}

/// Each event in the history names the request that sent its command (its
/// `X-Request-Id`), and none where no request sent it (a provider's reply).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_names_the_request_behind_each_event() {
    let t = TestApp::configured(|config| config.history.flush_ms = 10).await;
    let product = t.product("TRACE-1", 500, 10).await;
    let user = t.user("trace@example.com").await;
    let items = json!([{"product_id": product, "quantity": 1}]);
    let order = json!({"user_id": user, "items": items, "payment_method": crate::support::card("4242424242424242")});
    let placed = t
        .send(
            "POST",
            "/api/v1/orders",
            Some(&order.to_string()),
            &[("x-correlation-id", "checkout-7")],
        )
        .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.body);
    let order = placed.body["id"].as_str().unwrap().to_string();
    t.get(&format!("/api/v1/orders/{order}?wait=settled")).await;
    // The history lags the views: wait for the provider's reply to be in it too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let rows = loop {
        let answer = query(
            &t,
            json!({"sql": format!("SELECT type, request_id FROM events WHERE correlation_id = '{order}' \
                                   ORDER BY position, phase, sub")}),
            None,
        )
        .await;
        let rows = answer.body["rows"].as_array().unwrap().clone();
        if rows.iter().any(|row| row["type"] == "payment.completed") {
            break rows;
        }
        assert!(std::time::Instant::now() < deadline, "history: {rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let created = rows
        .iter()
        .find(|row| row["type"] == "order.created")
        .unwrap();
    assert_eq!(created["request_id"], "checkout-7", "{rows:?}");
    assert!(
        rows.iter().any(|row| row["request_id"].is_null()),
        "{rows:?}"
    );
}
