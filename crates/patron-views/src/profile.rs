//! One customer's value profile: RFM, CLV, perceived value, support burden, tier, quadrant, churn
//! risk and drivers, computed from a summary, the active model and the tier policy.

use patron_domain::clv::RfmScore;
use patron_domain::value::{
    self, PerceivedValue, Satisfaction, TierAssignment, TierMetric, TierMode, ValueQuadrant,
};
use patron_domain::{CustomerSummary, Timestamp};
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
