//! Rewards: create, read, list, update.

use patron_domain::Violations;
use patron_grpc::{ApiError, ApiResult, PageToken, page_size};
use patron_proto::loyalty::v1 as pb;
use patron_store::StoreError;
use patron_store::loyalty::RewardRecord;
use tonic::Request;

use super::{LoyaltyApi, encode, id_field, parse_reward, program_not_found, reward_not_found};
use crate::convert::{self, check_id};

impl LoyaltyApi {
    pub(super) async fn create_reward(
        &self,
        request: Request<pb::CreateRewardRequest>,
    ) -> ApiResult<pb::CreateRewardResponse> {
        let Some(r) = request.into_inner().reward else {
            return Err(ApiError::required("reward"));
        };
        let mut v = Violations::new();
        if let Err(m) = check_id(&r.reward_id) {
            v.add("reward.reward_id", m);
        }
        if let Err(m) = check_id(&r.program_id) {
            v.add("reward.program_id", m);
        }
        let (def, stock) = convert::reward_from_proto(&r, self.currency, &mut v);
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let (_, program) = self.program(&r.program_id).await?;
        let tiers: Vec<String> = program.tiers.iter().map(|t| t.name.clone()).collect();
        def.validate("reward", &tiers, &mut v);
        if let Some(s) = &def.required_segment
            && !self.segments.segment_exists(s)
        {
            v.add(
                "reward.required_segment",
                format!("no segment {}", patron_domain::quote(s)),
            );
        }
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let now = patron_grpc::time::now();
        let record = RewardRecord {
            reward_id: r.reward_id.clone(),
            program_id: r.program_id.clone(),
            body: encode(&def)?,
            required_segment: def.required_segment.clone(),
            stock_remaining: stock,
            revision: 1,
            create_time: now,
            update_time: now,
        };
        let stored = self
            .store
            .create_reward(&record)
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists(_) => ApiError::Store(StoreError::AlreadyExists(
                    format!("reward {:?} already exists", r.reward_id),
                )),
                StoreError::MissingDependency(_) => program_not_found(&r.program_id),
                e => ApiError::Store(e),
            })?;
        Ok(pb::CreateRewardResponse {
            reward: Some(convert::reward_to_proto(&stored, &def, self.currency)),
        })
    }

    pub(super) async fn get_reward(
        &self,
        request: Request<pb::GetRewardRequest>,
    ) -> ApiResult<pb::GetRewardResponse> {
        let id = request.into_inner().reward_id;
        id_field(&id, "reward_id")?;
        let record = self
            .store
            .get_reward(&id)
            .await?
            .ok_or_else(|| reward_not_found(&id))?;
        let def = parse_reward(&record)?;
        Ok(pb::GetRewardResponse {
            reward: Some(convert::reward_to_proto(&record, &def, self.currency)),
        })
    }

    pub(super) async fn list_rewards(
        &self,
        request: Request<pb::ListRewardsRequest>,
    ) -> ApiResult<pb::ListRewardsResponse> {
        let pb::ListRewardsRequest {
            program_id,
            page_size: size,
            page_token,
        } = request.into_inner();
        id_field(&program_id, "program_id")?;
        let size = page_size(size)?;
        let scope = format!("ListRewards/{program_id}");
        let after = PageToken::decode(&page_token, &scope, 1)?.map(|t| t.position[0].clone());
        self.program(&program_id).await?;
        let mut records = self
            .store
            .list_rewards(&program_id, after.as_deref(), size + 1)
            .await?;
        let more = records.len() > size;
        records.truncate(size);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => PageToken::encode(&scope, &[&last.reward_id]),
            _ => String::new(),
        };
        let rewards = records
            .iter()
            .map(|r| parse_reward(r).map(|d| convert::reward_to_proto(r, &d, self.currency)))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(pb::ListRewardsResponse {
            rewards,
            next_page_token,
        })
    }

    pub(super) async fn update_reward(
        &self,
        request: Request<pb::UpdateRewardRequest>,
    ) -> ApiResult<pb::UpdateRewardResponse> {
        let pb::UpdateRewardRequest {
            reward,
            update_mask,
            expected_revision,
        } = request.into_inner();
        let Some(r) = reward else {
            return Err(ApiError::required("reward"));
        };
        id_field(&r.reward_id, "reward.reward_id")?;
        let current_record = self
            .store
            .get_reward(&r.reward_id)
            .await?
            .ok_or_else(|| reward_not_found(&r.reward_id))?;
        let current = parse_reward(&current_record)?;
        let mut v = Violations::new();
        let (given, stock) = convert::reward_from_proto(&r, self.currency, &mut v);
        let paths: Vec<String> = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut next = if paths.is_empty() {
            given.clone()
        } else {
            current.clone()
        };
        let mut new_stock: Option<Option<i64>> = paths.is_empty().then_some(stock);
        for (i, path) in paths.iter().enumerate() {
            match path.as_str() {
                "display_name" => next.display_name = given.display_name.clone(),
                "description" => next.description = given.description.clone(),
                "cost" => next.cost = given.cost,
                "min_tier" => next.min_tier = given.min_tier.clone(),
                "required_segment" => next.required_segment = given.required_segment.clone(),
                "min_tenure_days" => next.min_tenure_days = given.min_tenure_days,
                "min_lifetime_spend" => next.min_lifetime_spend = given.min_lifetime_spend,
                "per_customer_limit" => next.per_customer_limit = given.per_customer_limit,
                "stock" => new_stock = Some(stock),
                "active_from" => next.active_from = given.active_from,
                "active_until" => next.active_until = given.active_until,
                other => v.add(
                    format!("update_mask.paths[{i}]"),
                    format!("{} is not an updatable field", patron_domain::quote(other)),
                ),
            }
        }
        let (_, program) = self.program(&current_record.program_id).await?;
        let tiers: Vec<String> = program.tiers.iter().map(|t| t.name.clone()).collect();
        next.validate("reward", &tiers, &mut v);
        if let Some(s) = &next.required_segment
            && !self.segments.segment_exists(s)
        {
            v.add(
                "reward.required_segment",
                format!("no segment {}", patron_domain::quote(s)),
            );
        }
        if expected_revision < 0 {
            v.add("expected_revision", "must not be negative");
        }
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let stored = self
            .store
            .update_reward(
                &r.reward_id,
                &encode(&next)?,
                next.required_segment.as_deref(),
                new_stock,
                patron_grpc::time::now(),
                (expected_revision > 0).then_some(expected_revision),
            )
            .await?
            .ok_or_else(|| reward_not_found(&r.reward_id))?;
        Ok(pb::UpdateRewardResponse {
            reward: Some(convert::reward_to_proto(&stored, &next, self.currency)),
        })
    }
}
