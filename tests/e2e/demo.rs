//! `patron demo`: the generator is deterministic, produces every kind of event and nothing in the
//! future, and yields data a value model fits; the real binary loads, fits and serves scores.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use patron_domain::clv::TimeUnitKind;
use patron_domain::{CustomerId, EventKind, Timestamp};
use patron_proto::scoring::v1 as spb;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use patron_server::demo::{GenerateSummary, generate};
use patron_server::{Application, Settings};
use patron_store::{Store, StoredEvent, SummaryRow};
use patron_views::model::{FitRequest, PurchaseModel};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::connect;

async fn open(dir: &tempfile::TempDir, name: &str) -> (String, Arc<dyn Store>) {
    let url = format!("sqlite://{}", dir.path().join(name).display());
    let store = patron_server::app::open_store(&url)
        .await
        .expect("open store");
    (url, store)
}

async fn all_summaries(store: &Arc<dyn Store>) -> Vec<SummaryRow> {
    let mut rows: Vec<SummaryRow> = Vec::new();
    loop {
        let page = store
            .scan_summaries(rows.last().map(|r| &r.customer_id), 1_000)
            .await
            .expect("scan");
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
}

async fn events_of(store: &Arc<dyn Store>, id: &str) -> Vec<StoredEvent> {
    let id = CustomerId::parse(id).expect("id");
    store
        .list_events(&id, &[], None, 10_000)
        .await
        .expect("events")
}

async fn generated(
    dir: &tempfile::TempDir,
    name: &str,
    seed: u64,
    now: Timestamp,
) -> (String, Arc<dyn Store>, GenerateSummary) {
    let (url, store) = open(dir, name).await;
    let summary = generate(&store, 300, seed, now).await.expect("generate");
    (url, store, summary)
}

#[tokio::test]
async fn generated_data_is_deterministic_complete_and_fits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let now = patron_grpc::time::now();
    let (url, a, summary) = generated(&dir, "a.db", 42, now).await;
    let (_, b, summary_b) = generated(&dir, "b.db", 42, now).await;
    let (_, c, _) = generated(&dir, "c.db", 7, now).await;

    // Same seed, same data; another seed, other data.
    let rows = all_summaries(&a).await;
    assert_eq!(rows.len(), 300);
    assert_eq!(summary, summary_b);
    assert_eq!(rows, all_summaries(&b).await);
    assert_ne!(rows, all_summaries(&c).await);
    for id in ["cust-000001", "cust-000002", "cust-000150", "cust-000300"] {
        let from_a: Vec<_> = events_of(&a, id)
            .await
            .into_iter()
            .map(|e| e.event)
            .collect();
        let from_b: Vec<_> = events_of(&b, id)
            .await
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(from_a, from_b, "{id}");
    }
    let stored = events_of(&a, "cust-000001").await;
    assert!(!stored.is_empty());
    assert!(
        stored
            .iter()
            .all(|e| e.event.event_id.as_str().starts_with("evt-000001-"))
    );

    // The summary matches the store; every kind of event occurs; nothing is in the future or
    // before the customer signed up.
    assert_eq!(summary.customers, 300);
    let stored_events: i64 = rows.iter().map(|r| r.summary.totals.event_count).sum();
    assert_eq!(summary.events as i64, stored_events);
    assert_eq!(
        summary.by_kind.values().sum::<usize>(),
        summary.events,
        "{summary:?}"
    );
    for kind in EventKind::ALL {
        assert!(summary.count(kind) > 0, "no {kind:?} events: {summary:?}");
    }
    let total = |f: fn(&SummaryRow) -> i64| rows.iter().map(f).sum::<i64>();
    assert!(total(|r| r.summary.purchases.order_count) > 0);
    assert!(total(|r| r.summary.purchases.refunded) > 0);
    assert!(total(|r| r.summary.totals.engagement_count) > 0);
    assert!(total(|r| r.summary.totals.support_count) > 0);
    assert!(total(|r| r.summary.totals.survey_count) > 0);
    assert!(total(|r| r.summary.totals.custom_event_count) > 0);
    let buyers = rows
        .iter()
        .filter(|r| r.summary.purchases.order_count > 0)
        .count();
    // A customer whose only order was refunded in full has no active order.
    assert!(
        buyers <= summary.buyers && buyers + summary.count(EventKind::Refund) >= summary.buyers
    );
    assert!(
        (180..=285).contains(&buyers),
        "about 82 % should buy: {buyers}"
    );
    for r in &rows {
        let signed_up = r.signed_up_at.expect("signed_up_at");
        assert!(signed_up <= now);
        assert!(r.birth_date.is_some());
        if let (Some(first), Some(last)) = (
            r.summary.totals.first_event_at,
            r.summary.totals.last_event_at,
        ) {
            assert!(last <= now, "{}: event after now", r.customer_id);
            assert!(
                first >= signed_up,
                "{}: event before sign-up",
                r.customer_id
            );
        }
    }
    let mut ages = BTreeMap::new();
    for r in &rows {
        let birth = r.birth_date.expect("birth date");
        let years = f64::from(now.day().as_days() - birth.to_day().as_days()) / 365.25;
        assert!(
            (18.0..81.0).contains(&years),
            "{}: age {years}",
            r.customer_id
        );
        *ages.entry((years / 20.0) as u32).or_insert(0) += 1;
    }
    assert!(ages.len() >= 3, "ages spread: {ages:?}");
    drop((a, b, c));

    // The models fit the generated data through the application's engine.
    let app = Application::build(Settings::for_database(&url))
        .await
        .expect("app builds");
    let engine = app.engine();
    assert_eq!(engine.len(), 300);
    let (stored, doc) = engine
        .fit(
            FitRequest {
                calibration_end: now,
                time_unit: TimeUnitKind::Days,
                horizon_months: 12,
                horizon_days: None,
                monthly_discount_rate: 0.01,
                purchase_model: PurchaseModel::DEFAULT,
                penalizer_coef: 0.0,
                holdout_end: now,
                choose_by_holdout: false,
            },
            true,
            now,
        )
        .await
        .expect("fit");
    assert_eq!(stored.version, 1);
    assert!(stored.active);
    assert!(doc.bg_nbd.converged, "{:?}", doc.bg_nbd);
    let bg = &doc.bg_nbd;
    for p in [bg.r, bg.alpha, bg.a, bg.b] {
        assert!(p.is_finite() && p > 0.0, "{bg:?}");
    }
    let gg = doc.gamma_gamma.as_ref().expect("spend model fitted");
    assert!(gg.converged, "{gg:?}");
    assert_eq!(doc.customers as usize, buyers);
}

fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// A running `patron demo` and the lines it has printed so far.
struct Demo {
    child: Child,
    addr: std::net::SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Demo {
    async fn start(url: &str) -> Self {
        let addr = free_addr();
        let mut child = Command::new(env!("CARGO_BIN_EXE_patron"))
            .args(["demo", "--customers", "600", "--listen", &addr.to_string()])
            .args(["--database", url])
            .env("PATRON_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start patron demo");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let sink = Arc::clone(&stdout);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("lock").push(line);
            }
        });
        let mut demo = Self {
            child,
            addr,
            stdout,
        };
        demo.wait_until_serving().await;
        demo
    }

    async fn wait_until_serving(&mut self) {
        for _ in 0..1_200 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("patron demo exited with {status}: {}", self.output());
            }
            if let Ok(channel) =
                tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
                    .expect("endpoint")
                    .connect()
                    .await
            {
                let status = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .map(|r| r.into_inner().status);
                if status.ok() == Some(ServingStatus::Serving as i32) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("patron demo did not become SERVING: {}", self.output());
    }

    fn output(&self) -> String {
        self.stdout.lock().expect("lock").join("\n")
    }

    /// The customer id of the printed GetCustomerValue example.
    async fn example_id(&self) -> String {
        for _ in 0..100 {
            let out = self.output();
            if let Some(rest) = out.split("{\"customer_id\":\"").nth(1) {
                return rest.split('"').next().expect("id").to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no example printed: {}", self.output());
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self) -> String {
        let pid = self.child.id().expect("pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("SIGTERM");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("wait");
        assert!(status.success(), "exit {status}: {}", self.output());
        self.output()
    }
}

async fn value_of(addr: std::net::SocketAddr, id: &str) -> spb::CustomerValue {
    ScoringServiceClient::new(connect(addr).await)
        .get_customer_value(spb::GetCustomerValueRequest {
            customer_id: id.into(),
            as_of: None,
            intervals: false,
        })
        .await
        .expect("GetCustomerValue")
        .into_inner()
        .value
        .expect("value set")
}

#[tokio::test]
async fn demo_binary_generates_fits_and_serves_scores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("demo.db");
    let url = format!("sqlite://{}", path.display());

    let demo = Demo::start(&url).await;
    let id = demo.example_id().await;
    assert!(id.starts_with("cust-"), "{id}");
    let value = value_of(demo.addr, &id).await;
    assert_eq!(value.customer_id, id);
    assert_eq!(value.status, spb::ScoreStatus::Scored as i32, "{value:?}");
    assert!(value.model_version >= 1, "{value:?}");
    let clv = value.clv.as_ref().expect("clv");
    assert!(clv.predicted_clv.is_some(), "{value:?}");
    assert!(clv.probability_alive.is_some(), "{value:?}");
    assert!(!value.drivers.is_empty(), "{value:?}");
    let out = demo.stop().await;
    assert!(out.contains("Loaded 600 customers"), "{out}");
    assert!(out.contains("converged=true"), "{out}");
    assert!(out.contains("BatchGetCustomerValues"), "{out}");
    assert!(path.exists());

    // A second run keeps the data as it is and fits the next model version.
    let demo = Demo::start(&url).await;
    let again = value_of(demo.addr, &id).await;
    assert_eq!(again.status, spb::ScoreStatus::Scored as i32);
    assert!(again.model_version > value.model_version, "{again:?}");
    let (rfm, rfm_again) = (value.rfm.expect("rfm"), again.rfm.expect("rfm"));
    assert_eq!(rfm_again.frequency, rfm.frequency);
    assert_eq!(rfm_again.monetary_total, rfm.monetary_total);
    let out = demo.stop().await;
    assert!(out.contains("already holds customers"), "{out}");
    assert!(out.contains("600 customers"), "{out}");
}

/// Every profile the active model gives, streamed.
async fn all_values(addr: std::net::SocketAddr) -> Vec<spb::CustomerValue> {
    let mut stream = ScoringServiceClient::new(connect(addr).await)
        .stream_customer_values(spb::StreamCustomerValuesRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.expect("chunk") {
        out.extend(chunk.values);
    }
    out
}

/// Scored one-time buyers as `(days since the purchase, P(alive), profile)`, by days.
fn one_time_buyers(values: &[spb::CustomerValue]) -> Vec<(i64, f64, &spb::CustomerValue)> {
    let mut out: Vec<_> = values
        .iter()
        .filter(|v| v.status == spb::ScoreStatus::Scored as i32)
        .filter_map(|v| {
            let rfm = v.rfm.as_ref()?;
            let p = v.clv.as_ref()?.probability_alive?;
            (rfm.frequency == 0).then_some((rfm.days_since_last_purchase, p, v))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    out
}

/// Issue 16 on demo data: under the default BG/NBD a one-time buyer is never called "very likely
/// still active" (churn risk unknown, a driver says the model cannot tell, the profile names the
/// model); under MBG/NBD and Pareto/NBD their P(alive) falls with the time since the purchase and
/// none of a year ago or more is at low churn risk.
#[tokio::test]
async fn one_time_buyers_are_not_called_active_on_demo_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("demo.db").display());
    let demo = Demo::start(&url).await;

    let values = all_values(demo.addr).await;
    let once = one_time_buyers(&values);
    assert!(once.len() >= 100, "{} one-time buyers", once.len());
    assert!(
        once.iter().any(|(days, _, _)| *days > 365),
        "some bought over a year ago"
    );
    for (days, p, v) in &once {
        let clv = v.clv.as_ref().expect("clv");
        assert_eq!(clv.purchase_model, spb::PurchaseModel::BgNbd as i32);
        assert_eq!(*p, 1.0, "BG/NBD's P(alive) of a one-time buyer");
        let churn = v.churn_risk.as_ref().expect("churn risk");
        assert_eq!(
            churn.level,
            spb::ChurnRiskLevel::Unspecified as i32,
            "{v:?}"
        );
        assert_eq!(churn.probability, None);
        assert!(
            v.drivers
                .iter()
                .all(|d| !d.contains("chance they are still active")
                    && !d.contains("Very likely still active")),
            "{days} days: {:?}",
            v.drivers
        );
        if *days > 365 {
            assert!(
                v.drivers.iter().any(|d| d.contains("cannot tell")),
                "{days} days: {:?}",
                v.drivers
            );
        }
    }
    // Repeat buyers keep BG/NBD's estimate and its churn level.
    assert!(values.iter().any(|v| {
        v.rfm.as_ref().is_some_and(|r| r.frequency > 0)
            && v.churn_risk
                .as_ref()
                .is_some_and(|c| c.level != spb::ChurnRiskLevel::Unspecified as i32)
    }));

    let mut scoring = ScoringServiceClient::new(connect(demo.addr).await);
    for (model, name) in [
        (spb::PurchaseModel::MbgNbd, "MBG/NBD"),
        (spb::PurchaseModel::ParetoNbd, "Pareto/NBD"),
    ] {
        let fitted = scoring
            .fit_value_model(spb::FitValueModelRequest {
                purchase_model: model.into(),
                activate: true,
                ..Default::default()
            })
            .await
            .expect("fit")
            .into_inner()
            .model
            .expect("model");
        assert_eq!(fitted.purchase_model, model as i32, "{name}");
        assert!(fitted.active);
        assert!(fitted.bg_nbd.is_some(), "BG/NBD is fitted alongside");
        match model {
            spb::PurchaseModel::MbgNbd => {
                assert!(
                    fitted.mbg_nbd.as_ref().expect("mbg").converged,
                    "{fitted:?}"
                );
                assert!(fitted.pareto_nbd.is_none());
            }
            _ => {
                assert!(
                    fitted.pareto_nbd.as_ref().expect("pnbd").converged,
                    "{fitted:?}"
                );
                assert!(fitted.mbg_nbd.is_none());
            }
        }
        let values = all_values(demo.addr).await;
        assert!(values.iter().all(|v| v.model_version == fitted.version));
        let once = one_time_buyers(&values);
        assert!(once.len() >= 100, "{name}: {} one-time buyers", once.len());
        // Strictly lower for an older purchase; equal for the same day.
        for w in once.windows(2) {
            let ((d0, p0, _), (d1, p1, _)) = (w[0], w[1]);
            if d1 > d0 {
                assert!(p1 < p0, "{name}: {d0} days {p0}, {d1} days {p1}");
            } else {
                assert!((p1 - p0).abs() < 1e-12, "{name}: {d0} days {p0} vs {p1}");
            }
        }
        let (first, last) = (once[0], once[once.len() - 1]);
        let old = once.iter().filter(|(d, _, _)| *d > 365).count();
        eprintln!(
            "{name}: {} one-time buyers ({old} over a year ago), P(alive) {:.3} at {} days .. {:.3} at {} days",
            once.len(),
            first.1,
            first.0,
            last.1,
            last.0
        );
        assert!(
            first.1 - last.1 > 0.1,
            "{name}: P(alive) {} at {} days, {} at {} days",
            first.1,
            first.0,
            last.1,
            last.0
        );
        for (days, p, v) in &once {
            assert_eq!(
                v.clv.as_ref().expect("clv").purchase_model,
                model as i32,
                "{name}"
            );
            let churn = v.churn_risk.as_ref().expect("churn risk");
            assert_ne!(
                churn.level,
                spb::ChurnRiskLevel::Unspecified as i32,
                "{name}: the model tells"
            );
            let stated = churn.probability.expect("probability");
            assert!(
                (stated - (1.0 - p)).abs() < 1e-9,
                "{name}: {churn:?} vs {p}"
            );
            if *days > 365 {
                assert_ne!(
                    churn.level,
                    spb::ChurnRiskLevel::Low as i32,
                    "{name}: {days} days, P(alive) {p}"
                );
                assert!(
                    v.drivers
                        .iter()
                        .all(|d| !d.contains("Very likely still active")),
                    "{name}: {days} days: {:?}",
                    v.drivers
                );
            }
        }
    }
    demo.stop().await;
}
