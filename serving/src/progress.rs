//! Replay progress: a bar on a terminal, lines in JSON logs.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::runtime::Progress;

pub struct TerminalProgress(Option<ProgressBar>);

impl TerminalProgress {
    pub fn new() -> Self {
        TerminalProgress(None)
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for TerminalProgress {
    fn start(&mut self, total: u64) {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "replaying log {bar:40} {pos}/{len} records ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style);
        }
        self.0 = Some(bar);
    }

    fn advance(&mut self, done: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(done);
        }
    }

    fn finish(&mut self, done: u64, elapsed: Duration) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
        tracing::info!(
            records = done,
            elapsed_ms = elapsed.as_millis() as u64,
            "replayed the log; views are caught up"
        );
    }
}

/// Progress as log lines, at most one a second.
pub struct LogProgress {
    total: u64,
    last: Instant,
}

impl LogProgress {
    pub fn new() -> Self {
        LogProgress {
            total: 0,
            last: Instant::now(),
        }
    }
}

impl Default for LogProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for LogProgress {
    fn start(&mut self, total: u64) {
        self.total = total;
        tracing::info!(total_records = total, "replaying the log");
    }

    fn advance(&mut self, done: u64) {
        if self.last.elapsed() >= Duration::from_secs(1) {
            self.last = Instant::now();
            tracing::info!(
                records = done,
                total_records = self.total,
                "replaying the log"
            );
        }
    }

    fn finish(&mut self, done: u64, elapsed: Duration) {
        tracing::info!(
            records = done,
            elapsed_ms = elapsed.as_millis() as u64,
            "replayed the log; views are caught up"
        );
    }
}
