//! The materialised state of every view at one frontier.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use dataflows::model::{Rejection, Seq, Time, Ts};
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

#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every update at a time before this is applied, and none after.
    pub frontier: Time,
    pub products: HashMap<String, ProductRow>,
    pub stock: HashMap<String, StockLevel>,
    pub users: HashMap<String, UserRow>,
    pub users_by_email: HashMap<String, String>,
    pub carts: HashMap<String, CartRow>,
    pub orders: HashMap<String, OrderRow>,
    pub orders_by_user: HashMap<String, BTreeSet<(Ts, String)>>,
    pub payments: HashMap<String, PaymentRow>,
    pub shipments: HashMap<String, ShipmentRow>,
    /// Calls to the outside world the saga waits for, by effect id.
    pub effects: BTreeMap<String, EffectRow>,
    pub idempotency: HashMap<String, IdempotencyRow>,
    rejections: HashMap<Seq, Rejection>,
    rejection_order: VecDeque<(Ts, Seq)>,
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
        match row {
            Row::Product(row) => upsert(&mut self.products, row.product_id.clone(), row, insert),
            Row::Stock(row) => {
                let level = self.stock.entry(row.product_id.clone()).or_default();
                let value = if insert { row.quantity } else { 0 };
                match row.measure {
                    StockMeasure::OnHand => level.on_hand = value,
                    StockMeasure::Reserved => level.reserved = value,
                }
            }
            Row::User(row) => {
                let email = email_key(&row.email);
                if insert {
                    self.users_by_email.insert(email, row.user_id.clone());
                } else if self.users_by_email.get(&email) == Some(&row.user_id) {
                    self.users_by_email.remove(&email);
                }
                upsert(&mut self.users, row.user_id.clone(), row, insert);
            }
            Row::Cart(row) => upsert(&mut self.carts, row.cart_id.clone(), row, insert),
            Row::Order(row) => {
                let index = self.orders_by_user.entry(row.user_id.clone()).or_default();
                if insert {
                    index.insert((row.created_at, row.order_id.clone()));
                } else {
                    index.remove(&(row.created_at, row.order_id.clone()));
                }
                upsert(&mut self.orders, row.order_id.clone(), row, insert);
            }
            Row::Payment(row) => upsert(&mut self.payments, row.payment_id.clone(), row, insert),
            Row::Shipment(row) => upsert(&mut self.shipments, row.shipment_id.clone(), row, insert),
            Row::Effect(row) => {
                let id = row.effect_id().to_string();
                if insert {
                    self.effects.insert(id, row);
                } else if self.effects.get(&id) == Some(&row) {
                    self.effects.remove(&id);
                }
            }
            Row::Idempotency(row) => upsert(&mut self.idempotency, row.key.clone(), row, insert),
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
            self.rejections.remove(&seq);
        }
    }

    /// Every row of every view, as the oracle computes them (idempotency records aside).
    pub fn rows(&self) -> BTreeSet<Row> {
        let mut rows = BTreeSet::new();
        rows.extend(self.products.values().cloned().map(Row::Product));
        for (product_id, level) in &self.stock {
            for (measure, quantity) in [
                (StockMeasure::OnHand, level.on_hand),
                (StockMeasure::Reserved, level.reserved),
            ] {
                if quantity != 0 {
                    rows.insert(Row::Stock(StockRow {
                        product_id: product_id.clone(),
                        measure,
                        quantity,
                    }));
                }
            }
        }
        rows.extend(self.users.values().cloned().map(Row::User));
        rows.extend(self.carts.values().cloned().map(Row::Cart));
        rows.extend(self.orders.values().cloned().map(Row::Order));
        rows.extend(self.payments.values().cloned().map(Row::Payment));
        rows.extend(self.shipments.values().cloned().map(Row::Shipment));
        rows.extend(self.effects.values().cloned().map(Row::Effect));
        rows
    }
}

/// Insert replaces; a retraction removes the key only if it still holds that row, so
/// the order of a retraction and an insertion at the same time does not matter.
fn upsert<R: PartialEq>(map: &mut HashMap<String, R>, key: String, row: R, insert: bool) {
    if insert {
        map.insert(key, row);
    } else if map.get(&key) == Some(&row) {
        map.remove(&key);
    }
}
