//! The LoyaltyService: the service state and what its handlers share (here), the handlers by
//! concern (`programs`, `rewards`, `members`, `redemptions`), earning from committed events
//! (`earning`, driven by [`crate::earner`]) and the expiry task (`expiry`). The `LoyaltyService`
//! impl at the end is a dispatcher: one line per RPC.

mod earning;
mod expiry;
mod members;
mod programs;
mod redemptions;
mod rewards;

pub use expiry::SettleRun;

use std::sync::Arc;
use std::time::Duration;

use patron_domain::loyalty::program::ProgramDef;
use patron_domain::loyalty::reward::RewardDef;
use patron_domain::{Currency, CustomerId, Timestamp, Violations};
use patron_grpc::{ApiError, ApiResult, Reason, Respond};
use patron_proto::loyalty::v1 as pb;
use patron_proto::loyalty::v1::loyalty_service_server::LoyaltyService;
use patron_segmentation::SegmentationApi;
use patron_store::loyalty::{MemberOp, MutateOutcome, ProgramRecord, Refusal, RewardRecord};
use patron_store::{Store, StoreError};
use patron_views::engine::Engine;
use tonic::{Request, Response, Status};

use crate::convert::{self, check_id};
use crate::ops::{EXPIRING_HORIZON_DAYS, MemberContext};
use crate::view::LoyaltyView;

/// Most reward ids one CheckEligibility call may name.
pub const MAX_ELIGIBILITY_IDS: usize = 1_000;
/// Longest request id, reason and issuer.
pub const MAX_REQUEST_ID: usize = 128;
pub const MAX_REASON: usize = 500;
/// Largest manual adjustment either way.
pub const MAX_ADJUST: i64 = 1_000_000_000;

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often the expiry task runs.
    pub expiry_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            expiry_interval: Duration::from_secs(60),
        }
    }
}

/// The LoyaltyService implementation.
#[derive(Debug, Clone)]
pub struct LoyaltyApi {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    segments: SegmentationApi,
    currency: Currency,
    settings: Settings,
    view: Arc<LoyaltyView>,
}

fn program_not_found(id: &str) -> ApiError {
    ApiError::not_found(Reason::ProgramNotFound, "program", id)
}

fn reward_not_found(id: &str) -> ApiError {
    ApiError::not_found(Reason::RewardNotFound, "reward", id)
}

fn parse_program(record: &ProgramRecord) -> ApiResult<ProgramDef> {
    serde_json::from_str(&record.body)
        .map_err(|e| ApiError::internal(format!("stored program {}: {e}", record.program_id)))
}

fn parse_reward(record: &RewardRecord) -> ApiResult<RewardDef> {
    serde_json::from_str(&record.body)
        .map_err(|e| ApiError::internal(format!("stored reward {}: {e}", record.reward_id)))
}

fn encode<T: serde::Serialize>(v: &T) -> ApiResult<String> {
    serde_json::to_string(v).map_err(|e| ApiError::internal(format!("encode: {e}")))
}

fn id_field(id: &str, field: &str) -> ApiResult<()> {
    check_id(id).map_err(|m| ApiError::invalid_field(Reason::InvalidField, field, m))
}

fn refusal(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::NotEnrolled => ApiError::FailedPrecondition {
            reason: Reason::NotEnrolled,
            message: "the customer is not a member of the program; enrol first".into(),
        },
        Refusal::RequestIdReused => ApiError::FailedPrecondition {
            reason: Reason::RequestIdReused,
            message: "this request_id was used for a different request; use a new request_id"
                .into(),
        },
        Refusal::InsufficientPoints => ApiError::FailedPrecondition {
            reason: Reason::InsufficientPoints,
            message: "not enough available points; nothing was changed".into(),
        },
        Refusal::RedemptionNotFound => {
            ApiError::not_found(Reason::RedemptionNotFound, "redemption", "")
        }
        Refusal::RewardNotFound => reward_not_found(""),
        Refusal::Overflow => ApiError::Store(StoreError::Overflow("points".into())),
        Refusal::NotEligible(unmet) => {
            let reasons: Vec<&str> = unmet.iter().map(|u| u.reason.name()).collect();
            let details: Vec<String> = unmet
                .iter()
                .map(|u| format!("{}: {}", u.reason.name(), u.detail))
                .collect();
            ApiError::Refused {
                reason: Reason::NotEligible,
                message: format!("not eligible: {}; nothing was changed", details.join("; ")),
                metadata: vec![("reasons".into(), reasons.join(","))],
            }
        }
        Refusal::Internal(detail) => ApiError::internal(format!("refused: {detail}")),
    }
}

impl LoyaltyApi {
    /// Loads the in-memory view of programs and members and hands it to the segmentation
    /// service for `loyalty.*` rules.
    pub async fn load(
        store: Arc<dyn Store>,
        engine: Arc<Engine>,
        segments: SegmentationApi,
        currency: Currency,
        settings: Settings,
    ) -> Result<Self, StoreError> {
        let view = Arc::new(LoyaltyView::load(Arc::clone(&store), Arc::clone(&engine)).await?);
        segments
            .set_loyalty(Arc::clone(&view) as Arc<dyn patron_segmentation::rules::LoyaltyFacts>);
        Ok(Self {
            store,
            engine,
            segments,
            currency,
            settings,
            view,
        })
    }

    /// Runs an operation under the member's lock.
    async fn apply(
        &self,
        program_id: &str,
        customer: &CustomerId,
        now: Timestamp,
        op: &dyn MemberOp,
    ) -> Result<MutateOutcome, StoreError> {
        let outcome = self
            .store
            .mutate_member(program_id, customer, now, op)
            .await?;
        count_entries(&outcome);
        // The view learns of the change from the change feed, like every other process's.
        Ok(outcome)
    }

    async fn program(&self, id: &str) -> ApiResult<(ProgramRecord, ProgramDef)> {
        let record = self
            .store
            .get_program(id)
            .await?
            .ok_or_else(|| program_not_found(id))?;
        let def = parse_program(&record)?;
        Ok((record, def))
    }

    async fn customer_context(
        &self,
        customer: &CustomerId,
        segment: Option<&str>,
    ) -> ApiResult<MemberContext> {
        // Read through: a customer created through another server process is loaded on demand.
        let row = self.engine.get_or_load(customer).await?.ok_or_else(|| {
            ApiError::not_found(Reason::CustomerNotFound, "customer", customer.as_str())
        })?;
        let since = row.since();
        let now = patron_grpc::time::now();
        Ok(MemberContext {
            tenure_start: since.day(),
            tenure_days: ((now.as_micros() - since.as_micros()) / 86_400_000_000).max(0),
            lifetime_spend: row.summary.purchases.net_revenue,
            in_segment: segment.map(|s| self.segments.is_member(s, customer).unwrap_or(false)),
        })
    }

    async fn mutate(
        &self,
        program_id: &str,
        customer: &CustomerId,
        now: Timestamp,
        op: &dyn MemberOp,
    ) -> ApiResult<MutateOutcome> {
        Ok(self.apply(program_id, customer, now, op).await?)
    }

    async fn balances_now(
        &self,
        program_id: &str,
        customer: &CustomerId,
    ) -> ApiResult<pb::Balances> {
        let member = self
            .store
            .get_member(program_id, customer)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(Reason::MemberNotFound, "member", customer.as_str())
            })?;
        Ok(convert::balances_to_proto(
            &member
                .wallet
                .balances(patron_grpc::time::now(), EXPIRING_HORIZON_DAYS),
        ))
    }

    /// The in-memory view behind `loyalty.*` rules, kept current by the change feed.
    pub fn view(&self) -> Arc<LoyaltyView> {
        Arc::clone(&self.view)
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// The authenticated caller as ledger entries name it (`api-key:NAME`, `jwt:SUB`, `cert:NAME`);
/// `None` when authentication is off.
fn principal<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<Arc<patron_grpc::auth::Principal>>()
        .map(|p| p.audit_name())
}

fn parse_customer(s: &str) -> ApiResult<CustomerId> {
    patron_grpc::parse_customer_id(s, "customer_id")
}

fn text_field(v: &mut Violations, field: &str, s: &str, min: usize, max: usize) {
    let n = s.chars().count();
    if n < min || n > max {
        v.add(field, format!("must be {min} to {max} characters"));
    }
}

/// A thin dispatcher: each RPC is a handler in the module of its concern (`programs`, `rewards`,
/// `members`, `redemptions`), which returns an [`ApiResult`]; it becomes a `Status` here, once,
/// in [`Respond::respond`].
#[tonic::async_trait]
impl LoyaltyService for LoyaltyApi {
    async fn create_program(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> Result<Response<pb::CreateProgramResponse>, Status> {
        self.create_program(request).await.respond()
    }

    async fn get_program(
        &self,
        request: Request<pb::GetProgramRequest>,
    ) -> Result<Response<pb::GetProgramResponse>, Status> {
        self.get_program(request).await.respond()
    }

    async fn list_programs(
        &self,
        request: Request<pb::ListProgramsRequest>,
    ) -> Result<Response<pb::ListProgramsResponse>, Status> {
        self.list_programs(request).await.respond()
    }

    async fn update_program(
        &self,
        request: Request<pb::UpdateProgramRequest>,
    ) -> Result<Response<pb::UpdateProgramResponse>, Status> {
        self.update_program(request).await.respond()
    }

    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        self.enroll(request).await.respond()
    }

    async fn get_membership(
        &self,
        request: Request<pb::GetMembershipRequest>,
    ) -> Result<Response<pb::GetMembershipResponse>, Status> {
        self.get_membership(request).await.respond()
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> Result<Response<pb::ListLedgerEntriesResponse>, Status> {
        self.list_ledger_entries(request).await.respond()
    }

    async fn adjust_points(
        &self,
        request: Request<pb::AdjustPointsRequest>,
    ) -> Result<Response<pb::AdjustPointsResponse>, Status> {
        self.adjust_points(request).await.respond()
    }

    async fn create_reward(
        &self,
        request: Request<pb::CreateRewardRequest>,
    ) -> Result<Response<pb::CreateRewardResponse>, Status> {
        self.create_reward(request).await.respond()
    }

    async fn get_reward(
        &self,
        request: Request<pb::GetRewardRequest>,
    ) -> Result<Response<pb::GetRewardResponse>, Status> {
        self.get_reward(request).await.respond()
    }

    async fn list_rewards(
        &self,
        request: Request<pb::ListRewardsRequest>,
    ) -> Result<Response<pb::ListRewardsResponse>, Status> {
        self.list_rewards(request).await.respond()
    }

    async fn update_reward(
        &self,
        request: Request<pb::UpdateRewardRequest>,
    ) -> Result<Response<pb::UpdateRewardResponse>, Status> {
        self.update_reward(request).await.respond()
    }

    async fn check_eligibility(
        &self,
        request: Request<pb::CheckEligibilityRequest>,
    ) -> Result<Response<pb::CheckEligibilityResponse>, Status> {
        self.check_eligibility(request).await.respond()
    }

    async fn redeem_reward(
        &self,
        request: Request<pb::RedeemRewardRequest>,
    ) -> Result<Response<pb::RedeemRewardResponse>, Status> {
        self.redeem_reward(request).await.respond()
    }

    async fn cancel_redemption(
        &self,
        request: Request<pb::CancelRedemptionRequest>,
    ) -> Result<Response<pb::CancelRedemptionResponse>, Status> {
        self.cancel_redemption(request).await.respond()
    }
}

/// Counts written ledger entries and the points they moved, by kind:
/// `patron_loyalty_entries_total{kind}` and `patron_loyalty_points_total{kind}` (`EARN` and
/// `PENDING` are points issued, `REDEEM` points spent on rewards).
fn count_entries(outcome: &MutateOutcome) {
    let MutateOutcome::Applied { changes, .. } = outcome else {
        return;
    };
    let Some(member) = &changes.member else {
        return;
    };
    for e in &member.wallet.new_entries {
        let kind = e.kind.name();
        metrics::counter!("patron_loyalty_entries_total", "kind" => kind).increment(1);
        metrics::counter!("patron_loyalty_points_total", "kind" => kind)
            .increment(u64::try_from(e.points).unwrap_or(0));
    }
}
