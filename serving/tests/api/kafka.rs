//! The order path with the command log on a real Kafka broker (tansu, started per test).

use axum::http::StatusCode;
use connectors::kafka::KafkaCluster;
use connectors::testkit::LocalBroker;
use serde_json::json;
use serving::config::Config;

use crate::orders::wait_for_status;
use crate::replay::{settle, view_bytes};
use crate::support::{card, TestApp};

/// A broker started off the runtime (it waits until the broker answers).
async fn start_broker(start: fn() -> connectors::Result<LocalBroker>) -> LocalBroker {
    tokio::task::spawn_blocking(start)
        .await
        .unwrap()
        .expect("a local broker")
}

async fn kafka_app(broker: &LocalBroker) -> TestApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        log: broker.url(),
        ..Config::default()
    };
    TestApp::open_config(dir, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_run_end_to_end_on_kafka_and_survive_a_restart() {
    let broker = start_broker(LocalBroker::start).await;
    let t = kafka_app(&broker).await;
    let product = t.product("K-MUG", 1299, 9).await;
    let user = t.user("kafka@example.com").await;
    let place = |number: &str| {
        json!({"user_id": user, "items": [{"product_id": product, "quantity": 2}],
               "payment_method": card(number), "shipping_address": "1 Main St"})
    };
    let paid = t.post("/api/v1/orders", place("4242424242424242")).await;
    assert_eq!(paid.status, StatusCode::CREATED, "{:?}", paid.body);
    assert_eq!(paid.body["status"], "reserved", "read-your-writes on Kafka");
    let paid = paid.body["id"].as_str().unwrap().to_string();
    let declined = t.post("/api/v1/orders", place("4000000000000002")).await;
    let declined = declined.body["id"].as_str().unwrap().to_string();

    let shipment = wait_for_status(&t, &paid, "shipped").await["shipment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let delivered = t
        .post(&format!("/api/v1/shipments/{shipment}/deliver"), json!({}))
        .await;
    assert_eq!(delivered.status, StatusCode::OK, "{:?}", delivered.body);
    let cancelled = wait_for_status(&t, &declined, "cancelled").await;
    assert_eq!(cancelled["cancel_reason"], "payment_declined");
    assert_eq!(
        t.get(&format!("/api/v1/orders/{paid}")).await.body["status"],
        "completed"
    );
    assert_eq!(
        t.stock(&product).await,
        json!({"on_hand": 7, "reserved": 0, "available": 7})
    );
    // An idempotent retry is answered from the log, not placed twice.
    let body = place("5555555555554444").to_string();
    let headers = [("Idempotency-Key", "kafka-retry-1")];
    let first = t
        .send("POST", "/api/v1/orders", Some(&body), &headers)
        .await;
    let again = t
        .send("POST", "/api/v1/orders", Some(&body), &headers)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    assert_eq!(first.body["id"], again.body["id"]);
    settle(&t).await;
    let before = view_bytes(&t).await;
    let orders = [
        paid.clone(),
        declined.clone(),
        first.body["id"].as_str().unwrap().to_string(),
    ];
    assert_each_once(&broker.cluster(), "order.created", &orders).await;

    // A restart replays the bindings over the same commands: the same views.
    let t = t.restart(1).await;
    settle(&t).await;
    assert_eq!(
        view_bytes(&t).await,
        before,
        "replay from Kafka rebuilds identical views"
    );
    // The same commands fed to a bare engine, as the embedded log's replay does.
    let replayed = tokio::task::spawn_blocking({
        let cluster = broker.cluster();
        move || engine_replay_bytes(cluster)
    })
    .await
    .unwrap();
    assert_eq!(
        replayed, before,
        "a plain replay of the logged commands agrees"
    );
    let after = t.post("/api/v1/orders", place("4242424242424242")).await;
    assert_eq!(after.status, StatusCode::CREATED, "{:?}", after.body);
    let after = after.body["id"].as_str().unwrap().to_string();
    wait_for_status(&t, &after, "shipped").await;
    t.app.shutdown();
    // The replay after the restart produced every event again; the sink wrote only the
    // new ones.
    let mut orders = orders.to_vec();
    orders.push(after.clone());
    assert_each_once(&broker.cluster(), "order.created", &orders).await;
    assert_each_once(
        &broker.cluster(),
        "order.completed",
        std::slice::from_ref(&paid),
    )
    .await;
    assert_each_once(
        &broker.cluster(),
        "order.shipped",
        &[paid, orders[2].clone(), after],
    )
    .await;
}

/// `topic` holds exactly one event for each of `aggregates`, and no other (waiting up to
/// 60 s for the sink, which publishes after the views; never seeing a duplicate).
async fn assert_each_once(cluster: &KafkaCluster, topic: &str, aggregates: &[String]) {
    let mut expected = aggregates.to_vec();
    expected.sort();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (cluster, name) = (cluster.clone(), topic.to_string());
        let payloads = tokio::task::spawn_blocking(move || cluster.read_topic(&name))
            .await
            .unwrap()
            .expect("read the topic");
        let mut seen: Vec<String> = payloads
            .iter()
            .map(|payload| {
                let envelope: serde_json::Value = serde_json::from_slice(payload).unwrap();
                envelope["aggregate_id"].as_str().unwrap().to_string()
            })
            .collect();
        seen.sort();
        let distinct: std::collections::BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            distinct.len(),
            seen.len(),
            "an event was published twice on {topic}: {seen:?}"
        );
        if seen == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}: {seen:?} != {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_makes_tidemark_unready_and_it_recovers_without_loss() {
    let broker = start_broker(LocalBroker::start).await;
    let t = kafka_app(&broker).await;
    outage_and_recovery(&t, &broker.cluster(), || broker.pause(), || broker.resume()).await;
}

/// The broker is killed and started again with its data (kept in an object store, as a
/// Kafka broker keeps its log on disk): the same outage from tidemark's side, and after
/// it the views rebuilt from the restarted broker equal the ones served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_broker_loses_no_command() {
    let broker = start_broker(LocalBroker::start_durable).await;
    let t = kafka_app(&broker).await;
    let cluster = broker.cluster();
    let broker = std::sync::Mutex::new(broker);
    outage_and_recovery(
        &t,
        &cluster,
        || broker.lock().unwrap().stop(),
        || {
            broker
                .lock()
                .unwrap()
                .restart()
                .expect("the broker starts again")
        },
    )
    .await;
    settle(&t).await;
    let before = view_bytes(&t).await;
    let t = t.restart(1).await;
    settle(&t).await;
    assert_eq!(
        view_bytes(&t).await,
        before,
        "replay from the restarted broker"
    );
}

/// Takes the broker away with `interrupt` while tidemark runs and brings it back with
/// `recover`: tidemark is unready and refuses commands meanwhile, serves reads, and
/// afterwards a client's retry lands once on the state from before.
async fn outage_and_recovery(
    t: &TestApp,
    cluster: &KafkaCluster,
    interrupt: impl Fn(),
    recover: impl Fn(),
) {
    // No initial stock: the restock below is the product's only inventory.adjusted.
    let product = t.product("OUTAGE", 100, 0).await;
    assert_eq!(t.get("/health/ready").await.status, StatusCode::OK);

    interrupt();
    let ready = wait_for_ready(t, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(ready.body["status"], "log_unavailable");
    // Reads go on from the views; commands are refused rather than left hanging.
    assert_eq!(
        t.get(&format!("/api/v1/products/{product}")).await.status,
        StatusCode::OK
    );
    let body = json!({"product_id": product, "delta": 5, "reason": "restock"}).to_string();
    let headers = [("Idempotency-Key", "outage-restock")];
    let refused = t
        .send("POST", "/api/v1/inventory/adjust", Some(&body), &headers)
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.content_type, "application/problem+json");

    recover();
    wait_for_ready(t, StatusCode::OK).await;
    // The client's retry lands once; the earlier state is intact.
    let retried = t
        .send("POST", "/api/v1/inventory/adjust", Some(&body), &headers)
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{:?}", retried.body);
    let again = t
        .send("POST", "/api/v1/inventory/adjust", Some(&body), &headers)
        .await;
    assert_eq!(again.body, retried.body);
    assert_eq!(
        t.stock(&product).await,
        json!({"on_hand": 5, "reserved": 0, "available": 5})
    );
    // The event sink came through the outage: each event on the bus once.
    let product = [product];
    assert_each_once(cluster, "product.created", &product).await;
    assert_each_once(cluster, "inventory.adjusted", &product).await;
}

/// Polls `/health/ready` until it answers `status` (at most 30 s).
async fn wait_for_ready(t: &TestApp, status: StatusCode) -> crate::support::Reply {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let reply = t.get("/health/ready").await;
        if reply.status == status {
            return reply;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", reply.body);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_events_become_commands_and_bad_ones_go_to_the_dead_letter_topic() {
    let broker = start_broker(LocalBroker::start).await;
    let t = kafka_app(&broker).await;
    let product = t.product("FOREIGN", 700, 4).await;
    let user = t.user("foreign@example.com").await;
    let placed = t.paid_order(&user, &product, 1, "4242424242424242").await;
    let order = placed.body["id"].as_str().unwrap().to_string();
    let shipment = wait_for_status(&t, &order, "shipped").await["shipment_id"]
        .as_str()
        .unwrap()
        .to_string();

    let cluster = broker.cluster();
    let topics = vec!["carrier.events".to_string(), "legacy.orders".to_string()];
    cluster
        .ensure_topics(&[
            connectors::kafka::TopicSpec {
                name: "carrier.events",
                partitions: 1,
                replication_factor: 1,
                config: &[],
            },
            connectors::kafka::TopicSpec {
                name: "legacy.orders",
                partitions: 1,
                replication_factor: 1,
                config: &[],
            },
        ])
        .unwrap();
    let event =
        |kind: &str, data: serde_json::Value| json!({"type": kind, "data": data}).to_string();
    let carrier = [
        event(
            "shipping.completed",
            json!({"shipment_id": shipment, "order_id": order}),
        ),
        event(
            "inventory.adjusted",
            json!({"product_id": product, "delta": 10, "reason": "inbound"}),
        ),
        "{not json".to_string(),
        event("shipping.teleported", json!({})),
        event("shipping.completed", json!({"shipment_id": shipment})),
        event(
            "inventory.adjusted",
            json!({"product_id": "prd_nowhere", "delta": 1}),
        ),
    ];
    let legacy = [event(
        "order.created",
        json!({"order_id": "ord_legacy_1", "user_id": user, "items": [{"product_id": product, "quantity": 2}]}),
    )];
    let write = |topic: &'static str, records: Vec<String>| {
        let cluster = cluster.clone();
        move || {
            let records: Vec<(&str, &[u8])> = records.iter().map(|r| ("k", r.as_bytes())).collect();
            cluster.write_records(topic, &records)
        }
    };
    tokio::task::spawn_blocking(write("carrier.events", carrier.to_vec()))
        .await
        .unwrap()
        .unwrap();
    tokio::task::spawn_blocking(write("legacy.orders", legacy.to_vec()))
        .await
        .unwrap()
        .unwrap();

    let source =
        serving::foreign::spawn(t.app.clone(), &cluster, &topics, t.app.stopping()).unwrap();
    assert_eq!(
        wait_for_status(&t, &order, "completed").await["status"],
        "completed"
    );
    assert_eq!(
        wait_for_status(&t, "ord_legacy_1", "reserved").await["user_id"],
        user
    );

    // Four records were refused, each with its reason; the source went on after them.
    let letters = wait_for_records(&cluster, "tidemark.dead-letter", 4).await;
    let reasons: Vec<String> = letters
        .iter()
        .map(|letter| {
            let letter: serde_json::Value = serde_json::from_slice(letter).unwrap();
            assert_eq!(letter["topic"], "carrier.events");
            letter["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(reasons[0].starts_with("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("shipping.teleported"), "{reasons:?}");
    assert!(
        reasons[2].contains("data") && reasons[2].contains("order_id"),
        "{reasons:?}"
    );
    assert!(reasons[3].starts_with("refused"), "{reasons:?}");
    // on_hand: 4 + 10 inbound - 1 delivered; 2 held by the legacy order.
    let stock = json!({"on_hand": 13, "reserved": 2, "available": 11});
    assert_eq!(t.stock(&product).await, stock);

    // Everything read again (a new consumer group, as after lost offsets): each record
    // gets the answer it got the first time, and nothing is applied twice.
    let mut again = cluster.clone();
    again.topic_prefix = "reread.".into();
    let second = serving::foreign::spawn(t.app.clone(), &again, &topics, t.app.stopping()).unwrap();
    let letters = wait_for_records(&again, "reread.tidemark.dead-letter", 4).await;
    let reasons_again: Vec<String> = letters
        .iter()
        .map(|letter| {
            let letter: serde_json::Value = serde_json::from_slice(letter).unwrap();
            letter["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(reasons_again, reasons);
    assert_eq!(t.stock(&product).await, stock);
    assert_eq!(
        t.get(&format!("/api/v1/orders/{order}")).await.body["status"],
        "completed"
    );
    t.app.shutdown();
    for source in [source, second] {
        tokio::task::spawn_blocking(move || source.join())
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_log_can_publish_events_to_kafka() {
    let broker = start_broker(LocalBroker::start).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        events: broker.url(),
        ..Config::default()
    };
    let t = TestApp::open_config(dir, config).await;
    assert_eq!(t.app.config.log, "embedded");
    let product = t.product("EMB-EVT", 100, 3).await;
    let user = t.user("embedded-events@example.com").await;
    let items = json!([{"product_id": product, "quantity": 1}]);
    let placed = t
        .send(
            "POST",
            "/api/v1/orders",
            Some(&json!({"user_id": user, "items": items}).to_string()),
            &[("x-correlation-id", "checkout-42")],
        )
        .await;
    let order = placed.body["id"].as_str().unwrap().to_string();
    assert_each_once(&broker.cluster(), "order.created", &[order]).await;
    assert_each_once(&broker.cluster(), "product.created", &[product]).await;
    // Each event names the request that sent its command; one the server made when the
    // caller sent none.
    let request_of = |records: Vec<Vec<u8>>| {
        let envelope: serde_json::Value = serde_json::from_slice(&records[0]).unwrap();
        envelope["request_id"].as_str().unwrap().to_string()
    };
    let created = wait_for_records(&broker.cluster(), "order.created", 1).await;
    assert_eq!(request_of(created), "checkout-42");
    let made = request_of(wait_for_records(&broker.cluster(), "product.created", 1).await);
    assert!(uuid::Uuid::parse_str(&made).is_ok(), "{made}");
}

/// Polls `topic` until it holds at least `count` records (at most 30 s).
async fn wait_for_records(
    cluster: &connectors::kafka::KafkaCluster,
    topic: &str,
    count: usize,
) -> Vec<Vec<u8>> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (cluster, name) = (cluster.clone(), topic.to_string());
        let records = tokio::task::spawn_blocking(move || cluster.read_topic(&name))
            .await
            .unwrap()
            .unwrap_or_default();
        if records.len() >= count {
            return records;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {count} records",
            records.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_topics_publishes_identical_views() {
    let broker = start_broker(LocalBroker::start).await;
    let leader = kafka_app(&broker).await;
    let product = leader.product("TWIN", 300, 8).await;
    let user = leader.user("twin@example.com").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        log: broker.url(),
        workers: 2,
        ..Config::default()
    };
    config.kafka.follow = true;
    let follower = TestApp::open_config(dir, config).await;
    // Commands through either process; the leader binds them and runs the sagas.
    let order = |number: &str| {
        json!({"user_id": user, "items": [{"product_id": product, "quantity": 1}],
               "payment_method": card(number)})
    };
    let a = leader
        .post("/api/v1/orders", order("4242424242424242"))
        .await;
    let b = follower
        .post("/api/v1/orders", order("4000000000000002"))
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{:?}", b.body);
    // Read-your-writes on the follower: at least reserved (the leader's saga may have
    // moved on already).
    assert!(
        matches!(b.body["status"].as_str(), Some("reserved" | "cancelled")),
        "{:?}",
        b.body
    );
    let a = a.body["id"].as_str().unwrap().to_string();
    let b = b.body["id"].as_str().unwrap().to_string();
    wait_for_status(&leader, &a, "shipped").await;
    wait_for_status(&leader, &b, "cancelled").await;
    settle(&leader).await;
    // At the same frontier, the follower holds exactly the leader's views (the leader
    // may still be appending providers' answers; compare where both have been).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // Both read whole: every view, the metric views included, at one frontier.
    let whole = std::time::Duration::from_secs(30);
    loop {
        let leader_views = leader.app.views.read_settled(whole).await.expect("metrics");
        follower
            .app
            .views
            .wait_for(leader_views.frontier, whole)
            .await
            .expect("the follower catches up");
        let follower_views = follower
            .app
            .views
            .read_settled(whole)
            .await
            .expect("metrics");
        if follower_views.frontier == leader_views.frontier {
            assert_eq!(
                serde_json::to_vec(&follower_views.rows()).unwrap(),
                serde_json::to_vec(&leader_views.rows()).unwrap()
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the two never met at one frontier"
        );
    }
    assert_eq!(
        follower.get(&format!("/api/v1/orders/{a}")).await.body["status"],
        "shipped"
    );
}

/// The views a fresh engine builds from the commands in the Kafka log (read as a
/// second process would), without the serving layer.
fn engine_replay_bytes(cluster: connectors::kafka::KafkaCluster) -> Vec<u8> {
    use connectors::log::{KafkaLog, KafkaLogOptions, Log};
    use dataflows::model::{settled_frontier, Envelope};
    use dataflows::{Batch, Engine};

    let log = KafkaLog::open(KafkaLogOptions {
        cluster,
        partitions: 6,
        replication_factor: 1,
        key_of: std::sync::Arc::new(|payload: &[u8]| payload.to_vec()),
        max_batch_records: 4096,
        linger_ms: 5,
        follow: true,
    })
    .expect("open the log");
    let views = queries::ViewStore::new(1);
    let engine = Engine::start(1, views.clone()).expect("engine");
    let mut batches: Vec<Batch> = Vec::new();
    for record in log.read_from(0).expect("read") {
        let record = record.expect("a record");
        let envelope: Envelope = serde_json::from_slice(&record.payload).expect("a command");
        match batches.last_mut() {
            Some(batch) if batch.ts == record.ts => batch.records.push((record.seq, envelope)),
            _ => batches.push(Batch {
                ts: record.ts,
                records: vec![(record.seq, envelope)],
            }),
        }
    }
    let last = batches.last().expect("commands").ts;
    for batch in batches {
        engine.feed(batch).expect("feed");
    }
    views
        .wait_for_blocking(settled_frontier(last), std::time::Duration::from_secs(30))
        .expect("caught up");
    views
        .wait_for_metrics_blocking(settled_frontier(last), std::time::Duration::from_secs(30))
        .expect("metrics caught up");
    let bytes = serde_json::to_vec(&views.read_consistent().rows()).expect("rows serialise");
    engine.shutdown();
    bytes
}

/// Two servers on one log, each with its own data directory and so its own signing
/// key: each publishes its key's public half through the log, so a token either issues
/// is accepted by both, and a revocation on one refuses the token on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_one_server_signs_is_accepted_and_revoked_on_another() {
    let broker = start_broker(LocalBroker::start).await;
    let leader = kafka_app(&broker).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        log: broker.url(),
        ..Config::default()
    };
    config.kafka.follow = true;
    let follower = TestApp::open_config(dir, config).await;
    let user = leader.user("keys@example.com").await;
    let path = format!("/api/v1/users/{user}");
    // Signed up on the leader, signed in on the follower at once: the follower reads
    // the log as far as it goes before it says the user does not exist.
    let signed_in = follower
        .send_raw(
            "POST",
            "/api/v1/users/authenticate",
            Some(
                &json!({"email": "keys@example.com", "password": "correct horse battery"})
                    .to_string(),
            ),
            &[],
        )
        .await;
    assert_eq!(signed_in.status, StatusCode::OK, "{:?}", signed_in.body);
    let token = signed_in.body["access_token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let as_user = [("authorization", bearer.as_str())];
    // Both servers list both keys; the follower's token works on the leader.
    let leader_keys = leader
        .send_raw("GET", "/.well-known/jwks.json", None, &[])
        .await;
    let follower_keys = follower
        .send_raw("GET", "/.well-known/jwks.json", None, &[])
        .await;
    assert_eq!(leader_keys.body["keys"].as_array().unwrap().len(), 2);
    let kids = |reply: &crate::support::Reply| {
        let mut kids: Vec<String> = reply.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["kid"].as_str().unwrap().to_string())
            .collect();
        kids.sort();
        kids
    };
    assert_eq!(kids(&leader_keys), kids(&follower_keys));
    let read = leader.send_raw("GET", &path, None, &as_user).await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    assert_eq!(read.body["email"], "keys@example.com");
    // A key created on the follower works on the leader from the first request.
    let created = follower
        .post(
            "/api/v1/api-keys",
            json!({"name": "support", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let key = created.body["key"].as_str().unwrap();
    let read = leader
        .send_raw("GET", &path, None, &[("x-api-key", key)])
        .await;
    assert_eq!(read.status, StatusCode::OK, "{:?}", read.body);
    // Signed out on the leader: refused on the follower from the next request on.
    let revoked = leader
        .send_raw(
            "POST",
            "/oauth2/revoke",
            Some(&format!("token={token}")),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    // A token that still verifies is not checked against the log's end on every
    // request: the revocation takes effect once the follower has read it.
    catch_up(&follower, &leader).await;
    let refused = follower.send_raw("GET", &path, None, &as_user).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.body["code"], "token_revoked");
    // Each server's consumer lag is on its metrics, and comes to nothing once it has
    // read everything (the leader's saga may still be writing a moment).
    for server in [&leader, &follower] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let text = serving::observability::scrape(&server.app).await;
            let behind: f64 = text
                .lines()
                .find_map(|line| line.strip_prefix("tidemark_kafka_commands_unapplied "))
                .unwrap_or_else(|| panic!("no consumer lag in\n{text}"))
                .parse()
                .unwrap();
            if behind == 0.0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{behind} commands behind"
            );
            let frontier = server.app.views.read().frontier;
            let _ = server
                .app
                .views
                .wait_for(frontier + 1, std::time::Duration::from_secs(1))
                .await;
        }
    }
}

/// Waits until `follower` has read the log as far as `leader`'s views are.
async fn catch_up(follower: &TestApp, leader: &TestApp) {
    let frontier = leader.app.views.read().frontier;
    follower
        .app
        .views
        .wait_for(frontier, std::time::Duration::from_secs(30))
        .await
        .expect("the follower catches up");
}

/// `tidemark admin create-key` on a Kafka log: it follows the running servers, whose
/// leader binds the command, and prints a key they accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_a_key_on_a_kafka_log_while_the_servers_run() {
    let broker = start_broker(LocalBroker::start).await;
    let leader = kafka_app(&broker).await;
    let url = broker.url();
    let created = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("tempdir");
        std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
            .args(["admin", "create-key", "--scopes", "admin", "--name", "ops"])
            .args(["--log", &url, "--data-dir"])
            .arg(dir.path())
            .env_remove("TIDEMARK_BOOTSTRAP_ADMIN_KEY")
            .output()
            .expect("tidemark runs")
    })
    .await
    .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&created.stdout).expect("JSON on stdout");
    let key = answer["key"].as_str().expect("the key").to_string();
    assert_eq!(answer["scopes"], json!(["admin"]));
    let listed = leader
        .send_raw("GET", "/api/v1/api-keys", None, &[("x-api-key", &key)])
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    assert!(listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|item| item["id"] == answer["id"]));
}
