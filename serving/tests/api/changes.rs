//! Changefeeds over HTTP (`GET /api/v1/views/{name}/changes`, Server-Sent Events):
//! a snapshot, then the changes; resuming with `Last-Event-ID`; a reader that falls
//! behind; who may follow what.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::support::{EventStream, SseEvent, TestApp};

/// The rows of a snapshot event, or the `(row, diff)` pairs of an update.
fn rows(event: &SseEvent) -> Vec<Value> {
    event.data["rows"].as_array().cloned().unwrap_or_default()
}

fn changes(event: &SseEvent) -> Vec<(Value, i64)> {
    (event.data["changes"]
        .as_array()
        .cloned()
        .unwrap_or_default())
    .into_iter()
    .map(|change| (change["row"].clone(), change["diff"].as_i64().unwrap()))
    .collect()
}

/// `Authorization` for the user with this address (signed in with the test password).
async fn sign_in(t: &TestApp, email: &str) -> String {
    format!("Bearer {}", crate::auth::sign_in(t, email).await)
}

async fn follow(t: &TestApp, path: &str, headers: &[(&str, &str)]) -> EventStream {
    let (status, stream) = t.stream(path, headers).await;
    assert_eq!(status, StatusCode::OK, "{path}");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_is_its_snapshot_then_each_change() {
    let t = TestApp::new().await;
    let mug = t.product("MUG", 1200, 10).await;
    let mut feed = follow(&t, "/api/v1/views/products/changes", &[]).await;
    let snapshot = feed.next().await;
    assert_eq!(snapshot.event, "snapshot");
    let frontier = snapshot.data["frontier"].as_u64().unwrap();
    assert_eq!(
        snapshot.id,
        Some(frontier.to_string()),
        "the id is the frontier"
    );
    let listed = rows(&snapshot);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["product_id"], mug);
    assert_eq!(listed[0]["price_cents"], 1200);

    // A new product comes in.
    let cup = t.product("CUP", 800, 5).await;
    let update = feed.next().await;
    assert_eq!(update.event, "update");
    let after = update.data["frontier"].as_u64().unwrap();
    assert!(after > frontier);
    assert_eq!(update.id, Some(after.to_string()));
    assert_eq!(changes(&update).len(), 1);
    assert_eq!(changes(&update)[0].0["product_id"], cup);
    assert_eq!(changes(&update)[0].1, 1);

    // A changed product is its old row out and its new row in.
    let changed = t
        .put(
            &format!("/api/v1/products/{mug}"),
            json!({"price_cents": 1500}),
        )
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{:?}", changed.body);
    let update = feed.next().await;
    let mut diffs: Vec<(i64, i64)> = changes(&update)
        .into_iter()
        .map(|(row, diff)| (row["price_cents"].as_i64().unwrap(), diff))
        .collect();
    diffs.sort();
    assert_eq!(diffs, [(1200, -1), (1500, 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_follows_only_their_own_orders() {
    let t = TestApp::new().await;
    let mug = t.product("MUG", 1200, 10).await;
    let ann = t.user("ann@example.com").await;
    let bob = t.user("bob@example.com").await;
    assert_eq!(t.order(&ann, &mug, 1).await.status, StatusCode::CREATED);
    assert_eq!(t.order(&bob, &mug, 1).await.status, StatusCode::CREATED);
    let as_ann = sign_in(&t, "ann@example.com").await;
    let mut feed = follow(
        &t,
        "/api/v1/views/orders/changes",
        &[("authorization", &as_ann)],
    )
    .await;
    let snapshot = feed.next().await;
    assert_eq!(snapshot.event, "snapshot");
    let owners: Vec<Value> = rows(&snapshot)
        .iter()
        .map(|row| row["user_id"].clone())
        .collect();
    assert_eq!(owners, [json!(ann)], "only Ann's order");
    // Bob's next order never reaches Ann; her own does.
    assert_eq!(t.order(&bob, &mug, 2).await.status, StatusCode::CREATED);
    let mine = t.order(&ann, &mug, 3).await;
    assert_eq!(mine.status, StatusCode::CREATED);
    loop {
        let update = feed.next().await;
        assert_eq!(update.event, "update");
        for (row, _) in changes(&update) {
            assert_eq!(row["user_id"], ann, "{row}");
        }
        if changes(&update)
            .iter()
            .any(|(row, diff)| row["order_id"] == mine.body["id"] && *diff == 1)
        {
            break;
        }
    }
    // An administrator follows one order by its id.
    let one = format!(
        "/api/v1/views/orders/changes?id={}",
        mine.body["id"].as_str().unwrap()
    );
    let mut feed = follow(&t, &one, &[("x-api-key", crate::support::ADMIN_KEY)]).await;
    let snapshot = feed.next().await;
    assert_eq!(rows(&snapshot).len(), 1);
    assert_eq!(rows(&snapshot)[0]["order_id"], mine.body["id"]);
}

/// A request that is refused: path, headers, status, problem code.
type Refusal<'a> = (String, Vec<(&'a str, &'a str)>, StatusCode, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_is_refused_as_the_reads_are() {
    let t = TestApp::new().await;
    let ann = t.user("ann@example.com").await;
    t.user("bob@example.com").await;
    let as_bob = sign_in(&t, "bob@example.com").await;
    let cases: Vec<Refusal> = vec![
        (
            "/api/v1/views/orders/changes".into(),
            vec![],
            StatusCode::UNAUTHORIZED,
            "credentials_required",
        ),
        (
            format!("/api/v1/views/orders/changes?user_id={ann}"),
            vec![("authorization", as_bob.as_str())],
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "/api/v1/views/payments/changes".into(),
            vec![],
            StatusCode::UNAUTHORIZED,
            "credentials_required",
        ),
        (
            "/api/v1/views/users/changes".into(),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/api/v1/views/products/changes?user_id=x".into(),
            vec![],
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "/api/v1/views/products/changes".into(),
            vec![("last-event-id", "yesterday")],
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
    ];
    for (path, headers, status, code) in cases {
        let reply = t.send_raw("GET", &path, None, &headers).await;
        assert_eq!(reply.status, status, "{path}: {:?}", reply.body);
        assert_eq!(reply.content_type, "application/problem+json", "{path}");
        assert_eq!(reply.body["code"], code, "{path}: {:?}", reply.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_resumes_from_the_last_event_it_had() {
    let t = TestApp::new().await;
    t.product("MUG", 1200, 10).await;
    let mut feed = follow(&t, "/api/v1/views/products/changes", &[]).await;
    let snapshot = feed.next().await;
    let last = snapshot.id.clone().unwrap();
    drop(feed);
    // Changes while the reader is away...
    let cup = t.product("CUP", 800, 5).await;
    let plate = t.product("PLATE", 900, 5).await;
    // ...are what it gets when it comes back: no snapshot, nothing twice.
    let mut feed = follow(
        &t,
        "/api/v1/views/products/changes",
        &[("last-event-id", &last)],
    )
    .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let update = feed.next().await;
        assert_eq!(update.event, "update", "{update:?}");
        for (row, diff) in changes(&update) {
            assert_eq!(diff, 1);
            seen.push(row["product_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen, [cup, plate]);
    // From before what is kept, or from the future: a fresh snapshot.
    let future = (last.parse::<u64>().unwrap() + 1_000_000).to_string();
    for from in ["0", future.as_str()] {
        let mut feed = follow(
            &t,
            "/api/v1/views/products/changes",
            &[("last-event-id", from)],
        )
        .await;
        let restart = feed.next().await;
        assert_eq!(restart.event, "snapshot", "from {from}");
        assert_eq!(rows(&restart).len(), 3);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_falls_behind_gets_resync_and_a_fresh_snapshot() {
    let t = TestApp::new().await;
    t.app.views.set_changefeed_capacity(2);
    let mut feed = follow(&t, "/api/v1/views/products/changes", &[]).await;
    assert_eq!(feed.next().await.event, "snapshot");
    // Five publications while the reader reads nothing: more than the feed holds.
    for n in 0..5 {
        t.product(&format!("P{n}"), 100, 1).await;
    }
    let resync = feed.next().await;
    assert_eq!(resync.event, "resync", "{resync:?}");
    assert!(resync.data["reason"].as_str().unwrap().contains("behind"));
    let snapshot = feed.next().await;
    assert_eq!(snapshot.event, "snapshot");
    assert_eq!(rows(&snapshot).len(), 5, "the views as they are now");
    // And it follows on from there.
    t.product("LATE", 100, 1).await;
    let update = feed.next().await;
    assert_eq!(update.event, "update");
    assert_eq!(changes(&update)[0].0["sku"], "LATE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_view_is_followed_at_the_metrics_frontiers() {
    let t = TestApp::new().await;
    let mug = t.product("MUG", 1000, 10).await;
    let ann = t.user("ann@example.com").await;
    let mut minutes = follow(
        &t,
        "/api/v1/views/orders_per_minute/changes",
        &[("x-api-key", crate::support::ADMIN_KEY)],
    )
    .await;
    let snapshot = minutes.next().await;
    assert_eq!(snapshot.event, "snapshot");
    assert!(rows(&snapshot).is_empty(), "{:?}", snapshot.data);
    let mut top = follow(
        &t,
        "/api/v1/views/top_products/changes",
        &[("x-api-key", crate::support::ADMIN_KEY)],
    )
    .await;
    assert!(rows(&top.next().await).is_empty());

    let paid = t.paid_order(&ann, &mug, 2, "4242424242424242").await;
    assert_eq!(paid.status, StatusCode::CREATED, "{:?}", paid.body);
    // The minute's row comes in, with its columns named as SQL names them.
    let update = minutes.next().await;
    assert_eq!(update.event, "update");
    let (row, diff) = changes(&update).into_iter().next().unwrap();
    assert_eq!(diff, 1);
    assert_eq!(row["orders"], 1);
    assert_eq!(row["minute"].as_i64().unwrap() % 60_000, 0);
    assert!(row["id"].is_string());
    // The ranking is the store's: its changes are the difference of two rankings.
    let update = top.next().await;
    let ranked = changes(&update);
    assert_eq!(ranked.len(), 1, "{ranked:?}");
    assert_eq!(ranked[0].0["product_id"], mug);
    assert_eq!(ranked[0].0["rank"], 1);
    assert_eq!(ranked[0].0["units"], 2);
    assert_eq!(ranked[0].1, 1);

    // The metric views are analysts': a customer may not follow them.
    let customer = sign_in(&t, "ann@example.com").await;
    let (status, _) = t
        .stream(
            "/api/v1/views/orders_per_minute/changes",
            &[("authorization", customer.as_str())],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Waits until the server serves `readers` changefeed readers.
async fn until_readers(t: &TestApp, readers: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while t.app.changefeeds.readers() != readers {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} readers, not {readers}",
            t.app.changefeeds.readers()
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reader_gets_only_the_rows_it_follows_and_readers_alike_get_the_same() {
    let t = TestApp::new().await;
    let mug = t.product("MUG", 1200, 10).await;
    let cup = t.product("CUP", 800, 5).await;
    let mut everything = Vec::new();
    for _ in 0..3 {
        let mut feed = follow(&t, "/api/v1/views/products/changes", &[]).await;
        assert_eq!(rows(&feed.next().await).len(), 2);
        everything.push(feed);
    }
    let mut mugs = Vec::new();
    for _ in 0..2 {
        let path = format!("/api/v1/views/products/changes?id={mug}");
        let mut feed = follow(&t, &path, &[]).await;
        let snapshot = feed.next().await;
        assert_eq!(rows(&snapshot).len(), 1);
        assert_eq!(rows(&snapshot)[0]["product_id"], mug);
        mugs.push(feed);
    }
    let mut cups = follow(&t, &format!("/api/v1/views/products/changes?id={cup}"), &[]).await;
    assert_eq!(rows(&cups.next().await)[0]["product_id"], cup);
    until_readers(&t, 6).await;

    let t = &t;
    let price = |id: &str, cents: i64| {
        let path = format!("/api/v1/products/{id}");
        async move { t.put(&path, json!({"price_cents": cents})).await }
    };
    assert_eq!(price(&mug, 1500).await.status, StatusCode::OK);
    let mut seen = Vec::new();
    for feed in everything.iter_mut().chain(mugs.iter_mut()) {
        let update = feed.next().await;
        assert_eq!(update.event, "update");
        let ids: Vec<Value> = changes(&update)
            .into_iter()
            .map(|(row, _)| row["product_id"].clone())
            .collect();
        assert_eq!(ids, [json!(mug), json!(mug)], "the old row out, the new in");
        seen.push(update.data);
    }
    assert!(seen.windows(2).all(|two| two[0] == two[1]), "{seen:?}");
    // The cup's reader was sent nothing of the mug: its next update is the cup's.
    assert_eq!(price(&cup, 900).await.status, StatusCode::OK);
    let update = cups.next().await;
    assert!(
        changes(&update)
            .iter()
            .all(|(row, _)| row["product_id"] == cup.as_str()),
        "{update:?}"
    );
    for feed in &mut everything {
        assert_eq!(changes(&feed.next().await)[0].0["product_id"], cup);
    }

    // Readers that go are forgotten.
    drop((everything, mugs, cups));
    until_readers(t, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_falls_behind_alone() {
    let t = TestApp::new().await;
    t.app.views.set_changefeed_capacity(2);
    let mut slow = follow(&t, "/api/v1/views/products/changes", &[]).await;
    let mut quick = follow(&t, "/api/v1/views/products/changes", &[]).await;
    assert_eq!(slow.next().await.event, "snapshot");
    assert_eq!(quick.next().await.event, "snapshot");
    let mut skus = Vec::new();
    for n in 0..5 {
        t.product(&format!("P{n}"), 100, 1).await;
        let update = quick.next().await;
        assert_eq!(update.event, "update", "{update:?}");
        skus.push(changes(&update)[0].0["sku"].clone());
    }
    assert_eq!(skus, ["P0", "P1", "P2", "P3", "P4"]);
    let resync = slow.next().await;
    assert_eq!(resync.event, "resync", "{resync:?}");
    assert_eq!(rows(&slow.next().await).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_once_its_key_is_revoked() {
    let t = TestApp::new().await;
    let created = t
        .post(
            "/api/v1/api-keys",
            json!({"name": "watcher", "scopes": ["orders:read"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let (id, key) = (
        created.body["id"].as_str().unwrap().to_string(),
        created.body["key"].as_str().unwrap().to_string(),
    );
    let path = "/api/v1/views/orders/changes";
    let mut orders = follow(&t, path, &[("x-api-key", &key)]).await;
    assert_eq!(orders.next().await.event, "snapshot");
    // A public stream, opened without credentials, is not affected.
    let mut products = follow(&t, "/api/v1/views/products/changes", &[]).await;
    assert_eq!(products.next().await.event, "snapshot");

    let revoked = t
        .send("DELETE", &format!("/api/v1/api-keys/{id}"), None, &[])
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    let end = orders.next().await;
    assert_eq!(end.event, "end", "{end:?}");
    assert!(end.data["code"].is_string(), "{end:?}");
    orders.ends().await;
    // Reconnecting with the same key is refused.
    let (status, _) = t.stream(path, &[("x-api-key", &key)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    t.product("LATE", 100, 1).await;
    assert_eq!(products.next().await.event, "update");
}
