//! The report executor and the report scheduler: outside the dataflow, as the payment
//! executor is.
//!
//! The executor runs each report the views show `queued` over the newest snapshot,
//! writes its file under `<data_dir>/reports` (`connectors::files::write_atomically`),
//! and appends its result. A report whose result never reached the log (a
//! crash) is still queued after the restart and runs again, writing the same file name;
//! the dataflow takes one result per report.
//!
//! The scheduler asks for each schedule's latest slot that has come (by the wall clock,
//! in UTC) as the report `report_id_for_slot(schedule, slot)`. The dataflow takes a
//! report id once, so a slot runs once however many times it is asked for (by a
//! scheduler that restarted, or by two processes); slots missed while the server was
//! down are caught up once, with the latest of them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use dataflows::model::{Command, Envelope, ReportFormat, ReportOutcome, ReportRequest, Ts};
use dataflows::reporting::report_id_for_slot;
use dataflows::views::{ReportRow, ReportScheduleRow};
use sql::output::Format;

use crate::runtime::Tidemark;

/// The directory report files are written to.
pub fn directory(app: &Tidemark) -> PathBuf {
    app.config.data_dir.join("reports")
}

/// The file of a completed report.
pub fn file(app: &Tidemark, report: &ReportRow) -> PathBuf {
    directory(app).join(format!(
        "{}.{}",
        report.report_id,
        report.request.format.as_str()
    ))
}

/// The answer format a report is written in.
pub fn output_format(format: ReportFormat) -> Format {
    match format {
        ReportFormat::Csv => Format::Csv,
        ReportFormat::Json => Format::Json,
        ReportFormat::Parquet => Format::Parquet,
    }
}

/// A 6-field cron expression (seconds first), parsed; the error says what is wrong.
pub fn parse_cron(expression: &str) -> Result<cron::Schedule, String> {
    let fields = expression.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "a schedule has 6 fields, seconds first (`0 0 6 * * *` is 06:00 UTC every day); \
             this has {fields}"
        ));
    }
    cron::Schedule::from_str(expression).map_err(|error| format!("not a cron expression: {error}"))
}

/// The next time `schedule` fires after `now` (Unix milliseconds).
pub fn next_slot(schedule: &cron::Schedule, now: Ts) -> Option<Ts> {
    let now = Utc.timestamp_millis_opt(now as i64).single()?;
    schedule
        .after(&now)
        .next()
        .map(|slot| slot.timestamp_millis() as Ts)
}

/// The latest time `schedule` fired at or before `now`, if it did at or after `since`.
fn latest_slot(schedule: &cron::Schedule, since: Ts, now: DateTime<Utc>) -> Option<Ts> {
    // A little past now, then back: the slot at or before now, whichever way the
    // iterator counts its starting point.
    let mut slots = schedule.after(&(now + chrono::Duration::seconds(1)));
    let slot = std::iter::from_fn(|| slots.next_back())
        .take(3)
        .find(|slot| *slot <= now)?;
    let slot = slot.timestamp_millis() as Ts;
    (slot >= since).then_some(slot)
}

/// Runs the executor and the scheduler until the views stop.
pub fn spawn(app: Arc<Tidemark>) {
    tokio::spawn(execute(app.clone()));
    tokio::spawn(schedule(app));
}

async fn execute(app: Arc<Tidemark>) {
    let mut frontier = app.views.subscribe_frontier();
    loop {
        let due: Vec<ReportRow> = {
            let snapshot = app.views.read();
            let mut running = app.reports_running.lock();
            snapshot
                .queued_reports()
                .filter(|report| running.insert(report.report_id.to_string()))
                .cloned()
                .collect()
        };
        for report in due {
            tokio::spawn(run(app.clone(), report));
        }
        if frontier.changed().await.is_err() {
            break;
        }
    }
}

/// Runs one report and records its result. It stays in `reports_running` if the result
/// could not be recorded, so that it is not run again in a loop; a restart runs it.
async fn run(app: Arc<Tidemark>, report: ReportRow) {
    let id = report.report_id.to_string();
    let started = std::time::Instant::now();
    let outcome = match produce(&app, &report).await {
        Ok(outcome) => outcome,
        Err(error) => ReportOutcome::Failed {
            error: error.into(),
        },
    };
    match &outcome {
        ReportOutcome::Completed { rows, bytes, .. } => {
            tracing::info!(report = %id, rows, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "report completed")
        }
        ReportOutcome::Failed { error } => tracing::warn!(report = %id, %error, "report failed"),
    }
    let command = Envelope::new(Command::ReportResult {
        report_id: report.report_id.clone(),
        outcome,
    });
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=9 {
        match app.submit(command.clone()).await {
            Ok(_) => {
                app.reports_running.lock().remove(&id);
                return;
            }
            Err(error) => {
                tracing::warn!(report = %id, %error, attempt, "could not record a report's result; trying again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
    tracing::error!(report = %id, "could not record a report's result; it runs again at the next start");
}

/// The report's rows over the newest snapshot, written to its file.
async fn produce(app: &Tidemark, report: &ReportRow) -> Result<ReportOutcome, String> {
    let params: serde_json::Value = serde_json::from_str(&report.request.params)
        .map_err(|error| format!("the report's parameters are not JSON: {error}"))?;
    let params = sql::params::from_json(&params).map_err(|error| error.to_string())?;
    let snapshot = app
        .views
        .read_settled(Duration::from_millis(app.config.command_timeout_ms))
        .await
        .map_err(|error| error.to_string())?;
    let answer = app
        .sql
        .run(snapshot, report.request.sql.to_string(), params, None)
        .await
        .map_err(|error| error.to_string())?;
    let (rows, frontier) = (answer.rows() as u64, answer.frontier);
    let format = output_format(report.request.format);
    let path = file(app, report);
    let bytes = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        let body = format.write(&answer).map_err(|error| {
            format!(
                "the rows cannot be written as {}: {error}",
                format.media_type()
            )
        })?;
        connectors::files::write_atomically(&path, &body)
            .map_err(|error| format!("could not write {}: {error}", path.display()))?;
        Ok(body.len() as u64)
    })
    .await
    .map_err(|error| error.to_string())??;
    Ok(ReportOutcome::Completed {
        rows,
        bytes,
        frontier,
    })
}

async fn schedule(app: Arc<Tidemark>) {
    let mut parsed: HashMap<Arc<str>, cron::Schedule> = HashMap::new();
    // Slots this process asked for, until the views show them.
    let mut asked: HashSet<Arc<str>> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !app.stopping().load(std::sync::atomic::Ordering::Acquire) {
        tick.tick().await;
        let snapshot = app.views.read();
        let now = Utc::now();
        parsed.retain(|id, _| snapshot.report_schedules.contains_key(id));
        asked.retain(|id| !snapshot.reports.contains_key(id));
        let mut due = Vec::new();
        for row in snapshot.report_schedules.values() {
            let Some(cron) = cron_of(&mut parsed, row) else {
                continue;
            };
            let Some(slot) = latest_slot(cron, row.created_at, now) else {
                continue;
            };
            let report_id = report_id_for_slot(&row.schedule_id, slot);
            if snapshot.reports.contains_key(&report_id) || asked.contains(&report_id) {
                continue;
            }
            match request_for_slot(row, slot) {
                Some(request) => {
                    asked.insert(report_id.clone());
                    due.push(Envelope::new(Command::RequestReport { report_id, request }));
                }
                None => {
                    tracing::error!(schedule = %row.schedule_id, template = %row.template, "a schedule names a template this build does not have")
                }
            }
        }
        if due.is_empty() {
            continue;
        }
        if let Err(error) = app.submit_all(due).await {
            tracing::warn!(%error, "could not ask for scheduled reports; trying again");
            asked.clear();
        }
    }
}

fn cron_of<'a>(
    parsed: &'a mut HashMap<Arc<str>, cron::Schedule>,
    row: &ReportScheduleRow,
) -> Option<&'a cron::Schedule> {
    if !parsed.contains_key(&row.schedule_id) {
        match parse_cron(&row.cron) {
            Ok(schedule) => {
                parsed.insert(row.schedule_id.clone(), schedule);
            }
            Err(error) => {
                tracing::error!(schedule = %row.schedule_id, %error, "a schedule's cron expression does not parse");
                return None;
            }
        }
    }
    parsed.get(&row.schedule_id)
}

/// The report a schedule's slot runs: its template's SQL with its parameters.
fn request_for_slot(row: &ReportScheduleRow, slot: Ts) -> Option<ReportRequest> {
    let template = sql::reports::template(&row.template)?;
    Some(ReportRequest {
        template: Some(row.template.clone()),
        sql: template.sql.into(),
        params: row.params.clone(),
        format: row.format,
        schedule_id: Some(row.schedule_id.clone()),
        slot: Some(slot),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn ms(text: &str) -> Ts {
        at(text).timestamp_millis() as Ts
    }

    #[test]
    fn cron_takes_six_fields() {
        assert!(parse_cron("0 0 6 * * *").is_ok());
        assert!(parse_cron("0 6 * * *").unwrap_err().contains("6 fields"));
        assert!(parse_cron("0 0 6 * * * 2030").is_err());
        assert!(parse_cron("0 0 25 * * *").is_err());
    }

    #[test]
    fn the_latest_slot_is_at_or_before_now_and_after_creation() {
        let daily = parse_cron("0 0 6 * * *").unwrap();
        let created = ms("2026-03-01T12:00:00Z");
        assert_eq!(
            latest_slot(&daily, created, at("2026-03-01T13:00:00Z")),
            None
        );
        assert_eq!(
            latest_slot(&daily, created, at("2026-03-02T06:00:00Z")),
            Some(ms("2026-03-02T06:00:00Z"))
        );
        assert_eq!(
            latest_slot(&daily, created, at("2026-03-04T05:59:59Z")),
            Some(ms("2026-03-03T06:00:00Z"))
        );
        let every_second = parse_cron("* * * * * *").unwrap();
        assert_eq!(
            latest_slot(&every_second, 0, at("2026-03-01T12:00:00.700Z")),
            Some(ms("2026-03-01T12:00:00Z"))
        );
        assert_eq!(
            next_slot(&daily, ms("2026-03-02T06:00:00Z")),
            Some(ms("2026-03-03T06:00:00Z"))
        );
    }
}
