use std::io::{Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use connectors::log::{EmbeddedLog, EmbeddedLogOptions, Log, LogRecord};
use connectors::Error;

/// Timestamp and positions of each batch the consumer saw.
type Seen = Arc<Mutex<Vec<(u64, Vec<u64>)>>>;

fn started(dir: &std::path::Path, options: EmbeddedLogOptions) -> (EmbeddedLog, Seen) {
    let log = EmbeddedLog::open(dir, options).expect("open");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    log.start(Box::new(move |batch| {
        sink.lock().unwrap().push((
            batch.ts,
            batch.records.iter().map(|(seq, _)| *seq).collect(),
        ));
    }))
    .expect("start");
    (log, seen)
}

fn all(log: &EmbeddedLog) -> Vec<LogRecord> {
    log.read_from(0)
        .expect("read")
        .collect::<Result<Vec<_>, _>>()
        .expect("records")
}

#[test]
fn appends_survive_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, seen) = started(dir.path(), EmbeddedLogOptions::default());
        let a = log
            .append(vec![b"a".to_vec(), b"b".to_vec()])
            .wait()
            .unwrap();
        let b = log.append(vec![b"c".to_vec()]).wait().unwrap();
        assert_eq!((a.seqs, b.seqs), (vec![0, 1], vec![2]));
        assert!(b.ts > a.ts, "timestamps increase per batch");
        assert_eq!(
            seen.lock().unwrap().len(),
            2,
            "the consumer saw each batch before the appender was answered"
        );
        assert_eq!(log.durable_end(), 3);
    }
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    let records = all(&log);
    assert_eq!(
        records
            .iter()
            .map(|r| r.payload.clone())
            .collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    assert_eq!(records[0].ts, records[1].ts);
    assert_eq!(log.recovery().truncated_bytes, 0);
}

#[test]
fn concurrent_appends_share_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (log, seen) = started(dir.path(), EmbeddedLogOptions::default());
    let log = Arc::new(log);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for i in 0..50 {
                    log.append(vec![format!("{t}-{i}").into_bytes()])
                        .wait()
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let batches = seen.lock().unwrap().clone();
    let seqs: Vec<u64> = batches.iter().flat_map(|(_, seqs)| seqs.clone()).collect();
    assert_eq!(
        seqs,
        (0..400).collect::<Vec<_>>(),
        "the consumer sees every record once, in log order"
    );
    assert!(
        batches.windows(2).all(|w| w[0].0 < w[1].0),
        "batch timestamps strictly increase"
    );
    assert_eq!(all(&log).len(), 400);
}

#[test]
fn segments_roll_by_size_and_read_across() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedLogOptions {
        segment_bytes: 256,
        ..Default::default()
    };
    {
        let (log, _) = started(dir.path(), options.clone());
        for i in 0..40u32 {
            log.append(vec![vec![i as u8; 40]]).wait().unwrap();
        }
    }
    let segments = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segments > 5, "{segments} segments");
    let log = EmbeddedLog::open(dir.path(), options).unwrap();
    let records = all(&log);
    assert_eq!(records.len(), 40);
    assert_eq!(log.read_from(37).unwrap().count(), 3);
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.pop().unwrap()
}

#[test]
fn torn_tail_is_truncated_and_only_it_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = started(dir.path(), EmbeddedLogOptions::default());
        for i in 0..5u8 {
            log.append(vec![vec![i; 100]]).wait().unwrap();
        }
    }
    let path = last_segment(dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    // Cut the last record in half, as a crash during its write would.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 60)
        .unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    assert_eq!(log.recovery().truncated_bytes, 124 - 60);
    let records = all(&log);
    assert_eq!(records.len(), 4);
    assert_eq!(log.durable_end(), 4);
    // The log goes on from there.
    let (log2, _) = {
        drop(log);
        started(dir.path(), EmbeddedLogOptions::default())
    };
    assert_eq!(
        log2.append(vec![b"next".to_vec()]).wait().unwrap().seqs,
        vec![4]
    );
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = started(dir.path(), EmbeddedLogOptions::default());
        log.append(vec![b"kept".to_vec()]).wait().unwrap();
    }
    let path = last_segment(dir.path());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(&[0xAB; 37]).unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    assert_eq!(log.recovery().truncated_bytes, 37);
    assert_eq!(all(&log).len(), 1);
}

#[test]
fn corruption_in_the_middle_is_an_error_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (log, _) = started(dir.path(), EmbeddedLogOptions::default());
        for i in 0..5u8 {
            log.append(vec![vec![i; 100]]).wait().unwrap();
        }
    }
    let path = last_segment(dir.path());
    // Flip a payload byte of the second record (header 8 bytes, records 124 bytes).
    let offset = 8 + 124 + 24 + 10;
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&[0xFF]).unwrap();
    drop(file);
    match EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert!(segment.ends_with(".log"));
            assert_eq!(offset, 8 + 124);
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a corrupt record in the middle must not open"),
    }
}

/// A disk that fills in the middle of a group commit: the batch's appenders hear that
/// nothing was written, and nothing of it comes back after a restart (before, its whole
/// records stayed in the segment and took effect on the next start). Once space returns
/// the log writes again, from the same position.
#[test]
fn a_batch_cut_off_by_a_full_disk_is_not_kept() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let budget = Arc::new(AtomicU64::new(u64::MAX));
    let options = EmbeddedLogOptions {
        disk_budget: Some(budget.clone()),
        ..Default::default()
    };
    {
        let (log, seen) = started(dir.path(), options.clone());
        log.append(vec![b"kept".to_vec()]).wait().unwrap();
        // Room for one and a half of the next batch's three records.
        budget.store(60, Ordering::Release);
        let failed = log
            .append(vec![vec![b'x'; 40], vec![b'y'; 40], vec![b'z'; 40]])
            .wait()
            .unwrap_err();
        assert!(matches!(failed, Error::NotWritten { .. }), "{failed}");
        assert!(failed.is_retryable());
        assert!(
            log.is_healthy(),
            "a batch cut back out leaves the log writable"
        );
        assert_eq!(log.durable_end(), 1);
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "the consumer never saw the batch"
        );
        // Space again: the next append takes the position the failed one would have.
        budget.store(u64::MAX, Ordering::Release);
        let after = log.append(vec![b"after".to_vec()]).wait().unwrap();
        assert_eq!(after.seqs, vec![1]);
    }
    let log = EmbeddedLog::open(dir.path(), EmbeddedLogOptions::default()).unwrap();
    assert_eq!(
        log.recovery().truncated_bytes,
        0,
        "nothing torn was left behind"
    );
    let payloads: Vec<Vec<u8>> = all(&log).into_iter().map(|r| r.payload).collect();
    assert_eq!(payloads, vec![b"kept".to_vec(), b"after".to_vec()]);
}
