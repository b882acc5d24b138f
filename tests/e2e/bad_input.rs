//! Bad input for every field: each call gets the right code, ErrorInfo reason and BadRequest
//! field, and nothing changes.

use patron_proto::common::v1 as common;
use patron_proto::customers::v1 as pb;
use tonic::Code;

use bytes::Bytes;

use crate::support::{
    Backend, Shape, TestApp, assert_status, call_raw, purchase, refund, spawn_app, spawn_app_with,
    survey, ts, usd,
};

fn with_kind(kind: pb::event::Kind) -> pb::Event {
    pb::Event {
        event_id: "bad".into(),
        customer_id: "victim".into(),
        occurred_at: Some(ts(1, 0)),
        kind: Some(kind),
        record_time: None,
    }
}

fn valid() -> pb::Event {
    purchase("victim", "bad", ts(1, 0), "o-bad", 100)
}

fn with_purchase(f: impl FnOnce(&mut pb::Purchase)) -> pb::Event {
    let mut e = valid();
    if let Some(pb::event::Kind::Purchase(p)) = e.kind.as_mut() {
        f(p);
    }
    e
}

fn with_survey(s: pb::Survey) -> pb::Event {
    survey("victim", "bad", ts(1, 0), s)
}

fn attr(kind: Option<common::attribute_value::Kind>) -> common::AttributeValue {
    common::AttributeValue { kind }
}

fn far_future() -> prost_types::Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    prost_types::Timestamp {
        seconds: now + 3 * 86_400,
        nanos: 0,
    }
}

/// (event, expected field) for single-event RecordEvents calls that must fail.
fn bad_events() -> Vec<(pb::Event, &'static str)> {
    let long = "x".repeat(129);
    let mut cases = vec![
        (
            pb::Event {
                event_id: String::new(),
                ..valid()
            },
            "events[0].event_id",
        ),
        (
            pb::Event {
                event_id: long.clone(),
                ..valid()
            },
            "events[0].event_id",
        ),
        (
            pb::Event {
                customer_id: String::new(),
                ..valid()
            },
            "events[0].customer_id",
        ),
        (
            pb::Event {
                customer_id: long.clone(),
                ..valid()
            },
            "events[0].customer_id",
        ),
        (
            pb::Event {
                customer_id: "tab\there".into(),
                ..valid()
            },
            "events[0].customer_id",
        ),
        (
            pb::Event {
                occurred_at: None,
                ..valid()
            },
            "events[0].occurred_at",
        ),
        (
            pb::Event {
                occurred_at: Some(far_future()),
                ..valid()
            },
            "events[0].occurred_at",
        ),
        (
            pb::Event {
                occurred_at: Some(prost_types::Timestamp {
                    seconds: -2_300_000_000,
                    nanos: 0,
                }),
                ..valid()
            },
            "events[0].occurred_at",
        ),
        (
            pb::Event {
                occurred_at: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..valid()
            },
            "events[0].occurred_at",
        ),
        (
            pb::Event {
                occurred_at: Some(prost_types::Timestamp {
                    seconds: i64::MAX,
                    nanos: 0,
                }),
                ..valid()
            },
            "events[0].occurred_at",
        ),
        (
            pb::Event {
                kind: None,
                ..valid()
            },
            "events[0].kind",
        ),
        (
            with_purchase(|p| p.amount = None),
            "events[0].purchase.amount",
        ),
        (
            with_purchase(|p| p.amount = Some(usd(-1))),
            "events[0].purchase.amount.minor_units",
        ),
        (
            with_purchase(|p| p.amount = Some(usd(i64::MAX))),
            "events[0].purchase.amount.minor_units",
        ),
        (
            with_purchase(|p| p.amount = Some(usd(1_000_000_000_001))),
            "events[0].purchase.amount.minor_units",
        ),
        (
            with_purchase(|p| {
                p.amount = Some(common::Money {
                    currency_code: "ABC".into(),
                    minor_units: 1,
                })
            }),
            "events[0].purchase.amount.currency_code",
        ),
        (
            with_purchase(|p| {
                p.amount = Some(common::Money {
                    currency_code: "usd".into(),
                    minor_units: 1,
                })
            }),
            "events[0].purchase.amount.currency_code",
        ),
        (
            with_purchase(|p| {
                p.amount = Some(common::Money {
                    currency_code: String::new(),
                    minor_units: 1,
                })
            }),
            "events[0].purchase.amount.currency_code",
        ),
        (
            with_purchase(|p| {
                p.amount = Some(common::Money {
                    currency_code: "EUR".into(),
                    minor_units: 1,
                })
            }),
            "events[0].purchase.amount.currency_code",
        ),
        (
            with_purchase(|p| p.order_id = long.clone()),
            "events[0].purchase.order_id",
        ),
        (
            with_purchase(|p| p.item_count = -1),
            "events[0].purchase.item_count",
        ),
        (
            with_purchase(|p| p.channel = "c".repeat(65)),
            "events[0].purchase.channel",
        ),
        (
            refund("victim", "bad", ts(1, 0), "", 5),
            "events[0].refund.order_id",
        ),
        (
            refund("victim", "bad", ts(1, 0), "o1", -5),
            "events[0].refund.amount.minor_units",
        ),
        (
            with_kind(pb::event::Kind::Refund(pb::Refund {
                order_id: "o1".into(),
                amount: None,
            })),
            "events[0].refund.amount",
        ),
        (
            with_kind(pb::event::Kind::Engagement(pb::Engagement {
                activity: String::new(),
            })),
            "events[0].engagement.activity",
        ),
        (
            with_kind(pb::event::Kind::Engagement(pb::Engagement {
                activity: "a".repeat(129),
            })),
            "events[0].engagement.activity",
        ),
        (
            with_kind(pb::event::Kind::SupportInteraction(
                pb::SupportInteraction {
                    channel: "phone".into(),
                    resolved_first_contact: true,
                    csat: Some(6),
                },
            )),
            "events[0].support_interaction.csat",
        ),
        (
            with_kind(pb::event::Kind::SupportInteraction(
                pb::SupportInteraction {
                    channel: "p".repeat(65),
                    resolved_first_contact: true,
                    csat: None,
                },
            )),
            "events[0].support_interaction.channel",
        ),
        (
            with_survey(pb::Survey {
                economic_benefit: Some(0),
                ..Default::default()
            }),
            "events[0].survey.economic_benefit",
        ),
        (
            with_survey(pb::Survey {
                symbolic_benefit: Some(6),
                ..Default::default()
            }),
            "events[0].survey.symbolic_benefit",
        ),
        (
            with_survey(pb::Survey {
                emotional_cost: Some(-3),
                ..Default::default()
            }),
            "events[0].survey.emotional_cost",
        ),
        (
            with_survey(pb::Survey {
                csat: Some(0),
                ..Default::default()
            }),
            "events[0].survey.csat",
        ),
        (
            with_survey(pb::Survey {
                nps: Some(11),
                ..Default::default()
            }),
            "events[0].survey.nps",
        ),
        (
            with_survey(pb::Survey {
                nps: Some(-1),
                ..Default::default()
            }),
            "events[0].survey.nps",
        ),
        (with_survey(pb::Survey::default()), "events[0].survey"),
        (
            with_kind(pb::event::Kind::Custom(pb::CustomEvent {
                name: "has space".into(),
                properties: Default::default(),
            })),
            "events[0].custom.name",
        ),
    ];
    let mut props = std::collections::HashMap::new();
    props.insert(
        "bad key".to_owned(),
        attr(Some(common::attribute_value::Kind::IntValue(1))),
    );
    cases.push((
        with_kind(pb::event::Kind::Custom(pb::CustomEvent {
            name: "ok".into(),
            properties: props,
        })),
        "events[0].custom.properties[\"bad key\"]",
    ));
    let mut props = std::collections::HashMap::new();
    props.insert(
        "ratio".to_owned(),
        attr(Some(common::attribute_value::Kind::DoubleValue(f64::NAN))),
    );
    cases.push((
        with_kind(pb::event::Kind::Custom(pb::CustomEvent {
            name: "ok".into(),
            properties: props,
        })),
        "events[0].custom.properties[\"ratio\"]",
    ));
    let too_many: std::collections::HashMap<String, common::AttributeValue> = (0..65)
        .map(|i| {
            (
                format!("p{i}"),
                attr(Some(common::attribute_value::Kind::IntValue(i))),
            )
        })
        .collect();
    cases.push((
        with_kind(pb::event::Kind::Custom(pb::CustomEvent {
            name: "ok".into(),
            properties: too_many,
        })),
        "events[0].custom.properties",
    ));
    cases
}

fn good_customer(id: &str) -> pb::Customer {
    pb::Customer {
        customer_id: id.into(),
        country: "US".into(),
        ..Default::default()
    }
}

/// (customer, expected field) for single-customer upserts that must fail.
fn bad_customers() -> Vec<(pb::Customer, &'static str)> {
    let attrs = |k: &str, v: common::AttributeValue| {
        let mut m = std::collections::HashMap::new();
        m.insert(k.to_owned(), v);
        pb::Customer {
            attributes: m,
            ..good_customer("newbie")
        }
    };
    let tomorrow = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        prost_types::Timestamp {
            seconds: now + 3_600,
            nanos: 0,
        }
    };
    let too_many = pb::Customer {
        attributes: (0..65)
            .map(|i| {
                (
                    format!("a{i}"),
                    attr(Some(common::attribute_value::Kind::BoolValue(true))),
                )
            })
            .collect(),
        ..good_customer("newbie")
    };
    vec![
        (too_many, "customers[0].attributes"),
        (good_customer(""), "customers[0].customer_id"),
        (good_customer(&"y".repeat(129)), "customers[0].customer_id"),
        (
            pb::Customer {
                birth_date: Some(common::Date {
                    year: 1990,
                    month: 2,
                    day: 30,
                }),
                ..good_customer("newbie")
            },
            "customers[0].birth_date",
        ),
        (
            pb::Customer {
                birth_date: Some(common::Date {
                    year: 1990,
                    month: 13,
                    day: 1,
                }),
                ..good_customer("newbie")
            },
            "customers[0].birth_date",
        ),
        (
            pb::Customer {
                birth_date: Some(common::Date {
                    year: 9000,
                    month: 1,
                    day: 1,
                }),
                ..good_customer("newbie")
            },
            "customers[0].birth_date",
        ),
        (
            pb::Customer {
                gender: 99,
                ..good_customer("newbie")
            },
            "customers[0].gender",
        ),
        (
            pb::Customer {
                country: "XX".into(),
                ..good_customer("newbie")
            },
            "customers[0].country",
        ),
        (
            pb::Customer {
                country: "de".into(),
                ..good_customer("newbie")
            },
            "customers[0].country",
        ),
        (
            pb::Customer {
                signed_up_at: Some(tomorrow),
                ..good_customer("newbie")
            },
            "customers[0].signed_up_at",
        ),
        (
            attrs(
                "9lives",
                attr(Some(common::attribute_value::Kind::BoolValue(true))),
            ),
            "customers[0].attributes[\"9lives\"]",
        ),
        (
            attrs("empty", attr(None)),
            "customers[0].attributes[\"empty\"]",
        ),
        (
            attrs(
                "essay",
                attr(Some(common::attribute_value::Kind::StringValue(
                    "z".repeat(1025),
                ))),
            ),
            "customers[0].attributes[\"essay\"]",
        ),
    ]
}

/// A database with one known customer and two events, to prove nothing changes.
async fn seeded(backend: Backend) -> (TestApp, pb::Customer, usize) {
    let app = spawn_app(backend).await;
    app.customers
        .clone()
        .upsert_customers(pb::UpsertCustomersRequest {
            customers: vec![good_customer("victim")],
        })
        .await
        .expect("seed customer");
    app.record(vec![
        purchase("victim", "seed1", ts(0, 0), "o1", 100),
        purchase("victim", "seed2", ts(1, 0), "o2", 50),
    ])
    .await
    .expect("seed events");
    let before = app.customer("victim").await.expect("seeded");
    (app, before, 2)
}

async fn assert_unchanged(app: &TestApp, before: &pb::Customer, events: usize) {
    assert_eq!(app.all_customer_ids().await, vec!["victim".to_owned()]);
    assert_eq!(&app.customer("victim").await.expect("still there"), before);
    assert_eq!(app.all_events("victim").await.len(), events);
}

async fn every_bad_event_field_is_refused(backend: Backend) {
    let (app, before, n) = seeded(backend).await;
    for (event, field) in bad_events() {
        // The bad event rides with a valid one: the batch is atomic, so neither is stored.
        let ok = purchase("victim", "would-be-new", ts(3, 0), "o9", 1);
        let err = app.record(vec![event.clone(), ok]).await.expect_err(field);
        assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some(field));
    }
    assert_unchanged(&app, &before, n).await;
}

async fn oversized_and_empty_batches_are_refused(backend: Backend) {
    let (app, before, n) = seeded(backend).await;
    let many: Vec<pb::Event> = (0..10_001)
        .map(|i| purchase("victim", &format!("x{i}"), ts(2, 0), &format!("x{i}"), 1))
        .collect();
    let err = app.record(many).await.expect_err("too many");
    assert_status(
        &err,
        Code::InvalidArgument,
        "BATCH_TOO_LARGE",
        Some("events"),
    );
    let err = app.record(vec![]).await.expect_err("empty");
    assert_status(&err, Code::InvalidArgument, "EMPTY_BATCH", Some("events"));
    let mut client = app.customers.clone();
    let customers: Vec<pb::Customer> = (0..1_001)
        .map(|i| good_customer(&format!("c{i}")))
        .collect();
    let err = client
        .upsert_customers(pb::UpsertCustomersRequest { customers })
        .await
        .expect_err("too many");
    assert_status(
        &err,
        Code::InvalidArgument,
        "BATCH_TOO_LARGE",
        Some("customers"),
    );
    let err = client
        .upsert_customers(pb::UpsertCustomersRequest { customers: vec![] })
        .await
        .expect_err("empty");
    assert_status(
        &err,
        Code::InvalidArgument,
        "EMPTY_BATCH",
        Some("customers"),
    );
    assert_unchanged(&app, &before, n).await;
}

async fn every_bad_customer_field_is_refused(backend: Backend) {
    let (app, before, n) = seeded(backend).await;
    let mut client = app.customers.clone();
    for (customer, field) in bad_customers() {
        let mut victim = good_customer("victim");
        victim.country = "FR".into();
        let err = client
            .upsert_customers(pb::UpsertCustomersRequest {
                customers: vec![customer, victim],
            })
            .await
            .expect_err(field);
        assert_status(&err, Code::InvalidArgument, "INVALID_FIELD", Some(field));
    }
    let err = client
        .upsert_customers(pb::UpsertCustomersRequest {
            customers: vec![good_customer("victim"), good_customer("victim")],
        })
        .await
        .expect_err("repeated id");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("customers[1].customer_id"),
    );
    assert_unchanged(&app, &before, n).await;
}

async fn bad_ids_page_sizes_and_tokens_are_refused(backend: Backend) {
    let (app, before, n) = seeded(backend).await;
    let mut client = app.customers.clone();
    for id in [String::new(), "q".repeat(129)] {
        let err = client
            .get_customer(pb::GetCustomerRequest {
                customer_id: id.clone(),
            })
            .await
            .expect_err("bad id");
        assert_status(
            &err,
            Code::InvalidArgument,
            "INVALID_FIELD",
            Some("customer_id"),
        );
        let err = client
            .delete_customer(pb::DeleteCustomerRequest {
                customer_id: id.clone(),
            })
            .await
            .expect_err("bad id");
        assert_status(
            &err,
            Code::InvalidArgument,
            "INVALID_FIELD",
            Some("customer_id"),
        );
        let err = client
            .list_customer_events(pb::ListCustomerEventsRequest {
                customer_id: id,
                ..Default::default()
            })
            .await
            .expect_err("bad id");
        assert_status(
            &err,
            Code::InvalidArgument,
            "INVALID_FIELD",
            Some("customer_id"),
        );
    }
    let err = client
        .list_customers(pb::ListCustomersRequest {
            page_size: -1,
            page_token: String::new(),
        })
        .await
        .expect_err("negative");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_PAGE_SIZE",
        Some("page_size"),
    );
    for token in [
        "garbage",
        "!!!!",
        "cDEAY3VzdG9tZXJz",
        "cDEAZXZlbnRzOms9OnZpY3RpbQB4",
    ] {
        let err = client
            .list_customers(pb::ListCustomersRequest {
                page_size: 5,
                page_token: token.into(),
            })
            .await
            .expect_err("garbage token");
        assert_status(
            &err,
            Code::InvalidArgument,
            "INVALID_PAGE_TOKEN",
            Some("page_token"),
        );
        let err = client
            .list_customer_events(pb::ListCustomerEventsRequest {
                customer_id: "victim".into(),
                page_token: token.into(),
                ..Default::default()
            })
            .await
            .expect_err("garbage token");
        assert_status(
            &err,
            Code::InvalidArgument,
            "INVALID_PAGE_TOKEN",
            Some("page_token"),
        );
    }
    let err = client
        .list_customer_events(pb::ListCustomerEventsRequest {
            customer_id: "victim".into(),
            page_size: -5,
            ..Default::default()
        })
        .await
        .expect_err("negative");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_PAGE_SIZE",
        Some("page_size"),
    );
    let err = client
        .list_customer_events(pb::ListCustomerEventsRequest {
            customer_id: "victim".into(),
            kinds: vec![99],
            ..Default::default()
        })
        .await
        .expect_err("unknown kind");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("kinds[0]"),
    );
    assert_unchanged(&app, &before, n).await;
}

async fn oversized_messages_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.max_message_bytes = 64 * 1024).await;
    let events: Vec<pb::Event> = (0..2_000)
        .map(|i| purchase("big", &format!("e{i}"), ts(1, 0), &format!("o{i}"), 1))
        .collect();
    let err = app.record(events).await.expect_err("too large");
    assert_status(&err, Code::ResourceExhausted, "MESSAGE_TOO_LARGE", None);
    // Bytes that are not even a message: the size is checked first.
    for method in crate::extremes::methods() {
        let err = call_raw(
            &app.channel,
            &method.path,
            method.shape,
            Bytes::from(vec![0xff; 65 * 1024]),
        )
        .await
        .expect_err("too large");
        assert_status(&err, Code::ResourceExhausted, "MESSAGE_TOO_LARGE", None);
    }
    assert_status(
        &app.customer("big").await.expect_err("nothing stored"),
        Code::NotFound,
        "CUSTOMER_NOT_FOUND",
        None,
    );
}

/// A refused value is quoted short: the status (grpc-message, and the details that repeat it)
/// stays far below the 8 KB of metadata a standard client accepts.
async fn huge_values_are_quoted_short(backend: Backend) {
    let (app, before, n) = seeded(backend).await;
    let small = |err: &tonic::Status| {
        assert!(err.message().len() < 2048, "{}", err.message().len());
        assert!(err.details().len() < 2048, "{}", err.details().len());
    };
    let err = app
        .customers
        .clone()
        .upsert_customers(pb::UpsertCustomersRequest {
            customers: vec![pb::Customer {
                country: "D".repeat(12_000),
                ..good_customer("victim")
            }],
        })
        .await
        .expect_err("not a country");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("customers[0].country"),
    );
    assert!(
        err.message().contains("…\" (12000 bytes)"),
        "{}",
        err.message()
    );
    small(&err);
    let mut segments =
        patron_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient::new(
            app.channel.clone(),
        );
    let segment = patron_proto::segmentation::v1::Segment {
        segment_id: "s1".into(),
        display_name: "S1".into(),
        rule: "true".into(),
        ..Default::default()
    };
    segments
        .create_segment(patron_proto::segmentation::v1::CreateSegmentRequest {
            segment: Some(segment.clone()),
        })
        .await
        .expect("segment");
    let err = segments
        .update_segment(patron_proto::segmentation::v1::UpdateSegmentRequest {
            segment: Some(segment),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["p".repeat(10_000)],
            }),
            expected_revision: 0,
        })
        .await
        .expect_err("not a field");
    assert_status(
        &err,
        Code::InvalidArgument,
        "INVALID_FIELD",
        Some("update_mask.paths[0]"),
    );
    small(&err);
    assert_unchanged(&app, &before, n).await;
}

/// Request bytes that are no protobuf message at all (wire type 7, then a truncated varint):
/// INVALID_ARGUMENT on every method, not INTERNAL, and nothing changes.
async fn undecodable_requests_are_invalid_arguments(backend: Backend) {
    let (app, before, n) = seeded(backend).await;
    let mut methods: Vec<(String, Shape)> = crate::extremes::methods()
        .into_iter()
        .map(|m| (m.path, m.shape))
        .collect();
    methods.push(("/grpc.health.v1.Health/Check".into(), Shape::Unary));
    for garbage in [&[0x0f, 0xff][..], &[0x0a, 0xff, 0xff, 0xff]] {
        for (path, shape) in &methods {
            let err = call_raw(&app.channel, path, *shape, Bytes::from_static(garbage))
                .await
                .expect_err(path);
            assert_status(&err, Code::InvalidArgument, "UNDECODABLE_REQUEST", None);
        }
    }
    assert_unchanged(&app, &before, n).await;
}

crate::both_backends!(
    undecodable_requests_are_invalid_arguments,
    huge_values_are_quoted_short,
    every_bad_event_field_is_refused,
    oversized_and_empty_batches_are_refused,
    every_bad_customer_field_is_refused,
    bad_ids_page_sizes_and_tokens_are_refused,
    oversized_messages_are_refused,
);
