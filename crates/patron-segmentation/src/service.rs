//! The SegmentationService handlers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use patron_domain::{CustomerId, Timestamp, Violations};
use patron_feed::FeedView;
use patron_grpc::time::to_proto;
use patron_grpc::{ApiError, ApiResult, PageToken, Reason, Respond};
use patron_proto::segmentation::v1 as pb;
use patron_proto::segmentation::v1::segmentation_service_server::SegmentationService;
use patron_store::StoreResult;
use patron_store::feed::{Change, ChangeKind};
use patron_store::{SegmentRecord, StoreError};
use patron_views::engine::Engine;
use tokio::sync::{broadcast, mpsc};
use tonic::{Request, Response, Status};

use crate::membership;
use crate::registry::{self, RESERVED_PREFIXES, Registry, Snapshot, StoredSegment};
use crate::rules::{self, RuleError, RuleErrorKind, explain};

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;
/// Default and largest ListSegmentMembers page.
pub const DEFAULT_MEMBER_PAGE: usize = 1000;
pub const MAX_MEMBER_PAGE: usize = 10_000;
/// Default and largest PreviewSegment sample.
pub const DEFAULT_SAMPLE: usize = 10;
pub const MAX_SAMPLE: usize = 100;

/// Settings of the service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often watchers re-check every customer (for model and tier policy changes); watchers
    /// also re-check when the UTC day changes. Definitions follow the change feed.
    pub refresh_interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            refresh_interval: Duration::from_secs(60),
        }
    }
}

/// The SegmentationService implementation; also a view of the change feed (definitions, watchers).
#[derive(Debug, Clone)]
pub struct SegmentationApi {
    engine: Arc<Engine>,
    registry: Arc<Registry>,
    changes: broadcast::Sender<Arc<[CustomerId]>>,
    settings: Settings,
    /// Serializes definition writes in this process, so the registry follows the store's order.
    writes: Arc<tokio::sync::Mutex<()>>,
    /// Loyalty state for `loyalty.*` rules, set once the loyalty service is built.
    loyalty: Arc<std::sync::OnceLock<Arc<dyn rules::LoyaltyFacts>>>,
}

/// The change feed drives this service's views: every segment change (by any process) reloads
/// the definitions, and every changed customer reaches the watchers — after the scoring index
/// (an earlier view) has applied it, so watchers evaluate the refreshed rows.
#[async_trait::async_trait]
impl FeedView for SegmentationApi {
    async fn apply(&self, changes: &[Change]) -> StoreResult<()> {
        let mut customers: Vec<CustomerId> = Vec::new();
        let mut definitions = false;
        for c in changes {
            match c.kind {
                ChangeKind::Customer => {
                    if let Ok(id) = CustomerId::parse(&c.key) {
                        customers.push(id);
                    }
                }
                ChangeKind::Segment => definitions = true,
                _ => {}
            }
        }
        if definitions {
            self.reload_definitions().await?;
        }
        if !customers.is_empty() {
            customers.sort_unstable();
            customers.dedup();
            // No watcher, no receiver: the error only says nobody listens.
            let _ = self.changes.send(Arc::from(customers));
        }
        Ok(())
    }

    async fn reload(&self) -> StoreResult<()> {
        self.reload_definitions().await?;
        // Watchers re-check every member when they lag; an empty list tells them nothing, so
        // send everyone in the index.
        let everyone: Vec<CustomerId> = self
            .engine
            .all()
            .iter()
            .map(|r| r.customer_id.clone())
            .collect();
        let _ = self.changes.send(Arc::from(everyone));
        Ok(())
    }
}

fn rule_error(field: &str, e: &RuleError) -> ApiError {
    let reason = match e.kind {
        RuleErrorKind::TooLarge => Reason::RuleTooLarge,
        RuleErrorKind::UnknownSegment => Reason::SegmentNotFound,
        RuleErrorKind::UnknownProgram => Reason::ProgramNotFound,
        _ => Reason::InvalidRule,
    };
    ApiError::invalid_field(
        reason,
        field,
        format!("{}:{}: {}", e.line, e.column, e.message),
    )
}

fn segment_not_found(id: &str) -> ApiError {
    ApiError::not_found(Reason::SegmentNotFound, "segment", id)
}

use patron_grpc::check_resource_id as valid_segment_id;

/// Checks an id given to look a segment up (not to create one).
fn lookup_id(id: &str, field: &str) -> ApiResult<()> {
    valid_segment_id(id).map_err(|m| ApiError::invalid_field(Reason::InvalidField, field, m))
}

fn stored_to_proto(s: &StoredSegment) -> pb::Segment {
    let r = &s.record;
    pb::Segment {
        segment_id: r.segment_id.clone(),
        display_name: r.display_name.clone(),
        description: r.description.clone(),
        rule: r.rule.clone(),
        built_in: false,
        depends_on: r.depends_on.clone(),
        revision: r.revision,
        create_time: Some(to_proto(r.create_time)),
        update_time: Some(to_proto(r.update_time)),
        time_relative: s.program.time_relative,
    }
}

fn builtin_to_proto(b: &registry::BuiltIn) -> pb::Segment {
    pb::Segment {
        segment_id: b.segment_id.clone(),
        display_name: b.display_name.clone(),
        description: b.description.clone(),
        rule: b.program.source.clone(),
        built_in: true,
        depends_on: Vec::new(),
        revision: 0,
        create_time: None,
        update_time: None,
        time_relative: b.program.time_relative,
    }
}

impl SegmentationApi {
    /// Loads the stored definitions.
    pub async fn load(engine: Arc<Engine>, settings: Settings) -> Result<Self, StoreError> {
        let state = engine.state();
        let registry = Arc::new(Registry::new(&state.policy, state.policy_revision));
        registry.load(registry::load_all(engine.store().as_ref()).await?);
        let (changes, _) = broadcast::channel(1024);
        Ok(Self {
            engine,
            registry,
            changes,
            settings,
            writes: Arc::new(tokio::sync::Mutex::new(())),
            loyalty: Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// Re-reads every stored definition (the change feed said one changed).
    pub async fn reload_definitions(&self) -> StoreResult<()> {
        let records = registry::load_all(self.engine.store().as_ref()).await?;
        self.registry.load(records);
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        let state = self.engine.state();
        self.registry.snapshot(
            &state.policy,
            state.policy_revision,
            self.loyalty.get().cloned(),
        )
    }

    /// Makes `loyalty.*` rule variables read `facts` (once; later calls are ignored).
    pub fn set_loyalty(&self, facts: Arc<dyn rules::LoyaltyFacts>) {
        let _ = self.loyalty.set(facts);
    }

    fn resolve(&self, snapshot: &Snapshot, id: &str) -> ApiResult<Arc<rules::Program>> {
        snapshot.program_of(id).ok_or_else(|| segment_not_found(id))
    }

    fn check_text_fields(seg: &pb::Segment, v: &mut Violations, mask: &[&str]) {
        let want = |f: &str| mask.is_empty() || mask.contains(&f);
        if want("display_name") {
            let n = seg.display_name.chars().count();
            if n == 0 || seg.display_name.trim().is_empty() {
                v.add("segment.display_name", "must not be empty");
            } else if n > MAX_DISPLAY_NAME {
                v.add(
                    "segment.display_name",
                    format!("must be at most {MAX_DISPLAY_NAME} characters"),
                );
            }
        }
        if want("description") && seg.description.chars().count() > MAX_DESCRIPTION {
            v.add(
                "segment.description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            );
        }
    }

    /// Compiles a rule to store: every in_segment must name an existing segment.
    fn compile_for_store(
        &self,
        snapshot: &Snapshot,
        rule: &str,
    ) -> ApiResult<(rules::Program, Vec<String>)> {
        let program = rules::compile(rule, snapshot).map_err(|e| rule_error("segment.rule", &e))?;
        let depends_on: Vec<String> = program
            .segments
            .iter()
            .filter(|id| snapshot.builtin(id).is_none())
            .cloned()
            .collect();
        Ok((program, depends_on))
    }
}

fn store_error(e: StoreError, id: &str) -> ApiError {
    match e {
        StoreError::SegmentCycle(path) => ApiError::invalid_field(
            Reason::SegmentCycle,
            "segment.rule",
            format!(
                "segments would depend on each other in a circle: {}",
                path.join(" -> ")
            ),
        ),
        StoreError::MissingDependency(dep) => ApiError::invalid_field(
            Reason::SegmentNotFound,
            "segment.rule",
            format!(
                "refers to segment {}, which does not exist",
                patron_domain::quote(&dep)
            ),
        ),
        StoreError::InUse(users) => ApiError::FailedPrecondition {
            reason: Reason::SegmentInUse,
            message: format!(
                "segment {id:?} is used by {}; change or delete those first",
                users.join(", ")
            ),
        },
        other => ApiError::Store(other),
    }
}

type WatchStream = tokio_stream::wrappers::ReceiverStream<Result<pb::WatchSegmentResponse, Status>>;

/// The handlers, one per RPC: each returns an [`ApiResult`], which the `SegmentationService` impl
/// below converts to a `Status` once, in [`Respond::respond`].
impl SegmentationApi {
    async fn create_segment(
        &self,
        request: Request<pb::CreateSegmentRequest>,
    ) -> ApiResult<pb::CreateSegmentResponse> {
        let Some(seg) = request.into_inner().segment else {
            return Err(ApiError::required("segment"));
        };
        let mut v = Violations::new();
        if let Err(m) = valid_segment_id(&seg.segment_id) {
            v.add("segment.segment_id", m);
        } else if RESERVED_PREFIXES
            .iter()
            .any(|p| seg.segment_id.starts_with(p))
        {
            v.add(
                "segment.segment_id",
                "ids starting with \"rfm-\" or \"tier-\" are reserved for built-in segments",
            );
        }
        Self::check_text_fields(&seg, &mut v, &[]);
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let _serial = self.writes.lock().await;
        let snapshot = self.snapshot();
        if snapshot.exists(&seg.segment_id) {
            return Err(ApiError::Store(StoreError::AlreadyExists(format!(
                "segment {:?} already exists",
                seg.segment_id
            ))));
        }
        let (program, depends_on) = self.compile_for_store(&snapshot, &seg.rule)?;
        let now = patron_grpc::time::now();
        let record = SegmentRecord {
            segment_id: seg.segment_id.clone(),
            display_name: seg.display_name.trim().to_owned(),
            description: seg.description,
            rule: seg.rule,
            depends_on,
            revision: 1,
            create_time: now,
            update_time: now,
        };
        let stored = self
            .engine
            .store()
            .create_segment(&record)
            .await
            .map_err(|e| match e {
                StoreError::AlreadyExists(_) => ApiError::Store(StoreError::AlreadyExists(
                    format!("segment {:?} already exists", record.segment_id),
                )),
                e => store_error(e, &record.segment_id),
            })?;
        let stored = StoredSegment {
            record: stored,
            program: Arc::new(program),
        };
        tracing::info!(segment = %stored.record.segment_id, "segment created");
        Ok(pb::CreateSegmentResponse {
            segment: Some(stored_to_proto(&stored)),
        })
    }

    async fn get_segment(
        &self,
        request: Request<pb::GetSegmentRequest>,
    ) -> ApiResult<pb::GetSegmentResponse> {
        let id = request.into_inner().segment_id;
        lookup_id(&id, "segment_id")?;
        let snapshot = self.snapshot();
        if let Some(b) = snapshot.builtin(&id) {
            return Ok(pb::GetSegmentResponse {
                segment: Some(builtin_to_proto(b)),
            });
        }
        let record = self
            .engine
            .store()
            .get_segment(&id)
            .await
            .map_err(ApiError::Store)?
            .ok_or_else(|| segment_not_found(&id))?;
        let stored =
            registry::compile_stored(record.clone(), &|s: &str| snapshot.exists(s) || s == id)
                .ok_or_else(|| {
                    ApiError::internal(format!("stored segment {id} does not compile"))
                })?;
        Ok(pb::GetSegmentResponse {
            segment: Some(stored_to_proto(&stored)),
        })
    }

    async fn list_segments(
        &self,
        request: Request<pb::ListSegmentsRequest>,
    ) -> ApiResult<pb::ListSegmentsResponse> {
        let pb::ListSegmentsRequest {
            page_size,
            page_token,
        } = request.into_inner();
        let size = patron_grpc::page_size(page_size)?;
        // Position: ("b", index of the next built-in) or ("s", last stored id returned).
        let token = PageToken::decode(&page_token, "ListSegments", 2)?;
        let snapshot = self.snapshot();
        let mut out = Vec::with_capacity(size);
        let mut after_stored: Option<String> = None;
        let mut builtin_from = 0usize;
        match token {
            None => {}
            Some(t) if t.position[0] == "b" => {
                builtin_from = t.position[1].parse().map_err(|_| {
                    ApiError::invalid_field(
                        Reason::InvalidPageToken,
                        "page_token",
                        "is not a page token issued for this request; start again with an empty token",
                    )
                })?;
            }
            Some(t) => {
                builtin_from = usize::MAX;
                after_stored = Some(t.position[1].clone());
            }
        }
        for (i, b) in snapshot.builtins.iter().enumerate().skip(builtin_from) {
            if out.len() == size {
                let next = PageToken::encode("ListSegments", &["b", &i.to_string()]);
                return Ok(pb::ListSegmentsResponse {
                    segments: out,
                    next_page_token: next,
                });
            }
            out.push(builtin_to_proto(b));
        }
        let want = size - out.len();
        let records = self
            .engine
            .store()
            .list_segments(after_stored.as_deref(), want + 1)
            .await
            .map_err(ApiError::Store)?;
        let more = records.len() > want;
        let mut last = None;
        for r in records.into_iter().take(want) {
            last = Some(r.segment_id.clone());
            let id = r.segment_id.clone();
            if let Some(s) = registry::compile_stored(r, &|s: &str| snapshot.exists(s) || s == id) {
                out.push(stored_to_proto(&s));
            }
        }
        let next_page_token = match (more, last) {
            (true, Some(last)) => PageToken::encode("ListSegments", &["s", &last]),
            _ if more && want == 0 => {
                let pos = after_stored.unwrap_or_default();
                PageToken::encode("ListSegments", &["s", &pos])
            }
            _ => String::new(),
        };
        Ok(pb::ListSegmentsResponse {
            segments: out,
            next_page_token,
        })
    }

    async fn update_segment(
        &self,
        request: Request<pb::UpdateSegmentRequest>,
    ) -> ApiResult<pb::UpdateSegmentResponse> {
        let pb::UpdateSegmentRequest {
            segment,
            update_mask,
            expected_revision,
        } = request.into_inner();
        let Some(seg) = segment else {
            return Err(ApiError::required("segment"));
        };
        lookup_id(&seg.segment_id, "segment.segment_id")?;
        let paths: Vec<String> = update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        for (i, p) in paths.iter().enumerate() {
            if !matches!(p.as_str(), "display_name" | "description" | "rule") {
                v.add(
                    format!("update_mask.paths[{i}]"),
                    format!(
                        "{} is not an updatable field (display_name, description, rule)",
                        patron_domain::quote(p)
                    ),
                );
            }
        }
        if expected_revision < 0 {
            v.add("expected_revision", "must not be negative");
        }
        let mask: Vec<&str> = paths.iter().map(String::as_str).collect();
        Self::check_text_fields(&seg, &mut v, &mask);
        if !v.is_empty() {
            return Err(ApiError::invalid(v));
        }
        let want = |f: &str| mask.is_empty() || mask.contains(&f);
        let _serial = self.writes.lock().await;
        let snapshot = self.snapshot();
        if snapshot.builtin(&seg.segment_id).is_some() {
            return Err(ApiError::FailedPrecondition {
                reason: Reason::BuiltInSegment,
                message: format!("segment {:?} is built in and read-only", seg.segment_id),
            });
        }
        let store = self.engine.store();
        let current = store
            .get_segment(&seg.segment_id)
            .await
            .map_err(ApiError::Store)?
            .ok_or_else(|| segment_not_found(&seg.segment_id))?;
        let mut record = current.clone();
        if want("display_name") {
            record.display_name = seg.display_name.trim().to_owned();
        }
        if want("description") {
            record.description = seg.description.clone();
        }
        if want("rule") {
            record.rule = seg.rule.clone();
        }
        let id = seg.segment_id.clone();
        let program = rules::compile(&record.rule, &registry::WithSelf(&snapshot, &id))
            .map_err(|e| rule_error("segment.rule", &e))?;
        record.depends_on = program
            .segments
            .iter()
            .filter(|s| snapshot.builtin(s).is_none())
            .cloned()
            .collect();
        record.update_time = patron_grpc::time::now();
        let expected = (expected_revision > 0).then_some(expected_revision);
        let stored = store
            .update_segment(&record, expected)
            .await
            .map_err(|e| store_error(e, &id))?
            .ok_or_else(|| segment_not_found(&id))?;
        let stored = StoredSegment {
            record: stored,
            program: Arc::new(program),
        };
        tracing::info!(segment = %id, revision = stored.record.revision, "segment updated");
        Ok(pb::UpdateSegmentResponse {
            segment: Some(stored_to_proto(&stored)),
        })
    }

    async fn delete_segment(
        &self,
        request: Request<pb::DeleteSegmentRequest>,
    ) -> ApiResult<pb::DeleteSegmentResponse> {
        let id = request.into_inner().segment_id;
        lookup_id(&id, "segment_id")?;
        let _serial = self.writes.lock().await;
        if self.snapshot().builtin(&id).is_some() {
            return Err(ApiError::FailedPrecondition {
                reason: Reason::BuiltInSegment,
                message: format!("segment {id:?} is built in and cannot be deleted"),
            });
        }
        let deleted = self
            .engine
            .store()
            .delete_segment(&id)
            .await
            .map_err(|e| store_error(e, &id))?;
        if !deleted {
            return Err(segment_not_found(&id));
        }
        tracing::info!(segment = %id, "segment deleted");
        Ok(pb::DeleteSegmentResponse {})
    }

    async fn preview_segment(
        &self,
        request: Request<pb::PreviewSegmentRequest>,
    ) -> ApiResult<pb::PreviewSegmentResponse> {
        let pb::PreviewSegmentRequest { rule, sample_size } = request.into_inner();
        let sample = match sample_size {
            0 => DEFAULT_SAMPLE,
            n if n < 0 || n as usize > MAX_SAMPLE => {
                return Err(ApiError::invalid_field(
                    Reason::InvalidField,
                    "sample_size",
                    format!("must be between 0 and {MAX_SAMPLE}"),
                ));
            }
            n => n as usize,
        };
        let snapshot = self.snapshot();
        let program = rules::compile(&rule, &snapshot).map_err(|e| rule_error("rule", &e))?;
        let scan = self
            .scan(snapshot, Arc::new(program.clone()), sample)
            .await?;
        Ok(pb::PreviewSegmentResponse {
            count: i64::try_from(scan.count).unwrap_or(i64::MAX),
            population: i64::try_from(scan.population).unwrap_or(i64::MAX),
            sample_customer_ids: scan.sample.into_iter().map(String::from).collect(),
            time_relative: program.time_relative,
        })
    }

    async fn check_membership(
        &self,
        request: Request<pb::CheckMembershipRequest>,
    ) -> ApiResult<pb::CheckMembershipResponse> {
        let pb::CheckMembershipRequest {
            customer_id,
            segment_id,
            explain: want_explanation,
        } = request.into_inner();
        let id = patron_grpc::parse_customer_id(&customer_id, "customer_id")?;
        lookup_id(&segment_id, "segment_id")?;
        let snapshot = self.snapshot();
        let program = self.resolve(&snapshot, &segment_id)?;
        let row = self.engine.get(&id).ok_or_else(|| {
            ApiError::not_found(Reason::CustomerNotFound, "customer", id.as_str())
        })?;
        let state = self.engine.state();
        let now = patron_grpc::time::now();
        let facts = rules::Facts::new(&row, &state, now);
        let eval = rules::Eval::new(&facts, &snapshot);
        let (member, explanation) = if want_explanation {
            let x = explain::explain(&eval, &program);
            (
                x.matched,
                Some(pb::Explanation {
                    outcome: x.outcome,
                    conditions: x
                        .conditions
                        .into_iter()
                        .map(|c| pb::Condition {
                            expression: c.expression,
                            outcome: c.outcome,
                        })
                        .collect(),
                    facts: x
                        .facts
                        .into_iter()
                        .map(|f| pb::Fact {
                            expression: f.expression,
                            value: f.value,
                        })
                        .collect(),
                }),
            )
        } else {
            (eval.matches(&program), None)
        };
        Ok(pb::CheckMembershipResponse {
            member,
            explanation,
            evaluate_time: Some(to_proto(now)),
        })
    }

    async fn list_customer_segments(
        &self,
        request: Request<pb::ListCustomerSegmentsRequest>,
    ) -> ApiResult<pb::ListCustomerSegmentsResponse> {
        let customer_id = request.into_inner().customer_id;
        let id = patron_grpc::parse_customer_id(&customer_id, "customer_id")?;
        let row = self.engine.get(&id).ok_or_else(|| {
            ApiError::not_found(Reason::CustomerNotFound, "customer", id.as_str())
        })?;
        let snapshot = self.snapshot();
        let state = self.engine.state();
        let now = patron_grpc::time::now();
        let facts = rules::Facts::new(&row, &state, now);
        let eval = rules::Eval::new(&facts, &snapshot);
        let mut segment_ids = Vec::new();
        for b in &snapshot.builtins {
            if eval.matches(&b.program) {
                segment_ids.push(b.segment_id.clone());
            }
        }
        for (id, s) in &snapshot.stored {
            if eval.matches(&s.program) {
                segment_ids.push(id.clone());
            }
        }
        Ok(pb::ListCustomerSegmentsResponse {
            segment_ids,
            evaluate_time: Some(to_proto(now)),
        })
    }

    async fn list_segment_members(
        &self,
        request: Request<pb::ListSegmentMembersRequest>,
    ) -> ApiResult<pb::ListSegmentMembersResponse> {
        let pb::ListSegmentMembersRequest {
            segment_id,
            page_size,
            page_token,
        } = request.into_inner();
        lookup_id(&segment_id, "segment_id")?;
        let size = match page_size {
            0 => DEFAULT_MEMBER_PAGE,
            n if n < 0 => {
                return Err(ApiError::invalid_field(
                    Reason::InvalidPageSize,
                    "page_size",
                    "must not be negative",
                ));
            }
            n => (n as usize).min(MAX_MEMBER_PAGE),
        };
        let scope = format!("ListSegmentMembers/{segment_id}");
        let after = match PageToken::decode(&page_token, &scope, 1)? {
            None => None,
            Some(t) => Some(CustomerId::parse(t.position[0].clone()).map_err(|_| {
                ApiError::invalid_field(
                    Reason::InvalidPageToken,
                    "page_token",
                    "is not a page token issued for this request; start again with an empty token",
                )
            })?),
        };
        let snapshot = self.snapshot();
        let program = self.resolve(&snapshot, &segment_id)?;
        let engine = Arc::clone(&self.engine);
        let (ids, full) = tokio::task::spawn_blocking(move || {
            let state = engine.state();
            let now = patron_grpc::time::now();
            membership::page(
                &engine,
                after.as_ref(),
                size,
                &program,
                &state,
                &snapshot,
                now,
            )
        })
        .await
        .map_err(|e| ApiError::internal(format!("member scan failed: {e}")))?;
        let next_page_token = match (full, ids.last()) {
            (true, Some(last)) => PageToken::encode(&scope, &[last.as_str()]),
            _ => String::new(),
        };
        Ok(pb::ListSegmentMembersResponse {
            customer_ids: ids.into_iter().map(String::from).collect(),
            next_page_token,
        })
    }

    async fn count_segment_members(
        &self,
        request: Request<pb::CountSegmentMembersRequest>,
    ) -> ApiResult<pb::CountSegmentMembersResponse> {
        let segment_id = request.into_inner().segment_id;
        lookup_id(&segment_id, "segment_id")?;
        let snapshot = self.snapshot();
        let program = self.resolve(&snapshot, &segment_id)?;
        let now = patron_grpc::time::now();
        let scan = self.scan(snapshot, program, 0).await?;
        Ok(pb::CountSegmentMembersResponse {
            count: i64::try_from(scan.count).unwrap_or(i64::MAX),
            population: i64::try_from(scan.population).unwrap_or(i64::MAX),
            evaluate_time: Some(to_proto(now)),
        })
    }

    async fn watch_segment(
        &self,
        request: Request<pb::WatchSegmentRequest>,
    ) -> ApiResult<WatchStream> {
        let pb::WatchSegmentRequest {
            segment_id,
            include_initial_members,
        } = request.into_inner();
        lookup_id(&segment_id, "segment_id")?;
        // Fail fast on an unknown segment; the watcher resolves it again on every check, so
        // later updates of the rule apply.
        self.resolve(&self.snapshot(), &segment_id)?;
        // Subscribe before the first scan: no change committed after the scan can be missed.
        // The scan is taken before the response: every write after it is reported.
        let changes = self.changes.subscribe();
        let Some(baseline) = crate::watch::baseline(self, &segment_id).await else {
            return Err(segment_not_found(&segment_id));
        };
        let (tx, rx) = mpsc::channel(1024);
        let api = self.clone();
        tokio::spawn(async move {
            crate::watch::run(
                api,
                segment_id,
                include_initial_members,
                baseline,
                changes,
                tx,
            )
            .await;
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl SegmentationService for SegmentationApi {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn create_segment(
        &self,
        request: Request<pb::CreateSegmentRequest>,
    ) -> Result<Response<pb::CreateSegmentResponse>, Status> {
        self.create_segment(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_segment(
        &self,
        request: Request<pb::GetSegmentRequest>,
    ) -> Result<Response<pb::GetSegmentResponse>, Status> {
        self.get_segment(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_segments(
        &self,
        request: Request<pb::ListSegmentsRequest>,
    ) -> Result<Response<pb::ListSegmentsResponse>, Status> {
        self.list_segments(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn update_segment(
        &self,
        request: Request<pb::UpdateSegmentRequest>,
    ) -> Result<Response<pb::UpdateSegmentResponse>, Status> {
        self.update_segment(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delete_segment(
        &self,
        request: Request<pb::DeleteSegmentRequest>,
    ) -> Result<Response<pb::DeleteSegmentResponse>, Status> {
        self.delete_segment(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn preview_segment(
        &self,
        request: Request<pb::PreviewSegmentRequest>,
    ) -> Result<Response<pb::PreviewSegmentResponse>, Status> {
        self.preview_segment(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn check_membership(
        &self,
        request: Request<pb::CheckMembershipRequest>,
    ) -> Result<Response<pb::CheckMembershipResponse>, Status> {
        self.check_membership(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_customer_segments(
        &self,
        request: Request<pb::ListCustomerSegmentsRequest>,
    ) -> Result<Response<pb::ListCustomerSegmentsResponse>, Status> {
        self.list_customer_segments(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_segment_members(
        &self,
        request: Request<pb::ListSegmentMembersRequest>,
    ) -> Result<Response<pb::ListSegmentMembersResponse>, Status> {
        self.list_segment_members(request).await.respond()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn count_segment_members(
        &self,
        request: Request<pb::CountSegmentMembersRequest>,
    ) -> Result<Response<pb::CountSegmentMembersResponse>, Status> {
        self.count_segment_members(request).await.respond()
    }

    type WatchSegmentStream = WatchStream;

    #[tracing::instrument(level = "debug", skip_all)]
    async fn watch_segment(
        &self,
        request: Request<pb::WatchSegmentRequest>,
    ) -> Result<Response<Self::WatchSegmentStream>, Status> {
        self.watch_segment(request).await.respond()
    }
}

impl SegmentationApi {
    /// Evaluates `program` for every customer on a blocking thread.
    async fn scan(
        &self,
        snapshot: Snapshot,
        program: Arc<rules::Program>,
        sample: usize,
    ) -> ApiResult<membership::Scan> {
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || {
            let state = engine.state();
            let rows = engine.all();
            let now = patron_grpc::time::now();
            membership::count(&rows, &program, &state, &snapshot, now, sample)
        })
        .await
        .map_err(|e| ApiError::internal(format!("segment scan failed: {e}")))
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The program of a segment now, or `None` if it no longer exists.
    pub(crate) fn current(&self, id: &str) -> Option<(Snapshot, Arc<rules::Program>)> {
        let snapshot = self.snapshot();
        let program = snapshot.program_of(id)?;
        Some((snapshot, program))
    }

    /// Every member now (for watchers).
    pub(crate) fn members_now(&self, id: &str, now: Timestamp) -> Option<HashSet<CustomerId>> {
        let (snapshot, program) = self.current(id)?;
        let state = self.engine.state();
        let rows = self.engine.all();
        let scan = membership::count(&rows, &program, &state, &snapshot, now, usize::MAX);
        Some(scan.sample.into_iter().collect())
    }
}

impl SegmentationApi {
    /// Whether a customer is in a segment now: `None` if the segment or the customer is unknown.
    /// For other services (loyalty's target and required segments).
    pub fn is_member(&self, segment_id: &str, customer: &CustomerId) -> Option<bool> {
        let snapshot = self.snapshot();
        let program = snapshot.program_of(segment_id)?;
        let row = self.engine.get(customer)?;
        let state = self.engine.state();
        Some(membership::is_member(
            &row,
            &program,
            &state,
            &snapshot,
            patron_grpc::time::now(),
        ))
    }

    /// Whether a segment exists now (stored or built-in).
    pub fn segment_exists(&self, segment_id: &str) -> bool {
        self.snapshot().exists(segment_id)
    }
}
