//! The history sink: every event, with its log position and time, in Parquet files
//! partitioned by day, for SQL over the whole past (`events`) and for tools that read
//! Parquet.
//!
//! ```text
//! history/
//!   _committed                                  the frontier every event before which is in a file
//!   date=2026-11-30/events-<from>-<to>.parquet  the events of dataflow times [from, to) of that day
//! ```
//!
//! Events reach the sink in publication order, a frontier at a time, and are buffered
//! until a flush writes them. A flush writes one file per day the buffer touches, each
//! first as `.tmp` and then renamed into place, and only then commits by replacing
//! `_committed` (written aside and renamed too). Opening the directory deletes what a
//! crash left half done: temporary files, and files past the committed frontier.
//! Dataflow times are the same on every replay of the log, so after a restart the sink
//! skips the events before the committed frontier and writes the rest: every event is in
//! the history exactly once.
//!
//! Small files are merged per day (`compact_day`): the merged file is renamed into place
//! before the files it replaces are deleted, and opening the directory deletes any file
//! whose range another file's range covers. Readers list the history with
//! `committed_files`, which leaves out covered files; the writer deletes replaced files
//! only `RETIRE_AFTER` later, so that a query that listed them can still read them.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use dataflows::model::{Event, Time};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::kafka::events::EventEnvelope;
use crate::{Error, Result};

/// The file that commits flushes: the frontier below which every event is written.
const COMMITTED: &str = "_committed";
/// Rows per row group: large enough to scan fast, small enough to skip by statistics.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// How long files replaced by a merge stay readable: longer than any query runs.
const RETIRE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct HistoryOptions {
    /// Flush once this many events wait.
    pub flush_rows: usize,
    /// Merge a day's files once it has this many.
    pub compact_files: usize,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions {
            flush_rows: 256 * 1024,
            compact_files: 16,
        }
    }
}

/// The columns of the history, as the files and the `events` table have them (the
/// directory adds `date`).
pub fn schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        text("event_id"),
        text("type"),
        Field::new(
            "occurred_at",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("position", DataType::Int64, false),
        Field::new("phase", DataType::Int32, false),
        Field::new("sub", DataType::Int32, false),
        Field::new("time", DataType::Int64, false),
        text("aggregate_id"),
        text("correlation_id"),
        text("data"),
    ]))
}

/// A history file's name and the dataflow times it holds, `[from, to)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Part {
    path: PathBuf,
    from: Time,
    to: Time,
}

pub struct HistoryWriter {
    dir: PathBuf,
    options: HistoryOptions,
    /// Every event at a time before this is in a committed file.
    committed: Time,
    /// Events waiting for the next flush, in publication order, and the frontier they
    /// complete.
    pending: Vec<(Time, Event)>,
    pending_frontier: Time,
    /// Files a merge replaced, deleted once no query can still be reading them.
    retired: Vec<(PathBuf, std::time::Instant)>,
}

impl HistoryWriter {
    /// Opens (or creates) the history in `dir`, deleting what an interrupted flush or
    /// merge left behind.
    pub fn open(dir: impl Into<PathBuf>, options: HistoryOptions) -> Result<HistoryWriter> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let committed = match std::fs::read_to_string(dir.join(COMMITTED)) {
            Ok(text) => text.trim().parse().map_err(|_| {
                Error::History(format!(
                    "{} holds {text:?}, not a frontier",
                    dir.join(COMMITTED).display()
                ))
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(Error::io(dir.join(COMMITTED), error)),
        };
        let writer = HistoryWriter {
            dir,
            options,
            committed,
            pending: Vec::new(),
            pending_frontier: committed,
            retired: Vec::new(),
        };
        for day in day_dirs(&writer.dir)? {
            let mut parts = Vec::new();
            for entry in std::fs::read_dir(&day).map_err(|e| Error::io(&day, e))? {
                let path = entry.map_err(|e| Error::io(&day, e))?.path();
                match parse_part(&path) {
                    Some(part) if part.to <= committed => parts.push(part),
                    // Past the committed frontier, or a temporary file: a crash's leftovers.
                    _ => remove(&path)?,
                }
            }
            // A merge that stopped before deleting its inputs.
            for part in &parts {
                let covered = parts
                    .iter()
                    .any(|other| other != part && other.from <= part.from && part.to <= other.to);
                if covered {
                    remove(&part.path)?;
                }
            }
        }
        Ok(writer)
    }

    /// The frontier below which every event is in the history.
    pub fn committed(&self) -> Time {
        self.committed
    }

    /// Takes the events published up to `frontier` (those before the committed frontier,
    /// which a replay produces again, are skipped).
    pub fn add(&mut self, frontier: Time, events: impl IntoIterator<Item = (Time, Event)>) {
        let committed = self.committed;
        self.pending
            .extend(events.into_iter().filter(|(time, _)| *time >= committed));
        self.pending_frontier = self.pending_frontier.max(frontier);
    }

    /// How many events wait for a flush.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether enough events wait that a flush should not wait for its interval.
    pub fn should_flush(&self) -> bool {
        self.pending.len() >= self.options.flush_rows
    }

    /// Writes the waiting events and commits the frontier they complete.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending_frontier <= self.committed {
            return Ok(());
        }
        let (from, to) = (self.committed, self.pending_frontier);
        let mut by_day: BTreeMap<String, Vec<&(Time, Event)>> = BTreeMap::new();
        for entry in &self.pending {
            by_day.entry(date_of(entry.1.ts)).or_default().push(entry);
        }
        let mut written = Vec::new();
        for (date, events) in &by_day {
            let day = self.dir.join(format!("date={date}"));
            std::fs::create_dir_all(&day).map_err(|e| Error::io(&day, e))?;
            let path = day.join(part_name(from, to));
            write_file(&path, &[batch(events.iter().copied())?])?;
            written.push(path);
        }
        sync_dir(&self.dir)?;
        // The commit point: until `_committed` moves, the files above are leftovers.
        let committed = self.dir.join(COMMITTED);
        let aside = self.dir.join(format!("{COMMITTED}.tmp"));
        std::fs::write(&aside, to.to_string()).map_err(|e| Error::io(&aside, e))?;
        File::open(&aside)
            .and_then(|file| file.sync_all())
            .map_err(|e| Error::io(&aside, e))?;
        std::fs::rename(&aside, &committed).map_err(|e| Error::io(&committed, e))?;
        sync_dir(&self.dir)?;
        self.committed = to;
        self.pending.clear();
        for path in written {
            if let Some(day) = path.parent() {
                self.compact_day(day)?;
            }
        }
        let now = std::time::Instant::now();
        let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|(_, at)| now.duration_since(*at) >= RETIRE_AFTER);
        self.retired = kept;
        for (path, _) in due {
            remove(&path)?;
        }
        Ok(())
    }

    /// Merges a day's files into one once it has `compact_files` of them.
    fn compact_day(&mut self, day: &Path) -> Result<()> {
        let mut parts = live_parts(day, self.committed)?;
        if parts.len() < self.options.compact_files.max(2) {
            return Ok(());
        }
        parts.sort_by_key(|part| part.from);
        let mut batches = Vec::new();
        for part in &parts {
            let file = File::open(&part.path).map_err(|e| Error::io(&part.path, e))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|builder| builder.with_batch_size(ROW_GROUP_ROWS).build())
                .map_err(|e| Error::History(format!("{}: {e}", part.path.display())))?;
            for batch in reader {
                batches.push(
                    batch.map_err(|e| Error::History(format!("{}: {e}", part.path.display())))?,
                );
            }
        }
        let from = parts.iter().map(|part| part.from).min().unwrap_or(0);
        let to = parts.iter().map(|part| part.to).max().unwrap_or(0);
        write_file(&day.join(part_name(from, to)), &batches)?;
        sync_dir(day)?;
        let now = std::time::Instant::now();
        for part in parts
            .iter()
            .filter(|part| (part.from, part.to) != (from, to))
        {
            self.retired.push((part.path.clone(), now));
        }
        Ok(())
    }
}

/// The committed files of a day that no other file covers.
fn live_parts(day: &Path, committed: Time) -> Result<Vec<Part>> {
    let parts: Vec<Part> = std::fs::read_dir(day)
        .map_err(|e| Error::io(day, e))?
        .filter_map(|entry| entry.ok().and_then(|entry| parse_part(&entry.path())))
        .filter(|part| part.to <= committed)
        .collect();
    Ok(parts
        .iter()
        .filter(|part| {
            !parts
                .iter()
                .any(|other| other != *part && other.from <= part.from && part.to <= other.to)
        })
        .cloned()
        .collect())
}

/// Every file of the committed history, each event in exactly one of them: what a
/// reader of the history (the `events` table) reads. Empty when there is no history.
pub fn committed_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let committed: Time = match std::fs::read_to_string(dir.join(COMMITTED)) {
        Ok(text) => text.trim().parse().unwrap_or(0),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Error::io(dir.join(COMMITTED), error)),
    };
    let mut files = Vec::new();
    for day in day_dirs(dir)? {
        let mut parts = live_parts(&day, committed)?;
        parts.sort_by_key(|part| part.from);
        files.extend(parts.into_iter().map(|part| part.path));
    }
    Ok(files)
}

/// Each day's directory (`date=YYYY-MM-DD`), in date order.
fn day_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut days = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let is_day = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("date="));
        if is_day && path.is_dir() {
            days.push(path);
        }
    }
    days.sort();
    Ok(days)
}

/// `events-<from>-<to>.parquet`, fixed width so that names sort as ranges do.
fn part_name(from: Time, to: Time) -> String {
    format!("events-{from:020}-{to:020}.parquet")
}

fn parse_part(path: &Path) -> Option<Part> {
    let name = path.file_name()?.to_str()?;
    let range = name.strip_prefix("events-")?.strip_suffix(".parquet")?;
    let (from, to) = range.split_once('-')?;
    Some(Part {
        path: path.to_path_buf(),
        from: from.parse().ok()?,
        to: to.parse().ok()?,
    })
}

/// The UTC date of log time `ts`, as `YYYY-MM-DD`.
pub fn date_of(ts: u64) -> String {
    let stamp =
        humantime::format_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ts))
            .to_string();
    stamp[..10].to_string()
}

/// The events as one batch of the history's columns.
fn batch<'a>(events: impl Iterator<Item = &'a (Time, Event)>) -> Result<RecordBatch> {
    let mut event_id = StringBuilder::new();
    let mut kind = StringBuilder::new();
    let mut occurred_at = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut position = Int64Builder::new();
    let mut phase = Int32Builder::new();
    let mut sub = Int32Builder::new();
    let mut time = Int64Builder::new();
    let mut aggregate_id = StringBuilder::new();
    let mut correlation_id = StringBuilder::new();
    let mut data = StringBuilder::new();
    for (at, event) in events {
        let envelope = EventEnvelope::of(event);
        event_id.append_value(&envelope.event_id);
        kind.append_value(&envelope.event_type);
        occurred_at.append_value(event.ts as i64);
        position.append_value(event.seq as i64);
        phase.append_value(i32::from(event.phase));
        sub.append_value(i32::from(event.sub));
        time.append_value(*at as i64);
        aggregate_id.append_value(&envelope.aggregate_id);
        correlation_id.append_value(&envelope.correlation_id);
        data.append_value(envelope.data.to_string());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(kind.finish()),
        Arc::new(occurred_at.finish()),
        Arc::new(position.finish()),
        Arc::new(phase.finish()),
        Arc::new(sub.finish()),
        Arc::new(time.finish()),
        Arc::new(aggregate_id.finish()),
        Arc::new(correlation_id.finish()),
        Arc::new(data.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
        .map_err(|e| Error::History(format!("history batch: {e}")))
}

/// Writes `batches` to `path` through a temporary file, synced before the rename.
fn write_file(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let aside = path.with_extension("parquet.tmp");
    let file = File::create(&aside).map_err(|e| Error::io(&aside, e))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("a valid level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let parquet_error =
        |e: parquet::errors::ParquetError| Error::io(&aside, std::io::Error::other(e));
    let mut writer =
        ArrowWriter::try_new(file, schema(), Some(properties)).map_err(parquet_error)?;
    for batch in batches {
        writer.write(batch).map_err(parquet_error)?;
    }
    let file = writer.into_inner().map_err(parquet_error)?;
    file.sync_all().map_err(|e| Error::io(&aside, e))?;
    std::fs::rename(&aside, path).map_err(|e| Error::io(path, e))
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path, error)),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| Error::io(dir, e))
}
