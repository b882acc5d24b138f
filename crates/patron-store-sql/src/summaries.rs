//! Where runs of customers begin, for reading every customer on several connections at once.

use patron_domain::CustomerId;
use patron_store::{StoreError, StoreResult};

use crate::bounds::shared_impl;

shared_impl! {
    /// See `Store::customer_id_cuts`: a count, then one lookup by position per cut, each from the
    /// one before.
    pub async fn customer_id_cuts(b: &B, parts: usize) -> StoreResult<Vec<CustomerId>> {
        if parts < 2 {
            return Ok(Vec::new());
        }
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM customers")
            .fetch_one(b.reader()?)
            .await
            .map_err(B::db_err)?;
        let parts = i64::try_from(parts).unwrap_or(i64::MAX);
        let mut cuts: Vec<CustomerId> = Vec::new();
        // Where the last lookup ended: each lookup walks on from the previous cut, so the cuts
        // together pass over the ids once.
        let mut walked = 0;
        for k in 1..parts {
            // The last id of run k: the (count × k / parts)-th in id order.
            let position = count.saturating_mul(k) / parts;
            if position <= walked {
                continue;
            }
            let after = cuts.last().map_or("", CustomerId::as_str);
            let id: Option<(String,)> = sqlx::query_as(
                "SELECT customer_id FROM customers WHERE customer_id > $1 \
                 ORDER BY customer_id LIMIT 1 OFFSET $2",
            )
            .bind(after)
            .bind(position - walked - 1)
            .fetch_optional(b.reader()?)
            .await
            .map_err(B::db_err)?;
            let Some((id,)) = id else { break };
            let id = CustomerId::parse(id)
                .map_err(|e| StoreError::Internal(format!("stored customer id: {e}")))?;
            cuts.push(id);
            walked = position;
        }
        Ok(cuts)
    }
}
