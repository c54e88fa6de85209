//! Bad input gets a problem document with the right status, never a 500.

use axum::http::StatusCode;
use serde_json::json;

use crate::support::TestApp;

fn assert_problem(reply: &crate::support::Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{:?}", reply.body);
    assert_eq!(reply.content_type, "application/problem+json");
    assert_eq!(reply.body["status"], status.as_u16());
    assert!(
        reply.body["type"].is_string()
            && reply.body["title"].is_string()
            && reply.body["detail"].is_string()
            && reply.body["code"].is_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_hostile_input() {
    let t = TestApp::new().await;
    let product = t.product("ERR", 100, 2).await;
    let user = t.user("err@example.com").await;
    let cases: Vec<(&str, &str, Option<String>, StatusCode)> = vec![
        ("POST", "/api/v1/orders", Some("{not json".into()), StatusCode::BAD_REQUEST),
        ("POST", "/api/v1/orders", Some("[]".into()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/orders", Some(json!({"user_id": 7}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/orders", Some(json!({"user_id": user, "items": [{"product_id": product, "quantity": 0}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/orders", Some(json!({"user_id": user, "items": [{"product_id": product, "quantity": -3}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/orders", Some(json!({"user_id": user, "items": [{"product_id": "prd_nope", "quantity": 1}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/orders", Some(json!({"user_id": user, "items": [{"product_id": product, "quantity": 1e30}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/orders", Some(json!({"user_id": user, "items": []}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/orders", Some(json!({"user_id": "usr_nope", "items": [{"product_id": product, "quantity": 1}]}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/orders", Some(json!({"user_id": user, "items": [{"product_id": product, "quantity": 1}], "payment_method": {"type": "card", "card_number": "4242424242424241", "exp_month": 12, "exp_year": 2031, "cvc": "123"}}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/products", Some(json!({"sku": "X", "name": "X", "price_cents": -1, "currency": "USD"}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/products", Some(json!({"sku": "X", "name": "X", "price_cents": 1, "currency": "DOLLARS"}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/products", Some(json!({"sku": "X", "name": "X", "price_cents": 10_000_000_001_i64, "currency": "USD"}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/products", Some(json!({"sku": "ERR", "name": "dup", "price_cents": 1, "currency": "USD"}).to_string()), StatusCode::CONFLICT),
        ("POST", "/api/v1/users", Some(json!({"email": "not-an-email", "password": "long enough", "name": "N"}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/users", Some(json!({"email": "ERR@example.com", "password": "long enough", "name": "N"}).to_string()), StatusCode::CONFLICT),
        ("POST", "/api/v1/users", Some(json!({"email": "a@b.co", "password": "short", "name": "N"}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("POST", "/api/v1/inventory/adjust", Some(json!({"product_id": product, "delta": -5, "reason": "count"}).to_string()), StatusCode::CONFLICT),
        ("POST", "/api/v1/inventory/adjust", Some(json!({"product_id": "prd_nope", "delta": 1}).to_string()), StatusCode::NOT_FOUND),
        ("POST", "/api/v1/inventory/adjust", Some(json!({"product_id": product, "delta": 0}).to_string()), StatusCode::UNPROCESSABLE_ENTITY),
        ("GET", "/api/v1/orders/ord_nope", None, StatusCode::NOT_FOUND),
        ("GET", "/api/v1/orders/ord_nope?wait=forever", None, StatusCode::UNPROCESSABLE_ENTITY),
        ("GET", "/api/v1/products/prd_nope", None, StatusCode::NOT_FOUND),
        ("GET", "/api/v1/users/usr_nope", None, StatusCode::NOT_FOUND),
        ("GET", "/api/v1/payments/pay_nope", None, StatusCode::NOT_FOUND),
        ("GET", "/api/v1/shipments/shp_nope", None, StatusCode::NOT_FOUND),
        ("POST", "/api/v1/shipments/shp_nope/deliver", Some("{}".into()), StatusCode::NOT_FOUND),
        ("POST", "/api/v1/orders/ord_nope/cancel", Some("{}".into()), StatusCode::NOT_FOUND),
        ("PUT", "/api/v1/carts/crt_nope/items", Some(json!({"product_id": product, "quantity": 1}).to_string()), StatusCode::NOT_FOUND),
        ("GET", "/api/v1/inventory/availability", None, StatusCode::UNPROCESSABLE_ENTITY),
        ("GET", "/api/v1/products?limit=0", None, StatusCode::UNPROCESSABLE_ENTITY),
        ("GET", "/api/v1/nowhere", None, StatusCode::NOT_FOUND),
        ("DELETE", "/api/v1/orders/x", None, StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (method, path, body, status) in cases {
        let reply = t.send(method, path, body.as_deref(), &[]).await;
        assert_problem(&reply, status);
    }
    let wrong_type = t
        .send(
            "POST",
            "/api/v1/orders",
            Some("{}"),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_problem(&wrong_type, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!("{{\"sku\": \"{}\"}}", "x".repeat(400_000));
    assert_problem(
        &t.send("POST", "/api/v1/products", Some(&huge), &[]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    let field = t
        .post(
            "/api/v1/orders",
            json!({"user_id": user, "items": [{"product_id": product}]}),
        )
        .await;
    assert_eq!(
        field.body["errors"][0]["field"], "items[0].quantity",
        "{:?}",
        field.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id() {
    let t = TestApp::new().await;
    let reply = t.get("/health/live").await;
    assert!(reply.request_id.is_some());
    let echoed = t
        .send(
            "GET",
            "/api/v1/products/nope",
            None,
            &[("x-correlation-id", "corr-123")],
        )
        .await;
    assert_eq!(echoed.request_id.as_deref(), Some("corr-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_created_read_updated_searched_and_deleted() {
    let t = TestApp::new().await;
    let created = t
        .post(
            "/api/v1/users",
            json!({"email": "Zoe@Example.com", "password": "s3cret-enough", "name": "Zoe"}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.body.get("password").is_none() && created.body.get("password_hash").is_none());
    let id = created.body["id"].as_str().unwrap().to_string();
    let updated = t
        .put(&format!("/api/v1/users/{id}"), json!({"name": "Zoë"}))
        .await;
    assert_eq!(updated.body["name"], "Zoë");
    let found = t.get("/api/v1/users/search?q=zoe@").await;
    assert_eq!(found.body["items"][0]["id"], id.as_str());
    let deleted = t
        .send("DELETE", &format!("/api/v1/users/{id}"), None, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        t.get(&format!("/api/v1/users/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    // The address is free again.
    assert_eq!(
        t.post(
            "/api/v1/users",
            json!({"email": "zoe@example.com", "password": "s3cret-enough", "name": "Zoe 2"})
        )
        .await
        .status,
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_update_search_and_availability() {
    let t = TestApp::new().await;
    let mug = t.product("MUG-RED", 1000, 3).await;
    let plate = t.product("PLATE", 2000, 0).await;
    let updated = t
        .put(
            &format!("/api/v1/products/{mug}"),
            json!({"name": "Red mug", "price_cents": 1100}),
        )
        .await;
    assert_eq!(updated.body["price_cents"], 1100);
    let found = t.get("/api/v1/products/search?q=red").await;
    assert_eq!(found.body["items"].as_array().unwrap().len(), 1);
    let adjusted = t
        .post(
            "/api/v1/inventory/adjust",
            json!({"product_id": plate, "delta": 4, "reason": "delivery"}),
        )
        .await;
    assert_eq!(
        adjusted.body,
        json!({"product_id": plate, "on_hand": 4, "reserved": 0, "available": 4})
    );
    let availability = t
        .get(&format!(
            "/api/v1/inventory/availability?product_id={mug}&product_id={plate}"
        ))
        .await;
    assert_eq!(availability.body["items"][0]["available"], 3);
    assert_eq!(availability.body["items"][1]["available"], 4);
    let page = t.get("/api/v1/products?limit=1").await;
    assert!(page.body["next_cursor"].is_string());
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = t
        .get(&format!("/api/v1/products?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(rest.body["items"].as_array().unwrap().len(), 1);
    assert!(rest.body["next_cursor"].is_null());
}
