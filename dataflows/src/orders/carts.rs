//! `ShoppingCarts`: the cart aggregate. Keyed by cart id.
//!
//! In: cart create and set-item commands. Out: cart events and rejections.
//! Invariants: a cart line has a positive quantity (quantity 0 removes the line), and
//! every line of a cart is priced in one currency.

use std::collections::{BTreeMap, HashMap};

use timely::dataflow::Stream;

use crate::catalog::MAX_QUANTITY;
use crate::events::{CartCreated, CartUpdated};
use crate::model::*;
use crate::shared::input::{Decided, Input};
use crate::shared::ordered::{key_hash, KeyedOrdered};

/// Different products a cart may hold (an order takes at most as many lines).
pub const MAX_CART_LINES: usize = 100;

pub type CartIn = Input<Command>;

/// The input of the cart aggregate for a command, if it is a cart's.
pub fn route(seq: Seq, ts: Ts, command: Command) -> Option<CartIn> {
    matches!(
        command,
        Command::CreateCart { .. } | Command::SetCartItem { .. }
    )
    .then(|| Input::command(seq, ts, command))
}

pub trait ShoppingCarts<'scope> {
    fn shopping_carts(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>>;
}

fn cart_id_of(command: &Command) -> &str {
    match command {
        Command::CreateCart { cart_id, .. } | Command::SetCartItem { cart_id, .. } => cart_id,
        _ => "",
    }
}

impl<'scope> ShoppingCarts<'scope> for Stream<'scope, Time, Vec<CartIn>> {
    fn shopping_carts(self) -> Stream<'scope, Time, Vec<Result<Event, Rejection>>> {
        // Each cart's lines: product -> (quantity, currency).
        let mut carts: HashMap<Str, BTreeMap<Str, (i64, Str)>> = HashMap::new();
        self.keyed_ordered(
            "ShoppingCarts",
            |input: &CartIn| key_hash(cart_id_of(&input.op)),
            move |_time, inputs, out| {
                for input in inputs {
                    let mut decided = Decided::of(&input);
                    match input.op {
                        Command::CreateCart { cart_id, user_id } => {
                            if carts.contains_key(&cart_id) {
                                out.push(decided.reject(
                                    RejectionKind::Conflict {
                                        code: "cart_exists".into(),
                                    },
                                    format!("cart {cart_id} already exists"),
                                ));
                                continue;
                            }
                            carts.insert(cart_id.clone(), BTreeMap::new());
                            out.push(decided.event(CartCreated { cart_id, user_id }));
                        }
                        Command::SetCartItem {
                            cart_id,
                            product_id,
                            quantity,
                            currency,
                        } => {
                            let Some(cart) = carts.get_mut(&cart_id) else {
                                out.push(decided.reject(
                                    RejectionKind::NotFound,
                                    format!("cart {cart_id} does not exist"),
                                ));
                                continue;
                            };
                            if !(0..=MAX_QUANTITY).contains(&quantity) {
                                out.push(decided.reject(
                                    RejectionKind::Invalid {
                                        field: "quantity".into(),
                                    },
                                    format!("quantity is 0 to {}", MAX_QUANTITY),
                                ));
                                continue;
                            }
                            // Only putting a product in can mix currencies; an empty
                            // currency comes from commands logged before carts checked it.
                            let other_currency = (quantity > 0 && !currency.is_empty())
                                .then(|| {
                                    cart.iter().find(|(held, (_, held_currency))| {
                                        **held != product_id
                                            && !held_currency.is_empty()
                                            && *held_currency != currency
                                    })
                                })
                                .flatten()
                                .map(|(_, (_, held_currency))| held_currency.clone());
                            if let Some(held_currency) = other_currency {
                                out.push(decided.reject(
                                    RejectionKind::Invalid {
                                        field: "product_id".into(),
                                    },
                                    format!(
                                        "the cart holds products priced in {held_currency}; this one is priced in {currency}"
                                    ),
                                ));
                                continue;
                            }
                            if quantity > 0
                                && !cart.contains_key(&product_id)
                                && cart.len() >= MAX_CART_LINES
                            {
                                out.push(decided.reject(
                                    RejectionKind::Conflict {
                                        code: "cart_full".into(),
                                    },
                                    format!(
                                        "a cart holds at most {MAX_CART_LINES} different products"
                                    ),
                                ));
                                continue;
                            }
                            if quantity == 0 {
                                cart.remove(&product_id);
                            } else {
                                cart.insert(product_id.clone(), (quantity, currency));
                            }
                            out.push(decided.event(CartUpdated {
                                cart_id,
                                product_id,
                                quantity,
                            }));
                        }
                        _ => {}
                    }
                }
            },
        )
    }
}
