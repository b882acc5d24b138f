//! LoyaltyService over real gRPC: a program with tiers earning from recorded events, eligibility
//! with reasons, redemption under contention and replays, cancellation, and bad input.

use std::collections::BTreeSet;

use patron_proto::customers::v1 as cpb;
use patron_proto::loyalty::v1 as pb;
use patron_proto::loyalty::v1::loyalty_service_client::LoyaltyServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::support::{Backend, TestApp, assert_status, purchase, refund, spawn_app, usd};

fn loyalty(app: &TestApp) -> LoyaltyServiceClient<Channel> {
    LoyaltyServiceClient::new(app.channel.clone())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn ago(days: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: now_secs() - days * 86_400 - 60,
        nanos: 0,
    }
}

fn tier(name: &str, min_points: i64, multiplier: i32) -> pb::ProgramTier {
    pb::ProgramTier {
        name: name.into(),
        min_points,
        min_spend: None,
        min_tenure_days: 0,
        earn_multiplier_percent: multiplier,
    }
}

pub fn program(id: &str) -> pb::Program {
    pb::Program {
        program_id: id.into(),
        display_name: "Rewards".into(),
        currency_code: "USD".into(),
        earning: Some(pb::EarningRules {
            points_per_unit: 1,
            first_purchase_bonus: 100,
            event_bonuses: vec![pb::EventBonus {
                event_name: "review".into(),
                points: 25,
                cap: 2,
                cap_period: pb::CapPeriod::Week as i32,
            }],
        }),
        pending_days: 14,
        expiry_days: 365,
        tiers: vec![tier("Member", 0, 100), tier("Gold", 1000, 150)],
        tier_window_days: 365,
        tier_grace_days: 30,
        target_segment: String::new(),
        auto_enroll: true,
        ..Default::default()
    }
}

fn reward(id: &str, program: &str, cost: i64) -> pb::Reward {
    pb::Reward {
        reward_id: id.into(),
        program_id: program.into(),
        display_name: format!("Reward {id}"),
        cost,
        ..Default::default()
    }
}

async fn create_program(app: &TestApp, p: pb::Program) {
    loyalty(app)
        .create_program(pb::CreateProgramRequest { program: Some(p) })
        .await
        .expect("create program");
}

async fn create_reward(app: &TestApp, r: pb::Reward) {
    loyalty(app)
        .create_reward(pb::CreateRewardRequest { reward: Some(r) })
        .await
        .expect("create reward");
}

async fn membership(app: &TestApp, program: &str, customer: &str) -> pb::Membership {
    loyalty(app)
        .get_membership(pb::GetMembershipRequest {
            program_id: program.into(),
            customer_id: customer.into(),
        })
        .await
        .expect("membership")
        .into_inner()
        .membership
        .expect("membership")
}

async fn balances(app: &TestApp, program: &str, customer: &str) -> pb::Balances {
    membership(app, program, customer)
        .await
        .balances
        .expect("balances")
}

async fn ledger_sum(app: &TestApp, program: &str, customer: &str) -> (i64, usize) {
    let mut sum = 0;
    let mut n = 0;
    let mut token = String::new();
    loop {
        let page = loyalty(app)
            .list_ledger_entries(pb::ListLedgerEntriesRequest {
                program_id: program.into(),
                customer_id: customer.into(),
                page_size: 7,
                page_token: token,
            })
            .await
            .expect("ledger")
            .into_inner();
        n += page.entries.len();
        sum += page.entries.iter().map(|e| e.amount).sum::<i64>();
        if page.next_page_token.is_empty() {
            return (sum, n);
        }
        token = page.next_page_token;
    }
}

async fn adjust(
    app: &TestApp,
    program: &str,
    customer: &str,
    points: i64,
    request: &str,
) -> Result<pb::AdjustPointsResponse, tonic::Status> {
    loyalty(app)
        .adjust_points(pb::AdjustPointsRequest {
            program_id: program.into(),
            customer_id: customer.into(),
            points,
            reason: "goodwill".into(),
            issuer: "agent-7".into(),
            request_id: request.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn enroll(app: &TestApp, program: &str, customer: &str) -> pb::EnrollResponse {
    loyalty(app)
        .enroll(pb::EnrollRequest {
            program_id: program.into(),
            customer_id: customer.into(),
        })
        .await
        .expect("enroll")
        .into_inner()
}

async fn redeem(
    app: &TestApp,
    program: &str,
    customer: &str,
    reward: &str,
    request: &str,
) -> Result<pb::RedeemRewardResponse, tonic::Status> {
    loyalty(app)
        .redeem_reward(pb::RedeemRewardRequest {
            program_id: program.into(),
            customer_id: customer.into(),
            reward_id: reward.into(),
            request_id: request.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn custom(customer: &str, id: &str, name: &str) -> cpb::Event {
    cpb::Event {
        event_id: id.into(),
        customer_id: customer.into(),
        occurred_at: Some(ago(0)),
        kind: Some(cpb::event::Kind::Custom(cpb::CustomEvent {
            name: name.into(),
            properties: Default::default(),
        })),
        record_time: None,
    }
}

async fn purchases_earn_points_once_and_refunds_take_them_back(backend: Backend) {
    let app = spawn_app(backend).await;
    create_program(&app, program("rewards")).await;
    create_reward(&app, reward("coffee", "rewards", 150)).await;
    // A purchase of USD 120.00 auto-enrols and earns 120 pending points plus the first-purchase
    // bonus of 100, available at once. Replaying the batch earns nothing more.
    let batch = vec![purchase("ana", "p1", ago(1), "o1", 12_000)];
    app.record(batch.clone()).await.expect("record");
    app.record(batch).await.expect("replay");
    let b = balances(&app, "rewards", "ana").await;
    assert_eq!((b.available, b.pending, b.lifetime_earned), (100, 120, 220));
    // Not enough for the coffee: 50 more points.
    let check = loyalty(&app)
        .check_eligibility(pb::CheckEligibilityRequest {
            program_id: "rewards".into(),
            customer_id: "ana".into(),
            reward_ids: vec!["coffee".into()],
        })
        .await
        .expect("check")
        .into_inner();
    let r = &check.results[0];
    assert_eq!(r.status, pb::EligibilityStatus::Ineligible as i32);
    assert_eq!(r.unmet.len(), 1);
    let u = &r.unmet[0];
    assert_eq!(
        (u.reason, u.required, u.actual, u.missing),
        (
            pb::IneligibilityReason::InsufficientPoints as i32,
            150,
            100,
            50
        )
    );
    // Bonus events, capped at 2 a week.
    app.record(vec![
        custom("ana", "rv1", "review"),
        custom("ana", "rv2", "review"),
        custom("ana", "rv3", "review"),
    ])
    .await
    .expect("reviews");
    assert_eq!(balances(&app, "rewards", "ana").await.available, 150);
    // Redeem; a replay answers the same; the balance moved once.
    let first = redeem(&app, "rewards", "ana", "coffee", "req-1")
        .await
        .expect("redeem");
    assert!(!first.replayed);
    assert_eq!(first.balances.as_ref().map(|b| b.available), Some(0));
    let again = redeem(&app, "rewards", "ana", "coffee", "req-1")
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.redemption, first.redemption);
    // A refund of half the order takes 60 pending points back.
    app.record(vec![refund("ana", "r1", ago(0), "o1", 6_000)])
        .await
        .expect("refund");
    let b = balances(&app, "rewards", "ana").await;
    assert_eq!((b.available, b.pending), (0, 60));
    // Cancelling the redemption restores its points.
    let redemption_id = first.redemption.expect("redemption").redemption_id;
    let cancelled = loyalty(&app)
        .cancel_redemption(pb::CancelRedemptionRequest {
            program_id: "rewards".into(),
            customer_id: "ana".into(),
            redemption_id,
            reason: "changed mind".into(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.balances.map(|b| b.available), Some(150));
    // Refunding the rest of the order takes the remaining pending points.
    app.record(vec![refund("ana", "r2", ago(0), "o1", 6_000)])
        .await
        .expect("refund rest");
    let b = balances(&app, "rewards", "ana").await;
    assert_eq!((b.available, b.pending, b.debt), (150, 0, 0));
    // A refund that arrives before its purchase: the purchase earns on the net amount.
    app.record(vec![refund("ana", "r9", ago(0), "o9", 2_000)])
        .await
        .expect("early refund");
    app.record(vec![purchase("ana", "p9", ago(0), "o9", 5_000)])
        .await
        .expect("late purchase");
    let b = balances(&app, "rewards", "ana").await;
    assert_eq!(
        (b.available, b.pending),
        (150, 30),
        "USD 50.00 - 20.00 earns 30 points"
    );
    // The ledger sums to the balance.
    let (sum, entries) = ledger_sum(&app, "rewards", "ana").await;
    assert_eq!(sum, b.available + b.pending - b.debt);
    assert!(entries >= 9, "{entries} entries");
}

async fn tiers_and_eligibility_reasons(backend: Backend) {
    let app = spawn_app(backend).await;
    create_program(&app, program("rewards")).await;
    create_reward(
        &app,
        pb::Reward {
            min_tier: "Gold".into(),
            min_tenure_days: 365,
            min_lifetime_spend: Some(usd(500_000)),
            per_customer_limit: 1,
            stock: Some(0),
            ..reward("lounge", "rewards", 300)
        },
    )
    .await;
    app.record(vec![purchase("ben", "p1", ago(2), "o1", 90_000)])
        .await
        .expect("record");
    let m = membership(&app, "rewards", "ben").await;
    let t = m.tier.expect("tier");
    // 900 purchase points (pending, but earned) + the 100-point bonus: 1000 in the window, Gold.
    assert_eq!(
        (t.tier.as_str(), t.rank, t.points_in_window),
        ("Gold", 2, 1000)
    );
    let check = loyalty(&app)
        .check_eligibility(pb::CheckEligibilityRequest {
            program_id: "rewards".into(),
            customer_id: "ben".into(),
            reward_ids: vec![],
        })
        .await
        .expect("check")
        .into_inner();
    let reasons: BTreeSet<i32> = check.results[0].unmet.iter().map(|u| u.reason).collect();
    for r in [
        pb::IneligibilityReason::OutOfStock,
        pb::IneligibilityReason::InsufficientPoints,
        pb::IneligibilityReason::TenureTooShort,
        pb::IneligibilityReason::SpendTooLow,
    ] {
        assert!(
            reasons.contains(&(r as i32)),
            "{r:?} missing from {reasons:?}"
        );
    }
    // Someone else, not a member at all.
    app.record(vec![cpb::Event {
        event_id: "x".into(),
        customer_id: "cat".into(),
        occurred_at: Some(ago(0)),
        kind: Some(cpb::event::Kind::Engagement(cpb::Engagement {
            activity: "login".into(),
        })),
        record_time: None,
    }])
    .await
    .expect("record");
    let check = loyalty(&app)
        .check_eligibility(pb::CheckEligibilityRequest {
            program_id: "rewards".into(),
            customer_id: "cat".into(),
            reward_ids: vec!["lounge".into()],
        })
        .await
        .expect("check")
        .into_inner();
    let reasons: Vec<i32> = check.results[0].unmet.iter().map(|u| u.reason).collect();
    assert_eq!(reasons[0], pb::IneligibilityReason::NotEnrolled as i32);
    assert!(reasons.contains(&(pb::IneligibilityReason::TierTooLow as i32)));
    let err = redeem(&app, "rewards", "cat", "lounge", "r1")
        .await
        .expect_err("not a member");
    assert_status(&err, Code::FailedPrecondition, "NOT_ELIGIBLE", None);
}

async fn concurrent_redemptions_never_overdraw(backend: Backend) {
    let app = spawn_app(backend).await;
    create_program(
        &app,
        pb::Program {
            earning: first_purchase_bonus_zero(),
            ..program("rewards")
        },
    )
    .await;
    for seed in 1..=8u64 {
        let k = (seed * 7 % 23 + 1) as i64;
        let cost = 10 + (seed * 37 % 90) as i64;
        let customer = format!("hot{seed}");
        let reward_id = format!("item{seed}");
        create_reward(&app, reward(&reward_id, "rewards", cost)).await;
        app.record(vec![purchase(
            &customer,
            &format!("p{seed}"),
            ago(400),
            &format!("o{seed}"),
            1,
        )])
        .await
        .expect("record");
        enroll(&app, "rewards", &customer).await;
        let before = balances(&app, "rewards", &customer).await.available;
        adjust(
            &app,
            "rewards",
            &customer,
            k * cost - before,
            &format!("fund{seed}"),
        )
        .await
        .expect("fund");
        let mut tasks = Vec::new();
        for i in 0..64 {
            let client = loyalty(&app);
            let (customer, reward_id) = (customer.clone(), reward_id.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = client;
                client
                    .redeem_reward(pb::RedeemRewardRequest {
                        program_id: "rewards".into(),
                        customer_id: customer,
                        reward_id,
                        request_id: format!("c{i}"),
                    })
                    .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => ok += 1,
                Err(status) => {
                    assert_status(&status, Code::FailedPrecondition, "NOT_ELIGIBLE", None)
                }
            }
        }
        assert_eq!(ok, k, "seed {seed}: exactly k redemptions");
        let b = balances(&app, "rewards", &customer).await;
        assert_eq!((b.available, b.pending, b.debt), (0, 0, 0), "seed {seed}");
        let (sum, _) = ledger_sum(&app, "rewards", &customer).await;
        assert_eq!(sum, 0, "seed {seed}: the ledger sums to the balance");
    }
}

pub(crate) fn first_purchase_bonus_zero() -> Option<pb::EarningRules> {
    Some(pb::EarningRules {
        points_per_unit: 1,
        first_purchase_bonus: 0,
        event_bonuses: vec![],
    })
}

async fn replays_have_one_effect(backend: Backend) {
    let app = spawn_app(backend).await;
    create_program(&app, program("rewards")).await;
    create_reward(&app, reward("mug", "rewards", 40)).await;
    create_reward(&app, reward("pen", "rewards", 10)).await;
    app.record(vec![purchase("dee", "p1", ago(30), "o1", 100)])
        .await
        .expect("record");
    adjust(&app, "rewards", "dee", 400, "fund")
        .await
        .expect("fund");
    let before = balances(&app, "rewards", "dee").await.available;
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut client = loyalty(&app);
        tasks.push(tokio::spawn(async move {
            client
                .redeem_reward(pb::RedeemRewardRequest {
                    program_id: "rewards".into(),
                    customer_id: "dee".into(),
                    reward_id: "mug".into(),
                    request_id: "same".into(),
                })
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task").expect("redeem"));
    }
    assert_eq!(
        answers.iter().filter(|a| !a.replayed).count(),
        1,
        "one effect"
    );
    let ids: BTreeSet<String> = answers
        .iter()
        .map(|a| a.redemption.as_ref().expect("r").redemption_id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "identical answers");
    assert_eq!(
        balances(&app, "rewards", "dee").await.available,
        before - 40
    );
    let err = redeem(&app, "rewards", "dee", "pen", "same")
        .await
        .expect_err("reused");
    assert_status(&err, Code::FailedPrecondition, "REQUEST_ID_REUSED", None);
    // Adjustments replay too.
    let a = adjust(&app, "rewards", "dee", 5, "bonus-1")
        .await
        .expect("adjust");
    let b = adjust(&app, "rewards", "dee", 5, "bonus-1")
        .await
        .expect("replay");
    assert!(!a.replayed && b.replayed);
    assert_eq!(
        balances(&app, "rewards", "dee").await.available,
        before - 40 + 5
    );
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    create_program(&app, program("rewards")).await;
    create_reward(&app, reward("mug", "rewards", 40)).await;
    app.record(vec![purchase("eve", "p1", ago(30), "o1", 100)])
        .await
        .expect("record");
    let bad_programs: Vec<(pb::Program, &str)> = vec![
        (
            pb::Program {
                program_id: "Bad".into(),
                ..program("x")
            },
            "program.program_id",
        ),
        (
            pb::Program {
                currency_code: "EUR".into(),
                ..program("x")
            },
            "program.currency_code",
        ),
        (
            pb::Program {
                earning: Some(pb::EarningRules {
                    points_per_unit: 0,
                    ..Default::default()
                }),
                ..program("x")
            },
            "program.earning.points_per_unit",
        ),
        (
            pb::Program {
                tiers: vec![tier("Member", 0, 100), tier("Gold", 0, 150)],
                ..program("x")
            },
            "program.tiers[1]",
        ),
        (
            pb::Program {
                expiry_days: -1,
                ..program("x")
            },
            "program.expiry_days",
        ),
        (
            pb::Program {
                target_segment: "ghost".into(),
                ..program("x")
            },
            "program.target_segment",
        ),
    ];
    for (p, field) in bad_programs {
        let err = loyalty(&app)
            .create_program(pb::CreateProgramRequest { program: Some(p) })
            .await
            .expect_err("bad program");
        assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some(field));
    }
    for (cost, field) in [(0, "reward.cost"), (-5, "reward.cost")] {
        let err = loyalty(&app)
            .create_reward(pb::CreateRewardRequest {
                reward: Some(reward("r2", "rewards", cost)),
            })
            .await
            .expect_err("bad cost");
        assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some(field));
    }
    let err = loyalty(&app)
        .create_reward(pb::CreateRewardRequest {
            reward: Some(pb::Reward {
                min_tier: "Platinum".into(),
                ..reward("r2", "rewards", 5)
            }),
        })
        .await
        .expect_err("bad tier");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("reward.min_tier"),
    );
    let err = loyalty(&app)
        .create_reward(pb::CreateRewardRequest {
            reward: Some(reward("r2", "nope", 5)),
        })
        .await
        .expect_err("unknown program");
    assert_status(&err, Code::NotFound, "PROGRAM_NOT_FOUND", None);
    let err = redeem(&app, "nope", "eve", "mug", "a")
        .await
        .expect_err("unknown program");
    assert_status(&err, Code::NotFound, "PROGRAM_NOT_FOUND", None);
    let err = redeem(&app, "rewards", "eve", "ghost", "a")
        .await
        .expect_err("unknown reward");
    assert_status(&err, Code::NotFound, "REWARD_NOT_FOUND", None);
    let err = redeem(&app, "rewards", "nobody", "mug", "a")
        .await
        .expect_err("unknown customer");
    assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND", None);
    let err = redeem(&app, "rewards", "eve", "mug", &"x".repeat(129))
        .await
        .expect_err("long id");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("request_id"),
    );
    let err = redeem(&app, "rewards", "eve", "mug", "")
        .await
        .expect_err("empty id");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("request_id"),
    );
    // eve earned 1 point and the bonus (auto-enrolled); the mug costs 40... she has 101: fine.
    // A customer who never enrolled: redeem is refused with NOT_ENROLLED among the reasons.
    app.customers
        .clone()
        .upsert_customers(cpb::UpsertCustomersRequest {
            customers: vec![cpb::Customer {
                customer_id: "fay".into(),
                ..Default::default()
            }],
        })
        .await
        .expect("upsert");
    let err = redeem(&app, "rewards", "fay", "mug", "a")
        .await
        .expect_err("not enrolled");
    assert_status(&err, Code::FailedPrecondition, "NOT_ELIGIBLE", None);
    let info = err.get_error_details().error_info().cloned().expect("info");
    assert!(
        info.metadata
            .get("reasons")
            .is_some_and(|r| r.contains("NOT_ENROLLED")),
        "{info:?}"
    );
    let err = adjust(&app, "rewards", "eve", -1_000_000, "big")
        .await
        .expect_err("overdraw");
    assert_status(&err, Code::FailedPrecondition, "INSUFFICIENT_POINTS", None);
    let err = adjust(&app, "rewards", "eve", 0, "zero")
        .await
        .expect_err("zero");
    assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some("points"));
    // The extremes too: i64::MIN has no absolute value in i64.
    for extreme in [
        i64::MIN,
        i64::MIN + 1,
        i64::MAX,
        1_000_000_001,
        -1_000_000_001,
    ] {
        let err = adjust(&app, "rewards", "eve", extreme, "extreme")
            .await
            .expect_err("extreme");
        assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some("points"));
    }
    let err = loyalty(&app)
        .get_membership(pb::GetMembershipRequest {
            program_id: "rewards".into(),
            customer_id: "fay".into(),
        })
        .await
        .expect_err("not a member");
    assert_status(&err, Code::NotFound, "MEMBER_NOT_FOUND", None);
    // Nothing changed: one program, one reward, eve's balance as earned.
    let programs = loyalty(&app)
        .list_programs(pb::ListProgramsRequest {
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner()
        .programs;
    assert_eq!(programs.len(), 1);
    let rewards = loyalty(&app)
        .list_rewards(pb::ListRewardsRequest {
            program_id: "rewards".into(),
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner()
        .rewards;
    assert_eq!(rewards.len(), 1);
    let b = balances(&app, "rewards", "eve").await;
    assert_eq!((b.available, b.pending), (101, 0));
}

async fn target_segments_gate_enrolment_and_cannot_be_deleted(backend: Backend) {
    use patron_proto::segmentation::v1 as spb;
    use patron_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
    let app = spawn_app(backend).await;
    let mut seg = SegmentationServiceClient::new(app.channel.clone());
    seg.create_segment(spb::CreateSegmentRequest {
        segment: Some(spb::Segment {
            segment_id: "big".into(),
            display_name: "Big spenders".into(),
            rule: "purchases.total_revenue >= 10000".into(),
            ..Default::default()
        }),
    })
    .await
    .expect("segment");
    create_program(
        &app,
        pb::Program {
            target_segment: "big".into(),
            ..program("vip")
        },
    )
    .await;
    app.record(vec![
        purchase("hal", "p1", ago(3), "o1", 20_000),
        purchase("ivy", "p2", ago(3), "o2", 500),
    ])
    .await
    .expect("record");
    // hal is in the segment and was auto-enrolled by his purchase; ivy is not.
    assert_eq!(balances(&app, "vip", "hal").await.pending, 200);
    let err = loyalty(&app)
        .enroll(pb::EnrollRequest {
            program_id: "vip".into(),
            customer_id: "ivy".into(),
        })
        .await
        .expect_err("outside the segment");
    assert_status(
        &err,
        Code::FailedPrecondition,
        "NOT_IN_TARGET_SEGMENT",
        None,
    );
    let err = loyalty(&app)
        .get_membership(pb::GetMembershipRequest {
            program_id: "vip".into(),
            customer_id: "ivy".into(),
        })
        .await
        .expect_err("not a member");
    assert_status(&err, Code::NotFound, "MEMBER_NOT_FOUND", None);
    let err = seg
        .delete_segment(spb::DeleteSegmentRequest {
            segment_id: "big".into(),
        })
        .await
        .expect_err("in use");
    assert_status(&err, Code::FailedPrecondition, "SEGMENT_IN_USE", None);
    assert!(err.message().contains("program:vip"), "{}", err.message());
}

async fn segments_read_loyalty_state(backend: Backend) {
    use patron_proto::segmentation::v1 as spb;
    use patron_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
    let app = spawn_app(backend).await;
    create_program(&app, program("rewards")).await;
    // jon: 900 + 100 points, Gold; kim: 40 + 100 points, Member; lee: not a member.
    app.record(vec![
        purchase("jon", "p1", ago(30), "o1", 90_000),
        purchase("kim", "p2", ago(30), "o2", 4_000),
    ])
    .await
    .expect("record");
    app.customers
        .clone()
        .upsert_customers(cpb::UpsertCustomersRequest {
            customers: vec![cpb::Customer {
                customer_id: "lee".into(),
                ..Default::default()
            }],
        })
        .await
        .expect("upsert");
    let mut seg = SegmentationServiceClient::new(app.channel.clone());
    let cases = [
        ("gold", "loyalty.tier(\"rewards\") == \"Gold\"", vec!["jon"]),
        ("rich", "loyalty.points(\"rewards\") >= 150", vec!["jon"]),
        (
            "members",
            "loyalty.enrolled(\"rewards\")",
            vec!["jon", "kim"],
        ),
        ("outsiders", "!loyalty.enrolled(\"rewards\")", vec!["lee"]),
        (
            "base",
            "loyalty.tier_rank(\"rewards\") == 1 && loyalty.pending(\"rewards\") == 0",
            vec!["kim"],
        ),
    ];
    for (id, rule, members) in cases {
        seg.create_segment(spb::CreateSegmentRequest {
            segment: Some(spb::Segment {
                segment_id: id.into(),
                display_name: id.into(),
                rule: rule.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_or_else(|e| panic!("{id}: {e:?}"));
        let listed = seg
            .list_segment_members(spb::ListSegmentMembersRequest {
                segment_id: id.into(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("list")
            .into_inner()
            .customer_ids;
        assert_eq!(listed, members, "{id}");
    }
    // A redemption moves jon out of "rich" at once.
    create_reward(&app, reward("tote", "rewards", 900)).await;
    redeem(&app, "rewards", "jon", "tote", "t1")
        .await
        .expect("redeem");
    let check = seg
        .check_membership(spb::CheckMembershipRequest {
            customer_id: "jon".into(),
            segment_id: "rich".into(),
            explain: true,
        })
        .await
        .expect("check")
        .into_inner();
    assert!(!check.member);
    let facts = check.explanation.expect("explanation").facts;
    assert_eq!(facts[0].expression, "loyalty.points(\"rewards\")");
    assert_eq!(facts[0].value, "100");
    let err = seg
        .preview_segment(spb::PreviewSegmentRequest {
            rule: "loyalty.points(\"nope\") > 1".into(),
            sample_size: 0,
        })
        .await
        .expect_err("unknown program");
    assert_status(
        &err,
        Code::InvalidArgument,
        "PROGRAM_NOT_FOUND",
        Some("rule"),
    );
}

async fn more_bad_input_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    create_program(&app, program("rewards")).await;
    create_reward(&app, reward("mug", "rewards", 40)).await;
    app.record(vec![purchase("max", "p1", ago(30), "o1", 10_000)])
        .await
        .expect("record");
    let before = balances(&app, "rewards", "max").await;
    let mut c = loyalty(&app);
    let e = c
        .get_program(pb::GetProgramRequest {
            program_id: "Bad Id".into(),
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("program_id"),
    );
    let e = c
        .get_program(pb::GetProgramRequest {
            program_id: "ghost".into(),
        })
        .await
        .expect_err("x");
    assert_status(&e, Code::NotFound, "PROGRAM_NOT_FOUND", None);
    let e = c
        .get_reward(pb::GetRewardRequest {
            reward_id: "ghost".into(),
        })
        .await
        .expect_err("x");
    assert_status(&e, Code::NotFound, "REWARD_NOT_FOUND", None);
    let e = c
        .list_programs(pb::ListProgramsRequest {
            page_size: 10,
            page_token: "junk".into(),
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
        Some("page_token"),
    );
    let e = c
        .list_programs(pb::ListProgramsRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_PAGE_SIZE",
        Some("page_size"),
    );
    let e = c
        .list_rewards(pb::ListRewardsRequest {
            program_id: "rewards".into(),
            page_size: 10,
            page_token: "junk".into(),
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
        Some("page_token"),
    );
    let e = c
        .list_ledger_entries(pb::ListLedgerEntriesRequest {
            program_id: "rewards".into(),
            customer_id: "max".into(),
            page_size: 10,
            page_token: "junk".into(),
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
        Some("page_token"),
    );
    let e = c
        .check_eligibility(pb::CheckEligibilityRequest {
            program_id: "rewards".into(),
            customer_id: "max".into(),
            reward_ids: vec!["Bad!".into()],
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("reward_ids[0]"),
    );
    let e = c
        .check_eligibility(pb::CheckEligibilityRequest {
            program_id: "rewards".into(),
            customer_id: "max".into(),
            reward_ids: vec!["mug".into(); 1001],
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "BATCH_TOO_LARGE",
        Some("reward_ids"),
    );
    let e = c
        .enroll(pb::EnrollRequest {
            program_id: "rewards".into(),
            customer_id: "nobody".into(),
        })
        .await
        .expect_err("x");
    assert_status(&e, Code::NotFound, "CUSTOMER_NOT_FOUND", None);
    let e = c
        .update_reward(pb::UpdateRewardRequest {
            reward: Some(reward("mug", "rewards", 40)),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["program_id".into()],
            }),
            expected_revision: 0,
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("update_mask.paths[0]"),
    );
    let e = c
        .update_reward(pb::UpdateRewardRequest {
            reward: Some(pb::Reward {
                stock: Some(-1),
                ..reward("mug", "rewards", 40)
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["stock".into()],
            }),
            expected_revision: 0,
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("reward.stock"),
    );
    let e = c
        .update_program(pb::UpdateProgramRequest {
            program: Some(pb::Program {
                pending_days: -3,
                ..program("rewards")
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["pending_days".into()],
            }),
            expected_revision: 0,
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("program.pending_days"),
    );
    let e = c
        .update_program(pb::UpdateProgramRequest {
            program: Some(program("rewards")),
            update_mask: None,
            expected_revision: 9,
        })
        .await
        .expect_err("x");
    assert_status(&e, Code::FailedPrecondition, "REVISION_MISMATCH", None);
    let e = c
        .cancel_redemption(pb::CancelRedemptionRequest {
            program_id: "rewards".into(),
            customer_id: "max".into(),
            redemption_id: "rdm-ghost".into(),
            reason: String::new(),
        })
        .await
        .expect_err("x");
    assert_status(&e, Code::NotFound, "REDEMPTION_NOT_FOUND", None);
    let e = c
        .cancel_redemption(pb::CancelRedemptionRequest {
            program_id: "rewards".into(),
            customer_id: "max".into(),
            redemption_id: String::new(),
            reason: String::new(),
        })
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("redemption_id"),
    );
    let e = adjust(&app, "rewards", "max", 5, &"r".repeat(129))
        .await
        .expect_err("x");
    assert_status(
        &e,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("request_id"),
    );
    let e = loyalty(&app)
        .adjust_points(pb::AdjustPointsRequest {
            program_id: "rewards".into(),
            customer_id: "max".into(),
            points: 5,
            reason: " ".into(),
            issuer: String::new(),
            request_id: "x".into(),
        })
        .await
        .expect_err("x");
    assert_status(&e, Code::InvalidArgument, "INVALID_FIELD", Some("reason"));
    assert_status(&e, Code::InvalidArgument, "INVALID_FIELD", Some("issuer"));
    // Nothing changed.
    assert_eq!(balances(&app, "rewards", "max").await, before);
    let p = c
        .get_program(pb::GetProgramRequest {
            program_id: "rewards".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .program
        .expect("program");
    assert_eq!((p.revision, p.pending_days), (1, 14));
    let r = c
        .get_reward(pb::GetRewardRequest {
            reward_id: "mug".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .reward
        .expect("reward");
    assert_eq!((r.revision, r.stock), (1, None));
}

crate::both_backends!(
    more_bad_input_is_refused,
    segments_read_loyalty_state,
    target_segments_gate_enrolment_and_cannot_be_deleted,
    purchases_earn_points_once_and_refunds_take_them_back,
    tiers_and_eligibility_reasons,
    concurrent_redemptions_never_overdraw,
    replays_have_one_effect,
    bad_input_is_refused_and_changes_nothing,
);

/// Two `patron serve` processes share one Postgres database; 64 concurrent redemptions, half
/// through each, against a balance that covers exactly k of them.
#[tokio::test]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn two_processes_sharing_postgres_never_overdraw() {
    use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;

    let db = patron_store_postgres::testing::TestDatabase::create().await;
    let (_a, addr_a) = crate::durability::start(&db.url).await;
    let channel_a = crate::support::connect(addr_a).await;
    let mut client_a = LoyaltyServiceClient::new(channel_a.clone());
    client_a
        .create_program(pb::CreateProgramRequest {
            program: Some(pb::Program {
                earning: first_purchase_bonus_zero(),
                ..program("shared")
            }),
        })
        .await
        .expect("program");
    let (k, cost) = (17i64, 30i64);
    client_a
        .create_reward(pb::CreateRewardRequest {
            reward: Some(reward("gift", "shared", cost)),
        })
        .await
        .expect("reward");
    // The second process is up before the customer exists: it reads the customer through on
    // first use.
    let (_b, addr_b) = crate::durability::start(&db.url).await;
    let client_b = LoyaltyServiceClient::new(crate::support::connect(addr_b).await);
    CustomerServiceClient::new(channel_a.clone())
        .record_events(cpb::RecordEventsRequest {
            events: vec![purchase("gus", "p1", ago(100), "o1", 1)],
        })
        .await
        .expect("record");
    client_a
        .adjust_points(pb::AdjustPointsRequest {
            program_id: "shared".into(),
            customer_id: "gus".into(),
            points: k * cost,
            reason: "fund".into(),
            issuer: "test".into(),
            request_id: "fund".into(),
        })
        .await
        .expect("fund");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut client = if i % 2 == 0 {
            client_a.clone()
        } else {
            client_b.clone()
        };
        tasks.push(tokio::spawn(async move {
            client
                .redeem_reward(pb::RedeemRewardRequest {
                    program_id: "shared".into(),
                    customer_id: "gus".into(),
                    reward_id: "gift".into(),
                    request_id: format!("r{i}"),
                })
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(status) => assert_status(&status, Code::FailedPrecondition, "NOT_ELIGIBLE", None),
        }
    }
    assert_eq!(ok, k);
    for client in [&mut client_a, &mut client_b.clone()] {
        let m = client
            .get_membership(pb::GetMembershipRequest {
                program_id: "shared".into(),
                customer_id: "gus".into(),
            })
            .await
            .expect("membership")
            .into_inner();
        let b = m.membership.and_then(|m| m.balances).expect("balances");
        assert_eq!((b.available, b.pending, b.debt), (0, 0, 0));
    }
}

/// The path of a `sqlite://PATH` URL.
fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://").expect("a SQLite URL")
}

/// A connection of the test's own to the server's SQLite file, below the API.
async fn raw_sqlite(url: &str) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", sqlite_path(url)))
        .await
        .expect("raw connection")
}

// CheckEligibility is a read: it must answer while another connection holds the database's
// write lock (it used to take the member's write lock once per reward).
#[tokio::test]
async fn eligibility_checks_take_no_write_lock() {
    use sqlx::Executor;
    let (url, guard) = crate::support::fresh_database(Backend::Sqlite).await;
    let app = crate::support::spawn_app_on(&url, crate::support::DbGuard::Borrowed, |_| {}).await;
    create_program(&app, program("rewards")).await;
    for (id, cost) in [("coffee", 50), ("mug", 500), ("hat", 90)] {
        create_reward(&app, reward(id, "rewards", cost)).await;
    }
    app.record(vec![purchase("ana", "p1", ago(30), "o1", 1_000)])
        .await
        .expect("record");
    redeem(&app, "rewards", "ana", "coffee", "req-1")
        .await
        .expect("redeem");

    let mut writer = raw_sqlite(&url).await;
    writer.execute("BEGIN IMMEDIATE").await.expect("write lock");
    // Every reward of the program (no reward_ids), while the write lock is held.
    let check = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        loyalty(&app).check_eligibility(pb::CheckEligibilityRequest {
            program_id: "rewards".into(),
            customer_id: "ana".into(),
            reward_ids: Vec::new(),
        }),
    )
    .await
    .expect("answered while another connection holds the write lock")
    .expect("check")
    .into_inner();
    writer.execute("ROLLBACK").await.expect("release");
    // 100 bonus + 10 points earned (available after 14 days), 50 spent on the coffee.
    let status: Vec<(String, i32)> = check
        .results
        .iter()
        .map(|r| (r.reward_id.clone(), r.status))
        .collect();
    assert_eq!(
        status,
        [
            ("coffee".to_owned(), pb::EligibilityStatus::Eligible as i32),
            ("hat".to_owned(), pb::EligibilityStatus::Ineligible as i32),
            ("mug".to_owned(), pb::EligibilityStatus::Ineligible as i32),
        ]
    );
    assert_eq!(balances(&app, "rewards", "ana").await.available, 60);
    drop(app);
    drop(guard);
}

// One member whose settlement fails must not stop the expiry run for the
// members after it.
#[tokio::test]
async fn one_failing_member_does_not_stop_the_expiry_run() {
    use sqlx::Executor;
    let (url, guard) = crate::support::fresh_database(Backend::Sqlite).await;
    // First a server whose expiry task waits an hour: the points are earned, not yet expired.
    let mut setup = crate::support::spawn_app_on(&url, crate::support::DbGuard::Borrowed, |s| {
        s.loyalty_expiry_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    create_program(&setup, program("rewards")).await;
    // Purchases 400 days ago: the points expired after 365 days and are due to expire now.
    for (c, o) in [("a-bad", "o1"), ("b-good", "o2")] {
        setup
            .record(vec![purchase(c, &format!("p-{c}"), ago(400), o, 5_000)])
            .await
            .expect("record");
        assert_eq!(balances(&setup, "rewards", c).await.lifetime_earned, 150);
        assert_eq!(
            ledger_sum(&setup, "rewards", c).await.0,
            150,
            "nothing expired yet"
        );
    }
    setup.signal_shutdown();
    setup.join().await;
    drop(setup);
    // "a-bad" comes first in the run's order; below the API, every change to its lots fails.
    let mut raw = raw_sqlite(&url).await;
    raw.execute(
        "CREATE TRIGGER fail_a_bad BEFORE UPDATE ON loyalty_lots \
         WHEN NEW.customer_id = 'a-bad' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .await
    .expect("trigger");
    drop(raw);

    let app = crate::support::spawn_app_on(&url, crate::support::DbGuard::Borrowed, |s| {
        s.loyalty_expiry_interval = std::time::Duration::from_millis(200);
    })
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    // An EXPIRE entry takes back the 50 purchase points, earned 400 days ago (the first-purchase
    // bonus was given on arrival and expires a year from then).
    while ledger_sum(&app, "rewards", "b-good").await.0 != 100 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b-good's expired points were never expired"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let b = balances(&app, "rewards", "b-good").await;
    assert_eq!((b.available, b.pending, b.lifetime_earned), (100, 0, 150));
    // The failing member is left as it was, due again on the next run.
    assert_eq!(ledger_sum(&app, "rewards", "a-bad").await.0, 150);
    drop(app);
    drop(guard);
}

// Earning applies the programs the loyalty view holds: a program whose stored body no longer
// parses (logged by the view) must not stop earning in the others, as it did when every batch
// re-read and re-parsed all programs from the store.
#[tokio::test]
async fn one_unreadable_program_does_not_stop_earning() {
    use sqlx::Executor;
    let (url, guard) = crate::support::fresh_database(Backend::Sqlite).await;
    let app = crate::support::spawn_app_on(&url, crate::support::DbGuard::Borrowed, |_| {}).await;
    create_program(&app, program("rewards")).await;
    create_program(&app, program("zz-broken")).await;
    let mut raw = raw_sqlite(&url).await;
    raw.execute("UPDATE loyalty_programs SET body = '{not json' WHERE program_id = 'zz-broken'")
        .await
        .expect("corrupt");
    drop(raw);
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        app.record(vec![purchase("ana", "p1", ago(1), "o1", 12_000)]),
    )
    .await
    .expect("the write is answered")
    .expect("record");
    let b = balances(&app, "rewards", "ana").await;
    assert_eq!((b.available, b.pending, b.lifetime_earned), (100, 120, 220));
    drop(app);
    drop(guard);
}
