//! Views as Arrow record batches, read through one snapshot: every batch of a scan is at
//! the same frontier however long the scan takes, and a scan copies only the batch it is
//! building. SQL tables (DataFusion) read the live views through `ViewScan`.
//!
//! ```ignore
//! let scan = ViewScan::new(store.read(), View::Orders, 8192);
//! for batch in scan { /* RecordBatch of up to 8192 orders, in id order */ }
//! ```

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use dataflows::model::{payment_id_for, shipment_id_for, Str, Ts};
use dataflows::views::{OrderRow, PaymentRow, ProductRow, ShipmentRow, UserRow};

use crate::snapshot::{Rows, Snapshot};

/// The views a scan reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum View {
    Products,
    Users,
    Orders,
    Payments,
    Shipments,
}

impl View {
    pub const ALL: [View; 5] = [
        View::Products,
        View::Users,
        View::Orders,
        View::Payments,
        View::Shipments,
    ];

    /// The view's name as a table.
    pub fn name(self) -> &'static str {
        match self {
            View::Products => "products",
            View::Users => "users",
            View::Orders => "orders",
            View::Payments => "payments",
            View::Shipments => "shipments",
        }
    }

    pub fn schema(self) -> SchemaRef {
        let text = |name: &str| Field::new(name, DataType::Utf8, false);
        let maybe_text = |name: &str| Field::new(name, DataType::Utf8, true);
        let int = |name: &str| Field::new(name, DataType::Int64, false);
        let time = |name: &str| {
            Field::new(
                name,
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            )
        };
        let fields = match self {
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
            // Never the password hash.
            View::Users => vec![
                text("id"),
                text("email"),
                text("name"),
                time("created_at"),
                time("updated_at"),
            ],
            View::Orders => vec![
                text("id"),
                text("user_id"),
                text("status"),
                maybe_text("cancel_reason"),
                int("lines"),
                int("units"),
                int("total_cents"),
                text("currency"),
                maybe_text("payment_id"),
                maybe_text("shipment_id"),
                maybe_text("cart_id"),
                time("created_at"),
                time("updated_at"),
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
                Field::new("fraud_suspected", DataType::Boolean, false),
                time("created_at"),
                time("updated_at"),
            ],
            View::Shipments => vec![
                text("id"),
                text("order_id"),
                text("status"),
                maybe_text("carrier"),
                maybe_text("tracking_number"),
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
            after: None,
            done: false,
        }
    }

    /// The frontier every batch of this scan is at.
    pub fn frontier(&self) -> dataflows::model::Time {
        self.snapshot.frontier
    }
}

impl Iterator for ViewScan {
    type Item = RecordBatch;

    fn next(&mut self) -> Option<RecordBatch> {
        if self.done {
            return None;
        }
        let after = self.after.as_deref().unwrap_or("");
        let (batch, last) = self.snapshot.batch(self.view, after, self.batch_rows);
        self.done = last.is_none() || batch.num_rows() < self.batch_rows;
        self.after = last;
        (batch.num_rows() > 0).then_some(batch)
    }
}

impl Snapshot {
    /// Up to `max_rows` rows of `view` whose ids sort after `after` (all, for ""), in id
    /// order, as one batch; with the id of its last row, to continue from.
    pub fn batch(&self, view: View, after: &str, max_rows: usize) -> (RecordBatch, Option<Str>) {
        match view {
            View::Products => build(view, &self.products, after, max_rows, |rows, columns| {
                for row in rows {
                    let level = self.stock_of(&row.product_id);
                    columns.text(0, &row.product_id);
                    columns.text(1, &row.sku);
                    columns.text(2, &row.name);
                    columns.int(3, row.price_cents);
                    columns.text(4, &row.currency);
                    columns.int(5, row.reorder_point);
                    columns.maybe_text(6, row.warehouse_id.as_deref());
                    columns.int(7, level.on_hand);
                    columns.int(8, level.reserved);
                    columns.int(9, level.available());
                    columns.time(10, row.created_at);
                    columns.time(11, row.updated_at);
                }
            }),
            View::Users => build(
                view,
                &self.users,
                after,
                max_rows,
                |rows: &[&UserRow], columns| {
                    for row in rows {
                        columns.text(0, &row.user_id);
                        columns.text(1, &row.email);
                        columns.text(2, &row.name);
                        columns.time(3, row.created_at);
                        columns.time(4, row.updated_at);
                    }
                },
            ),
            View::Orders => build(
                view,
                &self.orders,
                after,
                max_rows,
                |rows: &[&OrderRow], columns| {
                    for row in rows {
                        let (lines, units) = if row.lines.is_empty() {
                            (row.items.len(), row.items.iter().map(|l| l.quantity).sum())
                        } else {
                            (row.lines.len(), row.lines.iter().map(|l| l.quantity).sum())
                        };
                        columns.text(0, &row.order_id);
                        columns.text(1, &row.user_id);
                        columns.text(2, row.status.as_str());
                        columns.maybe_text(3, row.cancel_reason.map(|r| r.as_str()));
                        columns.int(4, lines as i64);
                        columns.int(5, units);
                        columns.int(6, row.total_cents);
                        columns.text(7, &row.currency);
                        columns.maybe_text(
                            8,
                            row.has_payment
                                .then(|| payment_id_for(&row.order_id))
                                .as_deref(),
                        );
                        columns.maybe_text(
                            9,
                            row.has_shipment
                                .then(|| shipment_id_for(&row.order_id))
                                .as_deref(),
                        );
                        columns.maybe_text(10, row.cart_id.as_deref());
                        columns.time(11, row.created_at);
                        columns.time(12, row.updated_at);
                    }
                },
            ),
            View::Payments => build(
                view,
                &self.payments,
                after,
                max_rows,
                |rows: &[&PaymentRow], columns| {
                    for row in rows {
                        columns.text(0, &row.payment_id);
                        columns.text(1, &row.order_id);
                        columns.text(2, row.status.as_str());
                        columns.int(3, row.amount_cents);
                        columns.text(4, &row.currency);
                        columns.int(5, row.captured_cents);
                        columns.int(6, row.refunded_cents);
                        columns.int(7, row.refunds.len() as i64);
                        columns.text(8, &row.card_brand);
                        columns.text(9, &row.card_last4);
                        columns.maybe_text(10, row.decline_code.as_deref());
                        columns.bool(11, row.fraud);
                        columns.time(12, row.created_at);
                        columns.time(13, row.updated_at);
                    }
                },
            ),
            View::Shipments => build(
                view,
                &self.shipments,
                after,
                max_rows,
                |rows: &[&ShipmentRow], columns| {
                    for row in rows {
                        columns.text(0, &row.shipment_id);
                        columns.text(1, &row.order_id);
                        columns.text(2, row.status.as_str());
                        columns.maybe_text(3, row.carrier.as_deref());
                        columns.maybe_text(4, row.tracking_number.as_deref());
                        columns.time(5, row.created_at);
                        columns.time(6, row.updated_at);
                    }
                },
            ),
        }
    }
}

/// Takes the next rows of one view and lets `fill` append them to its columns.
fn build<T: HasId>(
    view: View,
    rows: &Rows<T>,
    after: &str,
    max_rows: usize,
    fill: impl FnOnce(&[&T], &mut Columns),
) -> (RecordBatch, Option<Str>) {
    let page: Vec<&T> = rows.after(after).take(max_rows).collect();
    let last = page.last().map(|row| row.id().clone());
    let schema = view.schema();
    let mut columns = Columns::for_schema(&schema, page.len());
    fill(&page, &mut columns);
    let batch =
        RecordBatch::try_new(schema, columns.finish()).expect("columns match the view's schema");
    (batch, last)
}

/// A row's id, the key a scan continues from.
trait HasId {
    fn id(&self) -> &Str;
}

impl HasId for ProductRow {
    fn id(&self) -> &Str {
        &self.product_id
    }
}
impl HasId for UserRow {
    fn id(&self) -> &Str {
        &self.user_id
    }
}
impl HasId for OrderRow {
    fn id(&self) -> &Str {
        &self.order_id
    }
}
impl HasId for PaymentRow {
    fn id(&self) -> &Str {
        &self.payment_id
    }
}
impl HasId for ShipmentRow {
    fn id(&self) -> &Str {
        &self.shipment_id
    }
}

/// One builder per column of a view's schema, appended to by position.
struct Columns {
    builders: Vec<Builder>,
}

enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Bool(BooleanBuilder),
    Time(TimestampMillisecondBuilder),
}

impl Columns {
    fn for_schema(schema: &Schema, rows: usize) -> Columns {
        let builders = schema
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                DataType::Utf8 => Builder::Text(StringBuilder::with_capacity(rows, rows * 16)),
                DataType::Int64 => Builder::Int(Int64Builder::with_capacity(rows)),
                DataType::Boolean => Builder::Bool(BooleanBuilder::with_capacity(rows)),
                DataType::Timestamp(TimeUnit::Millisecond, zone) => Builder::Time(
                    TimestampMillisecondBuilder::with_capacity(rows)
                        .with_timezone_opt(zone.clone()),
                ),
                other => unreachable!("no view has a column of type {other}"),
            })
            .collect();
        Columns { builders }
    }

    fn text(&mut self, index: usize, value: &str) {
        self.maybe_text(index, Some(value));
    }

    fn maybe_text(&mut self, index: usize, value: Option<&str>) {
        match &mut self.builders[index] {
            Builder::Text(builder) => builder.append_option(value),
            _ => unreachable!("column {index} is not text"),
        }
    }

    fn int(&mut self, index: usize, value: i64) {
        match &mut self.builders[index] {
            Builder::Int(builder) => builder.append_value(value),
            _ => unreachable!("column {index} is not an integer"),
        }
    }

    fn bool(&mut self, index: usize, value: bool) {
        match &mut self.builders[index] {
            Builder::Bool(builder) => builder.append_value(value),
            _ => unreachable!("column {index} is not a boolean"),
        }
    }

    fn time(&mut self, index: usize, value: Ts) {
        match &mut self.builders[index] {
            Builder::Time(builder) => {
                builder.append_value(i64::try_from(value).unwrap_or(i64::MAX))
            }
            _ => unreachable!("column {index} is not a time"),
        }
    }

    /// The arrays, in schema order.
    fn finish(self) -> Vec<ArrayRef> {
        self.builders
            .into_iter()
            .map(|builder| match builder {
                Builder::Text(mut b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Int(mut b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Bool(mut b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Time(mut b) => Arc::new(b.finish()) as ArrayRef,
            })
            .collect()
    }
}
