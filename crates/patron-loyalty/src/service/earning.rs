//! Earning: points from committed events, for the earner (`crate::earner`).

use std::collections::BTreeMap;

use patron_domain::loyalty::program::ProgramDef;
use patron_domain::{CustomerId, Event};
use patron_store::StoreError;
use patron_store::loyalty::{MutateOutcome, Refusal};

use super::LoyaltyApi;
use crate::ops;

impl LoyaltyApi {
    /// Applies committed events to every program each customer takes part in. Idempotent per
    /// (program, customer, event).
    pub async fn earn(&self, events: &[Event]) -> Result<(), StoreError> {
        // The view's programs, not a re-read of the store per batch: one program that does not
        // parse (logged by the view) must not stop earning in the others.
        let programs = self.view.programs();
        if programs.is_empty() {
            return Ok(());
        }
        let mut by_customer: BTreeMap<&CustomerId, Vec<&Event>> = BTreeMap::new();
        for e in events {
            if programs.iter().any(|(_, def)| ops::Earn::relevant(def, e)) {
                by_customer.entry(&e.customer_id).or_default().push(e);
            }
        }
        for (customer, mut evs) in by_customer {
            evs.sort_by_key(|e| (e.occurred_at, e.event_id.as_str().to_owned()));
            let enrolled = self.store.member_programs(customer).await?;
            let Some(row) = self.engine.get(customer) else {
                continue;
            };
            let tenure_start = row.since().day();
            for (program_id, def) in &programs {
                let def: &ProgramDef = def;
                let member = enrolled.contains(program_id);
                let may_enroll = !member
                    && def.auto_enroll
                    && def
                        .target_segment
                        .as_deref()
                        .is_none_or(|s| self.segments.is_member(s, customer).unwrap_or(false));
                if !member && !may_enroll {
                    continue;
                }
                for e in &evs {
                    if !ops::Earn::relevant(def, e) {
                        continue;
                    }
                    let op = ops::Earn {
                        def,
                        event: e,
                        may_enroll,
                        tenure_start,
                    };
                    let now = patron_grpc::time::now();
                    match self.apply(program_id, customer, now, &op).await? {
                        MutateOutcome::Applied { .. } => {}
                        MutateOutcome::Refused(Refusal::NotEnrolled) => {}
                        other => {
                            tracing::warn!(?other, program = %program_id, "loyalty: event not applied")
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
