//! The whole tidemark dataflow: commands in; events, view rows and rejections out.

use std::collections::VecDeque;
use std::sync::Arc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, Concatenate, ConnectLoop, Feedback};
use timely::dataflow::{Scope, Stream};

use crate::carts::{CartIn, ShoppingCarts};
use crate::catalog::{
    CatalogIn, CatalogOp, CatalogOut, ClaimSku, ReserveStock, SkuIn, SkuOp, StockReply,
};
use crate::model::*;
use crate::ordered::{key_hash, KeyedOrdered};
use crate::orders::{command_order_id, OrderFulfillment, OrderIn, OrderOp, OrderOut};
use crate::reservations::{ReservationIn, ReservationOp, StockReservations};
use crate::sharded::{ShardedMap, ShardedSet};
use crate::users::{email_key, ClaimEmail, EmailIn, EmailOp, UserAccounts, UserIn, UserOut};
use crate::views::{step, stock_deltas, view_keys, ById, IdempotencyRow, Row, StockRow, ViewKey};

/// A command as it enters the dataflow: its log position, its batch timestamp, itself.
pub type Record = (Seq, Ts, Envelope);

pub struct Outputs<'scope> {
    pub events: Stream<'scope, Time, Vec<Event>>,
    pub rejections: Stream<'scope, Time, Vec<Rejection>>,
    pub rows: VecCollection<'scope, Time, Row, isize>,
}

/// What the idempotency stage lets through, refuses, or records.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Admitted {
    Pass(Seq, Ts, Command),
    Rejected(Rejection),
    Recorded(IdempotencyRow),
    Forgotten(IdempotencyRow),
}

/// Builds the dataflow over `commands` in `scope`.
pub fn build<'scope>(
    scope: Scope<'scope, Time>,
    commands: Stream<'scope, Time, Vec<Record>>,
) -> Outputs<'scope> {
    // Idempotency: the first command with a key wins; later ones within a day are refused
    // as duplicates. Whether a key is live is decided from the arriving command's log
    // time, so the answer does not depend on when a worker last tidied up.
    let admitted = commands.keyed_ordered(
        "Idempotency",
        |(seq, _, envelope): &Record| match &envelope.idempotency {
            Some(idempotency) => key_hash(&idempotency.key),
            None => *seq,
        },
        {
            let mut first: ShardedMap<Str, IdempotencyRow> = ShardedMap::default();
            let mut by_age: VecDeque<(Ts, Str)> = VecDeque::new();
            move |time, records, out: &mut Vec<Admitted>| {
                // Forget keys older than the TTL (memory only; liveness is checked below).
                let now = log_ts(time);
                while let Some((ts, key)) = by_age.front() {
                    if now < ts.saturating_add(IDEMPOTENCY_TTL_MS) {
                        break;
                    }
                    if first.get(key).is_some_and(|row| row.ts == *ts) {
                        if let Some(row) = first.remove(key) {
                            out.push(Admitted::Forgotten(row));
                        }
                    }
                    by_age.pop_front();
                }
                for (seq, ts, envelope) in records {
                    let Some(key) = envelope.idempotency else {
                        out.push(Admitted::Pass(seq, ts, envelope.command));
                        continue;
                    };
                    if let Some(row) = first.get(&key.key).filter(|row| row.is_live(ts)) {
                        out.push(Admitted::Rejected(Rejection {
                            seq,
                            ts,
                            kind: RejectionKind::Duplicate {
                                first_seq: row.first_seq,
                                same_request: row.fingerprint == key.fingerprint,
                            },
                            detail: "this Idempotency-Key was used before".into(),
                        }));
                        continue;
                    }
                    let row = IdempotencyRow {
                        key: key.key.clone(),
                        fingerprint: key.fingerprint,
                        first_seq: seq,
                        ts,
                    };
                    if let Some(expired) = first.insert(key.key.clone(), row.clone()) {
                        out.push(Admitted::Forgotten(expired));
                    }
                    by_age.push_back((ts, key.key));
                    out.push(Admitted::Recorded(row));
                    out.push(Admitted::Pass(seq, ts, envelope.command));
                }
            }
        },
    );
    let passed = admitted.clone().flat_map(|admitted| match admitted {
        Admitted::Pass(seq, ts, command) => Some((seq, ts, command)),
        _ => None,
    });

    // Orders and stock, with the product aggregate's replies fed back one round later.
    let (reply_loop, replies) = scope.feedback::<Vec<StockReply>>(1);
    let order_in = passed
        .clone()
        .flat_map(|(seq, ts, command)| {
            let is_order_command = command_order_id(&command).is_some();
            is_order_command.then_some(OrderIn {
                seq,
                phase: 0,
                sub: 0,
                ts,
                op: OrderOp::Command(command),
            })
        })
        .concat(replies.clone().flat_map(|reply| {
            (reply.holder == Holder::Order).then_some(OrderIn {
                seq: reply.seq,
                phase: 1,
                sub: reply.line,
                ts: reply.ts,
                op: OrderOp::Reply(reply),
            })
        }));
    let order_out = order_in.order_fulfillment();
    let reservation_out = passed
        .clone()
        .flat_map(|(seq, ts, command)| {
            let is_reservation = matches!(
                command,
                Command::ReserveStock { .. } | Command::ReleaseReservation { .. }
            );
            is_reservation.then_some(ReservationIn {
                seq,
                phase: 0,
                sub: 0,
                ts,
                op: ReservationOp::Command(command),
            })
        })
        .concat(replies.flat_map(|reply| {
            (reply.holder == Holder::Reservation).then_some(ReservationIn {
                seq: reply.seq,
                phase: 1,
                sub: reply.line,
                ts: reply.ts,
                op: ReservationOp::Reply(reply),
            })
        }))
        .stock_reservations();
    // Orders and reservations speak to the product aggregate the same way.
    let order_out = order_out.concat(reservation_out);
    // Creates and sku changes claim their sku first; released skus come back a round later.
    let (sku_loop, sku_releases) = scope.feedback::<Vec<SkuIn>>(1);
    let (claimed, sku_rejections) = passed
        .clone()
        .flat_map(|(seq, ts, command)| {
            let sku = claimed_sku(&command)?.clone();
            let op = catalog_op(command)?;
            let product_id = op.product_id().clone();
            Some(SkuIn {
                seq,
                phase: 0,
                ts,
                sku,
                op: SkuOp::Claim {
                    product_id,
                    then: op,
                },
            })
        })
        .concat(sku_releases)
        .claim_sku();
    let catalog_in = scope.concatenate([
        passed.clone().flat_map(|(seq, ts, command)| {
            if claimed_sku(&command).is_some() {
                return None;
            }
            catalog_op(command).map(|op| CatalogIn {
                seq,
                phase: 0,
                sub: 0,
                ts,
                op,
            })
        }),
        claimed,
        order_out.clone().flat_map(|out| match out {
            OrderOut::Stock(request) => Some(request),
            _ => None,
        }),
    ]);
    let catalog_out = catalog_in.reserve_stock();
    catalog_out
        .clone()
        .flat_map(|out| match out {
            CatalogOut::ReleaseSku(release) => Some(release),
            _ => None,
        })
        .connect_loop(sku_loop);
    catalog_out
        .clone()
        .flat_map(|out| match out {
            CatalogOut::Reply(reply) => Some(reply),
            _ => None,
        })
        .connect_loop(reply_loop);

    // Users, with released e-mail addresses fed back one round later.
    let (release_loop, releases) = scope.feedback::<Vec<EmailIn>>(1);
    let email_in = passed
        .clone()
        .flat_map(|(seq, ts, command)| match &command {
            Command::CreateUser { user_id, email, .. }
            | Command::UpdateUser {
                user_id,
                email: Some(email),
                ..
            } => Some(EmailIn {
                seq,
                phase: 0,
                ts,
                email: email_key(email),
                op: EmailOp::Claim {
                    user_id: user_id.clone(),
                    then: command.clone(),
                },
            }),
            _ => None,
        })
        .concat(releases);
    let (claimed, email_rejections) = email_in.claim_email();
    let user_in = passed
        .clone()
        .flat_map(|(seq, ts, command)| match command {
            Command::UpdateUser { email: None, .. } | Command::DeleteUser { .. } => {
                Some(UserIn { seq, ts, command })
            }
            _ => None,
        })
        .concat(claimed);
    let user_out = user_in.user_accounts();
    user_out
        .clone()
        .flat_map(|out| match out {
            UserOut::Release(release) => Some(release),
            _ => None,
        })
        .connect_loop(release_loop);

    let cart_out = passed
        .flat_map(|(seq, ts, command)| {
            matches!(
                command,
                Command::CreateCart { .. } | Command::SetCartItem { .. }
            )
            .then_some(CartIn { seq, ts, command })
        })
        .shopping_carts();

    // One operator each gathers every aggregate's events and refusals.
    let events = scope.concatenate([
        order_out.clone().flat_map(|out| match out {
            OrderOut::Event(event) => Some(event),
            _ => None,
        }),
        catalog_out.clone().flat_map(|out| match out {
            CatalogOut::Event(event) => Some(event),
            _ => None,
        }),
        user_out.clone().flat_map(|out| match out {
            UserOut::Event(event) => Some(event),
            _ => None,
        }),
        cart_out.clone().flat_map(Result::ok),
    ]);
    let rejections = scope.concatenate([
        admitted.clone().flat_map(|admitted| match admitted {
            Admitted::Rejected(rejection) => Some(rejection),
            _ => None,
        }),
        order_out.flat_map(|out| match out {
            OrderOut::Rejected(rejection) => Some(rejection),
            _ => None,
        }),
        catalog_out.flat_map(|out| match out {
            CatalogOut::Rejected(rejection) => Some(rejection),
            _ => None,
        }),
        sku_rejections,
        user_out.flat_map(|out| match out {
            UserOut::Rejected(rejection) => Some(rejection),
            _ => None,
        }),
        email_rejections,
        cart_out.flat_map(Result::err),
    ]);

    let recorded = admitted
        .clone()
        .flat_map(|admitted| match admitted {
            Admitted::Recorded(row) => Some(Row::Idempotency(Arc::new(row))),
            _ => None,
        })
        .with_times()
        .as_collection();
    let forgotten = admitted
        .flat_map(|admitted| match admitted {
            Admitted::Forgotten(row) => Some(Row::Idempotency(Arc::new(row))),
            _ => None,
        })
        .with_times()
        .as_collection()
        .negate();
    let idempotency = recorded.concat(forgotten);

    let rows = read_models(events.clone()).concat(idempotency);
    Outputs {
        events,
        rejections,
        rows,
    }
}

/// The read models over the event collection; see `views.rs`.
///
/// `ReadModels` keeps the current row of every view key and applies `views::step` to
/// each new event. That is `reduce` specialised to what events are: a key's events only
/// arrive in log order and are never retracted, so the row after one more event needs
/// only the row before it, not the key's whole history (which a general `reduce` would
/// keep arranged and fold again on every change). Stock levels are sums of deltas,
/// maintained by `count`.
pub fn read_models<'scope>(
    events: Stream<'scope, Time, Vec<Event>>,
) -> VecCollection<'scope, Time, Row, isize> {
    // Current rows, one set per `Row::key` kind, keyed by the id inside each row.
    let mut rows: Vec<ShardedSet<ById>> = vec![ShardedSet::default(); usize::from(ViewKey::KINDS)];
    let folded = events
        .clone()
        .flat_map(|event: Event| {
            // One shared copy of the event for every view it updates.
            let event = Arc::new(event);
            view_keys(&event.body)
                .into_iter()
                .map(move |key| (key, Arc::clone(&event)))
        })
        .keyed_ordered(
            "ReadModels",
            |(key, _): &(ViewKey, Arc<Event>)| key_hash(key.id()),
            move |time, records, out: &mut Vec<(Row, Time, isize)>| {
                let mut records = records.into_iter().peekable();
                while let Some((key, event)) = records.next() {
                    let view = &mut rows[usize::from(key.kind())];
                    let old = view.take(key.id()).map(|held| held.0);
                    let mut row: Option<Row> = old.clone();
                    step(&key, &mut row, &event);
                    while let Some((_, event)) = records.next_if(|(next, _)| *next == key) {
                        step(&key, &mut row, &event);
                    }
                    if old == row {
                        if let Some(old) = old {
                            view.insert(ById(old));
                        }
                        continue;
                    }
                    if let Some(old) = old {
                        out.push((old, time, -1));
                    }
                    if let Some(new) = row {
                        view.insert(ById(new.clone()));
                        out.push((new, time, 1));
                    }
                }
            },
        )
        .as_collection();
    let stock = events
        .with_times()
        .as_collection()
        .explode(|event: Event| {
            stock_deltas(&event.body)
                .into_iter()
                .map(|(product_id, measure, delta)| ((product_id, measure), delta as isize))
        })
        .count()
        .map(|((product_id, measure), quantity)| {
            Row::Stock(Arc::new(StockRow {
                product_id,
                measure,
                quantity: quantity as i64,
            }))
        });
    folded.concat(stock)
}

/// The sku a command must claim before the product aggregate sees it: a create's, or
/// the new sku of an update that changes it.
fn claimed_sku(command: &Command) -> Option<&Str> {
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

/// Turns a stream of data into a stream of differential updates `(data, time, +1)`.
pub trait WithTimes<'scope, D> {
    fn with_times(self) -> Stream<'scope, Time, Vec<(D, Time, isize)>>;
}

impl<'scope, D: Clone + 'static> WithTimes<'scope, D> for Stream<'scope, Time, Vec<D>> {
    fn with_times(self) -> Stream<'scope, Time, Vec<(D, Time, isize)>> {
        self.unary(Pipeline, "WithTimes", |_capability, _info| {
            move |input, output| {
                input.for_each(|capability, data| {
                    let Some(time) = capability.least().copied() else {
                        return;
                    };
                    output
                        .session(&capability)
                        .give_iterator(data.drain(..).map(|datum| (datum, time, 1isize)));
                });
            }
        })
    }
}
