//! `tidemark sql`: an interactive SQL shell against a running server, and `-e` for
//! one-shots. It speaks the server's `POST /api/v1/sql`: tables come back as Arrow and
//! are drawn as text, CSV and JSON as the server writes them.
//!
//! Statements end with `;` (a line may continue on the next, as in psql). Backslash
//! commands: `\d` lists the tables, `\d NAME` a table's columns, `\timing` toggles
//! timings, `\format table|csv|json` picks the output, `\?` helps, `\q` quits. Line
//! editing and history (in `~/.tidemark_sql_history`) come from rustyline. `SUBSCRIBE TO
//! view` follows a view's changefeed (`GET /api/v1/views/{name}/changes`).

use std::process::ExitCode;
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{header, Method, Request, StatusCode};
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sql::arrow::ipc::reader::StreamReader;
use sql::arrow::util::pretty::pretty_format_batches;

/// Flags of `tidemark sql`.
#[derive(Debug, Clone, Args)]
pub struct SqlArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "TIDEMARK_URL")]
    pub server: String,
    /// Runs this SQL, prints the answer and exits (non-zero when the query fails).
    #[arg(short = 'e', long)]
    pub execute: Option<String>,
    /// How answers are printed.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Prints how long each statement took.
    #[arg(long)]
    pub timing: bool,
    /// An API key or access token with the `analytics:read` scope.
    #[arg(long, env = "TIDEMARK_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl Format {
    /// What to ask the server for: tables are drawn from Arrow.
    fn accept(self) -> &'static str {
        let answer = match self {
            Format::Table => sql::output::Format::ArrowStream,
            Format::Csv => sql::output::Format::Csv,
            Format::Json => sql::output::Format::Json,
        };
        answer.media_type()
    }
}

const HELP: &str = "\
Statements end with ';'. Commands:
  \\d            list the tables
  SUBSCRIBE TO v; follow view v as it changes (Ctrl-C stops)
  \\d NAME       the columns of a table
  \\timing       print how long each statement takes (on/off)
  \\format FMT   table, csv or json
  \\?            this help
  \\q            quit";

const TABLES: &str = "SELECT table_name AS \"table\" FROM information_schema.tables \
                      WHERE table_schema = 'public' ORDER BY table_name";

struct Shell {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: String,
    format: Format,
    timing: bool,
    credentials: Option<String>,
    runtime: tokio::runtime::Runtime,
}

/// Runs `tidemark sql`.
pub fn run(args: SqlArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tidemark sql: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut shell = Shell {
        client: Client::builder(TokioExecutor::new()).build_http(),
        url: format!("{}/api/v1/sql", args.server.trim_end_matches('/')),
        format: args.format,
        timing: args.timing,
        credentials: args.api_key.map(|key| format!("Bearer {}", key.trim())),
        runtime,
    };
    match args.execute {
        Some(sql) => match shell.statement(&sql) {
            Ok(()) => ExitCode::SUCCESS,
            Err(()) => ExitCode::FAILURE,
        },
        None => shell.interactive(),
    }
}

impl Shell {
    fn interactive(&mut self) -> ExitCode {
        let mut editor = match rustyline::DefaultEditor::new() {
            Ok(editor) => editor,
            Err(error) => {
                eprintln!("tidemark sql: {error}");
                return ExitCode::FAILURE;
            }
        };
        let history = std::env::var_os("HOME")
            .map(|home| std::path::PathBuf::from(home).join(".tidemark_sql_history"));
        if let Some(history) = &history {
            let _ = editor.load_history(history);
        }
        println!("tidemark sql on {}. \\? for help, \\q to quit.", self.url);
        let mut pending = String::new();
        loop {
            let prompt = if pending.is_empty() {
                "tidemark> "
            } else {
                "tidemark-> "
            };
            let line = match editor.readline(prompt) {
                Ok(line) => line,
                Err(rustyline::error::ReadlineError::Interrupted) => {
                    pending.clear();
                    continue;
                }
                Err(_) => break,
            };
            let trimmed = line.trim();
            if pending.is_empty() && trimmed.starts_with('\\') {
                let _ = editor.add_history_entry(trimmed);
                if !self.command(trimmed) {
                    break;
                }
                continue;
            }
            if trimmed.is_empty() {
                continue;
            }
            pending.push_str(&line);
            pending.push('\n');
            if trimmed.ends_with(';') {
                let sql = std::mem::take(&mut pending);
                let _ = editor.add_history_entry(sql.trim());
                let _ = self.statement(sql.trim().trim_end_matches(';'));
            }
        }
        if let Some(history) = &history {
            let _ = editor.save_history(history);
        }
        ExitCode::SUCCESS
    }

    /// Runs a backslash command; false to quit.
    fn command(&mut self, line: &str) -> bool {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let argument = words.next();
        match (name, argument) {
            ("\\q", _) => return false,
            ("\\?", _) => println!("{HELP}"),
            ("\\d" | "\\dt", None) => {
                let _ = self.statement(TABLES);
            }
            ("\\d", Some(table)) => {
                let sql = format!(
                    "SELECT column_name AS \"column\", data_type AS \"type\", is_nullable AS nullable \
                     FROM information_schema.columns WHERE table_name = '{}' ORDER BY ordinal_position",
                    table.replace('\'', "''")
                );
                let _ = self.statement(&sql);
            }
            ("\\timing", setting) => {
                self.timing = match setting {
                    Some("on") => true,
                    Some("off") => false,
                    _ => !self.timing,
                };
                println!("Timing is {}.", if self.timing { "on" } else { "off" });
            }
            ("\\format", Some(format)) => match Format::from_str(format, true) {
                Ok(format) => self.format = format,
                Err(_) => eprintln!("\\format takes table, csv or json"),
            },
            _ => eprintln!("unknown command {line}; \\? lists them"),
        }
        true
    }

    /// Runs one statement and prints its answer or its error.
    fn statement(&mut self, sql: &str) -> Result<(), ()> {
        if let Some(target) = subscribe_target(sql) {
            return match target {
                Ok(view) => self.subscribe(&view),
                Err(error) => {
                    eprintln!("ERROR: {error}");
                    Err(())
                }
            };
        }
        let started = Instant::now();
        let answer = self.runtime.block_on(self.post(sql));
        let result = match answer {
            Ok((StatusCode::OK, body)) => self.print(&body),
            Ok((status, body)) => {
                let problem: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let detail = problem["detail"]
                    .as_str()
                    .or(problem["title"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                eprintln!("ERROR: {detail} ({status})");
                Err(())
            }
            Err(error) => {
                eprintln!("ERROR: {error}");
                Err(())
            }
        };
        if self.timing {
            println!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
        result
    }

    /// `SUBSCRIBE TO view`: follows the view's changefeed, printing
    /// `frontier<TAB>diff<TAB>row` lines (the rows now with diff 1, then each change)
    /// until the stream ends or Ctrl-C.
    fn subscribe(&mut self, view: &str) -> Result<(), ()> {
        let base = self.url.trim_end_matches("/sql");
        let url = format!("{base}/views/{view}/changes");
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(&url)
            .header(header::ACCEPT, "text/event-stream");
        if let Some(credentials) = &self.credentials {
            request = request.header(header::AUTHORIZATION, credentials);
        }
        let Ok(request) = request.body(Full::new(Bytes::new())) else {
            eprintln!("ERROR: {view:?} is not a view name");
            return Err(());
        };
        let follow = async {
            let response = (self.client.request(request).await)
                .map_err(|e| format!("cannot reach {url}: {e}"))?;
            let status = response.status();
            let mut body = response.into_body();
            if status != StatusCode::OK {
                let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
                let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let detail = problem["detail"].as_str().unwrap_or_default();
                return Err(format!("{detail} ({status})"));
            }
            println!("frontier\tdiff\trow");
            let mut buffer = String::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                buffer.push_str(&String::from_utf8_lossy(&data).replace("\r\n", "\n"));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    print_change_event(&block);
                }
            }
            Ok::<(), String>(())
        };
        let outcome = self.runtime.block_on(async {
            tokio::select! {
                outcome = follow => outcome,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        });
        outcome.map_err(|error| eprintln!("ERROR: {error}"))
    }

    async fn post(&self, sql: &str) -> Result<(StatusCode, Bytes), String> {
        let body = serde_json::to_vec(&json!({ "sql": sql })).map_err(|e| e.to_string())?;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, self.format.accept());
        if let Some(credentials) = &self.credentials {
            request = request.header(header::AUTHORIZATION, credentials);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    fn print(&self, body: &[u8]) -> Result<(), ()> {
        match self.format {
            Format::Table => {
                let reader = StreamReader::try_new(body, None).map_err(|error| {
                    eprintln!("ERROR: the answer is not an Arrow stream: {error}");
                })?;
                let schema = reader.schema();
                let batches: Vec<_> = reader.collect::<Result<_, _>>().map_err(|error| {
                    eprintln!("ERROR: the answer is not an Arrow stream: {error}");
                })?;
                let rows: usize = batches.iter().map(|batch| batch.num_rows()).sum();
                let batches = if batches.is_empty() {
                    vec![sql::arrow::record_batch::RecordBatch::new_empty(schema)]
                } else {
                    batches
                };
                match pretty_format_batches(&batches) {
                    Ok(table) => println!("{table}"),
                    Err(error) => eprintln!("ERROR: {error}"),
                }
                println!("({rows} row{})", if rows == 1 { "" } else { "s" });
            }
            Format::Csv => print!("{}", String::from_utf8_lossy(body)),
            Format::Json => {
                let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}

/// The view a `SUBSCRIBE [TO] name` statement follows; an error for other forms of it;
/// `None` for any other statement.
fn subscribe_target(sql: &str) -> Option<Result<String, String>> {
    let mut words = sql.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("subscribe") {
        return None;
    }
    let mut name = words.next();
    if name.is_some_and(|word| word.eq_ignore_ascii_case("to")) {
        name = words.next();
    }
    let usage = "SUBSCRIBE follows a view by name (SUBSCRIBE TO orders_per_minute); \
                 following the answer of a query is not supported";
    match (name, words.next()) {
        (Some(name), None)
            if name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
        {
            Some(Ok(name.to_string()))
        }
        _ => Some(Err(usage.to_string())),
    }
}

/// Prints one Server-Sent Event of a changefeed as `frontier<TAB>diff<TAB>row` lines.
fn print_change_event(block: &str) {
    let mut kind = "message";
    let mut data = String::new();
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            kind = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    let Ok(event) = serde_json::from_str::<Value>(&data) else {
        return;
    };
    let frontier = &event["frontier"];
    match kind {
        "snapshot" => {
            for row in event["rows"].as_array().into_iter().flatten() {
                println!("{frontier}\t1\t{row}");
            }
        }
        "update" => {
            for change in event["changes"].as_array().into_iter().flatten() {
                println!("{frontier}\t{}\t{}", change["diff"], change["row"]);
            }
        }
        "resync" => eprintln!("-- {}", event["reason"].as_str().unwrap_or("resync")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_names_a_view() {
        assert_eq!(subscribe_target("select 1"), None);
        assert_eq!(
            subscribe_target("SUBSCRIBE TO orders_per_minute"),
            Some(Ok("orders_per_minute".into()))
        );
        assert_eq!(
            subscribe_target("subscribe orders"),
            Some(Ok("orders".into()))
        );
        assert!(matches!(
            subscribe_target("SUBSCRIBE TO (SELECT * FROM orders)"),
            Some(Err(_))
        ));
        assert!(matches!(subscribe_target("SUBSCRIBE TO a b"), Some(Err(_))));
        assert!(matches!(subscribe_target("SUBSCRIBE"), Some(Err(_))));
    }
}
