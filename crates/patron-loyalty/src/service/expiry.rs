//! The expiry task: expiring and activating lots that are due, member by member.

use patron_domain::{CustomerId, Timestamp};
use patron_store::StoreError;

use super::LoyaltyApi;
use crate::ops;

/// What one expiry run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SettleRun {
    /// Members settled (whether or not anything was due to change).
    pub settled: usize,
    /// Members whose settlement failed; they are tried again on the next run.
    pub failed: usize,
}

impl LoyaltyApi {
    /// Expires and activates lots due by `now`, for every member, each member once: a member
    /// whose settlement fails is logged and counted, and the run goes on past it.
    pub async fn settle_due(&self, now: Timestamp) -> Result<SettleRun, StoreError> {
        const PAGE: usize = 500;
        let mut run = SettleRun::default();
        let mut after: Option<(String, CustomerId)> = None;
        loop {
            let due = self
                .store
                .members_to_settle(now, after.as_ref().map(|(p, c)| (p.as_str(), c)), PAGE)
                .await?;
            for (program, customer) in &due {
                match self.apply(program, customer, now, &ops::Settle).await {
                    Ok(_) => run.settled += 1,
                    Err(e) => {
                        run.failed += 1;
                        metrics::counter!("patron_loyalty_settle_failures_total").increment(1);
                        tracing::warn!(error = %e, program = %program, customer = %customer,
                            "loyalty: could not settle a member; going on with the others");
                    }
                }
            }
            if due.len() < PAGE {
                return Ok(run);
            }
            after = due.last().cloned();
        }
    }

    /// Runs [`LoyaltyApi::settle_due`] every `expiry_interval` until aborted.
    pub fn spawn_expiry(&self) -> tokio::task::JoinHandle<()> {
        let api = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(api.settings.expiry_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match api.settle_due(patron_grpc::time::now()).await {
                    Ok(SettleRun {
                        settled: 0,
                        failed: 0,
                    }) => {}
                    Ok(run) => tracing::info!(
                        members = run.settled,
                        failed = run.failed,
                        "loyalty: expired and activated points"
                    ),
                    Err(e) => tracing::warn!(error = %e, "loyalty: expiry run failed"),
                }
            }
        })
    }
}
