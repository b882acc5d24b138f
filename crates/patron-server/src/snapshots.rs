//! Keeps the index snapshot (`--index-snapshot`) written: after a start that read the database,
//! every `--index-snapshot-secs` while the change feed moves, and once more at shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use patron_feed::Feed;
use patron_views::engine::Engine;

/// The snapshot file of this process and the feed position it was last written at.
#[derive(Debug)]
pub struct IndexSnapshots {
    path: PathBuf,
    engine: Arc<Engine>,
    feed: Arc<Feed>,
    /// The position of the file on disk, if this process knows it; one write at a time.
    written: tokio::sync::Mutex<Option<i64>>,
}

impl IndexSnapshots {
    /// `written`: the position of the snapshot the index was read from, if it was. Deletes what
    /// an earlier process left of a write it did not finish.
    pub fn new(path: PathBuf, engine: Arc<Engine>, feed: Arc<Feed>, written: Option<i64>) -> Self {
        let removed = patron_views::snapshot::remove_abandoned_writes(&path);
        if removed > 0 {
            tracing::info!(path = %path.display(), removed, "unfinished index snapshot writes removed");
        }
        Self {
            path,
            engine,
            feed,
            written: tokio::sync::Mutex::new(written),
        }
    }

    /// Writes the snapshot if the applied feed position moved since the last write. A failed
    /// write is logged and tried again next time; serving goes on either way.
    pub async fn write_if_moved(&self) {
        let mut written = self.written.lock().await;
        // Read before the rows: the rows then hold at least everything up to it.
        let position = self.feed.applied();
        if *written == Some(position) {
            return;
        }
        let started = std::time::Instant::now();
        match self
            .engine
            .write_snapshot(&self.path, self.feed.database_id(), position)
            .await
        {
            Ok(header) => {
                *written = Some(position);
                tracing::info!(
                    path = %self.path.display(),
                    position,
                    customers = header.rows,
                    bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "index snapshot written"
                );
            }
            Err(e) => tracing::warn!(error = %e, "index snapshot not written"),
        }
    }

    /// Writes now if the index was not read from a snapshot, then every `interval`.
    pub fn spawn(self: Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.write_if_moved().await;
                tokio::time::sleep(interval).await;
            }
        })
    }
}
