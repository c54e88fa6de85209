//! The readers of the views' changefeeds (`GET /api/v1/views/{name}/changes`), served
//! together. One task per changefeed (the read models', the metric views') takes each
//! publication once, finds the readers whose filter a changed row meets through an
//! index by filter, and renders each distinct filter's update once, shared by every
//! reader with that filter. A reader that follows one order is not woken by the others,
//! and a hundred readers of every order cost one rendering, not a hundred.
//!
//! Each reader holds a bounded queue of rendered updates. The task never waits on it:
//! a reader whose queue is full is let go and told it fell behind (it starts again from
//! a fresh snapshot), so a slow reader neither slows the others nor the dataflow, and
//! holds at most its queue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use dataflows::analytics::{Dim, Metric};
use dataflows::model::Time;
use dataflows::views::{MetricRow, Row};
use parking_lot::Mutex;
use queries::{Changes, Snapshot, Start, ViewStore};
use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot};

/// The views a client can follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Followed {
    Orders,
    Products,
    Stock,
    Payments,
    Shipments,
    /// Support tickets, each with its conversation (a ticket's chat).
    Tickets,
    /// A metric view (`orders_per_minute`, ...), at the metric views' frontiers.
    Metric(Metric),
}

impl Followed {
    const ALL: [(&'static str, Followed); 6] = [
        ("orders", Followed::Orders),
        ("products", Followed::Products),
        ("stock", Followed::Stock),
        ("payments", Followed::Payments),
        ("shipments", Followed::Shipments),
        ("tickets", Followed::Tickets),
    ];

    pub fn named(name: &str) -> Option<Followed> {
        let metric = || {
            (Metric::ALL.iter())
                .find(|metric| metric.name() == name)
                .map(|metric| Followed::Metric(*metric))
        };
        (Self::ALL.iter())
            .find(|(known, _)| *known == name)
            .map(|(_, view)| *view)
            .or_else(metric)
    }

    /// Every name a client can follow.
    pub fn names() -> Vec<&'static str> {
        let views = Self::ALL.iter().map(|(name, _)| *name);
        views
            .chain(Metric::ALL.iter().map(|metric| metric.name()))
            .collect()
    }

    /// The scope that lets a caller follow every user's rows; customers follow their
    /// own. `None`: anyone follows every row (the public catalog).
    pub fn scope(self) -> Option<&'static str> {
        match self {
            Followed::Products | Followed::Stock => None,
            Followed::Orders | Followed::Shipments => Some("orders:read"),
            Followed::Payments => Some("payment:read"),
            Followed::Tickets => Some("support:read"),
            Followed::Metric(_) => Some("analytics:read"),
        }
    }
}

/// Which rows of a view one reader follows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Filter {
    pub view: Followed,
    /// One row, by its id (an order's, a product's, ...).
    pub id: Option<String>,
    /// One user's rows (orders; payments and shipments by their order's user).
    pub user_id: Option<String>,
}

/// Where a changed row belongs: what a filter is matched against.
struct Place<'a> {
    view: Followed,
    id: &'a str,
    /// The user the row belongs to, for the views whose rows belong to users.
    owner: Option<&'a str>,
}

impl<'a> Place<'a> {
    /// `snapshot` finds the order a payment or a shipment belongs to.
    fn of(row: &'a Row, snapshot: &'a Snapshot) -> Option<Place<'a>> {
        let owner_of = |order_id: &str| -> Option<&'a str> {
            snapshot.orders.get(order_id).map(|order| &*order.user_id)
        };
        let (view, id, owner) = match row {
            Row::Order(order) => (Followed::Orders, &*order.order_id, Some(&*order.user_id)),
            Row::Product(product) => (Followed::Products, &*product.product_id, None),
            Row::Stock(stock) => (Followed::Stock, &*stock.product_id, None),
            Row::Payment(payment) => (
                Followed::Payments,
                &*payment.payment_id,
                owner_of(&payment.order_id),
            ),
            Row::Shipment(shipment) => (
                Followed::Shipments,
                &*shipment.shipment_id,
                owner_of(&shipment.order_id),
            ),
            Row::Ticket(ticket) => (
                Followed::Tickets,
                &*ticket.ticket_id,
                Some(&*ticket.user_id),
            ),
            Row::Metric(row) => (Followed::Metric(row.metric), &*row.id, None),
            _ => return None,
        };
        Some(Place { view, id, owner })
    }

    /// The filters this row meets, among the `kinds` of filter readers of its view use.
    fn filters(&self, kinds: &Kinds) -> impl Iterator<Item = Filter> + '_ {
        let id = || Some(self.id.to_string());
        let owner = || self.owner.map(str::to_string);
        let candidates = [
            (kinds.all > 0).then_some((None, None)),
            (kinds.by_id > 0).then(|| (id(), None)),
            (kinds.by_user > 0 && self.owner.is_some()).then(|| (None, owner())),
            (kinds.by_id_and_user > 0 && self.owner.is_some()).then(|| (id(), owner())),
        ];
        candidates
            .into_iter()
            .flatten()
            .map(|(id, user_id)| Filter {
                view: self.view,
                id,
                user_id,
            })
    }
}

impl Filter {
    fn meets(&self, place: &Place<'_>) -> bool {
        self.view == place.view
            && self.id.as_deref().is_none_or(|id| id == place.id)
            && (self.user_id.as_deref()).is_none_or(|user| Some(user) == place.owner)
    }

    /// Every row of the view this reader follows, at the snapshot's frontier.
    fn rows<'a>(&'a self, snapshot: &'a Snapshot) -> impl Iterator<Item = Row> + 'a {
        let one =
            |row: Option<Row>| -> Box<dyn Iterator<Item = Row> + 'a> { Box::new(row.into_iter()) };
        let rows: Box<dyn Iterator<Item = Row> + 'a> = match (self.view, self.id.as_deref()) {
            // One row by its id: looked up, not searched for.
            (Followed::Orders, Some(id)) => one(snapshot.orders.get_shared(id).map(Row::Order)),
            (Followed::Products, Some(id)) => {
                one(snapshot.products.get_shared(id).map(Row::Product))
            }
            (Followed::Payments, Some(id)) => {
                one(snapshot.payments.get_shared(id).map(Row::Payment))
            }
            (Followed::Shipments, Some(id)) => {
                one(snapshot.shipments.get_shared(id).map(Row::Shipment))
            }
            (Followed::Tickets, Some(id)) => one(snapshot.tickets.get_shared(id).map(Row::Ticket)),
            (Followed::Metric(metric), Some(id)) => {
                one(snapshot.metric(metric).get_shared(id).map(Row::Metric))
            }
            (Followed::Orders, None) => {
                Box::new(snapshot.orders.shared_rows().cloned().map(Row::Order))
            }
            (Followed::Products, None) => {
                Box::new(snapshot.products.shared_rows().cloned().map(Row::Product))
            }
            (Followed::Stock, _) => Box::new(snapshot.stock_rows().map(Row::Stock)),
            (Followed::Payments, None) => {
                Box::new(snapshot.payments.shared_rows().cloned().map(Row::Payment))
            }
            (Followed::Shipments, None) => {
                Box::new(snapshot.shipments.shared_rows().cloned().map(Row::Shipment))
            }
            (Followed::Tickets, None) => {
                Box::new(snapshot.tickets.shared_rows().cloned().map(Row::Ticket))
            }
            (Followed::Metric(metric), None) => Box::new(
                snapshot
                    .metric(metric)
                    .shared_rows()
                    .cloned()
                    .map(Row::Metric),
            ),
        };
        rows.filter(|row| Place::of(row, snapshot).is_some_and(|place| self.meets(&place)))
    }

    /// The snapshot event: every row of the view this reader follows at `snapshot`'s
    /// frontier. Rendering a whole view takes a while: not for an async worker.
    pub fn snapshot(&self, snapshot: &Snapshot) -> Frame {
        let mut data = format!("{{\"frontier\":{},\"rows\":[", snapshot.frontier).into_bytes();
        for (n, row) in self.rows(snapshot).enumerate() {
            if n > 0 {
                data.push(b',');
            }
            write_row(&mut data, &row);
        }
        data.extend_from_slice(b"]}");
        Frame::new("snapshot", snapshot.frontier, data)
    }

    /// The update event of the publication's rows this reader follows, if any.
    pub fn update(&self, changes: &Changes, snapshot: &Snapshot) -> Option<Frame> {
        let rows: Vec<usize> = (changes.updates.iter().enumerate())
            .filter(|(_, (row, _))| {
                Place::of(row, snapshot).is_some_and(|place| self.meets(&place))
            })
            .map(|(at, _)| at)
            .collect();
        let mut rendered = vec![None; changes.updates.len()];
        (!rows.is_empty()).then(|| Frame::update(changes, &rows, &mut rendered))
    }
}

/// Writes a row as the changefeed sends it: the view's row as JSON.
fn write_row(out: &mut Vec<u8>, row: &Row) {
    let written = match row {
        Row::Order(order) => serde_json::to_writer(&mut *out, &**order),
        Row::Product(product) => serde_json::to_writer(&mut *out, &**product),
        Row::Stock(stock) => serde_json::to_writer(&mut *out, &**stock),
        Row::Payment(payment) => serde_json::to_writer(&mut *out, &**payment),
        Row::Shipment(shipment) => serde_json::to_writer(&mut *out, &**shipment),
        Row::Ticket(ticket) => serde_json::to_writer(&mut *out, &**ticket),
        Row::Metric(row) => serde_json::to_writer(&mut *out, &metric_json(row)),
        _ => serde_json::to_writer(&mut *out, &Value::Null),
    };
    // The views' rows serialise (string keys only), and a Vec takes every write.
    debug_assert!(written.is_ok(), "{written:?}");
}

/// A metric row as its SQL table has it: `{id, key columns..., measures..., derived...}`;
/// minutes in Unix milliseconds, days as `YYYY-MM-DD`.
fn metric_json(row: &MetricRow) -> Value {
    let table = row.metric.table();
    let mut object = serde_json::Map::new();
    object.insert("id".into(), json!(row.id));
    for ((name, _), dim) in table.keys.iter().zip(row.key.iter()) {
        let value = match dim {
            Dim::Minute(minute) => json!(minute),
            Dim::Day(day) => {
                // Days from the common era's first to the Unix epoch's.
                let date = i32::try_from(*day + 719_163)
                    .ok()
                    .and_then(chrono::NaiveDate::from_num_days_from_ce_opt);
                date.map_or(json!(day), |date| json!(date.to_string()))
            }
            Dim::Text(text) => json!(text),
            Dim::Int(int) => json!(int),
        };
        object.insert((*name).into(), value);
    }
    for (name, measure) in table.measures.iter().zip(row.measures.iter()) {
        object.insert((*name).into(), json!(measure));
    }
    for (name, derived) in row.derived() {
        let derived = derived.filter(|value| value.is_finite());
        object.insert(name.into(), json!(derived));
    }
    Value::Object(object)
}

/// One event of a changefeed, rendered: its kind, its id (the frontier it brings the
/// reader to) and its JSON data.
#[derive(Debug)]
pub struct Frame {
    pub kind: &'static str,
    pub frontier: Time,
    pub data: String,
}

impl Frame {
    fn new(kind: &'static str, frontier: Time, data: Vec<u8>) -> Frame {
        // serde_json writes UTF-8, and so does everything else written here.
        let data = String::from_utf8(data)
            .unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned());
        Frame {
            kind,
            frontier,
            data,
        }
    }

    /// `{"frontier", "changes": [{"row", "diff"}...]}` of the publication's rows at
    /// `rows`, each row rendered once into `rendered` for every frame that has it.
    fn update(changes: &Changes, rows: &[usize], rendered: &mut [Option<Vec<u8>>]) -> Frame {
        let mut data = format!("{{\"frontier\":{},\"changes\":[", changes.frontier).into_bytes();
        for (n, &at) in rows.iter().enumerate() {
            let (row, diff) = &changes.updates[at];
            let row = rendered[at].get_or_insert_with(|| {
                let mut json = Vec::new();
                write_row(&mut json, row);
                json
            });
            if n > 0 {
                data.push(b',');
            }
            data.extend_from_slice(b"{\"row\":");
            data.extend_from_slice(row);
            data.extend_from_slice(format!(",\"diff\":{diff}}}").as_bytes());
        }
        data.extend_from_slice(b"]}");
        Frame::new("update", changes.frontier, data)
    }
}

/// A reader's place in its changefeed: where it starts, then every later update it
/// follows, rendered.
pub struct Following {
    pub start: Start,
    /// The frontier the reader is at once it has taken `start` in.
    pub frontier: Time,
    /// Updates after `frontier`. It ends when the reader fell behind (`lagged`) or the
    /// server is stopping.
    pub frames: mpsc::Receiver<Arc<Frame>>,
    lagged: Arc<AtomicBool>,
    _leave: Leave,
}

impl Following {
    /// Whether `frames` ended because the reader fell behind.
    pub fn lagged(&self) -> bool {
        self.lagged.load(Ordering::Acquire)
    }
}

/// Takes the reader out of the index when it goes.
struct Leave {
    reader: u64,
    commands: mpsc::UnboundedSender<Command>,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Leave(self.reader));
    }
}

enum Command {
    Follow {
        filter: Filter,
        resume_from: Option<Time>,
        reply: oneshot::Sender<Following>,
    },
    Leave(u64),
}

/// The changefeeds' readers: one task for the read models, one for the metric views,
/// each started by its first reader.
#[derive(Default)]
pub struct Changefeeds {
    views: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    metrics: Mutex<Option<mpsc::UnboundedSender<Command>>>,
    /// Readers served, of both.
    readers: Arc<AtomicUsize>,
}

impl Changefeeds {
    /// How many readers the changefeeds serve now.
    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }

    /// Follows the rows `filter` picks, from `resume_from` if every change since is
    /// kept, or from a snapshot. `None` once the server is stopping.
    pub async fn follow(
        &self,
        views: &Arc<ViewStore>,
        closing: impl std::future::Future<Output = ()> + Send + 'static,
        filter: Filter,
        resume_from: Option<Time>,
    ) -> Option<Following> {
        let metrics = matches!(filter.view, Followed::Metric(_));
        let (reply, following) = oneshot::channel();
        let command = Command::Follow {
            filter,
            resume_from,
            reply,
        };
        {
            let mut hub = if metrics {
                self.metrics.lock()
            } else {
                self.views.lock()
            };
            let unsent = match hub.as_ref() {
                // An error: the task ended (the server is stopping); another starts.
                Some(commands) => commands.send(command).err().map(|unsent| unsent.0),
                None => Some(command),
            };
            if let Some(command) = unsent {
                let (commands, received) = mpsc::unbounded_channel();
                let readers = Readers {
                    views: Arc::clone(views),
                    metrics,
                    updates: None,
                    readers: HashMap::new(),
                    index: HashMap::new(),
                    kinds: HashMap::new(),
                    next_reader: 0,
                    commands: commands.clone(),
                    served: Arc::clone(&self.readers),
                };
                tokio::spawn(readers.serve(received, closing));
                let _ = commands.send(command);
                *hub = Some(commands);
            }
        }
        following.await.ok()
    }
}

/// One reader, as the task serving its changefeed knows it.
struct Reader {
    filter: Filter,
    /// The frontier it starts after: earlier publications it has already.
    from: Time,
    frames: mpsc::Sender<Arc<Frame>>,
    lagged: Arc<AtomicBool>,
}

/// How many readers of a view follow it by each kind of filter: which filters a changed
/// row can meet.
#[derive(Default)]
struct Kinds {
    all: usize,
    by_id: usize,
    by_user: usize,
    by_id_and_user: usize,
}

impl Kinds {
    fn count(&mut self, filter: &Filter) -> &mut usize {
        match (&filter.id, &filter.user_id) {
            (None, None) => &mut self.all,
            (Some(_), None) => &mut self.by_id,
            (None, Some(_)) => &mut self.by_user,
            (Some(_), Some(_)) => &mut self.by_id_and_user,
        }
    }
}

/// The task serving one changefeed's readers.
struct Readers {
    views: Arc<ViewStore>,
    /// The metric views' changefeed, or the read models'.
    metrics: bool,
    /// The store's publications, while anyone reads them.
    updates: Option<broadcast::Receiver<Arc<Changes>>>,
    readers: HashMap<u64, Reader>,
    /// The readers by their filter.
    index: HashMap<Filter, Vec<u64>>,
    kinds: HashMap<Followed, Kinds>,
    next_reader: u64,
    /// For readers to say they go.
    commands: mpsc::UnboundedSender<Command>,
    /// `readers`' length, added to the other changefeed's.
    served: Arc<AtomicUsize>,
}

impl Readers {
    async fn serve(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        closing: impl std::future::Future<Output = ()>,
    ) {
        let mut closing = std::pin::pin!(closing);
        loop {
            let published = async {
                match self.updates.as_mut() {
                    Some(updates) => updates.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = &mut closing => break,
                command = commands.recv() => match command {
                    Some(Command::Follow { filter, resume_from, reply }) => {
                        self.follow(filter, resume_from, reply);
                    }
                    Some(Command::Leave(reader)) => self.leave(reader),
                    None => break,
                },
                published = published => match published {
                    Ok(changes) => self.publish(&changes),
                    // Every reader misses publications: each starts again.
                    Err(RecvError::Lagged(_)) => {
                        let readers: Vec<u64> = self.readers.keys().copied().collect();
                        for reader in readers {
                            self.fell_behind(reader);
                        }
                    }
                    // The store is gone: the server is stopping.
                    Err(RecvError::Closed) => break,
                },
            }
        }
        self.served.fetch_sub(self.readers.len(), Ordering::Relaxed);
    }

    /// Lets go of a reader that missed updates: it starts again from a snapshot.
    fn fell_behind(&mut self, reader: u64) {
        if let Some(state) = self.readers.get(&reader) {
            state.lagged.store(true, Ordering::Release);
            metrics::counter!("tidemark_changefeed_readers_behind_total").increment(1);
        }
        self.leave(reader);
    }

    fn follow(
        &mut self,
        filter: Filter,
        resume_from: Option<Time>,
        reply: oneshot::Sender<Following>,
    ) {
        let subscription = if self.metrics {
            self.views.subscribe_metrics(resume_from)
        } else {
            self.views.subscribe(resume_from)
        };
        // Taken now, while any publication not yet handed on is still to come through
        // the receiver held (it is skipped for this reader: it has it).
        self.updates.get_or_insert(subscription.updates);
        let (frames, received) = mpsc::channel(self.views.changefeed_capacity().max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let reader = self.next_reader;
        self.next_reader += 1;
        let following = Following {
            start: subscription.start,
            frontier: subscription.frontier,
            frames: received,
            lagged: Arc::clone(&lagged),
            _leave: Leave {
                reader,
                commands: self.commands.clone(),
            },
        };
        if reply.send(following).is_err() {
            return;
        }
        *self.kinds.entry(filter.view).or_default().count(&filter) += 1;
        self.index.entry(filter.clone()).or_default().push(reader);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.readers.insert(
            reader,
            Reader {
                filter,
                from: subscription.frontier,
                frames,
                lagged,
            },
        );
    }

    fn leave(&mut self, reader: u64) {
        let Some(Reader { filter, .. }) = self.readers.remove(&reader) else {
            return;
        };
        self.served.fetch_sub(1, Ordering::Relaxed);
        if let Some(kinds) = self.kinds.get_mut(&filter.view) {
            *kinds.count(&filter) -= 1;
        }
        if let Some(readers) = self.index.get_mut(&filter) {
            readers.retain(|other| *other != reader);
            if readers.is_empty() {
                self.index.remove(&filter);
            }
        }
        if self.readers.is_empty() {
            // Nobody reads: the store need not collect changes (after a while).
            self.updates = None;
        }
    }

    /// Hands the publication's updates to the readers that follow them: each filter's
    /// update rendered once.
    fn publish(&mut self, changes: &Changes) {
        if self.readers.is_empty() {
            return;
        }
        let snapshot = self.views.read();
        let mut met: HashMap<Filter, Vec<usize>> = HashMap::new();
        for (at, (row, _)) in changes.updates.iter().enumerate() {
            let Some(place) = Place::of(row, &snapshot) else {
                continue;
            };
            let Some(kinds) = self.kinds.get(&place.view) else {
                continue;
            };
            for filter in place.filters(kinds) {
                if self.index.contains_key(&filter) {
                    met.entry(filter).or_default().push(at);
                }
            }
        }
        let mut rendered = vec![None; changes.updates.len()];
        let (mut gone, mut behind) = (Vec::new(), Vec::new());
        for (filter, rows) in met {
            let frame = Arc::new(Frame::update(changes, &rows, &mut rendered));
            for reader in &self.index[&filter] {
                let state = &self.readers[reader];
                if changes.frontier <= state.from {
                    continue;
                }
                match state.frames.try_send(Arc::clone(&frame)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => behind.push(*reader),
                    Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*reader),
                }
            }
        }
        for reader in behind {
            self.fell_behind(reader);
        }
        for reader in gone {
            self.leave(reader);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index finds a reader exactly when its filter meets the row.
    #[test]
    fn a_row_meets_the_filters_it_is_indexed_under() {
        let kinds = Kinds {
            all: 1,
            by_id: 1,
            by_user: 1,
            by_id_and_user: 1,
        };
        let ids = [None, Some("ord_a"), Some("ord_b")];
        let users = [None, Some("usr_u"), Some("usr_v")];
        for view in [Followed::Orders, Followed::Payments] {
            for owner in [None, Some("usr_u")] {
                let place = Place {
                    view: Followed::Orders,
                    id: "ord_a",
                    owner,
                };
                let indexed: Vec<Filter> = place.filters(&kinds).collect();
                for id in ids {
                    for user in users {
                        let filter = Filter {
                            view,
                            id: id.map(str::to_string),
                            user_id: user.map(str::to_string),
                        };
                        assert_eq!(
                            filter.meets(&place),
                            indexed.contains(&filter),
                            "{filter:?} and {owner:?}"
                        );
                    }
                }
            }
        }
        // Only the kinds someone follows by are looked up.
        let place = Place {
            view: Followed::Orders,
            id: "ord_a",
            owner: Some("usr_u"),
        };
        let by_id = Kinds {
            by_id: 1,
            ..Kinds::default()
        };
        let indexed: Vec<Filter> = place.filters(&by_id).collect();
        assert_eq!(indexed.len(), 1);
        assert_eq!(indexed[0].id.as_deref(), Some("ord_a"));
    }
}
