//! Storage of loyalty programs, rewards and members' points.
//!
//! Every change to a member's points goes through [`LoyaltyStore::mutate_member`]: the store
//! locks the member (one program, one customer), loads what the operation declared it needs,
//! calls the operation — pure Rust, the same for every backend — and writes the changes it
//! returns in the same transaction, or nothing if it refuses. So ledger logic is written once and
//! both backends serialize concurrent changes of one balance the same way.

use async_trait::async_trait;
use patron_domain::loyalty::reward::Unmet;
use patron_domain::loyalty::tier::DayActivity;
use patron_domain::loyalty::{Entry, Points, Wallet};
use patron_domain::{CustomerId, Day, EventId, OrderId, Timestamp};

use crate::StoreResult;

/// A stored program: an opaque JSON document (`ProgramDef`) owned by `patron-loyalty`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramRecord {
    pub program_id: String,
    pub body: String,
    /// The program's target segment (a copy of the body's), so a segment in use by a program
    /// cannot be deleted ([`crate::SegmentStore::delete_segment`] refuses with `InUse`).
    pub target_segment: Option<String>,
    /// 1 when created, one more per update.
    pub revision: i64,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}

/// A stored reward: an opaque JSON document (`RewardDef`) and its stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardRecord {
    pub reward_id: String,
    pub program_id: String,
    pub body: String,
    /// The reward's required segment (a copy of the body's), protected like a program's.
    pub required_segment: Option<String>,
    /// Units left; `None`: unlimited. Only [`Changes::take_stock`] / `return_stock` and
    /// [`LoyaltyStore::update_reward`] change it.
    pub stock_remaining: Option<i64>,
    pub revision: i64,
    pub create_time: Timestamp,
    pub update_time: Timestamp,
}

/// A member of a program, as loaded under the member's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub enrolled_at: Timestamp,
    /// Lots, debt, lifetime totals and id counters; `new_entries` empty when loaded.
    pub wallet: Wallet,
    /// Whether the first-purchase bonus has been given.
    pub first_purchase_done: bool,
    /// Points earned and net spend per UTC day (for tiers), ascending by day.
    pub activity: Vec<DayActivity>,
}

/// The program's view of one order of the member (purchases and refunds fold into it in any
/// order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoyaltyOrder {
    pub order_id: String,
    /// Purchase amount seen (minor units); 0 until the purchase arrives.
    pub amount: i64,
    pub refunded: i64,
    pub purchased: bool,
    /// Day of the purchase (for spend activity).
    pub day: Option<Day>,
    /// Earn multiplier (percent) fixed when the purchase was processed.
    pub multiplier_percent: u32,
    /// Net points credited for the order so far (credits minus clawbacks).
    pub points: Points,
}

/// Redemption state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedemptionStatus {
    Completed,
    Cancelled,
}

/// A stored redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedemptionRecord {
    pub redemption_id: String,
    /// The caller's idempotency key, unique per (program, customer).
    pub request_id: String,
    pub reward_id: String,
    pub cost: Points,
    /// Lots the points came from.
    pub lots: Vec<(i64, Points)>,
    /// A digest of the request, to tell a replay from a different request with the same id.
    pub fingerprint: String,
    pub status: RedemptionStatus,
    pub created_at: Timestamp,
    pub cancelled_at: Option<Timestamp>,
}

/// What an operation needs loaded besides the member row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub order_id: Option<OrderId>,
    /// (custom event name, first day of the cap period).
    pub bonus: Option<(String, Day)>,
    pub reward_id: Option<String>,
    pub request_id: Option<String>,
    pub redemption_id: Option<String>,
    /// An event whose application to this member is checked (exactly once).
    pub event_id: Option<EventId>,
}

/// What the store loaded, under the member's lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// `None`: not a member (yet).
    pub member: Option<MemberRow>,
    /// The order asked for, if stored.
    pub order: Option<LoyaltyOrder>,
    /// Bonuses already given for the asked (event name, period); 0 if none.
    pub bonus_count: i64,
    /// The reward asked for, with its current stock.
    pub reward: Option<RewardRecord>,
    /// Completed (not cancelled) redemptions of that reward by this member.
    pub reward_redemptions: i64,
    /// The redemption with the asked request id or redemption id.
    pub redemption: Option<RedemptionRecord>,
    /// Whether the asked event has already been applied to this member.
    pub event_applied: bool,
}

/// What to write. Everything is written in the lock's transaction, or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The member's new state: created if it was not a member (enrolment), else updated. Lots are
    /// upserted by id; `wallet.new_entries` are appended.
    pub member: Option<MemberRow>,
    /// Upserted by order id.
    pub order: Option<LoyaltyOrder>,
    /// New count of the asked bonus period.
    pub bonus_count: Option<i64>,
    /// Added to the member's daily activity rows.
    pub activity: Vec<DayActivity>,
    /// Take one unit of the asked reward's stock (if it has a stock); when none is left the
    /// whole mutation is rolled back and [`MutateOutcome::OutOfStock`] returned.
    pub take_stock: bool,
    /// Give one unit back (a cancelled redemption).
    pub return_stock: bool,
    /// Inserted, or updated by redemption id.
    pub redemption: Option<RedemptionRecord>,
    /// Mark the asked event applied.
    pub mark_event_applied: bool,
}

/// Why a [`MemberOp`] refused; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The customer is not a member of the program.
    NotEnrolled,
    /// The member does not meet the reward's conditions; these are the unmet ones.
    NotEligible(Vec<Unmet>),
    /// The request id was used before for a different request.
    RequestIdReused,
    /// Fewer points available than the operation takes.
    InsufficientPoints,
    /// The asked redemption is not stored.
    RedemptionNotFound,
    /// The asked reward is not stored.
    RewardNotFound,
    /// A points total would overflow.
    Overflow,
    /// Neither the caller's nor the member's doing (stored data that does not parse, a ledger
    /// call the operation should not have made): logged, never shown to a client.
    Internal(String),
}

/// An operation on one member's points.
pub trait MemberOp: Send + Sync {
    fn needs(&self) -> Needs;
    /// Decides the changes from what was loaded; `Err` refuses (nothing is written), and the
    /// store hands the refusal back as [`MutateOutcome::Refused`].
    fn apply(&self, loaded: &Loaded, now: Timestamp) -> Result<Changes, Refusal>;
}

/// The result of [`LoyaltyStore::mutate_member`]. (Returned once per mutation and consumed at
/// once: boxing the large variant would buy nothing.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum MutateOutcome {
    /// Written (or nothing to write); the changes and what was loaded.
    Applied { loaded: Loaded, changes: Changes },
    /// The operation refused; nothing written.
    Refused(Refusal),
    /// `take_stock` found no stock left; nothing written.
    OutOfStock,
}

/// Loyalty storage. Writes are transactional and serialized per member.
#[async_trait]
pub trait LoyaltyStore: Send + Sync + std::fmt::Debug + 'static {
    /// [`crate::StoreError::AlreadyExists`] if the id is taken.
    async fn create_program(&self, record: &ProgramRecord) -> StoreResult<ProgramRecord>;
    async fn get_program(&self, id: &str) -> StoreResult<Option<ProgramRecord>>;
    /// Programs in id order, strictly after `after`.
    async fn list_programs(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ProgramRecord>>;
    /// Replaces the body as the next revision (optionally only at `expected_revision`,
    /// [`crate::StoreError::PreconditionFailed`] otherwise). `None` if there is no such program.
    async fn update_program(
        &self,
        id: &str,
        body: &str,
        target_segment: Option<&str>,
        now: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<Option<ProgramRecord>>;

    /// [`crate::StoreError::AlreadyExists`] if the id is taken; the program must exist
    /// ([`crate::StoreError::MissingDependency`]).
    async fn create_reward(&self, record: &RewardRecord) -> StoreResult<RewardRecord>;
    async fn get_reward(&self, id: &str) -> StoreResult<Option<RewardRecord>>;
    /// Rewards of one program in id order, strictly after `after`.
    async fn list_rewards(
        &self,
        program_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<RewardRecord>>;
    /// Replaces the body and, when `stock_remaining` is `Some`, the stock (`Some(None)`:
    /// unlimited), as the next revision. `None` if there is no such reward.
    async fn update_reward(
        &self,
        id: &str,
        body: &str,
        required_segment: Option<&str>,
        stock_remaining: Option<Option<i64>>,
        now: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<Option<RewardRecord>>;

    /// Locks the member, loads `op.needs()`, applies `op` and writes its changes, atomically.
    async fn mutate_member(
        &self,
        program_id: &str,
        customer: &CustomerId,
        now: Timestamp,
        op: &dyn MemberOp,
    ) -> StoreResult<MutateOutcome>;

    /// The member row without locking (reads).
    async fn get_member(
        &self,
        program_id: &str,
        customer: &CustomerId,
    ) -> StoreResult<Option<MemberRow>>;

    /// Members in (customer id, program id) order, strictly after `after`, each with all its lots
    /// and activity (as [`LoyaltyStore::get_member`] loads them): for loading in-memory views at
    /// start-up, in pages of about 10,000, with a fixed number of statements per page.
    async fn scan_members(
        &self,
        after: Option<(&CustomerId, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<(CustomerId, String, MemberRow)>>;

    /// Programs the customer is a member of, in program id order.
    async fn member_programs(&self, customer: &CustomerId) -> StoreResult<Vec<String>>;

    /// A member's entries, newest first (entry id descending), strictly below `before`.
    async fn list_entries(
        &self,
        program_id: &str,
        customer: &CustomerId,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>>;

    /// A redemption by id.
    async fn get_redemption(
        &self,
        program_id: &str,
        customer: &CustomerId,
        redemption_id: &str,
    ) -> StoreResult<Option<RedemptionRecord>>;

    /// How many completed redemptions of each reward the member has (rewards with none are
    /// absent): a plain read, without the member's lock.
    async fn completed_redemptions(
        &self,
        program_id: &str,
        customer: &CustomerId,
    ) -> StoreResult<std::collections::HashMap<String, i64>>;

    /// Members (program id, customer id) with a lot that has expired by `now` with points left,
    /// or a pending lot that became available and is not marked activated: in (program id,
    /// customer id) order, strictly after `after`, at most `limit`. Paging by `after` visits
    /// every due member once even if some stay due (a member whose settlement failed).
    async fn members_to_settle(
        &self,
        now: Timestamp,
        after: Option<(&str, &CustomerId)>,
        limit: usize,
    ) -> StoreResult<Vec<(String, CustomerId)>>;
}
