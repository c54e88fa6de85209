//! Changefeeds of the read models: what each publication changed, for readers that
//! follow a view as it moves (`ViewStore::subscribe`), like Materialize's SUBSCRIBE.
//!
//! Every publication's row updates, consolidated, go to a broadcast channel of fixed
//! capacity: sending never waits, and a reader that falls a whole channel behind is told
//! so (`Lagged`) and starts again from a snapshot, so a slow reader neither slows the
//! dataflow nor holds more than the channel. The latest publications are also kept, up
//! to a bound, so that a reader that reconnects with the frontier it had reached
//! resumes without a gap or a repeat.

use std::collections::VecDeque;
use std::sync::Arc;

use dataflows::model::Time;
use dataflows::views::Row;
use tokio::sync::broadcast;

use crate::snapshot::{consolidate, Snapshot};

/// What one publication of the read models changed.
#[derive(Debug)]
pub struct Changes {
    /// The frontier before: a reader that had every update before `since` needs these.
    pub since: Time,
    /// The frontier after: these are every update before it.
    pub frontier: Time,
    /// Each row changed, with its net diff (+1 in, -1 out); none zero. A changed row is
    /// its old version out and its new version in.
    pub updates: Vec<(Row, isize)>,
}

/// Where a new reader starts.
pub enum Start {
    /// Every row of the views at `snapshot.frontier`.
    Snapshot(Arc<Snapshot>),
    /// The publications after the frontier the reader resumes from, in order.
    Resume(Vec<Arc<Changes>>),
}

/// A reader of the changefeed: where it starts, then every later publication.
pub struct Subscription {
    pub start: Start,
    /// The frontier the reader is at once it has taken `start` in.
    pub frontier: Time,
    /// Publications after `frontier`. `Lagged` means the reader fell behind and must
    /// start again.
    pub updates: broadcast::Receiver<Arc<Changes>>,
}

/// Publications a reader may fall behind by before it must start again, and how many
/// the store keeps for readers that reconnect.
pub const DEFAULT_CAPACITY: usize = 1024;
/// Most row updates kept for readers that reconnect, across the kept publications.
const KEPT_UPDATES: usize = 100_000;

pub(crate) struct ChangeLog {
    tx: broadcast::Sender<Arc<Changes>>,
    /// The latest publications that changed something, oldest first.
    recent: VecDeque<Arc<Changes>>,
    recent_updates: usize,
    /// From this frontier on, `recent` holds every change: None when it holds nothing
    /// reliable (nobody has followed the views for a while).
    covered_from: Option<Time>,
    capacity: usize,
    /// Publications still recorded with nobody subscribed, for readers that reconnect.
    grace: usize,
}

impl ChangeLog {
    pub(crate) fn new(capacity: usize) -> ChangeLog {
        let capacity = capacity.max(1);
        ChangeLog {
            tx: broadcast::channel(capacity).0,
            recent: VecDeque::new(),
            recent_updates: 0,
            covered_from: None,
            capacity,
            grace: 0,
        }
    }

    /// Publications a reader may fall behind by.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the next publication's changes are wanted: while anyone follows the
    /// views, and for a while after, so that a reader that drops and reconnects can
    /// resume. Otherwise nothing is collected, which costs the order path nothing.
    pub(crate) fn wanted(&mut self) -> bool {
        if self.tx.receiver_count() > 0 {
            self.grace = self.capacity;
            return true;
        }
        if self.grace > 0 {
            self.grace -= 1;
            return true;
        }
        self.recent.clear();
        self.recent_updates = 0;
        self.covered_from = None;
        false
    }

    /// Records and sends a publication's updates (all of them, across its times).
    pub(crate) fn publish(&mut self, since: Time, frontier: Time, mut updates: Vec<(Row, isize)>) {
        consolidate(&mut updates);
        self.covered_from.get_or_insert(since);
        if updates.is_empty() {
            return;
        }
        let changes = Arc::new(Changes {
            since,
            frontier,
            updates,
        });
        self.recent_updates += changes.updates.len();
        self.recent.push_back(Arc::clone(&changes));
        while self.recent.len() > self.capacity
            || (self.recent_updates > KEPT_UPDATES && self.recent.len() > 1)
        {
            let dropped = self.recent.pop_front().expect("not empty");
            self.recent_updates -= dropped.updates.len();
            self.covered_from = Some(dropped.frontier);
        }
        // Nobody listening is no error.
        let _ = self.tx.send(changes);
    }

    /// A reader from `snapshot` on, or from `resume_from` if every change since is kept.
    pub(crate) fn subscribe(
        &mut self,
        snapshot: Arc<Snapshot>,
        resume_from: Option<Time>,
    ) -> Subscription {
        let updates = self.tx.subscribe();
        let frontier = snapshot.frontier;
        // From this snapshot on every change is kept, for a while even if this reader
        // goes: it may be back, with this frontier or a later one.
        self.grace = self.capacity;
        self.covered_from.get_or_insert(frontier);
        let start = match resume_from.and_then(|from| self.since(from, frontier)) {
            Some(replay) => Start::Resume(replay),
            None => Start::Snapshot(snapshot),
        };
        Subscription {
            start,
            frontier,
            updates,
        }
    }

    /// The publications after `from`, if `from` is a frontier the views were published
    /// at, not after `now`, whose every change since is kept.
    fn since(&self, from: Time, now: Time) -> Option<Vec<Arc<Changes>>> {
        if from > now || self.covered_from.is_none_or(|covered| from < covered) {
            return None;
        }
        // A frontier strictly inside a publication was never one a reader was at.
        if self
            .recent
            .iter()
            .any(|changes| changes.since < from && from < changes.frontier)
        {
            return None;
        }
        Some(
            self.recent
                .iter()
                .filter(|changes| changes.since >= from)
                .cloned()
                .collect(),
        )
    }
}
