//! Reports: templates, runs and their files, failures, schedules; the slot of a schedule
//! runs once.

use std::time::Duration;

use axum::http::StatusCode;
use dataflows::model::{Command, Envelope, RejectionKind, ReportFormat, ReportRequest};
use serde_json::{json, Value};

use crate::support::{Reply, TestApp};

/// Waits, frontier by frontier, until `path` answers a report that is no longer queued
/// or running.
async fn finished(app: &TestApp, path: &str) -> Value {
    let mut frontier = app.app.views.subscribe_frontier();
    loop {
        let reply = app.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        if !matches!(reply.body["status"].as_str(), Some("queued" | "running")) {
            return reply.body;
        }
        tokio::time::timeout(Duration::from_secs(30), frontier.changed())
            .await
            .expect("the report finishes")
            .expect("the views run");
    }
}

async fn generate(app: &TestApp, body: Value) -> Reply {
    app.post("/api/v1/reports/generate", body).await
}

async fn shop() -> TestApp {
    let app = TestApp::new().await;
    let mug = app.product("MUG", 1200, 50).await;
    let ada = app.user("ada@example.com").await;
    // Answered once the payment is decided, so that the reports see it.
    for (quantity, number) in [(2, "4242424242424242"), (1, "4000000000000002")] {
        let reply = app.paid_order(&ada, &mug, quantity, number).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let order = reply.body["id"].as_str().unwrap();
        let settled = app
            .get(&format!("/api/v1/orders/{order}?wait=settled"))
            .await;
        assert_ne!(settled.body["status"], "reserved", "{:?}", settled.body);
    }
    app
}

#[tokio::test]
async fn templates_list_their_parameters() {
    let app = TestApp::new().await;
    let reply = app.get("/api/v1/reports/templates").await;
    assert_eq!(reply.status, StatusCode::OK);
    let templates = reply.body["templates"].as_array().expect("templates");
    let ids: Vec<&str> = templates
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "daily_sales",
            "inventory_turnover",
            "kpis",
            "low_stock",
            "payment_success_by_method",
            "refunds",
            "top_customers"
        ]
    );
    let top = &templates[6];
    assert_eq!(top["title"], "Top customers");
    assert_eq!(
        top["params"][2],
        json!({"name": "limit", "type": "int", "default": 10, "required": false, "description": "customers per currency"})
    );
    assert_eq!(top["formats"], json!(["csv", "json", "parquet"]));
}

#[tokio::test]
async fn a_template_runs_to_a_file_in_each_format() {
    let app = shop().await;
    let reply = generate(
        &app,
        json!({"template": "payment_success_by_method", "format": "csv"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    assert!(matches!(
        reply.body["status"].as_str(),
        Some("queued" | "running")
    ));
    let id = reply.body["id"].as_str().unwrap().to_string();
    let report = finished(&app, &format!("/api/v1/reports/{id}")).await;
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["row_count"], 1);
    assert_eq!(report["template"], "payment_success_by_method");
    assert_eq!(
        report["params"],
        json!({"since": "1970-01-01", "until": "9999-12-31"})
    );
    let download = app.get(&format!("/api/v1/reports/{id}/download")).await;
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(download.content_type, "text/csv; charset=utf-8");
    assert_eq!(
        String::from_utf8(download.raw).unwrap(),
        "card_brand,attempts,succeeded,declined,fraudulent,pending,success_rate\nvisa,2,1,1,0,0,0.5\n"
    );

    let reply = generate(
        &app,
        json!({"template": "daily_sales", "params": {"since": "2000-01-01"}, "format": "parquet"}),
    )
    .await;
    let id = reply.body["id"].as_str().unwrap().to_string();
    let report = finished(&app, &format!("/api/v1/reports/{id}")).await;
    assert_eq!(report["status"], "completed", "{report}");
    let download = app.get(&format!("/api/v1/reports/{id}/download")).await;
    assert_eq!(download.content_type, "application/vnd.apache.parquet");
    assert!(download.raw.starts_with(b"PAR1") && download.raw.ends_with(b"PAR1"));
    assert_eq!(report["bytes"], download.raw.len());

    let reply = generate(
        &app,
        json!({"sql": "SELECT sku, available FROM stock WHERE sku = $sku", "params": {"sku": "MUG"}}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_string();
    let report = finished(&app, &format!("/api/v1/reports/{id}")).await;
    assert_eq!(report["format"], "json");
    assert_eq!(report["template"], Value::Null);
    let download = app.get(&format!("/api/v1/reports/{id}/download")).await;
    assert_eq!(
        download.body["rows"],
        json!([{"sku": "MUG", "available": 48}])
    );

    let listed = app.get("/api/v1/reports").await;
    assert_eq!(listed.body["reports"].as_array().unwrap().len(), 3);
    assert_eq!(listed.body["reports"][0]["id"], id.as_str());
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_queued() {
    let app = shop().await;
    let cases = [
        (
            json!({"template": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"template": "daily_sales", "sql": "SELECT 1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"template": "daily_sales", "params": {"since": "yesterday"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"template": "daily_sales", "params": {"colour": "red"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"template": "daily_sales", "format": "xlsx"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (json!({"sql": "SELEC 1"}), StatusCode::BAD_REQUEST),
        (
            json!({"sql": "SELECT * FROM nowhere"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"sql": "DROP TABLE orders"}), StatusCode::FORBIDDEN),
        (json!({"sql": "  "}), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, status) in cases {
        let reply = generate(&app, body.clone()).await;
        assert_eq!(reply.status, status, "{body}: {:?}", reply.body);
        assert_eq!(reply.content_type, "application/problem+json");
    }
    let reply = generate(
        &app,
        json!({"template": "daily_sales", "params": {"since": "2026-02-30"}}),
    )
    .await;
    assert_eq!(reply.body["errors"][0]["field"], "params.since");
    assert_eq!(app.get("/api/v1/reports").await.body["reports"], json!([]));
    assert_eq!(
        app.get("/api/v1/reports/rpt_nope").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/reports/rpt_nope/download").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_report_that_fails_says_why() {
    let app = shop().await;
    let reply = generate(
        &app,
        json!({"sql": "SELECT CAST('x' AS INT) AS n FROM orders"}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    let id = reply.body["id"].as_str().unwrap().to_string();
    let report = finished(&app, &format!("/api/v1/reports/{id}")).await;
    assert_eq!(report["status"], "failed", "{report}");
    assert!(
        report["error"].as_str().unwrap().contains("Cannot cast"),
        "{report}"
    );
    let download = app.get(&format!("/api/v1/reports/{id}/download")).await;
    assert_eq!(download.status, StatusCode::CONFLICT);
    assert_eq!(download.body["code"], "report_failed");
}

#[tokio::test]
async fn a_schedule_runs_its_template_until_it_is_deleted() {
    let app = shop().await;
    for (cron, reason) in [
        ("0 6 * * *", "6 fields"),
        ("0 0 25 * * *", "not a cron expression"),
    ] {
        let reply = app
            .post(
                "/api/v1/reports/schedule",
                json!({"template": "kpis", "cron": cron}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            reply.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(reason),
            "{:?}",
            reply.body
        );
    }
    let reply = app
        .post(
            "/api/v1/reports/schedule",
            json!({"template": "kpis", "params": {"since": "2020-01-01"}, "cron": "* * * * * *", "format": "json"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let schedule = reply.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        reply.body["params"],
        json!({"since": "2020-01-01", "until": "9999-12-31"})
    );
    assert!(reply.body["next_run_at"].is_string());
    let listed = app.get("/api/v1/reports/schedules").await;
    assert_eq!(listed.body["schedules"][0]["id"], schedule.as_str());

    // The scheduler asks for a slot within a second; wait for its run to finish.
    let mut frontier = app.app.views.subscribe_frontier();
    let report = loop {
        let reports = app.get("/api/v1/reports").await.body["reports"].clone();
        let done = reports.as_array().unwrap().iter().find(|report| {
            report["schedule_id"] == schedule.as_str() && report["status"] == "completed"
        });
        if let Some(report) = done {
            break report.clone();
        }
        tokio::time::timeout(Duration::from_secs(30), frontier.changed())
            .await
            .expect("a scheduled run")
            .expect("the views run");
    };
    assert_eq!(report["template"], "kpis");
    assert!(report["slot"].is_string());
    let download = app.get(report["download_url"].as_str().unwrap()).await;
    let rows = download.body["rows"].as_array().expect("rows").clone();
    assert!(
        rows.contains(&json!({"kpi": "orders_paid", "currency": "USD", "value": 1.0})),
        "{rows:?}"
    );

    let deleted = app
        .send(
            "DELETE",
            &format!("/api/v1/reports/schedules/{schedule}"),
            None,
            &[],
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/reports/schedules/{schedule}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.send(
            "DELETE",
            &format!("/api/v1/reports/schedules/{schedule}"),
            None,
            &[]
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

/// A slot names its report, and the dataflow takes a report id once: asking again (a
/// restarted scheduler, a second process) runs nothing twice, and a second result for
/// a report is refused.
#[tokio::test]
async fn a_slot_is_asked_for_once_and_a_report_gets_one_result() {
    let app = TestApp::new().await;
    let report_id = dataflows::reporting::report_id_for_slot("sch_daily", 1_800_000_000_000);
    let request = Command::RequestReport {
        report_id: report_id.clone(),
        request: ReportRequest {
            template: Some("low_stock".into()),
            sql: sql::reports::template("low_stock").unwrap().sql.into(),
            params: "{}".into(),
            format: ReportFormat::Csv,
            schedule_id: Some("sch_daily".into()),
            slot: Some(1_800_000_000_000),
        },
    };
    let first = app
        .app
        .submit(Envelope::new(request.clone()))
        .await
        .unwrap();
    assert!(first.rejection.is_none());
    let again = app.app.submit(Envelope::new(request)).await.unwrap();
    assert!(matches!(
        again.rejection.map(|r| r.kind),
        Some(RejectionKind::Conflict { code }) if &*code == "report_exists"
    ));
    let report = finished(&app, &format!("/api/v1/reports/{report_id}")).await;
    assert_eq!(report["status"], "completed");
    let late = app
        .app
        .submit(Envelope::new(Command::ReportResult {
            report_id: report_id.clone(),
            outcome: dataflows::model::ReportOutcome::Failed {
                error: "late".into(),
            },
        }))
        .await
        .unwrap();
    assert!(matches!(
        late.rejection.map(|r| r.kind),
        Some(RejectionKind::Conflict { code }) if &*code == "report_finished"
    ));
    assert_eq!(
        app.get(&format!("/api/v1/reports/{report_id}")).await.body["status"],
        "completed"
    );
}

/// A report asked for before a crash, and never run, runs after the restart: the
/// request is a command in the log, and the views show it queued again.
#[tokio::test]
async fn a_report_asked_for_before_a_restart_runs_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = serving::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    // A server without its executors: the request is taken, and nothing runs it.
    let first = serving::Tidemark::open(config.clone()).expect("open");
    let recovering = first.clone();
    tokio::task::spawn_blocking(move || recovering.recover(&mut serving::runtime::Quiet))
        .await
        .unwrap()
        .unwrap();
    let request = ReportRequest {
        template: Some("low_stock".into()),
        sql: sql::reports::template("low_stock").unwrap().sql.into(),
        params: "{}".into(),
        format: ReportFormat::Json,
        schedule_id: None,
        slot: None,
    };
    let asked = first
        .submit(Envelope::new(Command::RequestReport {
            report_id: "rpt_before_crash".into(),
            request,
        }))
        .await
        .unwrap();
    assert!(asked.rejection.is_none());
    assert!(first.views.read().queued_reports().next().is_some());
    first.shutdown();
    drop(first);

    let app = TestApp::open_config(dir, config).await;
    let report = finished(&app, "/api/v1/reports/rpt_before_crash").await;
    assert_eq!(report["status"], "completed", "{report}");
    let download = app.get("/api/v1/reports/rpt_before_crash/download").await;
    assert_eq!(download.body["row_count"], 0);
}
