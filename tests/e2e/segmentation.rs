//! SegmentationService over real gRPC: definitions, membership from every RPC agreeing, built-in
//! segments, live watching, and bad input.

use std::collections::BTreeSet;
use std::time::Duration;

use patron_proto::common::v1 as common;
use patron_proto::customers::v1 as cpb;
use patron_proto::scoring::v1 as spb;
use patron_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use patron_proto::segmentation::v1 as pb;
use patron_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::support::{Backend, TestApp, assert_status, purchase, refund, spawn_app};

fn seg(app: &TestApp) -> SegmentationServiceClient<Channel> {
    SegmentationServiceClient::new(app.channel.clone())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// `days` days before now, an hour earlier (so "today" stays today for a fresh event).
fn ago(days: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: now_secs() - days * 86_400 - 60,
        nanos: 0,
    }
}

fn engagement(customer: &str, id: &str, at: prost_types::Timestamp, activity: &str) -> cpb::Event {
    cpb::Event {
        event_id: id.into(),
        customer_id: customer.into(),
        occurred_at: Some(at),
        kind: Some(cpb::event::Kind::Engagement(cpb::Engagement {
            activity: activity.into(),
        })),
        record_time: None,
    }
}

fn segment(id: &str, rule: &str) -> pb::Segment {
    pb::Segment {
        segment_id: id.into(),
        display_name: format!("Segment {id}"),
        description: String::new(),
        rule: rule.into(),
        ..Default::default()
    }
}

async fn create(app: &TestApp, id: &str, rule: &str) -> Result<pb::Segment, tonic::Status> {
    seg(app)
        .create_segment(pb::CreateSegmentRequest {
            segment: Some(segment(id, rule)),
        })
        .await
        .map(|r| r.into_inner().segment.expect("segment"))
}

/// 120 customers with profiles, purchases over the last two years, refunds and engagement.
async fn population(app: &TestApp) {
    let countries = ["DE", "US", "FR", ""];
    let customers: Vec<cpb::Customer> = (0..120)
        .map(|i| cpb::Customer {
            customer_id: format!("c{i:03}"),
            birth_date: (i % 5 != 0).then(|| common::Date {
                year: 1950 + (i % 50),
                month: 1 + (i % 12),
                day: 1 + (i % 28),
            }),
            country: countries[i as usize % 4].into(),
            attributes: if i % 3 == 0 {
                [(
                    "plan".to_owned(),
                    common::AttributeValue {
                        kind: Some(common::attribute_value::Kind::StringValue(
                            if i % 2 == 0 { "pro" } else { "free" }.into(),
                        )),
                    },
                )]
                .into_iter()
                .collect()
            } else {
                Default::default()
            },
            ..Default::default()
        })
        .collect();
    app.customers
        .clone()
        .upsert_customers(cpb::UpsertCustomersRequest { customers })
        .await
        .expect("upsert");
    let mut events = Vec::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    for i in 0..120 {
        let c = format!("c{i:03}");
        let orders = next(8);
        for k in 0..orders {
            let day = next(700) as i64;
            events.push(purchase(
                &c,
                &format!("p{i}-{k}"),
                ago(day),
                &format!("o{i}-{k}"),
                500 + next(30_000) as i64,
            ));
            if next(6) == 0 {
                events.push(refund(
                    &c,
                    &format!("r{i}-{k}"),
                    ago(day.saturating_sub(1)),
                    &format!("o{i}-{k}"),
                    500,
                ));
            }
        }
        for k in 0..next(5) {
            events.push(engagement(
                &c,
                &format!("g{i}-{k}"),
                ago(next(60) as i64),
                if k % 2 == 0 { "login" } else { "export" },
            ));
        }
    }
    app.record(events).await.expect("record");
}

async fn members_by_paging(app: &TestApp, id: &str, page_size: i32) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = seg(app)
            .list_segment_members(pb::ListSegmentMembersRequest {
                segment_id: id.into(),
                page_size,
                page_token: token,
            })
            .await
            .expect("list members")
            .into_inner();
        out.extend(page.customer_ids);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

async fn members_by_checking(app: &TestApp, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in app.all_customer_ids().await {
        let r = seg(app)
            .check_membership(pb::CheckMembershipRequest {
                customer_id: c.clone(),
                segment_id: id.into(),
                explain: false,
            })
            .await
            .expect("check")
            .into_inner();
        if r.member {
            out.push(c);
        }
    }
    out
}

async fn count(app: &TestApp, id: &str) -> i64 {
    seg(app)
        .count_segment_members(pb::CountSegmentMembersRequest {
            segment_id: id.into(),
        })
        .await
        .expect("count")
        .into_inner()
        .count
}

async fn membership_agrees_across_rpcs(backend: Backend) {
    let app = spawn_app(backend).await;
    population(&app).await;
    ScoringServiceClient::new(app.channel.clone())
        .fit_value_model(spb::FitValueModelRequest::default())
        .await
        .expect("fit");
    let rules = [
        (
            "lapsed-big-spenders",
            "purchases.total_revenue >= 40000 && purchases.count(180) == 0",
        ),
        ("germans", "customer.country == \"DE\""),
        ("no-country", "customer.country == null"),
        ("over-50", "customer.age > 50"),
        (
            "pro-plan",
            "has(customer.attributes.plan) && customer.attributes.plan == \"pro\"",
        ),
        (
            "active-users",
            "engagement.count(30) >= 2 || engagement.count(60, \"export\") >= 1",
        ),
        ("recent-buyers", "purchases.count(90) >= 1"),
        ("likely-gone", "value.probability_alive < 0.3"),
        (
            "german-recent",
            "in_segment(\"germans\") && in_segment(\"recent-buyers\")",
        ),
    ];
    for (id, rule) in rules {
        create(&app, id, rule)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e:?}"));
    }
    let mut ids: Vec<String> = rules.iter().map(|(id, _)| (*id).to_owned()).collect();
    ids.extend(["rfm-champions", "rfm-lost", "rfm-hibernating"].map(str::to_owned));
    let policy = ScoringServiceClient::new(app.channel.clone())
        .get_tier_policy(spb::GetTierPolicyRequest {})
        .await
        .expect("policy")
        .into_inner()
        .policy
        .expect("policy");
    for t in &policy.tiers {
        ids.push(format!("tier-{}", t.name.to_lowercase()));
    }
    let mut nonempty = 0;
    let mut tier_total = 0;
    for id in &ids {
        let paged = members_by_paging(&app, id, 7).await;
        let checked = members_by_checking(&app, id).await;
        let n = count(&app, id).await;
        assert_eq!(
            paged, checked,
            "{id}: ListSegmentMembers vs CheckMembership"
        );
        assert_eq!(n as usize, paged.len(), "{id}: CountSegmentMembers");
        let sorted: BTreeSet<&String> = paged.iter().collect();
        assert_eq!(sorted.len(), paged.len(), "{id}: no repeats");
        assert!(paged.windows(2).all(|w| w[0] < w[1]), "{id}: id order");
        if n > 0 && (n as usize) < 120 {
            nonempty += 1;
        }
        if id.starts_with("tier-") {
            tier_total += n;
        }
    }
    assert!(
        nonempty >= 8,
        "the rules split the population ({nonempty} proper subsets)"
    );
    // Every purchaser has exactly one tier.
    let buyers = count(&app, "recent-buyers").await;
    assert!(tier_total >= buyers, "tiers cover every scored customer");
    // ListCustomerSegments agrees with CheckMembership for a few customers.
    for c in ["c000", "c001", "c017", "c042"] {
        let listed = seg(&app)
            .list_customer_segments(pb::ListCustomerSegmentsRequest {
                customer_id: c.into(),
            })
            .await
            .expect("list customer segments")
            .into_inner()
            .segment_ids;
        for id in &ids {
            let member = seg(&app)
                .check_membership(pb::CheckMembershipRequest {
                    customer_id: c.into(),
                    segment_id: id.clone(),
                    explain: true,
                })
                .await
                .expect("check")
                .into_inner();
            assert_eq!(listed.contains(id), member.member, "{c} in {id}");
            let x = member.explanation.expect("explanation");
            assert_eq!(x.outcome == "true", member.member);
            assert!(!x.facts.is_empty());
        }
    }
    // Preview of an unsaved rule gives the same count as the saved one, and nothing is stored.
    let preview = seg(&app)
        .preview_segment(pb::PreviewSegmentRequest {
            rule: rules[0].1.into(),
            sample_size: 3,
        })
        .await
        .expect("preview")
        .into_inner();
    let members = members_by_paging(&app, rules[0].0, 1000).await;
    assert_eq!(preview.count as usize, members.len());
    assert_eq!(preview.population, 120);
    assert_eq!(
        preview.sample_customer_ids,
        members.iter().take(3).cloned().collect::<Vec<_>>()
    );
    assert!(preview.time_relative);
}

async fn definitions_are_managed_safely(backend: Backend) {
    let app = spawn_app(backend).await;
    app.record(vec![purchase("x1", "p1", ago(3), "o1", 2_500)])
        .await
        .expect("record");
    let a = create(&app, "big", "purchases.total_revenue > 1000")
        .await
        .expect("create");
    assert_eq!(a.revision, 1);
    assert!(!a.built_in);
    let b = create(
        &app,
        "big-recent",
        "in_segment(\"big\") && purchases.count(7) > 0",
    )
    .await
    .expect("create");
    assert_eq!(b.depends_on, vec!["big".to_owned()]);
    assert!(b.time_relative);
    // Get: stored and built-in.
    let got = seg(&app)
        .get_segment(pb::GetSegmentRequest {
            segment_id: "big".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .segment
        .expect("segment");
    assert_eq!(got.rule, "purchases.total_revenue > 1000");
    let champions = seg(&app)
        .get_segment(pb::GetSegmentRequest {
            segment_id: "rfm-champions".into(),
        })
        .await
        .expect("get built-in")
        .into_inner()
        .segment
        .expect("segment");
    assert!(champions.built_in);
    assert_eq!(champions.rule, "rfm.segment == \"champions\"");
    // List: built-ins first, then stored, across pages of 5.
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = seg(&app)
            .list_segments(pb::ListSegmentsRequest {
                page_size: 5,
                page_token: token,
            })
            .await
            .expect("list")
            .into_inner();
        listed.extend(page.segments);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let builtins = listed.iter().filter(|s| s.built_in).count();
    assert!(builtins > 11, "11 RFM segments and at least one tier");
    let stored: Vec<&str> = listed
        .iter()
        .filter(|s| !s.built_in)
        .map(|s| s.segment_id.as_str())
        .collect();
    assert_eq!(stored, ["big", "big-recent"]);
    assert!(listed[..builtins].iter().all(|s| s.built_in));
    // A cycle is refused and nothing changes.
    let err = seg(&app)
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(segment("big", "in_segment(\"big-recent\")")),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["rule".into()],
            }),
            expected_revision: 0,
        })
        .await
        .expect_err("cycle");
    assert_status(
        &err,
        Code::InvalidArgument,
        "SEGMENT_CYCLE",
        Some("segment.rule"),
    );
    assert!(
        err.message().contains("big -> big-recent -> big"),
        "{}",
        err.message()
    );
    let err = seg(&app)
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(segment("big", "in_segment(\"big\")")),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["rule".into()],
            }),
            expected_revision: 0,
        })
        .await
        .expect_err("self cycle");
    assert_status(
        &err,
        Code::InvalidArgument,
        "SEGMENT_CYCLE",
        Some("segment.rule"),
    );
    // Delete refused while in use.
    let err = seg(&app)
        .delete_segment(pb::DeleteSegmentRequest {
            segment_id: "big".into(),
        })
        .await
        .expect_err("in use");
    assert_status(&err, Code::FailedPrecondition, "SEGMENT_IN_USE", None);
    assert_eq!(count(&app, "big").await, 1);
    // Update with a mask and a revision check.
    let err = seg(&app)
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(pb::Segment {
                display_name: "Stale".into(),
                ..segment("big-recent", "")
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            expected_revision: 7,
        })
        .await
        .expect_err("stale revision");
    assert_status(&err, Code::FailedPrecondition, "REVISION_MISMATCH", None);
    let updated = seg(&app)
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(segment("big-recent", "purchases.count(7) > 0")),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["rule".into()],
            }),
            expected_revision: 1,
        })
        .await
        .expect("update")
        .into_inner()
        .segment
        .expect("segment");
    assert_eq!(updated.revision, 2);
    assert!(updated.depends_on.is_empty());
    assert_eq!(
        updated.display_name, "Segment big-recent",
        "unmasked fields are kept"
    );
    // Now "big" can go; then it is gone.
    seg(&app)
        .delete_segment(pb::DeleteSegmentRequest {
            segment_id: "big".into(),
        })
        .await
        .expect("delete");
    let err = seg(&app)
        .get_segment(pb::GetSegmentRequest {
            segment_id: "big".into(),
        })
        .await
        .expect_err("deleted");
    assert_status(&err, Code::NotFound, "SEGMENT_NOT_FOUND", None);
    // Built-ins are read-only.
    let err = seg(&app)
        .delete_segment(pb::DeleteSegmentRequest {
            segment_id: "rfm-lost".into(),
        })
        .await
        .expect_err("built-in");
    assert_status(&err, Code::FailedPrecondition, "BUILT_IN_SEGMENT", None);
    // Duplicate ids.
    let err = create(&app, "big-recent", "true")
        .await
        .expect_err("duplicate");
    assert_status(&err, Code::AlreadyExists, "ALREADY_EXISTS", None);
}

async fn next_change(
    stream: &mut tonic::Streaming<pb::WatchSegmentResponse>,
) -> pb::WatchSegmentResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a change within 10 s")
        .expect("stream ok")
        .expect("stream open")
}

async fn watchers_see_customers_enter_and_leave(backend: Backend) {
    let app = spawn_app(backend).await;
    app.record(vec![
        purchase("w-old", "p0", ago(1), "o0", 9_000),
        purchase("w1", "p1", ago(200), "o1", 100),
    ])
    .await
    .expect("record");
    create(&app, "recent-big", "purchases.revenue(30) >= 5000")
        .await
        .expect("create");
    let mut stream = seg(&app)
        .watch_segment(pb::WatchSegmentRequest {
            segment_id: "recent-big".into(),
            include_initial_members: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let first = next_change(&mut stream).await;
    assert_eq!(
        (first.customer_id.as_str(), first.change),
        ("w-old", pb::MembershipChange::Initial as i32)
    );
    // A qualifying purchase: ENTERED.
    app.record(vec![purchase("w1", "p2", ago(0), "o2", 6_000)])
        .await
        .expect("record");
    let c = next_change(&mut stream).await;
    assert_eq!(
        (c.customer_id.as_str(), c.change),
        ("w1", pb::MembershipChange::Entered as i32)
    );
    // A non-qualifying change of a non-member: nothing; then a refund: EXITED.
    app.record(vec![purchase("w2", "p3", ago(0), "o3", 100)])
        .await
        .expect("record");
    app.record(vec![refund("w1", "r2", ago(0), "o2", 6_000)])
        .await
        .expect("record");
    let c = next_change(&mut stream).await;
    assert_eq!(
        (c.customer_id.as_str(), c.change),
        ("w1", pb::MembershipChange::Exited as i32)
    );
    // Erasure of a member: EXITED.
    app.customers
        .clone()
        .delete_customer(cpb::DeleteCustomerRequest {
            customer_id: "w-old".into(),
        })
        .await
        .expect("erase");
    let c = next_change(&mut stream).await;
    assert_eq!(
        (c.customer_id.as_str(), c.change),
        ("w-old", pb::MembershipChange::Exited as i32)
    );
    // Unknown segments cannot be watched.
    let err = seg(&app)
        .watch_segment(pb::WatchSegmentRequest {
            segment_id: "nope".into(),
            include_initial_members: false,
        })
        .await
        .expect_err("unknown");
    assert_status(&err, Code::NotFound, "SEGMENT_NOT_FOUND", None);
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.record(vec![purchase("b1", "p1", ago(3), "o1", 2_500)])
        .await
        .expect("record");
    create(&app, "base", "purchases.total_count > 0")
        .await
        .expect("create");
    let cases: Vec<(pb::Segment, &str, &str, &str)> = vec![
        (
            segment("s1", "customer.age >"),
            "INVALID_RULE",
            "segment.rule",
            "1:15",
        ),
        (
            segment("s1", "customer.agee > 3"),
            "INVALID_RULE",
            "segment.rule",
            "unknown variable `customer.agee`",
        ),
        (
            segment("s1", "shoe_size > 3"),
            "INVALID_RULE",
            "segment.rule",
            "unknown variable `shoe_size`",
        ),
        (
            segment("s1", "customer.age > \"ten\""),
            "INVALID_RULE",
            "segment.rule",
            "cannot compare int with string",
        ),
        (
            segment("s1", "purchases.total_count"),
            "INVALID_RULE",
            "segment.rule",
            "must be a bool",
        ),
        (
            segment("s1", "purchases.count(9999) > 1"),
            "INVALID_RULE",
            "segment.rule",
            "1 to 3650",
        ),
        (
            segment("s1", "in_segment(\"ghost\")"),
            "SEGMENT_NOT_FOUND",
            "segment.rule",
            "no segment `ghost`",
        ),
        (segment("s1", ""), "INVALID_RULE", "segment.rule", "empty"),
        (
            segment("s1", &format!("true{}", " && true".repeat(600))),
            "RULE_TOO_LARGE",
            "segment.rule",
            "4096",
        ),
        (
            segment("S1", "true"),
            "INVALID_FIELD",
            "segment.segment_id",
            "lower-case",
        ),
        (
            segment("", "true"),
            "INVALID_FIELD",
            "segment.segment_id",
            "1 to 63",
        ),
        (
            segment("rfm-mine", "true"),
            "INVALID_FIELD",
            "segment.segment_id",
            "reserved",
        ),
        (
            pb::Segment {
                display_name: String::new(),
                ..segment("s1", "true")
            },
            "INVALID_FIELD",
            "segment.display_name",
            "empty",
        ),
        (
            pb::Segment {
                description: "x".repeat(2001),
                ..segment("s1", "true")
            },
            "INVALID_FIELD",
            "segment.description",
            "2000",
        ),
    ];
    for (s, reason, field, needle) in cases {
        let err = seg(&app)
            .create_segment(pb::CreateSegmentRequest {
                segment: Some(s.clone()),
            })
            .await
            .expect_err("refused");
        assert_status(&err, Code::InvalidArgument, reason, Some(field));
        let details = err.get_error_details();
        let text: Vec<String> = details
            .bad_request()
            .map(|b| {
                b.field_violations
                    .iter()
                    .map(|v| v.description.clone())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            text.iter().any(|t| t.contains(needle)),
            "{:?}: {text:?}",
            s.rule
        );
    }
    // Unknown and malformed segment ids, bad page tokens and sizes.
    let err = seg(&app)
        .get_segment(pb::GetSegmentRequest {
            segment_id: "ghost".into(),
        })
        .await
        .expect_err("x");
    assert_status(&err, Code::NotFound, "SEGMENT_NOT_FOUND", None);
    let err = seg(&app)
        .count_segment_members(pb::CountSegmentMembersRequest {
            segment_id: "ghost".into(),
        })
        .await
        .expect_err("x");
    assert_status(&err, Code::NotFound, "SEGMENT_NOT_FOUND", None);
    let err = seg(&app)
        .check_membership(pb::CheckMembershipRequest {
            customer_id: "b1".into(),
            segment_id: "ghost".into(),
            explain: true,
        })
        .await
        .expect_err("x");
    assert_status(&err, Code::NotFound, "SEGMENT_NOT_FOUND", None);
    let err = seg(&app)
        .check_membership(pb::CheckMembershipRequest {
            customer_id: "nobody".into(),
            segment_id: "base".into(),
            explain: true,
        })
        .await
        .expect_err("x");
    assert_status(&err, Code::NotFound, "CUSTOMER_NOT_FOUND", None);
    let err = seg(&app)
        .check_membership(pb::CheckMembershipRequest {
            customer_id: String::new(),
            segment_id: "base".into(),
            explain: false,
        })
        .await
        .expect_err("x");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("customer_id"),
    );
    let err = seg(&app)
        .get_segment(pb::GetSegmentRequest {
            segment_id: "Bad Id!".into(),
        })
        .await
        .expect_err("x");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("segment_id"),
    );
    let err = seg(&app)
        .list_segment_members(pb::ListSegmentMembersRequest {
            segment_id: "base".into(),
            page_size: 10,
            page_token: "garbage".into(),
        })
        .await
        .expect_err("x");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
        Some("page_token"),
    );
    let err = seg(&app)
        .list_segment_members(pb::ListSegmentMembersRequest {
            segment_id: "base".into(),
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .expect_err("x");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_PAGE_SIZE",
        Some("page_size"),
    );
    let err = seg(&app)
        .list_segments(pb::ListSegmentsRequest {
            page_size: 10,
            page_token: "garbage".into(),
        })
        .await
        .expect_err("x");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_PAGE_TOKEN",
        Some("page_token"),
    );
    let err = seg(&app)
        .preview_segment(pb::PreviewSegmentRequest {
            rule: "customer.age >".into(),
            sample_size: 0,
        })
        .await
        .expect_err("x");
    assert_status(&err, Code::InvalidArgument, "INVALID_RULE", Some("rule"));
    let err = seg(&app)
        .preview_segment(pb::PreviewSegmentRequest {
            rule: "true".into(),
            sample_size: 101,
        })
        .await
        .expect_err("x");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("sample_size"),
    );
    let err = seg(&app)
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(segment("base", "true")),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["segment_id".into()],
            }),
            expected_revision: 0,
        })
        .await
        .expect_err("x");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("update_mask.paths[0]"),
    );
    let err = seg(&app)
        .update_segment(pb::UpdateSegmentRequest {
            segment: Some(segment("base", "purchases.count(0) > 1")),
            update_mask: None,
            expected_revision: 0,
        })
        .await
        .expect_err("x");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_RULE",
        Some("segment.rule"),
    );
    // Nothing changed: one stored segment, unchanged.
    let listed = seg(&app)
        .list_segments(pb::ListSegmentsRequest {
            page_size: 1000,
            page_token: String::new(),
        })
        .await
        .expect("list")
        .into_inner()
        .segments;
    let stored: Vec<(&str, &str, i64)> = listed
        .iter()
        .filter(|s| !s.built_in)
        .map(|s| (s.segment_id.as_str(), s.rule.as_str(), s.revision))
        .collect();
    assert_eq!(stored, [("base", "purchases.total_count > 0", 1)]);
}

crate::both_backends!(
    membership_agrees_across_rpcs,
    definitions_are_managed_safely,
    watchers_see_customers_enter_and_leave,
    bad_input_is_refused_and_changes_nothing,
);
