//! A dataflow engine and its views for tests: append batches of commands at chosen log
//! times and read the views once they are published. Enabled by the `testkit` feature.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dataflows::model::{settled_frontier, Command, Envelope, IdempotencyKey, Seq, Ts};
use dataflows::views::Row;
use dataflows::{Batch, Engine, Features};

use crate::ViewStore;

pub struct Harness {
    pub store: Arc<ViewStore>,
    engine: Engine,
    /// The last log position and time appended.
    pub seq: Seq,
    pub ts: Ts,
}

impl Harness {
    pub fn new(workers: usize) -> Harness {
        Self::with_features(workers, Features::default())
    }

    /// A harness with the optional parts (and the metrics' step) `features` asks for.
    pub fn with_features(workers: usize, features: Features) -> Harness {
        let store = ViewStore::recording(workers);
        let engine = Engine::start_with(workers, store.clone(), features).expect("engine starts");
        Harness {
            store,
            engine,
            seq: 0,
            ts: 1_700_000_000_000,
        }
    }

    /// Appends one batch and waits until its effects are published.
    pub fn batch(&mut self, commands: Vec<Command>) -> Vec<Seq> {
        self.append(1, commands.into_iter().map(Envelope::new).collect())
    }

    /// Appends commands carrying idempotency keys, `jump_ms` after the previous batch.
    pub fn keyed_batch(&mut self, jump_ms: Ts, commands: Vec<(&str, Command)>) -> Vec<Seq> {
        let envelopes = commands
            .into_iter()
            .map(|(key, command)| {
                let fingerprint = format!("{command:?}");
                Envelope {
                    idempotency: Some(IdempotencyKey {
                        key: key.into(),
                        fingerprint: fingerprint.into(),
                    }),
                    command,
                    request_id: None,
                }
            })
            .collect();
        self.append(jump_ms, envelopes)
    }

    /// One log batch, `jump_ms` after the previous one; waits for its effects, on the
    /// metric views too.
    pub fn append(&mut self, jump_ms: Ts, envelopes: Vec<Envelope>) -> Vec<Seq> {
        let seqs = self.append_views_only(jump_ms, envelopes);
        self.store
            .wait_for_metrics_blocking(settled_frontier(self.ts), Duration::from_secs(30))
            .expect("metric views catch up");
        seqs
    }

    /// One log batch, `jump_ms` after the previous one; waits for its effects on the
    /// read models only (the metrics may still be behind).
    pub fn append_views_only(&mut self, jump_ms: Ts, envelopes: Vec<Envelope>) -> Vec<Seq> {
        self.ts += jump_ms;
        let first = self.seq + 1;
        let records: Vec<(Seq, Envelope)> = envelopes
            .into_iter()
            .map(|envelope| {
                self.seq += 1;
                (self.seq, envelope)
            })
            .collect();
        self.engine
            .feed(Batch {
                ts: self.ts,
                records,
            })
            .expect("feed");
        self.store
            .wait_for_blocking(settled_frontier(self.ts), Duration::from_secs(30))
            .expect("views catch up");
        // Every test's dataflow output is checked for consistency on the way.
        assert_eq!(
            self.store.read().unmatched_retractions(),
            0,
            "the views were told to retract rows they did not hold"
        );
        (first..=self.seq).collect()
    }

    /// Every row of every view, the metric views included, at one frontier.
    pub fn rows(&self) -> BTreeSet<Row> {
        self.store.read_consistent().rows()
    }
}
