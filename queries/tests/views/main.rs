//! The incremental views against their from-scratch specification, and the domain's
//! invariants, on 1 and on 4 workers.

mod metrics;

use std::collections::{BTreeMap, BTreeSet};

use dataflows::events::OrderCreated;
use dataflows::model::*;
use dataflows::oracle::recompute;
use dataflows::views::Row;
use proptest::prelude::*;
use queries::testkit::Harness;
use queries::{OrderCursor, View, ViewScan};

fn product(id: &str, stock: i64) -> Command {
    Command::CreateProduct {
        product_id: id.into(),
        sku: format!("SKU-{id}").into(),
        name: format!("Product {id}").into(),
        price_cents: 1000,
        currency: "USD".into(),
        initial_stock: stock,
        warehouse_id: None,
        reorder_point: 1,
    }
}

fn order(id: &str, lines: &[(&str, i64)], card: bool) -> Command {
    Command::PlaceOrder {
        order_id: id.into(),
        user_id: "u1".into(),
        items: lines
            .iter()
            .map(|(p, q)| Line {
                product_id: (*p).into(),
                quantity: *q,
            })
            .collect(),
        payment: card.then(|| CardToken {
            token: "tok".into(),
            // Two brands, so payment metrics have more than one.
            brand: if id.len().is_multiple_of(2) {
                "visa"
            } else {
                "mastercard"
            }
            .into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2030,
        }),
        shipping_address: None,
        cart_id: None,
    }
}

#[test]
fn order_reserves_all_lines_or_none() {
    let mut h = Harness::new(1);
    h.batch(vec![product("a", 5), product("b", 1)]);
    h.batch(vec![
        order("o1", &[("a", 3), ("b", 1)], false),
        order("o2", &[("a", 2), ("b", 1)], false),
    ]);
    let snapshot = h.store.read();
    assert_eq!(snapshot.orders["o1"].status, OrderStatus::Reserved);
    assert_eq!(snapshot.orders["o1"].total_cents, 4000);
    assert_eq!(snapshot.orders["o2"].status, OrderStatus::Cancelled);
    assert_eq!(
        snapshot.orders["o2"].cancel_reason,
        Some(CancelReason::OutOfStock)
    );
    assert_eq!(
        snapshot.stock_of("a").reserved,
        3,
        "o2's line of a was released"
    );
    assert_eq!(snapshot.stock_of("b").available(), 0);
}

#[test]
fn saga_runs_to_completion_and_deducts_stock() {
    let mut h = Harness::new(2);
    h.batch(vec![product("a", 5)]);
    h.batch(vec![order("o1", &[("a", 2)], true)]);
    {
        let snapshot = h.store.read();
        assert_eq!(
            snapshot.orders["o1"].payment_id().as_deref(),
            Some("pay_o1")
        );
        assert!(
            snapshot.effects.contains_key("pay_o1"),
            "a charge is awaited"
        );
    }
    h.batch(vec![Command::PaymentResult {
        payment_id: "pay_o1".into(),
        order_id: "o1".into(),
        outcome: PaymentOutcome::Approved {
            charge_id: "ch_1".into(),
        },
    }]);
    assert_eq!(h.store.read().orders["o1"].status, OrderStatus::Confirmed);
    assert!(
        h.store.read().effects.contains_key("shp_o1"),
        "a shipment is awaited"
    );
    h.batch(vec![Command::ShipmentDispatched {
        shipment_id: "shp_o1".into(),
        order_id: "o1".into(),
        carrier: "sandbox".into(),
        tracking_number: "T1".into(),
    }]);
    let seqs = h.batch(vec![Command::CancelOrder {
        order_id: "o1".into(),
        reason: CancelReason::CustomerRequest,
    }]);
    let rejection = h
        .store
        .read()
        .rejection(seqs[0])
        .cloned()
        .expect("cancel of a shipped order is refused");
    assert_eq!(
        rejection.kind,
        RejectionKind::Conflict {
            code: "order_already_shipped".into()
        }
    );
    h.batch(vec![Command::ShipmentDelivered {
        shipment_id: "shp_o1".into(),
        order_id: "o1".into(),
    }]);
    let snapshot = h.store.read();
    assert_eq!(snapshot.orders["o1"].status, OrderStatus::Completed);
    let statuses: Vec<_> = snapshot.orders["o1"]
        .history
        .iter()
        .map(|change| change.status)
        .collect();
    assert_eq!(
        statuses,
        vec![
            OrderStatus::Pending,
            OrderStatus::Reserved,
            OrderStatus::Confirmed,
            OrderStatus::Shipped,
            OrderStatus::Completed
        ]
    );
    assert_eq!(
        snapshot.stock_of("a"),
        queries::StockLevel {
            on_hand: 3,
            reserved: 0
        }
    );
    assert!(snapshot.effects.is_empty());
    // Completed: 2 units at 10.00 earn 20 points.
    let loyalty = snapshot.loyalty.get("u1").expect("points").clone();
    assert_eq!((loyalty.points, loyalty.orders), (20, 1));
    assert_eq!(loyalty.tier, dataflows::users::loyalty::Tier::Standard);
    // A quarter refunded takes a quarter back.
    h.batch(vec![Command::RequestRefund {
        payment_id: "pay_o1".into(),
        order_id: "o1".into(),
        amount_cents: Some(500),
        reason: "damaged".into(),
    }]);
    h.batch(vec![Command::RefundResult {
        refund_id: refund_id_for("pay_o1", 1),
        payment_id: "pay_o1".into(),
        order_id: "o1".into(),
        succeeded: true,
    }]);
    let loyalty = h.store.read().loyalty.get("u1").expect("points").clone();
    assert_eq!(
        (loyalty.points, loyalty.earned, loyalty.reversed),
        (15, 20, 5)
    );
}

#[test]
fn a_ticket_goes_back_and_forth_until_it_is_closed() {
    let mut h = Harness::new(2);
    let open = |id: &str| Command::OpenTicket {
        ticket_id: id.into(),
        user_id: "u1".into(),
        subject: "Where is my order?".into(),
        body: "It is late.".into(),
        order_id: Some("o1".into()),
        priority: TicketPriority::High,
        comment_id: "c0".into(),
    };
    let comment = |id: &str, staff: bool| Command::CommentOnTicket {
        ticket_id: "t1".into(),
        comment_id: id.into(),
        author_id: if staff { "staff1" } else { "u1" }.into(),
        staff,
        body: "...".into(),
    };
    let change = |status: TicketStatus| Command::ChangeTicket {
        ticket_id: "t1".into(),
        status: Some(status),
        priority: None,
        assignee: Assignee::To("staff1".into()),
    };
    let opened = h.batch(vec![open("t1"), open("t1")]);
    let again = h
        .store
        .read()
        .rejection(opened[1])
        .cloned()
        .expect("one ticket per id");
    assert_eq!(
        again.kind,
        RejectionKind::Conflict {
            code: "ticket_exists".into()
        }
    );
    let created_at = h.store.read().tickets["t1"].created_at;
    // The staff answer after five hours: past a high ticket's four.
    h.append(
        5 * 3_600_000,
        vec![
            Envelope::new(comment("c1", true)),
            Envelope::new(change(TicketStatus::Pending)),
        ],
    );
    {
        let snapshot = h.store.read();
        let ticket = &snapshot.tickets["t1"];
        assert_eq!(ticket.status, TicketStatus::Pending);
        assert_eq!(ticket.assignee.as_deref(), Some("staff1"));
        assert_eq!(ticket.first_response_at, Some(created_at + 5 * 3_600_000));
        assert_eq!(ticket.breached(h.ts), (true, false));
        assert_eq!(ticket.comments.len(), 2);
    }
    // The customer's answer gives the ticket back to the staff.
    h.batch(vec![comment("c2", false)]);
    assert_eq!(h.store.read().tickets["t1"].status, TicketStatus::Open);
    h.batch(vec![change(TicketStatus::Resolved)]);
    assert!(h.store.read().tickets["t1"].resolved_at.is_some());
    h.batch(vec![change(TicketStatus::Closed)]);
    let refused = h.batch(vec![comment("c3", false), comment("c2", true)]);
    for seq in refused {
        let rejection = h
            .store
            .read()
            .rejection(seq)
            .cloned()
            .expect("a closed ticket takes nothing");
        assert_eq!(
            rejection.kind,
            RejectionKind::Conflict {
                code: "ticket_closed".into()
            }
        );
    }
    let snapshot = h.store.read();
    let ticket = &snapshot.tickets["t1"];
    assert_eq!(
        (ticket.status, ticket.comments.len()),
        (TicketStatus::Closed, 3)
    );
    assert_eq!(snapshot.tickets_of("u1", "").count(), 1);
}

#[test]
fn declined_payment_cancels_and_releases() {
    let mut h = Harness::new(1);
    h.batch(vec![product("a", 5)]);
    h.batch(vec![order("o1", &[("a", 5)], true)]);
    h.batch(vec![Command::PaymentResult {
        payment_id: "pay_o1".into(),
        order_id: "o1".into(),
        outcome: PaymentOutcome::Declined {
            decline_code: "card_declined".into(),
        },
    }]);
    let snapshot = h.store.read();
    assert_eq!(snapshot.orders["o1"].status, OrderStatus::Cancelled);
    assert_eq!(
        snapshot.orders["o1"].cancel_reason,
        Some(CancelReason::PaymentDeclined)
    );
    assert_eq!(snapshot.stock_of("a").available(), 5);
    assert_eq!(
        snapshot.payments["pay_o1"].status,
        dataflows::views::PaymentStatus::Failed
    );
}

#[test]
fn cancel_after_capture_refunds() {
    let mut h = Harness::new(1);
    h.batch(vec![product("a", 5)]);
    h.batch(vec![order("o1", &[("a", 1)], true)]);
    h.batch(vec![Command::PaymentResult {
        payment_id: "pay_o1".into(),
        order_id: "o1".into(),
        outcome: PaymentOutcome::Approved {
            charge_id: "ch".into(),
        },
    }]);
    h.batch(vec![Command::CancelOrder {
        order_id: "o1".into(),
        reason: CancelReason::CustomerRequest,
    }]);
    let snapshot = h.store.read();
    assert_eq!(snapshot.orders["o1"].status, OrderStatus::Cancelled);
    assert_eq!(
        snapshot.shipments["shp_o1"].status,
        dataflows::views::ShipmentStatus::Cancelled
    );
    assert!(
        snapshot.effects.contains_key("re_o1_1"),
        "a refund is awaited"
    );
    assert!(!snapshot.effects.contains_key("shp_o1"));
    assert_eq!(snapshot.stock_of("a").reserved, 0);
}

#[test]
fn email_addresses_are_unique() {
    let mut h = Harness::new(2);
    let user = |id: &str, email: &str| Command::CreateUser {
        user_id: id.into(),
        email: email.into(),
        name: "N".into(),
        password_hash: "$argon2id$x".into(),
    };
    let seqs = h.batch(vec![user("u1", "a@x.io"), user("u2", "A@x.io")]);
    assert!(h.store.read().rejection(seqs[1]).is_some());
    h.batch(vec![Command::DeleteUser {
        user_id: "u1".into(),
    }]);
    let seqs = h.batch(vec![user("u3", "a@x.io")]);
    assert!(
        h.store.read().rejection(seqs[0]).is_none(),
        "a deleted user's address is free again"
    );
    assert_eq!(
        h.store.read().user_by_email("a@x.io").map(|u| &*u.user_id),
        Some("u3")
    );
}

#[test]
fn skus_are_unique_across_products() {
    for workers in [1, 4] {
        let mut h = Harness::new(workers);
        let with_sku = |id: &str, sku: &str| Command::CreateProduct {
            product_id: id.into(),
            sku: sku.into(),
            name: "N".into(),
            price_cents: 100,
            currency: "USD".into(),
            initial_stock: 0,
            warehouse_id: None,
            reorder_point: 0,
        };
        let rename = |id: &str, sku: &str| Command::UpdateProduct {
            product_id: id.into(),
            sku: Some(sku.into()),
            name: None,
            price_cents: None,
            currency: None,
            reorder_point: None,
        };
        let taken = Some(RejectionKind::Conflict {
            code: "sku_taken".into(),
        });
        let seqs = h.batch(vec![
            with_sku("a", "MUG"),
            with_sku("b", "MUG"),
            with_sku("c", "CUP"),
        ]);
        assert_eq!(
            h.store.read().rejection(seqs[1]).map(|r| r.kind.clone()),
            taken,
            "{workers} workers"
        );
        let seqs = h.batch(vec![rename("c", "MUG"), rename("a", "MUG-2")]);
        assert_eq!(
            h.store.read().rejection(seqs[0]).map(|r| r.kind.clone()),
            taken
        );
        assert!(h.store.read().rejection(seqs[1]).is_none());
        // The old sku was given back when a changed it.
        let seqs = h.batch(vec![rename("c", "MUG")]);
        assert!(
            h.store.read().rejection(seqs[0]).is_none(),
            "{workers} workers"
        );
        let snapshot = h.store.read();
        assert_eq!(snapshot.products["a"].sku, "MUG-2".into());
        assert_eq!(snapshot.products["c"].sku, "MUG".into());
        assert!(!snapshot.products.contains_key("b"));
    }
}

#[test]
fn a_cart_holds_at_most_a_hundred_products() {
    let mut h = Harness::new(1);
    h.batch(vec![Command::CreateCart {
        cart_id: "c".into(),
        user_id: "u".into(),
    }]);
    let item = |n: usize, quantity| Command::SetCartItem {
        cart_id: "c".into(),
        product_id: format!("p{n}").into(),
        quantity,
        currency: "USD".into(),
    };
    h.batch((0..100).map(|n| item(n, 1)).collect());
    let seqs = h.batch(vec![item(100, 1), item(5, 3), item(6, 0), item(101, 1)]);
    let snapshot = h.store.read();
    assert_eq!(
        snapshot.rejection(seqs[0]).map(|r| r.kind.clone()),
        Some(RejectionKind::Conflict {
            code: "cart_full".into()
        })
    );
    assert!(
        snapshot.rejection(seqs[1]).is_none(),
        "changing a line already in a full cart is fine"
    );
    assert!(
        snapshot.rejection(seqs[3]).is_none(),
        "a removal makes room"
    );
    assert_eq!(snapshot.carts["c"].items.len(), 100);
}

#[test]
fn idempotency_keys_hold_for_a_day_of_log_time() {
    for workers in [1, 4] {
        let mut h = Harness::new(workers);
        h.batch(vec![product("a", 10)]);
        let first = h.keyed_batch(
            1,
            vec![
                ("k", order("o1", &[("a", 1)], false)),
                ("k", order("o1b", &[("a", 1)], false)),
            ],
        );
        let snapshot = h.store.read();
        assert!(snapshot.rejection(first[0]).is_none());
        assert_eq!(
            snapshot.rejection(first[1]).map(|r| r.kind.clone()),
            Some(RejectionKind::Duplicate {
                first_seq: first[0],
                same_request: false
            })
        );
        drop(snapshot);
        let again = h.keyed_batch(
            IDEMPOTENCY_TTL_MS - 2,
            vec![("k", order("o2", &[("a", 1)], false))],
        );
        assert!(
            h.store.read().rejection(again[0]).is_some(),
            "still remembered just under a day later"
        );
        let later = h.keyed_batch(2, vec![("k", order("o3", &[("a", 1)], false))]);
        let snapshot = h.store.read();
        assert!(
            snapshot.rejection(later[0]).is_none(),
            "forgotten a day later: {workers} workers"
        );
        assert_eq!(snapshot.orders["o3"].status, OrderStatus::Reserved);
        assert_eq!(snapshot.idempotency["k"].first_seq, later[0]);
        assert_eq!(snapshot.stock_of("a").reserved, 2);
    }
}

// ---- Property tests ----

const PRODUCTS: [&str; 3] = ["p0", "p1", "p2"];

/// A new order of one to three lines, with a card or without.
fn arb_order() -> impl Strategy<Value = Command> {
    let product = prop::sample::select(PRODUCTS.to_vec());
    let order_id = (0u8..12).prop_map(|n| format!("o{n}"));
    (
        order_id,
        prop::collection::vec((product, 1i64..4), 1..3),
        any::<bool>(),
    )
        .prop_map(|(id, lines, card)| {
            let mut merged: BTreeMap<&str, i64> = BTreeMap::new();
            for (p, q) in lines {
                *merged.entry(p).or_default() += q;
            }
            let lines: Vec<(&str, i64)> = merged.into_iter().collect();
            order(&id, &lines, card)
        })
}

fn arb_command() -> impl Strategy<Value = Command> {
    let product = prop::sample::select(PRODUCTS.to_vec());
    let order_id = (0u8..12).prop_map(|n| format!("o{n}"));
    prop_oneof![
        4 => arb_order(),
        1 => (product.clone(), -3i64..6).prop_map(|(p, delta)| Command::AdjustStock { product_id: p.into(), delta, reason: "count".into() }),
        2 => order_id.clone().prop_map(|id| Command::CancelOrder { order_id: id.into(), reason: CancelReason::CustomerRequest }),
        2 => (order_id.clone(), 0u8..3).prop_map(|(id, outcome)| Command::PaymentResult {
            payment_id: payment_id_for(&id),
            order_id: id.into(),
            outcome: match outcome {
                0 => PaymentOutcome::Approved { charge_id: "ch".into() },
                1 => PaymentOutcome::Declined { decline_code: "card_declined".into() },
                _ => PaymentOutcome::Fraud { decline_code: "fraudulent".into() },
            },
        }),
        1 => order_id.clone().prop_map(|id| Command::ShipmentDispatched {
            shipment_id: shipment_id_for(&id), order_id: id.into(), carrier: "c".into(), tracking_number: "t".into()
        }),
        1 => order_id.clone().prop_map(|id| Command::ShipmentDelivered { shipment_id: shipment_id_for(&id), order_id: id.into() }),
        1 => ((0u8..4).prop_map(|n| format!("r{n}")), prop::collection::vec((product.clone(), 1i64..4), 1..3)).prop_map(|(id, lines)| {
            let mut merged: BTreeMap<&str, i64> = BTreeMap::new();
            for (p, q) in lines { *merged.entry(p).or_default() += q; }
            Command::ReserveStock {
                reservation_id: id.into(),
                items: merged.into_iter().map(|(p, q)| Line { product_id: p.into(), quantity: q }).collect(),
            }
        }),
        1 => (0u8..4).prop_map(|n| Command::ReleaseReservation { reservation_id: format!("r{n}").into() }),
        1 => (0u8..3).prop_map(|n| Command::CreateCart { cart_id: format!("c{n}").into(), user_id: "u1".into() }),
        1 => (product.clone(), 0i64..4, any::<bool>()).prop_map(|(p, reorder_point, euro)| Command::UpdateProduct {
            product_id: p.into(), sku: None, name: None, price_cents: Some(700 + reorder_point),
            currency: Some(if euro { "EUR" } else { "USD" }.into()), reorder_point: Some(reorder_point),
        }),
        1 => order_id.clone().prop_map(|id| Command::RequestRefund {
            payment_id: payment_id_for(&id), order_id: id.into(), amount_cents: Some(500), reason: "r".into()
        }),
        // The provider's answer to one of the order's first refunds.
        2 => (order_id, 1usize..3, any::<bool>()).prop_map(|(id, n, succeeded)| {
            let payment_id = payment_id_for(&id);
            Command::RefundResult { refund_id: refund_id_for(&payment_id, n), payment_id, order_id: id.into(), succeeded }
        }),
        // Sign-ins, mostly wrong, so that accounts lock and unlock on log time.
        2 => (0u8..2, 0u8..4, any::<u16>()).prop_map(|(user, guess, n)| Command::Authenticate {
            attempt_id: format!("a{user}-{n}").into(),
            user_id: Some(format!("u{user}").into()),
            email: format!("u{user}@example.com").into(),
            password_matched: guess == 0,
            client: "127.0.0.1".into(),
            second_factor: None,
        }),
        1 => (0u8..2).prop_map(|user| Command::UnlockUser { user_id: format!("u{user}").into() }),
        1 => (0u8..3, 0u64..4).prop_map(|(n, hours)| Command::RevokeAccessToken {
            token_id: format!("t{n}").into(),
            user_id: "u1".into(),
            expires_at: hours * 3_600_000,
        }),
        // OAuth sessions, whose refresh tokens rotate, come back spent, and expire.
        1 => (0u8..2, 0u8..4).prop_map(|(s, r)| Command::OpenSession {
            session_id: format!("s{s}").into(),
            user_id: "u1".into(),
            client_id: "tidemark-cli".into(),
            scope: "openid".into(),
            refresh_hash: format!("r{r}").into(),
            ttl_ms: 3_600_000,
        }),
        2 => (0u8..2, 0u8..4, 0u8..4).prop_map(|(s, r, next)| Command::RefreshSession {
            session_id: format!("s{s}").into(),
            client_id: "tidemark-cli".into(),
            refresh_hash: format!("r{r}").into(),
            new_refresh_hash: format!("r{next}").into(),
            ttl_ms: 3_600_000,
        }),
        // Saved cards of two users, added and removed, and the users deleted now and then.
        // The server mints card ids, unique across users.
        2 => (0u8..2, 0u8..4, any::<bool>()).prop_map(|(user, n, add)| {
            let (method_id, user_id) = (format!("pm{user}-{n}").into(), format!("u{user}").into());
            if add {
                Command::AddPaymentMethod {
                    method_id,
                    user_id,
                    card: CardToken {
                        token: format!("tok_{n}").into(),
                        brand: "visa".into(),
                        last4: "4242".into(),
                        exp_month: 12,
                        exp_year: 2031,
                    },
                }
            } else {
                Command::RemovePaymentMethod { method_id, user_id }
            }
        }),
        1 => (0u8..2).prop_map(|user| Command::DeleteUser { user_id: format!("u{user}").into() }),
        // Support tickets opened, changed and commented on, by the customer or the staff.
        1 => (0u8..3, 0u8..4).prop_map(|(n, priority)| Command::OpenTicket {
            ticket_id: format!("t{n}").into(),
            user_id: "u1".into(),
            subject: "Broken mug".into(),
            body: "It came in pieces.".into(),
            order_id: None,
            priority: [TicketPriority::Low, TicketPriority::Normal, TicketPriority::High, TicketPriority::Urgent][usize::from(priority)],
            comment_id: format!("t{n}-0").into(),
        }),
        1 => (0u8..3, prop::option::of(0u8..4), any::<bool>()).prop_map(|(n, status, assign)| Command::ChangeTicket {
            ticket_id: format!("t{n}").into(),
            status: status.map(|s| [TicketStatus::Open, TicketStatus::Pending, TicketStatus::Resolved, TicketStatus::Closed][usize::from(s)]),
            priority: None,
            assignee: if assign { Assignee::To("staff1".into()) } else { Assignee::Unchanged },
        }),
        2 => (0u8..3, 0u8..6, any::<bool>()).prop_map(|(n, c, staff)| Command::CommentOnTicket {
            ticket_id: format!("t{n}").into(),
            comment_id: format!("t{n}-{c}").into(),
            author_id: if staff { "staff1" } else { "u1" }.into(),
            staff,
            body: "More.".into(),
        }),
        // Saved dashboards: created, changed and deleted, sometimes when they do not exist.
        1 => (0u8..3, 0u8..3, 0u8..3).prop_map(|(n, verb, version)| {
            let dashboard_id: Str = format!("d{n}").into();
            let definition = DashboardDefinition {
                title: format!("Board {version}").into(),
                description: "".into(),
                panels: vec![PanelDefinition {
                    id: "orders".into(),
                    title: "Orders".into(),
                    chart: Chart::Stat,
                    source: PanelSource::Sql("SELECT count(*) FROM orders".into()),
                    unit: None,
                    anomaly_series: Vec::new(),
                }],
            };
            match verb {
                0 => Command::CreateDashboard { dashboard_id, definition },
                1 => Command::UpdateDashboard { dashboard_id, definition },
                _ => Command::DeleteDashboard { dashboard_id },
            }
        }),
        1 => (0u8..2).prop_map(|s| Command::RevokeSession {
            session_id: format!("s{s}").into(),
            reason: "signed_out".into(),
            refresh_hash: None,
        }),
    ]
}

/// Batches of commands, each some log time after the one before: within a minute, a
/// few minutes on, hours on, days or a month on, so that windows fill and slide and
/// rows that expire leave.
fn arb_batches() -> impl Strategy<Value = Vec<(Ts, Vec<Command>)>> {
    let jump = prop_oneof![
        4 => Just(1),
        2 => Just(61_000),
        1 => Just(3 * 3_600_000),
        1 => Just(2 * 86_400_000),
        // Past how long ended sessions are kept.
        1 => Just(31 * 86_400_000),
    ];
    // Now and then a rush of orders, so that quiet series see bursts (anomalies).
    let batch = prop_oneof![
        5 => prop::collection::vec(arb_command(), 1..6),
        1 => prop::collection::vec(arb_order(), 4..9),
    ];
    // Now and then one order all the way to delivery, a step a batch, so that orders
    // complete (and earn points) and some are refunded after.
    let segment = prop_oneof![
        6 => (jump, batch).prop_map(|step| vec![step]),
        1 => arb_lifecycle(),
    ];
    prop::collection::vec(segment, 1..10)
        .prop_map(|segments| segments.into_iter().flatten().collect())
}

/// An order placed, paid, dispatched and delivered, one batch each; then perhaps a
/// part of it refunded, or all of it.
fn arb_lifecycle() -> impl Strategy<Value = Vec<(Ts, Vec<Command>)>> {
    let product = prop::sample::select(PRODUCTS.to_vec());
    (
        0u8..12,
        product,
        1i64..3,
        prop::option::of(prop_oneof![Just(500i64), Just(100_000)]),
    )
        .prop_map(|(n, product, quantity, refund)| {
            let id = format!("o{n}");
            let payment_id = payment_id_for(&id);
            let shipment_id = shipment_id_for(&id);
            let mut steps = vec![
                vec![order(&id, &[(product, quantity)], true)],
                vec![Command::PaymentResult {
                    payment_id: payment_id.clone(),
                    order_id: id.as_str().into(),
                    outcome: PaymentOutcome::Approved {
                        charge_id: "ch".into(),
                    },
                }],
                vec![Command::ShipmentDispatched {
                    shipment_id: shipment_id.clone(),
                    order_id: id.as_str().into(),
                    carrier: "c".into(),
                    tracking_number: "t".into(),
                }],
                vec![Command::ShipmentDelivered {
                    shipment_id,
                    order_id: id.as_str().into(),
                }],
            ];
            if let Some(amount) = refund {
                steps.push(vec![Command::RequestRefund {
                    payment_id: payment_id.clone(),
                    order_id: id.as_str().into(),
                    amount_cents: Some(amount),
                    reason: "r".into(),
                }]);
                steps.push(vec![Command::RefundResult {
                    refund_id: refund_id_for(&payment_id, 1),
                    payment_id,
                    order_id: id.into(),
                    succeeded: true,
                }]);
            }
            steps.into_iter().map(|step| (1, step)).collect()
        })
}

/// Stock invariants: nothing negative, and reserved stock is exactly what live orders hold.
fn check_invariants(h: &Harness) {
    let requested: BTreeMap<Str, usize> = h
        .store
        .recorded_events()
        .into_iter()
        .filter_map(|event| match event.body {
            EventBody::OrderCreated(OrderCreated {
                order_id, items, ..
            }) => Some((order_id, items.len())),
            _ => None,
        })
        .collect();
    let snapshot = h.store.read();
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for order in snapshot.orders.values() {
        let holds = matches!(
            order.status,
            OrderStatus::Reserved | OrderStatus::Confirmed | OrderStatus::Shipped
        );
        if holds {
            assert_eq!(
                order.lines.len(),
                requested[&order.order_id],
                "order {} holds all its lines",
                order.order_id
            );
            for line in &order.lines {
                *held.entry(line.product_id.to_string()).or_default() += line.quantity;
            }
        }
    }
    for reservation in snapshot.reservations.values() {
        if reservation.status == dataflows::views::ReservationStatus::Held {
            assert_eq!(
                reservation.lines.len(),
                reservation.items.len(),
                "reservation {} holds all its lines",
                reservation.reservation_id
            );
            for line in &reservation.lines {
                *held.entry(line.product_id.to_string()).or_default() += line.quantity;
            }
        }
    }
    for product in PRODUCTS {
        let level = snapshot.stock_of(product);
        assert!(
            level.reserved >= 0 && level.available() >= 0,
            "{product}: {level:?}"
        );
        assert_eq!(
            level.reserved,
            held.get(product).copied().unwrap_or(0),
            "{product}: reserved equals what orders and reservations hold"
        );
    }
}

/// The secondary indexes agree with the rows they index, as a scan of the rows finds.
fn check_indexes(h: &Harness) {
    let snapshot = h.store.read();
    let mut users: BTreeSet<&str> = BTreeSet::new();
    for order in snapshot.orders.values() {
        users.insert(&order.user_id);
    }
    for user in users {
        let mut expected: Vec<(Ts, &str)> = snapshot
            .orders
            .values()
            .filter(|order| &*order.user_id == user)
            .map(|order| (order.created_at, &*order.order_id))
            .collect();
        expected.sort();
        expected.reverse();
        let listed: Vec<(Ts, &str)> = snapshot
            .orders_of(user, None)
            .map(|(_, order)| (order.created_at, &*order.order_id))
            .collect();
        assert_eq!(listed, expected, "orders of {user}, newest first");
        // Every cursor of the list starts the rest of it.
        for (skip, (created_at, order_id)) in expected.iter().enumerate() {
            let cursor = OrderCursor {
                created_at: *created_at,
                order_id: (*order_id).into(),
            };
            let rest: Vec<&str> = snapshot
                .orders_of(user, Some(&cursor))
                .map(|(_, order)| &*order.order_id)
                .collect();
            let want: Vec<&str> = expected[skip + 1..].iter().map(|(_, id)| *id).collect();
            assert_eq!(rest, want);
        }
    }
    for product in snapshot.products.values() {
        assert_eq!(
            snapshot.product_by_sku(&product.sku).map(|p| &p.product_id),
            Some(&product.product_id)
        );
    }
}

/// Saved cards, specified over the commands in log order: a card is saved unless its
/// user was deleted, its id is taken or the user keeps 20; removed if it is there; a
/// user's deletion removes all of theirs.
#[derive(Default)]
struct SavedCards {
    cards: BTreeMap<String, String>,
    deleted: BTreeSet<String>,
}

impl SavedCards {
    fn apply(&mut self, command: &Command) {
        match command {
            Command::AddPaymentMethod {
                method_id, user_id, ..
            } => {
                let held = self
                    .cards
                    .values()
                    .filter(|owner| **owner == **user_id)
                    .count();
                let taken = self.cards.contains_key(&**method_id);
                if !self.deleted.contains(&**user_id) && !taken && held < 20 {
                    self.cards
                        .insert(method_id.to_string(), user_id.to_string());
                }
            }
            Command::RemovePaymentMethod { method_id, user_id }
                if self
                    .cards
                    .get(&**method_id)
                    .is_some_and(|owner| *owner == **user_id) =>
            {
                self.cards.remove(&**method_id);
            }
            Command::DeleteUser { user_id } => {
                self.cards.retain(|_, owner| *owner != **user_id);
                self.deleted.insert(user_id.to_string());
            }
            _ => {}
        }
    }

    fn check(&self, h: &Harness) {
        let snapshot = h.store.read();
        let held: BTreeMap<String, String> = (snapshot.payment_methods.values())
            .map(|row| (row.method_id.to_string(), row.user_id.to_string()))
            .collect();
        assert_eq!(held, self.cards, "saved cards");
        for user in ["u0", "u1"] {
            let listed: Vec<String> = (snapshot.payment_methods_of(user))
                .map(|row| row.method_id.to_string())
                .collect();
            let expected: Vec<String> = (self.cards.iter())
                .filter(|(_, owner)| *owner == user)
                .map(|(id, _)| id.clone())
                .collect();
            assert_eq!(listed, expected, "{user}'s cards");
        }
    }
}

/// Loyalty, specified from the order events alone: each completed order earns a point
/// per whole unit of its total, and its refunds take back the refunded share of those
/// (rounded down, never more than it earned), in whatever order they came.
fn check_loyalty(h: &Harness) {
    #[derive(Default)]
    struct Order {
        user: String,
        total: i64,
        completed: bool,
        refunded: i64,
    }
    let mut orders: BTreeMap<String, Order> = BTreeMap::new();
    for event in h.store.recorded_events() {
        match event.body {
            EventBody::OrderCreated(created) => {
                let order = orders.entry(created.order_id.to_string()).or_default();
                order.user = created.user_id.to_string();
            }
            EventBody::OrderReserved(reserved) => {
                orders
                    .entry(reserved.order_id.to_string())
                    .or_default()
                    .total = reserved.total_cents;
            }
            EventBody::OrderCompleted(completed) => {
                orders
                    .entry(completed.order_id.to_string())
                    .or_default()
                    .completed = true;
            }
            EventBody::RefundProcessed(refund) => {
                orders
                    .entry(refund.order_id.to_string())
                    .or_default()
                    .refunded += refund.amount_cents;
            }
            _ => {}
        }
    }
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for order in orders
        .values()
        .filter(|order| order.completed && order.total > 0)
    {
        let earned = order.total / 100;
        let taken = earned * order.refunded.min(order.total) / order.total;
        *expected.entry(order.user.clone()).or_default() += earned - taken;
    }
    expected.retain(|_, points| *points != 0);
    let snapshot = h.store.read();
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for row in snapshot.loyalty.values() {
        assert!(row.points >= 0, "{row:?}");
        assert_eq!(row.points, row.earned - row.reversed, "{row:?}");
        if row.points != 0 {
            held.insert(row.user_id.to_string(), row.points);
        }
    }
    assert_eq!(held, expected, "points per user");
}

fn run(workers: usize, batches: &[(Ts, Vec<Command>)]) -> (Vec<BTreeSet<Row>>, Vec<Event>) {
    let mut h = Harness::new(workers);
    h.batch(PRODUCTS.iter().map(|p| product(p, 4)).collect());
    let mut states = Vec::new();
    let mut cards = SavedCards::default();
    for (jump, batch) in batches {
        h.append(*jump, batch.iter().cloned().map(Envelope::new).collect());
        batch.iter().for_each(|command| cards.apply(command));
        cards.check(&h);
        let snapshot = h.store.read_consistent();
        let rows = snapshot.rows();
        let expected = recompute(
            &h.store.recorded_events(),
            &h.store.recorded_rejections(),
            snapshot.frontier,
        );
        if rows != expected {
            let missing: Vec<_> = expected.difference(&rows).collect();
            let extra: Vec<_> = rows.difference(&expected).collect();
            panic!("incremental views differ from the recomputation:\nmissing {missing:#?}\nextra {extra:#?}");
        }
        check_invariants(&h);
        check_indexes(&h);
        check_loyalty(&h);
        states.push(rows);
    }
    (states, h.store.recorded_events())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn incremental_equals_recomputed_on_1_and_4_workers(batches in arb_batches()) {
        let (one, events_one) = run(1, &batches);
        let (four, events_four) = run(4, &batches);
        prop_assert_eq!(one, four);
        prop_assert_eq!(events_one, events_four);
    }
}

/// While the metrics lag the read models, a consistent snapshot still holds every view,
/// metric or not, exactly as recomputed from the events before its frontier.
#[test]
fn a_consistent_snapshot_is_one_frontier_while_the_metrics_lag() {
    // A step of 30 ms: the metrics stop at whichever frontiers timing gives; an hour:
    // after their first step they stay behind for the whole test.
    for (workers, every_ms) in [(1, 30), (2, 30), (1, 3_600_000)] {
        let features = dataflows::Features {
            metrics: true,
            metrics_every: std::time::Duration::from_millis(every_ms),
        };
        let mut h = Harness::with_features(workers, features);
        h.append_views_only(
            1,
            vec![
                Envelope::new(product("a", 9)),
                Envelope::new(product("b", 2)),
            ],
        );
        for n in 0..12 {
            let lines: &[(&str, i64)] = match n % 3 {
                0 => &[("a", 2)],
                1 => &[("a", 1), ("b", 1)],
                _ => &[("b", 3)],
            };
            let jump = if n == 6 { 61_000 } else { 1 };
            let placed = order(&format!("o{n}"), lines, n % 4 != 3);
            h.append_views_only(jump, vec![Envelope::new(placed)]);
            let snapshot = h.store.read_consistent();
            let before = |ts: Ts| settled_frontier(ts) <= snapshot.frontier;
            let events: Vec<Event> = (h.store.recorded_events().into_iter())
                .filter(|event| before(event.ts))
                .collect();
            let rejections: Vec<Rejection> = (h.store.recorded_rejections().into_iter())
                .filter(|rejection| before(rejection.ts))
                .collect();
            assert_eq!(
                snapshot.rows(),
                recompute(&events, &rejections, snapshot.frontier),
                "{workers} workers, step {every_ms} ms, frontier {}",
                snapshot.frontier
            );
            if every_ms == 3_600_000 {
                assert!(
                    snapshot.frontier < h.store.read().frontier,
                    "the metrics lag"
                );
            }
        }
    }
}

/// A scan reads the snapshot it started from, batch by batch, in id order, while newer
/// frontiers are published beside it.
#[test]
fn scans_read_one_frontier_as_arrow_batches() {
    let mut h = Harness::new(2);
    h.batch((0..7).map(|n| product(&format!("p{n}"), 5)).collect());
    h.batch(
        (0..9)
            .map(|n| order(&format!("o{n}"), &[(&format!("p{}", n % 7), 1)], false))
            .collect(),
    );
    let snapshot = h.store.read();
    let mut scan = ViewScan::new(snapshot.clone(), View::Orders, 4);
    let first = scan.next().expect("a first batch");
    assert_eq!(first.num_rows(), 4);
    // Publish more while the scan is half way.
    h.batch(vec![order("o9", &[("p0", 1)], false)]);
    assert!(h.store.read().frontier > scan.frontier());
    let rest: Vec<_> = scan.collect();
    let ids: Vec<String> = std::iter::once(&first)
        .chain(rest.iter())
        .flat_map(|batch| {
            let column = batch
                .column(0)
                .as_any()
                .downcast_ref::<arrow_array::StringArray>()
                .expect("ids are strings");
            column
                .iter()
                .map(|id| id.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: Vec<String> = (0..9).map(|n| format!("o{n}")).collect();
    assert_eq!(
        ids, expected,
        "every order of the scan's frontier, once, in id order"
    );
    for view in View::all() {
        let rows: usize = ViewScan::new(h.store.read(), view, 3)
            .map(|b| b.num_rows())
            .sum();
        let snapshot = h.store.read();
        let orders = || snapshot.orders.after("");
        let expected = match view {
            View::Products | View::Stock => snapshot.products.len(),
            View::Users => snapshot.users.len(),
            View::Carts => snapshot.carts.len(),
            View::CartItems => snapshot.carts.after("").map(|c| c.items.len()).sum(),
            View::Orders => snapshot.orders.len(),
            View::OrderItems => orders()
                .map(|o| {
                    if o.lines.is_empty() {
                        o.items.len()
                    } else {
                        o.lines.len()
                    }
                })
                .sum(),
            View::OrderStatusHistory => orders().map(|o| o.history.len()).sum(),
            View::Payments => snapshot.payments.len(),
            View::Refunds => snapshot.payments.after("").map(|p| p.refunds.len()).sum(),
            View::Shipments => snapshot.shipments.len(),
            View::Reservations => snapshot.reservations.len(),
            View::Metric(metric) => snapshot.metric(metric).len(),
        };
        assert_eq!(rows, expected, "{}", view.name());
    }
    // A projection builds only its columns, in its order.
    let projected: Vec<_> = ViewScan::new(h.store.read(), View::Orders, 4)
        .with_projection(vec![2, 0])
        .collect();
    assert_eq!(projected[0].schema().field(0).name(), "status");
    assert_eq!(projected[0].num_columns(), 2);
    let projected_ids: usize = projected.iter().map(|b| b.num_rows()).sum();
    assert_eq!(projected_ids, h.store.read().orders.len());
    let products = ViewScan::new(h.store.read(), View::Products, 100)
        .next()
        .unwrap();
    assert_eq!(products.schema(), View::Products.schema());
    let available = products
        .column_by_name("available")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow_array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(available, 5 - 3, "p0 is held by o0, o7 and o9");
}

/// A revoked access token is kept while it could still be presented, and leaves its
/// view once the log's time passes its expiry (its signature refuses it from then on),
/// on any number of workers.
#[test]
fn a_revoked_token_leaves_its_view_when_it_expires() {
    for workers in [1, 2] {
        let mut h = Harness::new(workers);
        h.append(1, vec![]);
        let revoke = |token: &str, expires_at: Ts| {
            Envelope::new(Command::RevokeAccessToken {
                token_id: token.into(),
                user_id: "u1".into(),
                expires_at,
            })
        };
        let start = h.ts;
        h.append(
            1,
            vec![revoke("t1", start + 60_000), revoke("t2", start + 600_000)],
        );
        let held = |h: &Harness| {
            let snapshot = h.store.read();
            let mut held: Vec<String> = (snapshot.revoked_tokens.values())
                .map(|token| token.token_id.to_string())
                .collect();
            held.sort();
            held
        };
        assert_eq!(held(&h), ["t1", "t2"]);
        // A minute on, the first has expired; the second still counts.
        h.append(60_000, vec![]);
        assert_eq!(held(&h), ["t2"]);
        // A token revoked after it expired is never held.
        h.append(1, vec![revoke("t3", start)]);
        assert_eq!(held(&h), ["t2"]);
        h.append(600_000, vec![]);
        assert!(held(&h).is_empty());
    }
}

/// A session stays listed for `ENDED_SESSION_KEPT_MS` after it ended, signed out or
/// expired, and then leaves its view; refreshing it moves its end, and so when it
/// leaves, on any number of workers.
#[test]
fn an_ended_session_leaves_its_view_after_it_is_kept_a_while() {
    use dataflows::auth::views::ENDED_SESSION_KEPT_MS as KEPT;
    for workers in [1, 2] {
        let mut h = Harness::new(workers);
        h.append(1, vec![]);
        let open = |session: &str| {
            Envelope::new(Command::OpenSession {
                session_id: session.into(),
                user_id: "u1".into(),
                client_id: "tidemark-cli".into(),
                scope: "openid".into(),
                refresh_hash: format!("{session}-r1").into(),
                ttl_ms: 60_000,
            })
        };
        let start = h.ts;
        h.append(1, vec![open("s1"), open("s2"), open("s3")]);
        let opened = h.ts;
        // s3 signs out after 10 s; s2 is refreshed after 30 s, good for a minute more.
        h.append(
            10_000,
            vec![Envelope::new(Command::RevokeSession {
                session_id: "s3".into(),
                reason: "signed_out".into(),
                refresh_hash: None,
            })],
        );
        h.append(
            20_000,
            vec![Envelope::new(Command::RefreshSession {
                session_id: "s2".into(),
                client_id: "tidemark-cli".into(),
                refresh_hash: "s2-r1".into(),
                new_refresh_hash: "s2-r2".into(),
                ttl_ms: 60_000,
            })],
        );
        let listed = |h: &Harness| {
            let snapshot = h.store.read();
            let mut listed: Vec<String> = (snapshot.sessions.values())
                .map(|session| session.session_id.to_string())
                .collect();
            listed.sort();
            listed
        };
        assert_eq!(listed(&h), ["s1", "s2", "s3"]);
        // Ended, but kept until the moment its time is up.
        h.append(opened + 10_000 + KEPT - 1 - h.ts, vec![]);
        assert_eq!(listed(&h), ["s1", "s2", "s3"]);
        h.append(1, vec![]);
        assert_eq!(listed(&h), ["s1", "s2"], "s3 ended first");
        h.append(opened + 60_000 + KEPT - h.ts, vec![]);
        assert_eq!(listed(&h), ["s2"], "s1 expired next");
        h.append(opened + 90_000 + KEPT - h.ts, vec![]);
        assert!(listed(&h).is_empty(), "s2 ran longest");
        assert!(h.ts > start);
    }
}

/// The orders and products of a snapshot, as rows.
fn followed_rows(snapshot: &queries::Snapshot) -> BTreeSet<Row> {
    let orders = snapshot.orders.shared_rows().cloned().map(Row::Order);
    let products = snapshot.products.shared_rows().cloned().map(Row::Product);
    orders.chain(products).collect()
}

/// Folds a publication's updates of orders and products into `rows`.
fn follow(rows: &mut BTreeSet<Row>, changes: &queries::Changes) {
    for (row, diff) in &changes.updates {
        if !matches!(row, Row::Order(_) | Row::Product(_)) {
            continue;
        }
        match diff {
            1 => assert!(rows.insert(row.clone()), "{row:?} came in twice"),
            -1 => assert!(rows.remove(row), "{row:?} went out but was not in"),
            _ => panic!("a row's diff is 1 or -1, not {diff}"),
        }
    }
}

/// A reader that takes the snapshot and then every publication's changes holds the
/// views as they are, publication after publication, on any number of workers; one
/// that resumes from a frontier it reached gets exactly the changes since.
#[test]
fn the_changefeed_is_the_snapshot_then_every_change() {
    for workers in [1, 2] {
        let mut h = Harness::new(workers);
        h.append(1, vec![Envelope::new(product("p0", 5))]);
        let mut subscription = h.store.subscribe(None);
        let queries::Start::Snapshot(snapshot) = &subscription.start else {
            panic!("a new reader starts from a snapshot");
        };
        let mut rows = followed_rows(snapshot);
        let mut frontier = subscription.frontier;
        assert_eq!(rows.len(), 1);
        let mut resumed_from = None;
        for n in 0..6 {
            h.append(
                1,
                vec![
                    Envelope::new(order(&format!("o{n}"), &[("p0", 1)], n % 2 == 0)),
                    Envelope::new(product(&format!("p{}", n + 1), 3)),
                ],
            );
            while let Ok(changes) = subscription.updates.try_recv() {
                assert_eq!(changes.since, frontier, "no gap, no overlap");
                frontier = changes.frontier;
                follow(&mut rows, &changes);
            }
            let now = h.store.read();
            assert_eq!(frontier, now.frontier);
            assert_eq!(rows, followed_rows(&now), "after batch {n}");
            if n == 2 {
                resumed_from = Some((frontier, rows.clone()));
            }
        }
        // A reader that had reached an earlier frontier resumes from there.
        let (from, mut resumed) = resumed_from.unwrap();
        let resumption = h.store.subscribe(Some(from));
        let queries::Start::Resume(replay) = &resumption.start else {
            panic!("every change since {from} is kept");
        };
        let mut at = from;
        for changes in replay {
            assert_eq!(changes.since, at);
            at = changes.frontier;
            follow(&mut resumed, changes);
        }
        assert_eq!(at, resumption.frontier);
        assert_eq!(resumed, followed_rows(&h.store.read()));
        // Not a frontier it was ever at, or one in the future: a fresh snapshot.
        for bogus in [from + 1, resumption.frontier + 10] {
            assert!(matches!(
                h.store.subscribe(Some(bogus)).start,
                queries::Start::Snapshot(_)
            ));
        }
    }
}

/// A reader that falls further behind than the changefeed holds is told so (and would
/// start again from a snapshot), while the views go on.
#[test]
fn a_reader_that_falls_behind_is_told_to_start_again() {
    let mut h = Harness::new(1);
    h.store.set_changefeed_capacity(2);
    h.append(1, vec![Envelope::new(product("p0", 50))]);
    let mut subscription = h.store.subscribe(None);
    for n in 0..5 {
        h.append(
            1,
            vec![Envelope::new(order(&format!("o{n}"), &[("p0", 1)], false))],
        );
    }
    assert!(matches!(
        subscription.updates.try_recv(),
        Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_))
    ));
    assert_eq!(h.store.read().orders.len(), 5, "the views went on");
}
