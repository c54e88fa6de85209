//! Saved cards (`/api/v1/payment-methods`): kept as tokens, shown without their
//! numbers, paying orders by id, each user's own.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::orders::wait_for_status;
use crate::support::{Reply, TestApp};

fn card(number: &str) -> Value {
    json!({"type": "card", "card_number": number, "exp_month": 12, "exp_year": 2031, "cvc": "123"})
}

fn fields(reply: &Reply) -> Vec<&str> {
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    (reply.body["errors"].as_array().unwrap().iter())
        .map(|error| error["field"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saved_cards_pay_for_orders_and_never_show_their_numbers() {
    let t = TestApp::new().await;
    let lamp = t.product("LAMP", 5000, 20).await;
    let (ann, bob) = (
        t.user("ann@example.com").await,
        t.user("bob@example.com").await,
    );
    let (as_ann, as_bob) = (
        ("authorization", t.bearer(&ann)),
        ("authorization", t.bearer(&bob)),
    );

    // Saved as the caller, by default: the token stays inside, the number is gone.
    let saved = t
        .send_as(
            &as_ann,
            "POST",
            "/api/v1/payment-methods",
            Some(card("4242 4242 4242 4242")),
        )
        .await;
    assert_eq!(saved.status, StatusCode::CREATED, "{:?}", saved.body);
    let good = saved.body["id"].as_str().unwrap().to_string();
    assert!(good.starts_with("pm_"), "{good}");
    assert_eq!(
        saved.headers["location"].to_str().unwrap(),
        format!("/api/v1/payment-methods/{good}")
    );
    assert_eq!(
        (
            saved.body["user_id"].as_str(),
            saved.body["brand"].as_str(),
            saved.body["last4"].as_str()
        ),
        (Some(ann.as_str()), Some("visa"), Some("4242"))
    );
    let raw = String::from_utf8(saved.raw.clone()).unwrap();
    assert!(
        !raw.contains("4242424242424242") && !raw.contains("tok_") && !raw.contains("cvc"),
        "{raw}"
    );
    let declining = t
        .send_as(
            &as_ann,
            "POST",
            "/api/v1/payment-methods",
            Some(card("4000000000000002")),
        )
        .await;
    let declining = declining.body["id"].as_str().unwrap().to_string();

    let listed = t
        .send_as(&as_ann, "GET", "/api/v1/payment-methods", None)
        .await;
    let ids: Vec<&str> = (listed.body["items"].as_array().unwrap().iter())
        .map(|method| method["id"].as_str().unwrap())
        .collect();
    let mut expected = vec![good.as_str(), declining.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    // Each user's own: another customer sees and uses none of them.
    let path = format!("/api/v1/payment-methods/{good}");
    assert_eq!(
        t.send_as(&as_bob, "GET", &path, None).await.status,
        StatusCode::FORBIDDEN
    );
    let listing = t
        .send_as(
            &as_bob,
            "GET",
            &format!("/api/v1/payment-methods?user_id={ann}"),
            None,
        )
        .await;
    assert_eq!(listing.status, StatusCode::FORBIDDEN);
    assert_eq!(
        t.send_as(&as_ann, "GET", &path, None).await.body["last4"],
        "4242"
    );

    // Paying with them: the saved card is charged as if it were given again.
    let items = json!([{"product_id": lamp, "quantity": 1}]);
    let order = |user: &str, method: &str| json!({"user_id": user, "items": items, "payment_method_id": method});
    let paid = t
        .send_as(&as_ann, "POST", "/api/v1/orders", Some(order(&ann, &good)))
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{:?}", paid.body);
    let paid = wait_for_status(&t, paid.body["id"].as_str().unwrap(), "shipped").await;
    let payment = t
        .get(&format!(
            "/api/v1/payments/{}",
            paid["payment_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(payment.body["status"], "succeeded", "{:?}", payment.body);
    let declined = t
        .send_as(
            &as_ann,
            "POST",
            "/api/v1/orders",
            Some(order(&ann, &declining)),
        )
        .await;
    let declined = wait_for_status(&t, declined.body["id"].as_str().unwrap(), "cancelled").await;
    assert_eq!(declined["cancel_reason"], "payment_declined");
    let stolen = t
        .send_as(&as_bob, "POST", "/api/v1/orders", Some(order(&bob, &good)))
        .await;
    assert_eq!(fields(&stolen), ["payment_method_id"]);
    let mut both = order(&ann, &good);
    both["payment_method"] = card("4242424242424242");
    assert_eq!(
        fields(
            &t.send_as(&as_ann, "POST", "/api/v1/orders", Some(both))
                .await
        ),
        ["payment_method_id"]
    );

    // An order placed without paying is paid with a saved card later.
    let waiting = t.order(&ann, &lamp, 1).await;
    let waiting = waiting.body["id"].as_str().unwrap().to_string();
    // A card and a saved card at once are refused, as with orders.
    let both = json!({"order_id": waiting, "payment_method_id": good,
                      "payment_method": card("4242424242424242")});
    let both = t
        .send_as(&as_ann, "POST", "/api/v1/payments", Some(both))
        .await;
    assert_eq!(fields(&both), ["payment_method_id"]);
    let pay = t
        .send_as(
            &as_ann,
            "POST",
            "/api/v1/payments",
            Some(json!({"order_id": waiting, "payment_method_id": good})),
        )
        .await;
    assert_eq!(pay.status, StatusCode::CREATED, "{:?}", pay.body);
    assert_eq!(pay.body["card"]["last4"], "4242", "{:?}", pay.body);

    // A bad card is refused field by field; no user, no card.
    let bad = t
        .send_as(
            &as_ann,
            "POST",
            "/api/v1/payment-methods",
            Some(card("4242424242424241")),
        )
        .await;
    assert_eq!(fields(&bad), ["card_number"]);
    let mut nobody = card("4242424242424242");
    nobody["user_id"] = json!("usr_nobody");
    let nobody = t.post("/api/v1/payment-methods", nobody).await;
    assert_eq!(fields(&nobody), ["user_id"]);

    // Twenty cards at most.
    for _ in 0..18 {
        let more = t
            .send_as(
                &as_ann,
                "POST",
                "/api/v1/payment-methods",
                Some(card("5555555555554444")),
            )
            .await;
        assert_eq!(more.status, StatusCode::CREATED, "{:?}", more.body);
    }
    let over = t
        .send_as(
            &as_ann,
            "POST",
            "/api/v1/payment-methods",
            Some(card("5555555555554444")),
        )
        .await;
    assert_eq!(over.status, StatusCode::CONFLICT, "{:?}", over.body);
    assert_eq!(over.body["code"], "too_many_payment_methods");

    // Removed: by its user only; then it pays for nothing.
    assert_eq!(
        t.send_as(&as_bob, "DELETE", &path, None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        t.send_as(&as_ann, "DELETE", &path, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        t.send_as(&as_ann, "GET", &path, None).await.status,
        StatusCode::NOT_FOUND
    );
    let gone = t
        .send_as(&as_ann, "POST", "/api/v1/orders", Some(order(&ann, &good)))
        .await;
    assert_eq!(fields(&gone), ["payment_method_id"]);

    // Deleting the account removes the cards with it.
    let deleted = t
        .send("DELETE", &format!("/api/v1/users/{ann}"), None, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    let path = format!("/api/v1/payment-methods/{declining}");
    assert_eq!(t.get(&path).await.status, StatusCode::NOT_FOUND);
}
