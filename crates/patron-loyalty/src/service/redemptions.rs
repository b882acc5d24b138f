//! Eligibility and redemptions: CheckEligibility, RedeemReward, CancelRedemption.

use std::collections::HashMap;

use patron_domain::Violations;
use patron_grpc::time::to_proto;
use patron_grpc::{ApiError, ApiResult, Reason};
use patron_proto::loyalty::v1 as pb;
use patron_store::loyalty::{MutateOutcome, RedemptionRecord, Refusal, RewardRecord};
use tonic::Request;

use super::{
    LoyaltyApi, MAX_ELIGIBILITY_IDS, MAX_REASON, MAX_REQUEST_ID, id_field, parse_customer,
    parse_reward, principal, refusal, reward_not_found, text_field,
};
use crate::convert::{self, check_id};
use crate::ops::{self, MemberContext};

impl LoyaltyApi {
    pub(super) async fn check_eligibility(
        &self,
        request: Request<pb::CheckEligibilityRequest>,
    ) -> ApiResult<pb::CheckEligibilityResponse> {
        let pb::CheckEligibilityRequest {
            program_id,
            customer_id,
            reward_ids,
        } = request.into_inner();
        id_field(&program_id, "program_id")?;
        let customer = parse_customer(&customer_id)?;
        if reward_ids.len() > MAX_ELIGIBILITY_IDS {
            return Err(ApiError::invalid_field(
                Reason::BatchTooLarge,
                "reward_ids",
                format!("at most {MAX_ELIGIBILITY_IDS}"),
            ));
        }
        let mut v = Violations::new();
        for (i, id) in reward_ids.iter().enumerate() {
            if let Err(m) = check_id(id) {
                v.add(format!("reward_ids[{i}]"), m);
            }
        }
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let (_, def) = self.program(&program_id).await?;
        let records = self.rewards_to_check(&program_id, &reward_ids).await?;
        let member = self.store.get_member(&program_id, &customer).await?;
        // A read: counted in one statement, without the member's lock.
        let redeemed = match &member {
            Some(_) => {
                self.store
                    .completed_redemptions(&program_id, &customer)
                    .await?
            }
            None => HashMap::new(),
        };
        let now = patron_grpc::time::now();
        let tier_names: Vec<String> = def.tiers.iter().map(|t| t.name.clone()).collect();
        // One context per distinct required segment, not per reward.
        let mut contexts: HashMap<Option<String>, MemberContext> = HashMap::new();
        let mut results = Vec::with_capacity(records.len());
        for record in &records {
            let reward = parse_reward(record)?;
            let ctx = match contexts.entry(reward.required_segment.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let ctx = self
                        .customer_context(&customer, reward.required_segment.as_deref())
                        .await?;
                    e.insert(ctx)
                }
            };
            let redemptions = redeemed.get(&record.reward_id).copied().unwrap_or(0);
            let facts = ops::eligibility_facts(
                &def,
                &tier_names,
                member.as_ref(),
                ctx,
                redemptions,
                record.stock_remaining,
                now,
            );
            let unmet = patron_domain::loyalty::reward::check(&reward, &facts);
            results.push(pb::RewardEligibility {
                reward_id: record.reward_id.clone(),
                status: if unmet.is_empty() {
                    pb::EligibilityStatus::Eligible
                } else {
                    pb::EligibilityStatus::Ineligible
                }
                .into(),
                unmet: unmet.iter().map(convert::unmet_to_proto).collect(),
            });
        }
        Ok(pb::CheckEligibilityResponse {
            results,
            evaluate_time: Some(to_proto(now)),
        })
    }

    /// The rewards CheckEligibility looks at: the named ones (each must be of the program), or
    /// with none named every reward of the program, read a page at a time.
    async fn rewards_to_check(
        &self,
        program_id: &str,
        reward_ids: &[String],
    ) -> ApiResult<Vec<RewardRecord>> {
        if reward_ids.is_empty() {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .list_rewards(program_id, after.as_deref(), 500)
                    .await?;
                let done = page.len() < 500;
                after = page.last().map(|r| r.reward_id.clone());
                all.extend(page);
                if done {
                    break Ok(all);
                }
            }
        } else {
            let mut out = Vec::with_capacity(reward_ids.len());
            for id in reward_ids {
                let r = self
                    .store
                    .get_reward(id)
                    .await?
                    .filter(|r| r.program_id == program_id)
                    .ok_or_else(|| reward_not_found(id))?;
                out.push(r);
            }
            Ok(out)
        }
    }

    pub(super) async fn redeem_reward(
        &self,
        request: Request<pb::RedeemRewardRequest>,
    ) -> ApiResult<pb::RedeemRewardResponse> {
        let caller = principal(&request);
        let pb::RedeemRewardRequest {
            program_id,
            customer_id,
            reward_id,
            request_id,
        } = request.into_inner();
        let mut v = Violations::new();
        if let Err(m) = check_id(&program_id) {
            v.add("program_id", m);
        }
        if let Err(m) = check_id(&reward_id) {
            v.add("reward_id", m);
        }
        text_field(&mut v, "request_id", &request_id, 1, MAX_REQUEST_ID);
        if request_id.chars().any(char::is_control) {
            v.add("request_id", "must not hold control characters");
        }
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let customer = parse_customer(&customer_id)?;
        let (_, def) = self.program(&program_id).await?;
        let reward_record = self
            .store
            .get_reward(&reward_id)
            .await?
            .filter(|r| r.program_id == program_id)
            .ok_or_else(|| reward_not_found(&reward_id))?;
        let reward = parse_reward(&reward_record)?;
        let ctx = self
            .customer_context(&customer, reward.required_segment.as_deref())
            .await?;
        let op = ops::Redeem {
            def: &def,
            reward_id: &reward_id,
            request_id: &request_id,
            ctx,
            redemption_id: new_redemption_id(),
            issuer: caller.unwrap_or_else(|| "system".into()),
        };
        let now = patron_grpc::time::now();
        let outcome = self.mutate(&program_id, &customer, now, &op).await?;
        let (redemption, replayed): (RedemptionRecord, bool) = match outcome {
            MutateOutcome::Applied { loaded, changes } => {
                match (changes.redemption, loaded.redemption) {
                    (Some(r), _) => (r, false),
                    (None, Some(previous)) => (previous, true),
                    (None, None) => {
                        return Err(ApiError::internal("redemption without record"));
                    }
                }
            }
            MutateOutcome::OutOfStock => {
                return Err(ApiError::Refused {
                    reason: Reason::NotEligible,
                    message: "the reward is out of stock; nothing was changed".into(),
                    metadata: vec![("reasons".into(), "OUT_OF_STOCK".into())],
                });
            }
            MutateOutcome::Refused(r) => return Err(refusal(r)),
        };
        let balances = self.balances_now(&program_id, &customer).await?;
        Ok(pb::RedeemRewardResponse {
            redemption: Some(convert::redemption_to_proto(
                &program_id,
                &customer_id,
                &redemption,
            )),
            replayed,
            balances: Some(balances),
        })
    }

    pub(super) async fn cancel_redemption(
        &self,
        request: Request<pb::CancelRedemptionRequest>,
    ) -> ApiResult<pb::CancelRedemptionResponse> {
        let caller = principal(&request).unwrap_or_else(|| "system".into());
        let pb::CancelRedemptionRequest {
            program_id,
            customer_id,
            redemption_id,
            reason,
        } = request.into_inner();
        let mut v = Violations::new();
        if let Err(m) = check_id(&program_id) {
            v.add("program_id", m);
        }
        text_field(&mut v, "redemption_id", &redemption_id, 1, MAX_REQUEST_ID);
        text_field(&mut v, "reason", &reason, 0, MAX_REASON);
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let customer = parse_customer(&customer_id)?;
        self.program(&program_id).await?;
        let existing = self
            .store
            .get_redemption(&program_id, &customer, &redemption_id)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(Reason::RedemptionNotFound, "redemption", &redemption_id)
            })?;
        let op = ops::Cancel {
            redemption_id: &redemption_id,
            reward_id: &existing.reward_id,
            reason: &reason,
            issuer: &caller,
        };
        let now = patron_grpc::time::now();
        let redemption = match self.mutate(&program_id, &customer, now, &op).await? {
            MutateOutcome::Applied { loaded, changes } => {
                changes.redemption.or(loaded.redemption).ok_or_else(|| {
                    ApiError::not_found(Reason::RedemptionNotFound, "redemption", &redemption_id)
                })?
            }
            MutateOutcome::Refused(Refusal::RedemptionNotFound) => {
                return Err(ApiError::not_found(
                    Reason::RedemptionNotFound,
                    "redemption",
                    &redemption_id,
                ));
            }
            MutateOutcome::Refused(r) => return Err(refusal(r)),
            MutateOutcome::OutOfStock => {
                return Err(ApiError::internal("stock in cancel"));
            }
        };
        let balances = self.balances_now(&program_id, &customer).await?;
        Ok(pb::CancelRedemptionResponse {
            redemption: Some(convert::redemption_to_proto(
                &program_id,
                &customer_id,
                &redemption,
            )),
            balances: Some(balances),
        })
    }
}

/// A new redemption id: "rdm-" and 24 random hex digits.
fn new_redemption_id() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    format!("rdm-{:024x}", rng.r#gen::<u128>() >> 32)
}
