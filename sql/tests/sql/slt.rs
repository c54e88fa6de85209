//! Every `.slt` file under `tests/slt` against the fixture shop: each query's rows as
//! the files expect them. `TIDEMARK_WRITE_SLT=1` writes the engine's answers into the
//! files instead, for review.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use queries::Snapshot;
use sql::{QueryError, SqlConfig, SqlEngine};
use sqllogictest::{DBOutput, DefaultColumnType};

/// One connection of the runner: queries against the fixture's snapshot.
struct Shop {
    engine: Arc<SqlEngine>,
    snapshot: Arc<Snapshot>,
    waiter: tokio::runtime::Runtime,
}

impl sqllogictest::DB for Shop {
    type Error = QueryError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, QueryError> {
        let answer = self.waiter.block_on(self.engine.run(
            self.snapshot.clone(),
            sql.to_string(),
            None,
            None,
        ))?;
        let types = answer
            .schema
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64 => DefaultColumnType::Integer,
                DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
                    DefaultColumnType::FloatingPoint
                }
                _ => DefaultColumnType::Text,
            })
            .collect();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &answer.batches {
            let formatters: Vec<ArrayFormatter> = batch
                .columns()
                .iter()
                .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
                .collect::<Result<_, _>>()
                .expect("every column can be shown");
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|formatter| match formatter.value(row).to_string() {
                            empty if empty.is_empty() => "(empty)".to_string(),
                            shown => shown,
                        })
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }
}

#[test]
fn slt_files() {
    let (_shop, snapshot) = crate::fixture::shop();
    let engine = Arc::new(SqlEngine::new(SqlConfig::default()).unwrap());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    let mut failures = Vec::new();
    for file in &files {
        let (engine, snapshot) = (engine.clone(), snapshot.clone());
        let mut runner = sqllogictest::Runner::new(move || {
            let (engine, snapshot) = (engine.clone(), snapshot.clone());
            async move {
                Ok(Shop {
                    engine,
                    snapshot,
                    waiter: tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime"),
                })
            }
        });
        if std::env::var_os("TIDEMARK_WRITE_SLT").is_some() {
            // Writes what the engine answers into the file, to review before committing.
            futures::executor::block_on(runner.update_test_file(
                file,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            ))
            .unwrap();
        } else if let Err(error) = runner.run_file(file) {
            failures.push(format!("{}: {error}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
