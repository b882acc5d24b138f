//! Value *for* the customer, the value balance and value tiers: perceived value, CSAT and NPS,
//! support burden, churn risk, tier policies and percentiles, the value-balance quadrant, and the
//! plain-English drivers that explain a customer's tier.
//!
//! Every function here is pure and total: no input panics — NaN, infinities, empty populations,
//! zero or negative counts (a corrupt row) all have a documented answer, usually "unknown"
//! (`None`). Money is `i64` minor units of the deployment's currency; `f64` is used only for model
//! outputs (predicted CLV, P(alive)), averages of ratings, ratios, indices and percentiles.
//!
//! This page is the user documentation of every formula, range and cut point; the proto comments
//! repeat it.
//!
//! # Perceived value ([`PerceivedValue`])
//!
//! *Value for the customer* is total benefits minus total costs. Survey answers rate four benefit
//! dimensions — economic (money gained, not wasted), functional (task easily done), experiential
//! (pleasant interactions), symbolic (status, belonging) — and four cost dimensions — price, time,
//! effort, emotional — each from 1 (least) to 5 (most). A survey may leave any dimension out.
//!
//! ```text
//! dimension average  = sum of the dimension's answers / number of answers      in [1, 5]
//!                      (None when the dimension has no answer)
//! benefit score  B   = mean of the available benefit-dimension averages         in [1, 5]
//! cost score     C   = mean of the available cost-dimension averages            in [1, 5]
//!                      (None when no dimension of that side has an answer)
//! value index        = (B − C + 4) / 8 × 100                                    in [0, 100]
//! benefit/cost ratio = B / C                                                    in [0.2, 5]
//! ```
//!
//! * Each dimension weighs the same in its side's score, however many answers it has: a customer
//!   who answered "price" ten times and "time" once has a cost score of the two averages' mean.
//! * Value index: 0 = every benefit rated 1 and every cost rated 5; 50 = benefits and costs
//!   balanced (B = C); 100 = every benefit rated 5 and every cost rated 1.
//! * Ratio: 1 = balanced; above 1 the customer gets more than it costs them.
//! * The index and the ratio need **both** sides. When only benefits or only costs were ever
//!   rated, the available score is reported and the index and ratio are `None`: value is the
//!   *difference* of the two, and inventing the missing side (say, a neutral 3) would put the
//!   customer in a value-balance quadrant on half the evidence.
//! * Averages are clamped to [1, 5] so that corrupt totals cannot push the index out of range;
//!   validated survey data never needs it.
//!
//! # CSAT and NPS ([`Satisfaction`])
//!
//! ```text
//! CSAT            = csat_sum / csat_count                    in [1, 5]   (None when no answer)
//! NPS category    of the customer's most recent NPS answer (0–10):
//!                   Promoter 9–10, Passive 7–8, Detractor 0–6           (None when no answer)
//! customer NPS    = (promoters − detractors) / (promoters + passives + detractors) × 100
//!                                                             in [−100, 100] (None when no answer)
//! ```
//!
//! The customer NPS applies the classic Net Promoter formula to one customer's own answers: +100
//! when every answer was 9 or 10, −100 when every answer was 0–6. An answer above 10 is treated as
//! missing.
//!
//! # Support burden ([`SupportBurden`])
//!
//! From the number of support contacts, how many of them were resolved on first contact (FCR) and
//! the customer's tenure in days (a tenure under 1 day, or NaN, counts as 1 day):
//!
//! ```text
//! contacts per 90 days = contacts / max(tenure_days, 1) × 90
//! FCR rate             = first-contact resolved / contacts        in [0, 1] (None with 0 contacts)
//! ```
//!
//! The level is the first that matches:
//!
//! | level    | rule                                                                  |
//! |----------|-----------------------------------------------------------------------|
//! | `None`   | no contact                                                            |
//! | `High`   | ≥ 3 contacts **and** (> 2 contacts per 90 days **or** FCR rate < 50 %) |
//! | `Medium` | ≥ 2 contacts **and** (> 1 contact per 90 days **or** FCR rate < 75 %)  |
//! | `Low`    | otherwise (at least one contact)                                      |
//!
//! The minimum contact counts keep a new customer's single call (90 contacts per 90 days after one
//! day!) from reading as a heavy burden: one contact is always `Low`, and `High` needs three. The
//! rules are nested, so more contacts or a lower FCR rate never lower the level.
//!
//! # Churn risk ([`ChurnRisk`])
//!
//! ```text
//! risk = 1 − P(alive)                        in [0, 1]
//! Low    risk < 0.3    (P(alive) > 0.7)
//! Medium risk < 0.6    (P(alive) > 0.4)
//! High   risk ≥ 0.6    (P(alive) ≤ 0.4)
//! Unknown              no value model, or P(alive) NaN
//! ```
//!
//! P(alive) outside [0, 1] is clamped into it.
//!
//! # Value tiers ([`TierPolicy`], [`assign_tier`])
//!
//! A policy names 1 to 10 ordered tiers, best first (rank 1 = best), over one metric
//! ([`TierMetric`]):
//!
//! * `PredictedClv` — predicted CLV over the model's horizon, in minor units rounded half away
//!   from zero to an integer ([`clv_minor_units`]);
//! * `HistoricalRevenue` — net revenue to date (purchases minus refunds), in minor units;
//! * `Composite` — a score in [0, 1] from the customer's percentiles ([`composite_score`]):
//!
//!   ```text
//!   composite = (0.5 × CLV percentile + 0.3 × revenue percentile + 0.2 × value-index percentile)
//!               / (sum of the weights of the available percentiles)
//!   ```
//!
//!   A missing component (no value model, no survey answers) is left out and the remaining
//!   weights are rescaled, so the score stays in [0, 1]; with no component at all it is `None`.
//!   As a tier metric value it is expressed in **basis points**, 0 to 10,000
//!   ([`composite_basis_points`]): 7,500 = a composite of 0.75.
//!
//! and one mode ([`TierMode`]):
//!
//! * **Absolute**: every tier but the last has a `min_value` (in the metric's integer unit); the
//!   customer gets the first tier whose `min_value` ≤ the metric value. The thresholds must
//!   strictly decrease down the list. The last tier has no `min_value` and takes everyone else,
//!   including customers whose metric is unknown.
//! * **Percentile**: every tier but the last has a `share_percent` of the population, in
//!   (0, 100]; the shares are counted from the top and sum to at most 100. With `S(k)` the sum of
//!   the first `k` shares, the customer gets the first tier `k` with
//!
//!   ```text
//!   percentile ≥ 1 − S(k) / 100          (within 1e-9, to absorb rounding)
//!   ```
//!
//!   and the last tier otherwise ("the rest"), including when the percentile is unknown (no
//!   metric value, or an empty population). For `n` customers with distinct values the first `k`
//!   tiers hold `round(n × S(k) / 100)` customers, halves rounded up: with 100 customers, "top
//!   2 %" is exactly the best 2. Equal metric values always get the same tier.
//!
//! The default policy ([`TierPolicy::default`]) is percentile on predicted CLV: platinum 2 %,
//! gold the next 8 %, silver the next 20 %, bronze the rest.
//!
//! [`TierPolicy::validate`] reports every problem with its field path: no tiers or more than 10
//! (`tiers`); a name that is empty or blank, longer than 32 characters, contains control
//! characters, starts or ends with whitespace, or repeats an earlier name ignoring case
//! (`tiers[i].name`); in absolute mode a missing, negative or not strictly decreasing
//! `min_value` (composite thresholds also at most 10,000), a `min_value` on the last tier, or any
//! `share_percent` (`tiers[i].min_value`, `tiers[i].share_percent`); in percentile mode a missing,
//! non-finite or non-positive `share_percent`, one on the last tier, shares summing over 100, or
//! any `min_value`.
//!
//! # Percentiles ([`Percentiles`])
//!
//! A customer's percentile in a population of `n` metric values is the mid-rank fraction
//!
//! ```text
//! percentile = (number of values strictly below + number of values equal / 2) / n
//! ```
//!
//! the convention RFM scores use too. For a customer inside the population it lies in
//! `[0.5 / n, 1 − 0.5 / n]`; equal values get equal percentiles; it is `None` for an empty
//! population or a NaN value. NaN values are left out of the population. Look-ups take
//! O(log n) (two binary searches over a sorted copy).
//!
//! # Value balance ([`ValueQuadrant`])
//!
//! The two views side by side. *Value of the customer* (to the business) is **high** when the
//! customer's business percentile is ≥ 0.5 — the percentile of predicted CLV, or of historical
//! revenue when the tier metric is revenue or no value model is active
//! ([`business_value_percentile`]). *Value for the customer* is **high** when the value index is
//! ≥ 50 (benefits at least equal to costs).
//!
//! | quadrant        | to the business | for the customer | meaning                                         |
//! |-----------------|-----------------|------------------|-------------------------------------------------|
//! | `MutualValue`   | high            | high             | value flows both ways: keep it so               |
//! | `AtRisk`        | high            | low              | being extracted from, and at risk of leaving    |
//! | `UnderServed`   | low             | high             | gets much value but brings little: under-served commercially |
//! | `LowEngagement` | low             | low              | little value either way                          |
//! | `Unknown`       | —               | —                | no survey answers on both sides, or no percentile |
//!
//! # Drivers ([`drivers()`])
//!
//! Two to five short sentences a support agent can read out loud. The first always names the
//! tier and why (the metric, its value, the tier's threshold or share); the second, when the
//! quadrant is known, names the quadrant with the customer's benefit and cost scores. The rest
//! are chosen by *salience*, a fixed score in [0, 1] of how much a factor sets the customer apart,
//! highest first (ties keep the order below); factors under 0.25 are left out unless fewer than
//! two sentences would remain:
//!
//! | factor                       | salience                                                        |
//! |------------------------------|-----------------------------------------------------------------|
//! | churn risk                   | High 0.9, Medium 0.6, Low 0.3                                   |
//! | support burden               | High 0.85, Medium 0.55, Low 0.25, None 0.1                      |
//! | NPS category                 | Detractor 0.8, Promoter 0.5, Passive 0.3; CSAT alone: 0.6 × ∣CSAT − 3∣ / 2 |
//! | purchases (count, recency)   | no purchase 0.6; else 0.7 × min(1, max((purchase days − 1) / 10, days since last purchase / 365)) |
//! | worst-rated dimension        | 0.4 + 0.2 × (gap − 1) when a cost ≥ 4 or a benefit ≤ 2 (gap = distance from 3), +0.2 in `AtRisk` or `LowEngagement` |
//! | perceived value (no quadrant)| ∣value index − 50∣ / 50                                          |
//! | predicted CLV (other metric) | 0.35                                                            |
//! | revenue (other metric)       | 0.3                                                             |
//! | no survey answers            | 0.2                                                             |
//!
//! Money is written with the currency's code, digits and thousands separators
//! (`USD 1,234.50`); percentages of chance are rounded to whole percents (never shown as 0 % or
//! 100 % unless exact). The output depends only on the input: the same input gives the same
//! sentences in the same order.

#![warn(missing_docs)]

mod churn;
mod drivers;
mod perceived;
mod percentile;
mod quadrant;
mod satisfaction;
mod support;
mod tier;

pub use churn::{CHURN_LOW_BELOW, CHURN_MEDIUM_BELOW, ChurnLevel, ChurnRisk, churn_risk};
pub use drivers::{DriverInput, Horizon, MAX_DRIVERS, drivers, format_money};
pub use perceived::{
    BenefitDimension, CostDimension, PerceivedValue, RATING_MAX, RATING_MIN, rating_average,
    value_index,
};
pub use percentile::{COMPOSITE_WEIGHTS, Percentiles, composite_basis_points, composite_score};
pub use quadrant::{
    BUSINESS_VALUE_HIGH_PERCENTILE, PERCEIVED_VALUE_HIGH_INDEX, ValueQuadrant,
    business_value_percentile, value_quadrant,
};
pub use satisfaction::{NpsCategory, Satisfaction, csat_average, nps_score};
pub use support::{
    SUPPORT_HIGH_CONTACTS_PER_90_DAYS, SUPPORT_HIGH_FCR_BELOW, SUPPORT_HIGH_MIN_CONTACTS,
    SUPPORT_MEDIUM_CONTACTS_PER_90_DAYS, SUPPORT_MEDIUM_FCR_BELOW, SUPPORT_MEDIUM_MIN_CONTACTS,
    SupportBurden, SupportLevel, support_burden,
};
pub use tier::{
    COMPOSITE_MAX_BASIS_POINTS, MAX_TIER_NAME_CHARS, MAX_TIERS, TierAssignment, TierDef,
    TierMetric, TierMode, TierPolicy, assign_tier, clv_minor_units,
};
