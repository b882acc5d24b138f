//! The sentences behind a profile. With a tier, `patron_domain::value::drivers` writes them;
//! without one (no model to predict with, or no purchases) the profile says so plainly.

use patron_domain::value::{self, DriverInput, Horizon};
use patron_domain::{Currency, Timestamp};

use crate::engine::State;
use crate::profile::{Scored, Subject};

/// Two to five sentences a support agent can read out.
pub fn explain(
    subject: &Subject<'_>,
    _as_of: Timestamp,
    state: &State,
    scored: &Scored,
    currency: Currency,
) -> Vec<String> {
    let s = subject.summary;
    let model = state.model.as_deref();
    if let Some(tier) = &scored.tier {
        return value::drivers(&DriverInput {
            currency,
            policy: &state.policy,
            tier,
            quadrant: scored.quadrant,
            perceived: scored.perceived,
            satisfaction: scored.satisfaction,
            support: scored.support,
            p_alive: scored.prediction.map(|p| p.probability_alive),
            p_alive_uninformative: match (model, scored.rfm) {
                (Some(m), Some(c)) => !m.p_alive_informative(&c),
                _ => false,
            },
            predicted_clv: scored.prediction.and_then(|p| p.predicted_clv),
            clv_horizon: model.map_or(Horizon::Months(12), |m| match m.doc.horizon_days {
                Some(d) => Horizon::Days(d),
                None => Horizon::Months(m.doc.horizon_months),
            }),
            historical_revenue: s.purchases.net_revenue,
            purchase_days: s.purchases.purchase_days,
            days_since_last_purchase: scored.rfm.map(|c| c.days_since_last as i64),
        });
    }
    let mut out = Vec::new();
    if model.is_none() {
        out.push(
            "No value model has been fitted yet, so there is no prediction or tier.".to_owned(),
        );
    }
    match scored.rfm {
        None => out.push("Has not bought anything yet.".to_owned()),
        Some(c) => out.push(format!(
            "Has spent {} over {} purchase day{}; last purchase {} day{} ago.",
            value::format_money(s.purchases.net_revenue, currency),
            s.purchases.purchase_days,
            if s.purchases.purchase_days == 1 {
                ""
            } else {
                "s"
            },
            c.days_since_last as i64,
            if c.days_since_last as i64 == 1 {
                ""
            } else {
                "s"
            },
        )),
    }
    if let (Some(b), Some(c)) = (scored.perceived.benefit_score, scored.perceived.cost_score) {
        out.push(format!(
            "Rates the benefits {b:.1}/5 against costs of {c:.1}/5."
        ));
    }
    if scored.support.contacts > 0 {
        out.push(format!(
            "Contacted support {} time{}.",
            scored.support.contacts,
            if scored.support.contacts == 1 {
                ""
            } else {
                "s"
            }
        ));
    }
    out.truncate(value::MAX_DRIVERS);
    out
}
