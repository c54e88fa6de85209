//! The materialised state of every view at one frontier.
//!
//! Every table and index is a persistent B-tree (`imbl::OrdMap`): cloning a snapshot
//! costs one reference count per table, and an update copies only the path from the root
//! to its row (nodes of 16 entries) while any older snapshot a reader still holds keeps
//! the nodes it shares. A published snapshot is therefore never mutated: readers hold it
//! for as long as they like, and the publisher builds the next one beside it.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;

use dataflows::analytics::{Dim, TOP_PRODUCTS};
use dataflows::model::{Rejection, Seq, Str, Time, Ts};
use dataflows::users::email_key;
use dataflows::views::*;
use imbl::{OrdMap, OrdSet, Vector};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockLevel {
    pub fn available(&self) -> i64 {
        dataflows::catalog::available(self.on_hand, self.reserved)
    }
}

/// How long refusals stay readable after their command (log milliseconds).
const REJECTION_RETENTION_MS: Ts = 10 * 60 * 1000;

/// One view: rows by id, in id order. The rows are shared with the dataflow that
/// maintains them, so a row is held in memory once.
#[derive(Debug)]
pub struct Rows<T> {
    map: OrdMap<Str, Arc<T>>,
}

impl<T> Clone for Rows<T> {
    fn clone(&self) -> Self {
        Rows {
            map: self.map.clone(),
        }
    }
}

impl<T> Default for Rows<T> {
    fn default() -> Self {
        Rows { map: OrdMap::new() }
    }
}

impl<T> Rows<T> {
    pub fn get(&self, id: &str) -> Option<&T> {
        self.map.get(id).map(|row| &**row)
    }

    /// The row under `id` as the views share it (no copy).
    pub fn get_shared(&self, id: &str) -> Option<Arc<T>> {
        self.map.get(id).cloned()
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    /// Every row, in id order.
    pub fn values(&self) -> impl DoubleEndedIterator<Item = &T> {
        self.map.values().map(|row| &**row)
    }

    /// The rows whose id sorts after `cursor`, in id order: a page starts in O(log n).
    pub fn after<'a>(&'a self, cursor: &'a str) -> impl Iterator<Item = &'a T> + 'a {
        self.map
            .range::<_, str>((Bound::Excluded(cursor), Bound::Unbounded))
            .map(|(_, row)| &**row)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Puts `row` under `id`; returns the row it replaces.
    fn replace(&mut self, id: &Str, row: &Arc<T>) -> Option<Arc<T>> {
        self.map.insert(id.clone(), row.clone())
    }

    /// Removes `id` if it still holds `row`; returns whether it did.
    fn retract(&mut self, id: &str, row: &Arc<T>) -> bool
    where
        T: PartialEq,
    {
        if self.map.get(id).is_some_and(|held| held == row) {
            self.map.remove(id);
            true
        } else {
            false
        }
    }

    /// The rows as the views share them (no copy).
    pub fn shared_rows(&self) -> impl Iterator<Item = &Arc<T>> {
        self.map.values()
    }
}

impl<T> std::ops::Index<&str> for Rows<T> {
    type Output = T;

    /// Like `HashMap`'s: panics when the id has no row.
    fn index(&self, id: &str) -> &T {
        self.get(id).unwrap_or_else(|| panic!("no row {id:?}"))
    }
}

/// A user's orders, newest first: `(user, created_at, order)` in one ordered set, so a
/// page is a range scan.
pub type OrdersByUser = OrdSet<(Str, Ts, Str)>;

/// Where a page of a user's orders starts: the position of the last order of the page
/// before (exclusive), or the newest order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderCursor {
    pub created_at: Ts,
    pub order_id: Str,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every update at a time before this is applied, and none after; the metric views
    /// excepted, which are at `ViewStore::metrics_frontier` (never past this).
    pub frontier: Time,
    pub products: Rows<ProductRow>,
    products_by_sku: OrdMap<Str, Str>,
    stock: OrdMap<Str, StockLevel>,
    pub users: Rows<UserRow>,
    users_by_email: OrdMap<Str, Str>,
    pub carts: Rows<CartRow>,
    pub orders: Rows<OrderRow>,
    orders_by_user: OrdersByUser,
    pub payments: Rows<PaymentRow>,
    pub shipments: Rows<ShipmentRow>,
    /// Calls to the outside world the saga waits for, by effect id.
    pub effects: Rows<EffectRow>,
    pub idempotency: Rows<IdempotencyRow>,
    pub reservations: Rows<ReservationRow>,
    pub reports: Rows<ReportRow>,
    /// Reports waiting for the report executor, oldest first: `(requested_at, id)`.
    reports_queued: OrdSet<(Ts, Str)>,
    pub report_schedules: Rows<ReportScheduleRow>,
    pub api_keys: Rows<ApiKeyRow>,
    /// Key ids by the digest of their key: what a request's key is looked up by.
    api_keys_by_hash: OrdMap<Str, Str>,
    /// The authentication log: every sign-in attempt, by attempt id.
    pub sign_ins: Rows<SignInRow>,
    /// Each account's attempts in time order: `(user, at, attempt)`.
    sign_ins_by_user: OrdSet<(Str, Ts, Str)>,
    /// Revoked access tokens, by token id (`jti`).
    pub revoked_tokens: Rows<RevokedTokenRow>,
    /// OAuth sessions, by session id (an access token's `sid`).
    pub sessions: Rows<SessionRow>,
    /// Each user's sessions: `(user, session)`.
    sessions_by_user: OrdSet<(Str, Str)>,
    /// Deleted users, whose personal data readers erase (`is_erased`).
    pub erased_users: Rows<ErasedUserRow>,
    /// The keys access tokens are signed with, published by every server, by `kid`.
    pub signing_keys: Rows<SigningKeyRow>,
    /// The dashboards saved through the API, by id (the built-in ones are not rows).
    pub dashboards: Rows<DashboardRow>,
    /// Each user's loyalty points and tier, by user id.
    pub loyalty: Rows<LoyaltyRow>,
    /// Support tickets, by id.
    pub tickets: Rows<TicketRow>,
    /// Each customer's tickets: `(user, ticket)`.
    tickets_by_user: OrdSet<(Str, Str)>,
    /// Saved cards, by method id.
    pub payment_methods: Rows<PaymentMethodRow>,
    /// Each user's saved cards: `(user, method)`.
    payment_methods_by_user: OrdSet<(Str, Str)>,
    /// The metric views, by `Metric::index`.
    metrics: [Rows<MetricRow>; Metric::COUNT],
    /// Units in paid orders per product, summed over `product_sales_daily`, and the same
    /// as a ranking (most units first, then by id): `top_products` is its first rows.
    product_units: OrdMap<Str, i64>,
    product_ranking: OrdSet<(std::cmp::Reverse<i64>, Str)>,
    /// The log times of the last change to the catalog (a product or its stock) and to
    /// the stock forecast shown with products: `catalog_version`.
    catalog_changed_at: Time,
    forecast_changed_at: Time,
    rejections: OrdMap<Seq, Arc<Rejection>>,
    rejection_order: Vector<(Ts, Seq)>,
    /// Commands that first used an idempotency key: their refusals are kept as long as
    /// the key is, so a retried request gets the same answer.
    keyed_seqs: OrdSet<Seq>,
    /// Retractions of a row its view did not hold: none, while the dataflow's updates
    /// are consistent (each row in at most once, and out only once it is in).
    unmatched_retractions: u64,
}

impl Snapshot {
    /// A user's loyalty tier: standard until their points say otherwise.
    pub fn tier_of(&self, user_id: &str) -> dataflows::users::loyalty::Tier {
        self.loyalty
            .get(user_id)
            .map_or(Default::default(), |row| row.tier)
    }

    /// This snapshot with the metric views of `other`.
    pub(crate) fn with_metrics_of(mut self, other: &Snapshot) -> Snapshot {
        self.metrics.clone_from(&other.metrics);
        self.product_units.clone_from(&other.product_units);
        self.product_ranking.clone_from(&other.product_ranking);
        self.forecast_changed_at = other.forecast_changed_at;
        self
    }

    /// What the catalog's answers (products with their stock and forecast, stock
    /// levels) are read from, as log times: equal versions, equal answers. What caches
    /// those answers keeps them with it.
    pub fn catalog_version(&self) -> (Time, Time) {
        (self.catalog_changed_at, self.forecast_changed_at)
    }

    /// The rows of one metric view, in key order.
    pub fn metric(&self, metric: Metric) -> &Rows<MetricRow> {
        &self.metrics[metric.index()]
    }

    /// Reports waiting for the report executor, oldest first.
    pub fn queued_reports(&self) -> impl Iterator<Item = &ReportRow> {
        self.reports_queued
            .iter()
            .filter_map(|(_, id)| self.reports.get(id))
    }

    /// The stock view's rows: each product's units on hand and units reserved, as the
    /// dataflow counts them (a count of zero is no row).
    pub fn stock_rows(&self) -> impl Iterator<Item = Arc<StockRow>> + '_ {
        self.stock.iter().flat_map(|(product_id, level)| {
            [
                (StockMeasure::OnHand, level.on_hand),
                (StockMeasure::Reserved, level.reserved),
            ]
            .into_iter()
            .filter(|(_, quantity)| *quantity != 0)
            .map(|(measure, quantity)| {
                Arc::new(StockRow {
                    product_id: product_id.clone(),
                    measure,
                    quantity,
                })
            })
        })
    }

    pub fn stock_of(&self, product_id: &str) -> StockLevel {
        self.stock.get(product_id).copied().unwrap_or_default()
    }

    /// The refusal of the command at `seq`, if the dataflow refused it.
    pub fn rejection(&self, seq: Seq) -> Option<&Rejection> {
        self.rejections.get(&seq).map(|rejection| &**rejection)
    }

    /// The API key whose SHA-256 digest (hex) is `key_hash`, live or not.
    pub fn api_key_by_hash(&self, key_hash: &str) -> Option<&ApiKeyRow> {
        self.api_keys_by_hash
            .get(key_hash)
            .and_then(|id| self.api_keys.get(id))
    }

    pub fn user_by_email(&self, email: &str) -> Option<&UserRow> {
        self.users_by_email
            .get(&*email_key(email))
            .and_then(|id| self.users.get(id))
    }

    pub fn product_by_sku(&self, sku: &str) -> Option<&ProductRow> {
        self.products_by_sku
            .get(sku)
            .and_then(|id| self.products.get(id))
    }

    /// Whether any order, live or of a deleted user, names `user_id`.
    pub fn has_orders(&self, user_id: &str) -> bool {
        let user = Str::from(user_id);
        self.orders_by_user
            .range((user.clone(), 0, Str::from(""))..)
            .next()
            .is_some_and(|(owner, _, _)| *owner == user)
    }

    /// A user's orders, newest first, starting after `cursor`: O(log n) to the start,
    /// then one step per order.
    pub fn orders_of<'a>(
        &'a self,
        user_id: &str,
        cursor: Option<&OrderCursor>,
    ) -> impl Iterator<Item = (OrderCursor, &'a OrderRow)> + 'a {
        let user = Str::from(user_id);
        let first = (user.clone(), 0, Str::from(""));
        let end = match cursor {
            Some(cursor) => Bound::Excluded((user, cursor.created_at, cursor.order_id.clone())),
            None => Bound::Included((user, Ts::MAX, Str::from(""))),
        };
        self.orders_by_user
            .range((Bound::Included(first), end))
            .rev()
            .filter_map(|(_, created_at, order_id): &(Str, Ts, Str)| {
                let row = self.orders.get(order_id)?;
                let cursor = OrderCursor {
                    created_at: *created_at,
                    order_id: Str::clone(order_id),
                };
                Some((cursor, row))
            })
    }

    /// An account's sign-in attempts, newest first, starting after `before` (the
    /// `(at, attempt_id)` of the last attempt of the page before).
    pub fn sign_ins_of<'a>(
        &'a self,
        user_id: &str,
        before: Option<(Ts, Str)>,
    ) -> impl Iterator<Item = &'a SignInRow> + 'a {
        let user = Str::from(user_id);
        let first = (user.clone(), 0, Str::from(""));
        let end = match before {
            Some((at, attempt_id)) => Bound::Excluded((user, at, attempt_id)),
            None => Bound::Included((user, Ts::MAX, Str::from(""))),
        };
        self.sign_ins_by_user
            .range((Bound::Included(first), end))
            .rev()
            .filter_map(|(_, _, attempt_id)| self.sign_ins.get(attempt_id))
    }

    /// Whether `user_id` was deleted: readers show none of the user's personal data
    /// (the shipping addresses of their orders, their events' names and addresses).
    pub fn is_erased(&self, user_id: &str) -> bool {
        self.erased_users.contains_key(user_id)
    }

    /// Whether the order was placed by a deleted user; no lookup while nobody is.
    pub fn order_is_erased(&self, order_id: &str) -> bool {
        !self.erased_users.is_empty()
            && self
                .orders
                .get(order_id)
                .is_some_and(|order| self.is_erased(&order.user_id))
    }

    /// A user's sessions in id order (time order: ids are UUID v7), after `after`.
    /// A customer's tickets, by id, after `after`.
    pub fn tickets_of<'a>(
        &'a self,
        user_id: &str,
        after: &str,
    ) -> impl Iterator<Item = &'a TicketRow> + 'a {
        let user = Str::from(user_id);
        let first = (user.clone(), Str::from(after));
        self.tickets_by_user
            .range((Bound::Excluded(first), Bound::Unbounded))
            .take_while(move |(owner, _)| *owner == user)
            .filter_map(|(_, ticket_id)| self.tickets.get(ticket_id))
    }

    /// A user's saved cards, by method id.
    pub fn payment_methods_of<'a>(
        &'a self,
        user_id: &str,
    ) -> impl Iterator<Item = &'a PaymentMethodRow> + 'a {
        let user = Str::from(user_id);
        let first = (user.clone(), Str::from(""));
        self.payment_methods_by_user
            .range(first..)
            .take_while(move |(owner, _)| *owner == user)
            .filter_map(|(_, method_id)| self.payment_methods.get(method_id))
    }

    pub fn sessions_of<'a>(
        &'a self,
        user_id: &str,
        after: &str,
    ) -> impl Iterator<Item = &'a SessionRow> + 'a {
        let user = Str::from(user_id);
        let first = (user.clone(), Str::from(after));
        self.sessions_by_user
            .range((Bound::Excluded(first), Bound::Unbounded))
            .take_while(move |(owner, _)| *owner == user)
            .filter_map(|(_, session_id)| self.sessions.get(session_id))
    }

    #[cfg(test)]
    pub(crate) fn apply_time(&mut self, updates: Vec<(Row, isize)>) {
        self.apply_at(Time::default(), updates);
    }

    /// Applies the updates of one time. A key retracted and inserted at the same time is
    /// replaced in one step, and its index entries move only if their keys changed.
    /// Notes when they change the catalog (`catalog_version`).
    pub(crate) fn apply_at(&mut self, time: Time, mut updates: Vec<(Row, isize)>) {
        // What is left of a key is its old row retracted, its new row inserted, or both.
        consolidate(&mut updates);
        for (row, _) in &updates {
            match row {
                Row::Product(_) | Row::Stock(_) => self.catalog_changed_at = time,
                Row::Metric(metric) if metric.metric == Metric::StockForecast => {
                    self.forecast_changed_at = time
                }
                _ => {}
            }
        }
        let units_moved = updates.iter().any(|(row, _)| {
            matches!(row, Row::Metric(metric) if metric.metric == Metric::ProductSalesDaily)
        });
        let mut start = 0;
        while start < updates.len() {
            let key = updates[start].0.key();
            let end = start
                + updates[start..]
                    .iter()
                    .take_while(|(row, _)| row.key() == key)
                    .count();
            let group = &updates[start..end];
            match group.iter().rev().find(|(_, diff)| *diff > 0) {
                Some((row, _)) => self.insert(row),
                None => group.iter().for_each(|(row, _)| {
                    if !self.retract(row) {
                        self.unmatched_retractions += 1;
                    }
                }),
            }
            start = end;
        }
        if units_moved {
            self.rank_products();
        }
    }

    /// `top_products` again from the ranking: ten rows, rebuilt when units changed.
    fn rank_products(&mut self) {
        let table = &mut self.metrics[Metric::TopProducts.index()];
        let mut top = Rows::default();
        for (rank, (units, product)) in self
            .product_ranking
            .iter()
            .take_while(|(units, _)| units.0 > 0)
            .take(TOP_PRODUCTS)
            .enumerate()
        {
            let row = MetricRow::new(
                Metric::TopProducts,
                vec![Dim::Int(rank as i64 + 1), Dim::Text(product.clone())],
                vec![units.0],
            );
            let row = match table.map.get(&row.id) {
                Some(held) if **held == row => held.clone(),
                _ => Arc::new(row),
            };
            top.map.insert(row.id.clone(), row);
        }
        *table = top;
    }

    /// A product's units in paid orders moved by `delta`: its place in the ranking too.
    fn add_product_units(&mut self, product: &Str, delta: i64) {
        if delta == 0 {
            return;
        }
        let units = self.product_units.get(product).copied().unwrap_or(0);
        self.product_ranking
            .remove(&(std::cmp::Reverse(units), product.clone()));
        let units = units + delta;
        if units == 0 {
            self.product_units.remove(product);
        } else {
            self.product_units.insert(product.clone(), units);
            self.product_ranking
                .insert((std::cmp::Reverse(units), product.clone()));
        }
    }

    fn insert(&mut self, row: &Row) {
        match row {
            Row::Product(product) => {
                let old = self.products.replace(&product.product_id, product);
                let old_sku = old.as_ref().map(|old| &old.sku);
                if old_sku != Some(&product.sku) {
                    if let Some(old_sku) = old_sku {
                        remove_if_points_to(
                            &mut self.products_by_sku,
                            old_sku,
                            &product.product_id,
                        );
                    }
                    self.products_by_sku
                        .insert(product.sku.clone(), product.product_id.clone());
                }
            }
            Row::Stock(stock) => self.set_stock(stock, stock.quantity),
            Row::User(user) => {
                let old = self.users.replace(&user.user_id, user);
                let old_email = old.as_ref().map(|old| &old.email);
                if old_email != Some(&user.email) {
                    if let Some(old_email) = old_email {
                        let key = email_key(old_email);
                        remove_if_points_to(&mut self.users_by_email, &key, &user.user_id);
                    }
                    self.users_by_email
                        .insert(email_key(&user.email), user.user_id.clone());
                }
            }
            Row::Cart(cart) => {
                self.carts.replace(&cart.cart_id, cart);
            }
            Row::Order(order) => {
                let old = self.orders.replace(&order.order_id, order);
                // Its place in the user's list moves only if the owner or the time does.
                let moved = old.as_deref().is_none_or(|old| {
                    old.user_id != order.user_id || old.created_at != order.created_at
                });
                if moved {
                    if let Some(old) = &old {
                        self.orders_by_user.remove(&order_index_key(old));
                    }
                    self.orders_by_user.insert(order_index_key(order));
                }
            }
            Row::Payment(payment) => {
                self.payments.replace(&payment.payment_id, payment);
            }
            Row::Shipment(shipment) => {
                self.shipments.replace(&shipment.shipment_id, shipment);
            }
            Row::Effect(effect) => {
                self.effects.replace(effect.effect_id(), effect);
            }
            Row::Idempotency(record) => {
                if let Some(old) = self.idempotency.replace(&record.key, record) {
                    if old.first_seq != record.first_seq {
                        self.forget_keyed(old.first_seq);
                    }
                }
                self.keyed_seqs.insert(record.first_seq);
            }
            Row::Reservation(reservation) => {
                self.reservations
                    .replace(&reservation.reservation_id, reservation);
            }
            Row::Report(report) => {
                let queued = (report.requested_at, report.report_id.clone());
                if report.status == ReportStatus::Queued {
                    self.reports_queued.insert(queued);
                } else {
                    self.reports_queued.remove(&queued);
                }
                self.reports.replace(&report.report_id, report);
            }
            Row::ReportSchedule(schedule) => {
                self.report_schedules
                    .replace(&schedule.schedule_id, schedule);
            }
            Row::ApiKey(key) => {
                // A key's digest never changes.
                self.api_keys_by_hash
                    .insert(key.key_hash.clone(), key.key_id.clone());
                self.api_keys.replace(&key.key_id, key);
            }
            Row::RevokedToken(token) => {
                self.revoked_tokens.replace(&token.token_id, token);
            }
            Row::SigningKey(key) => {
                self.signing_keys.replace(&key.kid, key);
            }
            Row::Dashboard(dashboard) => {
                self.dashboards.replace(&dashboard.dashboard_id, dashboard);
            }
            Row::Loyalty(loyalty) => {
                self.loyalty.replace(&loyalty.user_id, loyalty);
            }
            Row::Ticket(ticket) => {
                // A ticket's customer never changes.
                self.tickets_by_user
                    .insert((ticket.user_id.clone(), ticket.ticket_id.clone()));
                self.tickets.replace(&ticket.ticket_id, ticket);
            }
            Row::PaymentMethod(method) => {
                // A method's row is written once.
                self.payment_methods_by_user
                    .insert((method.user_id.clone(), method.method_id.clone()));
                self.payment_methods.replace(&method.method_id, method);
            }
            Row::ErasedUser(erased) => {
                self.erased_users.replace(&erased.user_id, erased);
            }
            Row::Session(session) => {
                // A session's user never changes.
                self.sessions_by_user
                    .insert((session.user_id.clone(), session.session_id.clone()));
                self.sessions.replace(&session.session_id, session);
            }
            Row::SignIn(attempt) => {
                // An attempt's row is written once.
                if let Some(user_id) = &attempt.user_id {
                    self.sign_ins_by_user.insert((
                        user_id.clone(),
                        attempt.at,
                        attempt.attempt_id.clone(),
                    ));
                }
                self.sign_ins.replace(&attempt.attempt_id, attempt);
            }
            Row::Metric(row) => {
                let old = self.metrics[row.metric.index()].replace(&row.id, row);
                if row.metric == Metric::ProductSalesDaily {
                    let units = |row: &MetricRow| row.measures[0];
                    let delta = units(row) - old.as_deref().map_or(0, units);
                    self.add_product_units(&product_of_sales_day(row), delta);
                }
            }
        }
    }

    /// Takes `row` out of its view; says whether the view held it (stock and the metric
    /// views always do: they are kept otherwise).
    fn retract(&mut self, row: &Row) -> bool {
        match row {
            Row::Product(product) => {
                let held = self.products.retract(&product.product_id, product);
                if held {
                    remove_if_points_to(
                        &mut self.products_by_sku,
                        &product.sku,
                        &product.product_id,
                    );
                }
                held
            }
            Row::Stock(stock) => {
                self.set_stock(stock, 0);
                true
            }
            Row::User(user) => {
                let held = self.users.retract(&user.user_id, user);
                if held {
                    let key = email_key(&user.email);
                    remove_if_points_to(&mut self.users_by_email, &key, &user.user_id);
                }
                held
            }
            Row::Cart(cart) => self.carts.retract(&cart.cart_id, cart),
            Row::Order(order) => {
                let held = self.orders.retract(&order.order_id, order);
                if held {
                    self.orders_by_user.remove(&order_index_key(order));
                }
                held
            }
            Row::Payment(payment) => self.payments.retract(&payment.payment_id, payment),
            Row::Shipment(shipment) => self.shipments.retract(&shipment.shipment_id, shipment),
            Row::Effect(effect) => self.effects.retract(effect.effect_id(), effect),
            Row::Idempotency(record) => {
                let held = self.idempotency.retract(&record.key, record);
                if held {
                    self.forget_keyed(record.first_seq);
                }
                held
            }
            Row::Reservation(reservation) => self
                .reservations
                .retract(&reservation.reservation_id, reservation),
            Row::Report(report) => {
                let held = self.reports.retract(&report.report_id, report);
                if held {
                    self.reports_queued
                        .remove(&(report.requested_at, report.report_id.clone()));
                }
                held
            }
            Row::ReportSchedule(schedule) => self
                .report_schedules
                .retract(&schedule.schedule_id, schedule),
            Row::ApiKey(key) => {
                let held = self.api_keys.retract(&key.key_id, key);
                if held {
                    remove_if_points_to(&mut self.api_keys_by_hash, &key.key_hash, &key.key_id);
                }
                held
            }
            Row::RevokedToken(token) => self.revoked_tokens.retract(&token.token_id, token),
            Row::SigningKey(key) => self.signing_keys.retract(&key.kid, key),
            Row::Dashboard(dashboard) => {
                self.dashboards.retract(&dashboard.dashboard_id, dashboard)
            }
            Row::Loyalty(loyalty) => self.loyalty.retract(&loyalty.user_id, loyalty),
            Row::Ticket(ticket) => self.tickets.retract(&ticket.ticket_id, ticket),
            Row::PaymentMethod(method) => {
                let held = self.payment_methods.retract(&method.method_id, method);
                if held {
                    self.payment_methods_by_user
                        .remove(&(method.user_id.clone(), method.method_id.clone()));
                }
                held
            }
            Row::ErasedUser(erased) => self.erased_users.retract(&erased.user_id, erased),
            Row::Session(session) => {
                let held = self.sessions.retract(&session.session_id, session);
                if held {
                    self.sessions_by_user
                        .remove(&(session.user_id.clone(), session.session_id.clone()));
                }
                held
            }
            Row::SignIn(attempt) => {
                let held = self.sign_ins.retract(&attempt.attempt_id, attempt);
                if held {
                    if let Some(user_id) = &attempt.user_id {
                        self.sign_ins_by_user.remove(&(
                            user_id.clone(),
                            attempt.at,
                            attempt.attempt_id.clone(),
                        ));
                    }
                }
                held
            }
            Row::Metric(row) => {
                if self.metrics[row.metric.index()].retract(&row.id, row)
                    && row.metric == Metric::ProductSalesDaily
                {
                    self.add_product_units(&product_of_sales_day(row), -row.measures[0]);
                }
                true
            }
        }
    }

    /// How many retractions so far were of a row its view did not hold: a dataflow that
    /// retracts a row twice, or one it never inserted. Zero unless something is wrong.
    pub fn unmatched_retractions(&self) -> u64 {
        self.unmatched_retractions
    }

    /// The key that kept the refusal at `seq` readable is gone: so is the refusal.
    fn forget_keyed(&mut self, seq: Seq) {
        if self.keyed_seqs.remove(&seq).is_some() {
            self.rejections.remove(&seq);
        }
    }

    fn set_stock(&mut self, stock: &StockRow, quantity: i64) {
        let level = self.stock.entry(stock.product_id.clone()).or_default();
        match stock.measure {
            StockMeasure::OnHand => level.on_hand = quantity,
            StockMeasure::Reserved => level.reserved = quantity,
        }
    }

    pub(crate) fn record_rejection(&mut self, rejection: Rejection) {
        let newest = rejection.ts;
        self.rejection_order
            .push_back((rejection.ts, rejection.seq));
        self.rejections.insert(rejection.seq, Arc::new(rejection));
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
        rows.extend(self.products.shared_rows().cloned().map(Row::Product));
        rows.extend(self.stock_rows().map(Row::Stock));
        rows.extend(self.users.shared_rows().cloned().map(Row::User));
        rows.extend(self.carts.shared_rows().cloned().map(Row::Cart));
        rows.extend(self.orders.shared_rows().cloned().map(Row::Order));
        rows.extend(self.payments.shared_rows().cloned().map(Row::Payment));
        rows.extend(self.shipments.shared_rows().cloned().map(Row::Shipment));
        rows.extend(self.effects.shared_rows().cloned().map(Row::Effect));
        rows.extend(
            self.reservations
                .shared_rows()
                .cloned()
                .map(Row::Reservation),
        );
        rows.extend(self.reports.shared_rows().cloned().map(Row::Report));
        rows.extend(
            self.report_schedules
                .shared_rows()
                .cloned()
                .map(Row::ReportSchedule),
        );
        rows.extend(self.api_keys.shared_rows().cloned().map(Row::ApiKey));
        rows.extend(self.sign_ins.shared_rows().cloned().map(Row::SignIn));
        rows.extend(
            self.revoked_tokens
                .shared_rows()
                .cloned()
                .map(Row::RevokedToken),
        );
        rows.extend(self.sessions.shared_rows().cloned().map(Row::Session));
        rows.extend(
            self.erased_users
                .shared_rows()
                .cloned()
                .map(Row::ErasedUser),
        );
        rows.extend(
            self.signing_keys
                .shared_rows()
                .cloned()
                .map(Row::SigningKey),
        );
        rows.extend(self.dashboards.shared_rows().cloned().map(Row::Dashboard));
        rows.extend(self.loyalty.shared_rows().cloned().map(Row::Loyalty));
        rows.extend(self.tickets.shared_rows().cloned().map(Row::Ticket));
        rows.extend(
            self.payment_methods
                .shared_rows()
                .cloned()
                .map(Row::PaymentMethod),
        );
        for metric in &self.metrics {
            rows.extend(metric.shared_rows().cloned().map(Row::Metric));
        }
        rows
    }
}

fn order_index_key(order: &OrderRow) -> (Str, Ts, Str) {
    (
        order.user_id.clone(),
        order.created_at,
        order.order_id.clone(),
    )
}

/// Removes an index entry only if it still names `id`: another row may have taken the
/// value over at the same time.
fn remove_if_points_to(index: &mut OrdMap<Str, Str>, value: &str, id: &str) {
    if index.get(value).is_some_and(|held| **held == *id) {
        index.remove(value);
    }
}

/// The product of a `product_sales_daily` row (its key is day, product, currency).
fn product_of_sales_day(row: &MetricRow) -> Str {
    match &row.key[1] {
        Dim::Text(product) => product.clone(),
        other => unreachable!("product_sales_daily keys a product, not {other:?}"),
    }
}

/// Sorts updates by key, then by row, and adds up the diffs of each row, leaving out
/// those that cancel: a row said and unsaid (as a join may) leaves no trace.
pub(crate) fn consolidate(updates: &mut Vec<(Row, isize)>) {
    updates.sort_by(|(a, _), (b, _)| a.key().cmp(&b.key()).then_with(|| a.cmp(b)));
    updates.dedup_by(|(row, diff), (kept, total)| {
        let same = row == kept;
        if same {
            *total += *diff;
        }
        same
    });
    updates.retain(|(_, diff)| *diff != 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sales(day: i64, product: &str, units: i64) -> Row {
        Row::Metric(Arc::new(MetricRow::new(
            Metric::ProductSalesDaily,
            vec![
                Dim::Day(day),
                Dim::Text(product.into()),
                Dim::Text("EUR".into()),
            ],
            vec![units, units * 100],
        )))
    }

    fn top(snapshot: &Snapshot) -> Vec<(i64, String, i64)> {
        snapshot
            .metric(Metric::TopProducts)
            .values()
            .map(|row| match (&row.key[0], &row.key[1]) {
                (Dim::Int(rank), Dim::Text(product)) => {
                    (*rank, product.to_string(), row.measures[0])
                }
                other => panic!("unexpected key {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_row_said_and_unsaid_at_one_time_leaves_no_trace() {
        let mut snapshot = Snapshot::default();
        // A join may emit +row and -row at one time, in either order.
        snapshot.apply_time(vec![(sales(1, "p1", 2), 1), (sales(1, "p1", 2), -1)]);
        snapshot.apply_time(vec![(sales(1, "p2", 2), -1), (sales(1, "p2", 2), 1)]);
        assert!(snapshot.metric(Metric::ProductSalesDaily).is_empty());
        assert!(top(&snapshot).is_empty());
        // A replaced row is the new one, whatever order the two updates come in.
        snapshot.apply_time(vec![(sales(1, "p1", 2), 1)]);
        snapshot.apply_time(vec![(sales(1, "p1", 5), 1), (sales(1, "p1", 2), -1)]);
        let rows: Vec<_> = snapshot
            .metric(Metric::ProductSalesDaily)
            .values()
            .collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].measures[0], 5);
    }

    #[test]
    fn top_products_follow_the_units_of_every_day() {
        let mut snapshot = Snapshot::default();
        snapshot.apply_time(vec![
            (sales(1, "a", 3), 1),
            (sales(2, "a", 1), 1),
            (sales(1, "b", 4), 1),
            (sales(1, "c", 4), 1),
        ]);
        assert_eq!(
            top(&snapshot),
            [(1, "a".into(), 4), (2, "b".into(), 4), (3, "c".into(), 4)],
            "most units first, ties by id"
        );
        // b sells more on day 2; a's day 1 is taken back (a cancelled payment).
        snapshot.apply_time(vec![(sales(2, "b", 2), 1), (sales(1, "a", 3), -1)]);
        assert_eq!(
            top(&snapshot),
            [(1, "b".into(), 6), (2, "c".into(), 4), (3, "a".into(), 1)]
        );
        // Only ten are ranked.
        snapshot.apply_time(
            (0..12)
                .map(|n| (sales(3, &format!("z{n:02}"), 10 + n), 1))
                .collect(),
        );
        let ranked = top(&snapshot);
        assert_eq!(ranked.len(), TOP_PRODUCTS);
        assert_eq!(ranked[0], (1, "z11".into(), 21));
        assert_eq!(ranked[9], (10, "z02".into(), 12));
    }

    #[test]
    fn the_catalog_version_is_the_time_of_the_catalog_s_last_change() {
        let stock = |quantity| {
            Row::Stock(Arc::new(StockRow {
                product_id: "p1".into(),
                measure: StockMeasure::OnHand,
                quantity,
            }))
        };
        let mut snapshot = Snapshot::default();
        snapshot.apply_at(5, vec![(stock(3), 1)]);
        assert_eq!(snapshot.catalog_version(), (5, 0));
        // Sales are not the catalog; a row said and unsaid at one time changes nothing.
        snapshot.apply_at(6, vec![(sales(1, "p1", 2), 1)]);
        snapshot.apply_at(7, vec![(stock(4), 1), (stock(4), -1)]);
        assert_eq!(snapshot.catalog_version(), (5, 0));
        snapshot.apply_at(8, vec![(stock(3), -1), (stock(4), 1)]);
        assert_eq!(snapshot.catalog_version(), (8, 0));
    }
}
