//! A profile's numbers ([`patron_views::profile::Scored`]) as the proto `CustomerValue`, and the
//! enums of a profile in proto.

use patron_domain::clv::RfmSegment;
use patron_domain::value::{
    self, ChurnLevel, NpsCategory, PerceivedValue, SupportLevel, TierMetric, ValueQuadrant,
};
use patron_domain::{Currency, CustomerSummary, Timestamp};
use patron_proto::common::v1::Money;
use patron_proto::scoring::v1 as pb;
use patron_views::engine::State;
use patron_views::profile::{Scored, Subject};

fn money(minor_units: i64, currency: Currency) -> Money {
    Money {
        currency_code: currency.as_str().to_owned(),
        minor_units,
    }
}

fn rounded_money(v: f64, currency: Currency) -> Option<Money> {
    value::clv_minor_units(v).map(|m| money(m, currency))
}

fn segment_to_proto(s: RfmSegment) -> pb::RfmSegment {
    match s {
        RfmSegment::Champions => pb::RfmSegment::Champions,
        RfmSegment::Loyal => pb::RfmSegment::Loyal,
        RfmSegment::PotentialLoyalist => pb::RfmSegment::PotentialLoyalist,
        RfmSegment::New => pb::RfmSegment::New,
        RfmSegment::Promising => pb::RfmSegment::Promising,
        RfmSegment::NeedAttention => pb::RfmSegment::NeedAttention,
        RfmSegment::AboutToSleep => pb::RfmSegment::AboutToSleep,
        RfmSegment::AtRisk => pb::RfmSegment::AtRisk,
        RfmSegment::CantLoseThem => pb::RfmSegment::CantLoseThem,
        RfmSegment::Hibernating => pb::RfmSegment::Hibernating,
        RfmSegment::Lost => pb::RfmSegment::Lost,
    }
}

/// The proto segment of a scored profile (unspecified without scores).
pub fn segment_of(scored: &Scored) -> pb::RfmSegment {
    scored.rfm_score.map_or(pb::RfmSegment::Unspecified, |s| {
        segment_to_proto(s.segment())
    })
}

/// The proto quadrant.
pub fn quadrant_to_proto(q: ValueQuadrant) -> pb::Quadrant {
    match q {
        ValueQuadrant::Unknown => pb::Quadrant::Unspecified,
        ValueQuadrant::MutualValue => pb::Quadrant::MutualValue,
        ValueQuadrant::AtRisk => pb::Quadrant::AtRisk,
        ValueQuadrant::UnderServed => pb::Quadrant::UnderServed,
        ValueQuadrant::LowEngagement => pb::Quadrant::LowEngagement,
    }
}

/// The proto tier metric.
pub fn metric_to_proto(m: TierMetric) -> pb::TierMetric {
    match m {
        TierMetric::PredictedClv => pb::TierMetric::PredictedClv,
        TierMetric::HistoricalRevenue => pb::TierMetric::HistoricalRevenue,
        TierMetric::Composite => pb::TierMetric::Composite,
    }
}

fn dimensions(p: &PerceivedValue, s: &CustomerSummary) -> Vec<pb::DimensionScore> {
    let benefit_dims = [
        pb::Dimension::Economic,
        pb::Dimension::Functional,
        pb::Dimension::Experiential,
        pb::Dimension::Symbolic,
    ];
    let cost_dims = [
        pb::Dimension::Price,
        pb::Dimension::Time,
        pb::Dimension::Effort,
        pb::Dimension::Emotional,
    ];
    let benefits = benefit_dims
        .into_iter()
        .zip(p.benefits)
        .zip(s.totals.benefits);
    let costs = cost_dims.into_iter().zip(p.costs).zip(s.totals.costs);
    benefits
        .chain(costs)
        .filter_map(|((dimension, average), total)| {
            average.map(|average| pb::DimensionScore {
                dimension: dimension.into(),
                average,
                answers: i64::from(total.count),
            })
        })
        .collect()
}

/// The full proto profile.
pub fn to_proto(
    subject: &Subject<'_>,
    as_of: Timestamp,
    state: &State,
    scored: &Scored,
    currency: Currency,
) -> pb::CustomerValue {
    to_proto_view(subject, as_of, state, scored, currency, true)
}

/// [`to_proto`], with the driver sentences only if `drivers` (StreamCustomerValues' BASIC view
/// leaves them out).
pub fn to_proto_view(
    subject: &Subject<'_>,
    as_of: Timestamp,
    state: &State,
    scored: &Scored,
    currency: Currency,
    drivers: bool,
) -> pb::CustomerValue {
    let s = subject.summary;
    let model = state.model.as_deref();
    let status = match (model, scored.rfm) {
        (None, _) => pb::ScoreStatus::NoModel,
        (Some(_), None) => pb::ScoreStatus::NoPurchases,
        (Some(_), Some(_)) => pb::ScoreStatus::Scored,
    };
    let rfm = scored.rfm.map(|c| {
        let (r, f, m) = scored
            .rfm_score
            .map_or((0, 0, 0), |sc| (sc.r(), sc.f(), sc.m()));
        pb::Rfm {
            days_since_last_purchase: c.days_since_last as i64,
            frequency: i64::from(c.frequency),
            recency_days: c.recency as i64,
            age_days: c.age as i64,
            monetary_total: Some(money(s.purchases.net_revenue, currency)),
            monetary_mean: rounded_money(c.monetary, currency),
            recency_score: i32::from(r),
            frequency_score: i32::from(f),
            monetary_score: i32::from(m),
            segment: segment_of(scored).into(),
        }
    });
    let p = scored.prediction;
    let (horizon_months, monthly_discount_rate) = model.map_or((0, 0.0), |m| {
        (
            i32::try_from(m.doc.horizon_months).unwrap_or(0),
            m.doc.monthly_discount_rate,
        )
    });
    let clv = pb::Clv {
        historical_revenue: Some(money(s.purchases.net_revenue, currency)),
        probability_alive: p.map(|p| p.probability_alive),
        expected_purchases: p.map(|p| p.expected_purchases),
        expected_order_value: p
            .and_then(|p| p.expected_order_value)
            .and_then(|v| rounded_money(v, currency)),
        predicted_clv: p
            .and_then(|p| p.predicted_clv)
            .and_then(|v| rounded_money(v, currency)),
        horizon_months,
        intervals: None,
        horizon_days: model
            .and_then(|m| m.doc.horizon_days)
            .map_or(0, |d| i32::try_from(d).unwrap_or(i32::MAX)),
        monthly_discount_rate,
        purchase_model: model
            .map_or(pb::PurchaseModel::Unspecified, |m| {
                crate::service::purchase_model_to_proto(m.purchase_model())
            })
            .into(),
    };
    let sat = &scored.satisfaction;
    let perceived = pb::PerceivedValue {
        benefit_score: scored.perceived.benefit_score,
        cost_score: scored.perceived.cost_score,
        value_index: scored.perceived.value_index,
        benefit_cost_ratio: scored.perceived.benefit_cost_ratio,
        dimensions: dimensions(&scored.perceived, s),
        csat: sat.csat,
        last_nps: sat.last_nps.map(i32::from),
        nps_category: match sat.nps_category {
            None => pb::NpsCategory::Unspecified,
            Some(NpsCategory::Promoter) => pb::NpsCategory::Promoter,
            Some(NpsCategory::Passive) => pb::NpsCategory::Passive,
            Some(NpsCategory::Detractor) => pb::NpsCategory::Detractor,
        }
        .into(),
        nps_score: sat.nps_score,
    };
    let sup = &scored.support;
    let support = pb::SupportBurden {
        contacts: sup.contacts,
        first_contact_resolution_rate: sup.first_contact_resolution_rate,
        contacts_per_90_days: sup.contacts_per_90_days,
        level: match sup.level {
            SupportLevel::None => pb::SupportBurdenLevel::None,
            SupportLevel::Low => pb::SupportBurdenLevel::Low,
            SupportLevel::Medium => pb::SupportBurdenLevel::Medium,
            SupportLevel::High => pb::SupportBurdenLevel::High,
        }
        .into(),
    };
    let tier = scored.tier.as_ref().map(|t| pb::Tier {
        name: t.name.clone(),
        rank: i32::try_from(t.rank).unwrap_or(i32::MAX),
        metric: metric_to_proto(state.policy.metric).into(),
        metric_value: t.metric_value,
        percentile: t.percentile,
    });
    let churn = pb::ChurnRisk {
        probability: scored.churn.risk,
        level: match scored.churn.level {
            ChurnLevel::Unknown => pb::ChurnRiskLevel::Unspecified,
            ChurnLevel::Low => pb::ChurnRiskLevel::Low,
            ChurnLevel::Medium => pb::ChurnRiskLevel::Medium,
            ChurnLevel::High => pb::ChurnRiskLevel::High,
        }
        .into(),
    };
    pb::CustomerValue {
        customer_id: subject.customer_id.to_owned(),
        as_of: Some(patron_grpc::time::to_proto(as_of)),
        model_version: model.map_or(0, |m| m.version),
        status: status.into(),
        rfm,
        clv: Some(clv),
        perceived_value: Some(perceived),
        support: Some(support),
        tier,
        quadrant: quadrant_to_proto(scored.quadrant).into(),
        churn_risk: Some(churn),
        drivers: if drivers {
            patron_views::drivers::explain(subject, as_of, state, scored, currency)
        } else {
            Vec::new()
        },
    }
}

/// A model's intervals ([`patron_views::model::Intervals`]) as proto; CLV ends rounded to minor
/// units.
pub fn intervals_to_proto(
    i: &patron_views::model::Intervals,
    currency: Currency,
) -> pb::ClvIntervals {
    pb::ClvIntervals {
        level: 0.9,
        probability_alive_lower: i.probability_alive.map(|p| p.0),
        probability_alive_upper: i.probability_alive.map(|p| p.1),
        expected_purchases_lower: i.expected_purchases.map(|e| e.0),
        expected_purchases_upper: i.expected_purchases.map(|e| e.1),
        predicted_clv_lower: i.predicted_clv.and_then(|c| rounded_money(c.0, currency)),
        predicted_clv_upper: i.predicted_clv.and_then(|c| rounded_money(c.1, currency)),
    }
}
