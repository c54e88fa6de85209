//! Views as Arrow record batches, read through one snapshot: every batch of a scan is at
//! the same frontier however long the scan takes, and a scan copies only the batch it is
//! building, and only the columns asked for. SQL tables (DataFusion) read the live views
//! through `ViewScan`.
//!
//! ```ignore
//! let scan = ViewScan::new(store.read(), View::Orders, 8192);
//! for batch in scan { /* RecordBatch of up to 8192 orders, in id order */ }
//! ```
//!
//! Some tables are the lists held inside a row (an order's items, a payment's refunds):
//! they are scanned by their parent, in the parent's id order, so a batch holds the
//! children of up to `batch_rows` parents.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use dataflows::analytics::{Dim, KeyType, Metric, MetricRow};
use dataflows::catalog::views::ReservationRow;
use dataflows::model::{payment_id_for, shipment_id_for, Str, Ts};
use dataflows::orders::views::CartRow;
use dataflows::views::{OrderRow, PaymentRow, ProductRow, ShipmentRow, UserRow};

use crate::snapshot::{Rows, Snapshot};

/// The views a scan reads, each a table for SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    Products,
    Stock,
    Users,
    Carts,
    CartItems,
    Orders,
    OrderItems,
    OrderStatusHistory,
    Payments,
    Refunds,
    Shipments,
    Reservations,
    /// A metric view (`analytics`): its key columns, its integer measures, then the
    /// measures derived from them.
    Metric(Metric),
}

impl View {
    /// The tables of the domain's views; `all` adds the metric views.
    pub const DOMAIN: [View; 12] = [
        View::Products,
        View::Stock,
        View::Users,
        View::Carts,
        View::CartItems,
        View::Orders,
        View::OrderItems,
        View::OrderStatusHistory,
        View::Payments,
        View::Refunds,
        View::Shipments,
        View::Reservations,
    ];

    /// Every view: the domain's, then the metrics'.
    pub fn all() -> impl Iterator<Item = View> {
        View::DOMAIN
            .into_iter()
            .chain(Metric::ALL.into_iter().map(View::Metric))
    }

    /// The view's name as a table.
    pub fn name(self) -> &'static str {
        match self {
            View::Products => "products",
            View::Stock => "stock",
            View::Users => "users",
            View::Carts => "carts",
            View::CartItems => "cart_items",
            View::Orders => "orders",
            View::OrderItems => "order_items",
            View::OrderStatusHistory => "order_status_history",
            View::Payments => "payments",
            View::Refunds => "refunds",
            View::Shipments => "shipments",
            View::Reservations => "reservations",
            View::Metric(metric) => metric.name(),
        }
    }

    /// What a row of the table is.
    pub fn description(self) -> &'static str {
        match self {
            View::Products => "A product of the catalogue, with its stock.",
            View::Stock => {
                "A product's stock: on hand, held by orders and reservations, and available."
            }
            View::Users => "An account (never its password hash).",
            View::Carts => "A shopping cart.",
            View::CartItems => "A product in a cart.",
            View::Orders => "An order and where its saga stands.",
            View::OrderItems => "A line of an order, priced once its stock is held.",
            View::OrderStatusHistory => "A status an order went through, in order.",
            View::Payments => "An order's payment.",
            View::Refunds => "A refund of a payment.",
            View::Shipments => "An order's shipment.",
            View::Reservations => "Stock held through the inventory API.",
            View::Metric(metric) => metric.table().description,
        }
    }

    pub fn schema(self) -> SchemaRef {
        let text = |name: &str| Field::new(name, DataType::Utf8, false);
        let maybe_text = |name: &str| Field::new(name, DataType::Utf8, true);
        let int = |name: &str| Field::new(name, DataType::Int64, false);
        let maybe_int = |name: &str| Field::new(name, DataType::Int64, true);
        let flag = |name: &str| Field::new(name, DataType::Boolean, false);
        let maybe_time = |name: &str| {
            Field::new(
                name,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            )
        };
        let time = |name: &str| maybe_time(name).with_nullable(false);
        let fields = match self {
            View::Metric(metric) => {
                let table = metric.table();
                let keys = table.keys.iter().map(|(name, kind)| match kind {
                    KeyType::Minute => time(name),
                    KeyType::Day => Field::new(*name, DataType::Date32, false),
                    KeyType::Text => text(name),
                    KeyType::Int => int(name),
                });
                let measures = table.measures.iter().map(|name| int(name));
                let derived = table
                    .derived
                    .iter()
                    .map(|derived| Field::new(derived.name, DataType::Float64, true));
                keys.chain(measures).chain(derived).collect()
            }
            View::Products => vec![
                text("id"),
                text("sku"),
                text("name"),
                int("price_cents"),
                text("currency"),
                int("reorder_point"),
                maybe_text("warehouse_id"),
                int("on_hand"),
                int("reserved"),
                int("available"),
                time("created_at"),
                time("updated_at"),
            ],
            View::Stock => vec![
                text("product_id"),
                text("sku"),
                int("on_hand"),
                int("reserved"),
                int("available"),
                int("reorder_point"),
                flag("low_stock"),
            ],
            // Never the password hash.
            View::Users => vec![
                text("id"),
                text("email"),
                text("name"),
                time("created_at"),
                time("updated_at"),
            ],
            View::Carts => vec![
                text("id"),
                text("user_id"),
                int("lines"),
                int("units"),
                time("created_at"),
                time("updated_at"),
            ],
            View::CartItems => vec![text("cart_id"), text("product_id"), int("quantity")],
            View::Orders => vec![
                text("id"),
                text("user_id"),
                text("status"),
                maybe_text("cancel_reason"),
                int("lines"),
                int("units"),
                int("total_cents"),
                // None until the order is priced (an order refused before then has none).
                maybe_text("currency"),
                maybe_text("payment_id"),
                maybe_text("shipment_id"),
                maybe_text("cart_id"),
                maybe_text("shipping_address"),
                time("created_at"),
                time("updated_at"),
            ],
            View::OrderItems => vec![
                text("order_id"),
                int("line"),
                text("product_id"),
                int("quantity"),
                maybe_int("unit_price_cents"),
                maybe_text("currency"),
                maybe_int("line_total_cents"),
            ],
            View::OrderStatusHistory => vec![
                text("order_id"),
                int("position"),
                text("status"),
                maybe_text("reason"),
                time("at"),
            ],
            View::Payments => vec![
                text("id"),
                text("order_id"),
                text("status"),
                int("amount_cents"),
                text("currency"),
                int("captured_cents"),
                int("refunded_cents"),
                int("refunds"),
                text("card_brand"),
                text("card_last4"),
                maybe_text("decline_code"),
                flag("fraud_suspected"),
                time("created_at"),
                time("updated_at"),
            ],
            View::Refunds => vec![
                text("id"),
                text("payment_id"),
                text("order_id"),
                int("amount_cents"),
                text("currency"),
                text("status"),
                text("reason"),
                maybe_time("settled_at"),
            ],
            View::Shipments => vec![
                text("id"),
                text("order_id"),
                text("status"),
                maybe_text("carrier"),
                maybe_text("tracking_number"),
                maybe_text("address"),
                time("created_at"),
                time("updated_at"),
            ],
            View::Reservations => vec![
                text("id"),
                text("status"),
                maybe_text("reason"),
                int("lines"),
                int("units"),
                time("created_at"),
                time("updated_at"),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

/// A whole view, batch by batch, from one snapshot.
pub struct ViewScan {
    snapshot: Arc<Snapshot>,
    view: View,
    batch_rows: usize,
    /// The view's columns to build, by position; `None` for all.
    projection: Option<Arc<[usize]>>,
    /// The id of the last row handed out; `None` before the first batch.
    after: Option<Str>,
    done: bool,
}

impl ViewScan {
    pub fn new(snapshot: Arc<Snapshot>, view: View, batch_rows: usize) -> ViewScan {
        ViewScan {
            snapshot,
            view,
            batch_rows: batch_rows.max(1),
            projection: None,
            after: None,
            done: false,
        }
    }

    /// Builds only these columns of the view (positions in its schema), in this order.
    pub fn with_projection(mut self, columns: impl Into<Arc<[usize]>>) -> ViewScan {
        self.projection = Some(columns.into());
        self
    }

    /// The schema of the batches this scan yields.
    pub fn schema(&self) -> SchemaRef {
        project(&self.view.schema(), self.projection.as_deref())
    }

    /// The frontier every batch of this scan is at.
    pub fn frontier(&self) -> dataflows::model::Time {
        self.snapshot.frontier
    }
}

impl Iterator for ViewScan {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        // A run of parents without children gives an empty batch: go on past it.
        while !self.done {
            let after = self.after.as_deref().unwrap_or("");
            let part = self.snapshot.batch(
                self.view,
                after,
                self.batch_rows,
                self.projection.as_deref(),
            );
            self.done = part.last.is_none() || part.parents < self.batch_rows;
            self.after = part.last;
            if part.batch.num_rows() > 0 {
                return Some(part.batch);
            }
        }
        None
    }
}

/// A batch of a view, and where the next one starts.
pub struct Part {
    pub batch: RecordBatch,
    /// The id of the last row (or parent) it holds.
    pub last: Option<Str>,
    /// How many rows (or parents) it covers.
    pub parents: usize,
}

impl Snapshot {
    /// The rows of `view` whose ids sort after `after` (all, for ""), in id order, for up
    /// to `max_rows` rows (for a table of lists, `max_rows` parents), as one batch of the
    /// `projection`'s columns (all for `None`).
    pub fn batch(
        &self,
        view: View,
        after: &str,
        max_rows: usize,
        projection: Option<&[usize]>,
    ) -> Part {
        let scan = Scan {
            view,
            after,
            max_rows,
            projection,
        };
        match view {
            View::Products => scan.build(&self.products, |row: &ProductRow, c| {
                let level = self.stock_of(&row.product_id);
                c.text(&row.product_id);
                c.text(&row.sku);
                c.text(&row.name);
                c.int(row.price_cents);
                c.text(&row.currency);
                c.int(row.reorder_point);
                c.maybe_text(row.warehouse_id.as_deref());
                c.int(level.on_hand);
                c.int(level.reserved);
                c.int(level.available());
                c.time(row.created_at);
                c.time(row.updated_at);
                c.end_row();
            }),
            View::Stock => scan.build(&self.products, |row: &ProductRow, c| {
                let level = self.stock_of(&row.product_id);
                c.text(&row.product_id);
                c.text(&row.sku);
                c.int(level.on_hand);
                c.int(level.reserved);
                c.int(level.available());
                c.int(row.reorder_point);
                c.bool(level.available() <= row.reorder_point);
                c.end_row();
            }),
            View::Users => scan.build(&self.users, |row: &UserRow, c| {
                c.text(&row.user_id);
                c.text(&row.email);
                c.text(&row.name);
                c.time(row.created_at);
                c.time(row.updated_at);
                c.end_row();
            }),
            View::Carts => scan.build(&self.carts, |row: &CartRow, c| {
                c.text(&row.cart_id);
                c.text(&row.user_id);
                c.int(row.items.len() as i64);
                c.int(row.items.iter().map(|line| line.quantity).sum());
                c.time(row.created_at);
                c.time(row.updated_at);
                c.end_row();
            }),
            View::CartItems => scan.build(&self.carts, |row: &CartRow, c| {
                for line in &row.items {
                    c.text(&row.cart_id);
                    c.text(&line.product_id);
                    c.int(line.quantity);
                    c.end_row();
                }
            }),
            View::Orders => scan.build(&self.orders, |row: &OrderRow, c| {
                let (lines, units) = if row.lines.is_empty() {
                    (row.items.len(), row.items.iter().map(|l| l.quantity).sum())
                } else {
                    (row.lines.len(), row.lines.iter().map(|l| l.quantity).sum())
                };
                c.text(&row.order_id);
                c.text(&row.user_id);
                c.text(row.status.as_str());
                c.maybe_text(row.cancel_reason.map(|r| r.as_str()));
                c.int(lines as i64);
                c.int(units);
                c.int(row.total_cents);
                c.maybe_text(Some(&*row.currency).filter(|currency| !currency.is_empty()));
                c.maybe_text(
                    row.has_payment
                        .then(|| payment_id_for(&row.order_id))
                        .as_deref(),
                );
                c.maybe_text(
                    row.has_shipment
                        .then(|| shipment_id_for(&row.order_id))
                        .as_deref(),
                );
                c.maybe_text(row.cart_id.as_deref());
                // A deleted user's address is personal data: erased.
                c.maybe_text(
                    row.shipping_address
                        .as_deref()
                        .filter(|_| !self.is_erased(&row.user_id)),
                );
                c.time(row.created_at);
                c.time(row.updated_at);
                c.end_row();
            }),
            View::OrderItems => scan.build(&self.orders, |row: &OrderRow, c| {
                // Priced lines once stock is held; until then the lines as ordered.
                if row.lines.is_empty() {
                    for (position, line) in row.items.iter().enumerate() {
                        c.text(&row.order_id);
                        c.int(position as i64);
                        c.text(&line.product_id);
                        c.int(line.quantity);
                        c.maybe_int(None);
                        c.maybe_text(None);
                        c.maybe_int(None);
                        c.end_row();
                    }
                } else {
                    for (position, line) in row.lines.iter().enumerate() {
                        c.text(&row.order_id);
                        c.int(position as i64);
                        c.text(&line.product_id);
                        c.int(line.quantity);
                        c.maybe_int(Some(line.unit_price_cents));
                        c.maybe_text(Some(&line.currency));
                        c.maybe_int(Some(line.unit_price_cents * line.quantity));
                        c.end_row();
                    }
                }
            }),
            View::OrderStatusHistory => scan.build(&self.orders, |row: &OrderRow, c| {
                for (position, change) in row.history.iter().enumerate() {
                    c.text(&row.order_id);
                    c.int(position as i64);
                    c.text(change.status.as_str());
                    c.maybe_text(change.reason.map(|r| r.as_str()));
                    c.time(change.at);
                    c.end_row();
                }
            }),
            View::Payments => scan.build(&self.payments, |row: &PaymentRow, c| {
                c.text(&row.payment_id);
                c.text(&row.order_id);
                c.text(row.status.as_str());
                c.int(row.amount_cents);
                c.text(&row.currency);
                c.int(row.captured_cents);
                c.int(row.refunded_cents);
                c.int(row.refunds.len() as i64);
                c.text(&row.card_brand);
                c.text(&row.card_last4);
                c.maybe_text(row.decline_code.as_deref());
                c.bool(row.fraud);
                c.time(row.created_at);
                c.time(row.updated_at);
                c.end_row();
            }),
            View::Refunds => scan.build(&self.payments, |row: &PaymentRow, c| {
                for refund in &row.refunds {
                    c.text(&refund.refund_id);
                    c.text(&row.payment_id);
                    c.text(&row.order_id);
                    c.int(refund.amount_cents);
                    c.text(&row.currency);
                    c.text(refund.status.as_str());
                    c.text(&refund.reason);
                    c.maybe_time(refund.settled_at);
                    c.end_row();
                }
            }),
            View::Shipments => scan.build(&self.shipments, |row: &ShipmentRow, c| {
                c.text(&row.shipment_id);
                c.text(&row.order_id);
                c.text(row.status.as_str());
                c.maybe_text(row.carrier.as_deref());
                c.maybe_text(row.tracking_number.as_deref());
                let erased = self.order_is_erased(&row.order_id);
                c.maybe_text(row.address.as_deref().filter(|_| !erased));
                c.time(row.created_at);
                c.time(row.updated_at);
                c.end_row();
            }),
            View::Metric(metric) => scan.build(self.metric(metric), |row: &MetricRow, c| {
                for dim in &row.key {
                    match dim {
                        Dim::Minute(minute) => c.time(*minute),
                        Dim::Day(day) => c.day(*day),
                        Dim::Text(text) => c.text(text),
                        Dim::Int(value) => c.int(*value),
                    }
                }
                for measure in &row.measures {
                    c.int(*measure);
                }
                for (_, value) in row.derived() {
                    c.maybe_float(value);
                }
                c.end_row();
            }),
            View::Reservations => scan.build(&self.reservations, |row: &ReservationRow, c| {
                let (lines, units) = if row.lines.is_empty() {
                    (row.items.len(), row.items.iter().map(|l| l.quantity).sum())
                } else {
                    (row.lines.len(), row.lines.iter().map(|l| l.quantity).sum())
                };
                c.text(&row.reservation_id);
                c.text(row.status.as_str());
                c.maybe_text(row.reason.map(|r| r.as_str()));
                c.int(lines as i64);
                c.int(units);
                c.time(row.created_at);
                c.time(row.updated_at);
                c.end_row();
            }),
        }
    }
}

/// One batch being read: which view, from where, how much, which columns.
struct Scan<'a> {
    view: View,
    after: &'a str,
    max_rows: usize,
    projection: Option<&'a [usize]>,
}

impl Scan<'_> {
    /// Takes the next rows of one table and lets `fill` append each one's output rows.
    fn build<T: HasId>(self, rows: &Rows<T>, mut fill: impl FnMut(&T, &mut Columns)) -> Part {
        let schema = self.view.schema();
        let mut columns = Columns::for_schema(&schema, self.projection, self.max_rows);
        let mut last = None;
        let mut parents = 0;
        for row in rows.after(self.after).take(self.max_rows) {
            fill(row, &mut columns);
            last = Some(row.id());
            parents += 1;
        }
        let projected = project(&schema, self.projection);
        let options = RecordBatchOptions::new().with_row_count(Some(columns.rows));
        let batch = RecordBatch::try_new_with_options(projected, columns.finish(), &options)
            .expect("columns match the view's schema");
        Part {
            batch,
            last: last.cloned(),
            parents,
        }
    }
}

fn project(schema: &SchemaRef, projection: Option<&[usize]>) -> SchemaRef {
    match projection {
        Some(columns) => Arc::new(schema.project(columns).expect("columns of the view")),
        None => schema.clone(),
    }
}

/// A row's id, the key a scan continues from.
trait HasId {
    fn id(&self) -> &Str;
}

macro_rules! has_id {
    ($($row:ty => $id:ident),* $(,)?) => {
        $(impl HasId for $row {
            fn id(&self) -> &Str {
                &self.$id
            }
        })*
    };
}

has_id! {
    ProductRow => product_id,
    UserRow => user_id,
    CartRow => cart_id,
    OrderRow => order_id,
    PaymentRow => payment_id,
    ShipmentRow => shipment_id,
    ReservationRow => reservation_id,
    MetricRow => id,
}

/// A builder per column of a view's schema, filled a row at a time in schema order;
/// columns outside the projection are skipped.
struct Columns {
    /// By position in the view's schema; `None` when not projected.
    builders: Vec<Option<Builder>>,
    /// The output order: positions in the view's schema.
    order: Vec<usize>,
    /// The column the next value is for.
    next: usize,
    rows: usize,
}

enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Bool(BooleanBuilder),
    Time(TimestampMillisecondBuilder),
    Day(Date32Builder),
    Float(Float64Builder),
}

impl Columns {
    fn for_schema(schema: &Schema, projection: Option<&[usize]>, rows: usize) -> Columns {
        let order: Vec<usize> = match projection {
            Some(columns) => columns.to_vec(),
            None => (0..schema.fields().len()).collect(),
        };
        let builders = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                order.contains(&index).then(|| match field.data_type() {
                    DataType::Utf8 => Builder::Text(StringBuilder::with_capacity(rows, rows * 16)),
                    DataType::Int64 => Builder::Int(Int64Builder::with_capacity(rows)),
                    DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(rows)),
                    DataType::Timestamp(TimeUnit::Millisecond, zone) => Builder::Time(
                        TimestampMillisecondBuilder::with_capacity(rows)
                            .with_timezone_opt(zone.clone()),
                    ),
                    DataType::Date32 => Builder::Day(Date32Builder::with_capacity(rows)),
                    DataType::Float64 => Builder::Float(Float64Builder::with_capacity(rows)),
                    other => unreachable!("no view has a column of type {other}"),
                })
            })
            .collect();
        Columns {
            builders,
            order,
            next: 0,
            rows: 0,
        }
    }

    /// The builder of the next column, if it is projected; moves on either way.
    fn column(&mut self) -> Option<&mut Builder> {
        let index = self.next;
        self.next += 1;
        self.builders[index].as_mut()
    }

    fn end_row(&mut self) {
        debug_assert_eq!(self.next, self.builders.len(), "a value for every column");
        self.next = 0;
        self.rows += 1;
    }

    fn text(&mut self, value: &str) {
        self.maybe_text(Some(value));
    }

    fn maybe_text(&mut self, value: Option<&str>) {
        match self.column() {
            Some(Builder::Text(builder)) => builder.append_option(value),
            Some(_) => unreachable!("the column is not text"),
            None => {}
        }
    }

    fn int(&mut self, value: i64) {
        self.maybe_int(Some(value));
    }

    fn maybe_int(&mut self, value: Option<i64>) {
        match self.column() {
            Some(Builder::Int(builder)) => builder.append_option(value),
            Some(_) => unreachable!("the column is not an integer"),
            None => {}
        }
    }

    fn bool(&mut self, value: bool) {
        match self.column() {
            Some(Builder::Bool(builder)) => builder.append_value(value),
            Some(_) => unreachable!("the column is not a boolean"),
            None => {}
        }
    }

    fn time(&mut self, value: Ts) {
        self.maybe_time(Some(value));
    }

    fn maybe_time(&mut self, value: Option<Ts>) {
        match self.column() {
            Some(Builder::Time(builder)) => {
                builder.append_option(value.map(|value| i64::try_from(value).unwrap_or(i64::MAX)))
            }
            Some(_) => unreachable!("the column is not a time"),
            None => {}
        }
    }

    /// A day, as days since the Unix epoch.
    fn day(&mut self, value: i64) {
        match self.column() {
            Some(Builder::Day(builder)) => {
                builder.append_value(i32::try_from(value).unwrap_or(i32::MAX))
            }
            Some(_) => unreachable!("the column is not a date"),
            None => {}
        }
    }

    fn maybe_float(&mut self, value: Option<f64>) {
        match self.column() {
            Some(Builder::Float(builder)) => builder.append_option(value),
            Some(_) => unreachable!("the column is not a float"),
            None => {}
        }
    }

    /// The arrays, in projection order.
    fn finish(mut self) -> Vec<ArrayRef> {
        self.order
            .iter()
            .map(|&index| match self.builders[index].as_mut() {
                Some(Builder::Text(b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Builder::Int(b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Builder::Bool(b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Builder::Time(b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Builder::Day(b)) => Arc::new(b.finish()) as ArrayRef,
                Some(Builder::Float(b)) => Arc::new(b.finish()) as ArrayRef,
                None => unreachable!("projected columns have builders"),
            })
            .collect()
    }
}
