//! Several `patron serve` processes on one database (three on Postgres, two on one SQLite file):
//! every view of every replica converges on every committed write, through the change feed;
//! consistency tokens give read-your-writes across replicas; earning happens exactly once
//! whatever process dies, and for `patron import` into a running server's database.

use std::time::{Duration, Instant};

use patron_proto::customers::v1 as cpb;
use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;
use patron_proto::loyalty::v1 as lpb;
use patron_proto::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use patron_proto::scoring::v1 as spb;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use patron_proto::segmentation::v1 as gpb;
use patron_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use tokio::process::Child;
use tonic::Code;
use tonic::transport::Channel;

use crate::durability::start_with;
use crate::support::{assert_status, connect, purchase, ts};

const TOKEN: &str = "patron-consistency-token";
/// Replicas read the feed often in tests (Postgres wakes them by notification anyway) and give up
/// a dead earner's lease quickly.
const FLAGS: &[&str] = &["--feed-poll-millis", "50", "--earner-lease-secs", "3"];
/// How long a change may take to reach another replica without a token, at most, in these tests.
const CONVERGE: Duration = Duration::from_secs(15);

struct Replica {
    child: Child,
    channel: Channel,
}

impl Replica {
    async fn start(url: &str) -> Self {
        let (child, addr) = start_with(url, FLAGS).await;
        Self {
            child,
            channel: connect(addr).await,
        }
    }
    fn customers(&self) -> CustomerServiceClient<Channel> {
        CustomerServiceClient::new(self.channel.clone())
    }
    fn scoring(&self) -> ScoringServiceClient<Channel> {
        ScoringServiceClient::new(self.channel.clone())
    }
    fn segments(&self) -> SegmentationServiceClient<Channel> {
        SegmentationServiceClient::new(self.channel.clone())
    }
    fn loyalty(&self) -> LoyaltyServiceClient<Channel> {
        LoyaltyServiceClient::new(self.channel.clone())
    }
}

fn token_of<T>(response: &tonic::Response<T>) -> String {
    response
        .metadata()
        .get(TOKEN)
        .expect("a write answer carries a consistency token")
        .to_str()
        .expect("ascii token")
        .to_owned()
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(TOKEN, token.parse().expect("token is metadata"));
    request
}

/// Polls `check` until it holds, for at most [`CONVERGE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < CONVERGE {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: did not converge within {CONVERGE:?}");
}

async fn value(
    r: &Replica,
    id: &str,
    token: Option<&str>,
) -> Result<spb::CustomerValue, tonic::Status> {
    let message = spb::GetCustomerValueRequest {
        customer_id: id.into(),
        ..Default::default()
    };
    let request = match token {
        Some(t) => with_token(message, t),
        None => tonic::Request::new(message),
    };
    r.scoring()
        .get_customer_value(request)
        .await
        .map(|v| v.into_inner().value.expect("value"))
}

fn frequency(v: &spb::CustomerValue) -> i64 {
    v.rfm.as_ref().map_or(-1, |r| r.frequency)
}

async fn record(r: &Replica, events: Vec<cpb::Event>) -> String {
    let response = r
        .customers()
        .record_events(cpb::RecordEventsRequest { events })
        .await
        .expect("record");
    token_of(&response)
}

async fn count(r: &Replica, segment: &str, token: Option<&str>) -> i64 {
    let message = gpb::CountSegmentMembersRequest {
        segment_id: segment.into(),
    };
    let request = match token {
        Some(t) => with_token(message, t),
        None => tonic::Request::new(message),
    };
    r.segments()
        .count_segment_members(request)
        .await
        .expect("count")
        .into_inner()
        .count
}

async fn active_model(r: &Replica, token: &str) -> i64 {
    value(r, "c000", Some(token))
        .await
        .expect("scored")
        .model_version
}

/// Everything the issue lists converges on every replica, at once with a token, and by itself
/// without one.
async fn replicas_converge(url: &str, n: usize) {
    let mut replicas = Vec::new();
    for _ in 0..n {
        replicas.push(Replica::start(url).await);
    }
    let a = &replicas[0];
    let others = &replicas[1..];

    // A purchase through A: with A's token every replica scores it at once; without, soon.
    let t = record(a, crate::scoring::population(150)).await;
    for r in others {
        let v = value(r, "c000", Some(&t)).await.expect("with token");
        assert!(frequency(&v) >= 0, "{v:?}");
    }
    let before = frequency(&value(a, "c001", None).await.expect("c001"));
    record(
        a,
        vec![purchase("c001", "extra-1", ts(300, 5), "extra-1", 5_000)],
    )
    .await;
    for r in others {
        eventually(
            "purchase reaches another replica without a token",
            || async {
                value(r, "c001", None)
                    .await
                    .is_ok_and(|v| frequency(&v) != before)
            },
        )
        .await;
    }

    // A model fitted through A scores everywhere; an activation through B switches everyone.
    let fitted = a
        .scoring()
        .fit_value_model(spb::FitValueModelRequest::default())
        .await
        .expect("fit");
    let t = token_of(&fitted);
    for r in &replicas {
        assert_eq!(active_model(r, &t).await, 1);
    }
    let second = a
        .scoring()
        .fit_value_model(spb::FitValueModelRequest {
            activate: true,
            ..Default::default()
        })
        .await
        .expect("fit 2");
    let t = token_of(&second);
    for r in &replicas {
        assert_eq!(active_model(r, &t).await, 2);
    }
    let b = &replicas[1];
    let activated = b
        .scoring()
        .activate_value_model(spb::ActivateValueModelRequest { version: 1 })
        .await
        .expect("activate through B");
    let t = token_of(&activated);
    for r in &replicas {
        assert_eq!(active_model(r, &t).await, 1, "one active model everywhere");
    }

    // Tier policy: written through A, then through B at the revision B reads.
    let policy = a
        .scoring()
        .get_tier_policy(spb::GetTierPolicyRequest {})
        .await
        .expect("policy")
        .into_inner()
        .policy
        .expect("policy");
    let updated = a
        .scoring()
        .update_tier_policy(spb::UpdateTierPolicyRequest {
            policy: Some(policy.clone()),
            update_mask: None,
        })
        .await
        .expect("update through A");
    let mut t = token_of(&updated);
    let mut revision = policy.revision + 1;
    for r in others {
        let seen = r
            .scoring()
            .get_tier_policy(with_token(spb::GetTierPolicyRequest {}, &t))
            .await
            .expect("policy on another replica")
            .into_inner()
            .policy
            .expect("policy");
        assert_eq!(seen.revision, revision);
        let again = r
            .scoring()
            .update_tier_policy(spb::UpdateTierPolicyRequest {
                policy: Some(seen.clone()),
                update_mask: None,
            })
            .await
            .expect("update through another replica at the revision it reads");
        t = token_of(&again);
        revision += 1;
        let on_a = a
            .scoring()
            .get_tier_policy(with_token(spb::GetTierPolicyRequest {}, &t))
            .await
            .expect("policy")
            .into_inner()
            .policy
            .expect("policy");
        assert_eq!(on_a.revision, revision);
    }

    // A segment created through A counts on every replica at once with the token.
    let created = a
        .segments()
        .create_segment(gpb::CreateSegmentRequest {
            segment: Some(gpb::Segment {
                segment_id: "buyers".into(),
                display_name: "Buyers".into(),
                rule: "purchases.count(3650) >= 1".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("segment");
    let t = token_of(&created);
    let on_a = count(a, "buyers", Some(&t)).await;
    assert_eq!(on_a, 150);
    for r in others {
        assert_eq!(count(r, "buyers", Some(&t)).await, on_a);
    }

    // A WatchSegment stream on every other replica hears of a customer A's write moves in.
    let mut streams = Vec::new();
    for r in others {
        let stream = r
            .segments()
            .watch_segment(with_token(
                gpb::WatchSegmentRequest {
                    segment_id: "buyers".into(),
                    include_initial_members: false,
                },
                &t,
            ))
            .await
            .expect("watch")
            .into_inner();
        streams.push(stream);
    }
    record(
        a,
        vec![purchase("newcomer", "nc-1", ts(320, 0), "nc-1", 2_500)],
    )
    .await;
    for stream in &mut streams {
        let change = tokio::time::timeout(CONVERGE, stream.message())
            .await
            .expect("a change within the bound")
            .expect("stream ok")
            .expect("a message");
        assert_eq!(
            (change.customer_id.as_str(), change.change),
            ("newcomer", gpb::MembershipChange::Entered as i32)
        );
    }
    drop(streams);

    // Loyalty: an adjustment through A moves a `loyalty.points` rule on every replica.
    let t = token_of(
        &a.loyalty()
            .create_program(lpb::CreateProgramRequest {
                program: Some(lpb::Program {
                    earning: crate::loyalty::first_purchase_bonus_zero(),
                    auto_enroll: false,
                    ..crate::loyalty::program("club")
                }),
            })
            .await
            .expect("program"),
    );
    let rich = gpb::Segment {
        segment_id: "rich".into(),
        display_name: "Rich".into(),
        rule: "loyalty.points(\"club\") >= 500".into(),
        ..Default::default()
    };
    let created = b
        .segments()
        .create_segment(with_token(
            gpb::CreateSegmentRequest {
                segment: Some(rich),
            },
            &t,
        ))
        .await
        .expect("a segment on B over A's new program");
    let t = token_of(&created);
    assert_eq!(count(a, "rich", Some(&t)).await, 0);
    // Enrolled through B, adjusted through A with B's token.
    let enrolled = b
        .loyalty()
        .enroll(lpb::EnrollRequest {
            program_id: "club".into(),
            customer_id: "c002".into(),
        })
        .await
        .expect("enroll through B");
    let adjusted = a
        .loyalty()
        .adjust_points(with_token(
            lpb::AdjustPointsRequest {
                program_id: "club".into(),
                customer_id: "c002".into(),
                points: 600,
                reason: "goodwill".into(),
                issuer: "test".into(),
                request_id: "adj-1".into(),
            },
            &token_of(&enrolled),
        ))
        .await
        .expect("adjust");
    let t = token_of(&adjusted);
    for r in &replicas {
        assert_eq!(count(r, "rich", Some(&t)).await, 1);
    }

    // Concurrent writers on every replica to the same customers end with identical views equal
    // to what the database holds.
    let mut writers = Vec::new();
    for (w, r) in replicas.iter().enumerate() {
        let client = r.customers();
        writers.push(tokio::spawn(async move {
            let mut last = String::new();
            for round in 0..10 {
                let events: Vec<cpb::Event> = (0..16)
                    .map(|c| {
                        purchase(
                            &format!("hot{c:02}"),
                            &format!("w{w}-r{round}-{c}"),
                            ts(100 + round, (w * 100 + c) as i64),
                            &format!("w{w}-r{round}-{c}"),
                            1_000,
                        )
                    })
                    .collect();
                let response = client
                    .clone()
                    .record_events(cpb::RecordEventsRequest { events })
                    .await
                    .expect("concurrent record");
                last = token_of(&response);
            }
            last
        }));
    }
    let mut tokens = Vec::new();
    for w in writers {
        tokens.push(w.await.expect("writer"));
    }
    for c in 0..16 {
        let id = format!("hot{c:02}");
        let stored = a
            .customers()
            .get_customer(cpb::GetCustomerRequest {
                customer_id: id.clone(),
            })
            .await
            .expect("customer")
            .into_inner()
            .customer
            .expect("customer");
        let stored_summary = stored.summary.expect("summary");
        for r in &replicas {
            // Every writer's last token, so the read follows every write.
            let mut v = None;
            for t in &tokens {
                v = Some(value(r, &id, Some(t)).await.expect("value"));
            }
            let v = v.expect("a value");
            let rfm = v.rfm.expect("rfm");
            assert_eq!(
                rfm.monetary_total.map(|m| m.minor_units),
                stored_summary.net_revenue.clone().map(|m| m.minor_units),
                "{id}"
            );
            assert_eq!(rfm.frequency, stored_summary.frequency, "{id}");
        }
    }

    // Hold-out fits keep each customer's dated history in memory (patron_views::dated): a write
    // through A that changes the past reaches B's next hold-out fit, which then equals the fit of
    // a replica that never held those histories (A's first hold-out fit reads the store).
    let (calibration_end, holdout_end) = (crate::scoring::ago(100), crate::scoring::ago(0));
    let holdout = |r: &Replica, token: Option<String>| {
        let mut client = r.scoring();
        async move {
            let request = spb::FitValueModelRequest {
                calibration_end: Some(calibration_end),
                holdout_end: Some(holdout_end),
                ..Default::default()
            };
            let request = match &token {
                Some(t) => with_token(request, t),
                None => tonic::Request::new(request),
            };
            let model = client
                .fit_value_model(request)
                .await
                .expect("hold-out fit")
                .into_inner()
                .model
                .expect("model");
            (
                model.bg_nbd,
                model.gamma_gamma,
                model.holdout,
                model.customers,
            )
        }
    };
    let before = holdout(b, None).await;
    assert!(before.2.is_some(), "a hold-out report");
    // A customer who bought before the calibration end and has events after it (B keeps its
    // history): another purchase, on a new day before the calibration end, changes its past.
    let population = crate::scoring::population(150);
    let seconds = |e: &cpb::Event| e.occurred_at.as_ref().map_or(0, |t| t.seconds);
    let changed = population
        .iter()
        .filter(|e| seconds(e) <= calibration_end.seconds - 86_400)
        .map(|e| e.customer_id.as_str())
        .find(|c| {
            population
                .iter()
                .any(|e| e.customer_id == *c && seconds(e) > calibration_end.seconds + 86_400)
        })
        .expect("a customer with events on both sides of the calibration end");
    let backfilled = record(
        a,
        vec![purchase(
            changed,
            "backfilled-1",
            prost_types::Timestamp {
                seconds: calibration_end.seconds - 7 * 86_400 - 1_234,
                nanos: 0,
            },
            "backfilled-1",
            2_500,
        )],
    )
    .await;
    let on_b = holdout(b, Some(backfilled.clone())).await;
    assert_ne!(on_b, before, "the backfilled purchase changes the fit");
    let on_a = holdout(a, Some(backfilled.clone())).await;
    assert_eq!(on_b, on_a, "B's kept histories follow the write");
    assert_eq!(
        holdout(b, Some(backfilled)).await,
        on_a,
        "and again from memory"
    );

    // Bad tokens are refused before anything runs.
    for bad in [
        "nonsense",
        "v1.abc.-3",
        "v1.0123456789abcdef0123456789abcdef.5",
    ] {
        let err = value(b, "c000", Some(bad)).await.expect_err("bad token");
        assert_status(
            &err,
            Code::InvalidArgument,
            "INVALID_CONSISTENCY_TOKEN",
            Some(TOKEN),
        );
    }
    // A token ahead of anything committed waits for the deadline, then says why.
    let ahead = {
        let (db, _) = t.rsplit_once('.').expect("token");
        format!("{db}.999999999")
    };
    let mut request = with_token(
        spb::GetCustomerValueRequest {
            customer_id: "c000".into(),
            ..Default::default()
        },
        &ahead,
    );
    request.set_timeout(Duration::from_millis(500));
    let err = b
        .scoring()
        .get_customer_value(request)
        .await
        .expect_err("not reached");
    assert_status(
        &err,
        Code::Unavailable,
        "CONSISTENCY_TOKEN_NOT_REACHED",
        None,
    );
    drop(replicas);
}

#[tokio::test]
async fn two_replicas_on_one_sqlite_file_converge() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    replicas_converge(&url, 2).await;
}

#[tokio::test]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn three_replicas_on_one_postgres_converge() {
    let db = patron_store_postgres::testing::TestDatabase::create().await;
    replicas_converge(&db.url, 3).await;
}

async fn points(r: &Replica, program: &str, customer: &str) -> Option<i64> {
    let m = r
        .loyalty()
        .get_membership(lpb::GetMembershipRequest {
            program_id: program.into(),
            customer_id: customer.into(),
        })
        .await
        .ok()?
        .into_inner()
        .membership?;
    let b = m.balances?;
    Some(b.available + b.pending)
}

fn earning_program() -> lpb::Program {
    lpb::Program {
        earning: crate::loyalty::first_purchase_bonus_zero(),
        pending_days: 0,
        ..crate::loyalty::program("earn")
    }
}

/// `patron import` into the database of a running server: the server sees the customers and
/// their purchases earn points, exactly once.
#[tokio::test]
async fn import_into_a_running_server_becomes_visible_and_earns() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let server = Replica::start(&url).await;
    server
        .loyalty()
        .create_program(lpb::CreateProgramRequest {
            program: Some(earning_program()),
        })
        .await
        .expect("program");
    let customers = dir.path().join("customers.csv");
    let transactions = dir.path().join("transactions.csv");
    std::fs::write(&customers, "customer_id,country\nimp1,DE\nimp2,US\n").expect("write");
    std::fs::write(
        &transactions,
        "customer_id,date,amount,order_id\n\
         imp1,2026-01-05,19.00,A1\n\
         imp1,2026-02-10,10.00,A2\n\
         imp2,2026-03-01,7.00,B1\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patron"))
        .args(["import", "--database", &url, "--customers"])
        .arg(&customers)
        .arg("--transactions")
        .arg(&transactions)
        .env("PATRON_LOG", "warn")
        .output()
        .expect("run patron import");
    assert!(out.status.success(), "{out:?}");
    eventually("imported customer is scored", || async {
        value(&server, "imp1", None)
            .await
            .is_ok_and(|v| frequency(&v) == 1)
    })
    .await;
    eventually("imported purchases earn", || async {
        points(&server, "earn", "imp1").await == Some(29)
            && points(&server, "earn", "imp2").await == Some(7)
    })
    .await;
    // Nothing earns twice, however long we wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(points(&server, "earn", "imp1").await, Some(29));
    drop(server);
}

/// Kill the earning replica with purchases in flight; the survivor takes the lease over and
/// every stored purchase earns exactly once.
async fn sigkill_mid_earning_earns_exactly_once(url: &str) {
    let mut first = Replica::start(url).await;
    first
        .loyalty()
        .create_program(lpb::CreateProgramRequest {
            program: Some(earning_program()),
        })
        .await
        .expect("program");
    let second = Replica::start(url).await;
    // Writers on the first replica (the earner: it started first) until it dies.
    let mut writers = Vec::new();
    for w in 0..4 {
        let client = first.customers();
        writers.push(tokio::spawn(async move {
            for b in 0..400 {
                let events: Vec<cpb::Event> = (0..5)
                    .map(|i| {
                        purchase(
                            &format!("k{}", (w * 5 + i) % 8),
                            &format!("w{w}-b{b}-{i}"),
                            ts(10, (b * 10 + i) as i64),
                            &format!("w{w}-b{b}-{i}"),
                            100,
                        )
                    })
                    .collect();
                if client
                    .clone()
                    .record_events(cpb::RecordEventsRequest { events })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    first.child.start_kill().expect("SIGKILL");
    let _ = first.child.wait().await;
    for w in writers {
        let _ = w.await;
    }
    // Every stored purchase is worth one point (1.00 USD each): compare with what is stored.
    let mut expected = Vec::new();
    for c in 0..8 {
        let id = format!("k{c}");
        let stored = second
            .customers()
            .get_customer(cpb::GetCustomerRequest {
                customer_id: id.clone(),
            })
            .await
            .map(|r| r.into_inner().customer.expect("customer"))
            .ok();
        let n = stored.and_then(|c| c.summary).map_or(0, |s| s.order_count);
        expected.push((id, n));
    }
    assert!(
        expected.iter().any(|(_, n)| *n > 0),
        "some purchases stored"
    );
    for (id, n) in &expected {
        eventually(
            "the survivor earns what the dead replica did not",
            || async { points(&second, "earn", id).await.unwrap_or(0) == *n },
        )
        .await;
    }
    // And a restart of the dead replica changes nothing.
    let restarted = Replica::start(url).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (id, n) in &expected {
        assert_eq!(
            points(&restarted, "earn", id).await.unwrap_or(0),
            *n,
            "{id}"
        );
        assert_eq!(points(&second, "earn", id).await.unwrap_or(0), *n, "{id}");
    }
}

#[tokio::test]
async fn sigkill_mid_earning_on_sqlite_earns_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    sigkill_mid_earning_earns_exactly_once(&url).await;
}

#[tokio::test]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn sigkill_mid_earning_on_postgres_earns_exactly_once() {
    let db = patron_store_postgres::testing::TestDatabase::create().await;
    sigkill_mid_earning_earns_exactly_once(&db.url).await;
}
