//! One customer's value profile: RFM, CLV, perceived value, support burden, tier, quadrant, churn
//! risk and drivers, computed from a summary, the active model and the tier policy.

use patron_domain::clv::{RfmScore, RfmSegment};
use patron_domain::value::{
    self, ChurnLevel, NpsCategory, PerceivedValue, Satisfaction, SupportLevel, TierAssignment,
    TierMetric, TierMode, ValueQuadrant,
};
use patron_domain::{Currency, CustomerSummary, Timestamp};
use patron_proto::common::v1::Money;
use patron_proto::scoring::v1 as pb;
use patron_store::OrderDay;

use crate::engine::State;
use crate::model::{ActiveModel, DayRfm, Prediction};

/// What a profile is computed from, besides the model and policy.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub customer_id: &'a str,
    pub summary: &'a CustomerSummary,
    /// The customer's active orders (for a model counting calendar weeks).
    pub orders: &'a [OrderDay],
    /// Start of the relationship, for tenure: sign-up, else first event, else creation.
    pub since: Option<Timestamp>,
}

/// The numbers behind a profile, before conversion to proto (also used by filters).
#[derive(Debug, Clone)]
pub struct Scored {
    pub rfm: Option<DayRfm>,
    pub prediction: Option<Prediction>,
    pub rfm_score: Option<RfmScore>,
    pub perceived: PerceivedValue,
    pub satisfaction: Satisfaction,
    pub support: value::SupportBurden,
    pub tier: Option<TierAssignment>,
    pub quadrant: ValueQuadrant,
    pub churn: value::ChurnRisk,
    pub clv_percentile: Option<f64>,
}

fn money(minor_units: i64, currency: Currency) -> Money {
    Money {
        currency_code: currency.to_string(),
        minor_units,
    }
}

fn rounded_money(v: f64, currency: Currency) -> Option<Money> {
    value::clv_minor_units(v).map(|m| money(m, currency))
}

/// RFM scores against the model's population: quintile lookups only, no prediction.
pub fn rfm_score(
    model: Option<&ActiveModel>,
    rfm: Option<&DayRfm>,
    revenue: i64,
) -> Option<RfmScore> {
    let (m, c) = (model?, rfm?);
    let d = &m.doc;
    let r = d.days_since_last_purchase.score(c.days_since_last, false)?;
    let f = d.purchase_days.score(f64::from(c.frequency) + 1.0, true)?;
    let mm = d.revenue.score(revenue as f64, true)?;
    RfmScore::new(r, f, mm).ok()
}

/// Computes the numbers of a profile.
pub fn compute(subject: &Subject<'_>, as_of: Timestamp, state: &State) -> Scored {
    let s = subject.summary;
    let model: Option<&ActiveModel> = state.model.as_deref();
    let rfm = DayRfm::for_model(s, subject.orders, as_of, model);
    let prediction = match (model, &rfm) {
        (Some(m), Some(c)) => m.predict(c),
        _ => None,
    };
    let revenue = s.purchases.net_revenue;
    let rfm_score = rfm_score(model, rfm.as_ref(), revenue);
    let perceived = PerceivedValue::from_summary(s);
    let satisfaction = Satisfaction::from_totals(&s.totals, s.totals.last_nps);
    let tenure_days = subject
        .since
        .map(|t| (as_of.as_micros() - t.as_micros()) as f64 / 86_400_000_000.0)
        .unwrap_or(0.0);
    let support = value::support_burden(
        s.totals.support_count,
        s.totals.support_first_contact_resolved,
        tenure_days,
    );
    let clv = prediction.and_then(|p| p.predicted_clv);
    let clv_percentile = model
        .zip(clv)
        .and_then(|(m, v)| m.doc.predicted_clv.percentile(v));
    let revenue_percentile = model.and_then(|m| m.doc.revenue.percentile(revenue as f64));
    let value_index_percentile = model
        .zip(perceived.value_index)
        .and_then(|(m, v)| m.doc.value_index.percentile(v));
    let policy = &state.policy;
    let (metric_value, percentile) = match policy.metric {
        TierMetric::PredictedClv => (clv.and_then(value::clv_minor_units), clv_percentile),
        TierMetric::HistoricalRevenue => (Some(revenue), revenue_percentile),
        TierMetric::Composite => {
            let score =
                value::composite_score(clv_percentile, revenue_percentile, value_index_percentile);
            (score.and_then(value::composite_basis_points), score)
        }
    };
    let decidable = match policy.mode {
        TierMode::Absolute => metric_value.is_some(),
        TierMode::Percentile => percentile.is_some(),
    };
    let tier = if decidable {
        value::assign_tier(policy, metric_value, percentile)
    } else {
        None
    };
    let business =
        value::business_value_percentile(policy.metric, clv_percentile, revenue_percentile);
    let quadrant = value::value_quadrant(business, perceived.value_index);
    let churn = match (model, rfm) {
        (Some(m), Some(c)) => m.churn_risk(&c, prediction.map(|p| p.probability_alive)),
        _ => value::churn_risk(None),
    };
    Scored {
        rfm,
        prediction,
        rfm_score,
        perceived,
        satisfaction,
        support,
        tier,
        quadrant,
        churn,
        clv_percentile,
    }
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
                answers: total.count,
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
            crate::drivers::explain(subject, as_of, state, scored, currency)
        } else {
            Vec::new()
        },
    }
}
