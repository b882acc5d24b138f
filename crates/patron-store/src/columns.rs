//! The summary table's columns, named once for both backends, with conversions between a
//! [`CustomerSummary`] and a flat list of nullable integers in column order.

use patron_domain::{CustomerSummary, Day, PurchaseStats, RatingTotal, SummaryDelta, Timestamp};

/// Columns that a batch adds to (`col = col + excluded.col`).
pub const ADDITIVE: [&str; 27] = [
    "event_count",
    "engagement_count",
    "support_count",
    "support_fcr_count",
    "survey_count",
    "csat_count",
    "csat_sum",
    "nps_promoters",
    "nps_passives",
    "nps_detractors",
    "economic_sum",
    "economic_n",
    "functional_sum",
    "functional_n",
    "experiential_sum",
    "experiential_n",
    "symbolic_sum",
    "symbolic_n",
    "price_sum",
    "price_n",
    "time_sum",
    "time_n",
    "effort_sum",
    "effort_n",
    "emotional_sum",
    "emotional_n",
    "custom_event_count",
];

/// Nullable instants a batch lowers (`col = min(col, excluded.col)`).
pub const MINIMUM: [&str; 1] = ["first_event_at"];

/// Nullable instants a batch raises (`col = max(col, excluded.col)`).
pub const MAXIMUM: [&str; 2] = ["last_event_at", "last_engagement_at"];

/// Arg-max pairs `(key, value)`: a batch replaces `value` (and `key`) when its `key` is later
/// than the stored one, or as late with a larger `value`. Both are NULL until the first answer.
pub const ARG_MAX: [(&str, &str); 1] = [("last_nps_at", "last_nps")];

/// Columns derived from the order rows, recomputed after every batch that touches orders.
pub const PURCHASE: [&str; 7] = [
    "order_count",
    "purchase_days",
    "first_purchase_day",
    "last_purchase_day",
    "net_revenue",
    "refunded",
    "first_day_revenue",
];

/// How many columns [`all`] names.
pub const COUNT: usize =
    ADDITIVE.len() + MINIMUM.len() + MAXIMUM.len() + 2 * ARG_MAX.len() + PURCHASE.len();

/// Every column of a summary in the order [`summary_from_values`] reads them.
pub fn all() -> impl Iterator<Item = &'static str> {
    delta_columns().chain(PURCHASE)
}

/// The columns a batch writes from its [`SummaryDelta`], in the order of [`additive_values`],
/// then [`extreme_values`], then [`arg_max_values`]: [`ADDITIVE`], [`MINIMUM`], [`MAXIMUM`], and
/// each [`ARG_MAX`] pair (key, then value).
pub fn delta_columns() -> impl Iterator<Item = &'static str> {
    ADDITIVE
        .into_iter()
        .chain(MINIMUM)
        .chain(MAXIMUM)
        .chain(ARG_MAX.into_iter().flat_map(|(k, v)| [k, v]))
}

/// The delta's values for [`ADDITIVE`], in order.
pub fn additive_values(d: &SummaryDelta) -> [i64; 27] {
    let r = |t: &RatingTotal| [i64::from(t.sum), i64::from(t.count)];
    let [b0, b1, b2, b3] = &d.benefits;
    let [c0, c1, c2, c3] = &d.costs;
    let mut out = [0i64; 27];
    let head = [
        d.event_count,
        d.engagement_count,
        d.support_count,
        d.support_first_contact_resolved,
        d.survey_count,
        d.csat_count,
        d.csat_sum,
        d.nps_promoters,
        d.nps_passives,
        d.nps_detractors,
    ];
    out[..10].copy_from_slice(&head);
    for (i, t) in [b0, b1, b2, b3, c0, c1, c2, c3].into_iter().enumerate() {
        out[10 + 2 * i..12 + 2 * i].copy_from_slice(&r(t));
    }
    out[26] = d.custom_event_count;
    out
}

/// The delta's values for [`MINIMUM`] then [`MAXIMUM`], in order.
pub fn extreme_values(d: &SummaryDelta) -> [Option<i64>; 3] {
    [
        d.first_event_at.map(Timestamp::as_micros),
        d.last_event_at.map(Timestamp::as_micros),
        d.last_engagement_at.map(Timestamp::as_micros),
    ]
}

/// The delta's values for the [`ARG_MAX`] pairs, key then value, in order. A pair is both NULL
/// or both set.
pub fn arg_max_values(d: &SummaryDelta) -> [Option<i64>; 2] {
    match (d.last_nps_at, d.last_nps) {
        (Some(at), Some(nps)) => [Some(at.as_micros()), Some(i64::from(nps))],
        _ => [None, None],
    }
}

/// Every value a batch writes for `d`, in [`delta_columns`] order (additive values as `Some`).
pub fn delta_values(d: &SummaryDelta) -> impl Iterator<Item = Option<i64>> {
    additive_values(d)
        .into_iter()
        .map(Some)
        .chain(extreme_values(d))
        .chain(arg_max_values(d))
}

/// Builds a summary from the values of [`all`] columns, in order. Missing or NULL counts read as 0.
pub fn summary_from_values(v: &[Option<i64>]) -> CustomerSummary {
    const EXTREMES: usize = ADDITIVE.len();
    const ARG_MAXES: usize = EXTREMES + MINIMUM.len() + MAXIMUM.len();
    const PURCHASES: usize = ARG_MAXES + 2 * ARG_MAX.len();
    let n = |i: usize| v.get(i).copied().flatten().unwrap_or(0);
    let ts = |i: usize| v.get(i).copied().flatten().map(Timestamp::from_micros);
    let day = |i: usize| {
        v.get(i)
            .copied()
            .flatten()
            .and_then(|d| i32::try_from(d).ok())
            .map(Day::from_days)
    };
    let rating = |i: usize| RatingTotal::from_stored(n(i), n(i + 1));
    let (last_nps_at, last_nps) = match (
        ts(ARG_MAXES),
        v.get(ARG_MAXES + 1)
            .copied()
            .flatten()
            .and_then(|n| u8::try_from(n).ok()),
    ) {
        (Some(at), Some(nps)) => (Some(at), Some(nps)),
        _ => (None, None),
    };
    let totals = SummaryDelta {
        event_count: n(0),
        engagement_count: n(1),
        support_count: n(2),
        support_first_contact_resolved: n(3),
        survey_count: n(4),
        csat_count: n(5),
        csat_sum: n(6),
        nps_promoters: n(7),
        nps_passives: n(8),
        nps_detractors: n(9),
        last_nps,
        last_nps_at,
        benefits: [rating(10), rating(12), rating(14), rating(16)],
        costs: [rating(18), rating(20), rating(22), rating(24)],
        custom_event_count: n(26),
        first_event_at: ts(EXTREMES),
        last_event_at: ts(EXTREMES + 1),
        last_engagement_at: ts(EXTREMES + 2),
    };
    let purchases = PurchaseStats {
        order_count: n(PURCHASES),
        purchase_days: n(PURCHASES + 1),
        first_purchase_day: day(PURCHASES + 2),
        last_purchase_day: day(PURCHASES + 3),
        net_revenue: n(PURCHASES + 4),
        refunded: n(PURCHASES + 5),
        first_day_revenue: n(PURCHASES + 6),
    };
    CustomerSummary { totals, purchases }
}

/// `col = <table>.col + excluded.col, …` for the additive columns, then min/max for the instants,
/// then the arg-max pairs; valid on SQLite and Postgres alike.
///
/// Both dialects evaluate every SET expression against the old row, so an arg-max pair's key and
/// value are both decided by one condition on the old key and value.
pub fn upsert_set_clause(table: &str) -> String {
    let mut parts: Vec<String> = ADDITIVE
        .iter()
        .map(|c| format!("{c} = {table}.{c} + excluded.{c}"))
        .collect();
    for c in MINIMUM {
        parts.push(format!(
            "{c} = CASE WHEN {table}.{c} IS NULL OR excluded.{c} < {table}.{c} THEN excluded.{c} ELSE {table}.{c} END"
        ));
    }
    for c in MAXIMUM {
        parts.push(format!(
            "{c} = CASE WHEN {table}.{c} IS NULL OR excluded.{c} > {table}.{c} THEN excluded.{c} ELSE {table}.{c} END"
        ));
    }
    for (k, v) in ARG_MAX {
        let newer = format!(
            "excluded.{k} IS NOT NULL AND ({table}.{k} IS NULL OR excluded.{k} > {table}.{k} \
             OR (excluded.{k} = {table}.{k} AND excluded.{v} > {table}.{v}))"
        );
        for c in [k, v] {
            parts.push(format!(
                "{c} = CASE WHEN {newer} THEN excluded.{c} ELSE {table}.{c} END"
            ));
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut d = SummaryDelta::default();
        let mut next = 1;
        let mut bump = || {
            next += 1;
            next
        };
        d.event_count = bump();
        d.engagement_count = bump();
        d.support_count = bump();
        d.support_first_contact_resolved = bump();
        d.survey_count = bump();
        d.csat_count = bump();
        d.csat_sum = bump();
        d.nps_promoters = bump();
        d.nps_passives = bump();
        d.nps_detractors = bump();
        for t in d.benefits.iter_mut().chain(d.costs.iter_mut()) {
            *t = RatingTotal::from_stored(bump(), bump());
        }
        d.custom_event_count = bump();
        d.first_event_at = Some(Timestamp::from_micros(bump()));
        d.last_event_at = Some(Timestamp::from_micros(bump()));
        d.last_engagement_at = Some(Timestamp::from_micros(bump()));
        d.last_nps_at = Some(Timestamp::from_micros(bump()));
        d.last_nps = Some(9);
        let mut values: Vec<Option<i64>> = delta_values(&d).collect();
        assert_eq!(values.len(), delta_columns().count());
        values.extend([
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            Some(5),
            Some(6),
            Some(7),
        ]);
        assert_eq!(values.len(), all().count());
        assert_eq!(values.len(), COUNT);
        let s = summary_from_values(&values);
        assert_eq!(s.totals, d);
        assert_eq!(s.purchases.first_purchase_day, Some(Day::from_days(3)));
        assert_eq!(s.purchases.first_day_revenue, 7);
    }

    #[test]
    fn arg_max_pairs_are_both_null_or_both_set() {
        assert_eq!(arg_max_values(&SummaryDelta::default()), [None, None]);
        let mut values = vec![None; COUNT];
        let at = ADDITIVE.len() + MINIMUM.len() + MAXIMUM.len();
        values[at] = Some(5);
        let s = summary_from_values(&values);
        assert_eq!((s.totals.last_nps_at, s.totals.last_nps), (None, None));
        values[at + 1] = Some(7);
        let s = summary_from_values(&values);
        assert_eq!(
            (s.totals.last_nps_at, s.totals.last_nps),
            (Some(Timestamp::from_micros(5)), Some(7))
        );
    }
}
