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
//! Small files are merged per day (`compact_day`, `merge`): the row groups of flushes
//! under load are copied into the merged file as they are encoded, small ones written
//! anew. The merged file is renamed into place before the files it replaces are deleted,
//! and opening the directory deletes any file whose range another file's range covers.
//! Readers list the history with `committed_files`, which leaves out covered files; the
//! writer deletes replaced files only `RETIRE_AFTER` later, so that a query that listed
//! them can still read them.
//!
//! The same layout can live in an object store (`HistoryLocation::ObjectStore`, an
//! `s3://bucket/prefix`), where a put is atomic and so needs no temporary name: the
//! history outgrows one disk, and any reader of the bucket can read it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use dataflows::model::{Event, Seq, Str, Time};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnWriter};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{FileMetaData, KeyValue, PageIndexPolicy};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use crate::files;
use crate::kafka::events::event_id_and_data;
use crate::{Error, Result};

/// The footer entry in which each file records its number of events of each type (a
/// JSON object), for estimates of what a filter on `type` keeps.
pub const TYPE_COUNTS: &str = "tidemark.type_counts";
/// The file that commits flushes: the frontier below which every event is written.
const COMMITTED: &str = "_committed";
/// Rows per row group: large enough to scan fast, small enough to skip by statistics.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Rows per batch built or decoded: small enough that a batch's buffers are reused
/// from one to the next rather than fresh pages each.
const BATCH_ROWS: usize = 8 * 1024;
const DAY_MS: u64 = 86_400_000;
/// Files this large are never merged again: merging is for the many small files of
/// frequent flushes, and a query reads a few of these as fast as one.
const FINAL_BYTES: u64 = 1 << 30;
/// zstd levels: fast for the files every flush writes, tighter for the merged files
/// that stay.
const FLUSH_LEVEL: i32 = 1;
const MERGE_LEVEL: i32 = 3;
/// How long files replaced by a merge stay readable: longer than any query runs.
const RETIRE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct HistoryOptions {
    /// Flush once this many events wait.
    pub flush_rows: usize,
    /// Merge a day's files once it has this many of about one size.
    pub compact_files: usize,
    /// The size of the smallest files: a file is of tier `t` when it is smaller than
    /// `tier_bytes * compact_files^t`, and merges take the newest files of the lowest
    /// tiers, so an event is rewritten about once per tier, not at every merge.
    pub tier_bytes: u64,
    /// Row groups of at least this many rows are copied into a merge as they are
    /// encoded; smaller ones are decoded and written anew, together (`merge`).
    pub copy_rows: usize,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        HistoryOptions {
            flush_rows: 256 * 1024,
            compact_files: 16,
            tier_bytes: 1 << 20,
            // A flush of about a second at a few thousand events a second.
            copy_rows: ROW_GROUP_ROWS / 4,
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
        // The HTTP request that sent the command (`X-Request-Id`); added later than
        // the other columns, so older files lack it (read as null).
        Field::new("request_id", DataType::Utf8, true),
    ]))
}

/// A history file's name (relative to the history's root) and the dataflow times it
/// holds, `[from, to)`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Part {
    name: String,
    from: Time,
    to: Time,
    /// Bytes.
    size: u64,
}

/// Where the history is kept: a directory, or an object store under a prefix. Names
/// inside it are relative (`_committed`, `date=2026-11-30/events-....parquet`).
#[derive(Clone)]
pub enum HistoryLocation {
    Directory(PathBuf),
    ObjectStore {
        /// `s3://bucket/prefix`, without a trailing `/`.
        url: String,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
    },
}

impl std::fmt::Debug for HistoryLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HistoryLocation::Directory(dir) => write!(f, "{}", dir.display()),
            HistoryLocation::ObjectStore { url, .. } => write!(f, "{url}"),
        }
    }
}

impl From<PathBuf> for HistoryLocation {
    fn from(dir: PathBuf) -> Self {
        HistoryLocation::Directory(dir)
    }
}

impl From<&Path> for HistoryLocation {
    fn from(dir: &Path) -> Self {
        HistoryLocation::Directory(dir.to_path_buf())
    }
}

impl HistoryLocation {
    /// `s3://bucket/prefix`, with object_store's S3 settings (`aws_endpoint`,
    /// `aws_region`, `aws_access_key_id`, `aws_allow_http`, ...) over the `AWS_*`
    /// environment.
    pub fn object_store(url: &str, options: &BTreeMap<String, String>) -> Result<Self> {
        let bad = |why: String| Error::Config(format!("history.url {url:?}: {why}"));
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            bad(
                "empty (the data directory) or s3://bucket/prefix, the object stores supported"
                    .into(),
            )
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("name a bucket: s3://bucket/prefix".into()));
        }
        let mut builder = AmazonS3Builder::from_env().with_url(format!("s3://{bucket}"));
        for (key, value) in options {
            let key = key
                .parse::<AmazonS3ConfigKey>()
                .map_err(|_| bad(format!("history.options has an unknown S3 setting {key:?}")))?;
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(|e| bad(e.to_string()))?;
        let prefix = ObjectPath::from(prefix.trim_matches('/'));
        Ok(HistoryLocation::ObjectStore {
            url: format!("s3://{bucket}/{prefix}")
                .trim_end_matches('/')
                .to_string(),
            store: Arc::new(store),
            prefix,
        })
    }

    /// The object store to register with a reader, under its root URL (`s3://bucket`).
    pub fn store(&self) -> Option<(String, Arc<dyn ObjectStore>)> {
        match self {
            HistoryLocation::Directory(_) => None,
            HistoryLocation::ObjectStore { url, store, .. } => {
                let root = url.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
                Some((root, store.clone()))
            }
        }
    }

    /// The path or URL a reader opens the file `name` by.
    pub fn file_url(&self, name: &str) -> String {
        match self {
            HistoryLocation::Directory(dir) => dir.join(name).to_string_lossy().into_owned(),
            HistoryLocation::ObjectStore { url, .. } => format!("{url}/{name}"),
        }
    }

    fn object(prefix: &ObjectPath, name: &str) -> ObjectPath {
        name.split('/')
            .fold(prefix.clone(), |path, part| path.join(part))
    }

    fn store_error(&self, name: &str, error: object_store::Error) -> Error {
        Error::History(format!("{self:?}/{name}: {error}"))
    }

    /// The text of `name`, or `None` when there is none.
    async fn read_text(&self, name: &str) -> Result<Option<String>> {
        match self {
            HistoryLocation::Directory(dir) => match std::fs::read_to_string(dir.join(name)) {
                Ok(text) => Ok(Some(text)),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(Error::io(dir.join(name), error)),
            },
            HistoryLocation::ObjectStore { store, prefix, .. } => {
                match store.get(&Self::object(prefix, name)).await {
                    Ok(got) => {
                        let bytes = got.bytes().await.map_err(|e| self.store_error(name, e))?;
                        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
                    }
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(error) => Err(self.store_error(name, error)),
                }
            }
        }
    }

    /// Writes `name` whole or not at all. A directory gets a temporary file, synced and
    /// renamed, and the directories synced; an object store's put is atomic.
    async fn write(&self, name: &str, body: Vec<u8>) -> Result<()> {
        match self {
            HistoryLocation::Directory(dir) => {
                let path = dir.join(name);
                files::write_atomically(&path, &body).map_err(|e| Error::io(&path, e))?;
                // A day's directory may be new: its entry in the root must last too.
                if path.parent() != Some(dir.as_path()) {
                    files::sync_dir(dir).map_err(|e| Error::io(dir, e))?;
                }
                Ok(())
            }
            HistoryLocation::ObjectStore { store, prefix, .. } => store
                .put(&Self::object(prefix, name), body.into())
                .await
                .map(|_| ())
                .map_err(|e| self.store_error(name, e)),
        }
    }

    async fn read(&self, name: &str) -> Result<bytes::Bytes> {
        match self {
            HistoryLocation::Directory(dir) => std::fs::read(dir.join(name))
                .map(bytes::Bytes::from)
                .map_err(|e| Error::io(dir.join(name), e)),
            HistoryLocation::ObjectStore { store, prefix, .. } => {
                let got = store
                    .get(&Self::object(prefix, name))
                    .await
                    .map_err(|e| self.store_error(name, e))?;
                got.bytes().await.map_err(|e| self.store_error(name, e))
            }
        }
    }

    async fn remove(&self, name: &str) -> Result<()> {
        match self {
            HistoryLocation::Directory(dir) => match std::fs::remove_file(dir.join(name)) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io(dir.join(name), error))
                }
                _ => Ok(()),
            },
            HistoryLocation::ObjectStore { store, prefix, .. } => {
                match store.delete(&Self::object(prefix, name)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(error) => Err(self.store_error(name, error)),
                }
            }
        }
    }

    /// The days (`date=YYYY-MM-DD`), in date order.
    async fn days(&self) -> Result<Vec<String>> {
        let mut days: Vec<String> = match self {
            HistoryLocation::Directory(dir) => {
                let entries = match std::fs::read_dir(dir) {
                    Ok(entries) => entries,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        return Ok(Vec::new())
                    }
                    Err(error) => return Err(Error::io(dir, error)),
                };
                let mut days = Vec::new();
                for entry in entries {
                    let path = entry.map_err(|e| Error::io(dir, e))?.path();
                    if path.is_dir() {
                        days.extend(path.file_name().and_then(|n| n.to_str()).map(String::from));
                    }
                }
                days
            }
            HistoryLocation::ObjectStore { store, prefix, .. } => store
                .list_with_delimiter(Some(prefix))
                .await
                .map_err(|e| self.store_error("", e))?
                .common_prefixes
                .iter()
                .filter_map(|day| day.filename().map(String::from))
                .collect(),
        };
        days.retain(|day| day.starts_with("date="));
        days.sort();
        Ok(days)
    }

    /// The names of the files of `day`, with their sizes in bytes.
    async fn files(&self, day: &str) -> Result<Vec<(String, u64)>> {
        let names: Vec<(String, u64)> = match self {
            HistoryLocation::Directory(dir) => {
                let path = dir.join(day);
                std::fs::read_dir(&path)
                    .map_err(|e| Error::io(&path, e))?
                    .filter_map(|entry| entry.ok())
                    .filter_map(|entry| {
                        let size = entry.metadata().map_or(0, |meta| meta.len());
                        Some((entry.file_name().to_str()?.to_string(), size))
                    })
                    .collect()
            }
            HistoryLocation::ObjectStore { store, prefix, .. } => store
                .list_with_delimiter(Some(&Self::object(prefix, day)))
                .await
                .map_err(|e| self.store_error(day, e))?
                .objects
                .iter()
                .filter_map(|object| Some((object.location.filename()?.to_string(), object.size)))
                .collect(),
        };
        Ok(names
            .into_iter()
            .map(|(name, size)| (format!("{day}/{name}"), size))
            .collect())
    }

    /// The frontier the history is committed to; `None` when there is no history.
    async fn committed(&self) -> Result<Option<Time>> {
        match self.read_text(COMMITTED).await? {
            None => Ok(None),
            Some(text) => text.trim().parse().map(Some).map_err(|_| {
                Error::History(format!(
                    "{self:?}/{COMMITTED} holds {text:?}, not a frontier"
                ))
            }),
        }
    }

    /// The committed files of a day that no other file covers.
    async fn live_parts(&self, day: &str, committed: Time) -> Result<Vec<Part>> {
        let parts: Vec<Part> = self
            .files(day)
            .await?
            .iter()
            .filter_map(|(name, size)| parse_part(name, *size))
            .filter(|part| part.to <= committed)
            .collect();
        Ok(parts
            .iter()
            .filter(|part| !covered(part, &parts))
            .cloned()
            .collect())
    }
}

/// Whether another of `parts` holds every time `part` does.
fn covered(part: &Part, parts: &[Part]) -> bool {
    parts
        .iter()
        .any(|other| other != part && other.from <= part.from && part.to <= other.to)
}

pub struct HistoryWriter {
    location: HistoryLocation,
    /// Runs the object store's calls (the writer's own thread blocks on them).
    runtime: tokio::runtime::Runtime,
    options: HistoryOptions,
    /// Every event at a time before this is in a committed file.
    committed: Time,
    /// Events waiting for the next flush, in publication order, and the frontier they
    /// complete.
    pending: Vec<(Time, Event)>,
    pending_frontier: Time,
    /// The requests that sent the commands of the waiting events, by position.
    requests: BTreeMap<Seq, Str>,
    /// Files a merge replaced, deleted once no query can still be reading them.
    retired: Vec<(String, std::time::Instant)>,
}

impl HistoryWriter {
    /// Opens (or creates) the history at `location`, deleting what an interrupted flush
    /// or merge left behind.
    pub fn open(
        location: impl Into<HistoryLocation>,
        options: HistoryOptions,
    ) -> Result<HistoryWriter> {
        let location = location.into();
        if let HistoryLocation::Directory(dir) = &location {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("the history's runtime", e))?;
        let mut writer = HistoryWriter {
            location,
            runtime,
            options,
            committed: 0,
            pending: Vec::new(),
            pending_frontier: 0,
            requests: BTreeMap::new(),
            retired: Vec::new(),
        };
        let location = writer.location.clone();
        writer.committed = writer.block_on(async move {
            let committed = location.committed().await?.unwrap_or(0);
            for day in location.days().await? {
                let mut parts = Vec::new();
                for (name, size) in location.files(&day).await? {
                    match parse_part(&name, size) {
                        Some(part) if part.to <= committed => parts.push(part),
                        // Past the committed frontier, or a temporary file: a crash's leftovers.
                        _ => location.remove(&name).await?,
                    }
                }
                // A merge that stopped before deleting its inputs.
                for part in &parts {
                    if covered(part, &parts) {
                        location.remove(&part.name).await?;
                    }
                }
            }
            Ok::<_, Error>(committed)
        })?;
        writer.pending_frontier = writer.committed;
        Ok(writer)
    }

    /// Runs `work` on the writer's runtime; from inside another runtime (a server
    /// opening its history), on a thread of its own.
    fn block_on<T: Send>(&self, work: impl std::future::Future<Output = T> + Send) -> T {
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|scope| {
                scope
                    .spawn(|| self.runtime.block_on(work))
                    .join()
                    .expect("the history's I/O does not panic")
            })
        } else {
            self.runtime.block_on(work)
        }
    }

    /// The frontier below which every event is in the history.
    pub fn committed(&self) -> Time {
        self.committed
    }

    /// Takes the events published up to `frontier` (those before the committed frontier,
    /// which a replay produces again, are skipped).
    pub fn add(&mut self, frontier: Time, events: impl IntoIterator<Item = (Time, Event)>) {
        self.add_traced(frontier, events, &BTreeMap::new());
    }

    /// `add`, with the requests that sent the events' commands (`request_id`), by
    /// position.
    pub fn add_traced(
        &mut self,
        frontier: Time,
        events: impl IntoIterator<Item = (Time, Event)>,
        requests: &BTreeMap<Seq, Str>,
    ) {
        let committed = self.committed;
        let start = self.pending.len();
        self.pending
            .extend(events.into_iter().filter(|(time, _)| *time >= committed));
        if !requests.is_empty() {
            for (_, event) in &self.pending[start..] {
                if let Some(request) = requests.get(&event.seq) {
                    self.requests.insert(event.seq, request.clone());
                }
            }
        }
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
        let mut by_day: BTreeMap<u64, Vec<&(Time, Event)>> = BTreeMap::new();
        for entry in &self.pending {
            by_day.entry(entry.1.ts / DAY_MS).or_default().push(entry);
        }
        let mut files = Vec::new();
        for (day, events) in &by_day {
            let name = format!("date={}/{}", date_of(day * DAY_MS), part_name(from, to));
            files.push((
                name,
                encode(
                    events
                        .chunks(BATCH_ROWS)
                        .map(|chunk| batch(chunk.iter().copied(), &self.requests)),
                    FLUSH_LEVEL,
                )?,
            ));
        }
        let location = self.location.clone();
        let written: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
        self.block_on(async move {
            for (name, body) in files {
                location.write(&name, body).await?;
            }
            // The commit point: until `_committed` moves, the files above are leftovers.
            location.write(COMMITTED, to.to_string().into_bytes()).await
        })?;
        self.committed = to;
        self.pending.clear();
        self.requests.clear();
        let days: std::collections::BTreeSet<&str> = written
            .iter()
            .filter_map(|name| name.split_once('/').map(|(day, _)| day))
            .collect();
        for day in days {
            self.compact_day(day)?;
        }
        let now = std::time::Instant::now();
        let (due, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retired)
            .into_iter()
            .partition(|(_, at)| now.duration_since(*at) >= RETIRE_AFTER);
        self.retired = kept;
        let location = self.location.clone();
        self.block_on(async move {
            for (name, _) in due {
                location.remove(&name).await?;
            }
            Ok(())
        })
    }

    /// Merges the newest files of a day into one once `compact_files` of them are of the
    /// lowest tiers (`HistoryOptions::tier_bytes`).
    fn compact_day(&mut self, day: &str) -> Result<()> {
        let location = self.location.clone();
        let (committed, options) = (self.committed, self.options.clone());
        let merged = self.block_on(async move {
            let mut parts = location.live_parts(day, committed).await?;
            parts.sort_by_key(|part| part.from);
            let Some(newest) = mergeable(&parts, &options) else {
                return Ok(None);
            };
            let parts = parts.split_off(parts.len() - newest);
            let mut inputs = Vec::with_capacity(parts.len());
            for part in &parts {
                let bytes = location.read(&part.name).await?;
                inputs.push((format!("{location:?}/{}", part.name), bytes));
            }
            let from = parts.iter().map(|part| part.from).min().unwrap_or(0);
            let to = parts.iter().map(|part| part.to).max().unwrap_or(0);
            let merged = merge(&inputs, options.copy_rows)?;
            location
                .write(&format!("{day}/{}", part_name(from, to)), merged)
                .await?;
            Ok::<_, Error>(Some((parts, from, to)))
        })?;
        let Some((parts, from, to)) = merged else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        for part in parts
            .iter()
            .filter(|part| (part.from, part.to) != (from, to))
        {
            self.retired.push((part.name.clone(), now));
        }
        Ok(())
    }
}

/// Every file of the committed history, each event in exactly one of them, as the
/// paths or URLs a reader opens (`HistoryLocation::file_url`): what the `events` table
/// reads. Empty when there is no history.
pub async fn committed_files(location: &HistoryLocation) -> Result<Vec<String>> {
    let names = committed_names(location).await?;
    Ok(names.iter().map(|name| location.file_url(name)).collect())
}

/// The files of `committed_files` by their names relative to the history's root
/// (`date=2026-11-30/events-....parquet`).
pub async fn committed_names(location: &HistoryLocation) -> Result<Vec<String>> {
    let Some(committed) = location.committed().await? else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for day in location.days().await? {
        let mut parts = location.live_parts(&day, committed).await?;
        parts.sort_by_key(|part| part.from);
        files.extend(parts.into_iter().map(|part| part.name));
    }
    Ok(files)
}

/// `events-<from>-<to>.parquet`, fixed width so that names sort as ranges do.
fn part_name(from: Time, to: Time) -> String {
    format!("events-{from:020}-{to:020}.parquet")
}

fn parse_part(name: &str, size: u64) -> Option<Part> {
    let file = name.rsplit('/').next()?;
    let range = file.strip_prefix("events-")?.strip_suffix(".parquet")?;
    let (from, to) = range.split_once('-')?;
    Some(Part {
        name: name.to_string(),
        from: from.parse().ok()?,
        to: to.parse().ok()?,
        size,
    })
}

/// The UTC date of log time `ts`, as `YYYY-MM-DD`.
pub fn date_of(ts: u64) -> String {
    let stamp =
        humantime::format_rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ts))
            .to_string();
    stamp[..10].to_string()
}

/// The events as one batch of the history's columns, with the requests that sent their
/// commands by position.
fn batch<'a>(
    events: impl ExactSizeIterator<Item = &'a (Time, Event)>,
    requests: &BTreeMap<Seq, Str>,
) -> Result<RecordBatch> {
    let rows = events.len();
    let text = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
    let mut event_id = text(36);
    let mut kind = text(16);
    let mut occurred_at = TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut position = Int64Builder::with_capacity(rows);
    let mut phase = Int32Builder::with_capacity(rows);
    let mut sub = Int32Builder::with_capacity(rows);
    let mut time = Int64Builder::with_capacity(rows);
    let mut aggregate_id = text(24);
    let mut correlation_id = text(24);
    let mut data = text(160);
    let mut request_id = StringBuilder::with_capacity(rows, rows.min(requests.len()) * 36);
    let (mut scratch, mut json) = (Vec::with_capacity(512), Vec::with_capacity(512));
    for (at, event) in events {
        event_id.append_value(event_id_and_data(event, &mut scratch, &mut json));
        kind.append_value(event.body.name());
        occurred_at.append_value(event.ts as i64);
        position.append_value(event.seq as i64);
        phase.append_value(i32::from(event.phase));
        sub.append_value(i32::from(event.sub));
        time.append_value(*at as i64);
        aggregate_id.append_value(event.body.aggregate_id());
        correlation_id.append_value(event.body.correlation_id());
        data.append_value(
            std::str::from_utf8(&json)
                .map_err(|e| Error::History(format!("history event data: {e}")))?,
        );
        request_id.append_option(requests.get(&event.seq));
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
        Arc::new(request_id.finish()),
    ];
    RecordBatch::try_new(schema(), columns)
        .map_err(|e| Error::History(format!("history batch: {e}")))
}

/// How many of the newest `parts` (in time order) to merge, if any: the longest run of
/// newest files of tiers up to `t`, for the lowest `t` of which that run has
/// `compact_files` files. Only a run of newest files is merged, so the merged file
/// covers no file it did not take.
fn mergeable(parts: &[Part], options: &HistoryOptions) -> Option<usize> {
    let fanout = options.compact_files.max(2) as u64;
    let tier = |part: &Part| {
        let mut tier = 0;
        let mut limit = options.tier_bytes.max(1);
        while part.size >= limit {
            tier += 1;
            limit = limit.saturating_mul(fanout);
        }
        tier
    };
    let tiers: Vec<u32> = parts
        .iter()
        .rev()
        .take_while(|part| part.size < FINAL_BYTES)
        .map(tier)
        .collect();
    let highest = tiers.iter().copied().max()?;
    (0..=highest).find_map(|limit| {
        let run = &tiers[..tiers.iter().take_while(|tier| **tier <= limit).count()];
        let of_limit = run.iter().filter(|tier| **tier == limit).count();
        (of_limit >= options.compact_files.max(2)).then_some(run.len())
    })
}

/// How the history's files are written: zstd at `level`, row groups of up to
/// `ROW_GROUP_ROWS`.
fn properties(level: i32) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(level).expect("a valid level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Every event's id and data differ: a dictionary would only be built to be dropped.
        .set_column_dictionary_enabled(ColumnPath::from("event_id"), false)
        .set_column_dictionary_enabled(ColumnPath::from("data"), false)
        .build()
}

fn parquet_error(e: parquet::errors::ParquetError) -> Error {
    Error::History(format!("history file: {e}"))
}

/// The events of each type a file holds, counted as its rows are written; `None` once
/// some rows could not be counted (then the file records no counts).
struct TypeCounter(Option<BTreeMap<String, u64>>);

impl TypeCounter {
    fn new() -> TypeCounter {
        TypeCounter(Some(BTreeMap::new()))
    }

    /// Counts the rows of `batch` (which may hold only the `type` column).
    fn count(&mut self, batch: &RecordBatch) {
        let kinds = batch
            .column_by_name("type")
            .and_then(|c| c.as_string_opt::<i32>());
        match (kinds, self.0.as_mut()) {
            (Some(kinds), Some(counts)) => {
                for kind in kinds.iter().flatten() {
                    match counts.get_mut(kind) {
                        Some(count) => *count += 1,
                        None => drop(counts.insert(kind.to_string(), 1)),
                    }
                }
            }
            _ => self.0 = None,
        }
    }

    /// The footer entry, if every row was counted.
    fn footer(self) -> Result<Option<KeyValue>> {
        let Some(counts) = self.0 else {
            return Ok(None);
        };
        let counts = serde_json::to_string(&counts)
            .map_err(|e| Error::History(format!("history file: {e}")))?;
        Ok(Some(KeyValue::new(TYPE_COUNTS.to_string(), counts)))
    }
}

/// `batches` as a Parquet file (zstd at `level`, row groups of `ROW_GROUP_ROWS`), each
/// batch dropped once written.
fn encode(batches: impl IntoIterator<Item = Result<RecordBatch>>, level: i32) -> Result<Vec<u8>> {
    let mut writer = ArrowWriter::try_new(Vec::new(), schema(), Some(properties(level)))
        .map_err(parquet_error)?;
    let mut counts = TypeCounter::new();
    for batch in batches {
        let batch = batch?;
        counts.count(&batch);
        writer.write(&batch).map_err(parquet_error)?;
    }
    if let Some(footer) = counts.footer()? {
        writer.append_key_value_metadata(footer);
    }
    writer.into_inner().map_err(parquet_error)
}

/// The history files `inputs` (name, whole contents; in time order) as one file.
///
/// A row group of at least `copy_rows` rows goes into the merged file as it is: its
/// encoded pages are copied, with their statistics and page index, and only its `type`
/// column is decoded, to count the events. Smaller row groups (the files of flushes under
/// a light load, the tail of an earlier merge) are decoded and written anew, together,
/// in row groups of up to `ROW_GROUP_ROWS`, zstd at `MERGE_LEVEL`. Under a heavy load,
/// when the history's CPU competes with the order path's, most of a merge is a copy.
fn merge(inputs: &[(String, bytes::Bytes)], copy_rows: usize) -> Result<Vec<u8>> {
    let schema = schema();
    let writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties(MERGE_LEVEL)))
        .map_err(parquet_error)?;
    let (mut file, columns) = writer.into_serialized_writer().map_err(parquet_error)?;
    let mut counts = TypeCounter::new();
    // The row group being written anew, and its rows so far.
    let mut open: Option<(Vec<ArrowColumnWriter>, usize)> = None;
    for (name, bytes) in inputs {
        let failed = |e: parquet::errors::ParquetError| Error::History(format!("{name}: {e}"));
        let unreadable = |e: arrow_schema::ArrowError| Error::History(format!("{name}: {e}"));
        let metadata = ArrowReaderMetadata::load(
            bytes,
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional),
        )
        .map_err(failed)?;
        let groups = metadata.metadata().row_groups();
        let same_columns = metadata.parquet_schema() == file.schema_descr();
        for (index, group) in groups.iter().enumerate() {
            let rows = |mask: ProjectionMask| {
                ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), metadata.clone())
                    .with_row_groups(vec![index])
                    .with_projection(mask)
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(failed)
            };
            if same_columns && group.num_rows() as usize >= copy_rows.max(1) {
                // Row order is time order: what is being written anew goes first.
                close_row_group(&mut file, &mut open)?;
                let mut copy = file.next_row_group().map_err(parquet_error)?;
                for (column, chunk) in group.columns().iter().enumerate() {
                    copy.append_column(
                        bytes,
                        ColumnCloseResult {
                            bytes_written: chunk.compressed_size() as u64,
                            rows_written: group.num_rows() as u64,
                            metadata: chunk.clone(),
                            bloom_filter: None,
                            column_index: metadata
                                .metadata()
                                .column_index()
                                .and_then(|groups| groups.get(index)?.get(column).cloned()),
                            offset_index: metadata
                                .metadata()
                                .offset_index()
                                .and_then(|groups| groups.get(index)?.get(column).cloned()),
                        },
                    )
                    .map_err(failed)?;
                }
                copy.close().map_err(parquet_error)?;
                let kinds = ProjectionMask::columns(metadata.parquet_schema(), ["type"]);
                for batch in rows(kinds)? {
                    counts.count(&batch.map_err(unreadable)?);
                }
                continue;
            }
            for batch in rows(ProjectionMask::all())? {
                let batch = with_columns_of(&schema, batch.map_err(unreadable)?)
                    .map_err(|e| Error::History(format!("{name}: {e}")))?;
                counts.count(&batch);
                let mut offset = 0;
                while offset < batch.num_rows() {
                    let (writers, written) = match &mut open {
                        Some(open) => open,
                        None => open.insert((
                            columns
                                .create_column_writers(file.flushed_row_groups().len())
                                .map_err(parquet_error)?,
                            0,
                        )),
                    };
                    let take = (ROW_GROUP_ROWS - *written).min(batch.num_rows() - offset);
                    let part = batch.slice(offset, take);
                    for ((writer, field), array) in
                        writers.iter_mut().zip(schema.fields()).zip(part.columns())
                    {
                        for leaf in compute_leaves(field, array).map_err(parquet_error)? {
                            writer.write(&leaf).map_err(parquet_error)?;
                        }
                    }
                    *written += take;
                    offset += take;
                    if *written >= ROW_GROUP_ROWS {
                        close_row_group(&mut file, &mut open)?;
                    }
                }
            }
        }
    }
    close_row_group(&mut file, &mut open)?;
    if let Some(footer) = counts.footer()? {
        file.append_key_value_metadata(footer);
    }
    file.into_inner().map_err(parquet_error)
}

/// `batch`, from a file written before the history's newest columns, with those columns
/// null; the file's columns must be the first of the history's, as they are.
fn with_columns_of(schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch, String> {
    let fields = batch.schema().fields().clone();
    let added = schema.fields().get(fields.len()..).unwrap_or_default();
    if fields[..] != schema.fields()[..fields.len().min(schema.fields().len())]
        || added.iter().any(|field| !field.is_nullable())
        || fields.len() > schema.fields().len()
    {
        return Err(format!("not the history's columns: {}", batch.schema()));
    }
    if added.is_empty() {
        return Ok(batch);
    }
    let rows = batch.num_rows();
    let mut columns = batch.columns().to_vec();
    columns.extend(
        added
            .iter()
            .map(|field| arrow_array::new_null_array(field.data_type(), rows)),
    );
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

/// Ends the row group being written anew, if there is one.
fn close_row_group(
    file: &mut SerializedFileWriter<Vec<u8>>,
    open: &mut Option<(Vec<ArrowColumnWriter>, usize)>,
) -> Result<()> {
    let Some((writers, _)) = open.take() else {
        return Ok(());
    };
    let mut group = file.next_row_group().map_err(parquet_error)?;
    for writer in writers {
        writer
            .close()
            .and_then(|chunk| chunk.append_to_row_group(&mut group))
            .map_err(parquet_error)?;
    }
    group.close().map_err(parquet_error)?;
    Ok(())
}

/// How many events of each type a history file holds, from its footer (the writer
/// records them); `None` for a file written before it did.
fn type_counts(metadata: &FileMetaData) -> Option<BTreeMap<String, u64>> {
    let value = metadata
        .key_value_metadata()?
        .iter()
        .find(|entry| entry.key == TYPE_COUNTS)?
        .value
        .as_deref()?;
    serde_json::from_str(value).ok()
}

/// `type_counts` of the history file `name` (as `committed_files` lists it, relative to
/// the history's root). Reads only the footer, of files in a directory; `None` for an
/// object store, whose footers would cost a request each.
pub fn file_type_counts(
    location: &HistoryLocation,
    name: &str,
) -> Result<Option<BTreeMap<String, u64>>> {
    let HistoryLocation::Directory(dir) = location else {
        return Ok(None);
    };
    let path = dir.join(name);
    let failed = |e: &dyn std::fmt::Display| Error::History(format!("{}: {e}", path.display()));
    let file = std::fs::File::open(&path).map_err(|e| failed(&e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| failed(&e))?;
    Ok(type_counts(reader.metadata().file_metadata()))
}
