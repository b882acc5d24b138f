//! Customers as they were: rows rebuilt from the stored events up to an earlier instant.

use std::collections::HashMap;
use std::sync::Arc;

use patron_domain::summary::OrderRow;
use patron_domain::{
    BatchAggregate, CustomerId, CustomerSummary, Event, Timestamp, derive_purchase_stats,
};
use patron_store::{EngagementDay, OrderDay, Store, StoreResult, SummaryRow};

/// Rows as of an earlier instant.
#[derive(Debug, Default)]
pub struct RowsAsOf {
    /// The rows that existed by then, in the order given: rebuilt from the stored events up to
    /// it where a later event changed them (the profile fields are today's), else as they are.
    pub rows: Vec<Arc<SummaryRow>>,
    /// Customers whose first event is after the instant: nothing to describe then.
    pub before_first_event: Vec<CustomerId>,
}

/// `rows` as of `as_of` (not in the future): one bulk read of the events up to it, for the
/// customers with a later event ([`Store::events_until`]).
pub async fn rows_as_of(
    store: &dyn Store,
    rows: Vec<Arc<SummaryRow>>,
    as_of: Timestamp,
) -> StoreResult<RowsAsOf> {
    let mut out = RowsAsOf::default();
    let stale: Vec<CustomerId> = rows
        .iter()
        .filter(|r| changed_after(r, as_of) && !began_after(r, as_of))
        .map(|r| r.customer_id.clone())
        .collect();
    let events = if stale.is_empty() {
        Vec::new()
    } else {
        store.events_until(&stale, as_of, &[]).await?
    };
    // In customer id order: each customer's events are one run.
    let mut runs: HashMap<&CustomerId, &[Event]> = HashMap::new();
    for run in events.chunk_by(|a, b| a.customer_id == b.customer_id) {
        runs.insert(&run[0].customer_id, run);
    }
    for row in rows {
        if began_after(&row, as_of) {
            out.before_first_event.push(row.customer_id.clone());
        } else if changed_after(&row, as_of) {
            let run = runs.get(&row.customer_id).copied().unwrap_or(&[]);
            out.rows.push(Arc::new(rebuild_row(&row, run)));
        } else {
            out.rows.push(row);
        }
    }
    Ok(out)
}

/// Whether the customer's first event is after `as_of`.
pub fn began_after(row: &SummaryRow, as_of: Timestamp) -> bool {
    row.summary
        .totals
        .first_event_at
        .is_some_and(|first| as_of < first)
}

/// Whether an event after `as_of` changed the row.
pub fn changed_after(row: &SummaryRow, as_of: Timestamp) -> bool {
    row.summary
        .totals
        .last_event_at
        .is_some_and(|last| as_of < last)
}

/// `row` with its summary, orders and engagement computed from `events` alone.
pub fn rebuild_row(row: &SummaryRow, events: &[Event]) -> SummaryRow {
    let agg = BatchAggregate::from_events(events);
    let mut summary = CustomerSummary::default();
    for (_, delta) in &agg.summaries {
        summary.totals.merge(delta);
    }
    let rows: Vec<OrderRow> = agg
        .orders
        .iter()
        .map(|(_, _, d)| OrderRow {
            day: d.day,
            amount: d.amount,
            refunded: d.refunded,
        })
        .collect();
    summary.purchases = derive_purchase_stats(&rows);
    let orders = active_orders(&rows);
    let mut names: HashMap<String, Arc<str>> = HashMap::new();
    let mut engagement: Vec<EngagementDay> = agg
        .engagement
        .into_iter()
        .map(|(_, day, activity, count)| {
            let activity = Arc::clone(
                names
                    .entry(activity.clone())
                    .or_insert_with(|| Arc::from(activity.as_str())),
            );
            EngagementDay {
                day,
                activity,
                count,
            }
        })
        .collect();
    engagement.sort_unstable();
    SummaryRow {
        summary,
        orders,
        engagement,
        ..row.clone()
    }
}

/// The active orders of `rows` (purchase recorded, not wholly refunded), ascending by (day, net
/// amount), as a row holds them.
pub fn active_orders(rows: &[OrderRow]) -> Vec<OrderDay> {
    let mut orders: Vec<OrderDay> = rows
        .iter()
        .filter(|o| o.is_active())
        .filter_map(|o| {
            o.day.map(|day| OrderDay {
                day,
                net_amount: o.net(),
            })
        })
        .collect();
    orders.sort_unstable();
    orders
}

#[cfg(test)]
mod tests {
    use patron_domain::{
        CustomerId, Day, Engagement, Event, EventData, EventId, OrderId, Purchase, Refund,
        Timestamp,
    };
    use patron_store::Store;
    use patron_store_sqlite::SqliteStore;

    use std::sync::Arc;

    use super::rows_as_of;

    fn at(day: i32, second: i64) -> Timestamp {
        Timestamp::from_micros(Day::from_days(day).start().as_micros() + second * 1_000_000)
    }

    fn event(id: &str, when: Timestamp, data: EventData) -> Event {
        Event {
            customer_id: CustomerId::parse("ana").expect("id"),
            event_id: EventId::parse(id).expect("id"),
            occurred_at: when,
            data,
        }
    }

    fn purchase(order: &str, amount: i64) -> EventData {
        EventData::Purchase(Purchase {
            order_id: OrderId::parse(order).expect("id"),
            amount,
            item_count: 1,
            channel: "web".into(),
        })
    }

    fn refund(order: &str, amount: i64) -> EventData {
        EventData::Refund(Refund {
            order_id: OrderId::parse(order).expect("id"),
            amount,
        })
    }

    fn visit() -> EventData {
        EventData::Engagement(Engagement {
            activity: "visit".into(),
        })
    }

    async fn store_with(events: &[Event]) -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let store = SqliteStore::connect(&url).await.expect("store");
        store.migrate().await.expect("migrate");
        store
            .record_events(events, at(400, 0))
            .await
            .expect("record");
        (store, dir)
    }

    // The row as of an instant is the row of a store that saw only the events up to it:
    // summary, active orders and engagement days (not today's), with later refunds and later
    // events of the same second left out.
    #[tokio::test]
    async fn a_row_as_of_an_instant_is_the_row_of_the_events_up_to_it() {
        let as_of = at(300, 10);
        let events = vec![
            event("e01", at(100, 0), purchase("o1", 5_000)),
            event("e02", at(100, 5), visit()),
            event("e03", at(150, 0), purchase("o2", 2_000)),
            event("e04", at(160, 0), refund("o2", 500)),
            event("e05", at(200, 0), purchase("o3", 1_000)),
            event("e06", at(200, 1), refund("o3", 1_000)),
            event("e07", at(250, 0), visit()),
            event("e08", at(250, 3), visit()),
            event("e09", as_of, purchase("o4", 700)),
            // After `as_of`: a refund of an earlier order, a purchase, a visit; one a microsecond
            // later, whose id sorts before the others.
            event("e10", at(300, 11), refund("o1", 5_000)),
            event("e11", at(320, 0), purchase("o5", 9_000)),
            event("e12", at(330, 0), visit()),
            event(
                "!",
                Timestamp::from_micros(as_of.as_micros() + 1),
                purchase("o6", 100),
            ),
        ];
        let (all, _a) = store_with(&events).await;
        let cut: Vec<Event> = events
            .iter()
            .filter(|e| e.occurred_at <= as_of)
            .cloned()
            .collect();
        let (then, _b) = store_with(&cut).await;
        let id = CustomerId::parse("ana").expect("id");
        let today = all
            .get_summaries(std::slice::from_ref(&id))
            .await
            .expect("rows");
        let expected = then.get_summaries(&[id]).await.expect("rows");
        let rebuilt = rows_as_of(&all, vec![Arc::new(today[0].clone())], as_of)
            .await
            .expect("rebuilt");
        let rebuilt = &rebuilt.rows[0];
        assert_eq!(rebuilt.summary, expected[0].summary);
        assert_eq!(rebuilt.orders, expected[0].orders);
        assert_eq!(rebuilt.engagement, expected[0].engagement);
        assert_ne!(
            today[0].orders, rebuilt.orders,
            "today's orders differ (o1 refunded, o5 and o6 bought later)"
        );
        assert_eq!(rebuilt.orders.len(), 3, "o1, o2 (part-refunded), o4");
    }
}
