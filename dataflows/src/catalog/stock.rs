//! `ReserveStock`: the product aggregate. Keyed by product id.
//!
//! In: catalog commands (create, update, adjust) and the saga's stock requests
//! (reserve a line, release it, deduct it on delivery), at the time of the batch.
//! Out: product and inventory events, replies to the order saga, rejections.
//!
//! Invariant: `0 <= reserved <= on_hand` for every product at every time; a reserve
//! request is granted in log order, first come first served, only if the whole line
//! fits into what is available. Granting all lines of an order or none is the saga's
//! job (`orders.rs`): it releases the granted lines of an order that lost any line.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use crate::events::{
    InventoryDeducted, InventoryReleased, InventoryReserved, LowStock, ProductCreated,
    ProductUpdated, StockAdjusted,
};
use crate::model::*;
use crate::shared::claims::{Claim, Taken};
use crate::shared::input::{outcome_variants, Input};
use crate::shared::ordered::{key_hash, Emitter, KeyedOrdered};

/// A request to the product aggregate, ordered by the command that caused it.
pub type CatalogIn = Input<CatalogOp>;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CatalogOp {
    Create {
        product_id: Str,
        sku: Str,
        name: Str,
        price_cents: i64,
        currency: Str,
        initial_stock: i64,
        warehouse_id: Option<Str>,
        reorder_point: i64,
    },
    Update {
        product_id: Str,
        sku: Option<Str>,
        name: Option<Str>,
        price_cents: Option<i64>,
        currency: Option<Str>,
        reorder_point: Option<i64>,
    },
    Adjust {
        product_id: Str,
        delta: i64,
        reason: Str,
    },
    /// Hold `quantity` for `order_id`, which names an order or a reservation (`holder`).
    Reserve {
        product_id: Str,
        holder: Holder,
        order_id: Str,
        line: u16,
        quantity: i64,
    },
    Release {
        product_id: Str,
        order_id: Str,
        quantity: i64,
    },
    Deduct {
        product_id: Str,
        order_id: Str,
        quantity: i64,
    },
}

impl CatalogOp {
    pub fn product_id(&self) -> &Str {
        match self {
            CatalogOp::Create { product_id, .. }
            | CatalogOp::Update { product_id, .. }
            | CatalogOp::Adjust { product_id, .. }
            | CatalogOp::Reserve { product_id, .. }
            | CatalogOp::Release { product_id, .. }
            | CatalogOp::Deduct { product_id, .. } => product_id,
        }
    }
}

/// A claim on a sku, which must be unique across products; a won claim goes on to the
/// product aggregate.
pub type SkuIn = Input<Claim<CatalogOp>>;

/// How `ClaimSku` refuses a sku another product holds.
pub const SKU_TAKEN: Taken = Taken {
    code: "sku_taken",
    detail: |sku| format!("a product with sku {sku:?} already exists"),
};

/// The product aggregate's answer to one reserve request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StockReply {
    pub holder: Holder,
    pub order_id: Str,
    pub seq: Seq,
    pub ts: Ts,
    pub line: u16,
    pub product_id: Str,
    pub quantity: i64,
    /// The priced line when granted; otherwise why not.
    pub outcome: Result<PricedLine, CancelReason>,
}

/// The answers a holder (order or reservation) awaits, one per line.
#[derive(Clone, Debug, Default)]
pub struct AwaitedLines(Box<[Option<StockReply>]>);

impl AwaitedLines {
    pub fn new(lines: usize) -> AwaitedLines {
        AwaitedLines(vec![None; lines].into_boxed_slice())
    }

    pub fn is_waiting(&self) -> bool {
        !self.0.is_empty()
    }

    /// Records an answer. Once every line is answered, returns the granted lines and the
    /// reason any line was refused, and keeps nothing more.
    pub fn answer(&mut self, reply: StockReply) -> Option<(Vec<PricedLine>, Option<CancelReason>)> {
        let line = usize::from(reply.line);
        *self.0.get_mut(line)? = Some(reply);
        if self.0.iter().any(Option::is_none) {
            return None;
        }
        let mut granted = Vec::with_capacity(self.0.len());
        let mut refused = None;
        for reply in std::mem::take(&mut self.0).into_vec().into_iter().flatten() {
            match reply.outcome {
                Ok(line) => granted.push(line),
                Err(reason) => refused = refused.or(Some(reason)),
            }
        }
        Some((granted, refused))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CatalogOut {
    /// The product no longer holds this sku (refused create or update, sku changed).
    ReleaseSku(SkuIn),
    Event(Event),
    Reply(StockReply),
    Rejected(Rejection),
}

impl StockReply {
    /// The reply as an input of the aggregate that asked, in the saga's second round.
    pub fn into_input<Op>(self, op: impl FnOnce(StockReply) -> Op) -> Input<Op> {
        Input {
            seq: self.seq,
            phase: 1,
            sub: self.line,
            ts: self.ts,
            op: op(self),
        }
    }
}

outcome_variants!(CatalogOut);

/// The sku a command must claim before the product aggregate sees it: a create's, or
/// the new sku of an update that changes it.
pub fn claimed_sku(command: &Command) -> Option<&Str> {
    match command {
        Command::CreateProduct { sku, .. } | Command::UpdateProduct { sku: Some(sku), .. } => {
            Some(sku)
        }
        _ => None,
    }
}

fn catalog_op(command: Command) -> Option<CatalogOp> {
    match command {
        Command::CreateProduct {
            product_id,
            sku,
            name,
            price_cents,
            currency,
            initial_stock,
            warehouse_id,
            reorder_point,
        } => Some(CatalogOp::Create {
            product_id,
            sku,
            name,
            price_cents,
            currency,
            initial_stock,
            warehouse_id,
            reorder_point,
        }),
        Command::UpdateProduct {
            product_id,
            sku,
            name,
            price_cents,
            currency,
            reorder_point,
        } => Some(CatalogOp::Update {
            product_id,
            sku,
            name,
            price_cents,
            currency,
            reorder_point,
        }),
        Command::AdjustStock {
            product_id,
            delta,
            reason,
        } => Some(CatalogOp::Adjust {
            product_id,
            delta,
            reason,
        }),
        _ => None,
    }
}

/// The sku claim a command must win before the product aggregate sees it: a create, or
/// an update that changes the sku.
pub fn route_claim(seq: Seq, ts: Ts, command: Command) -> Option<SkuIn> {
    let sku = claimed_sku(&command)?.clone();
    let op = catalog_op(command)?;
    let product_id = op.product_id().clone();
    Some(Input::command(
        seq,
        ts,
        Claim::Take {
            value: sku,
            owner: product_id,
            then: op,
        },
    ))
}

/// The input of the product aggregate for a command that claims no sku.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<CatalogIn> {
    if claimed_sku(&command).is_some() {
        return None;
    }
    catalog_op(command).map(|op| Input::command(seq, ts, op))
}

#[derive(Clone, Debug)]
struct Product {
    sku: Str,
    name: Str,
    price_cents: i64,
    currency: Str,
    reorder_point: i64,
    on_hand: i64,
    reserved: i64,
}

impl Product {
    fn available(&self) -> i64 {
        super::available(self.on_hand, self.reserved)
    }
}

pub trait ReserveStock<'scope> {
    /// Runs the product aggregate over `self`; see the module docs.
    fn reserve_stock(self) -> Stream<'scope, Time, Vec<CatalogOut>>;
}

impl<'scope> ReserveStock<'scope> for Stream<'scope, Time, Vec<CatalogIn>> {
    fn reserve_stock(self) -> Stream<'scope, Time, Vec<CatalogOut>> {
        let mut products: HashMap<Str, Product> = HashMap::new();
        self.keyed_ordered(
            "ReserveStock",
            |request: &CatalogIn| key_hash(request.op.product_id()),
            move |_time, requests, out| {
                for request in requests {
                    decide(&mut products, request, out);
                }
            },
        )
    }
}

impl From<Event> for CatalogOut {
    fn from(event: Event) -> Self {
        CatalogOut::Event(event)
    }
}

impl From<Rejection> for CatalogOut {
    fn from(rejection: Rejection) -> Self {
        CatalogOut::Rejected(rejection)
    }
}

/// Gives a sku back to `ClaimSku` one round later (through the feedback edge).
fn release_sku(emit: &mut Emitter<'_, CatalogOut>, sku: &Str, product_id: &Str) {
    emit.out.push(CatalogOut::ReleaseSku(Input {
        seq: emit.seq,
        phase: 1,
        sub: 0,
        ts: emit.ts,
        op: Claim::Release {
            value: sku.clone(),
            owner: product_id.clone(),
        },
    }));
}

/// `inventory.low_stock` when availability crosses the reorder point downwards.
fn low_stock_check(
    emit: &mut Emitter<'_, CatalogOut>,
    product_id: &Str,
    before: i64,
    product: &Product,
) {
    let after = product.available();
    if before > product.reorder_point && after <= product.reorder_point {
        emit.event(LowStock {
            product_id: product_id.clone(),
            available: after,
            reorder_point: product.reorder_point,
        });
    }
}

/// Asks the product aggregate for stock on behalf of the input being handled.
impl<O: From<CatalogIn>> Emitter<'_, O> {
    pub fn stock(&mut self, line: u16, op: CatalogOp) {
        self.out.push(O::from(CatalogIn {
            seq: self.seq,
            phase: self.phase,
            sub: line,
            ts: self.ts,
            op,
        }));
    }
}

fn decide(products: &mut HashMap<Str, Product>, request: CatalogIn, out: &mut Vec<CatalogOut>) {
    // Sub-indices of a line's events leave room for several events per line.
    let mut emit = Emitter::new(
        request.seq,
        request.phase,
        request.sub.saturating_mul(8),
        request.ts,
        out,
    );
    match request.op {
        CatalogOp::Create {
            product_id,
            sku,
            name,
            price_cents,
            currency,
            initial_stock,
            warehouse_id,
            reorder_point,
        } => {
            if products.contains_key(&product_id) {
                release_sku(&mut emit, &sku, &product_id);
                emit.reject(
                    RejectionKind::Conflict {
                        code: "product_exists".into(),
                    },
                    format!("product {product_id} already exists"),
                );
                return;
            }
            if let Err((field, detail)) = product_bounds(Some(price_cents), Some(initial_stock)) {
                release_sku(&mut emit, &sku, &product_id);
                emit.reject(
                    RejectionKind::Invalid {
                        field: field.into(),
                    },
                    detail,
                );
                return;
            }
            emit.event(ProductCreated {
                product_id: product_id.clone(),
                sku: sku.clone(),
                name: name.clone(),
                price_cents,
                currency: currency.clone(),
                reorder_point,
                warehouse_id,
            });
            let product = Product {
                sku,
                name,
                price_cents,
                currency,
                reorder_point,
                on_hand: initial_stock,
                reserved: 0,
            };
            if initial_stock != 0 {
                emit.event(StockAdjusted {
                    product_id: product_id.clone(),
                    delta: initial_stock,
                    reason: "initial_stock".into(),
                });
            }
            products.insert(product_id, product);
        }
        CatalogOp::Update {
            product_id,
            sku,
            name,
            price_cents,
            currency,
            reorder_point,
        } => {
            let Some(product) = products.get_mut(&product_id) else {
                if let Some(sku) = &sku {
                    release_sku(&mut emit, sku, &product_id);
                }
                emit.reject(
                    RejectionKind::NotFound,
                    format!("product {product_id} does not exist"),
                );
                return;
            };
            if let Err((field, detail)) = product_bounds(price_cents, None) {
                if let Some(sku) = sku.as_ref().filter(|sku| **sku != product.sku) {
                    release_sku(&mut emit, sku, &product_id);
                }
                emit.reject(
                    RejectionKind::Invalid {
                        field: field.into(),
                    },
                    detail,
                );
                return;
            }
            if let Some(sku) = sku {
                if sku != product.sku {
                    release_sku(&mut emit, &product.sku, &product_id);
                }
                product.sku = sku;
            }
            if let Some(name) = name {
                product.name = name;
            }
            if let Some(price_cents) = price_cents {
                product.price_cents = price_cents;
            }
            if let Some(currency) = currency {
                product.currency = currency;
            }
            if let Some(reorder_point) = reorder_point {
                product.reorder_point = reorder_point;
            }
            emit.event(ProductUpdated {
                product_id,
                sku: product.sku.clone(),
                name: product.name.clone(),
                price_cents: product.price_cents,
                currency: product.currency.clone(),
                reorder_point: product.reorder_point,
            });
        }
        CatalogOp::Adjust {
            product_id,
            delta,
            reason,
        } => {
            let Some(product) = products.get_mut(&product_id) else {
                emit.reject(
                    RejectionKind::NotFound,
                    format!("product {product_id} does not exist"),
                );
                return;
            };
            let before = product.available();
            // The log may hold commands no HTTP check saw: bound them, and never wrap.
            let Some(on_hand) = product
                .on_hand
                .checked_add(delta)
                .filter(|_| super::adjustment_in_bounds(delta))
            else {
                emit.reject(
                    RejectionKind::Invalid {
                        field: "delta".into(),
                    },
                    format!(
                        "an adjustment is non-zero and at most {} either way, and keeps on hand countable",
                        super::MAX_QUANTITY
                    ),
                );
                return;
            };
            if on_hand < product.reserved {
                emit.reject(
                    RejectionKind::Conflict {
                        code: "insufficient_stock".into(),
                    },
                    format!(
                        "adjusting by {delta} would leave {on_hand} on hand for {} reserved",
                        product.reserved
                    ),
                );
                return;
            }
            product.on_hand = on_hand;
            emit.event(StockAdjusted {
                product_id: product_id.clone(),
                delta,
                reason,
            });
            low_stock_check(&mut emit, &product_id, before, product);
        }
        CatalogOp::Reserve {
            product_id,
            holder,
            order_id,
            line,
            quantity,
        } => {
            let outcome = match products.get_mut(&product_id) {
                None => Err(CancelReason::InvalidItems),
                Some(product) if quantity <= 0 => {
                    let _ = product;
                    Err(CancelReason::InvalidItems)
                }
                Some(product) if product.available() < quantity => Err(CancelReason::OutOfStock),
                Some(product) => {
                    let before = product.available();
                    product.reserved += quantity;
                    emit.event(InventoryReserved {
                        product_id: product_id.clone(),
                        order_id: order_id.clone(),
                        quantity,
                    });
                    low_stock_check(&mut emit, &product_id, before, product);
                    Ok(PricedLine {
                        product_id: product_id.clone(),
                        quantity,
                        unit_price_cents: product.price_cents,
                        currency: product.currency.clone(),
                    })
                }
            };
            emit.out.push(CatalogOut::Reply(StockReply {
                holder,
                order_id,
                seq: request.seq,
                ts: request.ts,
                line,
                product_id,
                quantity,
                outcome,
            }));
        }
        CatalogOp::Release {
            product_id,
            order_id,
            quantity,
        } => {
            if let Some(product) = products.get_mut(&product_id) {
                // The saga only releases what it was granted; the clamp keeps the invariant
                // even if a release were ever replayed twice, or written by another tool.
                let quantity = quantity.clamp(0, product.reserved);
                product.reserved -= quantity;
                emit.event(InventoryReleased {
                    product_id,
                    order_id,
                    quantity,
                });
            }
        }
        CatalogOp::Deduct {
            product_id,
            order_id,
            quantity,
        } => {
            if let Some(product) = products.get_mut(&product_id) {
                let quantity = quantity.clamp(0, product.reserved);
                product.reserved -= quantity;
                product.on_hand -= quantity;
                emit.event(InventoryDeducted {
                    product_id,
                    order_id,
                    quantity,
                });
            }
        }
    }
}

/// Prices and initial stock within the bounds that keep every total countable.
fn product_bounds(
    price_cents: Option<i64>,
    initial_stock: Option<i64>,
) -> Result<(), (&'static str, String)> {
    if price_cents.is_some_and(|price| !(0..=super::MAX_PRICE_CENTS).contains(&price)) {
        return Err((
            "price_cents",
            format!("a price is 0 to {} minor units", super::MAX_PRICE_CENTS),
        ));
    }
    if initial_stock.is_some_and(|stock| !(0..=super::MAX_QUANTITY).contains(&stock)) {
        return Err((
            "initial_stock",
            format!("initial stock is 0 to {} units", super::MAX_QUANTITY),
        ));
    }
    Ok(())
}
