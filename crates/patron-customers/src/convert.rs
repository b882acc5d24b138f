//! Proto ⇄ domain conversion for customers and events.
//!
//! Proto → domain destructures each message exhaustively, so a new proto field fails the build
//! until it is handled here, and records one violation per bad field under its request path.

use patron_domain::customer::{AttributeError, MAX_ATTRIBUTES, parse_country};
use patron_domain::event::{
    MAX_CHANNEL_CHARS, check_event_name, check_item_count, check_label, check_rating,
};
use patron_domain::money::{MoneyError, check_event_amount};
use patron_domain::time::DateError;
use patron_domain::{
    AttributeKey, AttributeValue, Attributes, Currency, Customer, CustomerId, CustomerProfile,
    CustomerSummary, Date, Engagement, Event, EventData, EventId, EventKind, Gender, OrderId,
    Purchase, Refund, SupportInteraction, Survey, Timestamp, Violations,
};
use patron_grpc::time::{day_to_proto, from_proto, required, to_proto};
use patron_proto::common::v1 as common;
use patron_proto::customers::v1 as pb;
use patron_store::{CustomerRecord, StoredEvent};

/// What validation needs to know beyond the request: the clock and the books' currency.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now: Timestamp,
    pub currency: Currency,
}

/// A proto date to a domain date.
pub fn date_from_proto(d: &common::Date) -> Result<Date, DateError> {
    let common::Date { year, month, day } = *d;
    Date::new(year, month, day)
}

fn date_to_proto(d: Date) -> common::Date {
    common::Date {
        year: d.year(),
        month: i32::from(d.month()),
        day: i32::from(d.day()),
    }
}

fn attribute_from_proto(v: &common::AttributeValue) -> Result<AttributeValue, String> {
    use common::attribute_value::Kind;
    let value = match &v.kind {
        None => return Err(AttributeError::MissingValue.to_string()),
        Some(Kind::StringValue(s)) => AttributeValue::String(s.clone()),
        Some(Kind::IntValue(i)) => AttributeValue::Int(*i),
        Some(Kind::DoubleValue(d)) => AttributeValue::Double(*d),
        Some(Kind::BoolValue(b)) => AttributeValue::Bool(*b),
        Some(Kind::DateValue(d)) => {
            AttributeValue::Date(date_from_proto(d).map_err(|e| e.to_string())?)
        }
    };
    value.check().map_err(|e| e.to_string())
}

fn attribute_to_proto(v: &AttributeValue) -> common::AttributeValue {
    use common::attribute_value::Kind;
    let kind = match v {
        AttributeValue::String(s) => Kind::StringValue(s.clone()),
        AttributeValue::Int(i) => Kind::IntValue(*i),
        AttributeValue::Double(d) => Kind::DoubleValue(*d),
        AttributeValue::Bool(b) => Kind::BoolValue(*b),
        AttributeValue::Date(d) => Kind::DateValue(date_to_proto(*d)),
    };
    common::AttributeValue { kind: Some(kind) }
}

/// Converts a map of typed attributes, reporting bad keys and values under `path`.
pub fn attributes_from_proto(
    map: &std::collections::HashMap<String, common::AttributeValue>,
    path: &str,
    v: &mut Violations,
) -> Attributes {
    let mut out = Attributes::new();
    if map.len() > MAX_ATTRIBUTES {
        v.add(path, AttributeError::TooMany.to_string());
        return out;
    }
    // Sorted so violations come out in a stable order.
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (key, value) in entries {
        let field = format!("{path}[{}]", patron_domain::quote(key));
        let key = v.check(&field, AttributeKey::parse(key.clone()));
        let value = v.check(&field, attribute_from_proto(value));
        if let (Some(k), Some(val)) = (key, value) {
            out.insert(k, val);
        }
    }
    out
}

fn attributes_to_proto(
    a: &Attributes,
) -> std::collections::HashMap<String, common::AttributeValue> {
    a.iter()
        .map(|(k, v)| (k.as_str().to_owned(), attribute_to_proto(v)))
        .collect()
}

fn gender_from_proto(g: i32) -> Result<Gender, String> {
    Ok(match pb::Gender::try_from(g) {
        Ok(pb::Gender::Unspecified) => Gender::Unspecified,
        Ok(pb::Gender::Female) => Gender::Female,
        Ok(pb::Gender::Male) => Gender::Male,
        Ok(pb::Gender::Other) => Gender::Other,
        Ok(pb::Gender::Undisclosed) => Gender::Undisclosed,
        Err(_) => return Err(format!("{g} is not a Gender value")),
    })
}

fn gender_to_proto(g: Gender) -> pb::Gender {
    match g {
        Gender::Unspecified => pb::Gender::Unspecified,
        Gender::Female => pb::Gender::Female,
        Gender::Male => pb::Gender::Male,
        Gender::Other => pb::Gender::Other,
        Gender::Undisclosed => pb::Gender::Undisclosed,
    }
}

/// Validates a customer id field.
pub fn customer_id(s: &str, field: &str, v: &mut Violations) -> Option<CustomerId> {
    v.check(field, CustomerId::parse(s))
}

/// Converts a customer sent for upsert. Output-only fields are ignored.
pub fn customer_from_proto(
    c: &pb::Customer,
    path: &str,
    ctx: Context,
    v: &mut Violations,
) -> Option<Customer> {
    let pb::Customer {
        customer_id: id,
        birth_date,
        gender,
        country,
        signed_up_at,
        attributes,
        create_time: _,
        update_time: _,
        summary: _,
    } = c;
    let id = customer_id(id, &format!("{path}.customer_id"), v);
    let today = ctx.now.day();
    let birth_date = birth_date.as_ref().and_then(|d| {
        let field = format!("{path}.birth_date");
        let date = v.check(&field, date_from_proto(d))?;
        if date.to_day() > today {
            v.add(field, DateError::InFuture.to_string());
            return None;
        }
        Some(date)
    });
    let gender = v.check(&format!("{path}.gender"), gender_from_proto(*gender));
    let country = v.check(&format!("{path}.country"), parse_country(country));
    let signed_up_at = signed_up_at.as_ref().and_then(|t| {
        v.check(
            &format!("{path}.signed_up_at"),
            from_proto(t).and_then(|t| t.check_not_after(ctx.now)),
        )
    });
    let attributes = attributes_from_proto(attributes, &format!("{path}.attributes"), v);
    Some(Customer {
        customer_id: id?,
        profile: CustomerProfile {
            birth_date,
            gender: gender?,
            country: country?,
            signed_up_at,
            attributes,
        },
    })
}

fn money(m: Option<&common::Money>, path: &str, ctx: Context, v: &mut Violations) -> Option<i64> {
    let Some(common::Money {
        currency_code,
        minor_units,
    }) = m
    else {
        v.add(path, "is required");
        return None;
    };
    let currency = match Currency::parse(currency_code) {
        Ok(c) if c == ctx.currency => Some(c),
        Ok(_) => {
            v.add(
                format!("{path}.currency_code"),
                MoneyError::WrongCurrency {
                    expected: ctx.currency,
                }
                .to_string(),
            );
            None
        }
        Err(e) => {
            v.add(format!("{path}.currency_code"), e.to_string());
            None
        }
    };
    let amount = v.check(
        &format!("{path}.minor_units"),
        check_event_amount(*minor_units),
    );
    currency.and(amount)
}

fn rating(value: Option<i32>, min: u8, max: u8, field: String, v: &mut Violations) -> Option<u8> {
    value.and_then(|r| v.check(&field, check_rating(r, min, max)))
}

/// Converts one event. `path` is its position in the request, e.g. `events[3]`.
pub fn event_from_proto(
    e: &pb::Event,
    path: &str,
    ctx: Context,
    v: &mut Violations,
) -> Option<Event> {
    use pb::event::Kind;
    let pb::Event {
        event_id,
        customer_id: cid,
        occurred_at,
        kind,
        record_time: _,
    } = e;
    let before = v.len();
    let event_id = v.check(
        &format!("{path}.event_id"),
        EventId::parse(event_id.clone()),
    );
    let customer = customer_id(cid, &format!("{path}.customer_id"), v);
    let occurred_at = v.check(
        &format!("{path}.occurred_at"),
        required(occurred_at.as_ref()).and_then(|t| t.check_event_time(ctx.now)),
    );
    let data = match kind {
        None => {
            v.add(
                format!("{path}.kind"),
                "exactly one of purchase, refund, engagement, support_interaction, survey, custom must be set",
            );
            None
        }
        Some(Kind::Purchase(p)) => {
            let pb::Purchase {
                order_id,
                amount,
                item_count,
                channel,
            } = p;
            let p_path = format!("{path}.purchase");
            let order_id = if order_id.is_empty() {
                event_id
                    .as_ref()
                    .and_then(|id| OrderId::parse(id.as_str()).ok())
            } else {
                v.check(
                    &format!("{p_path}.order_id"),
                    OrderId::parse(order_id.clone()),
                )
            };
            let amount = money(amount.as_ref(), &format!("{p_path}.amount"), ctx, v);
            let item_count = v.check(
                &format!("{p_path}.item_count"),
                check_item_count(*item_count),
            );
            let channel = v.check(
                &format!("{p_path}.channel"),
                check_label(channel, MAX_CHANNEL_CHARS, false),
            );
            match (order_id, amount, item_count, channel) {
                (Some(order_id), Some(amount), Some(item_count), Some(channel)) => {
                    Some(EventData::Purchase(Purchase {
                        order_id,
                        amount,
                        item_count,
                        channel,
                    }))
                }
                _ => None,
            }
        }
        Some(Kind::Refund(r)) => {
            let pb::Refund { order_id, amount } = r;
            let r_path = format!("{path}.refund");
            let order_id = v.check(
                &format!("{r_path}.order_id"),
                OrderId::parse(order_id.clone()),
            );
            let amount = money(amount.as_ref(), &format!("{r_path}.amount"), ctx, v);
            Some(EventData::Refund(Refund {
                order_id: order_id?,
                amount: amount?,
            }))
        }
        Some(Kind::Engagement(g)) => {
            let pb::Engagement { activity } = g;
            let activity = v.check(
                &format!("{path}.engagement.activity"),
                check_label(activity, 128, true),
            );
            Some(EventData::Engagement(Engagement {
                activity: activity?,
            }))
        }
        Some(Kind::SupportInteraction(s)) => {
            let pb::SupportInteraction {
                channel,
                resolved_first_contact,
                csat,
            } = s;
            let s_path = format!("{path}.support_interaction");
            let channel = v.check(
                &format!("{s_path}.channel"),
                check_label(channel, MAX_CHANNEL_CHARS, false),
            );
            let csat = rating(*csat, 1, 5, format!("{s_path}.csat"), v);
            Some(EventData::SupportInteraction(SupportInteraction {
                channel: channel?,
                resolved_first_contact: *resolved_first_contact,
                csat,
            }))
        }
        Some(Kind::Survey(s)) => {
            let pb::Survey {
                economic_benefit,
                functional_benefit,
                experiential_benefit,
                symbolic_benefit,
                price_cost,
                time_cost,
                effort_cost,
                emotional_cost,
                csat,
                nps,
            } = *s;
            let sp = format!("{path}.survey");
            let mut r = |value, name: &str| rating(value, 1, 5, format!("{sp}.{name}"), v);
            let survey = Survey {
                benefits: [
                    r(economic_benefit, "economic_benefit"),
                    r(functional_benefit, "functional_benefit"),
                    r(experiential_benefit, "experiential_benefit"),
                    r(symbolic_benefit, "symbolic_benefit"),
                ],
                costs: [
                    r(price_cost, "price_cost"),
                    r(time_cost, "time_cost"),
                    r(effort_cost, "effort_cost"),
                    r(emotional_cost, "emotional_cost"),
                ],
                csat: r(csat, "csat"),
                nps: rating(nps, 0, 10, format!("{sp}.nps"), v),
            };
            let given = [
                economic_benefit,
                functional_benefit,
                experiential_benefit,
                symbolic_benefit,
                price_cost,
                time_cost,
                effort_cost,
                emotional_cost,
                csat,
                nps,
            ];
            if given.iter().all(Option::is_none) {
                v.add(sp, "at least one rating, csat or nps must be given");
            }
            Some(EventData::Survey(survey))
        }
        Some(Kind::Custom(c)) => {
            let pb::CustomEvent { name, properties } = c;
            let cp = format!("{path}.custom");
            let name = v.check(&format!("{cp}.name"), check_event_name(name));
            let properties = attributes_from_proto(properties, &format!("{cp}.properties"), v);
            Some(EventData::Custom(patron_domain::CustomEvent {
                name: name?,
                properties,
            }))
        }
    };
    if v.len() != before {
        return None;
    }
    Some(Event {
        customer_id: customer?,
        event_id: event_id?,
        occurred_at: occurred_at?,
        data: data?,
    })
}

fn money_to_proto(minor_units: i64, currency: Currency) -> common::Money {
    common::Money {
        currency_code: currency.to_string(),
        minor_units,
    }
}

fn rating_total(t: patron_domain::RatingTotal) -> pb::RatingTotal {
    pb::RatingTotal {
        sum: i64::from(t.sum),
        count: i64::from(t.count),
    }
}

/// A stored summary to proto.
pub fn summary_to_proto(s: &CustomerSummary, currency: Currency) -> pb::CustomerSummary {
    let t = &s.totals;
    let p = &s.purchases;
    let [economic, functional, experiential, symbolic] = t.benefits.map(rating_total);
    let [price, time, effort, emotional] = t.costs.map(rating_total);
    pb::CustomerSummary {
        event_count: t.event_count,
        order_count: p.order_count,
        purchase_days: p.purchase_days,
        frequency: s.frequency(),
        first_purchase_day: p.first_purchase_day.map(day_to_proto),
        last_purchase_day: p.last_purchase_day.map(day_to_proto),
        recency_days: s.recency_days(),
        net_revenue: Some(money_to_proto(p.net_revenue, currency)),
        refunded: Some(money_to_proto(p.refunded, currency)),
        first_day_revenue: Some(money_to_proto(p.first_day_revenue, currency)),
        engagement_count: t.engagement_count,
        last_engagement_at: t.last_engagement_at.map(to_proto),
        support_count: t.support_count,
        support_first_contact_resolved: t.support_first_contact_resolved,
        survey_count: t.survey_count,
        csat_count: t.csat_count,
        csat_sum: t.csat_sum,
        nps_promoters: t.nps_promoters,
        nps_passives: t.nps_passives,
        nps_detractors: t.nps_detractors,
        benefits: Some(pb::DimensionTotals {
            economic: Some(economic),
            functional: Some(functional),
            experiential: Some(experiential),
            symbolic: Some(symbolic),
        }),
        costs: Some(pb::CostTotals {
            price: Some(price),
            time: Some(time),
            effort: Some(effort),
            emotional: Some(emotional),
        }),
        custom_event_count: t.custom_event_count,
        first_event_at: t.first_event_at.map(to_proto),
        last_event_at: t.last_event_at.map(to_proto),
    }
}

/// A stored customer to proto.
pub fn record_to_proto(r: &CustomerRecord, currency: Currency) -> pb::Customer {
    let p = &r.customer.profile;
    pb::Customer {
        customer_id: r.customer.customer_id.to_string(),
        birth_date: p.birth_date.map(date_to_proto),
        gender: gender_to_proto(p.gender).into(),
        country: p.country.clone().unwrap_or_default(),
        signed_up_at: p.signed_up_at.map(to_proto),
        attributes: attributes_to_proto(&p.attributes),
        create_time: Some(to_proto(r.create_time)),
        update_time: r.update_time.map(to_proto),
        summary: Some(summary_to_proto(&r.summary, currency)),
    }
}

/// A stored event to proto.
pub fn event_to_proto(s: &StoredEvent, currency: Currency) -> pb::Event {
    use pb::event::Kind;
    let e = &s.event;
    let kind = match &e.data {
        EventData::Purchase(p) => Kind::Purchase(pb::Purchase {
            order_id: p.order_id.to_string(),
            amount: Some(money_to_proto(p.amount, currency)),
            item_count: p.item_count,
            channel: p.channel.clone(),
        }),
        EventData::Refund(r) => Kind::Refund(pb::Refund {
            order_id: r.order_id.to_string(),
            amount: Some(money_to_proto(r.amount, currency)),
        }),
        EventData::Engagement(g) => Kind::Engagement(pb::Engagement {
            activity: g.activity.clone(),
        }),
        EventData::SupportInteraction(s) => Kind::SupportInteraction(pb::SupportInteraction {
            channel: s.channel.clone(),
            resolved_first_contact: s.resolved_first_contact,
            csat: s.csat.map(i32::from),
        }),
        EventData::Survey(s) => {
            let [economic, functional, experiential, symbolic] =
                s.benefits.map(|r| r.map(i32::from));
            let [price, time, effort, emotional] = s.costs.map(|r| r.map(i32::from));
            Kind::Survey(pb::Survey {
                economic_benefit: economic,
                functional_benefit: functional,
                experiential_benefit: experiential,
                symbolic_benefit: symbolic,
                price_cost: price,
                time_cost: time,
                effort_cost: effort,
                emotional_cost: emotional,
                csat: s.csat.map(i32::from),
                nps: s.nps.map(i32::from),
            })
        }
        EventData::Custom(c) => Kind::Custom(pb::CustomEvent {
            name: c.name.clone(),
            properties: attributes_to_proto(&c.properties),
        }),
    };
    pb::Event {
        event_id: e.event_id.to_string(),
        customer_id: e.customer_id.to_string(),
        occurred_at: Some(to_proto(e.occurred_at)),
        kind: Some(kind),
        record_time: Some(to_proto(s.recorded_at)),
    }
}

/// A proto event kind filter to domain kinds.
pub fn kind_from_proto(k: i32) -> Result<Option<EventKind>, String> {
    Ok(match pb::EventKind::try_from(k) {
        Ok(pb::EventKind::Unspecified) => None,
        Ok(pb::EventKind::Purchase) => Some(EventKind::Purchase),
        Ok(pb::EventKind::Refund) => Some(EventKind::Refund),
        Ok(pb::EventKind::Engagement) => Some(EventKind::Engagement),
        Ok(pb::EventKind::SupportInteraction) => Some(EventKind::SupportInteraction),
        Ok(pb::EventKind::Survey) => Some(EventKind::Survey),
        Ok(pb::EventKind::Custom) => Some(EventKind::Custom),
        Err(_) => return Err(format!("{k} is not an EventKind value")),
    })
}
