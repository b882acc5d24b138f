//! Events: record (duplicates, atomicity), stream in bulk, list newest first.

use patron_proto::customers::v1 as pb;
use tonic::Code;

use crate::support::{Backend, assert_status, purchase, refund, spawn_app, survey, ts, usd};

async fn record_reports_duplicates_and_keeps_summaries(backend: Backend) {
    let app = spawn_app(backend).await;
    let batch = vec![
        purchase("dana", "p1", ts(10, 0), "o1", 2_500),
        purchase("dana", "p2", ts(12, 0), "o2", 1_000),
        purchase("dana", "p1", ts(10, 0), "o1", 2_500),
        survey(
            "dana",
            "s1",
            ts(13, 0),
            pb::Survey {
                nps: Some(10),
                csat: Some(4),
                economic_benefit: Some(5),
                ..Default::default()
            },
        ),
    ];
    let out = app.record(batch.clone()).await.expect("record");
    assert_eq!(out.recorded_count, 3);
    assert_eq!(out.duplicate_count, 1);
    assert_eq!(out.duplicate_indexes, vec![2]);
    assert_eq!(out.created_customer_count, 1);
    let again = app.record(batch).await.expect("replay");
    assert_eq!((again.recorded_count, again.duplicate_count), (0, 4));

    // Out of order: a refund of o2 and an earlier purchase arrive later.
    app.record(vec![
        refund("dana", "r1", ts(20, 0), "o2", 1_000),
        purchase("dana", "p0", ts(5, 0), "o0", 700),
    ])
    .await
    .expect("record");
    let s = app
        .customer("dana")
        .await
        .expect("get")
        .summary
        .expect("summary");
    assert_eq!(s.event_count, 5);
    assert_eq!(s.order_count, 2, "o2 is fully refunded");
    assert_eq!(s.purchase_days, 2);
    assert_eq!(s.frequency, 1);
    assert_eq!(s.recency_days, 5);
    assert_eq!(s.first_purchase_day, Some(ts(5, 0)));
    assert_eq!(s.net_revenue, Some(usd(3_200)));
    assert_eq!(s.refunded, Some(usd(1_000)));
    assert_eq!(s.first_day_revenue, Some(usd(700)));
    assert_eq!(
        (s.nps_promoters, s.csat_sum, s.csat_count, s.survey_count),
        (1, 4, 1, 1)
    );
    assert_eq!(
        s.benefits
            .and_then(|b| b.economic)
            .map(|r| (r.sum, r.count)),
        Some((5, 1))
    );
}

async fn a_bad_event_fails_the_whole_batch(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut batch: Vec<pb::Event> = (0..5)
        .map(|i| purchase("erin", &format!("e{i}"), ts(1, i), &format!("o{i}"), 100))
        .collect();
    batch[3] = purchase("erin", "e3", ts(1, 3), "o3", -5);
    batch[4].customer_id = String::new();
    let err = app.record(batch).await.expect_err("invalid");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("events[3].purchase.amount.minor_units"),
    );
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("events[4].customer_id"),
    );
    // Nothing was stored, not even the valid events or their customer.
    assert_status(
        &app.customer("erin").await.expect_err("nothing stored"),
        Code::NotFound,
        "CUSTOMER_NOT_FOUND",
        None,
    );
}

async fn stream_loads_a_large_batch(backend: Backend) {
    let app = spawn_app_small_batches(backend).await;
    const N: usize = 30_000;
    let mut events: Vec<pb::Event> = (0..N)
        .map(|i| {
            purchase(
                &format!("s{}", i % 700),
                &format!("e{i}"),
                ts((i / 700) as i64, (i % 60) as i64),
                &format!("o{i}"),
                100 + i as i64,
            )
        })
        .collect();
    // Some repeats (already sent earlier in the stream) and some invalid events.
    events.extend((0..50).map(|i| {
        purchase(
            &format!("s{}", i % 700),
            &format!("e{i}"),
            ts(0, 0),
            &format!("o{i}"),
            1,
        )
    }));
    let mut bad = purchase("s1", "bad-currency", ts(1, 0), "x", 5);
    if let Some(pb::event::Kind::Purchase(p)) = bad.kind.as_mut() {
        p.amount = Some(patron_proto::common::v1::Money {
            currency_code: "EUR".into(),
            minor_units: 5,
        });
    }
    events.insert(17, bad);
    let total = events.len();
    let chunks: Vec<pb::StreamEventsRequest> = events
        .chunks(997)
        .map(|c| pb::StreamEventsRequest { events: c.to_vec() })
        .collect();
    let out = app
        .customers
        .clone()
        .stream_events(tokio_stream::iter(chunks))
        .await
        .expect("stream")
        .into_inner();
    assert_eq!(out.received_count, total as i64);
    assert_eq!(out.recorded_count, N as i64);
    assert_eq!(out.duplicate_count, 50);
    assert_eq!(out.rejected_count, 1);
    assert_eq!(out.created_customer_count, 700);
    assert_eq!(out.rejections.len(), 1);
    assert_eq!(out.rejections[0].index, 17);
    assert_eq!(out.rejections[0].event_id, "bad-currency");
    assert_eq!(out.rejections[0].field, "purchase.amount.currency_code");
    let s = app
        .customer("s5")
        .await
        .expect("get")
        .summary
        .expect("summary");
    let want: i64 = (0..N)
        .filter(|i| i % 700 == 5)
        .map(|i| 100 + i as i64)
        .sum();
    assert_eq!(s.net_revenue, Some(usd(want)));
    assert_eq!(app.all_customer_ids().await.len(), 700);
}

/// A server committing streams in batches of 1,000, so a test stream spans many transactions.
async fn spawn_app_small_batches(backend: Backend) -> crate::support::TestApp {
    crate::support::spawn_app_with(backend, |s| s.stream_batch_size = 1_000).await
}

async fn list_events_newest_first_with_paging_and_kinds(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut events: Vec<pb::Event> = (0..25)
        .map(|i| purchase("fay", &format!("p{i:02}"), ts(i, 0), &format!("o{i}"), 10))
        .collect();
    events.push(refund("fay", "r1", ts(30, 0), "o3", 10));
    events.push(survey(
        "fay",
        "s1",
        ts(31, 0),
        pb::Survey {
            csat: Some(3),
            ..Default::default()
        },
    ));
    app.record(events).await.expect("record");
    let all = app.all_events("fay").await;
    assert_eq!(all.len(), 27);
    assert_eq!(all[0].event_id, "s1");
    assert_eq!(all[1].event_id, "r1");
    assert_eq!(all[26].event_id, "p00");
    assert!(
        all.windows(2)
            .all(|w| w[0].occurred_at.as_ref().map(|t| t.seconds)
                >= w[1].occurred_at.as_ref().map(|t| t.seconds))
    );
    assert!(all.iter().all(|e| e.record_time.is_some()));

    let mut client = app.customers.clone();
    let page = client
        .list_customer_events(pb::ListCustomerEventsRequest {
            customer_id: "fay".into(),
            page_size: 10,
            page_token: String::new(),
            kinds: vec![pb::EventKind::Purchase.into()],
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page.events.len(), 10);
    assert_eq!(page.events[0].event_id, "p24");
    assert!(!page.next_page_token.is_empty());
    // A token is only valid with the same kinds.
    let err = client
        .list_customer_events(pb::ListCustomerEventsRequest {
            customer_id: "fay".into(),
            page_size: 10,
            page_token: page.next_page_token.clone(),
            kinds: vec![],
        })
        .await
        .expect_err("token of another query");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
        Some("page_token"),
    );
    let next = client
        .list_customer_events(pb::ListCustomerEventsRequest {
            customer_id: "fay".into(),
            page_size: 10,
            page_token: page.next_page_token,
            kinds: vec![pb::EventKind::Purchase.into()],
        })
        .await
        .expect("next page")
        .into_inner();
    assert_eq!(next.events[0].event_id, "p14");
    // A known customer with no events of a kind: an empty page, not an error.
    let none = client
        .list_customer_events(pb::ListCustomerEventsRequest {
            customer_id: "fay".into(),
            kinds: vec![pb::EventKind::Custom.into()],
            ..Default::default()
        })
        .await
        .expect("empty page")
        .into_inner();
    assert!(none.events.is_empty());
}

crate::both_backends!(
    record_reports_duplicates_and_keeps_summaries,
    a_bad_event_fails_the_whole_batch,
    stream_loads_a_large_batch,
    list_events_newest_first_with_paging_and_kinds,
);
