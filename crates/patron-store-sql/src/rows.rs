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
use std::collections::HashSet;
use std::sync::Arc;

use patron_domain::{Customer, CustomerId, CustomerProfile, Day, Event, EventId, Timestamp};
use patron_store::feed::{Change, ChangeKind, FeedHead};
use patron_store::loyalty::{
    LoyaltyOrder, MemberRow, ProgramRecord, RedemptionRecord, RedemptionStatus, RewardRecord,
};
use patron_store::{
    CustomerRecord, SegmentRecord, StoreError, StoreResult, StoredEvent, StoredModel, StoredPolicy,
    SummaryRow, columns, decode, decode_attributes, decode_event_data,
};
use sqlx::FromRow;

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

row! {
    /// `customers`: the columns of a customer record before its summary (`birth_date` widened
    /// to BIGINT on Postgres).
    pub struct CustomerRow {
        customer_id: String,
        birth_date: Option<i64>,
        gender: String,
        country: Option<String>,
        signed_up_at: Option<i64>,
        attributes: String,
        create_time: Option<i64>,
        update_time: Option<i64>,
    }
}

/// A customer record from a row of [`CustomerRow`]'s columns and the summary's columns (named as
/// in [`columns::all`], NULL where the customer has no summary yet), read by name.
pub fn customer_record<'r, R>(
    row: &'r R,
    db_err: fn(sqlx::Error) -> StoreError,
) -> StoreResult<CustomerRecord>
where
    R: sqlx::Row,
    CustomerRow: sqlx::FromRow<'r, R>,
    &'static str: sqlx::ColumnIndex<R>,
    Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let r = CustomerRow::from_row(row).map_err(db_err)?;
    let values = columns::all()
        .map(|c| row.try_get::<Option<i64>, _>(c).map_err(db_err))
        .collect::<StoreResult<Vec<_>>>()?;
    let customer_id = crate::customer_id(r.customer_id)?;
    let birth_date = decode::birth_date(&customer_id, r.birth_date)?;
    let gender = decode::gender(&customer_id, &r.gender)?;
    let create_time = decode::create_time(&customer_id, r.create_time)?;
    Ok(CustomerRecord {
        customer: Customer {
            customer_id,
            profile: CustomerProfile {
                birth_date,
                gender,
                country: r.country,
                signed_up_at: r.signed_up_at.map(micros),
                attributes: decode_attributes(&r.attributes)?,
            },
        },
        create_time,
        update_time: r.update_time.map(micros),
        summary: columns::summary_from_values(&values),
    })
}

row! {
    /// `events`, as a stored event.
    pub struct EventRow {
        customer_id: String,
        event_id: String,
        occurred_at: i64,
        recorded_at: i64,
        data: String,
    }
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = StoreError;
    fn try_from(r: EventRow) -> StoreResult<Self> {
        let bad = |e: patron_domain::id::IdError| StoreError::Internal(format!("stored id: {e}"));
        Ok(StoredEvent {
            event: Event {
                customer_id: CustomerId::parse(r.customer_id).map_err(bad)?,
                event_id: EventId::parse(r.event_id).map_err(bad)?,
                occurred_at: micros(r.occurred_at),
                data: decode_event_data(&r.data)?,
            },
            recorded_at: micros(r.recorded_at),
        })
    }
}

row! {
    /// `change_feed`.
    pub struct ChangeRow {
        position: i64,
        kind: String,
        key: String,
        scope: String,
        txn: i64,
        committed_at: i64,
    }
}

impl TryFrom<ChangeRow> for Change {
    type Error = StoreError;
    fn try_from(r: ChangeRow) -> StoreResult<Self> {
        Ok(Change {
            position: r.position,
            kind: ChangeKind::from_code(&r.kind)
                .ok_or_else(|| StoreError::Internal(format!("stored change kind {:?}", r.kind)))?,
            key: r.key,
            scope: r.scope,
            txn: r.txn,
            committed_at: micros(r.committed_at),
        })
    }
}

row! {
    /// `change_feed_head`.
    pub struct HeadRow {
        position: i64,
        pruned_through: i64,
        database_id: String,
    }
}

impl From<HeadRow> for FeedHead {
    fn from(r: HeadRow) -> Self {
        FeedHead {
            position: r.position,
            pruned_through: r.pruned_through,
            database_id: r.database_id,
        }
    }
}

/// The customer's columns of a summary row (`SummaryRow` without its summary, orders and
/// engagement), borrowed from the database row: bulk reads decode a million of them. The summary
/// values travel in one column named [`SUMMARY_VALUES`], in each backend's own encoding.
#[derive(Debug, sqlx::FromRow)]
pub struct SummaryHeadRow<'r> {
    pub customer_id: String,
    pub signed_up_at: Option<i64>,
    pub create_time: Option<i64>,
    pub birth_date: Option<i64>,
    pub gender: &'r str,
    pub country: Option<&'r str>,
    pub attributes: &'r str,
}

/// The name of the column of a summary row that holds its summary's values.
pub const SUMMARY_VALUES: &str = "summary_values";

/// A summary row from its customer's columns and its summary's values (in [`columns::all`]
/// order), without orders and engagement.
pub fn summary_row(head: SummaryHeadRow<'_>, values: &[Option<i64>]) -> StoreResult<SummaryRow> {
    let customer_id = crate::customer_id(head.customer_id)?;
    if values.len() != columns::COUNT {
        return Err(StoreError::Internal(format!(
            "stored summary of {customer_id}: {} values, not {}",
            values.len(),
            columns::COUNT
        )));
    }
    let create_time = decode::create_time(&customer_id, head.create_time)?;
    let birth_date = decode::birth_date(&customer_id, head.birth_date)?;
    let gender = decode::gender(&customer_id, head.gender)?;
    Ok(SummaryRow {
        customer_id,
        signed_up_at: head.signed_up_at.map(micros),
        create_time,
        birth_date,
        gender,
        country: head.country.map(patron_store::shared::country),
        attributes: patron_store::shared::attributes(head.attributes)?,
        summary: columns::summary_from_values(values),
        orders: Vec::new(),
        engagement: Vec::new(),
    })
}

/// The shared copy of `name`, made on first sight (activity names of engagement days).
pub fn intern(names: &mut HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(shared) = names.get(name) {
        return Arc::clone(shared);
    }
    let shared: Arc<str> = Arc::from(name);
    names.insert(Arc::clone(&shared));
    shared
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
