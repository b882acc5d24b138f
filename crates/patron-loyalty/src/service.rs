//! The LoyaltyService handlers, the earner (points from recorded events) and the expiry task.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use patron_domain::loyalty::program::ProgramDef;
use patron_domain::loyalty::reward::RewardDef;
use patron_domain::loyalty::tier;
use patron_domain::{Currency, CustomerId, Day, Event, EventId, Timestamp, Violations};
use patron_grpc::time::to_proto;
use patron_grpc::{ApiError, ApiResult, PageToken, Reason, Respond, page_size};
use patron_proto::loyalty::v1 as pb;
use patron_proto::loyalty::v1::loyalty_service_server::LoyaltyService;
use patron_scoring::engine::Engine;
use patron_segmentation::SegmentationApi;
use patron_store::loyalty::{
    MemberOp, MemberRow, MutateOutcome, ProgramRecord, RedemptionRecord, Refusal, RewardRecord,
};
use patron_store::{Store, StoreError};
use tonic::{Request, Response, Status};

use crate::convert::{self, check_id};
use crate::ops::{self, EXPIRING_HORIZON_DAYS, MemberContext};
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

/// What one expiry run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SettleRun {
    /// Members settled (whether or not anything was due to change).
    pub settled: usize,
    /// Members whose settlement failed; they are tried again on the next run.
    pub failed: usize,
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

    fn membership(
        &self,
        program_id: &str,
        customer: &CustomerId,
        def: &ProgramDef,
        member: &MemberRow,
        tenure_start: Day,
        now: Timestamp,
    ) -> pb::Membership {
        let status = tier::evaluate(def, &member.activity, tenure_start, now.day());
        pb::Membership {
            program_id: program_id.to_owned(),
            customer_id: customer.as_str().to_owned(),
            enroll_time: Some(to_proto(member.enrolled_at)),
            tier: Some(convert::tier_to_proto(def, &status)),
            balances: Some(convert::balances_to_proto(
                &member.wallet.balances(now, EXPIRING_HORIZON_DAYS),
            )),
        }
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

/// The handlers, one per RPC: each returns an [`ApiResult`], which the `LoyaltyService` impl
/// below converts to a `Status` once, in [`Respond::respond`].
impl LoyaltyApi {
    async fn create_program(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> ApiResult<pb::CreateProgramResponse> {
        let Some(p) = request.into_inner().program else {
            return Err(ApiError::invalid_field(
                Reason::InvalidField,
                "program",
                "is required",
            ));
        };
        let mut v = Violations::new();
        if let Err(m) = check_id(&p.program_id) {
            v.add("program.program_id", m);
        }
        let def = convert::program_from_proto(&p, self.currency, &mut v);
        def.validate("program", &mut v);
        if let Some(s) = &def.target_segment
            && !self.segments.segment_exists(s)
        {
            v.add(
                "program.target_segment",
                format!("no segment {}", patron_domain::quote(s)),
            );
        }
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let now = patron_grpc::time::now();
        let record = ProgramRecord {
            program_id: p.program_id.clone(),
            body: encode(&def)?,
            target_segment: def.target_segment.clone(),
            revision: 1,
            create_time: now,
            update_time: now,
        };
        let stored = self
            .store
            .create_program(&record)
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists(_) => ApiError::Store(StoreError::AlreadyExists(
                    format!("program {:?} already exists", p.program_id),
                )),
                e => ApiError::Store(e),
            })?;
        Ok(pb::CreateProgramResponse {
            program: Some(convert::program_to_proto(&stored, &def)),
        })
    }

    async fn get_program(
        &self,
        request: Request<pb::GetProgramRequest>,
    ) -> ApiResult<pb::GetProgramResponse> {
        let id = request.into_inner().program_id;
        id_field(&id, "program_id")?;
        let (record, def) = self.program(&id).await?;
        Ok(pb::GetProgramResponse {
            program: Some(convert::program_to_proto(&record, &def)),
        })
    }

    async fn list_programs(
        &self,
        request: Request<pb::ListProgramsRequest>,
    ) -> ApiResult<pb::ListProgramsResponse> {
        let pb::ListProgramsRequest {
            page_size: size,
            page_token,
        } = request.into_inner();
        let size = page_size(size)?;
        let after =
            PageToken::decode(&page_token, "ListPrograms", 1)?.map(|t| t.position[0].clone());
        let mut records = self.store.list_programs(after.as_deref(), size + 1).await?;
        let more = records.len() > size;
        records.truncate(size);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => PageToken::encode("ListPrograms", &[&last.program_id]),
            _ => String::new(),
        };
        let programs = records
            .iter()
            .map(|r| parse_program(r).map(|d| convert::program_to_proto(r, &d)))
            .collect::<ApiResult<Vec<_>>>()?;
        Ok(pb::ListProgramsResponse {
            programs,
            next_page_token,
        })
    }

    async fn update_program(
        &self,
        request: Request<pb::UpdateProgramRequest>,
    ) -> ApiResult<pb::UpdateProgramResponse> {
        let pb::UpdateProgramRequest {
            program,
            update_mask,
            expected_revision,
        } = request.into_inner();
        let Some(p) = program else {
            return Err(ApiError::invalid_field(
                Reason::InvalidField,
                "program",
                "is required",
            ));
        };
        id_field(&p.program_id, "program.program_id")?;
        let (_, current) = self.program(&p.program_id).await?;
        let mut v = Violations::new();
        let given = convert::program_from_proto(&p, self.currency, &mut Violations::new());
        let paths: Vec<String> = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut next = if paths.is_empty() {
            convert::program_from_proto(&p, self.currency, &mut v)
        } else {
            current.clone()
        };
        for (i, path) in paths.iter().enumerate() {
            match path.as_str() {
                "display_name" => next.display_name = given.display_name.clone(),
                "earning" => {
                    next.points_per_unit = given.points_per_unit;
                    next.first_purchase_bonus = given.first_purchase_bonus;
                    next.event_bonuses = given.event_bonuses.clone();
                }
                "pending_days" => next.pending_days = given.pending_days,
                "expiry_days" => next.expiry = given.expiry,
                "tiers" => next.tiers = given.tiers.clone(),
                "tier_window_days" => next.tier_window_days = given.tier_window_days,
                "tier_grace_days" => next.tier_grace_days = given.tier_grace_days,
                "target_segment" => next.target_segment = given.target_segment.clone(),
                "auto_enroll" => next.auto_enroll = given.auto_enroll,
                other => v.add(
                    format!("update_mask.paths[{i}]"),
                    format!("{} is not an updatable field", patron_domain::quote(other)),
                ),
            }
        }
        if !paths.is_empty() {
            // Only the named fields were read from the request: check them as part of the whole.
            let mut fields = Violations::new();
            convert::program_from_proto(&p, self.currency, &mut fields);
            for f in fields.into_vec() {
                let top = f
                    .field
                    .trim_start_matches("program.")
                    .split(['.', '['])
                    .next()
                    .unwrap_or("");
                if paths.iter().any(|p| p == top) {
                    v.add(f.field, f.description);
                }
            }
        }
        next.validate("program", &mut v);
        if let Some(s) = &next.target_segment
            && !self.segments.segment_exists(s)
        {
            v.add(
                "program.target_segment",
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
            .update_program(
                &p.program_id,
                &encode(&next)?,
                next.target_segment.as_deref(),
                patron_grpc::time::now(),
                (expected_revision > 0).then_some(expected_revision),
            )
            .await?
            .ok_or_else(|| program_not_found(&p.program_id))?;
        Ok(pb::UpdateProgramResponse {
            program: Some(convert::program_to_proto(&stored, &next)),
        })
    }

    async fn enroll(&self, request: Request<pb::EnrollRequest>) -> ApiResult<pb::EnrollResponse> {
        let pb::EnrollRequest {
            program_id,
            customer_id,
        } = request.into_inner();
        id_field(&program_id, "program_id")?;
        let customer = parse_customer(&customer_id)?;
        let (_, def) = self.program(&program_id).await?;
        let ctx = self
            .customer_context(&customer, def.target_segment.as_deref())
            .await?;
        if ctx.in_segment == Some(false) {
            return Err(ApiError::FailedPrecondition {
                reason: Reason::NotInTargetSegment,
                message: format!(
                    "the program is for segment {:?}, which the customer is not in",
                    def.target_segment.as_deref().unwrap_or("")
                ),
            });
        }
        let now = patron_grpc::time::now();
        let outcome = self
            .mutate(&program_id, &customer, now, &ops::Enroll)
            .await?;
        let MutateOutcome::Applied { loaded, changes } = outcome else {
            return Err(ApiError::internal("enrolment refused"));
        };
        let created = changes.member.is_some();
        let member = changes
            .member
            .or(loaded.member)
            .ok_or_else(|| ApiError::internal("enrolment left no member"))?;
        Ok(pb::EnrollResponse {
            membership: Some(self.membership(
                &program_id,
                &customer,
                &def,
                &member,
                ctx.tenure_start,
                now,
            )),
            created,
        })
    }

    async fn get_membership(
        &self,
        request: Request<pb::GetMembershipRequest>,
    ) -> ApiResult<pb::GetMembershipResponse> {
        let pb::GetMembershipRequest {
            program_id,
            customer_id,
        } = request.into_inner();
        id_field(&program_id, "program_id")?;
        let customer = parse_customer(&customer_id)?;
        let (_, def) = self.program(&program_id).await?;
        let ctx = self.customer_context(&customer, None).await?;
        let member = self
            .store
            .get_member(&program_id, &customer)
            .await?
            .ok_or_else(|| {
                ApiError::not_found(Reason::MemberNotFound, "member", customer.as_str())
            })?;
        let now = patron_grpc::time::now();
        Ok(pb::GetMembershipResponse {
            membership: Some(self.membership(
                &program_id,
                &customer,
                &def,
                &member,
                ctx.tenure_start,
                now,
            )),
        })
    }

    async fn list_ledger_entries(
        &self,
        request: Request<pb::ListLedgerEntriesRequest>,
    ) -> ApiResult<pb::ListLedgerEntriesResponse> {
        let pb::ListLedgerEntriesRequest {
            program_id,
            customer_id,
            page_size: size,
            page_token,
        } = request.into_inner();
        id_field(&program_id, "program_id")?;
        let customer = parse_customer(&customer_id)?;
        let size = page_size(size)?;
        let scope = format!("ListLedgerEntries/{program_id}/{customer_id}");
        let before = match PageToken::decode(&page_token, &scope, 1)? {
            None => None,
            Some(t) => Some(t.position[0].parse::<i64>().map_err(|_| {
                ApiError::invalid_field(
                    Reason::InvalidPageToken,
                    "page_token",
                    "is not a page token issued for this request",
                )
            })?),
        };
        self.program(&program_id).await?;
        let mut entries = self
            .store
            .list_entries(&program_id, &customer, before, size + 1)
            .await?;
        let more = entries.len() > size;
        entries.truncate(size);
        let next_page_token = match (more, entries.last()) {
            (true, Some(last)) => PageToken::encode(&scope, &[&last.entry_id.to_string()]),
            _ => String::new(),
        };
        Ok(pb::ListLedgerEntriesResponse {
            entries: entries.iter().map(convert::entry_to_proto).collect(),
            next_page_token,
        })
    }

    async fn adjust_points(
        &self,
        request: Request<pb::AdjustPointsRequest>,
    ) -> ApiResult<pb::AdjustPointsResponse> {
        let caller = principal(&request);
        let pb::AdjustPointsRequest {
            program_id,
            customer_id,
            points,
            reason,
            issuer,
            request_id,
        } = request.into_inner();
        let mut v = Violations::new();
        if let Err(m) = check_id(&program_id) {
            v.add("program_id", m);
        }
        if points == 0 || points.unsigned_abs() > MAX_ADJUST.unsigned_abs() {
            v.add(
                "points",
                format!("must be non-zero and at most {MAX_ADJUST} either way"),
            );
        }
        text_field(&mut v, "reason", reason.trim(), 1, MAX_REASON);
        // With authentication on, the principal is the issuer and the field an optional note.
        let min_issuer = usize::from(caller.is_none());
        text_field(&mut v, "issuer", issuer.trim(), min_issuer, 128);
        text_field(&mut v, "request_id", &request_id, 1, MAX_REQUEST_ID);
        let key = EventId::parse(format!("adjust:{request_id}"));
        if key.is_err() && !request_id.is_empty() && request_id.len() <= MAX_REQUEST_ID {
            v.add("request_id", "must not hold control characters");
        }
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let customer = parse_customer(&customer_id)?;
        let key = key.map_err(|e| {
            ApiError::invalid_field(Reason::InvalidField, "request_id", e.to_string())
        })?;
        let (_, def) = self.program(&program_id).await?;
        let now = patron_grpc::time::now();
        let issuer = match (&caller, issuer.trim()) {
            (Some(p), "") => p.clone(),
            (Some(p), note) if note == p => p.clone(),
            (Some(p), note) => format!("{p} (note: {note})"),
            (None, issuer) => issuer.to_owned(),
        };
        let op = ops::Adjust {
            def: &def,
            points,
            reason: reason.trim(),
            issuer: &issuer,
            request_key: key,
        };
        match self.mutate(&program_id, &customer, now, &op).await? {
            MutateOutcome::Applied { changes, .. } => {
                let entry = changes
                    .member
                    .as_ref()
                    .and_then(|m| m.wallet.new_entries.last())
                    .map(convert::entry_to_proto);
                let replayed = entry.is_none();
                let balances = self.balances_now(&program_id, &customer).await?;
                Ok(pb::AdjustPointsResponse {
                    entry,
                    balances: Some(balances),
                    replayed,
                })
            }
            MutateOutcome::Refused(r) => Err(refusal(r)),
            MutateOutcome::OutOfStock => Err(ApiError::internal("stock in adjust")),
        }
    }

    async fn create_reward(
        &self,
        request: Request<pb::CreateRewardRequest>,
    ) -> ApiResult<pb::CreateRewardResponse> {
        let Some(r) = request.into_inner().reward else {
            return Err(ApiError::invalid_field(
                Reason::InvalidField,
                "reward",
                "is required",
            ));
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

    async fn get_reward(
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

    async fn list_rewards(
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

    async fn update_reward(
        &self,
        request: Request<pb::UpdateRewardRequest>,
    ) -> ApiResult<pb::UpdateRewardResponse> {
        let pb::UpdateRewardRequest {
            reward,
            update_mask,
            expected_revision,
        } = request.into_inner();
        let Some(r) = reward else {
            return Err(ApiError::invalid_field(
                Reason::InvalidField,
                "reward",
                "is required",
            ));
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

    async fn check_eligibility(
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
        let records: Vec<RewardRecord> = if reward_ids.is_empty() {
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .list_rewards(&program_id, after.as_deref(), 500)
                    .await?;
                let done = page.len() < 500;
                after = page.last().map(|r| r.reward_id.clone());
                all.extend(page);
                if done {
                    break all;
                }
            }
        } else {
            let mut out = Vec::with_capacity(reward_ids.len());
            for id in &reward_ids {
                let r = self
                    .store
                    .get_reward(id)
                    .await?
                    .filter(|r| r.program_id == program_id)
                    .ok_or_else(|| reward_not_found(id))?;
                out.push(r);
            }
            out
        };
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

    async fn redeem_reward(
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

    async fn cancel_redemption(
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

/// A new redemption id: "rdm-" and 24 random hex digits.
fn new_redemption_id() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    format!("rdm-{:024x}", rng.r#gen::<u128>() >> 32)
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
