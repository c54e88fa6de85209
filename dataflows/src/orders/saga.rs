//! `OrderFulfillment`: the order aggregate and the `order_fulfillment` saga. Keyed by
//! order id.
//!
//! In: order commands at `2t` (place, cancel, status, pay, payment and carrier results,
//! refunds) and the product aggregate's replies at `2t + 1`.
//! Out: order, payment, refund and shipment events; stock requests (reserve at `2t`,
//! release or deduct at `2t` or `2t + 1`); rejections.
//!
//! Saga: create order -> reserve every line -> charge -> ship -> deliver. Compensations:
//! a line refused releases the granted ones (all or nothing); a declined or fraudulent
//! charge releases the stock; a cancel releases stock, refunds a captured charge and
//! cancels a shipment not yet dispatched. Each effect is requested exactly once; a
//! repeated result for a settled effect is refused, never applied twice.

use serde::{Deserialize, Serialize};
use timely::dataflow::Stream;

use crate::catalog::{AwaitedLines, CatalogIn, CatalogOp, StockReply};
use crate::events::{
    FraudDetected, OrderCancelled, OrderCompleted, OrderConfirmed, OrderCreated, OrderReserved,
    OrderShipped, PaymentCompleted, PaymentFailed, PaymentInitiated, RefundFailed, RefundProcessed,
    RefundRequested, ShipmentCancelled, ShipmentCreated, ShipmentDelivered, ShipmentDispatched,
};
use crate::model::*;
use crate::payments::MAX_REFUNDS_PER_PAYMENT;
use crate::shared::input::{outcome_variants, Input};
use crate::shared::ordered::{key_hash, Emitter, KeyedOrdered};
use crate::shared::sharded::ShardedMap;

pub type OrderIn = Input<OrderOp>;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OrderOp {
    Command(Command),
    Reply(StockReply),
}

impl OrderOp {
    pub fn order_id(&self) -> &str {
        match self {
            OrderOp::Reply(reply) => &reply.order_id,
            OrderOp::Command(command) => command_order_id(command).map_or("", |id| id),
        }
    }
}

/// The order a command is about, for the commands this aggregate handles.
pub fn command_order_id(command: &Command) -> Option<&Str> {
    match command {
        Command::PlaceOrder { order_id, .. }
        | Command::CancelOrder { order_id, .. }
        | Command::SetOrderStatus { order_id, .. }
        | Command::PayOrder { order_id, .. }
        | Command::PaymentResult { order_id, .. }
        | Command::ShipmentDispatched { order_id, .. }
        | Command::ShipmentDelivered { order_id, .. }
        | Command::RequestRefund { order_id, .. }
        | Command::RefundResult { order_id, .. } => Some(order_id),
        _ => None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum OrderOut {
    Event(Event),
    Stock(CatalogIn),
    Rejected(Rejection),
}

outcome_variants!(OrderOut);

/// The input of the order aggregate for a command, if the command is about an order.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<OrderIn> {
    command_order_id(&command)?;
    Some(Input::command(seq, ts, OrderOp::Command(command)))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PaymentState {
    None,
    Pending,
    Captured,
    Failed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShipmentState {
    None,
    Requested,
    Dispatched,
    Delivered,
    Cancelled,
}

#[derive(Clone, Debug)]
struct Order {
    status: OrderStatus,
    /// Boxed: held only until the charge is requested.
    card: Option<Box<CardToken>>,
    shipping_address: Option<Str>,
    /// Replies still awaited from the product aggregate, by line.
    replies: AwaitedLines,
    /// A cancel that arrived while the reservation was in flight.
    cancel_requested: Option<CancelReason>,
    /// Lines holding reserved stock right now.
    /// What the order holds (product and quantity), to release or deduct later.
    held: Box<[Line]>,
    total_cents: i64,
    currency: Str,
    payment: PaymentState,
    shipment: ShipmentState,
    captured_cents: i64,
    /// Refunds requested so far (processed or in flight), and their amounts.
    refunds: Box<[(Str, i64, Option<bool>)]>,
}

impl Order {
    fn refundable_cents(&self) -> i64 {
        let committed: i64 = self
            .refunds
            .iter()
            .filter(|(_, _, ok)| *ok != Some(false))
            .map(|(_, amount, _)| amount)
            .sum();
        self.captured_cents - committed
    }
}

pub trait OrderFulfillment<'scope> {
    /// Runs the order aggregate and saga over `self`; see the module docs.
    fn order_fulfillment(self) -> Stream<'scope, Time, Vec<OrderOut>>;
}

impl<'scope> OrderFulfillment<'scope> for Stream<'scope, Time, Vec<OrderIn>> {
    fn order_fulfillment(self) -> Stream<'scope, Time, Vec<OrderOut>> {
        let mut orders: ShardedMap<Str, Box<Order>> = ShardedMap::default();
        self.keyed_ordered(
            "OrderFulfillment",
            |input: &OrderIn| key_hash(input.op.order_id()),
            move |_time, inputs, out| {
                for input in inputs {
                    let emit = Emitter::new(
                        input.seq,
                        input.phase,
                        input.sub.saturating_mul(16),
                        input.ts,
                        &mut *out,
                    );
                    let mut saga = Saga { emit };
                    match input.op {
                        OrderOp::Command(command) => saga.command(&mut orders, command),
                        OrderOp::Reply(reply) => saga.reply(&mut orders, reply),
                    }
                }
            },
        )
    }
}

impl From<Event> for OrderOut {
    fn from(event: Event) -> Self {
        OrderOut::Event(event)
    }
}

impl From<Rejection> for OrderOut {
    fn from(rejection: Rejection) -> Self {
        OrderOut::Rejected(rejection)
    }
}

impl From<CatalogIn> for OrderOut {
    fn from(request: CatalogIn) -> Self {
        OrderOut::Stock(request)
    }
}

struct Saga<'a> {
    emit: Emitter<'a, OrderOut>,
}

impl Saga<'_> {
    fn command(&mut self, orders: &mut ShardedMap<Str, Box<Order>>, command: Command) {
        if let Command::PlaceOrder {
            order_id,
            user_id,
            items,
            payment,
            shipping_address,
            cart_id,
        } = command
        {
            return self.place(
                orders,
                order_id,
                user_id,
                items,
                payment,
                shipping_address,
                cart_id,
            );
        }
        let Some(order_id) = command_order_id(&command).cloned() else {
            return;
        };
        let Some(order) = orders.get_mut(&order_id) else {
            return self.emit.reject(
                RejectionKind::NotFound,
                format!("order {order_id} does not exist"),
            );
        };
        match command {
            Command::CancelOrder { reason, .. } if !super::client_may_cancel_for(reason) => {
                self.emit.reject(
                    RejectionKind::Invalid {
                        field: "reason".into(),
                    },
                    format!(
                        "only the order's own course can cancel it for {}",
                        reason.as_str()
                    ),
                )
            }
            Command::CancelOrder { reason, .. } => self.cancel(&order_id, order, reason),
            Command::SetOrderStatus { status, .. } => self.set_status(&order_id, order, status),
            Command::PayOrder { payment, .. } => {
                if order.status != OrderStatus::Reserved || order.payment != PaymentState::None {
                    return self.emit.conflict(
                        "payment_not_allowed",
                        format!(
                            "order {order_id} is {} and cannot take a payment now",
                            order.status.as_str()
                        ),
                    );
                }
                order.card = Some(Box::new(payment));
                self.initiate_payment(&order_id, order);
            }
            Command::PaymentResult {
                payment_id,
                outcome,
                ..
            } => self.payment_result(&order_id, order, payment_id, outcome),
            Command::ShipmentDispatched {
                shipment_id,
                carrier,
                tracking_number,
                ..
            } => {
                if order.shipment != ShipmentState::Requested
                    || order.status != OrderStatus::Confirmed
                {
                    return self.emit.conflict(
                        "shipment_not_dispatchable",
                        format!("shipment {shipment_id} cannot be dispatched now"),
                    );
                }
                order.shipment = ShipmentState::Dispatched;
                order.status = OrderStatus::Shipped;
                self.emit.event(ShipmentDispatched {
                    shipment_id: shipment_id.clone(),
                    order_id: order_id.clone(),
                    carrier,
                    tracking_number,
                });
                self.emit.event(OrderShipped {
                    order_id,
                    shipment_id,
                });
            }
            Command::ShipmentDelivered { shipment_id, .. } => {
                if order.shipment != ShipmentState::Dispatched
                    || order.status != OrderStatus::Shipped
                {
                    return self.emit.conflict(
                        "shipment_not_deliverable",
                        format!("shipment {shipment_id} is not on its way"),
                    );
                }
                self.deliver(&order_id, order, shipment_id);
            }
            Command::RequestRefund {
                payment_id,
                amount_cents,
                reason,
                ..
            } => {
                if order.payment != PaymentState::Captured {
                    return self.emit.conflict(
                        "payment_not_captured",
                        format!("payment {payment_id} has no captured amount"),
                    );
                }
                if order.refunds.len() >= MAX_REFUNDS_PER_PAYMENT {
                    return self.emit.conflict(
                        "too_many_refunds",
                        format!(
                            "payment {payment_id} has {} refunds, the most one payment may have",
                            MAX_REFUNDS_PER_PAYMENT
                        ),
                    );
                }
                let refundable = order.refundable_cents();
                let amount = amount_cents.unwrap_or(refundable);
                if amount <= 0 || amount > refundable {
                    return self.emit.reject(
                        RejectionKind::Invalid {
                            field: "amount_cents".into(),
                        },
                        format!("refund of {amount} exceeds the refundable {refundable}"),
                    );
                }
                self.request_refund(&order_id, order, amount, reason);
            }
            Command::RefundResult {
                refund_id,
                payment_id,
                succeeded,
                ..
            } => {
                let Some(refund) = order.refunds.iter_mut().find(|(id, _, _)| *id == refund_id)
                else {
                    return self.emit.reject(
                        RejectionKind::NotFound,
                        format!("refund {refund_id} does not exist"),
                    );
                };
                if refund.2.is_some() {
                    return self.emit.conflict(
                        "refund_already_settled",
                        format!("refund {refund_id} is already settled"),
                    );
                }
                refund.2 = Some(succeeded);
                let amount_cents = refund.1;
                if succeeded {
                    self.emit.event(RefundProcessed {
                        refund_id,
                        payment_id,
                        order_id,
                        amount_cents,
                    });
                } else {
                    self.emit.event(RefundFailed {
                        refund_id,
                        payment_id,
                        order_id,
                    });
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn place(
        &mut self,
        orders: &mut ShardedMap<Str, Box<Order>>,
        order_id: Str,
        user_id: Str,
        items: Vec<Line>,
        card: Option<CardToken>,
        shipping_address: Option<Str>,
        cart_id: Option<Str>,
    ) {
        if orders.contains_key(&order_id) {
            return self
                .emit
                .conflict("order_exists", format!("order {order_id} already exists"));
        }
        let items = match super::order_lines(items) {
            Ok(items) => items,
            Err(problem) => {
                return self.emit.reject(
                    RejectionKind::Invalid {
                        field: "items".into(),
                    },
                    problem.message(),
                )
            }
        };
        self.emit.event(OrderCreated {
            order_id: order_id.clone(),
            user_id,
            items: items.clone(),
            cart_id,
            shipping_address: shipping_address.clone(),
        });
        for (line, item) in items.iter().enumerate() {
            self.emit.stock(
                line as u16,
                CatalogOp::Reserve {
                    holder: Holder::Order,
                    product_id: item.product_id.clone(),
                    order_id: order_id.clone(),
                    line: line as u16,
                    quantity: item.quantity,
                },
            );
        }
        // Boxed: the map of every order ever placed then holds a pointer per slot, not a
        // whole (mostly idle) order.
        orders.insert(
            order_id,
            Box::new(Order {
                status: OrderStatus::Pending,
                replies: AwaitedLines::new(items.len()),
                card: card.map(Box::new),
                shipping_address,
                cancel_requested: None,
                held: Box::default(),
                total_cents: 0,
                currency: Str::default(),
                payment: PaymentState::None,
                shipment: ShipmentState::None,
                captured_cents: 0,
                refunds: Box::default(),
            }),
        );
    }

    /// Second round: the product aggregate answered a line. Once every line has an
    /// answer, the order holds all of them or releases the ones it got.
    fn reply(&mut self, orders: &mut ShardedMap<Str, Box<Order>>, reply: StockReply) {
        let Some(order) = orders.get_mut(&reply.order_id) else {
            return;
        };
        if order.status != OrderStatus::Pending {
            return;
        }
        let order_id = reply.order_id.clone();
        let Some((granted, refused)) = order.replies.answer(reply) else {
            return;
        };
        let currency = granted
            .first()
            .map(|line| line.currency.clone())
            .unwrap_or_default();
        let mixed_currency = granted.iter().any(|line| line.currency != currency);
        let failure = refused
            .or(if mixed_currency {
                Some(CancelReason::InvalidItems)
            } else {
                None
            })
            .or(order.cancel_requested);
        order.held = granted
            .iter()
            .map(|line| Line {
                product_id: line.product_id.clone(),
                quantity: line.quantity,
            })
            .collect();
        if let Some(reason) = failure {
            return self.cancel_with(&order_id, order, reason);
        }
        order.total_cents = granted
            .iter()
            .map(|line| line.unit_price_cents.saturating_mul(line.quantity))
            .fold(0, i64::saturating_add);
        order.currency = currency.clone();
        order.status = OrderStatus::Reserved;
        self.emit.event(OrderReserved {
            order_id: order_id.clone(),
            lines: granted,
            total_cents: order.total_cents,
            currency,
        });
        if order.card.is_some() {
            self.initiate_payment(&order_id, order);
        }
    }

    fn initiate_payment(&mut self, order_id: &Str, order: &mut Order) {
        // The card is needed once: the charge request carries it from here on.
        let Some(card) = order.card.take() else {
            return;
        };
        order.payment = PaymentState::Pending;
        self.emit.event(PaymentInitiated {
            payment_id: payment_id_for(order_id),
            order_id: order_id.clone(),
            amount_cents: order.total_cents,
            currency: order.currency.clone(),
            card: *card,
        });
    }

    fn payment_result(
        &mut self,
        order_id: &Str,
        order: &mut Order,
        payment_id: Str,
        outcome: PaymentOutcome,
    ) {
        if order.payment != PaymentState::Pending || payment_id != payment_id_for(order_id) {
            return self.emit.conflict(
                "payment_already_settled",
                format!("payment {payment_id} is not awaiting a result"),
            );
        }
        let order_id = order_id.clone();
        match outcome {
            PaymentOutcome::Approved { charge_id } => {
                order.payment = PaymentState::Captured;
                order.captured_cents = order.total_cents;
                self.emit.event(PaymentCompleted {
                    payment_id: payment_id.clone(),
                    order_id: order_id.clone(),
                    charge_id,
                });
                if order.status == OrderStatus::Reserved {
                    order.status = OrderStatus::Confirmed;
                    order.shipment = ShipmentState::Requested;
                    self.emit.event(OrderConfirmed {
                        order_id: order_id.clone(),
                        payment_id,
                    });
                    self.emit.event(ShipmentCreated {
                        shipment_id: shipment_id_for(&order_id),
                        order_id,
                        address: order.shipping_address.take(),
                    });
                } else {
                    // The order was cancelled while the charge was in flight: give it back.
                    let amount = order.captured_cents;
                    self.request_refund(&order_id, order, amount, "order_cancelled".into());
                }
            }
            PaymentOutcome::Declined { decline_code } => {
                order.payment = PaymentState::Failed;
                self.emit.event(PaymentFailed {
                    payment_id,
                    order_id: order_id.clone(),
                    decline_code,
                });
                if order.status == OrderStatus::Reserved {
                    self.cancel_with(&order_id, order, CancelReason::PaymentDeclined);
                }
            }
            PaymentOutcome::Fraud { decline_code } => {
                order.payment = PaymentState::Failed;
                self.emit.event(FraudDetected {
                    payment_id: payment_id.clone(),
                    order_id: order_id.clone(),
                });
                self.emit.event(PaymentFailed {
                    payment_id,
                    order_id: order_id.clone(),
                    decline_code,
                });
                if order.status == OrderStatus::Reserved {
                    self.cancel_with(&order_id, order, CancelReason::FraudSuspected);
                }
            }
        }
    }

    fn cancel(&mut self, order_id: &Str, order: &mut Order, reason: CancelReason) {
        match order.status {
            OrderStatus::Pending => order.cancel_requested = Some(reason),
            OrderStatus::Reserved | OrderStatus::Confirmed => {
                self.cancel_with(order_id, order, reason)
            }
            OrderStatus::Shipped | OrderStatus::Completed => self.emit.conflict(
                "order_already_shipped",
                format!(
                    "order {order_id} is {} and can no longer be cancelled",
                    order.status.as_str()
                ),
            ),
            OrderStatus::Cancelled => self.emit.conflict(
                "order_already_cancelled",
                format!("order {order_id} is already cancelled"),
            ),
        }
    }

    /// Cancels the order and runs every compensation its state calls for.
    fn cancel_with(&mut self, order_id: &Str, order: &mut Order, reason: CancelReason) {
        order.card = None;
        order.shipping_address = None;
        for (line, held) in std::mem::take(&mut order.held)
            .into_vec()
            .into_iter()
            .enumerate()
        {
            self.emit.stock(
                line as u16,
                CatalogOp::Release {
                    product_id: held.product_id,
                    order_id: order_id.clone(),
                    quantity: held.quantity,
                },
            );
        }
        if order.shipment == ShipmentState::Requested {
            order.shipment = ShipmentState::Cancelled;
            self.emit.event(ShipmentCancelled {
                shipment_id: shipment_id_for(order_id),
                order_id: order_id.clone(),
            });
        }
        order.status = OrderStatus::Cancelled;
        self.emit.event(OrderCancelled {
            order_id: order_id.clone(),
            reason,
        });
        if order.payment == PaymentState::Captured && order.refundable_cents() > 0 {
            let amount = order.refundable_cents();
            self.request_refund(order_id, order, amount, "order_cancelled".into());
        }
    }

    fn request_refund(
        &mut self,
        order_id: &Str,
        order: &mut Order,
        amount_cents: i64,
        reason: Str,
    ) {
        let payment_id = payment_id_for(order_id);
        let refund_id = refund_id_for(&payment_id, order.refunds.len() + 1);
        push_boxed(&mut order.refunds, (refund_id.clone(), amount_cents, None));
        self.emit.event(RefundRequested {
            refund_id,
            payment_id,
            order_id: order_id.clone(),
            amount_cents,
            reason,
        });
    }

    fn deliver(&mut self, order_id: &Str, order: &mut Order, shipment_id: Str) {
        for (line, held) in std::mem::take(&mut order.held)
            .into_vec()
            .into_iter()
            .enumerate()
        {
            self.emit.stock(
                line as u16,
                CatalogOp::Deduct {
                    product_id: held.product_id,
                    order_id: order_id.clone(),
                    quantity: held.quantity,
                },
            );
        }
        order.shipment = ShipmentState::Delivered;
        order.status = OrderStatus::Completed;
        self.emit.event(ShipmentDelivered {
            shipment_id,
            order_id: order_id.clone(),
        });
        self.emit.event(OrderCompleted {
            order_id: order_id.clone(),
        });
    }

    /// Manual status changes follow the same state machine as the saga.
    fn set_status(&mut self, order_id: &Str, order: &mut Order, status: OrderStatus) {
        match (order.status, status) {
            (current, wanted) if current == wanted => {}
            (_, OrderStatus::Cancelled) => self.cancel(order_id, order, CancelReason::AdminRequest),
            (OrderStatus::Confirmed, OrderStatus::Shipped)
                if order.shipment == ShipmentState::Requested =>
            {
                let shipment_id = shipment_id_for(order_id);
                order.shipment = ShipmentState::Dispatched;
                order.status = OrderStatus::Shipped;
                self.emit.event(ShipmentDispatched {
                    shipment_id: shipment_id.clone(),
                    order_id: order_id.clone(),
                    carrier: "manual".into(),
                    tracking_number: Str::default(),
                });
                self.emit.event(OrderShipped {
                    order_id: order_id.clone(),
                    shipment_id,
                });
            }
            (OrderStatus::Shipped, OrderStatus::Completed) => {
                self.deliver(order_id, order, shipment_id_for(order_id))
            }
            (current, wanted) => self.emit.conflict(
                "invalid_transition",
                format!(
                    "order {order_id} cannot go from {} to {}",
                    current.as_str(),
                    wanted.as_str()
                ),
            ),
        }
    }
}
