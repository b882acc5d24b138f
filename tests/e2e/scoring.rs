//! ScoringService over real gRPC: profiles with and without a model, fitting and model versions,
//! tier policies, streaming, what-if scoring, and bad input.

use patron_proto::customers::v1 as cpb;
use patron_proto::scoring::v1 as pb;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::{Backend, TestApp, assert_status, purchase, spawn_app, survey, usd};

fn scoring(app: &TestApp) -> ScoringServiceClient<Channel> {
    ScoringServiceClient::new(app.channel.clone())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// `days` days before now, at noon-ish.
pub(crate) fn ago(days: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: now_secs() - days * 86_400 - 3_600,
        nanos: 0,
    }
}

/// A varied population: customer `c{i}` buys on a few distinct days over the last year.
pub(crate) fn population(customers: usize) -> Vec<cpb::Event> {
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    let mut events = Vec::new();
    for c in 0..customers {
        let first = 30 + next(330) as i64;
        let purchases = 1 + next(if c % 3 == 0 { 12 } else { 3 }) as i64;
        for k in 0..purchases {
            let day = first - (k * first / purchases.max(1)).min(first);
            let amount = 1_000 + next(20_000) as i64;
            events.push(purchase(
                &format!("c{c:03}"),
                &format!("p{c}-{k}"),
                ago(day),
                &format!("o{c}-{k}"),
                amount,
            ));
        }
        if c % 4 == 0 {
            events.push(survey(
                &format!("c{c:03}"),
                &format!("s{c}"),
                ago(10),
                cpb::Survey {
                    economic_benefit: Some(1 + next(5) as i32),
                    functional_benefit: Some(1 + next(5) as i32),
                    price_cost: Some(1 + next(5) as i32),
                    nps: Some(next(11) as i32),
                    csat: Some(1 + next(5) as i32),
                    ..Default::default()
                },
            ));
        }
    }
    events
}

async fn fitted(backend: Backend) -> (TestApp, pb::ValueModel) {
    let app = spawn_app(backend).await;
    app.record(population(150)).await.expect("record");
    let model = scoring(&app)
        .fit_value_model(pb::FitValueModelRequest::default())
        .await
        .expect("fit")
        .into_inner()
        .model
        .expect("model");
    (app, model)
}

async fn value(app: &TestApp, id: &str) -> Result<pb::CustomerValue, tonic::Status> {
    scoring(app)
        .get_customer_value(pb::GetCustomerValueRequest {
            customer_id: id.into(),
            as_of: None,
            intervals: false,
        })
        .await
        .map(|r| r.into_inner().value.expect("value"))
}

async fn without_a_model_profiles_say_so(backend: Backend) {
    let app = spawn_app(backend).await;
    app.record(vec![
        purchase("solo", "p1", ago(20), "o1", 4_200),
        purchase("solo", "p2", ago(5), "o2", 800),
    ])
    .await
    .expect("record");
    let v = value(&app, "solo").await.expect("value");
    assert_eq!(v.status, pb::ScoreStatus::NoModel as i32);
    assert_eq!(v.model_version, 0);
    let clv = v.clv.expect("clv");
    assert_eq!(clv.historical_revenue, Some(usd(5_000)));
    assert_eq!(clv.probability_alive, None);
    assert_eq!(clv.predicted_clv, None);
    assert!(v.tier.is_none(), "no tier can be made up without a model");
    assert_eq!(
        v.rfm.as_ref().map(|r| (r.frequency, r.recency_score)),
        Some((1, 0))
    );
    assert!(!v.drivers.is_empty());
    assert!(v.drivers[0].contains("No value model"), "{:?}", v.drivers);
    let err = scoring(&app)
        .get_value_model(pb::GetValueModelRequest { version: 0 })
        .await
        .expect_err("none yet");
    assert_status(&err, Code::NotFound, "MODEL_NOT_FOUND", None);
}

async fn fitted_models_score_every_customer(backend: Backend) {
    let (app, model) = fitted(backend).await;
    assert_eq!(model.version, 1);
    assert!(model.active, "the first model is activated");
    let bg = model.bg_nbd.expect("bg/nbd");
    assert!(bg.converged);
    assert!(bg.r > 0.0 && bg.alpha > 0.0 && bg.a > 0.0 && bg.b > 0.0);
    assert_eq!(model.customers, 150);
    assert!(model.gamma_gamma.is_some());

    let v = value(&app, "c000").await.expect("value");
    assert_eq!(v.status, pb::ScoreStatus::Scored as i32);
    assert_eq!(v.model_version, 1);
    let clv = v.clv.expect("clv");
    let p = clv.probability_alive.expect("p alive");
    assert!((0.0..=1.0).contains(&p), "{p}");
    assert!(clv.expected_purchases.expect("expected purchases") >= 0.0);
    assert!(clv.predicted_clv.expect("clv").minor_units >= 0);
    let rfm = v.rfm.expect("rfm");
    for s in [rfm.recency_score, rfm.frequency_score, rfm.monetary_score] {
        assert!((1..=5).contains(&s), "{s}");
    }
    assert_ne!(rfm.segment, pb::RfmSegment::Unspecified as i32);
    let tier = v.tier.expect("tier");
    assert!(["platinum", "gold", "silver", "bronze"].contains(&tier.name.as_str()));
    assert!(
        v.drivers.len() >= 2 && v.drivers.len() <= 5,
        "{:?}",
        v.drivers
    );
    let perceived = v.perceived_value.expect("perceived");
    assert!(perceived.value_index.is_some(), "c000 answered a survey");

    // The shares of the default policy hold over the population (2 / 8 / 20 / 70 %).
    let mut tiers = std::collections::HashMap::new();
    let mut stream = scoring(&app)
        .stream_customer_values(pb::StreamCustomerValuesRequest {
            filter: None,
            chunk_size: 40,
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = 0;
    let mut sizes = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        sizes.push(chunk.values.len());
        for v in chunk.values {
            streamed += 1;
            *tiers
                .entry(v.tier.map(|t| t.name).unwrap_or_default())
                .or_insert(0) += 1;
        }
    }
    assert_eq!(streamed, 150);
    // Full messages of the asked size, then the rest (the stream computes 128-row batches).
    assert_eq!(sizes, [40, 40, 40, 30], "{sizes:?}");
    let platinum = tiers.get("platinum").copied().unwrap_or(0);
    assert!((1..=6).contains(&platinum), "{tiers:?}");
    assert!(tiers.get("bronze").copied().unwrap_or(0) >= 90, "{tiers:?}");

    // The BASIC view is the FULL profile without its sentences.
    let all = |view: pb::CustomerValueView| {
        let mut client = scoring(&app);
        async move {
            let mut stream = client
                .stream_customer_values(pb::StreamCustomerValuesRequest {
                    view: view.into(),
                    ..Default::default()
                })
                .await
                .expect("stream")
                .into_inner();
            let mut out = Vec::new();
            while let Some(chunk) = stream.message().await.expect("chunk") {
                out.extend(chunk.values);
            }
            out
        }
    };
    let full = all(pb::CustomerValueView::Full).await;
    let basic = all(pb::CustomerValueView::Basic).await;
    assert_eq!(full.len(), 150);
    assert_eq!(basic.len(), 150);
    assert!(full.iter().all(|v| !v.drivers.is_empty()));
    for (f, b) in full.into_iter().zip(basic) {
        assert!(b.drivers.is_empty(), "{b:?}");
        let mut f = f;
        f.drivers.clear();
        // Tenure is computed at each call's own instant.
        assert_eq!(f.customer_id, b.customer_id);
        assert_eq!(f.clv, b.clv);
        assert_eq!(f.tier, b.tier);
        assert_eq!(f.rfm, b.rfm);
        assert_eq!(f.quadrant, b.quadrant);
    }
}

async fn reads_follow_writes_and_customers_without_purchases(backend: Backend) {
    let (app, _) = fitted(backend).await;
    let before = value(&app, "c001")
        .await
        .expect("value")
        .clv
        .expect("clv")
        .historical_revenue
        .expect("rev");
    // A minute ago (not `ago(0)`, an hour ago: yesterday between 00:00 and 01:00 UTC).
    let late = now_secs() - 60;
    app.record(vec![purchase(
        "c001",
        "late",
        prost_types::Timestamp {
            seconds: late,
            nanos: 0,
        },
        "late-order",
        12_345,
    )])
    .await
    .expect("record");
    let after = value(&app, "c001").await.expect("value");
    assert_eq!(
        after
            .clv
            .expect("clv")
            .historical_revenue
            .expect("rev")
            .minor_units,
        before.minor_units + 12_345
    );
    assert_eq!(
        after.rfm.expect("rfm").days_since_last_purchase,
        now_secs().div_euclid(86_400) - late.div_euclid(86_400)
    );

    app.record(vec![survey(
        "browser",
        "s1",
        ago(3),
        cpb::Survey {
            csat: Some(4),
            nps: Some(9),
            ..Default::default()
        },
    )])
    .await
    .expect("record");
    let v = value(&app, "browser").await.expect("value");
    assert_eq!(v.status, pb::ScoreStatus::NoPurchases as i32);
    assert!(v.clv.expect("clv").predicted_clv.is_none());
    let perceived = v.perceived_value.expect("perceived");
    assert_eq!(perceived.nps_category, pb::NpsCategory::Promoter as i32);
    assert_eq!(perceived.last_nps, Some(9));
    // Erasure removes the customer from scoring too.
    app.customers
        .clone()
        .delete_customer(cpb::DeleteCustomerRequest {
            customer_id: "browser".into(),
        })
        .await
        .expect("delete");
    assert_status(
        &value(&app, "browser").await.expect_err("erased"),
        Code::NotFound,
        "CUSTOMER_NOT_FOUND",
        None,
    );
}

async fn as_of_rewinds_from_history(backend: Backend) {
    let app = spawn_app(backend).await;
    app.record(vec![
        purchase("hist", "p1", ago(30), "o1", 1_000),
        purchase("hist", "p2", ago(2), "o2", 5_000),
    ])
    .await
    .expect("record");
    // One instant for the request and the check: `ago` reads the clock, which may tick between.
    let at = ago(10);
    let then = scoring(&app)
        .get_customer_value(pb::GetCustomerValueRequest {
            customer_id: "hist".into(),
            as_of: Some(at),
            intervals: false,
        })
        .await
        .expect("as of")
        .into_inner()
        .value
        .expect("value");
    assert_eq!(then.clv.expect("clv").historical_revenue, Some(usd(1_000)));
    assert_eq!(then.as_of, Some(at));
    let err = scoring(&app)
        .get_customer_value(pb::GetCustomerValueRequest {
            customer_id: "hist".into(),
            as_of: Some(ago(31)),
            intervals: false,
        })
        .await
        .expect_err("before the first event");
    assert_status(
        &err,
        Code::InvalidArgument,
        "AS_OF_BEFORE_FIRST_EVENT",
        Some("as_of"),
    );
    let err = scoring(&app)
        .get_customer_value(pb::GetCustomerValueRequest {
            customer_id: "hist".into(),
            as_of: Some(prost_types::Timestamp {
                seconds: now_secs() + 86_400,
                nanos: 0,
            }),
            intervals: false,
        })
        .await
        .expect_err("future");
    assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some("as_of"));
}

// BatchGetCustomerValues and StreamCustomerValues at an earlier instant say exactly what
// GetCustomerValue says of each customer then, reading the histories in bulk.
async fn bulk_as_of_matches_one_customer_at_a_time(backend: Backend) {
    let (app, _) = fitted(backend).await;
    let mut client = scoring(&app);
    let as_of = ago(100);
    let ids: Vec<String> = (0..150).map(|c| format!("c{c:03}")).collect();
    let batch = client
        .batch_get_customer_values(pb::BatchGetCustomerValuesRequest {
            customer_ids: ids.clone(),
            as_of: Some(as_of),
            intervals: false,
        })
        .await
        .expect("batch")
        .into_inner();
    assert!(batch.missing_customer_ids.is_empty());
    let before = &batch.before_first_event_customer_ids;
    assert!(!before.is_empty() && !batch.values.is_empty());
    assert_eq!(batch.values.len() + before.len(), ids.len());
    let mut changed = 0;
    let mut values = batch.values.iter();
    for id in &ids {
        let one = client
            .get_customer_value(pb::GetCustomerValueRequest {
                customer_id: id.clone(),
                as_of: Some(as_of),
                intervals: false,
            })
            .await;
        if before.contains(id) {
            let err = one.expect_err("first event after as_of");
            assert_status(
                &err,
                Code::InvalidArgument,
                "AS_OF_BEFORE_FIRST_EVENT",
                Some("as_of"),
            );
            continue;
        }
        let one = one.expect("value").into_inner().value.expect("value");
        assert_eq!(Some(&one), values.next(), "{id}");
        assert_eq!(one.as_of, Some(as_of));
        let today = value(&app, id).await.expect("today");
        if today.clv.as_ref().map(|c| &c.historical_revenue)
            != one.clv.as_ref().map(|c| &c.historical_revenue)
        {
            changed += 1;
        }
    }
    assert!(changed > 0, "some customers bought after as_of");
    // The stream, in several chunks, says the same.
    let mut stream = client
        .stream_customer_values(pb::StreamCustomerValuesRequest {
            chunk_size: 7,
            as_of: Some(as_of),
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        streamed.extend(chunk.values);
    }
    assert_eq!(streamed, batch.values);
    // Not in the future.
    let future = prost_types::Timestamp {
        seconds: now_secs() + 86_400,
        nanos: 0,
    };
    let err = client
        .batch_get_customer_values(pb::BatchGetCustomerValuesRequest {
            customer_ids: ids.clone(),
            as_of: Some(future),
            intervals: false,
        })
        .await
        .expect_err("future");
    assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some("as_of"));
    let err = client
        .stream_customer_values(pb::StreamCustomerValuesRequest {
            as_of: Some(future),
            ..Default::default()
        })
        .await
        .expect_err("future");
    assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some("as_of"));
}

async fn batches_list_missing_ids_and_refuse_bad_ones(backend: Backend) {
    let (app, _) = fitted(backend).await;
    let mut client = scoring(&app);
    let out = client
        .batch_get_customer_values(pb::BatchGetCustomerValuesRequest {
            customer_ids: vec!["c002".into(), "nobody".into(), "c003".into()],
            as_of: None,
            intervals: false,
        })
        .await
        .expect("batch")
        .into_inner();
    let ids: Vec<&str> = out.values.iter().map(|v| v.customer_id.as_str()).collect();
    assert_eq!(ids, vec!["c002", "c003"]);
    assert_eq!(out.missing_customer_ids, vec!["nobody".to_owned()]);
    let err = client
        .batch_get_customer_values(pb::BatchGetCustomerValuesRequest {
            customer_ids: (0..1_001).map(|i| format!("x{i}")).collect(),
            as_of: None,
            intervals: false,
        })
        .await
        .expect_err("too many");
    assert_status(
        &err,
        Code::InvalidArgument,
        "BATCH_TOO_LARGE",
        Some("customer_ids"),
    );
    let err = client
        .batch_get_customer_values(pb::BatchGetCustomerValuesRequest {
            customer_ids: vec![],
            as_of: None,
            intervals: false,
        })
        .await
        .expect_err("empty");
    assert_status(
        &err,
        Code::InvalidArgument,
        "EMPTY_BATCH",
        Some("customer_ids"),
    );
    let err = client
        .batch_get_customer_values(pb::BatchGetCustomerValuesRequest {
            customer_ids: vec!["ok".into(), String::new()],
            as_of: None,
            intervals: false,
        })
        .await
        .expect_err("empty id");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("customer_ids[1]"),
    );
    for id in [String::new(), "z".repeat(129)] {
        let err = value(&app, &id).await.expect_err("bad id");
        assert_status(
            &err,
            Code::InvalidArgument,
            "INVALID_FIELD",
            Some("customer_id"),
        );
    }
    assert_status(
        &value(&app, "nobody").await.expect_err("unknown"),
        Code::NotFound,
        "CUSTOMER_NOT_FOUND",
        None,
    );
}

async fn stream_filters_and_bad_filters(backend: Backend) {
    let (app, _) = fitted(backend).await;
    let mut client = scoring(&app);
    let collect = |filter: pb::CustomerValueFilter| {
        let mut client = client.clone();
        async move {
            let mut stream = client
                .stream_customer_values(pb::StreamCustomerValuesRequest {
                    filter: Some(filter),
                    chunk_size: 0,
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut out = Vec::new();
            while let Some(chunk) = stream.message().await? {
                out.extend(chunk.values);
            }
            Ok::<_, tonic::Status>(out)
        }
    };
    let gold = collect(pb::CustomerValueFilter {
        tiers: vec!["gold".into(), "platinum".into()],
        ..Default::default()
    })
    .await
    .expect("stream");
    assert!(!gold.is_empty());
    assert!(
        gold.iter()
            .all(|v| v.tier.as_ref().is_some_and(|t| t.rank <= 2))
    );
    let rich = collect(pb::CustomerValueFilter {
        min_predicted_clv: Some(usd(1)),
        ..Default::default()
    })
    .await
    .expect("stream");
    assert!(rich.iter().all(|v| {
        v.clv
            .as_ref()
            .and_then(|c| c.predicted_clv.as_ref())
            .is_some_and(|m| m.minor_units >= 1)
    }));
    let ids: Vec<&str> = rich.iter().map(|v| v.customer_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "streamed in customer id order");

    let bad = [
        (
            pb::CustomerValueFilter {
                tiers: vec!["diamond".into()],
                ..Default::default()
            },
            "filter.tiers[0]",
        ),
        (
            pb::CustomerValueFilter {
                segments: vec![99],
                ..Default::default()
            },
            "filter.segments[0]",
        ),
        (
            pb::CustomerValueFilter {
                quadrants: vec![0],
                ..Default::default()
            },
            "filter.quadrants[0]",
        ),
        (
            pb::CustomerValueFilter {
                min_predicted_clv: Some(patron_proto::common::v1::Money {
                    currency_code: "EUR".into(),
                    minor_units: 1,
                }),
                ..Default::default()
            },
            "filter.min_predicted_clv.currency_code",
        ),
        (
            pb::CustomerValueFilter {
                min_predicted_clv: Some(usd(-1)),
                ..Default::default()
            },
            "filter.min_predicted_clv.minor_units",
        ),
    ];
    for (filter, field) in bad {
        let err = collect(filter).await.expect_err(field);
        assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some(field));
    }
    let err = client
        .stream_customer_values(pb::StreamCustomerValuesRequest {
            filter: None,
            chunk_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("negative chunk");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("chunk_size"),
    );
    let err = client
        .stream_customer_values(pb::StreamCustomerValuesRequest {
            view: 7,
            ..Default::default()
        })
        .await
        .expect_err("unknown view");
    assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some("view"));
}

async fn models_are_versioned_listed_and_activated(backend: Backend) {
    let (app, first) = fitted(backend).await;
    let mut client = scoring(&app);
    let second = client
        .fit_value_model(pb::FitValueModelRequest {
            time_unit: pb::TimeUnit::Week.into(),
            horizon_months: 6,
            ..Default::default()
        })
        .await
        .expect("fit")
        .into_inner()
        .model
        .expect("model");
    assert_eq!(second.version, 2);
    assert!(!second.active, "not activated unless asked");
    assert_eq!(second.time_unit, pb::TimeUnit::Week as i32);
    let active = client
        .get_value_model(pb::GetValueModelRequest { version: 0 })
        .await
        .expect("get")
        .into_inner()
        .model
        .expect("m");
    assert_eq!(active.version, first.version);
    let page = client
        .list_value_models(pb::ListValueModelsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        page.models.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![2]
    );
    let page = client
        .list_value_models(pb::ListValueModelsRequest {
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        page.models.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![1]
    );
    assert!(page.next_page_token.is_empty());

    let activated = client
        .activate_value_model(pb::ActivateValueModelRequest { version: 2 })
        .await
        .expect("activate")
        .into_inner();
    assert!(activated.model.expect("model").active);
    let v = value(&app, "c004").await.expect("value");
    assert_eq!(v.model_version, 2);
    assert_eq!(v.clv.expect("clv").horizon_months, 6);

    let err = client
        .activate_value_model(pb::ActivateValueModelRequest { version: 99 })
        .await
        .expect_err("unknown");
    assert_status(&err, Code::NotFound, "MODEL_NOT_FOUND", None);
    let err = client
        .activate_value_model(pb::ActivateValueModelRequest { version: 0 })
        .await
        .expect_err("zero");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("version"),
    );
    let err = client
        .get_value_model(pb::GetValueModelRequest { version: -1 })
        .await
        .expect_err("negative");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("version"),
    );
    let err = client
        .list_value_models(pb::ListValueModelsRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .expect_err("negative page size");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_PAGE_SIZE",
        Some("page_size"),
    );
    let err = client
        .list_value_models(pb::ListValueModelsRequest {
            page_size: 5,
            page_token: "junk".into(),
        })
        .await
        .expect_err("token");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
        Some("page_token"),
    );
}

// A fit at an earlier calibration end is the fit of a database that holds only the events up
// to it: the same parameters, bit for bit.
async fn fits_at_an_earlier_calibration_end_use_the_history_of_then(backend: Backend) {
    let mut events = population(150);
    let calibration_end = ago(100);
    let until = calibration_end.seconds;
    // A purchase one second after the calibration end, on its day: it belongs to the hold-out.
    events.push(purchase(
        "c000",
        "late",
        prost_types::Timestamp {
            seconds: until + 1,
            nanos: 0,
        },
        "o-late",
        1_000,
    ));
    let then: Vec<cpb::Event> = events
        .iter()
        .filter(|e| e.occurred_at.as_ref().is_some_and(|t| t.seconds <= until))
        .cloned()
        .collect();
    assert!(then.len() < events.len() && !then.is_empty());
    let fit = |app: &TestApp| {
        let mut client = scoring(app);
        async move {
            client
                .fit_value_model(pb::FitValueModelRequest {
                    calibration_end: Some(calibration_end),
                    ..Default::default()
                })
                .await
                .expect("fit")
                .into_inner()
                .model
                .expect("model")
        }
    };
    let all = spawn_app(backend).await;
    all.record(events.clone()).await.expect("record");
    let past = spawn_app(backend).await;
    past.record(then).await.expect("record");
    let (a, b) = (fit(&all).await, fit(&past).await);
    assert_eq!(a.customers, b.customers);
    assert_eq!(a.bg_nbd, b.bg_nbd);
    assert_eq!(a.gamma_gamma, b.gamma_gamma);
    assert_eq!(a.calibration_end, Some(calibration_end));
    // The hold-out report: the purchase days after the calibration end's day of each customer
    // who had bought by then, against the model's expectation for those 100 days.
    let day = |t: &prost_types::Timestamp| t.seconds.div_euclid(86_400);
    let mut days: std::collections::BTreeMap<&str, (bool, std::collections::BTreeSet<i64>)> =
        Default::default();
    for e in &events {
        let t = e.occurred_at.as_ref().expect("time");
        if matches!(e.kind, Some(cpb::event::Kind::Purchase(_))) {
            let entry = days.entry(e.customer_id.as_str()).or_default();
            entry.0 |= t.seconds <= until;
            if t.seconds > until {
                entry.1.insert(day(t));
            }
        }
    }
    let compared: Vec<usize> = days
        .values()
        .filter(|(bought, _)| *bought)
        .map(|(_, later)| later.len())
        .collect();
    let h = a.holdout.as_ref().expect("a hold-out report");
    // `ago(100)` is 100 days and an hour back: 101 calendar days in the first hour of a UTC day.
    let holdout_end = h.holdout_end.as_ref().expect("hold-out end").seconds;
    assert_eq!(
        i64::from(h.holdout_days),
        holdout_end.div_euclid(86_400) - until.div_euclid(86_400)
    );
    assert!((100..=101).contains(&h.holdout_days));
    assert_eq!(h.customers, compared.len() as i64);
    assert_eq!(h.customers, a.customers);
    assert_eq!(h.actual_purchases, compared.iter().sum::<usize>() as i64);
    assert!(h.actual_purchases > 0 && h.predicted_purchases > 0.0);
    assert!(h.root_mean_squared_error >= h.mean_absolute_error && h.mean_absolute_error > 0.0);
    let aggregate =
        100.0 * (h.predicted_purchases - h.actual_purchases as f64) / h.actual_purchases as f64;
    assert!((h.aggregate_error_percent.expect("aggregate") - aggregate).abs() < 1e-9);
    let rows = &h.by_frequency;
    assert_eq!(rows.iter().map(|r| r.customers).sum::<i64>(), h.customers);
    let (actual, predicted) = rows.iter().fold((0.0, 0.0), |(a, p), r| {
        let n = r.customers as f64;
        (
            a + n * r.mean_actual_purchases,
            p + n * r.mean_predicted_purchases,
        )
    });
    assert!((actual - h.actual_purchases as f64).abs() < 1e-6);
    assert!((predicted - h.predicted_purchases).abs() < 1e-6);
    assert!(
        rows.windows(2)
            .all(|w| w[0].calibration_frequency < w[1].calibration_frequency)
    );
    // The database of then has nothing after the calibration end to compare with.
    let empty = b.holdout.as_ref().expect("report");
    assert_eq!(empty.actual_purchases, 0);
    assert_eq!(empty.aggregate_error_percent, None);
    // And at today's end the full history gives another model, with no hold-out.
    let today = scoring(&all)
        .fit_value_model(pb::FitValueModelRequest::default())
        .await
        .expect("fit")
        .into_inner()
        .model
        .expect("model");
    assert!(today.customers > a.customers);
    assert_eq!(today.holdout, None);
}

async fn bad_fit_requests_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = scoring(&app);
    app.record(population(5)).await.expect("record");
    let err = client
        .fit_value_model(pb::FitValueModelRequest::default())
        .await
        .expect_err("too few");
    assert_status(&err, Code::FailedPrecondition, "NOT_ENOUGH_DATA", None);
    app.record(population(60)).await.expect("record");
    let bad = [
        (
            pb::FitValueModelRequest {
                horizon_months: 500,
                ..Default::default()
            },
            "horizon_months",
        ),
        (
            pb::FitValueModelRequest {
                horizon_months: -1,
                ..Default::default()
            },
            "horizon_months",
        ),
        (
            pb::FitValueModelRequest {
                horizon_days: 36_501,
                ..Default::default()
            },
            "horizon_days",
        ),
        (
            pb::FitValueModelRequest {
                horizon_days: -7,
                ..Default::default()
            },
            "horizon_days",
        ),
        (
            pb::FitValueModelRequest {
                horizon_months: 6,
                horizon_days: 180,
                ..Default::default()
            },
            "horizon_days",
        ),
        (
            pb::FitValueModelRequest {
                monthly_discount_rate: Some(1.5),
                ..Default::default()
            },
            "monthly_discount_rate",
        ),
        (
            pb::FitValueModelRequest {
                monthly_discount_rate: Some(f64::NAN),
                ..Default::default()
            },
            "monthly_discount_rate",
        ),
        (
            pb::FitValueModelRequest {
                time_unit: 9,
                ..Default::default()
            },
            "time_unit",
        ),
        (
            pb::FitValueModelRequest {
                purchase_model: 9,
                ..Default::default()
            },
            "purchase_model",
        ),
        (
            pb::FitValueModelRequest {
                penalizer_coef: Some(-0.001),
                ..Default::default()
            },
            "penalizer_coef",
        ),
        (
            pb::FitValueModelRequest {
                penalizer_coef: Some(10.5),
                ..Default::default()
            },
            "penalizer_coef",
        ),
        (
            pb::FitValueModelRequest {
                penalizer_coef: Some(f64::NAN),
                ..Default::default()
            },
            "penalizer_coef",
        ),
        (
            pb::FitValueModelRequest {
                calibration_end: Some(prost_types::Timestamp {
                    seconds: now_secs() + 86_400,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "calibration_end",
        ),
        (
            pb::FitValueModelRequest {
                holdout_end: Some(prost_types::Timestamp {
                    seconds: now_secs() + 86_400,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "holdout_end",
        ),
        (
            pb::FitValueModelRequest {
                calibration_end: Some(ago(30)),
                holdout_end: Some(ago(40)),
                ..Default::default()
            },
            "holdout_end",
        ),
    ];
    for (request, field) in bad {
        let err = client.fit_value_model(request).await.expect_err(field);
        assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some(field));
    }
    // Before anyone's first purchase (the population's are 30 to 360 days ago).
    let err = client
        .fit_value_model(pb::FitValueModelRequest {
            calibration_end: Some(ago(400)),
            ..Default::default()
        })
        .await
        .expect_err("before the first purchase");
    assert_status(&err, Code::FailedPrecondition, "NOT_ENOUGH_DATA", None);
    let models = client
        .list_value_models(pb::ListValueModelsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(models.models.is_empty(), "no bad request stored a model");
}

async fn tier_policies_update_with_revisions(backend: Backend) {
    let (app, _) = fitted(backend).await;
    let mut client = scoring(&app);
    let default = client
        .get_tier_policy(pb::GetTierPolicyRequest {})
        .await
        .expect("get")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(default.revision, 0);
    assert_eq!(
        default
            .tiers
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>(),
        vec!["platinum", "gold", "silver", "bronze"]
    );

    let absolute = pb::TierPolicy {
        metric: pb::TierMetric::HistoricalRevenue.into(),
        mode: pb::TierMode::Absolute.into(),
        tiers: vec![
            pb::TierDefinition {
                name: "vip".into(),
                min_value: Some(50_000),
                share_percent: None,
            },
            pb::TierDefinition {
                name: "regular".into(),
                min_value: None,
                share_percent: None,
            },
        ],
        revision: 0,
        update_time: None,
    };
    let stored = client
        .update_tier_policy(pb::UpdateTierPolicyRequest {
            policy: Some(absolute.clone()),
            update_mask: None,
        })
        .await
        .expect("update")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(stored.revision, 1);
    assert!(stored.update_time.is_some());
    // Every profile now follows the new policy.
    let mut stream = client
        .stream_customer_values(pb::StreamCustomerValuesRequest::default())
        .await
        .expect("stream")
        .into_inner();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        for v in chunk.values {
            let revenue = v
                .clv
                .as_ref()
                .and_then(|c| c.historical_revenue.as_ref())
                .map_or(0, |m| m.minor_units);
            let tier = v.tier.expect("tier");
            assert_eq!(
                tier.name,
                if revenue >= 50_000 { "vip" } else { "regular" },
                "{revenue}"
            );
        }
    }
    // A change based on a stale revision is refused.
    let stale = pb::TierPolicy {
        revision: 7,
        ..absolute.clone()
    };
    let err = client
        .update_tier_policy(pb::UpdateTierPolicyRequest {
            policy: Some(stale),
            update_mask: None,
        })
        .await
        .expect_err("stale");
    assert_status(&err, Code::FailedPrecondition, "REVISION_MISMATCH", None);
    let bad = [
        (
            pb::TierPolicy {
                tiers: vec![],
                ..absolute.clone()
            },
            None,
            "policy.tiers",
        ),
        (
            pb::TierPolicy {
                tiers: vec![
                    pb::TierDefinition {
                        name: "a".into(),
                        min_value: Some(10),
                        share_percent: None,
                    },
                    pb::TierDefinition {
                        name: "b".into(),
                        min_value: Some(20),
                        share_percent: None,
                    },
                    pb::TierDefinition {
                        name: "c".into(),
                        min_value: None,
                        share_percent: None,
                    },
                ],
                ..absolute.clone()
            },
            None,
            "policy.tiers[1].min_value",
        ),
        (
            pb::TierPolicy {
                metric: 42,
                ..absolute.clone()
            },
            None,
            "policy.metric",
        ),
        (
            pb::TierPolicy {
                mode: 9,
                ..absolute.clone()
            },
            None,
            "policy.mode",
        ),
        (
            absolute.clone(),
            Some(vec!["colour".to_owned()]),
            "update_mask.paths[0]",
        ),
    ];
    for (policy, paths, field) in bad {
        let err = client
            .update_tier_policy(pb::UpdateTierPolicyRequest {
                policy: Some(policy),
                update_mask: paths.map(|paths| prost_types::FieldMask { paths }),
            })
            .await
            .expect_err(field);
        assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some(field));
    }
    let err = client
        .update_tier_policy(pb::UpdateTierPolicyRequest {
            policy: None,
            update_mask: None,
        })
        .await
        .expect_err("missing");
    assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some("policy"));
    let after = client
        .get_tier_policy(pb::GetTierPolicyRequest {})
        .await
        .expect("get")
        .into_inner()
        .policy
        .expect("policy");
    assert_eq!(after.revision, 1, "no bad update changed the policy");
}

async fn what_if_profiles(backend: Backend) {
    let (app, _) = fitted(backend).await;
    let mut client = scoring(&app);
    let good = pb::ScoreProfileRequest {
        frequency: 6,
        recency_days: 200,
        age_days: 210,
        monetary_mean: Some(usd(5_000)),
        historical_revenue: Some(usd(36_000)),
        survey: Some(pb::SurveyAnswers {
            economic_benefit: Some(5),
            price_cost: Some(2),
            nps: Some(10),
            ..Default::default()
        }),
    };
    let v = client
        .score_profile(good.clone())
        .await
        .expect("score")
        .into_inner()
        .value
        .expect("value");
    assert_eq!(v.status, pb::ScoreStatus::Scored as i32);
    assert!(v.clv.expect("clv").predicted_clv.is_some());
    assert_eq!(
        v.perceived_value.expect("pv").nps_category,
        pb::NpsCategory::Promoter as i32
    );
    let lapsed = client
        .score_profile(pb::ScoreProfileRequest {
            recency_days: 10,
            ..good.clone()
        })
        .await
        .expect("score")
        .into_inner()
        .value
        .expect("value");
    let (p_recent, p_lapsed) = (
        v_alive(
            &client
                .score_profile(good.clone())
                .await
                .expect("s")
                .into_inner()
                .value
                .expect("v"),
        ),
        v_alive(&lapsed),
    );
    assert!(
        p_recent > p_lapsed,
        "a customer who stopped buying long ago is less likely alive"
    );
    let bad = [
        (
            pb::ScoreProfileRequest {
                age_days: 100,
                ..good.clone()
            },
            "age_days",
        ),
        (
            pb::ScoreProfileRequest {
                frequency: -1,
                ..good.clone()
            },
            "frequency",
        ),
        (
            pb::ScoreProfileRequest {
                recency_days: -1,
                ..good.clone()
            },
            "recency_days",
        ),
        (
            pb::ScoreProfileRequest {
                historical_revenue: Some(patron_proto::common::v1::Money {
                    currency_code: "EUR".into(),
                    minor_units: 5,
                }),
                ..good.clone()
            },
            "historical_revenue.currency_code",
        ),
        (
            pb::ScoreProfileRequest {
                monetary_mean: Some(usd(-5)),
                ..good.clone()
            },
            "monetary_mean.minor_units",
        ),
        (
            pb::ScoreProfileRequest {
                survey: Some(pb::SurveyAnswers {
                    csat: Some(6),
                    ..Default::default()
                }),
                ..good.clone()
            },
            "survey.csat",
        ),
        (
            pb::ScoreProfileRequest {
                survey: Some(pb::SurveyAnswers {
                    nps: Some(11),
                    ..Default::default()
                }),
                ..good.clone()
            },
            "survey.nps",
        ),
    ];
    for (request, field) in bad {
        let err = client.score_profile(request).await.expect_err(field);
        assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some(field));
    }
}

/// Short histories from a constant per-purchase dropout probability (no heterogeneity in
/// dropout): BG/NBD's likelihood is often maximised at a, b → ∞ (seed 1 is such a draw).
fn constant_dropout_population(seed: u64) -> Vec<cpb::Event> {
    use patron_domain::clv::simulate::Rng;
    let (r, alpha_days, p) = (2.0, 28.0, 0.15);
    let mut rng = Rng::seed(seed);
    let mut events = Vec::new();
    for c in 0..400 {
        let age = 28 + (c % 9) * 7;
        let rate = rng.gamma(r) / alpha_days;
        let mut days = vec![0];
        let mut now = 0.0;
        loop {
            now += rng.exponential(rate);
            if now > age as f64 {
                break;
            }
            days.push(now.floor() as i64);
            if rng.uniform() < p {
                break;
            }
        }
        let spend = 1_000.0 + 4_000.0 * rng.uniform();
        for (k, day) in days.iter().enumerate() {
            events.push(purchase(
                &format!("k{c:03}"),
                &format!("k{c}-{k}"),
                ago(age - day),
                &format!("ko{c}-{k}"),
                (spend * (0.5 + rng.uniform())) as i64,
            ));
        }
    }
    events
}

/// A fit that runs to the a, b → ∞ boundary still scores every buyer with finite predictions
/// (the constant-dropout limit) and says where it ended (no standard errors there); a penalizer
/// brings it back to an interior optimum, with diagnostics reported. (That a fit that did not
/// converge is not activated unasked is checked in the engine's and the stores' tests: real data
/// that makes the optimiser give up is not at hand.)
async fn fits_at_the_boundary_always_score(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = scoring(&app);
    app.record(constant_dropout_population(1))
        .await
        .expect("record");
    let boundary = client
        .fit_value_model(pb::FitValueModelRequest::default())
        .await
        .expect("fit")
        .into_inner()
        .model
        .expect("model");
    let bg = boundary.bg_nbd.clone().expect("bg/nbd");
    assert!(bg.a > 1e6 && bg.b > 1e6, "at the boundary: {bg:?}");
    assert!(bg.log_likelihood < 0.0, "{bg:?}");
    assert!(bg.gradient_norm.is_some_and(f64::is_finite), "{bg:?}");
    assert!(boundary.active, "{boundary:?}");
    let mut stream = client
        .stream_customer_values(pb::StreamCustomerValuesRequest {
            view: pb::CustomerValueView::Basic.into(),
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner();
    let mut scored = 0;
    while let Some(chunk) = stream.message().await.expect("chunk") {
        for v in chunk.values {
            assert_eq!(v.status, pb::ScoreStatus::Scored as i32, "{v:?}");
            assert_eq!(v.model_version, boundary.version);
            let clv = v.clv.expect("clv");
            let p = clv.probability_alive.expect("P(alive)");
            assert!((0.0..=1.0).contains(&p), "{}: {p}", v.customer_id);
            let e = clv.expected_purchases.expect("expected purchases");
            assert!(e.is_finite() && e >= 0.0, "{}: {e}", v.customer_id);
            assert!(clv.predicted_clv.is_some(), "{}", v.customer_id);
            scored += 1;
        }
    }
    assert_eq!(scored, 400);

    // A penalizer: an interior optimum with standard errors, as lifetimes users do.
    let penalised = client
        .fit_value_model(pb::FitValueModelRequest {
            penalizer_coef: Some(0.01),
            activate: true,
            ..Default::default()
        })
        .await
        .expect("fit")
        .into_inner()
        .model
        .expect("model");
    let bg = penalised.bg_nbd.expect("bg/nbd");
    assert!(bg.converged, "{bg:?}");
    assert!(bg.a < 1e3 && bg.b < 1e3, "{bg:?}");
    assert_eq!(bg.standard_errors.len(), 4, "{bg:?}");
    assert!(bg.standard_errors.iter().all(|s| s.is_finite() && *s > 0.0));
    assert!(bg.gradient_norm.is_some_and(|g| g < 1e-4), "{bg:?}");
    assert_eq!(penalised.penalizer_coef, 0.01);
    assert!(penalised.active);
    let stored = client
        .get_value_model(pb::GetValueModelRequest { version: 0 })
        .await
        .expect("active")
        .into_inner()
        .model
        .expect("model");
    assert_eq!(stored.version, penalised.version);
    assert_eq!(stored.penalizer_coef, 0.01);
    assert_eq!(
        stored.bg_nbd.expect("bg").standard_errors,
        bg.standard_errors
    );
}

fn v_alive(v: &pb::CustomerValue) -> f64 {
    v.clv
        .as_ref()
        .and_then(|c| c.probability_alive)
        .expect("p alive")
}

crate::both_backends!(
    without_a_model_profiles_say_so,
    fitted_models_score_every_customer,
    reads_follow_writes_and_customers_without_purchases,
    as_of_rewinds_from_history,
    bulk_as_of_matches_one_customer_at_a_time,
    batches_list_missing_ids_and_refuse_bad_ones,
    stream_filters_and_bad_filters,
    models_are_versioned_listed_and_activated,
    bad_fit_requests_change_nothing,
    fits_at_an_earlier_calibration_end_use_the_history_of_then,
    fits_at_the_boundary_always_score,
    tier_policies_update_with_revisions,
    what_if_profiles,
);
