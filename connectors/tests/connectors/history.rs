//! The event history in Parquet: every event exactly once, whatever a crash interrupted.

use std::collections::BTreeMap;
use std::path::Path;

use arrow_array::{
    Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use connectors::history::{HistoryLocation, HistoryOptions, HistoryWriter};
use connectors::kafka::events::EventEnvelope;
use connectors::testkit::S3Server;
use dataflows::events::{OrderCompleted, StockAdjusted};
use dataflows::model::{Event, Time};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::file::metadata::PageIndexPolicy;

const DAY_MS: u64 = 86_400_000;

/// An event at dataflow time `time` of log time `ts`.
fn event(time: Time, ts: u64, n: u16) -> (Time, Event) {
    let body = if n.is_multiple_of(2) {
        OrderCompleted {
            order_id: format!("o{n}").into(),
        }
        .into()
    } else {
        StockAdjusted {
            product_id: format!("p{n}").into(),
            delta: 1,
            reason: "count".into(),
        }
        .into()
    };
    (
        time,
        Event {
            seq: time / 2,
            phase: 0,
            sub: n,
            ts,
            body,
        },
    )
}

/// Events at times 2..=2n over two days of log time (from 2023-11-15 to 2023-11-16).
fn events(n: u64) -> Vec<(Time, Event)> {
    (1..=n)
        .map(|i| event(2 * i, 1_700_000_000_000 + i * DAY_MS / n * 2, i as u16))
        .collect()
}

/// Each row of the history by (time, sub): its day directory and type.
type Rows = BTreeMap<(Time, i32), (String, String)>;

/// Every batch of every history file under `dir`, with its day directory's name, and
/// the number of files.
fn batches(dir: &Path) -> (Vec<(String, RecordBatch)>, usize) {
    let (mut batches, mut files) = (Vec::new(), 0);
    for day in std::fs::read_dir(dir).unwrap() {
        let day = day.unwrap().path();
        if !day.is_dir() {
            continue;
        }
        let date = day.file_name().unwrap().to_str().unwrap().to_string();
        for file in std::fs::read_dir(&day).unwrap() {
            let file = file.unwrap().path();
            assert_eq!(file.extension().unwrap(), "parquet", "{}", file.display());
            files += 1;
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap())
                    .unwrap()
                    .build()
                    .unwrap();
            batches.extend(reader.map(|batch| (date.clone(), batch.unwrap())));
        }
    }
    (batches, files)
}

/// Every row of every history file, the number of files and the number of rows.
fn read(dir: &Path) -> (Rows, usize, usize) {
    let mut rows = BTreeMap::new();
    let mut total = 0;
    let (batches, files) = batches(dir);
    for (date, batch) in batches {
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let time = column("time");
        let time = time.as_any().downcast_ref::<Int64Array>().unwrap();
        let sub = column("sub");
        let sub = sub.as_any().downcast_ref::<Int32Array>().unwrap();
        let kind = column("type");
        let kind = kind.as_any().downcast_ref::<StringArray>().unwrap();
        for row in 0..batch.num_rows() {
            total += 1;
            rows.insert(
                (time.value(row) as Time, sub.value(row)),
                (date.clone(), kind.value(row).to_string()),
            );
        }
    }
    (rows, files, total)
}

/// The events by type that the committed files' footers count, summed.
fn footer_counts(location: &HistoryLocation) -> BTreeMap<String, u64> {
    let mut counted = BTreeMap::new();
    for name in block_on(connectors::history::committed_names(location)).unwrap() {
        let counts = connectors::history::file_type_counts(location, &name)
            .unwrap()
            .expect("the counts in the footer");
        for (kind, count) in counts {
            *counted.entry(kind).or_default() += count;
        }
    }
    counted
}

#[test]
fn events_land_in_one_file_per_day_and_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = HistoryWriter::open(dir.path(), HistoryOptions::default()).unwrap();
    let all = events(10);
    history.add(21, all.clone());
    assert_eq!(history.pending(), 10);
    history.flush().unwrap();
    assert_eq!(history.committed(), 21);
    let (rows, files, total) = read(dir.path());
    assert_eq!((rows.len(), total), (10, 10), "each event once");
    assert_eq!(files, 2, "the events span two days");
    assert_eq!(
        rows[&(2, 1)],
        (
            "date=2023-11-15".to_string(),
            "inventory.adjusted".to_string()
        )
    );
    assert_eq!(rows[&(4, 2)].1, "order.completed");
}

/// A flush of more events than one batch holds writes each once, and each file counts
/// them by type in its footer.
#[test]
fn a_large_flush_writes_every_event_once_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = HistoryWriter::open(dir.path(), HistoryOptions::default()).unwrap();
    let all = events(20_000);
    history.add(40_001, all.clone());
    history.flush().unwrap();
    let (rows, _, total) = read(dir.path());
    assert_eq!((rows.len(), total), (20_000, 20_000));
    let counted = footer_counts(&dir.path().into());
    let expected = BTreeMap::from([
        ("inventory.adjusted".to_string(), 10_000),
        ("order.completed".to_string(), 10_000),
    ]);
    assert_eq!(counted, expected);
}

/// Each row carries what the bus's envelope of its event carries: the same `event_id`,
/// and `data` the same JSON object (the record's fields, without the `type` tag).
#[test]
fn rows_carry_the_bus_envelopes_id_and_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut history = HistoryWriter::open(dir.path(), HistoryOptions::default()).unwrap();
    let all = events(6);
    history.add(13, all.clone());
    history.flush().unwrap();
    let envelopes: BTreeMap<String, EventEnvelope> = all
        .iter()
        .map(|(_, event)| EventEnvelope::of(event))
        .map(|envelope| (envelope.event_id.clone(), envelope))
        .collect();
    let mut seen = 0;
    for (_, batch) in batches(dir.path()).0 {
        let text = |name: &str| {
            let column = batch.column_by_name(name).unwrap();
            let column = column.as_any().downcast_ref::<StringArray>().unwrap();
            (0..column.len())
                .map(|row| column.value(row).to_string())
                .collect::<Vec<_>>()
        };
        for (id, data) in text("event_id").into_iter().zip(text("data")) {
            let envelope = &envelopes[&id];
            let data: serde_json::Value = serde_json::from_str(&data).unwrap();
            assert_eq!(data, envelope.data, "{id}");
            assert!(data.get("type").is_none(), "{data}");
            seen += 1;
        }
    }
    assert_eq!(seen, all.len());
}

/// A crash after files were written but before the commit, and the replay after it:
/// the history holds every event exactly once.
#[test]
fn a_crash_between_files_and_commit_writes_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let all = events(12);
    let mut history = HistoryWriter::open(dir.path(), HistoryOptions::default()).unwrap();
    history.add(13, all.iter().filter(|(time, _)| *time < 13).cloned());
    history.flush().unwrap();
    // The next flush's files land, but the process dies before `_committed` moves; and
    // a temporary file is half written.
    let (before, _, _) = read(dir.path());
    let day = dir.path().join("date=2023-11-16");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::write(
        day.join("events-00000000000000000013-00000000000000000025.parquet"),
        b"not parquet",
    )
    .unwrap();
    std::fs::write(
        day.join("events-00000000000000000013-00000000000000000025.parquet.tmp"),
        b"half",
    )
    .unwrap();
    // Restart: the log is replayed from the start and every event comes again.
    let mut history = HistoryWriter::open(dir.path(), HistoryOptions::default()).unwrap();
    assert_eq!(history.committed(), 13);
    let (after_open, _, _) = read(dir.path());
    assert_eq!(after_open, before, "the uncommitted files are gone");
    history.add(25, all.clone());
    assert_eq!(history.pending(), 6, "only what was not committed");
    history.flush().unwrap();
    let (rows, _, total) = read(dir.path());
    assert_eq!((rows.len(), total), (12, 12), "every event exactly once");
}

#[test]
fn small_files_of_a_day_are_merged() {
    let dir = tempfile::tempdir().unwrap();
    let options = HistoryOptions {
        compact_files: 3,
        ..HistoryOptions::default()
    };
    let mut history = HistoryWriter::open(dir.path(), options.clone()).unwrap();
    // Five flushes of one event each, all on one day.
    for i in 1..=5u64 {
        history.add(2 * i + 1, [event(2 * i, 1_700_000_000_000 + i, i as u16)]);
        history.flush().unwrap();
    }
    // Readers see each event once, in the merged file; the merged files stay a while
    // for queries that listed them before.
    let listed = block_on(connectors::history::committed_files(&dir.path().into())).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    // The merged file (the only one listed) counts its events by type.
    let counts = footer_counts(&dir.path().into());
    let expected = BTreeMap::from([
        ("inventory.adjusted".to_string(), 3),
        ("order.completed".to_string(), 2),
    ]);
    assert_eq!(counts, expected);
    // A merge that stopped before deleting its inputs: the covered file goes at open.
    let day = dir.path().join("date=2023-11-14");
    let merged = std::fs::read_dir(&day)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::copy(
        &merged,
        day.join("events-00000000000000000003-00000000000000000005.parquet"),
    )
    .unwrap();
    HistoryWriter::open(dir.path(), options).unwrap();
    let (rows, files, total) = read(dir.path());
    assert_eq!((rows.len(), total), (5, 5), "no event twice");
    assert_eq!(files, 1);
}

/// Each event's row names the request that sent its command (`request_id`); files
/// written before that column existed are merged with it null.
#[test]
fn request_ids_are_kept_and_older_files_without_them_merge() {
    let dir = tempfile::tempdir().unwrap();
    let options = HistoryOptions {
        compact_files: 3,
        ..HistoryOptions::default()
    };
    let mut history = HistoryWriter::open(dir.path(), options).unwrap();
    let ts = |i: u64| 1_700_000_000_000 + i;
    let traced = |i: u64| BTreeMap::from([(i, dataflows::model::Str::from(format!("req-{i}")))]);
    history.add_traced(3, [event(2, ts(1), 1)], &traced(1));
    history.flush().unwrap();
    // The first file as it was written before `request_id`: without the column.
    let day = dir.path().join("date=2023-11-14");
    let first = std::fs::read_dir(&day)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (old, _) = batches(dir.path());
    let old = old[0].1.clone();
    assert_eq!(
        old.column_by_name("request_id").map(|c| c
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .value(0)
            .to_string()),
        Some("req-1".to_string())
    );
    let fields = old.num_columns() - 1;
    let old = old.project(&(0..fields).collect::<Vec<_>>()).unwrap();
    let mut file = std::fs::File::create(&first).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut file, old.schema(), None).unwrap();
    writer.write(&old).unwrap();
    writer.close().unwrap();
    // Two more flushes, the second traced: the three files merge into one.
    history.add(5, [event(4, ts(2), 2)]);
    history.flush().unwrap();
    history.add_traced(7, [event(6, ts(3), 3)], &traced(3));
    history.flush().unwrap();
    let listed = block_on(connectors::history::committed_files(&dir.path().into())).unwrap();
    assert_eq!(listed.len(), 1, "merged: {listed:?}");
    let merged = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&listed[0]).unwrap())
        .unwrap()
        .build()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let requests = merged.column_by_name("request_id").unwrap();
    let requests = requests.as_any().downcast_ref::<StringArray>().unwrap();
    let requests: Vec<Option<&str>> = requests.iter().collect();
    assert_eq!(requests, [None, None, Some("req-3")]);
}

/// Merges take the newest small files, never a large file again with each of them: an
/// event is rewritten about once per tier, not at every merge of its day.
#[test]
fn merges_leave_large_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let options = HistoryOptions {
        compact_files: 3,
        tier_bytes: 8 * 1024,
        ..HistoryOptions::default()
    };
    let mut history = HistoryWriter::open(dir.path(), options).unwrap();
    let ts = |i: u64| 1_700_000_000_000 + i;
    // One large flush, then one-event flushes, all on one day.
    history.add(2001, (1..=1000u64).map(|i| event(2 * i, ts(i), i as u16)));
    history.flush().unwrap();
    let listed = |dir: &Path| block_on(connectors::history::committed_files(&dir.into())).unwrap();
    let large = listed(dir.path());
    assert_eq!(large.len(), 1);
    let large_size = std::fs::metadata(&large[0]).unwrap().len();
    assert!(
        large_size >= 8 * 1024 * 3,
        "the large file is of a higher tier: {large_size}"
    );
    for i in 1001..=1007u64 {
        history.add(2 * i + 1, [event(2 * i, ts(i), i as u16)]);
        history.flush().unwrap();
    }
    // Seven small flushes, merged whenever three small files wait (a small merged file
    // counts as small): one small file beside the large one, untouched throughout.
    let files = listed(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(files[0], large[0], "the large file is not merged again");
    // Reopened, the writer deletes the merged files that queries could still read.
    drop(history);
    HistoryWriter::open(dir.path(), HistoryOptions::default()).unwrap();
    let (rows, _, total) = read(dir.path());
    assert_eq!((rows.len(), total), (1007, 1007), "each event once");
}

/// A merge copies the large row groups of its inputs as they are encoded and writes the
/// small ones anew: the merged file holds the same rows, in time order, with the same
/// values as a merge that writes everything anew, its counts, and a page index.
#[test]
fn merges_copy_large_row_groups_and_write_small_ones_anew() {
    let merged = |copy_rows: usize| {
        let dir = tempfile::tempdir().unwrap();
        let options = HistoryOptions {
            compact_files: 4,
            copy_rows,
            ..HistoryOptions::default()
        };
        let mut history = HistoryWriter::open(dir.path(), options).unwrap();
        let ts = |i: u64| 1_700_000_000_000 + i;
        // Four flushes on one day: large, small, large, small.
        let mut next = 1u64;
        for size in [150u64, 1, 120, 2] {
            let flush: Vec<_> = (next..next + size)
                .map(|i| event(2 * i, ts(i), i as u16))
                .collect();
            next += size;
            history.add(2 * next, flush);
            history.flush().unwrap();
        }
        let location: HistoryLocation = dir.path().into();
        let names = block_on(connectors::history::committed_names(&location)).unwrap();
        assert_eq!(names.len(), 1, "one merged file: {names:?}");
        let counts = footer_counts(&location);
        let bytes = bytes::Bytes::from(std::fs::read(dir.path().join(&names[0])).unwrap());
        (bytes, counts)
    };
    let (copied, counts) = merged(100);
    let (written, written_counts) = merged(usize::MAX);
    let groups = |bytes: &bytes::Bytes| {
        let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
            bytes.clone(),
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
        )
        .expect("a page index");
        builder
            .metadata()
            .row_groups()
            .iter()
            .map(|group| group.num_rows())
            .collect::<Vec<_>>()
    };
    // The large flushes' row groups as they were; each small one written anew, between
    // them, so that rows stay in time order.
    assert_eq!(groups(&copied), [150, 1, 120, 2]);
    assert_eq!(groups(&written), [273]);
    let columns = connectors::history::schema();
    let rows = |bytes: &bytes::Bytes| {
        let mut rows = Vec::new();
        for batch in ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .unwrap()
            .build()
            .unwrap()
        {
            let batch = batch.unwrap();
            for row in 0..batch.num_rows() {
                let value = |name: &str| {
                    let column = batch.column_by_name(name).unwrap();
                    if let Some(text) = column.as_any().downcast_ref::<StringArray>() {
                        text.value(row).to_string()
                    } else if let Some(int) = column.as_any().downcast_ref::<Int64Array>() {
                        int.value(row).to_string()
                    } else if let Some(int) = column.as_any().downcast_ref::<Int32Array>() {
                        int.value(row).to_string()
                    } else {
                        let at = column
                            .as_any()
                            .downcast_ref::<TimestampMillisecondArray>()
                            .unwrap();
                        at.value(row).to_string()
                    }
                };
                rows.push(
                    columns
                        .fields()
                        .iter()
                        .map(|field| value(field.name()))
                        .collect::<Vec<_>>(),
                );
            }
        }
        rows
    };
    let (copied_rows, written_rows) = (rows(&copied), rows(&written));
    assert_eq!(copied_rows.len(), 273);
    assert_eq!(copied_rows, written_rows);
    let times: Vec<u64> = copied_rows
        .iter()
        .map(|row| row[6].parse().unwrap())
        .collect();
    assert!(times.is_sorted(), "rows in time order");
    let expected = BTreeMap::from([
        ("inventory.adjusted".to_string(), 137),
        ("order.completed".to_string(), 136),
    ]);
    assert_eq!(counts, expected);
    assert_eq!(written_counts, expected);
}

fn block_on<T>(work: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(work)
}

/// The history in an S3 bucket (moto's server): a flush's file that landed without its
/// commit is gone at the next open, every event is in it once after the replay, and a
/// day's small files are merged.
#[test]
fn the_history_in_an_object_store_holds_every_event_once() {
    let s3 = S3Server::start().expect("moto's S3 server (scripts/setup.sh installs it)");
    let url = format!("s3://{}/shop/history", S3Server::BUCKET);
    let location = HistoryLocation::object_store(&url, &s3.client_options()).unwrap();
    let (root, store) = location.store().expect("an object store");
    assert_eq!(root, format!("s3://{}", S3Server::BUCKET));
    let object = |url: &str| ObjectPath::from(url.strip_prefix(&format!("{root}/")).unwrap());
    let read_all = || {
        let files = block_on(connectors::history::committed_files(&location)).unwrap();
        let mut rows = BTreeMap::new();
        let mut total = 0;
        for file in &files {
            let bytes =
                block_on(async { store.get(&object(file)).await.unwrap().bytes().await }).unwrap();
            for batch in ParquetRecordBatchReaderBuilder::try_new(bytes)
                .unwrap()
                .build()
                .unwrap()
            {
                let batch = batch.unwrap();
                let time = batch.column_by_name("time").unwrap();
                let time = time.as_any().downcast_ref::<Int64Array>().unwrap();
                let sub = batch.column_by_name("sub").unwrap();
                let sub = sub.as_any().downcast_ref::<Int32Array>().unwrap();
                for row in 0..batch.num_rows() {
                    total += 1;
                    rows.insert((time.value(row), sub.value(row)), file.clone());
                }
            }
        }
        (rows, files, total)
    };

    let all = events(12);
    let options = HistoryOptions {
        compact_files: 3,
        ..HistoryOptions::default()
    };
    let mut history = HistoryWriter::open(location.clone(), options.clone()).unwrap();
    history.add(13, all.iter().filter(|(time, _)| *time < 13).cloned());
    history.flush().unwrap();
    let (rows, files, _) = read_all();
    assert_eq!((rows.len(), files.len()), (6, 1), "{files:?}");
    assert!(
        files[0].starts_with(&format!("{url}/date=2023-11-15/events-")),
        "{files:?}"
    );

    // The next flush's file lands, and the process dies before `_committed` moves.
    let stray =
        format!("{url}/date=2023-11-16/events-00000000000000000013-00000000000000000025.parquet");
    block_on(store.put(&object(&stray), b"not parquet".to_vec().into())).unwrap();
    let mut history = HistoryWriter::open(location.clone(), options.clone()).unwrap();
    assert_eq!(history.committed(), 13);
    assert!(
        block_on(store.head(&object(&stray))).is_err(),
        "the uncommitted file is gone"
    );
    history.add(25, all.clone());
    assert_eq!(history.pending(), 6);
    history.flush().unwrap();
    let (rows, _, total) = read_all();
    assert_eq!((rows.len(), total), (12, 12), "every event exactly once");

    // Single events on the last day: its files are merged once there are three.
    for i in 13..=14u64 {
        history.add(
            2 * i + 1,
            [event(
                2 * i,
                1_700_000_000_000 + DAY_MS + DAY_MS / 2 + i,
                i as u16,
            )],
        );
        history.flush().unwrap();
    }
    let (rows, files, total) = read_all();
    assert_eq!((rows.len(), total), (14, 14));
    assert_eq!(
        files.len(),
        2,
        "the second day is one merged file: {files:?}"
    );
}

/// A user's password hash serves the views of the process that decided it, and goes
/// nowhere else: not on the bus, not into the history.
#[test]
fn no_password_hash_leaves_the_process() {
    use dataflows::events::{UserCreated, UserUpdated};
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    let created = Event {
        seq: 1,
        phase: 0,
        sub: 0,
        ts: 1_700_000_000_000,
        body: UserCreated {
            user_id: "usr_1".into(),
            email: "ann@example.com".into(),
            name: "Ann".into(),
            password_hash: hash.into(),
        }
        .into(),
    };
    let updated = Event {
        seq: 2,
        body: UserUpdated {
            user_id: "usr_1".into(),
            email: "ann@example.com".into(),
            name: "Ann".into(),
            password_hash: hash.into(),
            profile: Default::default(),
        }
        .into(),
        ..created.clone()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut history = HistoryWriter::open(dir.path(), HistoryOptions::default()).unwrap();
    history.add(3, [(1, created.clone()), (2, updated.clone())]);
    history.flush().unwrap();
    let mut rows = 0;
    for (_, batch) in batches(dir.path()).0 {
        let data = batch.column_by_name("data").unwrap();
        let data = data.as_any().downcast_ref::<StringArray>().unwrap();
        for row in 0..data.len() {
            assert!(!data.value(row).contains("argon2"), "{}", data.value(row));
            assert!(data.value(row).contains("ann@example.com"));
            rows += 1;
        }
    }
    assert_eq!(rows, 2);
    for event in [&created, &updated] {
        let envelope = EventEnvelope::of(event);
        assert!(
            envelope.data.get("password_hash").is_none(),
            "{:?}",
            envelope.data
        );
        assert!(!serde_json::to_string(&envelope).unwrap().contains("argon2"));
    }
}
