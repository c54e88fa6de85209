//! The Kafka log against a real broker (tansu, started per test on a free port).

use std::sync::{Arc, Mutex};

use connectors::kafka::events::KafkaEventSink;
use connectors::kafka::KafkaCluster;
use connectors::log::{KafkaLog, KafkaLogOptions, Log, LogRecord, OnDurable};
use connectors::testkit::LocalBroker;
use connectors::Error;

/// Every record the consumer was handed, as (seq, ts, payload).
type Delivered = Arc<Mutex<Vec<LogRecord>>>;

fn options(cluster: KafkaCluster) -> KafkaLogOptions {
    KafkaLogOptions {
        cluster,
        partitions: 3,
        replication_factor: 1,
        // The first byte stands for the aggregate: records of one key share a partition.
        key_of: Arc::new(|payload: &[u8]| payload[..1].to_vec()),
        max_batch_records: 7,
        linger_ms: 5,
        follow: false,
    }
}

fn started(cluster: KafkaCluster) -> (KafkaLog, Delivered) {
    let log = KafkaLog::open(options(cluster)).expect("open");
    let delivered: Delivered = Arc::default();
    log.start(collect_into(&delivered)).expect("start");
    (log, delivered)
}

/// A log consumer that keeps every record it is handed.
fn collect_into(delivered: &Delivered) -> OnDurable {
    let sink = Arc::clone(delivered);
    Box::new(move |batch| {
        let mut sink = sink.lock().unwrap();
        for (seq, payload) in batch.records {
            sink.push(LogRecord {
                seq,
                ts: batch.ts,
                payload: payload.to_vec(),
            });
        }
    })
}

fn replayed(log: &KafkaLog, from: u64) -> Vec<LogRecord> {
    log.read_from(from)
        .expect("read")
        .collect::<Result<Vec<_>, _>>()
        .expect("records")
}

#[test]
fn appends_are_bound_and_replay_to_the_same_batches() {
    let broker = LocalBroker::start().expect("broker");
    let (log, delivered) = started(broker.cluster());
    let log = Arc::new(log);
    // Eight writers, each appending batches of two or three commands of several keys.
    let writers: Vec<_> = (0..8u8)
        .map(|writer| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..10u8)
                    .map(|n| {
                        let payloads: Vec<Vec<u8>> = (0..2 + n % 2)
                            .map(|i| vec![b'a' + (writer + i) % 5, writer, n, i])
                            .collect();
                        let appended = log.append(payloads.clone()).wait().expect("append");
                        (payloads, appended)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let appends: Vec<_> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    let delivered = delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 200);
    let positions: Vec<u64> = delivered.iter().map(|r| r.seq).collect();
    assert_eq!(
        positions,
        (0..200).collect::<Vec<_>>(),
        "positions are consecutive"
    );
    assert!(
        delivered.windows(2).all(|pair| pair[0].ts <= pair[1].ts),
        "timestamps never go back"
    );
    // Every append learned where each of its records landed, and when all of them are in.
    for (payloads, appended) in &appends {
        assert_eq!(appended.seqs.len(), payloads.len());
        for (payload, seq) in payloads.iter().zip(&appended.seqs) {
            let record = &delivered[*seq as usize];
            assert_eq!(&record.payload, payload);
            assert!(record.ts <= appended.ts);
        }
    }
    // Records of one key keep their order.
    for writer in 0..8u8 {
        let of_writer: Vec<&LogRecord> = delivered
            .iter()
            .filter(|r| r.payload[1] == writer && r.payload[3] == 0)
            .collect();
        assert!(of_writer
            .windows(2)
            .all(|p| p[0].payload[2] < p[1].payload[2]));
    }
    assert_eq!(log.durable_end(), 200);
    assert_eq!(
        replayed(&log, 0),
        delivered,
        "replay rebuilds the same batches"
    );
    log.close();

    // Another process opening the same topics reads the same log, from any position.
    let reopened = KafkaLog::open(options(broker.cluster())).expect("reopen");
    assert_eq!(reopened.durable_end(), 200);
    assert_eq!(replayed(&reopened, 0), delivered);
    assert_eq!(replayed(&reopened, 123), delivered[123..].to_vec());
    assert!(replayed(&reopened, 200).is_empty());
}

#[test]
fn the_log_goes_on_after_a_restart() {
    let broker = LocalBroker::start().expect("broker");
    let first_ts = {
        let (log, _) = started(broker.cluster());
        let appended = log
            .append(vec![b"x1".to_vec(), b"y1".to_vec()])
            .wait()
            .unwrap();
        log.close();
        appended.ts
    };
    let (log, delivered) = started(broker.cluster());
    let appended = log.append(vec![b"x2".to_vec()]).wait().unwrap();
    assert_eq!(appended.seqs, vec![2]);
    assert!(
        appended.ts > first_ts,
        "timestamps increase across restarts"
    );
    assert_eq!(
        delivered.lock().unwrap().len(),
        1,
        "old records are not bound again"
    );
    let all = replayed(&log, 0);
    let payloads: Vec<&[u8]> = all.iter().map(|r| &r.payload[..]).collect();
    assert_eq!(payloads.len(), 3);
    assert_eq!(payloads[2], b"x2");
}

#[test]
fn appends_before_start_or_after_close_are_refused() {
    let broker = LocalBroker::start().expect("broker");
    let log = KafkaLog::open(options(broker.cluster())).expect("open");
    assert!(matches!(
        log.append(vec![b"a".to_vec()]).wait(),
        Err(Error::Closed)
    ));
    log.start(Box::new(|_| {})).unwrap();
    assert!(log.append(vec![b"a".to_vec()]).wait().is_ok());
    log.close();
    assert!(matches!(
        log.append(vec![b"b".to_vec()]).wait(),
        Err(Error::Closed)
    ));
}

#[test]
fn settings_that_break_the_guarantees_are_refused() {
    let mut cluster = KafkaCluster::from_url("kafka://127.0.0.1:9092").unwrap();
    assert_eq!(cluster.brokers, "127.0.0.1:9092");
    for (key, value, says) in [
        ("enable.idempotence", "false", "idempotent producer"),
        ("acks", "1", "in-sync replica"),
        (
            "isolation.level",
            "read_uncommitted",
            "aborted transactions",
        ),
        ("bootstrap.servers", "elsewhere:9092", "kafka:// URL"),
    ] {
        cluster.properties.clear();
        cluster.properties.insert(key.into(), value.into());
        let error = cluster.validate().unwrap_err().to_string();
        assert!(error.contains(key) && error.contains(says), "{error}");
    }
    cluster.properties.clear();
    cluster
        .properties
        .insert("security.protocol".into(), "sasl_ssl".into());
    cluster.validate().expect("security settings pass through");
    for bad in [
        "127.0.0.1:9092",
        "kafka://",
        "kafka://host",
        "kafka://host:port",
        "kafka://a:1,:2",
    ] {
        assert!(KafkaCluster::from_url(bad).is_err(), "{bad}");
    }
    assert_eq!(
        KafkaCluster::from_url("kafka://a:1,b:2").unwrap().brokers,
        "a:1,b:2"
    );
}

#[test]
fn a_follower_delivers_the_leaders_batches_and_takes_appends() {
    let broker = LocalBroker::start().expect("broker");
    let (leader, led) = started(broker.cluster());
    leader
        .append(vec![b"a0".to_vec(), b"b0".to_vec()])
        .wait()
        .unwrap();
    // A follower opened later replays what is bound so far, then follows.
    let follower = KafkaLog::open(KafkaLogOptions {
        follow: true,
        ..options(broker.cluster())
    })
    .expect("open a follower");
    let followed: Delivered = Arc::default();
    followed.lock().unwrap().extend(replayed(&follower, 0));
    follower.start(collect_into(&followed)).unwrap();
    for n in 1..=5u8 {
        leader
            .append(vec![vec![b'a', n], vec![b'c', n]])
            .wait()
            .unwrap();
    }
    // An append through the follower is bound by the leader and answered here.
    let through_follower = follower.append(vec![b"f1".to_vec()]).wait().unwrap();
    // Each has handed on every batch bound before it asked, the follower's own too.
    let timeout = std::time::Duration::from_secs(30);
    let last = follower.sync_point(timeout).unwrap();
    assert_eq!(last, Some(through_follower.ts));
    assert_eq!(leader.sync_point(timeout).unwrap(), last);
    let led = led.lock().unwrap().clone();
    assert_eq!(led.len(), 13);
    assert_eq!(
        *followed.lock().unwrap(),
        led,
        "the same batches, positions and times"
    );
    let at = through_follower.seqs[0] as usize;
    assert_eq!(led[at].payload, b"f1");
    assert_eq!(follower.durable_end(), leader.durable_end());
}

#[test]
fn records_another_writer_puts_between_this_processs_are_bound_once_each() {
    let broker = LocalBroker::start().expect("broker");
    let (leader, led) = started(broker.cluster());
    let leader = Arc::new(leader);
    let follower = KafkaLog::open(KafkaLogOptions {
        follow: true,
        ..options(broker.cluster())
    })
    .expect("open a follower");
    follower.start(Box::new(|_| {})).expect("follow");
    let follower = Arc::new(follower);
    // Both write the same keys at once, so that their records interleave in every
    // partition: the leader binds its own as they are delivered and the follower's as
    // it reads them back.
    let writers: Vec<_> = [(Arc::clone(&leader), b'L'), (Arc::clone(&follower), b'F')]
        .into_iter()
        .map(|(log, writer)| {
            std::thread::spawn(move || {
                for n in 0..60u8 {
                    log.append(vec![vec![b'a' + n % 3, writer, n]])
                        .wait()
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    // The follower's last answer may come just before the leader hands its batch on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while led.lock().unwrap().len() < 120 {
        assert!(std::time::Instant::now() < deadline, "the leader lags");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let led = led.lock().unwrap().clone();
    assert_eq!(led.len(), 120);
    let mut payloads: Vec<&Vec<u8>> = led.iter().map(|record| &record.payload).collect();
    payloads.sort();
    payloads.dedup();
    assert_eq!(payloads.len(), 120, "every record bound, none twice");
    assert_eq!(
        led.iter().map(|record| record.seq).collect::<Vec<_>>(),
        (0..120).collect::<Vec<_>>()
    );
    assert_eq!(
        replayed(&leader, 0),
        led,
        "replay rebuilds the same batches"
    );
}

#[test]
fn every_topic_the_log_and_the_sink_create_carries_the_prefix() {
    let broker = LocalBroker::start().expect("broker");
    let mut cluster = broker.cluster();
    cluster.topic_prefix = "shop.".into();
    let (log, _) = started(cluster.clone());
    assert_eq!(log.commands_topic(), "shop.tidemark.commands");
    log.append(vec![b"a1".to_vec()]).wait().expect("append");
    assert_eq!(replayed(&log, 0).len(), 1, "bound and read back");
    log.close();
    KafkaEventSink::open(cluster, "prefixed", 1, 1).expect("open the event sink");

    let topics = broker.topics().expect("topics");
    for topic in [
        "shop.tidemark.commands",
        "shop.tidemark.bindings",
        "shop.tidemark.sink-progress",
        "shop.order.created",
    ] {
        assert!(topics.iter().any(|t| t == topic), "{topic} in {topics:?}");
    }
    // The broker's own topics (`__consumer_offsets`, ...) are not tidemark's.
    let unprefixed: Vec<&String> = topics
        .iter()
        .filter(|t| !t.starts_with("shop.") && !t.starts_with("__"))
        .collect();
    assert!(unprefixed.is_empty(), "unprefixed topics: {unprefixed:?}");
}
