//! The behaviour every [`Store`](crate::Store) must show, as async functions over a fresh,
//! empty store.
//!
//! Each backend runs the whole suite with [`conformance_tests!`](crate::conformance_tests), so
//! SQLite and Postgres are held to exactly the same contract. Compiled only with the
//! `conformance` feature, which the backends turn on for their tests (their dev-dependencies).
//!
//! One file per concern; every case is a `pub async fn NAME(store)` re-exported here, and
//! named once in [`conformance_tests!`](crate::conformance_tests) (tidy checks that it is).
//! Helpers shared by several files live here.

mod customers;
mod erasure;
mod events;
mod feed;
mod loyalty;
mod models;
mod segments;
mod summaries;

pub use customers::*;
pub use erasure::*;
pub use events::*;
pub use feed::*;
pub use loyalty::*;
pub use models::*;
pub use segments::*;
pub use summaries::*;

use patron_domain::{
    AttributeKey, AttributeValue, Customer, CustomerId, CustomerProfile, Date, Day, Event,
    EventData, EventId, Gender, OrderId, Purchase, Refund, Timestamp,
};

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async expression
/// producing `(store, guard)`: a fresh, empty store and whatever must live as long as it (a
/// temporary directory, say).
///
/// An optional leading attribute is put on every generated test, e.g.
/// `conformance_tests!(#[ignore = "needs a server"] fresh().await)`.
#[macro_export]
macro_rules! conformance_tests {
    (@cases $attrs:tt $make:expr; $($case:ident),* $(,)?) => {
        $(
            $crate::conformance_tests!(@case $attrs $make; $case);
        )*
    };
    (@case [$($attr:tt)*] $make:expr; $case:ident) => {
        #[tokio::test]
        $($attr)*
        async fn $case() {
            let (store, _guard) = $make;
            $crate::conformance::$case(&store).await;
        }
    };
    (@all $attrs:tt $make:expr) => {
        $crate::conformance_tests!(@cases $attrs $make;
            // customers.rs
            upsert_and_get_round_trip,
            list_customers_pages_in_id_order,
            unknown_customers_are_created_by_events,
            // events.rs
            events_are_idempotent,
            summaries_do_not_depend_on_arrival_order,
            refunds_cancel_orders_even_before_the_purchase_arrives,
            survey_and_support_aggregates,
            list_events_newest_first_with_kinds_and_cursor,
            events_until_reads_many_histories_up_to_an_instant,
            order_and_engagement_days_do_not_depend_on_arrival_order,
            large_batch_in_one_call,
            // summaries.rs
            summary_rows_carry_the_profile,
            scan_summaries_pages_in_id_order,
            customer_id_cuts_split_customers_into_equal_runs,
            get_summaries_returns_the_existing_rows,
            // models.rs
            value_models_are_versioned_listed_and_activated,
            models_stored_without_activation_stay_inactive,
            concurrent_model_writes_leave_exactly_one_active,
            tier_policy_revisions_are_checked,
            concurrent_policy_writes_on_one_revision_let_one_win,
            // segments.rs
            segments_are_created_listed_and_updated,
            segment_cycles_and_missing_dependencies_are_refused,
            segments_in_use_cannot_be_deleted,
            concurrent_segment_updates_cannot_close_a_cycle,
            // loyalty.rs
            loyalty_programs_and_rewards_are_stored,
            member_changes_round_trip,
            refused_member_changes_write_nothing,
            reward_stock_is_taken_once,
            events_are_applied_once,
            members_to_settle_finds_expired_and_matured_lots,
            loyalty_entries_are_listed_newest_first,
            scan_members_pages_in_key_order_with_lots_and_activity,
            segments_named_by_loyalty_cannot_be_deleted,
            concurrent_member_changes_are_serialized,
            // erasure.rs
            delete_erases_everything,
            erasure_moves_loyalty_rows_to_a_pseudonym,
            erasure_keeps_the_books_and_leaves_no_trace,
            erasure_and_member_changes_serialize,
            // feed.rs
            every_write_appends_its_changes_in_order,
            refused_writes_append_nothing,
            events_of_returns_the_events_of_one_commit,
            pruning_keeps_what_live_readers_and_consumers_have_not_passed,
            consumer_leases_admit_one_owner,
        );
    };
    // The attribute form comes first: a plain `$make:expr` would swallow `#[...]` as an
    // attribute on the expression.
    (#[$attr:meta] $make:expr) => {
        $crate::conformance_tests!(@all [#[$attr]] $make);
    };
    ($make:expr) => {
        $crate::conformance_tests!(@all [] $make);
    };
}

/// A look below the [`Store`](crate::Store) API at a backend's tables, for the erasure cases:
/// this crate names no driver, so each backend answers with its own SQL (implemented in its
/// `testing` module).
#[async_trait::async_trait]
pub trait RawTables: Send + Sync {
    /// Every text column of every table of the schema (the backend's bookkeeping tables
    /// included), as (table, column), sorted.
    async fn text_columns(&self) -> crate::StoreResult<Vec<(String, String)>>;

    /// How many rows of `table` hold `needle` anywhere inside `column`'s text.
    async fn rows_containing(
        &self,
        table: &str,
        column: &str,
        needle: &str,
    ) -> crate::StoreResult<i64>;
}

/// A fixed "now" for the suite: 2026-01-01T00:00:00Z.
pub fn now() -> Timestamp {
    Day::from_days(20_454).start()
}

fn cid(s: &str) -> CustomerId {
    CustomerId::parse(s).expect("valid id")
}

fn at(day: i32, second: i64) -> Timestamp {
    Timestamp::from_micros(Day::from_days(day).start().as_micros() + second * 1_000_000)
}

/// A purchase event.
pub fn purchase(customer: &str, id: &str, when: Timestamp, order: &str, amount: i64) -> Event {
    Event {
        customer_id: cid(customer),
        event_id: EventId::parse(id).expect("valid id"),
        occurred_at: when,
        data: EventData::Purchase(Purchase {
            order_id: OrderId::parse(order).expect("valid id"),
            amount,
            item_count: 2,
            channel: "web".into(),
        }),
    }
}

fn refund(customer: &str, id: &str, when: Timestamp, order: &str, amount: i64) -> Event {
    Event {
        customer_id: cid(customer),
        event_id: EventId::parse(id).expect("valid id"),
        occurred_at: when,
        data: EventData::Refund(Refund {
            order_id: OrderId::parse(order).expect("valid id"),
            amount,
        }),
    }
}

fn other(customer: &str, id: &str, when: Timestamp, data: EventData) -> Event {
    Event {
        customer_id: cid(customer),
        event_id: EventId::parse(id).expect("valid id"),
        occurred_at: when,
        data,
    }
}

fn profile_customer(id: &str, country: &str) -> Customer {
    let mut attributes = patron_domain::Attributes::new();
    attributes.insert(
        AttributeKey::parse("plan").expect("key"),
        AttributeValue::String("pro".into()),
    );
    attributes.insert(
        AttributeKey::parse("seats").expect("key"),
        AttributeValue::Int(12),
    );
    attributes.insert(
        AttributeKey::parse("score").expect("key"),
        AttributeValue::Double(0.5),
    );
    attributes.insert(
        AttributeKey::parse("vip").expect("key"),
        AttributeValue::Bool(true),
    );
    Customer {
        customer_id: cid(id),
        profile: CustomerProfile {
            birth_date: Some(Date::new(1990, 2, 28).expect("date")),
            gender: Gender::Female,
            country: Some(country.into()),
            signed_up_at: Some(at(19_000, 42)),
            attributes,
        },
    }
}
