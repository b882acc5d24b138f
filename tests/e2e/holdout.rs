//! Hold-out validation against lifetimes 0.11.3: its CDNOW_sample transactions loaded over gRPC,
//! FitValueModel with a calibration end and a hold-out end, the report compared with
//! `calibration_and_holdout_data` and `BetaGeoFitter` (tests/fixtures/generate_cdnow_holdout.py).

use patron_proto::scoring::v1 as pb;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;

use crate::support::{Backend, TestApp, purchase, spawn_app};

const TRANSACTIONS: &str = include_str!("../fixtures/cdnow_sample_transactions.csv");
const REFERENCE: &str = include_str!("../fixtures/cdnow_holdout_reference.csv");
const WEEKLY_REFERENCE: &str = include_str!("../fixtures/cdnow_holdout_weekly_reference.csv");
const TRACKING_REFERENCE: &str = include_str!("../fixtures/cdnow_tracking_reference.csv");

/// Midnight UTC of an ISO date.
fn midnight(date: &str) -> prost_types::Timestamp {
    let mut parts = date.split('-').map(|p| p.parse::<i64>().expect("date"));
    let (y, m, d) = (
        parts.next().expect("y"),
        parts.next().expect("m"),
        parts.next().expect("d"),
    );
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    prost_types::Timestamp {
        seconds: (era * 146_097 + doe - 719_468) * 86_400,
        nanos: 0,
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-12)
}

struct Reference {
    /// The named parameters of the first line, in order.
    params: Vec<f64>,
    /// (frequency_cal, frequency_holdout, predicted) per customer.
    customers: Vec<(u32, u32, f64)>,
}

/// A reference file of tests/fixtures/generate_cdnow_holdout.py: parameters on the first line,
/// then a CSV read by column name.
fn reference(text: &str) -> Reference {
    let mut lines = text.lines();
    let header = lines.next().expect("parameters");
    let params: Vec<f64> = header
        .trim_start_matches("# ")
        .split(' ')
        .map(|kv| {
            kv.split('=')
                .nth(1)
                .expect("value")
                .parse()
                .expect("number")
        })
        .collect();
    let columns: Vec<&str> = lines.next().expect("column names").split(',').collect();
    let at = |name: &str| columns.iter().position(|c| *c == name).expect(name);
    let (f, h, p) = (
        at("frequency_cal"),
        at("frequency_holdout"),
        at("predicted"),
    );
    let customers = lines
        .map(|l| {
            let v: Vec<&str> = l.split(',').collect();
            (
                v[f].parse().expect("frequency_cal"),
                v[h].parse().expect("frequency_holdout"),
                v[p].parse().expect("predicted"),
            )
        })
        .collect();
    Reference { params, customers }
}

/// The report's figures against the reference's customers: counts exact, predictions and errors
/// within 1e-4.
fn assert_report_matches(h: &pb::HoldoutReport, want: &Reference) {
    let n = want.customers.len();
    assert_eq!(h.customers as usize, n);
    let actual: u32 = want.customers.iter().map(|c| c.1).sum();
    assert_eq!(h.actual_purchases, i64::from(actual));
    let predicted: f64 = want.customers.iter().map(|c| c.2).sum();
    assert!(
        close(h.predicted_purchases, predicted, 1e-4),
        "{} against {predicted}",
        h.predicted_purchases
    );
    let mae = want
        .customers
        .iter()
        .map(|c| (c.2 - f64::from(c.1)).abs())
        .sum::<f64>()
        / n as f64;
    let rmse = (want
        .customers
        .iter()
        .map(|c| (c.2 - f64::from(c.1)).powi(2))
        .sum::<f64>()
        / n as f64)
        .sqrt();
    assert!(
        close(h.mean_absolute_error, mae, 1e-4),
        "{} {mae}",
        h.mean_absolute_error
    );
    assert!(
        close(h.root_mean_squared_error, rmse, 1e-4),
        "{} {rmse}",
        h.root_mean_squared_error
    );
    for row in &h.by_frequency {
        let f = row.calibration_frequency as u32;
        let members: Vec<&(u32, u32, f64)> = want
            .customers
            .iter()
            .filter(|c| if row.or_more { c.0 >= f } else { c.0 == f })
            .collect();
        assert_eq!(row.customers as usize, members.len(), "frequency {f}");
        let k = members.len() as f64;
        let mean_actual = members.iter().map(|c| f64::from(c.1)).sum::<f64>() / k;
        let mean_predicted = members.iter().map(|c| c.2).sum::<f64>() / k;
        assert!(
            close(row.mean_actual_purchases, mean_actual, 1e-12),
            "frequency {f}"
        );
        assert!(
            close(row.mean_predicted_purchases, mean_predicted, 1e-4),
            "frequency {f}: {} against {mean_predicted}",
            row.mean_predicted_purchases
        );
    }
    assert_eq!(
        h.by_frequency.iter().map(|r| r.customers).sum::<i64>(),
        n as i64
    );
}

/// The report's tracking series against lifetimes' `expected_cumulative_transactions` in
/// `unit` (`day` or `week`): every point, actual purchases exact, predictions within 1e-4; the
/// series starts at `start` with `calibration_points` in the calibration.
fn assert_tracking_matches(
    h: &pb::HoldoutReport,
    unit: &str,
    start: &str,
    calibration_points: i32,
) {
    let t = h.tracking.as_ref().expect("tracking series");
    let want: Vec<(i64, f64)> = TRACKING_REFERENCE
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|v| v[0] == unit)
        .map(|v| {
            (
                v[2].parse().expect("actual"),
                v[3].parse().expect("predicted"),
            )
        })
        .collect();
    assert_eq!(t.start, Some(midnight(start)));
    assert_eq!(t.calibration_points, calibration_points);
    assert_eq!(t.actual_cumulative.len(), want.len());
    assert_eq!(t.predicted_cumulative.len(), want.len());
    for (k, ((actual, predicted), (want_actual, want_predicted))) in t
        .actual_cumulative
        .iter()
        .zip(&t.predicted_cumulative)
        .zip(&want)
        .enumerate()
    {
        assert_eq!(actual, want_actual, "{unit} {k}: actual");
        assert!(
            close(*predicted, *want_predicted, 1e-4),
            "{unit} {k}: predicted {predicted} against lifetimes' {want_predicted}"
        );
    }
}

/// lifetimes' CDNOW sample, loaded over gRPC: customer `cdnow-{id}`.
async fn load_cdnow(app: &TestApp) {
    let events: Vec<_> = TRANSACTIONS
        .lines()
        .skip(1)
        .enumerate()
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(',').collect();
            purchase(
                &format!("cdnow-{}", f[0]),
                &format!("t{i}"),
                midnight(f[1]),
                &format!("o{i}"),
                f[2].parse().expect("cents"),
            )
        })
        .collect();
    for chunk in events.chunks(1_000) {
        app.record(chunk.to_vec()).await.expect("record");
    }
}

async fn holdout_matches_lifetimes_on_cdnow(backend: Backend) {
    let app = spawn_app(backend).await;
    load_cdnow(&app).await;
    let mut client = ScoringServiceClient::new(app.channel.clone());
    let model = client
        .fit_value_model(pb::FitValueModelRequest {
            calibration_end: Some(midnight("1997-09-30")),
            holdout_end: Some(midnight("1998-06-30")),
            ..Default::default()
        })
        .await
        .expect("fit")
        .into_inner()
        .model
        .expect("model");
    let bg_report = model.holdout.clone();
    let want = reference(REFERENCE);
    let bg = model.bg_nbd.expect("bg/nbd");
    for (got, want) in [bg.r, bg.alpha, bg.a, bg.b].into_iter().zip(&want.params) {
        assert!(
            close(got, *want, 1e-4),
            "parameter {got} against lifetimes' {want}"
        );
    }
    let h = model.holdout.expect("hold-out report");
    assert_eq!((h.holdout_days, h.holdout_periods), (273, 273));
    assert_report_matches(&h, &want);
    // 1997-01-01 to 1998-06-30: 546 days, 273 of them to the calibration end.
    assert_tracking_matches(&h, "day", "1997-01-01", 273);

    // A horizon in days matches the hold-out: scored as of the calibration end, each customer's
    // expected purchases over 273 days are lifetimes' prediction for the hold-out.
    let days = client
        .fit_value_model(pb::FitValueModelRequest {
            calibration_end: Some(midnight("1997-09-30")),
            holdout_end: Some(midnight("1998-06-30")),
            horizon_days: 273,
            activate: true,
            ..Default::default()
        })
        .await
        .expect("fit in days")
        .into_inner()
        .model
        .expect("model");
    assert_eq!((days.horizon_days, days.horizon_months), (273, 0));
    let ids: Vec<&str> = REFERENCE
        .lines()
        .skip(2)
        .map(|l| l.split(',').next().expect("id"))
        .collect();
    for (id, c) in ids.iter().zip(&want.customers).step_by(97) {
        let value = client
            .get_customer_value(pb::GetCustomerValueRequest {
                customer_id: format!("cdnow-{id}"),
                as_of: Some(midnight("1997-09-30")),
                intervals: false,
            })
            .await
            .expect("value")
            .into_inner()
            .value
            .expect("value");
        let clv = value.clv.expect("clv");
        assert_eq!((clv.horizon_days, clv.horizon_months), (273, 0));
        let got = clv.expected_purchases.expect("expected purchases");
        assert!(
            close(got, c.2, 1e-4),
            "customer {id}: {got} against {}",
            c.2
        );
    }

    // Calendar weeks: lifetimes' freq='W' with spend, BG/NBD and Gamma-Gamma.
    let weekly = client
        .fit_value_model(pb::FitValueModelRequest {
            calibration_end: Some(midnight("1997-09-30")),
            holdout_end: Some(midnight("1998-06-30")),
            time_unit: pb::TimeUnit::Week as i32,
            ..Default::default()
        })
        .await
        .expect("weekly fit")
        .into_inner()
        .model
        .expect("model");
    assert!(weekly.calendar_weeks);
    let want_weekly = reference(WEEKLY_REFERENCE);
    let bg = weekly.bg_nbd.expect("bg/nbd");
    let gg = weekly.gamma_gamma.expect("gamma-gamma");
    for (got, want) in [bg.r, bg.alpha, bg.a, bg.b, gg.p, gg.q, gg.v]
        .into_iter()
        .zip(&want_weekly.params)
    {
        assert!(
            close(got, *want, 1e-4),
            "weekly parameter {got} against lifetimes' {want}"
        );
    }
    let h = weekly.holdout.expect("weekly hold-out report");
    assert_eq!((h.holdout_days, h.holdout_periods), (273, 39));
    assert_report_matches(&h, &want_weekly);
    // From the week of Monday 1996-12-30: 79 weeks, 40 of them to the calibration end's.
    assert_tracking_matches(&h, "week", "1996-12-30", 40);

    // Every model fitted, the one of lowest hold-out RMSE scoring, every model's errors kept.
    let chosen = client
        .fit_value_model(pb::FitValueModelRequest {
            calibration_end: Some(midnight("1997-09-30")),
            holdout_end: Some(midnight("1998-06-30")),
            choose_by_holdout: true,
            activate: true,
            ..Default::default()
        })
        .await
        .expect("fit")
        .into_inner()
        .model
        .expect("model");
    let c = &chosen.holdout_comparison;
    let models: Vec<i32> = c.iter().map(|m| m.purchase_model).collect();
    assert_eq!(
        models,
        [
            pb::PurchaseModel::BgNbd as i32,
            pb::PurchaseModel::MbgNbd as i32,
            pb::PurchaseModel::ParetoNbd as i32
        ]
    );
    assert_eq!(c.iter().filter(|m| m.chosen).count(), 1);
    let best = c.iter().find(|m| m.chosen).expect("chosen");
    assert!(
        c.iter()
            .all(|m| best.root_mean_squared_error <= m.root_mean_squared_error)
    );
    assert_eq!(chosen.purchase_model, best.purchase_model);
    let report = chosen.holdout.as_ref().expect("report");
    assert_eq!(report.root_mean_squared_error, best.root_mean_squared_error);
    assert!(chosen.mbg_nbd.is_some() && chosen.pareto_nbd.is_some());
    // BG/NBD's row is the plain BG/NBD fit's report.
    let bg = bg_report.expect("bg report");
    assert_eq!(c[0].root_mean_squared_error, bg.root_mean_squared_error);
    assert_eq!(c[0].mean_absolute_error, bg.mean_absolute_error);
    assert!(
        c.iter()
            .all(|m| m.root_mean_squared_error.is_finite() && m.root_mean_squared_error > 0.0)
    );
    // No hold-out, or a model named as well: refused, and nothing stored or activated.
    let models = |client: &mut ScoringServiceClient<tonic::transport::Channel>| {
        let mut client = client.clone();
        async move {
            client
                .list_value_models(pb::ListValueModelsRequest::default())
                .await
                .expect("list")
                .into_inner()
                .models
        }
    };
    let before = models(&mut client).await;
    assert_eq!(before.len(), 4);
    for (request, field) in [
        (
            pb::FitValueModelRequest {
                choose_by_holdout: true,
                ..Default::default()
            },
            "choose_by_holdout",
        ),
        (
            pb::FitValueModelRequest {
                calibration_end: Some(midnight("1997-09-30")),
                choose_by_holdout: true,
                purchase_model: pb::PurchaseModel::ParetoNbd as i32,
                ..Default::default()
            },
            "purchase_model",
        ),
    ] {
        let err = client.fit_value_model(request).await.expect_err(field);
        crate::support::assert_status(
            &err,
            tonic::Code::InvalidArgument,
            "INVALID_FIELD",
            Some(field),
        );
    }
    assert_eq!(models(&mut client).await, before);
}

/// Intervals come only when asked for, hold the point value, and are the same through
/// GetCustomerValue, BatchGetCustomerValues and StreamCustomerValues.
async fn intervals_on_request(backend: Backend) {
    let app = spawn_app(backend).await;
    load_cdnow(&app).await;
    let mut client = ScoringServiceClient::new(app.channel.clone());
    let model = client
        .fit_value_model(pb::FitValueModelRequest {
            calibration_end: Some(midnight("1998-06-30")),
            ..Default::default()
        })
        .await
        .expect("fit")
        .into_inner()
        .model
        .expect("model");
    assert_eq!(model.bg_nbd.expect("bg").standard_errors.len(), 4);
    let mut ids: Vec<String> = TRANSACTIONS
        .lines()
        .skip(1)
        .map(|l| format!("cdnow-{}", l.split(',').next().expect("id")))
        .collect();
    ids.sort();
    ids.dedup();
    let ids: Vec<String> = ids.into_iter().step_by(15).collect();
    let one = |id: &str, intervals: bool| {
        let mut client = client.clone();
        let id = id.to_owned();
        async move {
            client
                .get_customer_value(pb::GetCustomerValueRequest {
                    customer_id: id,
                    as_of: Some(midnight("1998-06-30")),
                    intervals,
                })
                .await
                .expect("value")
                .into_inner()
                .value
                .expect("value")
        }
    };
    let plain = one(&ids[0], false).await;
    assert!(plain.clv.as_ref().expect("clv").intervals.is_none());
    let mut singles = Vec::new();
    let (mut with_p, mut with_clv) = (0, 0);
    for id in &ids {
        let v = one(id, true).await;
        let clv = v.clv.as_ref().expect("clv");
        let i = clv.intervals.as_ref().expect("intervals");
        assert_eq!(i.level, 0.9);
        let e = clv.expected_purchases.expect("expected purchases");
        let (lo, hi) = (
            i.expected_purchases_lower.expect("lower"),
            i.expected_purchases_upper.expect("upper"),
        );
        assert!(lo < e && e < hi, "{id}: {lo} {e} {hi}");
        if let (Some(lo), Some(hi)) = (i.probability_alive_lower, i.probability_alive_upper) {
            let p = clv.probability_alive.expect("p alive");
            assert!(
                0.0 < lo && lo < p && p < hi && hi < 1.0,
                "{id}: {lo} {p} {hi}"
            );
            with_p += 1;
        }
        if let (Some(lo), Some(hi), Some(c)) = (
            &i.predicted_clv_lower,
            &i.predicted_clv_upper,
            &clv.predicted_clv,
        ) {
            assert!(lo.minor_units <= c.minor_units && c.minor_units <= hi.minor_units);
            assert!(
                lo.minor_units < hi.minor_units || c.minor_units < 100,
                "{id}"
            );
            with_clv += 1;
        }
        singles.push(v);
    }
    // Repeat buyers have an informative P(alive); everyone with a spend prediction a CLV range.
    assert!(with_p > 30 && with_clv > 30, "{with_p} {with_clv}");
    let batch = client
        .batch_get_customer_values(pb::BatchGetCustomerValuesRequest {
            customer_ids: ids.clone(),
            as_of: Some(midnight("1998-06-30")),
            intervals: true,
        })
        .await
        .expect("batch")
        .into_inner()
        .values;
    let intervals = |v: &pb::CustomerValue| v.clv.as_ref().and_then(|c| c.intervals.clone());
    let mut streamed = std::collections::HashMap::new();
    let mut stream = client
        .stream_customer_values(pb::StreamCustomerValuesRequest {
            chunk_size: 400,
            intervals: true,
            as_of: Some(midnight("1998-06-30")),
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner();
    while let Some(m) = stream.message().await.expect("message") {
        for v in m.values {
            streamed.insert(v.customer_id.clone(), v);
        }
    }
    assert_eq!(batch.len(), ids.len());
    assert_eq!(streamed.len(), 2_357);
    for (s, b) in singles.iter().zip(&batch) {
        let t = &streamed[&s.customer_id];
        assert_eq!(intervals(s), intervals(b));
        assert_eq!(intervals(s), intervals(t));
    }
}

crate::both_backends!(holdout_matches_lifetimes_on_cdnow, intervals_on_request);
