//! Files written whole or not at all: the history's files in a directory, report files.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `body` to `path` whole or not at all, durably: to `<path>.tmp` (creating the
/// directory), synced, renamed over `path`, and the directory synced. A crash leaves
/// either the old file or the new one, and perhaps the `.tmp`.
pub fn write_atomically(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| {
        std::io::Error::other(format!("{} is not in a directory", path.display()))
    })?;
    std::fs::create_dir_all(dir)?;
    let aside = PathBuf::from(format!("{}.tmp", path.display()));
    let mut file = File::create(&aside)?;
    file.write_all(body)?;
    file.sync_all()?;
    std::fs::rename(&aside, path)?;
    sync_dir(dir)
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
