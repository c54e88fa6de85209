//! The event sink against a real broker: envelopes on per-event topics, written once.

use connectors::kafka::events::{EventEnvelope, KafkaEventSink};
use connectors::kafka::KafkaCluster;
use connectors::testkit::LocalBroker;
use dataflows::events::{OrderCompleted, UserDeleted};
use dataflows::model::{Event, EventBody};

fn event(seq: u64, ts: u64, body: EventBody) -> Event {
    Event {
        seq,
        phase: 0,
        sub: 0,
        ts,
        body,
    }
}

fn completed(order: &str, ts: u64) -> (u64, Event) {
    let body = EventBody::OrderCompleted(OrderCompleted {
        order_id: order.into(),
    });
    (ts * 2, event(ts, ts, body))
}

fn deleted(user: &str, ts: u64) -> (u64, Event) {
    let body = EventBody::UserDeleted(UserDeleted {
        user_id: user.into(),
    });
    (ts * 2, event(ts, ts, body))
}

fn read_topic(cluster: &KafkaCluster, topic: &str) -> Vec<EventEnvelope> {
    cluster
        .read_topic(topic)
        .expect("read")
        .iter()
        .map(|payload| serde_json::from_slice(payload).expect("an envelope"))
        .collect()
}

#[test]
fn events_reach_their_topics_once_across_restarts() {
    let broker = LocalBroker::start().expect("broker");
    let cluster = broker.cluster();
    let mut sink = KafkaEventSink::open(cluster.clone(), "main", 3, 1).expect("sink");
    assert_eq!(sink.committed(), 0);
    let first = vec![completed("ord_1", 100), deleted("usr_1", 101)];
    sink.publish(204, &first, &Default::default()).unwrap();
    assert_eq!(sink.committed(), 204);
    drop(sink);

    // After a crash the dataflow replays everything; the sink writes only what is new.
    let mut sink = KafkaEventSink::open(cluster.clone(), "main", 3, 1).expect("reopen");
    assert_eq!(sink.committed(), 204);
    sink.publish(204, &first, &Default::default()).unwrap();
    let mut replayed = first.clone();
    replayed.push(completed("ord_2", 102));
    sink.publish(206, &replayed, &Default::default()).unwrap();

    let orders = read_topic(&cluster, "order.completed");
    let ids: Vec<&str> = orders.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"ord_1") && ids.contains(&"ord_2"));
    let envelope = orders.iter().find(|e| e.aggregate_id == "ord_1").unwrap();
    assert_eq!(envelope.event_type, "order.completed");
    assert_eq!(envelope.timestamp, 100);
    assert_eq!(envelope.occurred_at, "1970-01-01T00:00:00.100Z");
    assert_eq!(envelope.correlation_id, "ord_1");
    assert_eq!(envelope.data, serde_json::json!({"order_id": "ord_1"}));
    assert_eq!(envelope, &EventEnvelope::of(&first[0].1), "ids are stable");
    assert!(envelope.event_id.starts_with("evt_"));
    assert_eq!(read_topic(&cluster, "user.deleted").len(), 1);
}

#[test]
fn events_already_visible_are_not_written_again() {
    let broker = LocalBroker::start().expect("broker");
    let cluster = broker.cluster();
    let mut sink = KafkaEventSink::open(cluster.clone(), "main", 1, 1).expect("sink");
    let first = vec![completed("ord_1", 100)];
    sink.publish(202, &first, &Default::default()).unwrap();
    drop(sink);
    // A crash left an event on the topic whose progress was never committed (a broker
    // that shows an unfinished transaction's records looks like this).
    let orphan = completed("ord_2", 101);
    let payload = serde_json::to_vec(&EventEnvelope::of(&orphan.1)).unwrap();
    cluster
        .write_records("order.completed", &[("ord_2", &payload)])
        .unwrap();
    let mut sink = KafkaEventSink::open(cluster.clone(), "main", 1, 1).expect("reopen");
    assert_eq!(sink.committed(), 202);
    // The replay produces it again, with one more event.
    let replayed = [first[0].clone(), orphan, completed("ord_3", 102)];
    sink.publish(206, &replayed, &Default::default()).unwrap();
    let ids: Vec<String> = read_topic(&cluster, "order.completed")
        .into_iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(ids, ["ord_1", "ord_2", "ord_3"]);
}
