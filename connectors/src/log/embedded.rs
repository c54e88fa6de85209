//! The embedded segment log: the default `Log`, in a directory of segment files.
//!
//! Segments are named by the position of their first record and start with a magic
//! header. One writer thread owns the open segment and commits in groups: it takes every
//! append waiting at that moment, gives them one timestamp, writes them, fsyncs once,
//! hands the batch to the consumer (the dataflow) and only then answers the appenders.
//!
//! Recovery: a record that is cut off or fails its checksum at the end of the last
//! segment is a torn write and is truncated away, with a warning that says how many
//! bytes were dropped. A bad record followed by good ones is corruption, reported with
//! its segment and offset, never skipped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use dataflows::model::{Seq, Ts};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::record::{decode_record, encode_record, BadRecord};
use super::{Appended, DurableBatch, Log, LogRecord, OnDurable, PendingAppend};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"TDMKLOG\x01";
const MAX_RECORD_BYTES: usize = 16 << 20;

#[derive(Clone, Debug)]
pub struct EmbeddedLogOptions {
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Upper bound on the bytes one group commit takes in.
    pub max_batch_bytes: usize,
    /// Fault injection: bytes of records the log may still write before the disk is
    /// "full" (a write past it writes what fits, then fails with `StorageFull`, as a
    /// real full disk does). `None`, the default, writes as the disk allows.
    pub disk_budget: Option<Arc<AtomicU64>>,
}

impl Default for EmbeddedLogOptions {
    fn default() -> Self {
        EmbeddedLogOptions {
            segment_bytes: 64 << 20,
            max_batch_bytes: 4 << 20,
            disk_budget: None,
        }
    }
}

struct Request {
    payloads: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<Appended>>,
}

/// What recovery found: the segments, where to write next, what was dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub segments: usize,
    pub records: u64,
    pub truncated_bytes: u64,
}

pub struct EmbeddedLog {
    dir: PathBuf,
    requests: Mutex<Option<Sender<Request>>>,
    pending_writer: Mutex<Option<(Writer, Receiver<Request>)>>,
    durable_end: Arc<AtomicU64>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    recovery: Recovery,
    healthy: Arc<AtomicBool>,
}

struct Writer {
    dir: PathBuf,
    file: File,
    /// The first record of the open segment (its file name).
    segment_first: Seq,
    /// Bytes of the open segment that are durable.
    segment_len: u64,
    segment_bytes: u64,
    max_batch_bytes: usize,
    disk_budget: Option<Arc<AtomicU64>>,
    next_seq: Seq,
    last_ts: Ts,
    poisoned: Option<String>,
    /// Cleared once the writer refuses appends; `is_healthy` reads it.
    healthy: Arc<AtomicBool>,
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log in `dir` and recovers it.
    pub fn open(dir: impl AsRef<Path>, options: EmbeddedLogOptions) -> Result<EmbeddedLog> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let segments = list_segments(&dir)?;
        let mut next_seq: Seq = 0;
        let mut last_ts: Ts = 0;
        let mut recovery = Recovery {
            segments: segments.len(),
            ..Default::default()
        };
        for (index, (first_seq, path)) in segments.iter().enumerate() {
            let last = index + 1 == segments.len();
            if *first_seq != next_seq && !(index == 0 && next_seq == 0) {
                return Err(Error::Corrupt {
                    segment: path.display().to_string(),
                    offset: 0,
                    reason: format!("segment starts at record {first_seq}, expected {next_seq}"),
                });
            }
            next_seq = *first_seq;
            let scan = scan_segment(path, next_seq, last_ts, last)?;
            recovery.records += scan.records;
            next_seq += scan.records;
            last_ts = scan.last_ts.max(last_ts);
            if let Some(good_len) = scan.truncate_to {
                let dropped = scan.file_len - good_len;
                tracing::warn!(segment = %path.display(), offset = good_len, dropped_bytes = dropped, "truncating a torn write at the end of the log");
                let file = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                file.set_len(good_len).map_err(|e| Error::io(path, e))?;
                file.sync_all().map_err(|e| Error::io(path, e))?;
                recovery.truncated_bytes += dropped;
            }
        }
        let (file, segment_first, segment_len) = match segments.last() {
            Some((first, path)) => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::io(path, e))?;
                let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
                (file, *first, len)
            }
            None => (create_segment(&dir, 0)?, 0, MAGIC.len() as u64),
        };
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            dir: dir.clone(),
            file,
            segment_first,
            segment_len,
            segment_bytes: options.segment_bytes,
            max_batch_bytes: options.max_batch_bytes,
            disk_budget: options.disk_budget.clone(),
            next_seq,
            last_ts,
            poisoned: None,
            healthy: healthy.clone(),
        };
        let (tx, rx) = mpsc::channel();
        tracing::info!(dir = %dir.display(), records = recovery.records, segments = recovery.segments, "opened the embedded log");
        Ok(EmbeddedLog {
            dir,
            requests: Mutex::new(Some(tx)),
            pending_writer: Mutex::new(Some((writer, rx))),
            durable_end: Arc::new(AtomicU64::new(next_seq)),
            writer_thread: Mutex::new(None),
            recovery,
            healthy,
        })
    }

    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        Log::close(self);
    }
}

impl Log for EmbeddedLog {
    fn append(&self, payloads: Vec<Vec<u8>>) -> PendingAppend {
        if let Some(refused) = PendingAppend::refuse_larger_than(&payloads, MAX_RECORD_BYTES) {
            return refused;
        }
        let (reply, rx) = oneshot::channel();
        match self.requests.lock().as_ref() {
            Some(tx) => {
                if let Err(mpsc::SendError(request)) = tx.send(Request { payloads, reply }) {
                    let _ = request.reply.send(Err(Error::Closed));
                }
            }
            None => {
                let _ = reply.send(Err(Error::Closed));
            }
        }
        PendingAppend(rx)
    }

    fn read_from(&self, seq: Seq) -> Result<Box<dyn Iterator<Item = Result<LogRecord>> + Send>> {
        let end = self.durable_end();
        let segments: Vec<(Seq, PathBuf)> = list_segments(&self.dir)?;
        let start = segments
            .iter()
            .rposition(|(first, _)| *first <= seq)
            .unwrap_or(0);
        let segments: Vec<(Seq, PathBuf)> = segments.into_iter().skip(start).collect();
        Ok(Box::new(SegmentReader {
            segments: segments.into_iter(),
            current: Vec::new().into_iter(),
            from: seq,
            end,
            failed: false,
        }))
    }

    fn durable_end(&self) -> Seq {
        self.durable_end.load(Ordering::Acquire)
    }

    fn start(&self, consumer: OnDurable) -> Result<()> {
        let (writer, rx) = self.pending_writer.lock().take().ok_or(Error::Closed)?;
        let durable_end = Arc::clone(&self.durable_end);
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(rx, consumer, durable_end))
            .map_err(|e| Error::io(&self.dir, e))?;
        *self.writer_thread.lock() = Some(thread);
        Ok(())
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.requests.lock().take();
        self.pending_writer.lock().take();
        if let Some(thread) = self.writer_thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Writer {
    fn run(mut self, rx: Receiver<Request>, mut consumer: OnDurable, durable_end: Arc<AtomicU64>) {
        let mut buffer = Vec::with_capacity(1 << 16);
        while let Ok(first) = rx.recv() {
            let mut bytes: usize = first.payloads.iter().map(Vec::len).sum();
            let mut requests = vec![first];
            while bytes < self.max_batch_bytes {
                match rx.try_recv() {
                    Ok(request) => {
                        bytes += request.payloads.iter().map(Vec::len).sum::<usize>();
                        requests.push(request);
                    }
                    Err(_) => break,
                }
            }
            if let Some(reason) = &self.poisoned {
                for request in requests {
                    let _ = request.reply.send(Err(Error::Poisoned(reason.clone())));
                }
                continue;
            }
            let ts = now_ms().max(self.last_ts + 1);
            let first_seq = self.next_seq;
            buffer.clear();
            let mut seq = first_seq;
            let mut answers = Vec::with_capacity(requests.len());
            for request in &requests {
                answers.push(Appended {
                    ts,
                    seqs: (seq..seq + request.payloads.len() as Seq).collect(),
                });
                for payload in &request.payloads {
                    encode_record(&mut buffer, seq, ts, payload);
                    seq += 1;
                }
            }
            let writing = std::time::Instant::now();
            let written = self.write_durably(&buffer, first_seq);
            metrics::histogram!("tidemark_log_fsync_duration_seconds")
                .record(writing.elapsed().as_secs_f64());
            metrics::histogram!("tidemark_log_group_commit_commands")
                .record((seq - first_seq) as f64);
            if let Err(error) = written {
                match &error {
                    Error::NotWritten { .. } => {
                        tracing::warn!(%error, records = seq - first_seq, "log append failed and was cut back out; later appends will try again");
                    }
                    _ => {
                        tracing::error!(%error, "log append failed with an unknown outcome; refusing appends until restart");
                        self.poisoned = Some(error.to_string());
                        self.healthy.store(false, Ordering::Release);
                    }
                }
                for request in requests {
                    let _ = request.reply.send(Err(error.duplicate()));
                }
                continue;
            }
            self.next_seq = seq;
            self.last_ts = ts;
            durable_end.store(seq, Ordering::Release);
            let mut records = Vec::with_capacity((seq - first_seq) as usize);
            let mut next = first_seq;
            for request in &requests {
                for payload in &request.payloads {
                    records.push((next, payload.as_slice()));
                    next += 1;
                }
            }
            consumer(DurableBatch { ts, records });
            for (request, answer) in requests.into_iter().zip(answers) {
                let _ = request.reply.send(Ok(answer));
            }
        }
    }

    fn write_within_budget(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let Some(budget) = &self.disk_budget else {
            return self.file.write_all(bytes);
        };
        let left = budget.load(Ordering::Acquire) as usize;
        let fits = left.min(bytes.len());
        self.file.write_all(&bytes[..fits])?;
        budget.fetch_sub(fits as u64, Ordering::AcqRel);
        if fits < bytes.len() {
            return Err(std::io::ErrorKind::StorageFull.into());
        }
        Ok(())
    }

    /// Writes and fsyncs one group commit. On failure (a full disk, an I/O error) the
    /// segment is cut back to its last durable length, so that no record of a batch
    /// whose appenders hear "failed" can come back on the next start: then the error
    /// is `NotWritten`. If even that fails, the outcome is unknown (`OutcomeUnknown`).
    fn write_durably(&mut self, bytes: &[u8], first_seq: Seq) -> Result<()> {
        if self.segment_len > MAGIC.len() as u64
            && self.segment_len + bytes.len() as u64 > self.segment_bytes
        {
            let file = create_segment(&self.dir, first_seq).map_err(|error| match error {
                // A half-made segment holds no record: the start-up scan drops it.
                Error::Io { path, source } => Error::NotWritten { path, source },
                other => other,
            })?;
            self.file = file;
            self.segment_first = first_seq;
            self.segment_len = MAGIC.len() as u64;
        }
        let written = self
            .write_within_budget(bytes)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.segment_len += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                let path = segment_path(&self.dir, self.segment_first)
                    .display()
                    .to_string();
                let cut = self
                    .file
                    .set_len(self.segment_len)
                    .and_then(|()| self.file.sync_all());
                match cut {
                    Ok(()) => Err(Error::NotWritten { path, source }),
                    Err(cut) => Err(Error::OutcomeUnknown {
                        path,
                        reason: format!("{source}; cutting the batch back out failed: {cut}"),
                    }),
                }
            }
        }
    }
}

fn now_ms() -> Ts {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Ts)
        .unwrap_or(0)
}

fn segment_path(dir: &Path, first_seq: Seq) -> PathBuf {
    dir.join(format!("{first_seq:020}.log"))
}

fn create_segment(dir: &Path, first_seq: Seq) -> Result<File> {
    let path = segment_path(dir, first_seq);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    file.write_all(MAGIC).map_err(|e| Error::io(&path, e))?;
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))
}

fn list_segments(dir: &Path) -> Result<Vec<(Seq, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(first) = name
            .strip_suffix(".log")
            .and_then(|stem| stem.parse::<Seq>().ok())
        {
            segments.push((first, path));
        }
    }
    segments.sort();
    Ok(segments)
}

struct Scan {
    records: u64,
    last_ts: Ts,
    file_len: u64,
    truncate_to: Option<u64>,
}

fn scan_segment(path: &Path, first_seq: Seq, mut last_ts: Ts, is_last: bool) -> Result<Scan> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |offset: usize, reason: String| Error::Corrupt {
        segment: path.display().to_string(),
        offset: offset as u64,
        reason,
    };
    let file_len = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if is_last && MAGIC.starts_with(&bytes) {
            // Crashed while creating the segment: rewrite its header.
            std::fs::write(path, MAGIC).map_err(|e| Error::io(path, e))?;
            return Ok(Scan {
                records: 0,
                last_ts,
                file_len: MAGIC.len() as u64,
                truncate_to: None,
            });
        }
        return Err(corrupt(0, "missing segment header".into()));
    }
    let mut offset = MAGIC.len();
    let mut expected = first_seq;
    while offset < bytes.len() {
        match decode_record(&bytes[offset..]) {
            Ok((seq, ts, _, len)) => {
                if seq != expected {
                    return Err(corrupt(
                        offset,
                        format!("record {seq} where {expected} was expected"),
                    ));
                }
                if ts < last_ts {
                    return Err(corrupt(
                        offset,
                        format!("timestamp {ts} goes back from {last_ts}"),
                    ));
                }
                last_ts = ts;
                expected += 1;
                offset += len;
            }
            Err(bad) => {
                let next = match bad {
                    BadRecord::Truncated => None,
                    BadRecord::Checksum { len } => Some(offset + super::RECORD_HEADER_BYTES + len),
                };
                let followed_by_good = next.is_some_and(|next| {
                    next < bytes.len() && decode_record(&bytes[next..]).is_ok()
                });
                if !is_last || followed_by_good {
                    return Err(corrupt(offset, format!("{bad:?}")));
                }
                return Ok(Scan {
                    records: expected - first_seq,
                    last_ts,
                    file_len,
                    truncate_to: Some(offset as u64),
                });
            }
        }
    }
    Ok(Scan {
        records: expected - first_seq,
        last_ts,
        file_len,
        truncate_to: None,
    })
}

struct SegmentReader {
    segments: std::vec::IntoIter<(Seq, PathBuf)>,
    current: std::vec::IntoIter<LogRecord>,
    from: Seq,
    end: Seq,
    failed: bool,
}

impl Iterator for SegmentReader {
    type Item = Result<LogRecord>;

    fn next(&mut self) -> Option<Result<LogRecord>> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(record) = self.current.next() {
                if record.seq >= self.end {
                    return None;
                }
                if record.seq >= self.from {
                    return Some(Ok(record));
                }
                continue;
            }
            let (_, path) = self.segments.next()?;
            match read_segment(&path) {
                Ok(records) => self.current = records.into_iter(),
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
    }
}

fn read_segment(path: &Path) -> Result<Vec<LogRecord>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut records = Vec::new();
    let mut offset = MAGIC.len().min(bytes.len());
    while offset < bytes.len() {
        match decode_record(&bytes[offset..]) {
            Ok((seq, ts, payload, len)) => {
                records.push(LogRecord {
                    seq,
                    ts,
                    payload: payload.to_vec(),
                });
                offset += len;
            }
            // Bytes past the durable end may be an append in progress.
            Err(BadRecord::Truncated) => break,
            Err(bad) => {
                return Err(Error::Corrupt {
                    segment: path.display().to_string(),
                    offset: offset as u64,
                    reason: format!("{bad:?}"),
                })
            }
        }
    }
    Ok(records)
}
