//! Summary rows: the scans and look-ups scoring and segmentation read, carrying the profile.

use patron_domain::{Customer, CustomerId, Date, Day, Gender, Timestamp};

use super::events::{engagement, engagement_day, history, history_orders, nps_survey};
use super::{at, cid, now, other, profile_customer, purchase};
use crate::{OrderDay, Store, SummaryRow};

/// Asserts that `row` is what [`Store::get_customer`] says of its customer.
async fn assert_row_matches_customer(store: &impl Store, row: &SummaryRow) {
    let record = store
        .get_customer(&row.customer_id)
        .await
        .expect("get")
        .expect("exists");
    let id = row.customer_id.as_str();
    assert_eq!(
        row.signed_up_at, record.customer.profile.signed_up_at,
        "{id}"
    );
    assert_eq!(row.birth_date, record.customer.profile.birth_date, "{id}");
    assert_eq!(row.gender, record.customer.profile.gender, "{id}");
    assert_eq!(
        row.country.as_deref(),
        record.customer.profile.country.as_deref(),
        "{id}"
    );
    assert_eq!(*row.attributes, record.customer.profile.attributes, "{id}");
    assert_eq!(row.create_time, record.create_time, "{id}");
    assert_eq!(row.summary, record.summary, "{id}");
}
/// 30 customers: `sum00`…`sum19` upserted with a profile (the odd ones also get events), and
/// `sum20`…`sum29` created by events. Returns their ids in order.
async fn summary_fixture(store: &impl Store) -> Vec<CustomerId> {
    let mut upserted: Vec<Customer> = (0..20)
        .map(|i| profile_customer(&format!("sum{i:02}"), "US"))
        .collect();
    upserted[4].profile.birth_date = None;
    upserted[4].profile.signed_up_at = None;
    store
        .upsert_customers(&upserted, now())
        .await
        .expect("upsert");
    let mut events = Vec::new();
    for i in (1..30).filter(|i| i % 2 == 1 || *i >= 20) {
        let c = format!("sum{i:02}");
        events.extend(history(&c));
        events.push(other(
            &c,
            "nps",
            at(70, i64::from(i)),
            nps_survey(Some(u8::try_from(i % 11).expect("small"))),
        ));
    }
    let later = Timestamp::from_micros(now().as_micros() + 1_000_000);
    store.record_events(&events, later).await.expect("record");
    (0..30).map(|i| cid(&format!("sum{i:02}"))).collect()
}
pub async fn scan_summaries_pages_in_id_order(store: &impl Store) {
    assert!(
        store
            .scan_summaries(None, 10)
            .await
            .expect("scan")
            .is_empty()
    );
    let ids = summary_fixture(store).await;
    let mut seen = Vec::new();
    let mut after: Option<CustomerId> = None;
    loop {
        let page = store.scan_summaries(after.as_ref(), 7).await.expect("scan");
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.customer_id.clone());
        seen.extend(page);
    }
    let seen_ids: Vec<CustomerId> = seen.iter().map(|r| r.customer_id.clone()).collect();
    assert_eq!(seen_ids, ids);
    for row in &seen {
        assert_row_matches_customer(store, row).await;
    }
    // Spot checks: a customer without events has an empty summary; one with a full profile and
    // history has both.
    assert_eq!(seen[0].summary, patron_domain::CustomerSummary::default());
    assert_eq!(
        seen[0].birth_date,
        Some(Date::new(1990, 2, 28).expect("date"))
    );
    assert_eq!(seen[4].signed_up_at, None);
    assert_eq!(seen[3].summary.purchases.purchase_days, 4);
    assert_eq!(seen[3].summary.totals.last_nps, Some(3));
    assert_eq!(seen[25].signed_up_at, None);
    assert_eq!(seen[25].summary.totals.event_count, 12);
    // The profile and the day-level history.
    assert_eq!(
        (seen[3].gender, seen[3].country.as_deref()),
        (Gender::Female, Some("US"))
    );
    assert_eq!(
        *seen[3].attributes,
        profile_customer("x", "US").profile.attributes
    );
    assert_eq!(seen[3].orders, history_orders());
    assert_eq!(seen[3].engagement, [engagement_day(20, "login", 1)]);
    assert!(seen[0].orders.is_empty() && seen[0].engagement.is_empty());
    assert_eq!(
        (seen[25].gender, seen[25].country.as_deref()),
        (Gender::Unspecified, None)
    );
    assert!(seen[25].attributes.is_empty());
    assert_eq!(seen[25].orders, history_orders());

    // One large page holds everything; a cursor past the end gives nothing.
    let all = store.scan_summaries(None, 10_000).await.expect("scan");
    assert_eq!(all, seen);
    let from_middle = store
        .scan_summaries(Some(&cid("sum14")), 3)
        .await
        .expect("scan");
    assert_eq!(from_middle, seen[15..18].to_vec());
    assert!(
        store
            .scan_summaries(Some(&cid("zzz")), 10)
            .await
            .expect("scan")
            .is_empty()
    );
}
/// Cuts split the customers into runs of about equal size, in id order, and reading from each
/// cut to the next gives every customer once.
pub async fn customer_id_cuts_split_customers_into_equal_runs(store: &impl Store) {
    assert!(store.customer_id_cuts(4).await.expect("cuts").is_empty());
    let ids = summary_fixture(store).await;
    assert_eq!(ids.len(), 30);
    for parts in [0, 1] {
        assert!(
            store
                .customer_id_cuts(parts)
                .await
                .expect("cuts")
                .is_empty()
        );
    }
    // 30 customers (sum00 … sum29): runs of 10 end at the 10th and the 20th.
    assert_eq!(
        store.customer_id_cuts(3).await.expect("cuts"),
        [cid("sum09"), cid("sum19")]
    );
    // More parts than customers: one cut per customer but the last, none twice.
    let many = store.customer_id_cuts(100).await.expect("cuts");
    assert_eq!(many.len(), 29, "{many:?}");
    assert!(many.windows(2).all(|w| w[0] < w[1]));
    // Each run read on its own: every customer once, in order.
    let cuts = store.customer_id_cuts(4).await.expect("cuts");
    assert_eq!(cuts.len(), 3);
    let mut seen: Vec<CustomerId> = Vec::new();
    let mut starts: Vec<Option<CustomerId>> = vec![None];
    starts.extend(cuts.iter().cloned().map(Some));
    for (k, start) in starts.iter().enumerate() {
        let end = cuts.get(k);
        let page = store
            .scan_summaries(start.as_ref(), 100)
            .await
            .expect("scan");
        seen.extend(
            page.into_iter()
                .map(|r| r.customer_id)
                .take_while(|id| end.is_none_or(|e| id <= e)),
        );
    }
    assert_eq!(seen, ids);
}

pub async fn get_summaries_returns_the_existing_rows(store: &impl Store) {
    assert!(store.get_summaries(&[]).await.expect("get").is_empty());
    let ids = summary_fixture(store).await;
    // Some existing ids (one twice), some unknown.
    let asked = vec![
        ids[27].clone(),
        cid("unknown"),
        ids[3].clone(),
        ids[0].clone(),
        ids[3].clone(),
        cid("sum99"),
    ];
    let mut rows = store.get_summaries(&asked).await.expect("get");
    rows.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    let got: Vec<&str> = rows.iter().map(|r| r.customer_id.as_str()).collect();
    assert_eq!(got, ["sum00", "sum03", "sum27"]);
    for row in &rows {
        assert_row_matches_customer(store, row).await;
    }
    // More ids than one statement takes: every existing customer is found once.
    let mut many: Vec<CustomerId> = (0..25_000).map(|i| cid(&format!("nobody{i}"))).collect();
    for (i, id) in ids.iter().enumerate() {
        many.insert(i * 800, id.clone());
    }
    let mut rows = store.get_summaries(&many).await.expect("get");
    rows.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    let scanned = store.scan_summaries(None, 100).await.expect("scan");
    assert_eq!(rows, scanned);
}
pub async fn summary_rows_carry_the_profile(store: &impl Store) {
    let mut plain = profile_customer("prof-plain", "JP");
    plain.profile.attributes.clear();
    plain.profile.gender = Gender::Undisclosed;
    let full = profile_customer("prof-full", "DE");
    store
        .upsert_customers(&[full.clone(), plain.clone()], now())
        .await
        .expect("upsert");
    store
        .record_events(
            &[
                purchase("prof-full", "p1", at(30, 0), "o1", 700),
                engagement("prof-full", "g1", at(31, 0), "search"),
                engagement("prof-events", "g1", at(31, 0), "search"),
            ],
            now(),
        )
        .await
        .expect("record");
    let ids = [cid("prof-events"), cid("prof-full"), cid("prof-plain")];
    let scanned = store.scan_summaries(None, 10).await.expect("scan");
    let mut got = store.get_summaries(&ids).await.expect("get");
    got.sort_by(|a, b| a.customer_id.cmp(&b.customer_id));
    assert_eq!(got, scanned);
    let [events_only, with_full, with_plain] = &scanned[..] else {
        panic!("three rows, got {scanned:?}")
    };
    for (row, c) in [(with_full, &full), (with_plain, &plain)] {
        assert_eq!(row.customer_id, c.customer_id);
        assert_eq!(row.gender, c.profile.gender);
        assert_eq!(row.country.as_deref(), c.profile.country.as_deref());
        assert_eq!(*row.attributes, c.profile.attributes);
        assert_eq!(row.birth_date, c.profile.birth_date);
        assert_eq!(row.signed_up_at, c.profile.signed_up_at);
    }
    assert_eq!(with_full.attributes.len(), 4);
    assert_eq!(
        with_full.orders,
        [OrderDay {
            day: Day::from_days(30),
            net_amount: 700
        }]
    );
    assert_eq!(with_full.engagement, [engagement_day(31, "search", 1)]);
    assert!(with_plain.orders.is_empty() && with_plain.engagement.is_empty());
    assert_eq!(events_only.gender, Gender::Unspecified);
    assert_eq!(events_only.country, None);
    assert!(events_only.attributes.is_empty());
    assert_eq!(events_only.engagement, [engagement_day(31, "search", 1)]);
    for row in &scanned {
        assert_row_matches_customer(store, row).await;
    }

    // A replaced profile reads back replaced.
    let mut changed = full.clone();
    changed.profile.gender = Gender::Other;
    changed.profile.country = None;
    changed.profile.attributes.clear();
    store
        .upsert_customers(&[changed.clone()], now())
        .await
        .expect("upsert");
    let rows = store.get_summaries(&[cid("prof-full")]).await.expect("get");
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            &rows[0].gender,
            rows[0].country.as_deref(),
            &*rows[0].attributes
        ),
        (
            &changed.profile.gender,
            changed.profile.country.as_deref(),
            &changed.profile.attributes
        )
    );
    assert_eq!(rows[0].orders, with_full.orders);
}
