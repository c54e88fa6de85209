//! The materialised state of every view at one frontier.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::sync::Arc;

use dataflows::model::{Rejection, Seq, Str, Time, Ts};
use dataflows::sharded::ShardedSet;
use dataflows::users::email_key;
use dataflows::views::*;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// How long refusals stay readable after their command (log milliseconds).
const REJECTION_RETENTION_MS: Ts = 10 * 60 * 1000;

/// One view: rows by id. The rows are shared with the dataflow that maintains them,
/// so a row is held in memory once.
#[derive(Debug)]
pub struct Rows<T> {
    map: ShardedSet<ById>,
    kind: PhantomData<fn() -> T>,
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows {
            map: ShardedSet::default(),
            kind: PhantomData,
        }
    }
}

impl<T: RowKind> Rows<T> {
    pub fn get(&self, id: &str) -> Option<&T> {
        self.map.get(id).and_then(|row| T::of(&row.0))
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.map.contains(id)
    }

    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.map.iter().filter_map(|row| T::of(&row.0))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Insert replaces; a retraction removes the id only if it still holds that row, so
    /// the order of a retraction and an insertion at one time does not matter.
    fn upsert(&mut self, row: Row, insert: bool) {
        let row = ById(row);
        if insert {
            self.map.replace(row);
        } else if self.map.get(row.id()).is_some_and(|held| held.0 == row.0) {
            self.map.remove(row.id());
        }
    }

    fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        self.map.iter().map(|row| row.0.clone())
    }
}

impl<T: RowKind> std::ops::Index<&str> for Rows<T> {
    type Output = T;

    /// Like `HashMap`'s: panics when the id has no row.
    fn index(&self, id: &str) -> &T {
        self.get(id).unwrap_or_else(|| panic!("no row {id:?}"))
    }
}

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every update at a time before this is applied, and none after.
    pub frontier: Time,
    pub products: Rows<ProductRow>,
    pub stock: HashMap<Str, StockLevel>,
    pub users: Rows<UserRow>,
    pub users_by_email: HashMap<Str, Str>,
    pub carts: Rows<CartRow>,
    pub orders: Rows<OrderRow>,
    pub orders_by_user: HashMap<Str, BTreeSet<(Ts, Str)>>,
    pub payments: Rows<PaymentRow>,
    pub shipments: Rows<ShipmentRow>,
    /// Calls to the outside world the saga waits for, by effect id.
    pub effects: Rows<EffectRow>,
    pub idempotency: Rows<IdempotencyRow>,
    pub reservations: Rows<ReservationRow>,
    rejections: HashMap<Seq, Rejection>,
    rejection_order: VecDeque<(Ts, Seq)>,
    /// Commands that first used an idempotency key: their refusals are kept as long as
    /// the key is, so a retried request gets the same answer.
    keyed_seqs: HashSet<Seq>,
}

impl Snapshot {
    pub fn stock_of(&self, product_id: &str) -> StockLevel {
        self.stock.get(product_id).copied().unwrap_or_default()
    }

    /// The refusal of the command at `seq`, if the dataflow refused it.
    pub fn rejection(&self, seq: Seq) -> Option<&Rejection> {
        self.rejections.get(&seq)
    }

    pub fn user_by_email(&self, email: &str) -> Option<&UserRow> {
        self.users_by_email
            .get(&email_key(email))
            .and_then(|id| self.users.get(id))
    }

    pub(crate) fn apply(&mut self, row: Row, diff: isize) {
        let insert = diff > 0;
        match &row {
            Row::Product(_) => self.products.upsert(row, insert),
            Row::Stock(stock) => {
                let level = self.stock.entry(stock.product_id.clone()).or_default();
                let value = if insert { stock.quantity } else { 0 };
                match stock.measure {
                    StockMeasure::OnHand => level.on_hand = value,
                    StockMeasure::Reserved => level.reserved = value,
                }
            }
            Row::User(user) => {
                let email = email_key(&user.email);
                if insert {
                    self.users_by_email.insert(email, user.user_id.clone());
                } else if self.users_by_email.get(&email) == Some(&user.user_id) {
                    self.users_by_email.remove(&email);
                }
                self.users.upsert(row, insert);
            }
            Row::Cart(_) => self.carts.upsert(row, insert),
            Row::Order(order) => {
                let index = self
                    .orders_by_user
                    .entry(order.user_id.clone())
                    .or_default();
                let entry = (order.created_at, order.order_id.clone());
                if insert {
                    index.insert(entry);
                } else {
                    index.remove(&entry);
                }
                self.orders.upsert(row, insert);
            }
            Row::Payment(_) => self.payments.upsert(row, insert),
            Row::Shipment(_) => self.shipments.upsert(row, insert),
            Row::Effect(_) => self.effects.upsert(row, insert),
            Row::Idempotency(record) => {
                if insert {
                    self.keyed_seqs.insert(record.first_seq);
                } else if self.keyed_seqs.remove(&record.first_seq) {
                    self.rejections.remove(&record.first_seq);
                }
                self.idempotency.upsert(row, insert)
            }
            Row::Reservation(_) => self.reservations.upsert(row, insert),
        }
    }

    pub(crate) fn record_rejection(&mut self, rejection: Rejection) {
        let newest = rejection.ts;
        self.rejection_order
            .push_back((rejection.ts, rejection.seq));
        self.rejections.insert(rejection.seq, rejection);
        while let Some((ts, seq)) = self.rejection_order.front().copied() {
            if ts + REJECTION_RETENTION_MS >= newest {
                break;
            }
            self.rejection_order.pop_front();
            if !self.keyed_seqs.contains(&seq) {
                self.rejections.remove(&seq);
            }
        }
    }

    /// Every row of every view, as the oracle computes them (idempotency records aside).
    pub fn rows(&self) -> BTreeSet<Row> {
        let mut rows = BTreeSet::new();
        rows.extend(self.products.rows());
        for (product_id, level) in &self.stock {
            for (measure, quantity) in [
                (StockMeasure::OnHand, level.on_hand),
                (StockMeasure::Reserved, level.reserved),
            ] {
                if quantity != 0 {
                    rows.insert(Row::Stock(Arc::new(StockRow {
                        product_id: product_id.clone(),
                        measure,
                        quantity,
                    })));
                }
            }
        }
        rows.extend(self.users.rows());
        rows.extend(self.carts.rows());
        rows.extend(self.orders.rows());
        rows.extend(self.payments.rows());
        rows.extend(self.shipments.rows());
        rows.extend(self.effects.rows());
        rows.extend(self.reservations.rows());
        rows
    }
}
