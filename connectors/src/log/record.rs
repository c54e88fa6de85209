//! The on-disk record: `[len u32][crc32c u32][ts u64][seq u64][payload]`, little endian.
//! The checksum covers `ts`, `seq` and the payload.

use dataflows::model::{Seq, Ts};

pub const RECORD_HEADER_BYTES: usize = 24;

pub fn encode_record(out: &mut Vec<u8>, seq: Seq, ts: Ts, payload: &[u8]) {
    let mut crc = crc32c::crc32c(&ts.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&ts.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why bytes at some offset are not a record.
#[derive(Debug, PartialEq, Eq)]
pub enum BadRecord {
    /// The buffer ends inside the record.
    Truncated,
    /// The record is whole but its checksum does not match; `len` is its stated length.
    Checksum { len: usize },
}

/// Decodes the record at the start of `bytes`: `(seq, ts, payload, total length)`.
pub fn decode_record(bytes: &[u8]) -> Result<(Seq, Ts, &[u8], usize), BadRecord> {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Err(BadRecord::Truncated);
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let ts = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let seq = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let end = RECORD_HEADER_BYTES
        .checked_add(len)
        .ok_or(BadRecord::Truncated)?;
    if bytes.len() < end {
        return Err(BadRecord::Truncated);
    }
    let payload = &bytes[RECORD_HEADER_BYTES..end];
    let mut actual = crc32c::crc32c(&bytes[8..16]);
    actual = crc32c::crc32c_append(actual, &bytes[16..24]);
    actual = crc32c::crc32c_append(actual, payload);
    if actual != crc {
        return Err(BadRecord::Checksum { len });
    }
    Ok((seq, ts, payload, end))
}
