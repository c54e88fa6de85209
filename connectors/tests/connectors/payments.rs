use connectors::effects::payments::*;
use dataflows::model::PaymentOutcome;

const NOW: (u16, u8) = (2026, 11);

fn charge(provider: &SandboxPayments, key: &str, number: &str) -> PaymentOutcome {
    let card = tokenize_card(number, 12, 2030, "123", NOW).expect("valid card");
    provider
        .charge(&ChargeRequest {
            idempotency_key: key.into(),
            amount_cents: 1000,
            currency: "USD".into(),
            card,
        })
        .expect("charge")
}

#[test]
fn sandbox_rules_follow_the_test_cards() {
    let dir = tempfile::tempdir().unwrap();
    let provider = SandboxPayments::open(dir.path().join("ledger.jsonl")).unwrap();
    assert!(matches!(
        charge(&provider, "k1", "4242424242424242"),
        PaymentOutcome::Approved { .. }
    ));
    assert_eq!(
        charge(&provider, "k2", CARD_DECLINED),
        PaymentOutcome::Declined {
            decline_code: "card_declined".into()
        }
    );
    assert_eq!(
        charge(&provider, "k3", CARD_INSUFFICIENT_FUNDS),
        PaymentOutcome::Declined {
            decline_code: "insufficient_funds".into()
        }
    );
    assert!(matches!(
        charge(&provider, "k4", CARD_FRAUD),
        PaymentOutcome::Fraud { .. }
    ));
    assert_eq!(
        tokenize_card("4242424242424241", 12, 2030, "123", NOW),
        Err(CardError::InvalidNumber)
    );
    assert_eq!(
        tokenize_card("4242424242424242", 13, 2030, "123", NOW),
        Err(CardError::InvalidExpiry)
    );
    assert_eq!(
        tokenize_card("4242424242424242", 1, 2020, "123", NOW),
        Err(CardError::InvalidExpiry)
    );
    assert_eq!(
        tokenize_card("4242424242424242", 12, 2030, "12a", NOW),
        Err(CardError::InvalidCvc)
    );
}

#[test]
fn a_retried_charge_after_a_crash_is_not_charged_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    let first = {
        let provider = SandboxPayments::open(&path).unwrap();
        charge(&provider, "pay_1", "4242424242424242")
        // The process dies here, before the result reaches the log.
    };
    let provider = SandboxPayments::open(&path).unwrap();
    let retried = charge(&provider, "pay_1", "4242424242424242");
    assert_eq!(first, retried, "the same key gets the same charge");
    assert_eq!(provider.charges_made(), 1);
}

#[test]
fn luhn() {
    assert!(luhn_valid("4242424242424242"));
    assert!(
        luhn_valid(CARD_DECLINED) && luhn_valid(CARD_FRAUD) && luhn_valid(CARD_INSUFFICIENT_FUNDS)
    );
    assert!(!luhn_valid("4242424242424243"));
}

#[test]
fn charges_made_together_answer_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let provider = SandboxPayments::open(dir.path().join("ledger.jsonl")).unwrap();
    let request = |key: &str, number: &str| ChargeRequest {
        idempotency_key: key.into(),
        amount_cents: 500,
        currency: "USD".into(),
        card: tokenize_card(number, 12, 2030, "123", NOW).unwrap(),
    };
    let batch = [
        request("a", "4242424242424242"),
        request("b", CARD_DECLINED),
        request("a", "4242424242424242"),
    ];
    let outcomes: Vec<PaymentOutcome> = provider
        .charge_all(&batch)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(matches!(outcomes[0], PaymentOutcome::Approved { .. }));
    assert_eq!(
        outcomes[1],
        PaymentOutcome::Declined {
            decline_code: "card_declined".into()
        }
    );
    assert_eq!(
        outcomes[0], outcomes[2],
        "a key repeated in one batch is one charge"
    );
    assert_eq!(provider.charges_made(), 1);
    assert_eq!(provider.charge(&batch[0]).unwrap(), outcomes[0]);
    let ledger = std::fs::read_to_string(dir.path().join("ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 2);
}

#[test]
fn a_reopened_ledger_gives_every_answer_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.jsonl");
    // An answer this sandbox would not give now (another charge id) is kept as written.
    std::fs::write(
        &path,
        r#"{"key":"older","kind":"charge","outcome":{"result":"approved","charge_id":"ch_from_before"},"amount_cents":100}
"#,
    )
    .unwrap();
    let cards = [
        ("a", "4242424242424242"),
        ("b", CARD_DECLINED),
        ("c", CARD_INSUFFICIENT_FUNDS),
        ("d", CARD_FRAUD),
        ("older", "4242424242424242"),
    ];
    let (first, refunded) = {
        let provider = SandboxPayments::open(&path).unwrap();
        let outcomes: Vec<PaymentOutcome> = cards
            .iter()
            .map(|(key, number)| charge(&provider, key, number))
            .collect();
        let refund = RefundRequest {
            idempotency_key: "r".into(),
            payment_key: "a".into(),
            amount_cents: 300,
        };
        (outcomes, provider.refund(&refund).unwrap())
    };
    assert_eq!(
        first[4],
        PaymentOutcome::Approved {
            charge_id: "ch_from_before".into()
        }
    );
    let provider = SandboxPayments::open(&path).unwrap();
    let again: Vec<PaymentOutcome> = cards
        .iter()
        .map(|(key, number)| charge(&provider, key, number))
        .collect();
    assert_eq!(first, again);
    assert!(refunded);
    assert_eq!(provider.charges_made(), 2);
    let ledger = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        ledger.lines().count(),
        6,
        "nothing answered twice is written twice"
    );
}
