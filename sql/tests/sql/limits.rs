//! What the engine refuses and where it stops: writes, bad SQL, long and large queries;
//! and that a query reads one frontier.

use std::sync::Arc;

use dataflows::model::{Command, Line};
use queries::Snapshot;
use serde_json::json;
use sql::{Answer, QueryError, SqlConfig, SqlEngine};

fn run(engine: &SqlEngine, snapshot: &Arc<Snapshot>, query: &str) -> Result<Answer, QueryError> {
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    waiter.block_on(engine.run(snapshot.clone(), query.into(), None, None))
}

fn int(answer: &Answer, row: usize, column: usize) -> i64 {
    let batch = answer.batches.first().expect("a batch");
    datafusion::arrow::array::AsArray::as_primitive::<datafusion::arrow::datatypes::Int64Type>(
        batch.column(column),
    )
    .value(row)
}

#[test]
fn only_queries_run() {
    let (_shop, snapshot) = crate::fixture::shop();
    let engine = SqlEngine::new(SqlConfig::default()).unwrap();
    for statement in [
        "CREATE TABLE t (a INT)",
        "CREATE TABLE t AS SELECT * FROM orders",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE orders",
        "INSERT INTO products (id) VALUES ('x')",
        "DELETE FROM orders",
        "UPDATE orders SET status = 'paid'",
        "COPY (SELECT 1) TO '/tmp/tidemark-copy.csv'",
        "SET datafusion.execution.batch_size = 1",
        "CREATE EXTERNAL TABLE e STORED AS CSV LOCATION '/etc/passwd'",
        "EXPLAIN CREATE TABLE t (a INT)",
    ] {
        match run(&engine, &snapshot, statement) {
            Err(QueryError::ReadOnly(_)) => {}
            // Some statements the planner itself refuses first; either way nothing runs.
            Err(QueryError::Invalid(message)) => {
                assert!(!message.is_empty(), "{statement}")
            }
            other => panic!("{statement}: {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/tidemark-copy.csv").exists());
    // The views are unchanged.
    let count = run(&engine, &snapshot, "SELECT count(*) FROM orders").unwrap();
    assert_eq!(int(&count, 0, 0), 4);
}

#[test]
fn bad_sql_says_what_is_wrong() {
    let (_shop, snapshot) = crate::fixture::shop();
    let engine = SqlEngine::new(SqlConfig::default()).unwrap();
    let cases = [
        ("SELEC 1", "SELEC"),
        ("SELECT nope FROM orders", "nope"),
        ("SELECT * FROM nowhere", "nowhere"),
        ("SELECT password_hash FROM users", "password_hash"),
        ("SELECT 1; SELECT 2", "single"),
    ];
    for (query, mentioned) in cases {
        match run(&engine, &snapshot, query) {
            Err(QueryError::Invalid(message)) => {
                assert!(message.contains(mentioned), "{query}: {message}")
            }
            other => panic!("{query}: {other:?}"),
        }
    }
}

#[test]
fn parameters_bind_by_name_and_position() {
    let (_shop, snapshot) = crate::fixture::shop();
    let engine = SqlEngine::new(SqlConfig::default()).unwrap();
    let waiter = tokio::runtime::Runtime::new().unwrap();
    let by_name = sql::params::from_json(&json!({"user": "u_bob"})).unwrap();
    let answer = waiter
        .block_on(engine.run(
            snapshot.clone(),
            "SELECT count(*) FROM orders WHERE user_id = $user".into(),
            by_name,
            None,
        ))
        .unwrap();
    assert_eq!(int(&answer, 0, 0), 2);
    let by_position = sql::params::from_json(&json!([1000])).unwrap();
    let answer = waiter
        .block_on(engine.run(
            snapshot.clone(),
            "SELECT count(*) FROM products WHERE price_cents > $1".into(),
            by_position,
            None,
        ))
        .unwrap();
    assert_eq!(int(&answer, 0, 0), 2);
}

#[test]
fn a_long_query_is_stopped_at_the_timeout() {
    let (_shop, snapshot) = crate::fixture::shop();
    let engine = SqlEngine::new(SqlConfig {
        timeout_ms: 200,
        ..SqlConfig::default()
    })
    .unwrap();
    // Hours of work: stopped, not waited for.
    let started = std::time::Instant::now();
    let result = run(
        &engine,
        &snapshot,
        "SELECT count(*) FROM generate_series(1, 100000000000) a",
    );
    assert!(matches!(result, Err(QueryError::Timeout(_))), "{result:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    // The engine goes on answering.
    assert!(run(&engine, &snapshot, "SELECT 1").is_ok());
}

#[test]
fn a_query_larger_than_its_memory_fails_clearly() {
    let (_shop, snapshot) = crate::fixture::shop();
    let engine = SqlEngine::new(SqlConfig {
        memory_limit_mb: 4,
        ..SqlConfig::default()
    })
    .unwrap();
    let result = run(
        &engine,
        &snapshot,
        "SELECT value, repeat('x', 100) FROM generate_series(1, 2000000) ORDER BY value DESC",
    );
    match result {
        Err(QueryError::TooLarge(message)) => assert!(message.contains("memory"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert!(run(&engine, &snapshot, "SELECT count(*) FROM orders").is_ok());
}

#[test]
fn a_row_cap_cuts_the_answer_and_says_so() {
    let (_shop, snapshot) = crate::fixture::shop();
    let engine = SqlEngine::new(SqlConfig::default()).unwrap();
    let waiter = tokio::runtime::Runtime::new().unwrap();
    let capped = waiter
        .block_on(engine.run(
            snapshot.clone(),
            "SELECT * FROM generate_series(1, 100000)".into(),
            None,
            Some(10),
        ))
        .unwrap();
    assert_eq!(capped.rows(), 10);
    assert!(capped.truncated);
    let whole = waiter
        .block_on(engine.run(snapshot, "SELECT * FROM orders".into(), None, Some(10)))
        .unwrap();
    assert_eq!(whole.rows(), 4);
    assert!(!whole.truncated);
}

#[test]
fn a_query_reads_the_frontier_it_started_at() {
    let (mut shop, before) = crate::fixture::shop();
    let engine = SqlEngine::new(SqlConfig::default()).unwrap();
    shop.batch(vec![Command::PlaceOrder {
        order_id: "o5".into(),
        user_id: "u_ada".into(),
        items: vec![Line {
            product_id: "p_mug".into(),
            quantity: 1,
        }],
        payment: None,
        shipping_address: None,
        cart_id: None,
    }]);
    let after = shop.store.read();
    assert!(after.frontier > before.frontier);
    // Orders, their items and the stock they hold agree at either frontier.
    let query = "SELECT (SELECT count(*) FROM orders), \
                        (SELECT count(DISTINCT order_id) FROM order_items), \
                        (SELECT reserved FROM stock WHERE product_id = 'p_mug')";
    let old = run(&engine, &before, query).unwrap();
    let new = run(&engine, &after, query).unwrap();
    assert_eq!([int(&old, 0, 0), int(&old, 0, 1)], [4, 4]);
    assert_eq!([int(&new, 0, 0), int(&new, 0, 1)], [5, 5]);
    assert_eq!(int(&new, 0, 2), int(&old, 0, 2) + 1);
    assert_eq!(old.frontier, before.frontier);
}
