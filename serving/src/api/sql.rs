//! `POST /api/v1/sql`: a read-only query over the live views, answered in the format
//! the `Accept` header asks for.

use ::sql::output::Format;
use ::sql::QueryError;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult, FieldError};
use super::extract::Command;
use super::App;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    sql: String,
    /// `{"name": value}` for `$name`, or `[value, ...]` for `$1`, `$2`, ...
    #[serde(default)]
    params: Value,
}

/// The longest SQL text taken, in bytes.
pub(crate) const MAX_SQL_BYTES: usize = 64 * 1024;

pub async fn query(
    State(app): State<App>,
    headers: HeaderMap,
    command: Command<SqlRequest>,
) -> ApiResult<Response> {
    let format = negotiate(&headers)?;
    let SqlRequest { sql, params } = command.body;
    if sql.trim().is_empty() {
        return Err(ApiError::invalid(vec![FieldError::new(
            "sql",
            "give the query to run",
        )]));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(ApiError::invalid(vec![FieldError::new(
            "sql",
            format!("the query is longer than {MAX_SQL_BYTES} bytes"),
        )]));
    }
    let params = ::sql::params::from_json(&params).map_err(problem)?;
    // Every command acknowledged before this request is in the snapshot: the metric
    // views are waited for, then every view is read at their frontier.
    let snapshot = app
        .views
        .read_settled(std::time::Duration::from_millis(
            app.sql.config().timeout_ms,
        ))
        .await
        .map_err(crate::runtime::Error::from)?;
    let max_rows = (format == Format::Json).then_some(app.sql.config().max_json_rows);
    let answer = app
        .sql
        .run(snapshot, sql, params, max_rows)
        .await
        .map_err(problem)?;
    let frontier = answer.frontier;
    let body = tokio::task::spawn_blocking(move || format.write(&answer))
        .await
        .map_err(ApiError::internal)?
        .map_err(|error| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unwritable_answer",
                format!(
                    "the answer cannot be written as {}: {error}",
                    format.media_type()
                ),
            )
        })?;
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    headers.insert("x-tidemark-frontier", HeaderValue::from(frontier));
    Ok(response)
}

/// The problem a query's failure is to the client.
pub(crate) fn problem(error: QueryError) -> ApiError {
    let detail = error.to_string();
    match error {
        QueryError::Invalid(_) => ApiError::bad_request("invalid_sql", detail),
        QueryError::ReadOnly(_) => ApiError::new(StatusCode::FORBIDDEN, "read_only", detail),
        QueryError::Parameter(_) => ApiError::invalid(vec![FieldError::new("params", detail)]),
        QueryError::TooLarge(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "query_too_large", detail)
        }
        QueryError::Timeout(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "query_timeout", detail)
        }
    }
}

/// The answer's format from `Accept`: the supported type with the highest `q`, JSON for
/// none or a wildcard; 406 when nothing acceptable is supported.
fn negotiate(headers: &HeaderMap) -> Result<Format, ApiError> {
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    if accept.is_empty() {
        return Ok(Format::Json);
    }
    let mut best: Option<(f32, Format)> = None;
    for range in accept.iter().flat_map(|value| value.split(',')) {
        let mut parts = range.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|param| param.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q.is_nan() || q <= 0.0 {
            continue;
        }
        let format = match essence.as_str() {
            "*/*" | "application/*" => Some(Format::Json),
            "text/*" => Some(Format::Csv),
            other => Format::of_media_type(other),
        };
        if let Some(format) = format {
            if best.is_none_or(|(best_q, _)| q > best_q) {
                best = Some((q, format));
            }
        }
    }
    best.map(|(_, format)| format).ok_or_else(|| {
        let supported: Vec<&str> = Format::ALL.iter().map(|f| f.media_type()).collect();
        ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!("answers come as {}", supported.join(", ")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Result<Format, ApiError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        negotiate(&headers)
    }

    #[test]
    fn accept_picks_the_preferred_supported_format() {
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), Format::Json);
        assert_eq!(accept("text/csv").unwrap(), Format::Csv);
        assert_eq!(accept("text/csv; charset=utf-8").unwrap(), Format::Csv);
        assert_eq!(
            accept("application/vnd.apache.arrow.stream").unwrap(),
            Format::ArrowStream
        );
        assert_eq!(
            accept("application/vnd.apache.parquet").unwrap(),
            Format::Parquet
        );
        assert_eq!(accept("*/*").unwrap(), Format::Json);
        assert_eq!(
            accept("application/json;q=0.5, text/csv;q=0.9").unwrap(),
            Format::Csv
        );
        assert_eq!(accept("text/html, */*;q=0.1").unwrap(), Format::Json);
        assert_eq!(
            accept("image/png").unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
        assert_eq!(
            accept("text/csv;q=0").unwrap_err().status,
            StatusCode::NOT_ACCEPTABLE
        );
    }
}
