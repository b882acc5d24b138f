//! Rows as both databases return them, decoded by column name (`sqlx::FromRow` is generic over
//! the database), and their conversion into the store's types.
//!
//! Each type is declared with [`row!`], which also gives it `COLUMNS`: its fields' names joined
//! with commas. A SELECT that reads a row names `T::COLUMNS`, so the list and the decoder cannot
//! drift apart; a column the row does not find fails the read (`ColumnNotFound`).
//!
//! Integers are read as they are stored in Postgres (`BIGINT` → `i64`, `INTEGER` → `i32`,
//! `BOOLEAN` → `bool`); SQLite's integers decode into the same types, out-of-range values failing
//! the read instead of wrapping.

use patron_domain::loyalty::tier::DayActivity;
use patron_domain::loyalty::{Entry, EntryKind, Lot, Points, Source, Wallet};
use patron_domain::{Day, Timestamp};
use patron_store::loyalty::{
    LoyaltyOrder, MemberRow, ProgramRecord, RedemptionRecord, RedemptionStatus, RewardRecord,
};
use patron_store::{SegmentRecord, StoreError, StoreResult, StoredModel, StoredPolicy};

/// Declares a row type with `#[derive(sqlx::FromRow)]` and a `COLUMNS` constant naming its
/// fields in order. A field marked `#[sqlx(flatten)]` is not allowed (its columns are another
/// row's `COLUMNS`).
#[macro_export]
macro_rules! row {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, sqlx::FromRow)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty),+
        }
        impl $name {
            /// The columns this row reads, in field order, comma-separated.
            pub const COLUMNS: &'static str = $crate::row!(@join $($field),+);
        }
    };
    (@join $first:ident $(, $rest:ident)*) => {
        concat!(stringify!($first) $(, ", ", stringify!($rest))*)
    };
}
pub use row;

fn micros(t: i64) -> Timestamp {
    Timestamp::from_micros(t)
}

/// Lots of an entry or a redemption, stored as a JSON array of `[lot id, points]`.
pub fn encode_lots(lots: &[(i64, Points)]) -> StoreResult<String> {
    serde_json::to_string(lots).map_err(|e| StoreError::Internal(format!("encode lots: {e}")))
}

fn decode_lots(json: &str) -> StoreResult<Vec<(i64, Points)>> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Internal(format!("stored lots {json:?}: {e}")))
}

/// A redemption status as stored.
pub fn status_name(status: RedemptionStatus) -> &'static str {
    match status {
        RedemptionStatus::Completed => "COMPLETED",
        RedemptionStatus::Cancelled => "CANCELLED",
    }
}

fn parse_status(s: &str) -> StoreResult<RedemptionStatus> {
    match s {
        "COMPLETED" => Ok(RedemptionStatus::Completed),
        "CANCELLED" => Ok(RedemptionStatus::Cancelled),
        other => Err(StoreError::Internal(format!(
            "stored redemption status {other:?}"
        ))),
    }
}

row! {
    /// `loyalty_programs`.
    pub struct ProgramRow {
        program_id: String,
        body: String,
        target_segment: Option<String>,
        revision: i64,
        create_time: i64,
        update_time: i64,
    }
}

impl From<ProgramRow> for ProgramRecord {
    fn from(r: ProgramRow) -> Self {
        ProgramRecord {
            program_id: r.program_id,
            body: r.body,
            target_segment: r.target_segment,
            revision: r.revision,
            create_time: micros(r.create_time),
            update_time: micros(r.update_time),
        }
    }
}

row! {
    /// `loyalty_rewards`.
    pub struct RewardRow {
        reward_id: String,
        program_id: String,
        body: String,
        required_segment: Option<String>,
        stock_remaining: Option<i64>,
        revision: i64,
        create_time: i64,
        update_time: i64,
    }
}

impl From<RewardRow> for RewardRecord {
    fn from(r: RewardRow) -> Self {
        RewardRecord {
            reward_id: r.reward_id,
            program_id: r.program_id,
            body: r.body,
            required_segment: r.required_segment,
            stock_remaining: r.stock_remaining,
            revision: r.revision,
            create_time: micros(r.create_time),
            update_time: micros(r.update_time),
        }
    }
}

row! {
    /// `loyalty_entries`, without the member's key.
    pub struct EntryRow {
        entry_id: i64,
        kind: String,
        amount: i64,
        points: i64,
        lots: String,
        event_id: Option<String>,
        redemption_id: Option<String>,
        rule: Option<String>,
        issuer: String,
        reason: String,
        created_at: i64,
        effective_at: i64,
        expires_at: Option<i64>,
    }
}

impl TryFrom<EntryRow> for Entry {
    type Error = StoreError;
    fn try_from(r: EntryRow) -> StoreResult<Self> {
        Ok(Entry {
            entry_id: r.entry_id,
            kind: EntryKind::parse(&r.kind)
                .ok_or_else(|| StoreError::Internal(format!("stored entry kind {:?}", r.kind)))?,
            amount: r.amount,
            points: r.points,
            lots: decode_lots(&r.lots)?,
            source: Source {
                event_id: r.event_id,
                redemption_id: r.redemption_id,
                rule: r.rule,
            },
            issuer: r.issuer,
            reason: r.reason,
            created_at: micros(r.created_at),
            effective_at: micros(r.effective_at),
            expires_at: r.expires_at.map(micros),
        })
    }
}

row! {
    /// `loyalty_redemptions`, without the member's key.
    pub struct RedemptionRow {
        redemption_id: String,
        request_id: String,
        reward_id: String,
        cost: i64,
        lots: String,
        fingerprint: String,
        status: String,
        created_at: i64,
        cancelled_at: Option<i64>,
    }
}

impl TryFrom<RedemptionRow> for RedemptionRecord {
    type Error = StoreError;
    fn try_from(r: RedemptionRow) -> StoreResult<Self> {
        Ok(RedemptionRecord {
            redemption_id: r.redemption_id,
            request_id: r.request_id,
            reward_id: r.reward_id,
            cost: r.cost,
            lots: decode_lots(&r.lots)?,
            fingerprint: r.fingerprint,
            status: parse_status(&r.status)?,
            created_at: micros(r.created_at),
            cancelled_at: r.cancelled_at.map(micros),
        })
    }
}

row! {
    /// `loyalty_members`, without the key.
    pub struct MemberDbRow {
        enrolled_at: i64,
        debt: i64,
        lifetime_earned: i64,
        lifetime_redeemed: i64,
        next_lot_id: i64,
        next_entry_id: i64,
        first_purchase_done: bool,
    }
}

impl From<MemberDbRow> for MemberRow {
    /// The member without its lots and activity.
    fn from(r: MemberDbRow) -> Self {
        MemberRow {
            enrolled_at: micros(r.enrolled_at),
            wallet: Wallet {
                lots: Vec::new(),
                debt: r.debt,
                lifetime_earned: r.lifetime_earned,
                lifetime_redeemed: r.lifetime_redeemed,
                next_lot_id: r.next_lot_id,
                next_entry_id: r.next_entry_id,
                new_entries: Vec::new(),
            },
            first_purchase_done: r.first_purchase_done,
            activity: Vec::new(),
        }
    }
}

row! {
    /// The key of a member-owned row.
    pub struct MemberKeyRow {
        customer_id: String,
        program_id: String,
    }
}

row! {
    /// `loyalty_lots`, without the member's key.
    pub struct LotRow {
        lot_id: i64,
        original: i64,
        remaining: i64,
        earned_at: i64,
        available_at: i64,
        expires_at: Option<i64>,
        activated: bool,
    }
}

impl From<LotRow> for Lot {
    fn from(r: LotRow) -> Self {
        Lot {
            lot_id: r.lot_id,
            original: r.original,
            remaining: r.remaining,
            earned_at: micros(r.earned_at),
            available_at: micros(r.available_at),
            expires_at: r.expires_at.map(micros),
            activated: r.activated,
        }
    }
}

row! {
    /// `loyalty_activity`, without the member's key.
    pub struct ActivityRow {
        day: i32,
        points: i64,
        spend: i64,
    }
}

impl From<ActivityRow> for DayActivity {
    fn from(r: ActivityRow) -> Self {
        DayActivity {
            day: Day::from_days(r.day),
            points: r.points,
            spend: r.spend,
        }
    }
}

row! {
    /// `loyalty_orders`, without the member's key.
    pub struct OrderRow {
        order_id: String,
        amount: i64,
        refunded: i64,
        purchased: bool,
        day: Option<i32>,
        multiplier_percent: i64,
        points: i64,
    }
}

impl TryFrom<OrderRow> for LoyaltyOrder {
    type Error = StoreError;
    fn try_from(r: OrderRow) -> StoreResult<Self> {
        let multiplier = r.multiplier_percent;
        Ok(LoyaltyOrder {
            order_id: r.order_id,
            amount: r.amount,
            refunded: r.refunded,
            purchased: r.purchased,
            day: r.day.map(Day::from_days),
            multiplier_percent: u32::try_from(multiplier).map_err(|_| {
                StoreError::Internal(format!("stored multiplier {multiplier} out of range"))
            })?,
            points: r.points,
        })
    }
}

row! {
    /// `value_models`.
    pub struct ModelRow {
        version: i64,
        created_at: i64,
        active: bool,
        body: String,
    }
}

impl From<ModelRow> for StoredModel {
    fn from(r: ModelRow) -> Self {
        StoredModel {
            version: r.version,
            created_at: micros(r.created_at),
            active: r.active,
            body: r.body,
        }
    }
}

row! {
    /// `tier_policy`.
    pub struct PolicyRow {
        revision: i64,
        updated_at: i64,
        body: String,
    }
}

impl From<PolicyRow> for StoredPolicy {
    fn from(r: PolicyRow) -> Self {
        StoredPolicy {
            revision: r.revision,
            updated_at: micros(r.updated_at),
            body: r.body,
        }
    }
}

row! {
    /// `segments`, with its dependencies as one JSON array of ids
    /// ([`crate::Backend::SEGMENT_DEPENDENCIES`], named `depends_on`).
    pub struct SegmentRow {
        segment_id: String,
        display_name: String,
        description: String,
        rule: String,
        revision: i64,
        create_time: i64,
        update_time: i64,
        depends_on: String,
    }
}

impl TryFrom<SegmentRow> for SegmentRecord {
    type Error = StoreError;
    fn try_from(r: SegmentRow) -> StoreResult<Self> {
        let mut depends_on: Vec<String> = serde_json::from_str(&r.depends_on)
            .map_err(|e| StoreError::Internal(format!("stored segment dependencies: {e}")))?;
        depends_on.sort_unstable();
        Ok(SegmentRecord {
            segment_id: r.segment_id,
            display_name: r.display_name,
            description: r.description,
            rule: r.rule,
            depends_on,
            revision: r.revision,
            create_time: micros(r.create_time),
            update_time: micros(r.update_time),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_lists_are_the_fields_in_order() {
        assert_eq!(
            ProgramRow::COLUMNS,
            "program_id, body, target_segment, revision, create_time, update_time"
        );
        assert_eq!(ActivityRow::COLUMNS, "day, points, spend");
    }
}
