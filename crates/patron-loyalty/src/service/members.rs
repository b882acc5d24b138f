//! Members: enrolment, memberships, the ledger, manual adjustments.

use patron_domain::loyalty::program::ProgramDef;
use patron_domain::loyalty::tier;
use patron_domain::{CustomerId, Day, EventId, Timestamp, Violations};
use patron_grpc::time::to_proto;
use patron_grpc::{ApiError, ApiResult, PageToken, Reason, page_size};
use patron_proto::loyalty::v1 as pb;
use patron_store::loyalty::{MemberRow, MutateOutcome};
use tonic::Request;

use super::{
    LoyaltyApi, MAX_ADJUST, MAX_REASON, MAX_REQUEST_ID, id_field, parse_customer, principal,
    refusal, text_field,
};
use crate::convert::{self, check_id};
use crate::ops::{self, EXPIRING_HORIZON_DAYS};

impl LoyaltyApi {
    pub(super) async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> ApiResult<pb::EnrollResponse> {
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

    pub(super) async fn get_membership(
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

    pub(super) async fn list_ledger_entries(
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

    pub(super) async fn adjust_points(
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

    pub(super) fn membership(
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
}
