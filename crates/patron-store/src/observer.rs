//! Change notification: services that keep in-memory views of customer summaries (scoring,
//! segmentation) learn which customers a committed write changed.

use async_trait::async_trait;
use patron_domain::{CustomerId, Event};

/// Told, after a write has committed and before the write's caller is answered, which customers
/// it changed (events recorded, profile upserted, or erased). Implementations refresh their
/// views, so a caller that reads after its write sees it.
#[async_trait]
pub trait ChangeObserver: Send + Sync + std::fmt::Debug {
    async fn customers_changed(&self, customers: &[CustomerId]);

    /// Told every event of a committed batch — new ones and duplicates alike — after
    /// [`ChangeObserver::customers_changed`]. Views that act on events (loyalty earning) must be
    /// idempotent per event: a client that retries a batch whose answer it never got (say, the
    /// server died between commit and answer) delivers the events again, and that is how such a
    /// view catches up.
    async fn events_committed(&self, _events: &[Event]) {}
}
