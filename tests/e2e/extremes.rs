//! Every field of every request, at its extremes, over a real connection: each numeric field gets
//! i64::MIN, i64::MAX, i32::MIN and i32::MAX (as far as its type holds them), NaN and the
//! infinities; each string field, repeated string and map key gets 12,000 bytes. The reply is
//! never INTERNAL or UNKNOWN; a refused value is INVALID_ARGUMENT with a BadRequest naming the
//! field (or the message holding it); and an error stays small enough to reach any client.
//!
//! The fields come from the descriptors, so a field added to the API is swept as soon as it
//! exists. What a numeric field accepts among the extremes is written down in [`ACCEPTED`];
//! every other extreme must be refused.

use std::collections::BTreeMap;

use bytes::Bytes;
use patron_proto::common::v1 as common;
use patron_proto::customers::v1 as cpb;
use patron_proto::loyalty::v1 as lpb;
use patron_proto::scoring::v1 as spb;
use patron_proto::segmentation::v1 as gpb;
use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{Backend, Shape, TestApp, call_raw, purchase, spawn_app, ts, usd};

/// An extreme value for a numeric field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum X {
    I64Min,
    I64Max,
    I32Min,
    I32Max,
    NaN,
    Inf,
    NegInf,
}

use X::*;

const INT64: &[X] = &[I64Min, I64Max, I32Min, I32Max];
const INT32: &[X] = &[I32Min, I32Max];
const DOUBLE: &[X] = &[NaN, Inf, NegInf];

/// (method, field pattern, the extremes the field accepts, why). `[]` stands for any index or
/// map key; a pattern ending in `.` covers every field below it. Every extreme not listed here
/// must be refused.
const ACCEPTED: &[(&str, &str, &[X], &str)] = &[
    // Output-only fields are ignored on input (AIP-203).
    (
        "UpsertCustomers",
        "customers[].create_time.",
        INT64,
        "output only",
    ),
    (
        "UpsertCustomers",
        "customers[].update_time.",
        INT64,
        "output only",
    ),
    (
        "UpsertCustomers",
        "customers[].summary.",
        INT64,
        "output only",
    ),
    (
        "RecordEvents",
        "events[].record_time.",
        INT64,
        "output only",
    ),
    (
        "StreamEvents",
        "events[].record_time.",
        INT64,
        "output only",
    ),
    ("CreateProgram", "program.revision", INT64, "output only"),
    (
        "CreateProgram",
        "program.create_time.",
        INT64,
        "output only",
    ),
    (
        "CreateProgram",
        "program.update_time.",
        INT64,
        "output only",
    ),
    ("UpdateProgram", "program.revision", INT64, "output only"),
    (
        "UpdateProgram",
        "program.create_time.",
        INT64,
        "output only",
    ),
    (
        "UpdateProgram",
        "program.update_time.",
        INT64,
        "output only",
    ),
    ("CreateReward", "reward.revision", INT64, "output only"),
    ("CreateReward", "reward.create_time.", INT64, "output only"),
    ("CreateReward", "reward.update_time.", INT64, "output only"),
    ("UpdateReward", "reward.revision", INT64, "output only"),
    ("UpdateReward", "reward.create_time.", INT64, "output only"),
    ("UpdateReward", "reward.update_time.", INT64, "output only"),
    ("UpdateTierPolicy", "policy.revision", INT64, "output only"),
    (
        "UpdateTierPolicy",
        "policy.update_time.",
        INT64,
        "output only",
    ),
    ("CreateSegment", "segment.", INT64, "output only"),
    ("UpdateSegment", "segment.", INT64, "output only"),
    // Timestamps run from 1900-01-01 to 9999-12-31: i32::MIN seconds is 1901-12-13 and
    // i32::MAX 2038-01-19 (refused where the time may not be in the future).
    (
        "UpsertCustomers",
        "customers[].signed_up_at.seconds",
        &[I32Min],
        "1901",
    ),
    (
        "RecordEvents",
        "events[].occurred_at.seconds",
        &[I32Min],
        "1901",
    ),
    (
        "StreamEvents",
        "events[].occurred_at.seconds",
        &[I32Min],
        "1901",
    ),
    ("GetCustomerValue", "as_of.seconds", &[I32Min], "1901"),
    (
        "BatchGetCustomerValues",
        "as_of.seconds",
        &[I32Min],
        "1901 (the customer is listed as before their first event)",
    ),
    (
        "StreamCustomerValues",
        "as_of.seconds",
        &[I32Min],
        "1901 (nobody had an event yet)",
    ),
    (
        "FitValueModel",
        "calibration_end.seconds",
        &[I32Min],
        "1901 (then FAILED_PRECONDITION)",
    ),
    (
        "CreateReward",
        "reward.active_from.seconds",
        &[I32Min, I32Max],
        "1901, 2038",
    ),
    (
        "CreateReward",
        "reward.active_until.seconds",
        &[I32Max],
        "2038",
    ),
    (
        "UpdateReward",
        "reward.active_from.seconds",
        &[I32Min, I32Max],
        "1901, 2038",
    ),
    (
        "UpdateReward",
        "reward.active_until.seconds",
        &[I32Max],
        "2038",
    ),
    // Attribute values are any 64-bit integer.
    (
        "UpsertCustomers",
        "customers[].attributes[].int_value",
        INT64,
        "any integer",
    ),
    (
        "RecordEvents",
        "events[].custom.properties[].int_value",
        INT64,
        "any integer",
    ),
    (
        "StreamEvents",
        "events[].custom.properties[].int_value",
        INT64,
        "any integer",
    ),
    // Amounts up to 10^12 minor units; thresholds compare with any total.
    (
        "RecordEvents",
        "events[].purchase.amount.minor_units",
        &[I32Max],
        "USD 21M",
    ),
    (
        "RecordEvents",
        "events[].refund.amount.minor_units",
        &[I32Max],
        "USD 21M",
    ),
    (
        "StreamEvents",
        "events[].purchase.amount.minor_units",
        &[I32Max],
        "USD 21M",
    ),
    (
        "StreamEvents",
        "events[].refund.amount.minor_units",
        &[I32Max],
        "USD 21M",
    ),
    (
        "ScoreProfile",
        "monetary_mean.minor_units",
        &[I32Max],
        "USD 21M",
    ),
    (
        "ScoreProfile",
        "historical_revenue.minor_units",
        &[I32Max],
        "USD 21M",
    ),
    (
        "StreamCustomerValues",
        "filter.min_predicted_clv.minor_units",
        &[I64Max, I32Max],
        "a threshold nobody reaches",
    ),
    (
        "UpdateTierPolicy",
        "policy.tiers[].min_value",
        &[I64Max, I32Max],
        "a threshold nobody reaches",
    ),
    (
        "CreateReward",
        "reward.min_lifetime_spend.minor_units",
        &[I64Max, I32Max],
        "a threshold nobody reaches",
    ),
    (
        "UpdateReward",
        "reward.min_lifetime_spend.minor_units",
        &[I64Max, I32Max],
        "a threshold nobody reaches",
    ),
    // Limits with no useful maximum: as good as unlimited.
    (
        "CreateProgram",
        "program.earning.event_bonuses[].cap",
        &[I32Max],
        "as good as no cap",
    ),
    (
        "UpdateProgram",
        "program.earning.event_bonuses[].cap",
        &[I32Max],
        "as good as no cap",
    ),
    (
        "CreateReward",
        "reward.per_customer_limit",
        &[I32Max],
        "as good as no limit",
    ),
    (
        "UpdateReward",
        "reward.per_customer_limit",
        &[I32Max],
        "as good as no limit",
    ),
    (
        "CreateReward",
        "reward.stock",
        &[I64Max, I32Max],
        "as good as unlimited",
    ),
    (
        "UpdateReward",
        "reward.stock",
        &[I64Max, I32Max],
        "as good as unlimited",
    ),
    // Versions and revisions that do not exist: NOT_FOUND or FAILED_PRECONDITION.
    (
        "GetValueModel",
        "version",
        &[I64Max, I32Max],
        "no such version",
    ),
    (
        "ActivateValueModel",
        "version",
        &[I64Max, I32Max],
        "no such version",
    ),
    (
        "UpdateProgram",
        "expected_revision",
        &[I64Max, I32Max],
        "not the stored revision",
    ),
    (
        "UpdateReward",
        "expected_revision",
        &[I64Max, I32Max],
        "not the stored revision",
    ),
    (
        "UpdateSegment",
        "expected_revision",
        &[I64Max, I32Max],
        "not the stored revision",
    ),
    // Page sizes over the maximum are lowered to it (AIP-158).
    ("ListCustomers", "page_size", &[I32Max], "clamped"),
    ("ListCustomerEvents", "page_size", &[I32Max], "clamped"),
    ("ListPrograms", "page_size", &[I32Max], "clamped"),
    ("ListLedgerEntries", "page_size", &[I32Max], "clamped"),
    ("ListRewards", "page_size", &[I32Max], "clamped"),
    ("ListValueModels", "page_size", &[I32Max], "clamped"),
    ("ListSegments", "page_size", &[I32Max], "clamped"),
    ("ListSegmentMembers", "page_size", &[I32Max], "clamped"),
];

/// The numeric kinds and the extremes each holds.
fn extremes(kind: &Kind) -> Option<&'static [X]> {
    match kind {
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Some(INT64),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Enum(_) => Some(INT32),
        Kind::Double | Kind::Float => Some(DOUBLE),
        Kind::Uint32 | Kind::Uint64 | Kind::Fixed32 | Kind::Fixed64 => {
            panic!("unsigned fields are not swept yet: add their extremes")
        }
        _ => None,
    }
}

fn value_of(kind: &Kind, x: X) -> Value {
    let int = |x: X| -> i64 {
        match x {
            I64Min => i64::MIN,
            I64Max => i64::MAX,
            I32Min => i64::from(i32::MIN),
            I32Max => i64::from(i32::MAX),
            NaN | Inf | NegInf => unreachable!("not an integer"),
        }
    };
    let float = |x: X| -> f64 {
        match x {
            NaN => f64::NAN,
            Inf => f64::INFINITY,
            NegInf => f64::NEG_INFINITY,
            _ => unreachable!("not a float"),
        }
    };
    match kind {
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(int(x)),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(i32::try_from(int(x)).expect("an i32 extreme"))
        }
        Kind::Enum(_) => Value::EnumNumber(i32::try_from(int(x)).expect("an i32 extreme")),
        Kind::Double => Value::F64(float(x)),
        Kind::Float => Value::F32(float(x) as f32),
        _ => unreachable!("not numeric"),
    }
}

/// A path from a request message to one of its fields.
type Path = Vec<FieldDescriptor>;

/// The pattern of a path: `customers[].birth_date.year`.
fn pattern(path: &Path) -> String {
    path.iter()
        .map(|f| {
            if f.is_list() || f.is_map() {
                format!("{}[]", f.name())
            } else {
                f.name().to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Every path to a field of `message` that `leaf` picks, through nested messages, lists and
/// map values.
fn paths(message: &MessageDescriptor, leaf: &dyn Fn(&FieldDescriptor) -> bool) -> Vec<Path> {
    fn walk(
        message: &MessageDescriptor,
        prefix: &mut Path,
        seen: &mut Vec<String>,
        leaf: &dyn Fn(&FieldDescriptor) -> bool,
        out: &mut Vec<Path>,
    ) {
        for field in message.fields() {
            prefix.push(field.clone());
            if leaf(&field) {
                out.push(prefix.clone());
            }
            let inner = if field.is_map() {
                match field.kind() {
                    Kind::Message(entry) => entry.map_entry_value_field().kind(),
                    other => other,
                }
            } else {
                field.kind()
            };
            if let Kind::Message(m) = inner
                && !seen.contains(&m.full_name().to_owned())
            {
                seen.push(m.full_name().to_owned());
                walk(&m, prefix, seen, leaf, out);
                seen.pop();
            }
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    walk(
        message,
        &mut Vec::new(),
        &mut vec![message.full_name().to_owned()],
        leaf,
        &mut out,
    );
    out
}

/// The kind of the values a field holds (a map's value kind for maps).
fn value_kind(field: &FieldDescriptor) -> Kind {
    if field.is_map() {
        match field.kind() {
            Kind::Message(entry) => entry.map_entry_value_field().kind(),
            other => other,
        }
    } else {
        field.kind()
    }
}

fn key_text(key: &MapKey) -> String {
    match key {
        MapKey::String(s) => format!("[{}]", patron_domain::quote(s)),
        other => format!("[{other:?}]"),
    }
}

/// What to put at the end of a path.
enum Leaf {
    /// The field's value (one element for a repeated field, the value of one entry for a map).
    Value(Value),
    /// A map's key, for an entry moved there with its value.
    Key(String),
}

/// Sets the field at `path` in `message`, creating the messages on the way (the first element
/// of a list, the first entry of a map), and returns the field's path as the server names it
/// (`customers[0].attributes["visits"].int_value`).
fn set_path(message: &mut DynamicMessage, path: &[FieldDescriptor], leaf: Leaf) -> String {
    let (field, rest) = path.split_first().expect("a non-empty path");
    let mut name = field.name().to_owned();
    if rest.is_empty() {
        match leaf {
            Leaf::Key(key) => {
                let Value::Map(map) = message.get_field_mut(field) else {
                    panic!("{name} is not a map");
                };
                let value = map
                    .iter()
                    .min_by(|a, b| a.0.cmp(b.0))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| {
                        field.kind().as_message().map_or(Value::Bool(false), |e| {
                            e.map_entry_value_field().default_value()
                        })
                    });
                map.clear();
                name.push_str(&key_text(&MapKey::String(key.clone())));
                map.insert(MapKey::String(key), value);
            }
            Leaf::Value(value) if field.is_list() => {
                message.set_field(field, Value::List(vec![value]));
                name.push_str("[0]");
            }
            Leaf::Value(value) if field.is_map() => {
                let key = MapKey::String("k".into());
                name.push_str(&key_text(&key));
                message.set_field(field, Value::Map([(key, value)].into()));
            }
            Leaf::Value(value) => message.set_field(field, value),
        }
        return name;
    }
    let inner = match message.get_field_mut(field) {
        Value::Message(m) => m,
        Value::List(items) => {
            if items.is_empty() {
                let Kind::Message(m) = field.kind() else {
                    panic!("{name} holds no messages")
                };
                items.push(Value::Message(DynamicMessage::new(m)));
            }
            name.push_str("[0]");
            items[0].as_message_mut().expect("a message")
        }
        Value::Map(map) => {
            if map.is_empty() {
                let value_field = field
                    .kind()
                    .as_message()
                    .expect("a map entry")
                    .map_entry_value_field();
                map.insert(MapKey::String("k".into()), value_field.default_value());
            }
            let key = map.keys().min().cloned().expect("an entry");
            name.push_str(&key_text(&key));
            map.get_mut(&key)
                .and_then(Value::as_message_mut)
                .expect("a message value")
        }
        other => panic!("{name} is {other:?}, not a message"),
    };
    format!("{name}.{}", set_path(inner, rest, leaf))
}

// ---------------------------------------------------------------------------------------------
// Valid requests to start from. `n` makes ids unique where a call creates something; `pattern`
// picks the variant that holds the field (the right event kind, the right tier mode).

fn now() -> prost_types::Timestamp {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    prost_types::Timestamp {
        seconds: secs - 3_600,
        nanos: 0,
    }
}

fn later(days: i64) -> prost_types::Timestamp {
    let mut t = now();
    t.seconds += days * 86_400;
    t
}

fn customer(id: &str) -> cpb::Customer {
    cpb::Customer {
        customer_id: id.into(),
        birth_date: Some(common::Date {
            year: 1990,
            month: 5,
            day: 17,
        }),
        gender: 1,
        country: "US".into(),
        signed_up_at: Some(ts(0, 0)),
        attributes: [(
            "visits".to_owned(),
            common::AttributeValue {
                kind: Some(common::attribute_value::Kind::IntValue(3)),
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn event(pattern: &str, n: usize) -> cpb::Event {
    let id = format!("x{n}");
    let mut e = purchase("victim", &id, ts(30, n as i64), &id, 100);
    let kind = if pattern.contains(".refund.") {
        cpb::event::Kind::Refund(cpb::Refund {
            order_id: "o-seed".into(),
            amount: Some(usd(1)),
        })
    } else if pattern.contains(".support_interaction.") {
        cpb::event::Kind::SupportInteraction(cpb::SupportInteraction {
            channel: "phone".into(),
            resolved_first_contact: true,
            csat: Some(4),
        })
    } else if pattern.contains(".survey.") {
        cpb::event::Kind::Survey(survey_answers_event())
    } else if pattern.contains(".custom.") || pattern.contains(".engagement.") {
        cpb::event::Kind::Custom(cpb::CustomEvent {
            name: "review".into(),
            properties: [(
                "stars".to_owned(),
                common::AttributeValue {
                    kind: Some(common::attribute_value::Kind::IntValue(5)),
                },
            )]
            .into(),
        })
    } else {
        return e;
    };
    e.kind = Some(kind);
    e
}

fn survey_answers_event() -> cpb::Survey {
    cpb::Survey {
        economic_benefit: Some(4),
        functional_benefit: Some(4),
        experiential_benefit: Some(3),
        symbolic_benefit: Some(3),
        price_cost: Some(2),
        time_cost: Some(2),
        effort_cost: Some(2),
        emotional_cost: Some(1),
        csat: Some(5),
        nps: Some(9),
    }
}

fn tier(name: &str, min_points: i64) -> lpb::ProgramTier {
    lpb::ProgramTier {
        name: name.into(),
        min_points,
        min_spend: Some(usd(0)),
        min_tenure_days: 0,
        earn_multiplier_percent: 100,
    }
}

fn program(id: &str) -> lpb::Program {
    lpb::Program {
        program_id: id.into(),
        display_name: "Rewards".into(),
        currency_code: "USD".into(),
        earning: Some(lpb::EarningRules {
            points_per_unit: 1,
            first_purchase_bonus: 100,
            event_bonuses: vec![lpb::EventBonus {
                event_name: "review".into(),
                points: 25,
                cap: 2,
                cap_period: lpb::CapPeriod::Week as i32,
            }],
        }),
        pending_days: 14,
        expiry_days: 365,
        tiers: vec![tier("member", 0)],
        tier_window_days: 365,
        tier_grace_days: 30,
        auto_enroll: true,
        ..Default::default()
    }
}

fn reward(id: &str) -> lpb::Reward {
    lpb::Reward {
        reward_id: id.into(),
        program_id: "prog".into(),
        display_name: format!("Reward {id}"),
        description: "A mug".into(),
        cost: 10,
        min_tier: "member".into(),
        required_segment: "seg".into(),
        min_tenure_days: 1,
        min_lifetime_spend: Some(usd(100)),
        per_customer_limit: 3,
        stock: Some(100),
        active_from: Some(ts(0, 0)),
        active_until: Some(later(365)),
        ..Default::default()
    }
}

/// A reward whose `active_from` may move anywhere: it has no end.
fn open_reward(id: &str, pattern: &str) -> lpb::Reward {
    let mut r = reward(id);
    if pattern.contains("active_from") {
        r.active_until = None;
    }
    r
}

fn segment(id: &str) -> gpb::Segment {
    gpb::Segment {
        segment_id: id.into(),
        display_name: format!("Segment {id}"),
        description: "Everyone".into(),
        rule: "true".into(),
        ..Default::default()
    }
}

fn money() -> Option<common::Money> {
    Some(usd(1_000))
}

/// A valid request for `method`, encoded.
fn baseline(method: &str, pattern: &str, n: usize) -> Vec<u8> {
    let unique = |prefix: &str| format!("{prefix}{n}");
    match method {
        "UpsertCustomers" => cpb::UpsertCustomersRequest {
            customers: vec![customer("victim")],
        }
        .encode_to_vec(),
        "GetCustomer" | "DeleteCustomer" => cpb::GetCustomerRequest {
            customer_id: "nobody".into(),
        }
        .encode_to_vec(),
        "ListCustomers" => cpb::ListCustomersRequest {
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        "RecordEvents" => cpb::RecordEventsRequest {
            events: vec![event(pattern, n)],
        }
        .encode_to_vec(),
        "StreamEvents" => cpb::StreamEventsRequest {
            events: vec![event(pattern, n)],
        }
        .encode_to_vec(),
        "ListCustomerEvents" => cpb::ListCustomerEventsRequest {
            customer_id: "victim".into(),
            page_size: 10,
            page_token: String::new(),
            kinds: vec![cpb::EventKind::Purchase as i32],
        }
        .encode_to_vec(),
        "CreateProgram" => lpb::CreateProgramRequest {
            program: Some(program(&unique("p"))),
        }
        .encode_to_vec(),
        "UpdateProgram" => lpb::UpdateProgramRequest {
            program: Some(program("upd")),
            update_mask: None,
            expected_revision: 0,
        }
        .encode_to_vec(),
        "GetProgram" => lpb::GetProgramRequest {
            program_id: "prog".into(),
        }
        .encode_to_vec(),
        "ListPrograms" => lpb::ListProgramsRequest {
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        "Enroll" | "GetMembership" => lpb::EnrollRequest {
            program_id: "prog".into(),
            customer_id: "victim".into(),
        }
        .encode_to_vec(),
        "ListLedgerEntries" => lpb::ListLedgerEntriesRequest {
            program_id: "prog".into(),
            customer_id: "victim".into(),
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        "AdjustPoints" => lpb::AdjustPointsRequest {
            program_id: "prog".into(),
            customer_id: "victim".into(),
            points: 5,
            reason: "goodwill".into(),
            issuer: "agent-7".into(),
            request_id: unique("adj"),
        }
        .encode_to_vec(),
        "CreateReward" => lpb::CreateRewardRequest {
            reward: Some(open_reward(&unique("r"), pattern)),
        }
        .encode_to_vec(),
        "UpdateReward" => lpb::UpdateRewardRequest {
            reward: Some(open_reward("rew-upd", pattern)),
            update_mask: None,
            expected_revision: 0,
        }
        .encode_to_vec(),
        "GetReward" => lpb::GetRewardRequest {
            reward_id: "rew".into(),
        }
        .encode_to_vec(),
        "ListRewards" => lpb::ListRewardsRequest {
            program_id: "prog".into(),
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        "CheckEligibility" => lpb::CheckEligibilityRequest {
            program_id: "prog".into(),
            customer_id: "victim".into(),
            reward_ids: vec!["rew".into()],
        }
        .encode_to_vec(),
        "RedeemReward" => lpb::RedeemRewardRequest {
            program_id: "prog".into(),
            customer_id: "victim".into(),
            reward_id: "rew".into(),
            request_id: unique("red"),
        }
        .encode_to_vec(),
        "CancelRedemption" => lpb::CancelRedemptionRequest {
            program_id: "prog".into(),
            customer_id: "victim".into(),
            redemption_id: "none".into(),
            reason: "changed mind".into(),
        }
        .encode_to_vec(),
        "GetCustomerValue" => spb::GetCustomerValueRequest {
            customer_id: "victim".into(),
            as_of: Some(now()),
            intervals: false,
        }
        .encode_to_vec(),
        "BatchGetCustomerValues" => spb::BatchGetCustomerValuesRequest {
            customer_ids: vec!["victim".into()],
            as_of: Some(now()),
            intervals: false,
        }
        .encode_to_vec(),
        "StreamCustomerValues" => spb::StreamCustomerValuesRequest {
            filter: Some(spb::CustomerValueFilter {
                tiers: vec!["gold".into()],
                segments: vec![spb::RfmSegment::Champions as i32],
                quadrants: vec![spb::Quadrant::MutualValue as i32],
                min_predicted_clv: money(),
            }),
            chunk_size: 10,
            view: spb::CustomerValueView::Basic as i32,
            as_of: Some(now()),
            intervals: false,
        }
        .encode_to_vec(),
        "FitValueModel" => spb::FitValueModelRequest {
            calibration_end: Some(now()),
            time_unit: spb::TimeUnit::Day as i32,
            horizon_months: 12,
            horizon_days: 0,
            monthly_discount_rate: Some(0.01),
            activate: false,
            purchase_model: spb::PurchaseModel::BgNbd as i32,
            penalizer_coef: Some(0.01),
            holdout_end: None,
            choose_by_holdout: false,
        }
        .encode_to_vec(),
        "GetValueModel" => spb::GetValueModelRequest { version: 1 }.encode_to_vec(),
        "ActivateValueModel" => spb::ActivateValueModelRequest { version: 1 }.encode_to_vec(),
        "ListValueModels" => spb::ListValueModelsRequest {
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        "GetTierPolicy" => spb::GetTierPolicyRequest {}.encode_to_vec(),
        "UpdateTierPolicy" => {
            let absolute = pattern.contains("min_value");
            let top = spb::TierDefinition {
                name: "top".into(),
                min_value: absolute.then_some(1_000),
                share_percent: (!absolute).then_some(20.0),
            };
            let rest = spb::TierDefinition {
                name: "rest".into(),
                min_value: None,
                share_percent: None,
            };
            spb::UpdateTierPolicyRequest {
                policy: Some(spb::TierPolicy {
                    metric: spb::TierMetric::PredictedClv as i32,
                    mode: if absolute {
                        spb::TierMode::Absolute
                    } else {
                        spb::TierMode::Percentile
                    } as i32,
                    tiers: vec![top, rest],
                    ..Default::default()
                }),
                update_mask: None,
            }
            .encode_to_vec()
        }
        "ScoreProfile" => spb::ScoreProfileRequest {
            frequency: 3,
            recency_days: 10,
            age_days: 100,
            monetary_mean: money(),
            historical_revenue: Some(usd(3_000)),
            survey: Some(spb::SurveyAnswers {
                economic_benefit: Some(4),
                functional_benefit: Some(4),
                experiential_benefit: Some(3),
                symbolic_benefit: Some(3),
                price_cost: Some(2),
                time_cost: Some(2),
                effort_cost: Some(2),
                emotional_cost: Some(1),
                csat: Some(5),
                nps: Some(9),
            }),
        }
        .encode_to_vec(),
        "CreateSegment" => gpb::CreateSegmentRequest {
            segment: Some(segment(&unique("s"))),
        }
        .encode_to_vec(),
        "UpdateSegment" => gpb::UpdateSegmentRequest {
            segment: Some(segment("seg-upd")),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
            expected_revision: 0,
        }
        .encode_to_vec(),
        "GetSegment" | "DeleteSegment" | "CountSegmentMembers" => gpb::GetSegmentRequest {
            segment_id: if method == "DeleteSegment" {
                "nothing-here".into()
            } else {
                "seg".into()
            },
        }
        .encode_to_vec(),
        "ListSegments" => gpb::ListSegmentsRequest {
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        "PreviewSegment" => gpb::PreviewSegmentRequest {
            rule: "true".into(),
            sample_size: 5,
        }
        .encode_to_vec(),
        "CheckMembership" => gpb::CheckMembershipRequest {
            customer_id: "victim".into(),
            segment_id: "seg".into(),
            explain: true,
        }
        .encode_to_vec(),
        "ListCustomerSegments" => gpb::ListCustomerSegmentsRequest {
            customer_id: "victim".into(),
        }
        .encode_to_vec(),
        "ListSegmentMembers" => gpb::ListSegmentMembersRequest {
            segment_id: "seg".into(),
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        "WatchSegment" => gpb::WatchSegmentRequest {
            segment_id: "seg".into(),
            include_initial_members: false,
        }
        .encode_to_vec(),
        other => panic!("no valid request written for {other}: add one to `baseline`"),
    }
}

/// The customer, program, reward and segments the valid requests refer to.
async fn seed(app: &TestApp) {
    let mut customers = app.customers.clone();
    customers
        .upsert_customers(cpb::UpsertCustomersRequest {
            customers: vec![customer("victim")],
        })
        .await
        .expect("customer");
    app.record(vec![purchase("victim", "seed", ts(1, 0), "o-seed", 500)])
        .await
        .expect("events");
    let mut segments =
        gpb::segmentation_service_client::SegmentationServiceClient::new(app.channel.clone());
    for id in ["seg", "seg-upd"] {
        segments
            .create_segment(gpb::CreateSegmentRequest {
                segment: Some(segment(id)),
            })
            .await
            .expect("segment");
    }
    let mut loyalty = lpb::loyalty_service_client::LoyaltyServiceClient::new(app.channel.clone());
    for id in ["prog", "upd"] {
        loyalty
            .create_program(lpb::CreateProgramRequest {
                program: Some(program(id)),
            })
            .await
            .expect("program");
    }
    for id in ["rew", "rew-upd"] {
        loyalty
            .create_reward(lpb::CreateRewardRequest {
                reward: Some(reward(id)),
            })
            .await
            .expect("reward");
    }
    loyalty
        .enroll(lpb::EnrollRequest {
            program_id: "prog".into(),
            customer_id: "victim".into(),
        })
        .await
        .expect("enroll");
}

/// One method of the API.
pub(crate) struct Method {
    pub(crate) name: String,
    pub(crate) path: String,
    pub(crate) shape: Shape,
    input: MessageDescriptor,
}

/// Every method of every Patron service.
pub(crate) fn methods() -> Vec<Method> {
    let pool = DescriptorPool::decode(patron_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut out = Vec::new();
    for service in pool.services() {
        for m in service.methods() {
            let shape = match (m.is_client_streaming(), m.is_server_streaming()) {
                (false, false) => Shape::Unary,
                (true, false) => Shape::ClientStreaming,
                (false, true) => Shape::ServerStreaming,
                (true, true) => panic!("{}: bidirectional streams are not swept", m.name()),
            };
            out.push(Method {
                name: m.name().to_owned(),
                path: format!("/{}/{}", service.full_name(), m.name()),
                shape,
                input: m.input(),
            });
        }
    }
    out
}

/// What came back for one call.
struct Reply {
    status: Option<tonic::Status>,
    /// The fields named as bad: BadRequest's, or StreamEvents' rejections.
    named: Vec<String>,
}

async fn send(app: &TestApp, method: &Method, body: Vec<u8>) -> Reply {
    let result = call_raw(&app.channel, &method.path, method.shape, Bytes::from(body)).await;
    match result {
        Ok(bytes) if method.name == "StreamEvents" => {
            let response = cpb::StreamEventsResponse::decode(bytes).expect("a response");
            Reply {
                status: None,
                named: response
                    .rejections
                    .into_iter()
                    .map(|r| format!("events[0].{}", r.field))
                    .collect(),
            }
        }
        Ok(_) => Reply {
            status: None,
            named: vec![],
        },
        Err(status) => {
            let named = status
                .get_error_details()
                .bad_request()
                .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
                .unwrap_or_default();
            Reply {
                status: Some(status),
                named,
            }
        }
    }
}

/// Reads what an accepted extreme may have reached (balances, eligibility, scores): they must
/// not fail either.
async fn read_after(app: &TestApp, method: &str, n: usize) -> Result<(), tonic::Status> {
    let mut loyalty = lpb::loyalty_service_client::LoyaltyServiceClient::new(app.channel.clone());
    let mut scoring = spb::scoring_service_client::ScoringServiceClient::new(app.channel.clone());
    let reward_ids = match method {
        "CreateReward" => vec![format!("r{n}")],
        _ => vec!["rew".into(), "rew-upd".into()],
    };
    loyalty
        .check_eligibility(lpb::CheckEligibilityRequest {
            program_id: "prog".into(),
            customer_id: "victim".into(),
            reward_ids,
        })
        .await?;
    loyalty
        .get_membership(lpb::GetMembershipRequest {
            program_id: "prog".into(),
            customer_id: "victim".into(),
        })
        .await?;
    scoring
        .get_customer_value(spb::GetCustomerValueRequest {
            customer_id: "victim".into(),
            as_of: None,
            intervals: false,
        })
        .await?;
    app.customer("victim").await?;
    Ok(())
}

/// Whether a violation of `named` is about `field` (the field itself or a message holding it).
fn names(named: &str, field: &str) -> bool {
    field == named
        || (field.starts_with(named) && matches!(field.as_bytes()[named.len()], b'.' | b'['))
}

fn accepted(method: &str, pattern: &str) -> &'static [X] {
    ACCEPTED
        .iter()
        .find(|(m, p, _, _)| {
            *m == method && (pattern == *p || (p.ends_with('.') && pattern.starts_with(p)))
        })
        .map_or(&[], |(_, _, xs, _)| xs)
}

/// A reply reaches a client only if its metadata stays far below 8 KB.
fn small(status: &tonic::Status) -> bool {
    status.message().len() <= 1024 && status.details().len() <= 2048
}

async fn numeric_fields_refuse_their_extremes(backend: Backend) {
    let app = spawn_app(backend).await;
    seed(&app).await;
    let mut failures = Vec::new();
    let mut n = 0;
    let mut swept = 0;
    for method in methods() {
        let numeric = |f: &FieldDescriptor| extremes(&value_kind(f)).is_some();
        for path in paths(&method.input, &numeric) {
            let leaf = path.last().expect("a field");
            let kind = value_kind(leaf);
            let pattern = pattern(&path);
            let ok = accepted(&method.name, &pattern);
            for &x in extremes(&kind).expect("numeric") {
                n += 1;
                let mut request = DynamicMessage::decode(
                    method.input.clone(),
                    baseline(&method.name, &pattern, n).as_slice(),
                )
                .expect("a valid request");
                let field = set_path(&mut request, &path, Leaf::Value(value_of(&kind, x)));
                let reply = send(&app, &method, request.encode_to_vec()).await;
                swept += 1;
                let case = format!("{} {field} = {x:?}", method.name);
                let code = reply.status.as_ref().map_or(Code::Ok, tonic::Status::code);
                let named = reply.named.iter().any(|v| names(v, &field));
                if matches!(code, Code::Internal | Code::Unknown) {
                    failures.push(format!("{case}: {:?}", reply.status));
                } else if ok.contains(&x) {
                    if code == Code::InvalidArgument || named {
                        failures.push(format!(
                            "{case}: refused, expected accepted: {:?}",
                            reply.status
                        ));
                    } else if code == Code::Ok
                        && let Err(status) = read_after(&app, &method.name, n).await
                    {
                        failures.push(format!("{case}: accepted, then a read failed: {status:?}"));
                    }
                } else if method.name == "StreamEvents" {
                    if !named {
                        failures.push(format!("{case}: not rejected ({:?})", reply.named));
                    }
                } else if code != Code::InvalidArgument || !named {
                    failures.push(format!(
                        "{case}: expected INVALID_ARGUMENT naming it, got {code:?} {:?} {:?}",
                        reply.named,
                        reply.status.as_ref().map(tonic::Status::message)
                    ));
                }
                if let Some(status) = &reply.status
                    && !small(status)
                {
                    failures.push(format!("{case}: a {} byte message", status.message().len()));
                }
            }
        }
    }
    assert!(swept > 300, "only {swept} cases");
    assert!(
        failures.is_empty(),
        "{} of {swept} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// 12,000 bytes: past the 8 KB of metadata a standard client takes, if an error quoted it.
fn huge() -> String {
    "é".repeat(6_000)
}

async fn huge_strings_get_small_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    seed(&app).await;
    let mut failures = Vec::new();
    let mut swept = 0;
    let mut n = 10_000;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for method in methods() {
        let stringy = |f: &FieldDescriptor| {
            value_kind(f) == Kind::String
                || (f.is_map()
                    && f.kind()
                        .as_message()
                        .is_some_and(|e| e.map_entry_key_field().kind() == Kind::String))
        };
        for path in paths(&method.input, &stringy) {
            let leaf = path.last().expect("a field");
            let mut leaves = Vec::new();
            if value_kind(leaf) == Kind::String {
                leaves.push(Leaf::Value(Value::String(huge())));
            }
            if leaf.is_map() {
                leaves.push(Leaf::Key(huge()));
            }
            for value in leaves {
                n += 1;
                let pattern = pattern(&path);
                let mut request = DynamicMessage::decode(
                    method.input.clone(),
                    baseline(&method.name, &pattern, n).as_slice(),
                )
                .expect("a valid request");
                let field = set_path(&mut request, &path, value);
                let reply = send(&app, &method, request.encode_to_vec()).await;
                swept += 1;
                let case = format!("{} {}", method.name, patron_domain::quote(&field));
                let code = reply.status.as_ref().map_or(Code::Ok, tonic::Status::code);
                *codes.entry(format!("{code:?}")).or_default() += 1;
                if matches!(
                    code,
                    Code::Internal | Code::Unknown | Code::ResourceExhausted
                ) {
                    failures.push(format!("{case}: {:?}", reply.status.map(|s| s.code())));
                } else if let Some(status) = &reply.status
                    && !small(status)
                {
                    failures.push(format!(
                        "{case}: {code:?} with a {}-byte message and {} bytes of details",
                        status.message().len(),
                        status.details().len()
                    ));
                }
            }
        }
    }
    assert!(swept > 80, "only {swept} cases");
    assert!(
        failures.is_empty(),
        "{} of {swept} cases failed ({codes:?}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

crate::both_backends!(
    numeric_fields_refuse_their_extremes,
    huge_strings_get_small_errors,
);
