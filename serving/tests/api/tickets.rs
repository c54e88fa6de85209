//! Customer support (`/api/v1/support/tickets*`): a customer and the staff talk on a
//! ticket until it is closed, each seeing what is theirs to see.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::support::{Reply, TestApp};

/// Two customers and the support staff, each with their credential.
struct Desk {
    ann_id: String,
    ann: (&'static str, String),
    bob: (&'static str, String),
    staff: (&'static str, String),
}

async fn desk(t: &TestApp) -> Desk {
    let (ann_id, bob_id) = (
        t.user("ann@example.com").await,
        t.user("bob@example.com").await,
    );
    let key = t
        .post(
            "/api/v1/api-keys",
            json!({"name": "desk", "scopes": ["support:read", "support:write"]}),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED, "{:?}", key.body);
    Desk {
        ann: ("authorization", t.bearer(&ann_id)),
        bob: ("authorization", t.bearer(&bob_id)),
        staff: ("x-api-key", key.body["key"].as_str().unwrap().to_string()),
        ann_id,
    }
}

fn ids(reply: &Reply) -> Vec<&str> {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    (reply.body["items"].as_array().unwrap().iter())
        .map(|item| item["id"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_and_the_staff_talk_on_a_ticket_until_it_is_closed() {
    let t = TestApp::new().await;
    let mug = t.product("MUG", 1000, 5).await;
    let Desk {
        ann_id,
        ann,
        bob,
        staff,
    } = desk(&t).await;
    let order = t.order(&ann_id, &mug, 1).await.body["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Opened by the customer about her order: the staff owe a first answer in 4 hours.
    let opened = t
        .send_as(
            &ann,
            "POST",
            "/api/v1/support/tickets",
            Some(json!({
        "subject": "Mug arrived broken", "body": "It came in pieces.\nPhoto attached.",
        "order_id": order, "priority": "high"})),
        )
        .await;
    assert_eq!(opened.status, StatusCode::CREATED, "{:?}", opened.body);
    let ticket = opened.body["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/support/tickets/{ticket}");
    assert_eq!(opened.headers["location"].to_str().unwrap(), path);
    let body = &opened.body;
    assert_eq!(
        (body["status"].as_str(), body["priority"].as_str()),
        (Some("open"), Some("high"))
    );
    assert_eq!(
        (body["user_id"].as_str(), body["order_id"].as_str()),
        (Some(ann_id.as_str()), Some(order.as_str()))
    );
    assert_eq!(
        body["comments"][0]["body"],
        "It came in pieces.\nPhoto attached."
    );
    assert_eq!(
        (
            body["comments"][0]["staff"].as_bool(),
            body["comments"][0]["author_id"].as_str()
        ),
        (Some(false), Some(ann_id.as_str()))
    );
    assert_eq!(body["first_response_breached"], false);
    let created = humantime::parse_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
    let due = humantime::parse_rfc3339(body["first_response_due_at"].as_str().unwrap()).unwrap();
    assert_eq!(due.duration_since(created).unwrap().as_secs(), 4 * 3600);

    // Each customer sees their own; a ticket about another's order is refused.
    assert_eq!(
        t.send_as(&bob, "GET", &path, None).await.status,
        StatusCode::FORBIDDEN
    );
    let theirs = t
        .send_as(
            &bob,
            "POST",
            "/api/v1/support/tickets",
            Some(json!({
        "subject": "Hm", "body": "Hm", "order_id": order})),
        )
        .await;
    assert_eq!(
        theirs.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        theirs.body
    );
    assert_eq!(theirs.body["errors"][0]["field"], "order_id");
    let empty = t
        .send_as(
            &bob,
            "POST",
            "/api/v1/support/tickets",
            Some(json!({"subject": " ", "body": ""})),
        )
        .await;
    assert_eq!(
        empty.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        empty.body
    );
    assert_eq!(
        ids(&t
            .send_as(&ann, "GET", "/api/v1/support/tickets", None)
            .await),
        [ticket.as_str()]
    );
    assert!(ids(&t
        .send_as(&bob, "GET", "/api/v1/support/tickets", None)
        .await)
    .is_empty());
    let peek = t
        .send_as(
            &bob,
            "GET",
            &format!("/api/v1/support/tickets?user_id={ann_id}"),
            None,
        )
        .await;
    assert_eq!(peek.status, StatusCode::FORBIDDEN);
    // The staff see every ticket, by status.
    assert_eq!(
        ids(&t
            .send_as(&staff, "GET", "/api/v1/support/tickets?status=open", None)
            .await),
        [ticket.as_str()]
    );
    assert!(ids(&t
        .send_as(&staff, "GET", "/api/v1/support/tickets?status=closed", None)
        .await)
    .is_empty());
    let bogus = t
        .send_as(&staff, "GET", "/api/v1/support/tickets?status=lost", None)
        .await;
    assert_eq!(bogus.status, StatusCode::UNPROCESSABLE_ENTITY);

    // The staff answer, take it and wait for the customer...
    let answered = t
        .send_as(
            &staff,
            "POST",
            &format!("{path}/comments"),
            Some(json!({"body": "Sorry! A new one is on its way."})),
        )
        .await;
    assert_eq!(answered.status, StatusCode::CREATED, "{:?}", answered.body);
    assert_eq!(answered.body["comments"][1]["staff"], true);
    assert!(answered.body["first_response_at"].is_string());
    let taken = t
        .send_as(
            &staff,
            "PUT",
            &path,
            Some(json!({"status": "pending", "assignee": "agent-7", "priority": "urgent"})),
        )
        .await;
    assert_eq!(taken.status, StatusCode::OK, "{:?}", taken.body);
    assert_eq!(
        (
            taken.body["status"].as_str(),
            taken.body["assignee"].as_str(),
            taken.body["priority"].as_str()
        ),
        (Some("pending"), Some("agent-7"), Some("urgent"))
    );
    // ...whose answer gives it back to them.
    let replied = t
        .send_as(
            &ann,
            "POST",
            &format!("{path}/comments"),
            Some(json!({"body": "Thanks!"})),
        )
        .await;
    assert_eq!(replied.body["status"], "open", "{:?}", replied.body);
    assert_eq!(replied.body["comment_count"], 3);

    // The customer may close her ticket, not triage it; closed, it takes nothing more.
    let triage = t
        .send_as(&ann, "PUT", &path, Some(json!({"status": "pending"})))
        .await;
    assert_eq!(triage.status, StatusCode::FORBIDDEN, "{:?}", triage.body);
    let closed = t
        .send_as(&ann, "PUT", &path, Some(json!({"status": "closed"})))
        .await;
    assert_eq!(closed.status, StatusCode::OK, "{:?}", closed.body);
    assert!(closed.body["resolved_at"].is_string());
    let late = t
        .send_as(
            &ann,
            "POST",
            &format!("{path}/comments"),
            Some(json!({"body": "One more thing"})),
        )
        .await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{:?}", late.body);
    assert_eq!(late.body["code"], "ticket_closed");
    let unassign = t
        .send_as(&staff, "PUT", &path, Some(json!({"assignee": null})))
        .await;
    assert_eq!(unassign.status, StatusCode::CONFLICT, "{:?}", unassign.body);
    assert_eq!(
        t.get("/api/v1/support/tickets/tkt_none").await.status,
        StatusCode::NOT_FOUND
    );
}

/// The rows coming in (`diff` +1) of a changefeed's update.
fn incoming(event: &crate::support::SseEvent) -> Vec<Value> {
    (event.data["changes"].as_array().unwrap().iter())
        .filter(|change| change["diff"] == 1)
        .map(|change| change["row"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_s_chat_streams_each_message_to_both_sides() {
    let t = TestApp::new().await;
    let Desk {
        ann, bob, staff, ..
    } = desk(&t).await;
    let opened = t
        .send_as(
            &ann,
            "POST",
            "/api/v1/support/tickets",
            Some(json!({
        "subject": "Login trouble", "body": "I cannot sign in."})),
        )
        .await;
    let ticket = opened.body["id"].as_str().unwrap().to_string();
    let chat = format!("/api/v1/support/tickets/{ticket}/chat/stream");

    let (status, mut customer) = t.stream(&chat, &[(ann.0, ann.1.as_str())]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, mut desk) = t.stream(&chat, &[(staff.0, staff.1.as_str())]).await;
    assert_eq!(status, StatusCode::OK);
    for stream in [&mut customer, &mut desk] {
        let snapshot = stream.next().await;
        assert_eq!(snapshot.event, "snapshot");
        let rows = snapshot.data["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["comments"][0]["body"], "I cannot sign in.");
    }
    let (status, _) = t.stream(&chat, &[(bob.0, bob.1.as_str())]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = t
        .stream(
            "/api/v1/support/tickets/tkt_none/chat/stream",
            &[(staff.0, staff.1.as_str())],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The staff write; both sides see it. The customer answers; both see that too.
    for (who, text) in [
        (&staff, "Try resetting your password."),
        (&ann, "That worked, thanks!"),
    ] {
        let sent = t
            .send_as(
                who,
                "POST",
                &format!("/api/v1/support/tickets/{ticket}/comments"),
                Some(json!({"body": text})),
            )
            .await;
        assert_eq!(sent.status, StatusCode::CREATED, "{:?}", sent.body);
        for stream in [&mut customer, &mut desk] {
            let update = stream.next().await;
            assert_eq!(update.event, "update", "{:?}", update.data);
            let rows = incoming(&update);
            let last = rows[0]["comments"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .clone();
            assert_eq!(last["body"], text, "{last}");
            assert_eq!(last["staff"], who.0 == "x-api-key");
        }
    }
    // The views' feed of tickets gives a customer only their own.
    let (status, mut own) = t
        .stream("/api/v1/views/tickets/changes", &[(bob.0, bob.1.as_str())])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(own.next().await.data["rows"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_s_tickets_read_erased_live_and_in_the_history() {
    let t = TestApp::configured(|config| config.history.flush_ms = 10).await;
    let Desk {
        ann_id, ann, staff, ..
    } = desk(&t).await;
    let opened = t
        .send_as(
            &ann,
            "POST",
            "/api/v1/support/tickets",
            Some(json!({"subject": "Ann Smith, 1 Main St", "body": "My card 4242 was charged twice."})),
        )
        .await;
    let ticket = opened.body["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/support/tickets/{ticket}");
    let answer = json!({"body": "Refunded to your card ending 4242, Ann."});
    let answered = t
        .send_as(&staff, "POST", &format!("{path}/comments"), Some(answer))
        .await;
    assert_eq!(answered.status, StatusCode::CREATED, "{:?}", answered.body);

    let deleted = t
        .send("DELETE", &format!("/api/v1/users/{ann_id}"), None, &[])
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.body);
    // The staff keep the ticket, but not what the customer (or they) wrote in it.
    let kept = t.send_as(&staff, "GET", &path, None).await;
    assert_eq!(kept.status, StatusCode::OK, "{:?}", kept.body);
    assert_eq!(kept.body["subject"], "[erased]");
    for comment in kept.body["comments"].as_array().unwrap() {
        assert_eq!(comment["body"], "[erased]", "{comment}");
    }
    let listed = t
        .send_as(&staff, "GET", "/api/v1/support/tickets", None)
        .await;
    assert_eq!(listed.body["items"][0]["subject"], "[erased]");

    // The history keeps the events and erases the same fields in them.
    let sql = json!({"sql": "SELECT data FROM events WHERE type LIKE 'ticket.%'"});
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let rows = loop {
        let answer = t.post("/api/v1/sql", sql.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        let rows = answer.body["rows"].as_array().unwrap().clone();
        if rows.len() >= 3 {
            break rows;
        }
        assert!(std::time::Instant::now() < deadline, "history: {rows:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    for row in rows {
        let data = row["data"].as_str().unwrap();
        assert!(
            !data.contains("4242") && !data.contains("Main St"),
            "{data}"
        );
    }
}
