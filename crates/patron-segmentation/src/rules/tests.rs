//! Rules × customers: a data-driven table of expected memberships, built on summaries derived
//! from events by the same domain code the stores use.

use std::collections::BTreeMap;
use std::sync::Arc;

use patron_domain::value::TierPolicy;
use patron_domain::{
    AttributeKey, AttributeValue, CustomerId, CustomerSummary, Date, Day, Engagement, Event,
    EventData, EventId, Gender, OrderId, OrderRow, Purchase, Refund, SummaryDelta, Survey,
    Timestamp, derive_purchase_stats,
};
use patron_store::{EngagementDay, SummaryRow};
use patron_views::engine::State;

use super::compile::{Program, RuleErrorKind, compile};
use super::eval::{Eval, Facts, SegmentResolver, age_on};
use super::explain::explain;

fn date(y: i32, m: i32, d: i32) -> Date {
    Date::new(y, m, d).expect("date")
}

/// 2026-06-15, noon UTC.
fn now() -> Timestamp {
    Timestamp::from_micros(date(2026, 6, 15).to_day().start().as_micros() + 12 * 3_600_000_000)
}

fn today() -> i32 {
    now().day().as_days()
}

struct Builder {
    id: &'static str,
    birth: Option<Date>,
    gender: Gender,
    country: Option<&'static str>,
    attributes: Vec<(&'static str, AttributeValue)>,
    events: Vec<Event>,
    signed_up_days_ago: Option<i32>,
}

fn customer(id: &'static str) -> Builder {
    Builder {
        id,
        birth: None,
        gender: Gender::Unspecified,
        country: None,
        attributes: Vec::new(),
        events: Vec::new(),
        signed_up_days_ago: None,
    }
}

impl Builder {
    fn event(mut self, days_ago: i32, data: EventData) -> Self {
        let n = self.events.len();
        self.events.push(Event {
            customer_id: CustomerId::parse(self.id).expect("id"),
            event_id: EventId::parse(format!("e{n}")).expect("id"),
            occurred_at: Timestamp::from_micros(
                Day::from_days(today() - days_ago).start().as_micros() + 3_600_000_000,
            ),
            data,
        });
        self
    }

    fn purchase(self, days_ago: i32, order: &str, amount: i64) -> Self {
        self.event(
            days_ago,
            EventData::Purchase(Purchase {
                order_id: OrderId::parse(order).expect("id"),
                amount,
                item_count: 1,
                channel: String::new(),
            }),
        )
    }

    fn refund(self, days_ago: i32, order: &str, amount: i64) -> Self {
        self.event(
            days_ago,
            EventData::Refund(Refund {
                order_id: OrderId::parse(order).expect("id"),
                amount,
            }),
        )
    }

    fn engage(self, days_ago: i32, activity: &str) -> Self {
        self.event(
            days_ago,
            EventData::Engagement(Engagement {
                activity: activity.to_owned(),
            }),
        )
    }

    fn nps(self, days_ago: i32, nps: u8) -> Self {
        self.event(
            days_ago,
            EventData::Survey(Survey {
                benefits: [None; 4],
                costs: [None; 4],
                csat: Some(4),
                nps: Some(nps),
            }),
        )
    }

    fn attr(mut self, key: &'static str, v: AttributeValue) -> Self {
        self.attributes.push((key, v));
        self
    }

    fn build(self) -> SummaryRow {
        let mut totals = SummaryDelta::default();
        let mut orders: BTreeMap<String, OrderRow> = BTreeMap::new();
        let mut engagement: BTreeMap<(Day, String), i64> = BTreeMap::new();
        for e in &self.events {
            totals.add(e);
            match &e.data {
                EventData::Purchase(p) => {
                    let o = orders
                        .entry(p.order_id.as_str().to_owned())
                        .or_insert(OrderRow {
                            day: None,
                            amount: 0,
                            refunded: 0,
                        });
                    o.day = Some(e.occurred_at.day());
                    o.amount += p.amount;
                }
                EventData::Refund(r) => {
                    orders
                        .entry(r.order_id.as_str().to_owned())
                        .or_insert(OrderRow {
                            day: None,
                            amount: 0,
                            refunded: 0,
                        })
                        .refunded += r.amount;
                }
                EventData::Engagement(g) => {
                    *engagement
                        .entry((e.occurred_at.day(), g.activity.clone()))
                        .or_insert(0) += 1;
                }
                _ => {}
            }
        }
        let rows: Vec<OrderRow> = orders.values().cloned().collect();
        let order_days = patron_views::history::active_orders(&rows);
        SummaryRow {
            customer_id: CustomerId::parse(self.id).expect("id"),
            signed_up_at: self
                .signed_up_days_ago
                .map(|d| Day::from_days(today() - d).start()),
            create_time: Day::from_days(today() - 1000).start(),
            birth_date: self.birth,
            gender: self.gender,
            country: self.country.map(std::sync::Arc::from),
            attributes: std::sync::Arc::new(
                self.attributes
                    .into_iter()
                    .map(|(k, v)| (AttributeKey::parse(k).expect("key"), v))
                    .collect(),
            ),
            summary: CustomerSummary {
                totals,
                purchases: derive_purchase_stats(&rows),
            },
            orders: order_days,
            engagement: engagement
                .into_iter()
                .map(|((day, activity), count)| EngagementDay {
                    day,
                    activity: Arc::from(activity.as_str()),
                    count,
                })
                .collect(),
        }
    }
}

fn population() -> Vec<SummaryRow> {
    vec![
        // Birthday today: 36 today.
        Builder {
            birth: Some(date(1990, 6, 15)),
            gender: Gender::Female,
            country: Some("DE"),
            signed_up_days_ago: Some(400),
            ..customer("alice")
        }
        .attr("plan", AttributeValue::String("pro".into()))
        .attr("seats", AttributeValue::Int(12))
        .attr("vip", AttributeValue::Bool(true))
        .attr("renewal", AttributeValue::Date(date(2026, 9, 1)))
        .purchase(10, "a1", 5_000)
        .purchase(40, "a2", 3_000)
        .purchase(200, "a3", 10_000)
        .engage(0, "login")
        .engage(29, "login")
        .engage(30, "export")
        .nps(5, 9)
        .build(),
        // Birthday tomorrow: still 35.
        Builder {
            birth: Some(date(1990, 6, 16)),
            gender: Gender::Male,
            country: Some("US"),
            signed_up_days_ago: Some(100),
            ..customer("bob")
        }
        .attr("plan", AttributeValue::String("free".into()))
        .attr("seats", AttributeValue::Double(2.5))
        .purchase(90, "b1", 2_000)
        .purchase(89, "b2", 1_500)
        .refund(80, "b2", 1_500)
        .purchase(89, "b3", 700)
        .refund(80, "b3", 200)
        .nps(3, 4)
        .build(),
        // Nothing known.
        customer("carol").build(),
        // Born on 29 February: 26 on 1 March 2026, so 26 today; purchases long ago.
        Builder {
            birth: Some(date(2000, 2, 29)),
            gender: Gender::Other,
            country: Some("AT"),
            ..customer("dave")
        }
        .purchase(365, "d1", 90_000)
        .engage(1, "login")
        .build(),
    ]
}

struct Catalog {
    programs: BTreeMap<String, Arc<Program>>,
}

impl SegmentResolver for Catalog {
    fn program(&self, id: &str) -> Option<&Program> {
        self.programs.get(id).map(|p| &**p)
    }
}

fn catalog() -> Catalog {
    let mut programs = BTreeMap::new();
    for (id, rule) in [
        ("germans", "customer.country == \"DE\""),
        ("buyers", "purchases.total_count > 0"),
    ] {
        let p = compile(rule, &|_: &str| true).expect("fixture rule");
        programs.insert(id.to_owned(), Arc::new(p));
    }
    Catalog { programs }
}

fn state() -> State {
    State {
        model: None,
        policy: TierPolicy::default(),
        policy_revision: 0,
        policy_updated: None,
    }
}

fn members(rule: &str) -> Vec<&'static str> {
    let cat = catalog();
    let program = compile(rule, &|id: &str| cat.programs.contains_key(id))
        .unwrap_or_else(|e| panic!("rule {rule:?} does not compile: {e}"));
    let state = state();
    let names = ["alice", "bob", "carol", "dave"];
    population()
        .iter()
        .zip(names)
        .filter(|(row, _)| {
            let facts = Facts::new(row, &state, now());
            Eval::new(&facts, &cat).matches(&program)
        })
        .map(|(_, n)| n)
        .collect()
}

#[test]
fn rules_times_customers() {
    let cases: &[(&str, &[&str])] = &[
        // Demographics; ages on birthdays.
        ("customer.age == 36", &["alice"]),
        ("customer.age == 35", &["bob"]),
        ("customer.age >= 36", &["alice"]),
        ("customer.age < 36", &["bob", "dave"]),
        ("customer.age == 26", &["dave"]),
        ("customer.age == null", &["carol"]),
        ("customer.age != null", &["alice", "bob", "dave"]),
        // Null-safe: an unknown age is neither young nor old.
        ("!(customer.age < 30)", &["alice", "bob"]),
        (
            "customer.age < 30 || customer.country == \"DE\"",
            &["alice", "dave"],
        ),
        (
            "customer.age >= 0 && customer.country != null",
            &["alice", "bob", "dave"],
        ),
        ("customer.gender == \"female\"", &["alice"]),
        ("customer.gender in [\"male\", \"other\"]", &["bob", "dave"]),
        ("customer.country in [\"DE\", \"AT\"]", &["alice", "dave"]),
        ("customer.country == null", &["carol"]),
        (
            "customer.id.startsWith(\"a\") || customer.id.endsWith(\"l\")",
            &["alice", "carol"],
        ),
        ("customer.tenure_days >= 400", &["alice", "carol"]),
        ("customer.tenure_days == 365", &["dave"]),
        ("customer.tenure_days < 101", &["bob"]),
        // Custom attributes: missing ones are not members unless guarded.
        ("customer.attributes.plan == \"pro\"", &["alice"]),
        ("customer.attributes[\"plan\"] != \"pro\"", &["bob"]),
        ("has(customer.attributes.plan)", &["alice", "bob"]),
        ("!has(customer.attributes.plan)", &["carol", "dave"]),
        (
            "!has(customer.attributes.vip) || customer.attributes.vip",
            &["alice", "bob", "carol", "dave"],
        ),
        ("customer.attributes.seats > 2", &["alice", "bob"]),
        ("customer.attributes.seats >= 12.0", &["alice"]),
        ("customer.attributes.vip == true", &["alice"]),
        ("customer.attributes.renewal < \"2026-12-31\"", &["alice"]),
        // A type mismatch on an attribute is not a match, and not an error for anyone else.
        ("customer.attributes.plan > 3", &[]),
        // Windows: the last N days include today; day -N is outside.
        (
            "purchases.count(10) == 0",
            &["alice", "bob", "carol", "dave"],
        ),
        ("purchases.count(11) == 1", &["alice"]),
        ("purchases.count(41) == 2", &["alice"]),
        ("purchases.count(40) == 1", &["alice"]),
        ("purchases.count(90) == 2", &["alice"]),
        // bob: b1 is 90 days ago (outside 90), b2 is wholly refunded, b3 partly.
        (
            "purchases.count(91) == 2 && purchases.revenue(91) == 2500",
            &["bob"],
        ),
        (
            "purchases.count(90) == 1 && purchases.revenue(90) == 500",
            &["bob"],
        ),
        ("purchases.revenue(365) >= 18000", &["alice"]),
        ("purchases.revenue(200) >= 18000", &[]),
        ("purchases.revenue(366) >= 90000", &["dave"]),
        ("purchases.total_count == 0", &["carol"]),
        ("purchases.total_revenue > 10000", &["alice", "dave"]),
        ("purchases.days_since_last > 60", &["bob", "dave"]),
        ("purchases.days_since_last == null", &["carol"]),
        ("engagement.count(1) >= 1", &["alice"]),
        ("engagement.count(2) >= 1", &["alice", "dave"]),
        ("engagement.count(30) == 2", &["alice"]),
        ("engagement.count(31) == 3", &["alice"]),
        ("engagement.count(31, \"export\") == 1", &["alice"]),
        ("engagement.count(31, \"login\") == 2", &["alice"]),
        ("engagement.total == 0", &["bob", "carol"]),
        ("engagement.days_since_last <= 1", &["alice", "dave"]),
        // RFM basics without a model: raw values are known, scores are not.
        ("rfm.recency_days == 10", &["alice"]),
        ("rfm.frequency == 2", &["alice"]),
        ("rfm.frequency == 0", &["dave"]),
        ("rfm.monetary_total == 18000", &["alice"]),
        (
            "rfm.segment == null && rfm.r == null",
            &["alice", "bob", "carol", "dave"],
        ),
        (
            "value.tier == null && value.predicted_clv == null",
            &["alice", "bob", "carol", "dave"],
        ),
        ("value.nps >= 9", &["alice"]),
        ("value.nps_category == \"detractor\"", &["bob"]),
        ("value.csat >= 4.0", &["alice", "bob"]),
        (
            "value.quadrant == \"unknown\"",
            &["alice", "bob", "carol", "dave"],
        ),
        // Arithmetic, conditionals, conversions.
        ("purchases.total_revenue / 100 > 150", &["alice", "dave"]),
        ("purchases.total_revenue * 1.5 > 100000.0", &["dave"]),
        (
            "(customer.age != null ? customer.age : 0) > 30",
            &["alice", "bob"],
        ),
        ("string(purchases.total_count) == \"3\"", &["alice"]),
        ("int(customer.attributes.seats) == 2", &["bob"]),
        ("size(customer.id) == 3", &["bob"]),
        ("customer.country.lowerAscii() == \"us\"", &["bob"]),
        // Segments of segments.
        ("in_segment(\"germans\")", &["alice"]),
        (
            "in_segment(\"buyers\") && !in_segment(\"germans\")",
            &["bob", "dave"],
        ),
        // Lapsed champions, the README example without a model: big spenders gone quiet.
        (
            "purchases.total_revenue >= 50000 && purchases.count(90) == 0",
            &["dave"],
        ),
        ("true", &["alice", "bob", "carol", "dave"]),
        ("false", &[]),
    ];
    let mut failures = Vec::new();
    for (rule, expected) in cases {
        let got = members(rule);
        if got != *expected {
            failures.push(format!("{rule}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn ages_on_birthdays_and_leap_days() {
    let d = |y, m, dd| date(y, m, dd).to_day();
    assert_eq!(age_on(date(2000, 2, 29), d(2026, 2, 28)), Some(25));
    assert_eq!(age_on(date(2000, 2, 29), d(2026, 3, 1)), Some(26));
    assert_eq!(age_on(date(2000, 2, 29), d(2028, 2, 29)), Some(28));
    assert_eq!(age_on(date(1990, 12, 31), d(2026, 12, 30)), Some(35));
    assert_eq!(age_on(date(1990, 12, 31), d(2026, 12, 31)), Some(36));
    assert_eq!(age_on(date(2026, 6, 15), d(2026, 6, 15)), Some(0));
    assert_eq!(age_on(date(2026, 6, 16), d(2026, 6, 15)), None);
}

#[test]
fn bad_rules_are_refused_with_position_and_reason() {
    let exists = |id: &str| id == "germans";
    let cases: &[(&str, RuleErrorKind, (u32, u32), &str)] = &[
        ("", RuleErrorKind::Empty, (1, 1), "empty"),
        ("customer.age >", RuleErrorKind::Syntax, (1, 15), ""),
        (
            "customer.agee > 3",
            RuleErrorKind::UnknownVariable,
            (1, 9),
            "customer.agee",
        ),
        (
            "foo > 3",
            RuleErrorKind::UnknownVariable,
            (1, 1),
            "unknown variable `foo`",
        ),
        (
            "customer.age > 3 &&\n  rfm.recency > 3",
            RuleErrorKind::UnknownVariable,
            (2, 6),
            "rfm.recency",
        ),
        (
            "customer.age > \"x\"",
            RuleErrorKind::Type,
            (1, 14),
            "cannot compare int with string",
        ),
        (
            "customer.age",
            RuleErrorKind::Type,
            (1, 9),
            "must be a bool",
        ),
        (
            "customer.country && true",
            RuleErrorKind::Type,
            (1, 9),
            "expected a bool",
        ),
        (
            "purchases.count(0) > 1",
            RuleErrorKind::Type,
            (1, 17),
            "1 to 3650",
        ),
        (
            "purchases.count(customer.age) > 1",
            RuleErrorKind::Type,
            (1, 25),
            "literal",
        ),
        (
            "purchases.sum(3) > 1",
            RuleErrorKind::UnknownVariable,
            (1, 14),
            "purchases.sum",
        ),
        (
            "in_segment(\"nope\")",
            RuleErrorKind::UnknownSegment,
            (1, 12),
            "no segment `nope`",
        ),
        (
            "[1, 2].exists(x, x > 1)",
            RuleErrorKind::Unsupported,
            (1, 14),
            "macros",
        ),
        ("customer.attributes", RuleErrorKind::Type, (1, 9), "map"),
        (
            "customer",
            RuleErrorKind::UnknownVariable,
            (1, 1),
            "group of variables",
        ),
        (
            "has(customer.age)",
            RuleErrorKind::Unsupported,
            (1, 4),
            "custom attributes",
        ),
        (
            "customer.age in customer.age",
            RuleErrorKind::Unsupported,
            (1, 25),
            "list literal",
        ),
        (
            "customer.gender in [1, 2]",
            RuleErrorKind::Type,
            (1, 21),
            "list element is int",
        ),
        (
            "b\"x\" == b\"x\"",
            RuleErrorKind::Unsupported,
            (1, 1),
            "bytes",
        ), // Arity: one check for every operator, function and method that takes a fixed count.
        (
            "size(\"a\", \"b\") > 1",
            RuleErrorKind::Type,
            (1, 5),
            "size() takes 1 argument, not 2",
        ),
        (
            "int(1, 2) > 0",
            RuleErrorKind::Type,
            (1, 4),
            "int() takes 1 argument, not 2",
        ),
        (
            "customer.id.startsWith()",
            RuleErrorKind::Type,
            (1, 23),
            "startsWith() takes 1 argument, not 0",
        ),
        (
            "customer.country.lowerAscii(1) == \"\"",
            RuleErrorKind::Type,
            (1, 28),
            "lowerAscii() takes 0 arguments, not 1",
        ),
    ];
    let mut failures = Vec::new();
    for (rule, kind, (line, column), needle) in cases {
        match compile(rule, &exists) {
            Ok(_) => failures.push(format!("{rule:?}: compiled")),
            Err(e) => {
                if e.kind != *kind
                    || (e.line, e.column) != (*line, *column)
                    || !e.message.contains(needle)
                {
                    failures.push(format!(
                        "{rule:?}: expected {kind:?} at {line}:{column} containing {needle:?}, got {:?} at {}:{}: {}",
                        e.kind, e.line, e.column, e.message
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let long = format!("customer.age > 1{}", " && customer.age > 1".repeat(300));
    assert_eq!(
        compile(&long, &exists)
            .map(|_| ())
            .expect_err("too long")
            .kind,
        RuleErrorKind::TooLarge
    );
    let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
    assert_eq!(
        compile(&deep, &exists)
            .map(|_| ())
            .expect_err("too deep")
            .kind,
        RuleErrorKind::TooLarge
    );
}

#[test]
fn explanations_name_the_values_that_decided() {
    let cat = catalog();
    let program = compile(
        "purchases.total_revenue >= 50000 && purchases.count(90) == 0 && customer.age > 20",
        &|_: &str| true,
    )
    .expect("rule");
    let state = state();
    let rows = population();
    let dave = &rows[3];
    let facts = Facts::new(dave, &state, now());
    let x = explain(&Eval::new(&facts, &cat), &program);
    assert!(x.matched);
    assert_eq!(x.outcome, "true");
    let facts: Vec<(String, String)> = x
        .facts
        .iter()
        .map(|f| (f.expression.clone(), f.value.clone()))
        .collect();
    assert_eq!(
        facts,
        vec![
            ("purchases.total_revenue".to_owned(), "90000".to_owned()),
            ("purchases.count(90)".to_owned(), "0".to_owned()),
            ("customer.age".to_owned(), "26".to_owned()),
        ]
    );
    assert_eq!(x.conditions.len(), 3);
    assert_eq!(x.conditions[1].expression, "purchases.count(90) == 0");
    let carol = &rows[2];
    let facts = Facts::new(carol, &state, now());
    let x = explain(&Eval::new(&facts, &cat), &program);
    assert!(!x.matched);
    assert_eq!(x.outcome, "false");
    assert_eq!(x.facts[2].value, "null");
    assert!(
        x.conditions[2]
            .outcome
            .starts_with("error: a value it needs is not known")
    );
}
