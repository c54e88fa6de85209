//! The `events` table over a Parquet history: the planner knows how many events of each
//! type the files hold, and builds a join's hash table on the side with fewer.

use std::sync::Arc;

use connectors::history::{HistoryOptions, HistoryWriter};
use dataflows::events::{InventoryReserved, OrderConfirmed};
use dataflows::model::{Event, EventBody, Time};
use datafusion::arrow::array::AsArray;
use queries::Snapshot;
use sql::{Answer, SqlConfig, SqlEngine};

fn run(engine: &SqlEngine, snapshot: &Arc<Snapshot>, query: &str) -> Answer {
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    waiter
        .block_on(engine.run(snapshot.clone(), query.into(), None, None))
        .unwrap_or_else(|e| panic!("{query}: {e:?}"))
}

/// The physical plan's line of the hash join.
fn hash_join(engine: &SqlEngine, snapshot: &Arc<Snapshot>, query: &str) -> String {
    let answer = run(engine, snapshot, &format!("EXPLAIN {query}"));
    let batch = &answer.batches[0];
    let (kinds, plans) = (
        batch
            .column(0)
            .as_string_view_opt()
            .map(|a| a.iter().collect::<Vec<_>>()),
        batch
            .column(1)
            .as_string_view_opt()
            .map(|a| a.iter().collect::<Vec<_>>()),
    );
    let (kinds, plans) = match (kinds, plans) {
        (Some(kinds), Some(plans)) => (kinds, plans),
        _ => (
            batch.column(0).as_string::<i32>().iter().collect(),
            batch.column(1).as_string::<i32>().iter().collect(),
        ),
    };
    let physical = kinds
        .iter()
        .position(|kind| *kind == Some("physical_plan"))
        .and_then(|at| plans[at])
        .expect("a physical plan");
    physical
        .lines()
        .find(|line| line.contains("HashJoinExec"))
        .unwrap_or_else(|| panic!("no hash join in\n{physical}"))
        .to_string()
}

#[test]
fn joins_of_two_event_types_build_on_the_rarer() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = HistoryWriter::open(dir.path(), HistoryOptions::default()).unwrap();
    // 60 reservations of 12 orders, 3 of which are confirmed.
    let mut events: Vec<(Time, Event)> = Vec::new();
    let mut push = |body: EventBody| {
        let time = 2 * (events.len() as Time + 1);
        events.push((
            time,
            Event {
                seq: time / 2,
                phase: 0,
                sub: 0,
                ts: 1_790_000_000_000 + time,
                body,
            },
        ));
    };
    for n in 0..60 {
        push(
            InventoryReserved {
                product_id: format!("p{}", n % 5).into(),
                order_id: format!("o{}", n % 12).into(),
                quantity: 1 + n % 3,
            }
            .into(),
        );
    }
    for n in 0..3 {
        push(
            OrderConfirmed {
                order_id: format!("o{n}").into(),
                payment_id: format!("pay{n}").into(),
            }
            .into(),
        );
    }
    let end = events.last().unwrap().0 + 1;
    history.add(end, events);
    history.flush().unwrap();

    let engine = SqlEngine::new(SqlConfig::default())
        .unwrap()
        .with_history(dir.path().into());
    let (_shop, snapshot) = crate::fixture::shop();
    let reserved_first = "SELECT sum(CAST(r.data->>'quantity' AS BIGINT)) AS units \
        FROM events r JOIN events c ON c.aggregate_id = (r.data->>'order_id') \
        WHERE r.type = 'inventory.reserved' AND c.type = 'order.confirmed'";
    let confirmed_first = "SELECT sum(CAST(r.data->>'quantity' AS BIGINT)) AS units \
        FROM events c JOIN events r ON c.aggregate_id = (r.data->>'order_id') \
        WHERE r.type = 'inventory.reserved' AND c.type = 'order.confirmed'";
    for query in [reserved_first, confirmed_first] {
        // The build side is the join's left: the confirmed orders' `aggregate_id`.
        let join = hash_join(&engine, &snapshot, query);
        assert!(join.contains("on=[(aggregate_id@"), "{join}");
        // Orders o0, o1 and o2 have 5 reservations each, of 1 + n % 3 units.
        let answer = run(&engine, &snapshot, query);
        let units = answer.batches[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        let expected: i64 = (0..60).filter(|n| n % 12 < 3).map(|n| 1 + n % 3).sum();
        assert_eq!(units, expected);
    }
}

/// Files written before the history had `request_id` read it as null, beside files
/// that have it.
#[test]
fn files_without_request_ids_read_them_as_null() {
    use dataflows::events::OrderCompleted;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion::parquet::arrow::ArrowWriter;

    let dir = tempfile::tempdir().unwrap();
    let mut history = HistoryWriter::open(dir.path(), HistoryOptions::default()).unwrap();
    let event = |seq: u64| {
        let body: EventBody = OrderCompleted {
            order_id: format!("o{seq}").into(),
        }
        .into();
        let event = Event {
            seq,
            phase: 0,
            sub: 0,
            ts: 1_790_000_000_000 + seq,
            body,
        };
        (2 * seq, event)
    };
    let traced = |seq: u64| {
        std::collections::BTreeMap::from([(seq, dataflows::model::Str::from(format!("req-{seq}")))])
    };
    history.add_traced(3, [event(1)], &traced(1));
    history.flush().unwrap();
    // That file as the history wrote it before `request_id`: without the column.
    let day = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.is_dir())
        .unwrap();
    let file = std::fs::read_dir(&day)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let batch = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let columns: Vec<usize> = (0..batch.num_columns() - 1).collect();
    let old = batch.project(&columns).unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(&file).unwrap(), old.schema(), None).unwrap();
    writer.write(&old).unwrap();
    writer.close().unwrap();
    history.add_traced(5, [event(2)], &traced(2));
    history.flush().unwrap();

    let engine = SqlEngine::new(SqlConfig::default())
        .unwrap()
        .with_history(dir.path().into());
    let (_shop, snapshot) = crate::fixture::shop();
    let answer = run(
        &engine,
        &snapshot,
        "SELECT request_id FROM events ORDER BY position",
    );
    let requests: Vec<Option<String>> = answer
        .batches
        .iter()
        .flat_map(|batch| {
            let column = batch.column(0);
            (0..column.len())
                .map(|row| {
                    column.is_valid(row).then(|| {
                        column
                            .as_string_view_opt()
                            .map(|c| c.value(row).to_string())
                            .unwrap_or_else(|| column.as_string::<i32>().value(row).to_string())
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(requests, [None, Some("req-2".to_string())]);
}
