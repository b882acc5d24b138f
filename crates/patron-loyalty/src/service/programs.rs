//! Programs: create, read, list, update (with its field mask).

use patron_domain::Violations;
use patron_domain::loyalty::program::ProgramDef;
use patron_grpc::{ApiError, ApiResult, PageToken, page_size};
use patron_proto::loyalty::v1 as pb;
use patron_store::StoreError;
use patron_store::loyalty::ProgramRecord;
use tonic::Request;

use super::{LoyaltyApi, encode, id_field, parse_program, program_not_found};
use crate::convert::{self, check_id};

impl LoyaltyApi {
    pub(super) async fn create_program(
        &self,
        request: Request<pb::CreateProgramRequest>,
    ) -> ApiResult<pb::CreateProgramResponse> {
        let Some(p) = request.into_inner().program else {
            return Err(ApiError::required("program"));
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

    pub(super) async fn get_program(
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

    pub(super) async fn list_programs(
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

    pub(super) async fn update_program(
        &self,
        request: Request<pb::UpdateProgramRequest>,
    ) -> ApiResult<pb::UpdateProgramResponse> {
        let pb::UpdateProgramRequest {
            program,
            update_mask,
            expected_revision,
        } = request.into_inner();
        let Some(p) = program else {
            return Err(ApiError::required("program"));
        };
        id_field(&p.program_id, "program.program_id")?;
        let (_, current) = self.program(&p.program_id).await?;
        // The request's program is read once; the mask says which of its fields count.
        let mut read = Violations::new();
        let given = convert::program_from_proto(&p, self.currency, &mut read);
        let paths: Vec<String> = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        let next = masked(current, given, read, &paths, &mut v);
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
}

/// The program an update asks for. With no mask: the request's program, whole, with every
/// violation found reading it. With a mask: the current program with the named fields taken
/// from the request's, an unknown path a violation, and of the violations found reading the
/// request only those of the named fields (the rest of the request is not read).
fn masked(
    current: ProgramDef,
    given: ProgramDef,
    read: Violations,
    paths: &[String],
    v: &mut Violations,
) -> ProgramDef {
    if paths.is_empty() {
        for f in read.into_vec() {
            v.add(f.field, f.description);
        }
        return given;
    }
    let mut next = current;
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
    for f in read.into_vec() {
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
    next
}
