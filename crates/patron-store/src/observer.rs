//! Change notification: services that keep in-memory views of customer summaries (scoring,
//! segmentation) learn which customers a committed write changed.

use async_trait::async_trait;
use patron_domain::CustomerId;

/// Told, after a write has committed and before the write's caller is answered, which customers
/// it changed (events recorded, profile upserted, or erased). Implementations refresh their
/// views, so a caller that reads after its write sees it.
#[async_trait]
pub trait ChangeObserver: Send + Sync + std::fmt::Debug {
    async fn customers_changed(&self, customers: &[CustomerId]);
}
