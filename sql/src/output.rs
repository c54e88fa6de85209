//! An answer in the format a client asked for: JSON (the default), CSV, Arrow IPC
//! stream, or Parquet.

use std::sync::Arc;

use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::writer::{JsonArray, WriterBuilder as JsonWriterBuilder};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::WriterProperties;
use serde_json::{json, Value};

use crate::Answer;

/// The formats an answer can be written in, by media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    ArrowStream,
    Parquet,
}

impl Format {
    pub const ALL: [Format; 4] = [
        Format::Json,
        Format::Csv,
        Format::ArrowStream,
        Format::Parquet,
    ];

    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::ArrowStream => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The format of a media type (its essence, without parameters).
    pub fn of_media_type(essence: &str) -> Option<Format> {
        match essence {
            "application/json" => Some(Format::Json),
            "text/csv" => Some(Format::Csv),
            "application/vnd.apache.arrow.stream" => Some(Format::ArrowStream),
            "application/vnd.apache.parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    pub fn write(self, answer: &Answer) -> Result<Vec<u8>, ArrowError> {
        match self {
            Format::Json => json_document(answer),
            Format::Csv => csv(answer),
            Format::ArrowStream => arrow_stream(answer),
            Format::Parquet => parquet(answer).map_err(|error| match error {
                ParquetError::ArrowError(message) => ArrowError::ExternalError(message.into()),
                other => ArrowError::ExternalError(Box::new(other)),
            }),
        }
    }
}

/// `{"columns": [{"name", "type"}], "rows": [{column: value}], "row_count", "frontier",
/// "truncated"}`. Rows are objects in column order; nulls are written out.
pub fn json_document(answer: &Answer) -> Result<Vec<u8>, ArrowError> {
    let columns: Vec<Value> = answer
        .schema
        .fields()
        .iter()
        .map(|field| json!({"name": field.name(), "type": sql_type(field.data_type())}))
        .collect();
    let mut rows = Vec::new();
    let mut writer = JsonWriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(&mut rows);
    for batch in &answer.batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    drop(writer);
    // The rows are already JSON: splice them in rather than parse them again.
    let head = json!({
        "columns": columns,
        "row_count": answer.rows(),
        "frontier": answer.frontier,
        "truncated": answer.truncated,
    })
    .to_string();
    let mut out = Vec::with_capacity(head.len() + rows.len() + 16);
    out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
    out.extend_from_slice(b",\"rows\":");
    out.extend_from_slice(&rows);
    out.push(b'}');
    Ok(out)
}

fn csv(answer: &Answer) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    let mut writer = CsvWriterBuilder::new().with_header(true).build(&mut out);
    if answer.batches.is_empty() {
        // Still a header, so that an empty answer names its columns.
        let empty = datafusion::arrow::record_batch::RecordBatch::new_empty(answer.schema.clone());
        writer.write(&empty)?;
    }
    for batch in &answer.batches {
        writer.write(batch)?;
    }
    drop(writer);
    Ok(out)
}

fn arrow_stream(answer: &Answer) -> Result<Vec<u8>, ArrowError> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &answer.schema)?;
    for batch in &answer.batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    drop(writer);
    Ok(out)
}

fn parquet(answer: &Answer) -> Result<Vec<u8>, ParquetError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, Arc::clone(&answer.schema), Some(properties))?;
    for batch in &answer.batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(out)
}

/// `{"columns": [{"name", "type"}], "rows": [[value, ...]]}` for charts: rows as arrays
/// in column order; dates and timestamps as milliseconds since the Unix epoch (UTC),
/// numbers as JSON numbers (NaN and infinities as null), the rest as text.
pub fn chart_rows(answer: &Answer) -> Result<Value, ArrowError> {
    use datafusion::arrow::array::{Array, BooleanArray, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::TimeUnit;

    let fields = answer.schema.fields();
    let columns: Vec<Value> = fields
        .iter()
        .map(|field| json!({"name": field.name(), "type": sql_type(field.data_type())}))
        .collect();
    let mut rows: Vec<Vec<Value>> = Vec::with_capacity(answer.rows());
    for batch in &answer.batches {
        let mut cells: Vec<Vec<Value>> = Vec::with_capacity(batch.num_columns());
        for (field, array) in fields.iter().zip(batch.columns()) {
            let column: Vec<Value> = match field.data_type() {
                DataType::Boolean => {
                    let array = cast(array, &DataType::Boolean)?;
                    let array = array.as_any().downcast_ref::<BooleanArray>();
                    let array = array.expect("cast to boolean");
                    (0..array.len())
                        .map(|i| array.is_valid(i).then(|| json!(array.value(i))).into())
                        .collect()
                }
                DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) => {
                    let millis = cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
                    let millis = cast(&millis, &DataType::Int64)?;
                    let array = millis.as_any().downcast_ref::<Int64Array>();
                    let array = array.expect("cast to bigint");
                    (0..array.len())
                        .map(|i| array.is_valid(i).then(|| json!(array.value(i))).into())
                        .collect()
                }
                data_type if data_type.is_numeric() => {
                    let array = cast(array, &DataType::Float64)?;
                    let array = array.as_any().downcast_ref::<Float64Array>();
                    let array = array.expect("cast to double");
                    (0..array.len())
                        .map(|i| {
                            let value = array.is_valid(i).then(|| array.value(i));
                            value
                                .filter(|v| v.is_finite())
                                .map_or(Value::Null, |v| json!(v))
                        })
                        .collect()
                }
                _ => {
                    let array = cast(array, &DataType::Utf8)?;
                    let array = array.as_any().downcast_ref::<StringArray>();
                    let array = array.expect("cast to text");
                    (0..array.len())
                        .map(|i| array.is_valid(i).then(|| json!(array.value(i))).into())
                        .collect()
                }
            };
            cells.push(column);
        }
        for i in 0..batch.num_rows() {
            rows.push(cells.iter_mut().map(|column| column[i].take()).collect());
        }
    }
    Ok(json!({"columns": columns, "rows": rows}))
}

/// A column's type as SQL names it.
pub fn sql_type(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "smallint".into(),
        DataType::Int32 | DataType::UInt16 => "integer".into(),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".into(),
        DataType::Float16 | DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(precision, scale) | DataType::Decimal256(precision, scale) => {
            format!("numeric({precision},{scale})")
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Time32(_) | DataType::Time64(_) => "time".into(),
        DataType::Interval(_) | DataType::Duration(_) => "interval".into(),
        DataType::Null => "null".into(),
        DataType::List(item) | DataType::LargeList(item) => {
            format!("{}[]", sql_type(item.data_type()))
        }
        other => other.to_string(),
    }
}
