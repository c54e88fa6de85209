//! Every report template runs against the fixture shop with its defaults, and the
//! figures of the ones the fixture has data for are checked.

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::{json, Value};
use sql::{Answer, SqlConfig, SqlEngine};

fn run(template: &str, params: Value) -> Answer {
    let (_shop, snapshot) = crate::fixture::shop();
    let engine = SqlEngine::new(SqlConfig::default()).unwrap();
    let template = sql::reports::template(template).expect("template");
    let params = template.bind(&params).expect("parameters bind");
    let params = sql::params::from_json(&Value::Object(params)).expect("parameters");
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    waiter
        .block_on(engine.run(snapshot, template.sql.into(), params, None))
        .unwrap_or_else(|error| panic!("{}: {error}", template.id))
}

/// The answer's rows as text, cells joined by spaces.
fn lines(answer: &Answer) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for batch in &answer.batches {
        let cells: Vec<ArrayFormatter> = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            let line: Vec<String> = cells
                .iter()
                .map(|cell| cell.value(row).to_string())
                .collect();
            lines.push(line.join(" "));
        }
    }
    lines
}

#[test]
fn every_template_runs_with_its_defaults() {
    for template in sql::reports::templates() {
        let answer = run(template.id, Value::Null);
        assert!(!answer.schema.fields().is_empty(), "{}", template.id);
    }
}

#[test]
fn templates_report_the_fixture_shop() {
    assert_eq!(
        lines(&run("payment_success_by_method", Value::Null)),
        ["mastercard 1 0 1 0 0 0.0", "visa 1 1 0 0 0 1.0"]
    );
    let top = lines(&run("top_customers", json!({"limit": 1})));
    assert_eq!(top.len(), 1, "{top:?}");
    assert!(top[0].ends_with(" 1"), "ranked first: {top:?}");
    // Nothing was paid before 2000 nor after 2099.
    assert!(lines(&run("daily_sales", json!({"until": "1999-12-31"}))).is_empty());
    assert!(!lines(&run("daily_sales", Value::Null)).is_empty());
    assert!(lines(&run("refunds", json!({"status": "failed"}))).is_empty());
}
