//! Reports (the brief's reporting-service): templates, report runs and their files,
//! and schedules. Requests and results are commands in the log; the report executor
//! and scheduler (`crate::reports`) run them outside the dataflow.

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dataflows::model::{Command as DomainCommand, ReportFormat, ReportRequest};
use dataflows::views::{ReportRow, ReportScheduleRow, ReportStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{ApiError, ApiResult, FieldError};
use super::extract::{Command, QueryPairs};
use super::json::{to_value, Rfc3339};
use super::sql::{problem, MAX_SQL_BYTES};
use super::{admit, new_id, run_fresh, Admission, App};
use crate::reports;

/// A report template with the formats it can be written as.
#[derive(Serialize, JsonSchema)]
pub struct TemplateView {
    #[serde(flatten)]
    template: &'static ::sql::reports::Template,
    formats: [&'static str; 3],
}

/// `GET /reports/templates`.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "ReportTemplates")]
pub struct TemplateList {
    templates: Vec<TemplateView>,
}

/// `GET /reports/templates`.
pub async fn templates() -> Json<Value> {
    let templates = ::sql::reports::templates()
        .iter()
        .map(|template| TemplateView {
            template,
            formats: FORMATS,
        })
        .collect();
    Json(to_value(TemplateList { templates }))
}

const FORMATS: [&str; 3] = ["csv", "json", "parquet"];

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Generate {
    template: Option<String>,
    sql: Option<String>,
    #[serde(default)]
    params: Value,
    format: Option<ReportFormat>,
}

/// `POST /reports/generate`: 202 with the queued report.
pub async fn generate(State(app): State<App>, command: Command<Generate>) -> ApiResult<Response> {
    let Command { body, idempotency } = command;
    let format = body.format.unwrap_or(ReportFormat::Json);
    let request = match (body.template, body.sql) {
        (Some(template), None) => {
            let (template, params) = bind(&template, &body.params)?;
            ReportRequest {
                template: Some(template.id.into()),
                sql: template.sql.into(),
                params: params.into(),
                format,
                schedule_id: None,
                slot: None,
            }
        }
        (None, Some(sql)) => {
            if sql.trim().is_empty() || sql.len() > MAX_SQL_BYTES {
                return Err(ApiError::invalid_field(
                    "sql",
                    format!("give the query to run, up to {MAX_SQL_BYTES} bytes"),
                ));
            }
            ::sql::params::from_json(&body.params).map_err(problem)?;
            // Refused now rather than failed later: bad SQL and writes.
            app.sql
                .check(app.views.read(), sql.clone())
                .await
                .map_err(problem)?;
            let params = match body.params {
                Value::Null => "{}".to_string(),
                params => params.to_string(),
            };
            ReportRequest {
                template: None,
                sql: sql.into(),
                params: params.into(),
                format,
                schedule_id: None,
                slot: None,
            }
        }
        _ => {
            return Err(ApiError::invalid(vec![FieldError::new(
                "template",
                "give either a template (GET /api/v1/reports/templates lists them) or sql",
            )]))
        }
    };
    let admission = admit(&app, &idempotency)?;
    let report_id = new_id("rpt", &idempotency);
    let command = DomainCommand::RequestReport {
        report_id: report_id.clone().into(),
        request,
    };
    run_fresh(&app, admission, idempotency, command).await?;
    let snapshot = app.views.read();
    let row = snapshot
        .reports
        .get(&report_id)
        .ok_or_else(|| ApiError::not_found("report", &report_id))?;
    let mut response = (StatusCode::ACCEPTED, Json(report(&app, row))).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/api/v1/reports/{report_id}")).expect("ids are ASCII"),
    );
    Ok(response)
}

/// The template called `id` and `params` bound to it (as a JSON object's text); 422
/// naming each bad parameter.
fn bind(id: &str, params: &Value) -> ApiResult<(&'static ::sql::reports::Template, String)> {
    let template = ::sql::reports::template(id).ok_or_else(|| {
        let known: Vec<&str> = ::sql::reports::templates().iter().map(|t| t.id).collect();
        ApiError::invalid_field(
            "template",
            format!("no template {id:?}; there are: {}", known.join(", ")),
        )
    })?;
    let bound = template.bind(params).map_err(|problems| {
        ApiError::invalid(
            problems
                .into_iter()
                .map(|(field, message)| FieldError::new(field, message))
                .collect(),
        )
    })?;
    Ok((template, Value::Object(bound).to_string()))
}

/// `GET /reports`: the newest reports first (`?limit=`, 100 by default).
pub async fn list(State(app): State<App>, query: QueryPairs) -> ApiResult<Json<Value>> {
    let limit = query.limit()?;
    let snapshot = app.views.read();
    let mut rows: Vec<&ReportRow> = snapshot.reports.values().collect();
    rows.sort_by(|a, b| {
        b.requested_at
            .cmp(&a.requested_at)
            .then_with(|| b.report_id.cmp(&a.report_id))
    });
    let reports = rows
        .into_iter()
        .take(limit)
        .map(|row| report(&app, row))
        .collect();
    Ok(Json(to_value(ReportList { reports })))
}

/// `GET /reports/{id}`.
pub async fn get(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .reports
        .get(&id)
        .ok_or_else(|| ApiError::not_found("report", &id))?;
    Ok(Json(to_value(report(&app, row))))
}

/// `GET /reports/{id}/download`: the file of a completed report.
pub async fn download(State(app): State<App>, Path(id): Path<String>) -> ApiResult<Response> {
    let row = app
        .views
        .read()
        .reports
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("report", &id))?;
    match row.status {
        ReportStatus::Completed => {}
        ReportStatus::Queued => {
            return Err(ApiError::conflict(
                "report_not_ready",
                format!(
                    "report {id} is {}; download it once it is completed",
                    status(&app, &row)
                ),
            ))
        }
        ReportStatus::Failed => {
            return Err(ApiError::conflict(
                "report_failed",
                format!(
                    "report {id} failed: {}",
                    row.error.as_deref().unwrap_or("no reason recorded")
                ),
            ))
        }
    }
    let path = reports::file(&app, &row);
    let body = tokio::fs::read(&path).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            ApiError::new(
                StatusCode::GONE,
                "report_file_gone",
                format!("the file of report {id} is no longer in the data directory"),
            )
        } else {
            ApiError::internal(error)
        }
    })?;
    let format = reports::output_format(row.request.format);
    let name = format!(
        "{}-{}.{}",
        row.request.template.as_deref().unwrap_or("report"),
        row.report_id,
        row.request.format.as_str()
    );
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            .expect("ids and template names are ASCII"),
    );
    if let Some(frontier) = row.frontier {
        headers.insert("x-tidemark-frontier", HeaderValue::from(frontier));
    }
    Ok(response)
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    template: String,
    #[serde(default)]
    params: Value,
    cron: String,
    format: Option<ReportFormat>,
}

/// `POST /reports/schedule`: 201 with the schedule.
pub async fn schedule(State(app): State<App>, command: Command<Schedule>) -> ApiResult<Response> {
    let Command { body, idempotency } = command;
    let cron = body.cron.trim().to_string();
    let parsed =
        reports::parse_cron(&cron).map_err(|error| ApiError::invalid_field("cron", error))?;
    if reports::next_slot(&parsed, 0).is_none() {
        return Err(ApiError::invalid_field(
            "cron",
            "the expression never fires",
        ));
    }
    let (template, params) = bind(&body.template, &body.params)?;
    let admission = admit(&app, &idempotency)?;
    if admission == Admission::Fresh {
        let schedules = app.views.read().report_schedules.len();
        if schedules >= MAX_SCHEDULES {
            return Err(ApiError::conflict(
                "too_many_schedules",
                format!("there are {schedules} schedules, the most kept; delete one first"),
            ));
        }
    }
    let schedule_id = new_id("sch", &idempotency);
    let command = DomainCommand::ScheduleReport {
        schedule_id: schedule_id.clone().into(),
        template: template.id.into(),
        params: params.into(),
        cron: cron.into(),
        format: body.format.unwrap_or(ReportFormat::Csv),
    };
    run_fresh(&app, admission, idempotency, command).await?;
    let snapshot = app.views.read();
    let row = snapshot
        .report_schedules
        .get(&schedule_id)
        .ok_or_else(|| ApiError::not_found("schedule", &schedule_id))?;
    let mut response = (StatusCode::CREATED, Json(to_value(schedule_json(row)))).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("/api/v1/reports/schedules/{schedule_id}"))
            .expect("ids are ASCII"),
    );
    Ok(response)
}

/// Schedules kept at once: each is checked every tick of the scheduler.
const MAX_SCHEDULES: usize = 1000;

/// `GET /reports/schedules`.
pub async fn schedules(State(app): State<App>) -> Json<Value> {
    let snapshot = app.views.read();
    let schedules = snapshot
        .report_schedules
        .values()
        .map(schedule_json)
        .collect();
    Json(to_value(ScheduleList { schedules }))
}

/// `GET /reports/schedules/{id}`.
pub async fn get_schedule(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let snapshot = app.views.read();
    let row = snapshot
        .report_schedules
        .get(&id)
        .ok_or_else(|| ApiError::not_found("schedule", &id))?;
    Ok(Json(to_value(schedule_json(row))))
}

/// `DELETE /reports/schedules/{id}`: 204; the schedule asks for no more runs.
pub async fn delete_schedule(
    State(app): State<App>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    if !app.views.read().report_schedules.contains_key(&id) {
        return Err(ApiError::not_found("schedule", &id));
    }
    let command = DomainCommand::DeleteReportSchedule {
        schedule_id: id.into(),
    };
    run_fresh(&app, Admission::Fresh, None, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `queued`, `running` (the executor has it) or the view's status.
fn status(app: &App, row: &ReportRow) -> &'static str {
    if row.status == ReportStatus::Queued && app.reports_running.lock().contains(&*row.report_id) {
        "running"
    } else {
        row.status.as_str()
    }
}

fn params_of(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// A report run.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Report")]
pub struct ReportView<'a> {
    id: &'a str,
    /// `queued`, `running`, `completed` or `failed`.
    status: &'static str,
    /// The template's id; `null` for ad-hoc SQL.
    template: Option<&'a str>,
    /// The SQL of an ad-hoc report; `null` for a template's.
    sql: Option<&'a str>,
    /// The parameters bound to the SQL's `$name`s.
    params: Map<String, Value>,
    format: &'static str,
    /// The schedule and the time slot this run is for, if a schedule asked for it.
    schedule_id: Option<&'a str>,
    slot: Option<Rfc3339>,
    row_count: Option<u64>,
    bytes: Option<u64>,
    /// The views' frontier the report read at.
    frontier: Option<u64>,
    error: Option<&'a str>,
    requested_at: Rfc3339,
    completed_at: Option<Rfc3339>,
    /// Once completed: where its file is.
    download_url: Option<String>,
}

/// `GET /reports`.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "Reports")]
pub struct ReportList<'a> {
    reports: Vec<ReportView<'a>>,
}

fn report<'a>(app: &App, row: &'a ReportRow) -> ReportView<'a> {
    let request = &row.request;
    ReportView {
        id: &row.report_id,
        status: status(app, row),
        template: request.template.as_deref(),
        sql: request.template.is_none().then_some(&*request.sql),
        params: params_of(&request.params),
        format: request.format.as_str(),
        schedule_id: request.schedule_id.as_deref(),
        slot: request.slot.map(Rfc3339),
        row_count: row.rows,
        bytes: row.bytes,
        frontier: row.frontier,
        error: row.error.as_deref(),
        requested_at: Rfc3339(row.requested_at),
        completed_at: row.finished_at.map(Rfc3339),
        download_url: (row.status == ReportStatus::Completed)
            .then(|| format!("/api/v1/reports/{}/download", row.report_id)),
    }
}

/// A report schedule.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "ReportSchedule")]
pub struct ScheduleView<'a> {
    id: &'a str,
    template: &'a str,
    params: Map<String, Value>,
    /// Six fields, seconds first (`0 0 6 * * *` is 06:00 UTC every day).
    cron: &'a str,
    format: &'static str,
    created_at: Rfc3339,
    /// When it next asks for a run.
    next_run_at: Option<Rfc3339>,
}

/// `GET /reports/schedules`.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "ReportSchedules")]
pub struct ScheduleList<'a> {
    schedules: Vec<ScheduleView<'a>>,
}

fn schedule_json(row: &ReportScheduleRow) -> ScheduleView<'_> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64);
    let next = reports::parse_cron(&row.cron)
        .ok()
        .and_then(|cron| reports::next_slot(&cron, now.max(row.created_at)));
    ScheduleView {
        id: &row.schedule_id,
        template: &row.template,
        params: params_of(&row.params),
        cron: &row.cron,
        format: row.format.as_str(),
        created_at: Rfc3339(row.created_at),
        next_run_at: next.map(Rfc3339),
    }
}
