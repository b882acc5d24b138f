//! Drivers: the few plain-English sentences that explain a customer's tier and quadrant (the
//! selection heuristic is in the module docs of [`crate::value`]).

use super::{
    BenefitDimension, ChurnLevel, CostDimension, NpsCategory, PerceivedValue, Satisfaction,
    SupportBurden, SupportLevel, TierAssignment, TierMetric, TierMode, TierPolicy, ValueQuadrant,
    churn_risk, clv_minor_units,
};
use crate::Currency;
use std::fmt::Write as _;

/// Most sentences [`drivers`] returns.
pub const MAX_DRIVERS: usize = 5;
/// Fewest sentences [`drivers`] returns.
const MIN_DRIVERS: usize = 2;
/// Factors less salient than this are left out unless needed to reach [`MIN_DRIVERS`].
const SALIENCE_FLOOR: f64 = 0.25;

/// Everything the drivers are written from.
#[derive(Debug, Clone)]
pub struct DriverInput<'a> {
    /// The deployment's currency, for money amounts.
    pub currency: Currency,
    /// The tier policy the tier was assigned under.
    pub policy: &'a TierPolicy,
    /// The customer's tier.
    pub tier: &'a TierAssignment,
    /// The customer's value-balance quadrant.
    pub quadrant: ValueQuadrant,
    /// The customer's perceived value.
    pub perceived: PerceivedValue,
    /// CSAT and NPS.
    pub satisfaction: Satisfaction,
    /// Support burden.
    pub support: SupportBurden,
    /// P(alive) from the value model; `None` without a model.
    pub p_alive: Option<f64>,
    /// The model's P(alive) is 1 by construction, not an estimate: BG/NBD and a single purchase
    /// day (dropout happens only after a repeat purchase). The drivers then say the model cannot
    /// tell, rather than "very likely still active".
    pub p_alive_uninformative: bool,
    /// Predicted CLV over the horizon, in minor units (model output); `None` without a model.
    pub predicted_clv: Option<f64>,
    /// The CLV horizon.
    pub clv_horizon: Horizon,
    /// Net revenue to date, in minor units.
    pub historical_revenue: i64,
    /// Distinct days with a purchase (the `lifetimes` frequency + 1; 0 without purchases).
    pub purchase_days: i64,
    /// Days from the last purchase to the as-of time; `None` without purchases.
    pub days_since_last_purchase: Option<i64>,
}

/// Two to five sentences explaining the tier (always first) and the quadrant (second, when
/// known), then the most salient other factors. Deterministic.
pub fn drivers(input: &DriverInput<'_>) -> Vec<String> {
    let mut out = Vec::with_capacity(MAX_DRIVERS);
    out.push(tier_sentence(input));
    out.extend(quadrant_sentence(input));

    // Every factor's salience first, without its sentence; then the sentences of those kept.
    let mut ranked = [(0.0, 0usize); FACTORS.len()];
    let mut n = 0;
    for (i, factor) in FACTORS.iter().enumerate() {
        if let Some((salience, _)) = factor(input, Write::No) {
            ranked[n] = (salience, i);
            n += 1;
        }
    }
    // Stable: equal saliences keep the order of FACTORS.
    ranked[..n].sort_by(|a, b| b.0.total_cmp(&a.0));
    for &(salience, i) in &ranked[..n] {
        if out.len() >= MAX_DRIVERS || (salience < SALIENCE_FLOOR && out.len() >= MIN_DRIVERS) {
            break;
        }
        if let Some((_, text)) = FACTORS[i](input, Write::Yes) {
            out.extend(text.into_string());
        }
    }
    out
}

/// A factor: its salience and, when asked to write, its sentence.
type Factor = fn(&DriverInput<'_>, Write) -> Option<(f64, Text)>;

/// The factors after the tier and the quadrant, in the order that breaks salience ties.
const FACTORS: [Factor; 8] = [
    churn_factor,
    |input, write| Some(support_factor(input.support, write)),
    |input, write| nps_factor(input.satisfaction, write),
    |input, write| Some(purchase_factor(input, write)),
    worst_dimension_factor,
    perceived_factor,
    clv_factor,
    revenue_factor,
];

/// Money as `USD 1,234.50`: the currency code, then the amount with the currency's digits and
/// thousands separators.
pub fn format_money(minor_units: i64, currency: Currency) -> String {
    text_of(&MoneyText(minor_units, currency))
}

// The pieces of a sentence are pushed straight onto it ([`Piece`]), not formatted into strings of
// their own first nor through `format!`: a StreamCustomerValues call writes millions of these
// sentences, and the intermediate strings, the general float formatting and then the formatting
// machinery itself (a dynamic call per piece, the string regrown as it fills) were most of their
// cost. A sentence is put together in a reused buffer and copied out once, at its length.

/// A piece of a sentence that writes itself onto it.
trait Piece {
    fn put(&self, s: &mut String);
}

impl Piece for &str {
    fn put(&self, s: &mut String) {
        s.push_str(self);
    }
}

impl Piece for String {
    fn put(&self, s: &mut String) {
        s.push_str(self);
    }
}

impl Piece for i64 {
    fn put(&self, s: &mut String) {
        if *self < 0 {
            s.push('-');
        }
        put_u64(s, self.unsigned_abs());
    }
}

impl Piece for u8 {
    fn put(&self, s: &mut String) {
        put_u64(s, u64::from(*self));
    }
}

/// One sentence from its pieces in order, allocated once at its length.
macro_rules! sentence {
    ($($piece:expr),+ $(,)?) => {
        SCRATCH.with_borrow_mut(|s| {
            s.clear();
            $( Piece::put(&$piece, s); )+
            s.as_str().to_owned()
        })
    };
}

thread_local! {
    /// The buffer [`sentence!`] writes each sentence into before copying it out.
    static SCRATCH: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(256));
}

/// The text of one piece (tests, and money outside sentences).
fn text_of(piece: &impl Piece) -> String {
    let mut s = String::new();
    piece.put(&mut s);
    s
}

/// Writes `n` in decimal without the general formatting machinery.
fn put_u64(s: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Every byte written is an ASCII digit.
    s.push_str(std::str::from_utf8(&buf[at..]).unwrap_or_default());
}

/// Money as [`format_money`] writes it.
struct MoneyText(i64, Currency);

impl Piece for MoneyText {
    fn put(&self, s: &mut String) {
        let MoneyText(minor_units, currency) = *self;
        let digits = u32::from(currency.minor_digits());
        let scale = 10u64.pow(digits);
        let abs = minor_units.unsigned_abs();
        let (int, frac) = (abs / scale, abs % scale);
        s.push_str(currency.as_str());
        s.push_str(if minor_units < 0 { " -" } else { " " });
        // Thousands separators: the integer part in groups of three, most significant first.
        let mut groups = [0u64; 7];
        let mut n = 0;
        let mut rest = int;
        loop {
            groups[n] = rest % 1000;
            n += 1;
            rest /= 1000;
            if rest == 0 || n == groups.len() {
                break;
            }
        }
        put_u64(s, groups[n - 1]);
        for &g in groups[..n - 1].iter().rev() {
            s.push(',');
            if g < 100 {
                s.push_str(if g < 10 { "00" } else { "0" });
            }
            put_u64(s, g);
        }
        if digits > 0 {
            s.push('.');
            let mut place = scale / 10;
            while place > 1 && frac < place {
                s.push('0');
                place /= 10;
            }
            put_u64(s, frac);
        }
    }
}

/// `x` in tenths, rounded as `format!("{x:.1}")` rounds (the exact binary value to nearest), as
/// (negative, tenths); `None` where that is not certain from `x * 10` (near a tie, or large or
/// not finite), for the caller to fall back to `format!`. `x * 10` is within 2^-52 of the exact
/// product relative to it, far less than the margin kept from the tie below 10^6.
fn tenths(x: f64) -> Option<(bool, u64)> {
    if !x.is_finite() || x.abs() >= 1e6 {
        return None;
    }
    let y = (x * 10.0).abs();
    if (y.fract() - 0.5).abs() < 1e-6 {
        return None;
    }
    Some((x.is_sign_negative(), y.round() as u64))
}

/// `x` with one decimal: the text of `format!("{x:.1}")`.
struct Fixed1(f64);

impl Piece for Fixed1 {
    fn put(&self, s: &mut String) {
        let Some((negative, n)) = tenths(self.0) else {
            let _ = write!(s, "{:.1}", self.0);
            return;
        };
        if negative {
            s.push('-');
        }
        put_u64(s, n / 10);
        s.push('.');
        put_u64(s, n % 10);
    }
}

/// A number with at most one decimal, trailing `.0` dropped: `2`, `0.5`, `33.3`.
struct Short(f64);

impl Piece for Short {
    fn put(&self, s: &mut String) {
        let Some((negative, n)) = tenths(self.0) else {
            let text = format!("{:.1}", self.0);
            s.push_str(text.strip_suffix(".0").unwrap_or(&text));
            return;
        };
        if negative {
            s.push('-');
        }
        put_u64(s, n / 10);
        if n % 10 != 0 {
            s.push('.');
            put_u64(s, n % 10);
        }
    }
}

#[cfg(test)]
fn short_number(x: f64) -> String {
    text_of(&Short(x))
}

/// A name with its first letter upper-case.
struct Capitalised<'a>(&'a str);

impl Piece for Capitalised<'_> {
    fn put(&self, s: &mut String) {
        let mut chars = self.0.chars();
        if let Some(first) = chars.next() {
            s.extend(first.to_uppercase());
            s.push_str(chars.as_str());
        }
    }
}

#[cfg(test)]
fn capitalised(name: &str) -> String {
    text_of(&Capitalised(name))
}

/// A probability as whole percents, never 0 or 100 unless exact: `37 %`.
struct Chance(f64);

impl Piece for Chance {
    fn put(&self, s: &mut String) {
        let p = self.0;
        let pct = (p * 100.0).round();
        let pct = if p > 0.0 && p < 1.0 {
            pct.clamp(1.0, 99.0)
        } else {
            pct
        };
        if (0.0..=1e6).contains(&pct) && !pct.is_sign_negative() {
            put_u64(s, pct as u64);
        } else {
            let _ = write!(s, "{pct:.0}");
        }
        s.push_str(" %");
    }
}

#[cfg(test)]
fn chance_percent(p: f64) -> String {
    text_of(&Chance(p))
}

/// The length of a CLV horizon, as the model was fitted with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Horizon {
    /// Whole months of 30 days (4.345 weeks).
    Months(u32),
    /// Days.
    Days(u32),
}

/// `the next 12 months`.
struct Span(Horizon);

impl Piece for Span {
    fn put(&self, s: &mut String) {
        let (n, unit) = match self.0 {
            Horizon::Months(1) => return s.push_str("the next month"),
            Horizon::Days(1) => return s.push_str("the next day"),
            Horizon::Months(n) => (n, " months"),
            Horizon::Days(n) => (n, " days"),
        };
        s.push_str("the next ");
        put_u64(s, u64::from(n));
        s.push_str(unit);
    }
}

#[cfg(test)]
fn span(h: Horizon) -> String {
    text_of(&Span(h))
}

fn metric_phrase(metric: TierMetric) -> &'static str {
    match metric {
        TierMetric::PredictedClv => "predicted lifetime value",
        TierMetric::HistoricalRevenue => "revenue to date",
        TierMetric::Composite => "combined value score",
    }
}

/// A value in the policy metric's unit, in words: money, or a composite score out of 100; with
/// `over`, a predicted CLV is followed by its horizon (`USD 1,234.50 over the next 12 months`).
struct MetricAmount {
    metric: TierMetric,
    value: i64,
    currency: Currency,
    over: Option<Horizon>,
}

impl MetricAmount {
    fn new(input: &DriverInput<'_>, value: i64) -> Self {
        MetricAmount {
            metric: input.policy.metric,
            value,
            currency: input.currency,
            over: None,
        }
    }
}

impl Piece for MetricAmount {
    fn put(&self, s: &mut String) {
        match self.metric {
            TierMetric::PredictedClv | TierMetric::HistoricalRevenue => {
                MoneyText(self.value, self.currency).put(s);
            }
            TierMetric::Composite => {
                Short(self.value as f64 / 100.0).put(s);
                s.push_str("/100");
            }
        }
        if let Some(h) = self.over
            && self.metric == TierMetric::PredictedClv
        {
            s.push_str(" over ");
            Span(h).put(s);
        }
    }
}

fn tier_sentence(input: &DriverInput<'_>) -> String {
    let policy = input.policy;
    let tier = Capitalised(&input.tier.name);
    let metric = metric_phrase(policy.metric);
    let n = policy.tiers.len().max(1);
    let rank = usize::try_from(input.tier.rank).unwrap_or(n).clamp(1, n);
    let value = input.tier.metric_value.or_else(|| match policy.metric {
        TierMetric::PredictedClv => input.predicted_clv.and_then(clv_minor_units),
        TierMetric::HistoricalRevenue => Some(input.historical_revenue),
        TierMetric::Composite => None,
    });
    let amount = value.map(|v| MetricAmount {
        over: Some(input.clv_horizon),
        ..MetricAmount::new(input, v)
    });
    let known = match policy.mode {
        TierMode::Absolute => amount.is_some(),
        TierMode::Percentile => input.tier.percentile.is_some(),
    };
    if !known {
        return sentence!(
            tier,
            " tier by default: no ",
            metric,
            " to rank them by yet."
        );
    }
    if n == 1 {
        return match amount {
            Some(a) => sentence!(tier, " tier, the only tier there is; ", metric, " ", a, "."),
            None => sentence!(tier, " tier, the only tier there is."),
        };
    }
    match policy.mode {
        TierMode::Percentile => {
            let top: f64 = policy
                .tiers
                .iter()
                .take(if rank < n { rank } else { n - 1 })
                .filter_map(|t| t.share_percent)
                .filter(|s| s.is_finite())
                .sum();
            let place = if rank < n { "in" } else { "outside" };
            let top = Short(top);
            sentence!(
                tier,
                " tier: ",
                place,
                " the top ",
                top,
                " % of customers by ",
                metric,
                InParentheses(amount),
                "."
            )
        }
        TierMode::Absolute => {
            let Some(amount) = amount else {
                return sentence!(
                    tier,
                    " tier by default: no ",
                    metric,
                    " to rank them by yet."
                );
            };
            let threshold = |i: usize| {
                policy
                    .tiers
                    .get(i)
                    .and_then(|t| t.min_value)
                    .map(|m| MetricAmount::new(input, m))
            };
            let bound = if rank < n {
                Bound {
                    threshold: threshold(rank - 1),
                    below: None,
                }
            } else {
                let above = policy.tiers.get(n - 2).map_or("", |t| t.name.as_str());
                Bound {
                    threshold: threshold(n - 2),
                    below: Some(Capitalised(above)),
                }
            };
            sentence!(tier, " tier: ", metric, " of ", amount, bound, ".")
        }
    }
}

/// `, at least the USD 1,000.00 this tier needs`, or in the lowest tier `, below the
/// USD 1,000.00 Gold needs` (`below`: the tier above); nothing without a threshold.
struct Bound<'a> {
    threshold: Option<MetricAmount>,
    below: Option<Capitalised<'a>>,
}

impl Piece for Bound<'_> {
    fn put(&self, s: &mut String) {
        let Some(t) = &self.threshold else { return };
        match &self.below {
            None => {
                s.push_str(", at least the ");
                t.put(s);
                s.push_str(" this tier needs");
            }
            Some(above) => {
                s.push_str(", below the ");
                t.put(s);
                s.push(' ');
                above.put(s);
                s.push_str(" needs");
            }
        }
    }
}

/// `benefits 4.5/5 against costs 2.0/5`, when both are known.
struct Scores(f64, f64);

impl Scores {
    fn of(p: &PerceivedValue) -> Option<Self> {
        Some(Scores(p.benefit_score?, p.cost_score?))
    }
}

impl Piece for Scores {
    fn put(&self, s: &mut String) {
        s.push_str("benefits ");
        Fixed1(self.0).put(s);
        s.push_str("/5 against costs ");
        Fixed1(self.1).put(s);
        s.push_str("/5");
    }
}

/// ` (benefits 4.5/5 against costs 2.0/5)`: a piece in parentheses after a space, or nothing.
struct InParentheses<P>(Option<P>);

impl<P: Piece> Piece for InParentheses<P> {
    fn put(&self, s: &mut String) {
        if let Some(piece) = &self.0 {
            s.push_str(" (");
            piece.put(s);
            s.push(')');
        }
    }
}

fn quadrant_sentence(input: &DriverInput<'_>) -> Option<String> {
    let r = InParentheses(Scores::of(&input.perceived));
    // The scores go before `tail`.
    let (head, tail) = match input.quadrant {
        ValueQuadrant::Unknown => return None,
        ValueQuadrant::MutualValue => (
            "Mutual value: in the top half of customers by value to us, and rates us well",
            ".",
        ),
        ValueQuadrant::AtRisk => (
            "At risk: in the top half of customers by value to us, but rates us poorly",
            ".",
        ),
        ValueQuadrant::UnderServed => (
            "Under-served: rates us well",
            ", but is in the bottom half of customers by value to us.",
        ),
        ValueQuadrant::LowEngagement => (
            "Low engagement: in the bottom half of customers by value to us, and rates us poorly",
            ".",
        ),
    };
    Some(sentence!(head, r, tail))
}

/// Whether a factor writes its sentence: only once it is among those kept. Formatting is most of
/// the cost of drivers and most factors are not kept, so [`drivers`] asks every factor for its
/// salience alone, then the kept ones again for their sentences (the same answer: a factor is a
/// function of the input). Deferring the sentence in a boxed closure instead cost an allocation
/// per factor and customer, most of them never called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    No,
    Yes,
}

/// A factor's sentence: fixed, written, or not written (asked for the salience alone).
enum Text {
    Fixed(&'static str),
    Written(String),
    NotWritten,
}

impl Text {
    fn into_string(self) -> Option<String> {
        match self {
            Text::Fixed(s) => Some(s.to_owned()),
            Text::Written(s) => Some(s),
            Text::NotWritten => None,
        }
    }
}

/// The sentence `f` writes, if `write`.
fn text(write: Write, f: impl FnOnce() -> String) -> Text {
    match write {
        Write::Yes => Text::Written(f()),
        Write::No => Text::NotWritten,
    }
}

fn fixed(s: &'static str) -> Text {
    Text::Fixed(s)
}

fn churn_factor(input: &DriverInput<'_>, write: Write) -> Option<(f64, Text)> {
    if input.p_alive_uninformative {
        let days = input.days_since_last_purchase?;
        // The longer ago the one purchase, the more the missing estimate matters.
        let salience = if days > 365 { 0.7 } else { 0.4 };
        return Some((
            salience,
            fixed(
                "The BG/NBD model cannot tell whether a one-time buyer is still active: it lets customers drop out only after a repeat purchase.",
            ),
        ));
    }
    let churn = churn_risk(input.p_alive);
    let p = churn.p_alive?;
    Some(match churn.level {
        ChurnLevel::Unknown => return None,
        ChurnLevel::High => (
            0.9,
            text(write, move || {
                sentence!(
                    "Likely to churn: only a ",
                    Chance(p),
                    " chance they are still active."
                )
            }),
        ),
        ChurnLevel::Medium => (
            0.6,
            text(write, move || {
                sentence!(
                    "May be drifting away: a ",
                    Chance(p),
                    " chance they are still active."
                )
            }),
        ),
        ChurnLevel::Low => (
            0.3,
            text(write, move || {
                sentence!("Very likely still active: a ", Chance(p), " chance.")
            }),
        ),
    })
}

/// How many of `.1` contacts were resolved on first contact (`.0`): `none`, `all` or the number.
struct Resolved(i64, i64);

impl Piece for Resolved {
    fn put(&self, s: &mut String) {
        let Resolved(r, c) = *self;
        if r <= 0 {
            s.push_str("none");
        } else if r >= c {
            s.push_str("all");
        } else {
            r.put(s);
        }
    }
}

/// `; average satisfaction 4.5/5`, or nothing without an average.
struct AverageSatisfaction(Option<f64>);

impl Piece for AverageSatisfaction {
    fn put(&self, s: &mut String) {
        if let Some(c) = self.0 {
            s.push_str("; average satisfaction ");
            Fixed1(c).put(s);
            s.push_str("/5");
        }
    }
}

/// `; last purchase 3 days ago` (today, yesterday), or nothing without a purchase.
struct LastPurchase(Option<i64>);

impl Piece for LastPurchase {
    fn put(&self, s: &mut String) {
        match self.0 {
            Some(0) => s.push_str("; last purchase today"),
            Some(1) => s.push_str("; last purchase yesterday"),
            Some(d) => {
                s.push_str("; last purchase ");
                d.put(s);
                s.push_str(" days ago");
            }
            None => {}
        }
    }
}

fn support_factor(s: SupportBurden, write: Write) -> (f64, Text) {
    let salience = match s.level {
        SupportLevel::None => 0.1,
        SupportLevel::Low => 0.25,
        SupportLevel::Medium => 0.55,
        SupportLevel::High => 0.85,
    };
    let text = match (s.contacts, s.first_contact_resolved) {
        (c, _) if c <= 0 => fixed("Has never contacted support."),
        (1, 1) => fixed("Contacted support once; it was resolved on first contact."),
        (1, _) => fixed("Contacted support once; it was not resolved on first contact."),
        (c, r) => text(write, move || {
            let resolved = Resolved(r, c);
            sentence!(
                "Contacted support ",
                c,
                " times (about ",
                Fixed1(s.contacts_per_90_days),
                " per 90 days as a customer); ",
                resolved,
                " resolved on first contact."
            )
        }),
    };
    (salience, text)
}

fn nps_factor(s: Satisfaction, write: Write) -> Option<(f64, Text)> {
    let csat = AverageSatisfaction(s.csat);
    match (s.nps_category, s.last_nps) {
        (Some(category), Some(answer)) => {
            let (salience, label) = match category {
                NpsCategory::Detractor => (0.8, "Detractor"),
                NpsCategory::Promoter => (0.5, "Promoter"),
                NpsCategory::Passive => (0.3, "Passive"),
            };
            Some((
                salience,
                text(write, move || {
                    sentence!(
                        label,
                        ": last scored us ",
                        answer,
                        "/10 on recommending us",
                        csat,
                        "."
                    )
                }),
            ))
        }
        _ => {
            let c = s.csat?;
            let answers = s.csat_count.max(1);
            let plural = if answers == 1 { "" } else { "s" };
            Some((
                0.6 * (c - 3.0).abs() / 2.0,
                text(write, move || {
                    sentence!(
                        "Average satisfaction ",
                        Fixed1(c),
                        "/5 over ",
                        answers,
                        " answer",
                        plural,
                        "."
                    )
                }),
            ))
        }
    }
}

fn purchase_factor(input: &DriverInput<'_>, write: Write) -> (f64, Text) {
    let n = input.purchase_days;
    if n <= 0 {
        return (0.6, fixed("Has not bought anything yet."));
    }
    let days = input.days_since_last_purchase.filter(|d| *d >= 0);
    let text = text(write, move || {
        let last = LastPurchase(days);
        if n == 1 {
            sentence!("Has bought once", last, ".")
        } else {
            sentence!("Has bought on ", n, " separate days", last, ".")
        }
    });
    let frequency = (n - 1) as f64 / 10.0;
    let recency = days.map_or(0.0, |d| d as f64 / 365.0);
    (0.7 * frequency.max(recency).min(1.0), text)
}

fn worst_dimension_factor(input: &DriverInput<'_>, write: Write) -> Option<(f64, Text)> {
    let p = &input.perceived;
    // (gap, sentence start, dimension, score, "cost" or "benefit")
    let mut worst: Option<(f64, &'static str, &'static str, f64, &'static str)> = None;
    let mut consider = |gap: f64, what, name, v, kind| {
        if gap >= 1.0 && worst.as_ref().is_none_or(|w| gap > w.0) {
            worst = Some((gap, what, name, v, kind));
        }
    };
    for d in CostDimension::ALL {
        if let Some(v) = p.cost(d) {
            let what = match d {
                CostDimension::Price => "Finds us expensive",
                CostDimension::Time => "Finds dealing with us takes too long",
                CostDimension::Effort => "Finds dealing with us hard work",
                CostDimension::Emotional => "Finds dealing with us stressful",
            };
            consider(v - 3.0, what, d.name(), v, "cost");
        }
    }
    for d in BenefitDimension::ALL {
        if let Some(v) = p.benefit(d) {
            let what = match d {
                BenefitDimension::Economic => "Does not feel they get good value for money",
                BenefitDimension::Functional => "Does not find we make their task easy",
                BenefitDimension::Experiential => "Does not enjoy dealing with us",
                BenefitDimension::Symbolic => "Gets little sense of status or belonging from us",
            };
            consider(3.0 - v, what, d.name(), v, "benefit");
        }
    }
    let (gap, what, name, v, kind) = worst?;
    let boost = match input.quadrant {
        ValueQuadrant::AtRisk | ValueQuadrant::LowEngagement => 0.2,
        _ => 0.0,
    };
    Some((
        (0.4 + 0.2 * (gap - 1.0) + boost).min(1.0),
        text(write, move || {
            sentence!(what, " (", name, " ", kind, " ", Fixed1(v), "/5).")
        }),
    ))
}

fn perceived_factor(input: &DriverInput<'_>, write: Write) -> Option<(f64, Text)> {
    let p = input.perceived;
    if !p.has_answers() {
        return Some((0.2, fixed("Has not answered a value survey yet.")));
    }
    if input.quadrant != ValueQuadrant::Unknown {
        return None; // The quadrant sentence already gives the scores.
    }
    let index = p.value_index?;
    let how = if index >= super::PERCEIVED_VALUE_HIGH_INDEX {
        "Rates us well"
    } else {
        "Rates us poorly"
    };
    let scores = Scores::of(&p)?;
    Some((
        (index - 50.0).abs() / 50.0,
        text(write, move || sentence!(how, ": ", scores, ".")),
    ))
}

fn clv_factor(input: &DriverInput<'_>, write: Write) -> Option<(f64, Text)> {
    if input.policy.metric == TierMetric::PredictedClv {
        return None;
    }
    let clv = input.predicted_clv.and_then(clv_minor_units)?;
    let (currency, horizon) = (input.currency, input.clv_horizon);
    Some((
        0.35,
        text(write, move || {
            sentence!(
                "Predicted lifetime value: ",
                MoneyText(clv, currency),
                " over ",
                Span(horizon),
                "."
            )
        }),
    ))
}

fn revenue_factor(input: &DriverInput<'_>, write: Write) -> Option<(f64, Text)> {
    if input.policy.metric == TierMetric::HistoricalRevenue || input.purchase_days <= 0 {
        return None;
    }
    let (revenue, currency) = (input.historical_revenue, input.currency);
    Some((
        0.3,
        text(write, move || {
            sentence!(
                "Has spent ",
                MoneyText(revenue, currency),
                " with us so far, net of refunds."
            )
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RatingTotal;
    use crate::value::{TierDef, assign_tier, support_burden};

    fn usd() -> Currency {
        Currency::parse("USD").unwrap_or_else(|_| unreachable!())
    }

    fn rated(benefit: i32, cost: i32) -> PerceivedValue {
        let t = |v: i32| RatingTotal { sum: v, count: 1 };
        PerceivedValue::from_totals(&[t(benefit); 4], &[t(cost); 4])
    }

    /// A scenario: the policy, the tier as assigned, and the other inputs.
    struct Case {
        policy: TierPolicy,
        metric_value: Option<i64>,
        percentile: Option<f64>,
        quadrant: ValueQuadrant,
        perceived: PerceivedValue,
        satisfaction: Satisfaction,
        support: SupportBurden,
        p_alive: Option<f64>,
        p_alive_uninformative: bool,
        predicted_clv: Option<f64>,
        revenue: i64,
        purchase_days: i64,
        days_since: Option<i64>,
    }

    fn base() -> Case {
        Case {
            policy: TierPolicy::default(),
            metric_value: Some(123_450),
            percentile: Some(0.995),
            quadrant: ValueQuadrant::MutualValue,
            perceived: rated(5, 2),
            satisfaction: Satisfaction::default(),
            support: support_burden(0, 0, 400.0),
            p_alive: Some(0.95),
            p_alive_uninformative: false,
            predicted_clv: Some(123_450.2),
            revenue: 500_000,
            purchase_days: 14,
            days_since: Some(3),
        }
    }

    fn run(c: &Case) -> Vec<String> {
        let tier = assign_tier(&c.policy, c.metric_value, c.percentile).unwrap_or_else(|| {
            TierAssignment {
                name: String::new(),
                rank: 1,
                metric_value: None,
                percentile: None,
            }
        });
        let input = DriverInput {
            currency: usd(),
            policy: &c.policy,
            tier: &tier,
            quadrant: c.quadrant,
            perceived: c.perceived,
            satisfaction: c.satisfaction,
            support: c.support,
            p_alive: c.p_alive,
            p_alive_uninformative: c.p_alive_uninformative,
            predicted_clv: c.predicted_clv,
            clv_horizon: Horizon::Months(12),
            historical_revenue: c.revenue,
            purchase_days: c.purchase_days,
            days_since_last_purchase: c.days_since,
        };
        let out = drivers(&input);
        assert_eq!(out, drivers(&input), "deterministic");
        assert!((2..=MAX_DRIVERS).contains(&out.len()), "{out:#?}");
        let first = out.first().map(|s| s.to_lowercase()).unwrap_or_default();
        assert!(first.contains(&tier.name.to_lowercase()), "{out:#?}");
        for s in &out {
            assert!(s.ends_with('.'), "{s}");
            assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
        }
        out
    }

    /// Runs `c` and checks the sentences: `want` gives each expected sentence, or a distinctive
    /// part of it, in order.
    #[track_caller]
    fn check(c: Case, want: &[&str]) {
        let got = run(&c);
        let ok = got.len() == want.len() && got.iter().zip(want).all(|(g, w)| g.contains(w));
        assert!(ok, "got: {got:#?}\nwant: {want:#?}");
    }

    #[test]
    fn drivers_explain_tier_and_quadrant() {
        // A loyal top customer: tier, quadrant, frequent purchases; the rest is not salient.
        check(
            base(),
            &[
                "Platinum tier: in the top 2 % of customers by predicted lifetime value (USD 1,234.50 over the next 12 months).",
                "Mutual value: in the top half of customers by value to us, and rates us well (benefits 5.0/5 against costs 2.0/5).",
                "Has bought on 14 separate days; last purchase 3 days ago.",
                "Very likely still active: a 95 % chance.",
                "Has spent USD 5,000.00 with us so far, net of refunds.",
            ],
        );
        // At risk: churn, detractor, support burden and the worst dimension crowd out the rest.
        check(
            Case {
                percentile: Some(0.95),
                quadrant: ValueQuadrant::AtRisk,
                perceived: {
                    let t = |v: i32| RatingTotal { sum: v, count: 1 };
                    PerceivedValue::from_totals(&[t(2); 4], &[t(3), t(3), t(5), t(3)])
                },
                satisfaction: Satisfaction {
                    last_nps: Some(4),
                    nps_category: Some(NpsCategory::Detractor),
                    csat: Some(2.0),
                    csat_count: 2,
                    ..Satisfaction::default()
                },
                support: support_burden(5, 2, 45.0),
                p_alive: Some(0.23),
                ..base()
            },
            &[
                "Gold tier: in the top 10 % of customers",
                "At risk: in the top half of customers by value to us, but rates us poorly (benefits 2.0/5 against costs 3.5/5).",
                "Likely to churn: only a 23 % chance they are still active.",
                "Contacted support 5 times (about 10.0 per 90 days as a customer); 2 resolved on first contact.",
                "Detractor: last scored us 4/10 on recommending us; average satisfaction 2.0/5.",
            ],
        );
        // Unknown quadrant, new customer without model or surveys: bronze by default, then the
        // best of the weak factors to reach two sentences.
        check(
            Case {
                metric_value: None,
                percentile: None,
                quadrant: ValueQuadrant::Unknown,
                perceived: PerceivedValue::default(),
                p_alive: None,
                predicted_clv: None,
                revenue: 0,
                purchase_days: 0,
                days_since: None,
                ..base()
            },
            &[
                "Bronze tier by default: no predicted lifetime value to rank them by yet.",
                "Has not bought anything yet.",
            ],
        );
        // The last tier in percentile mode; perceived value without a quadrant.
        check(
            Case {
                percentile: Some(0.2),
                quadrant: ValueQuadrant::Unknown,
                perceived: rated(2, 4),
                p_alive: Some(0.5),
                purchase_days: 1,
                days_since: Some(1),
                ..base()
            },
            &[
                "Bronze tier: outside the top 30 % of customers by predicted lifetime value",
                "May be drifting away: a 50 % chance they are still active.",
                "Rates us poorly: benefits 2.0/5 against costs 4.0/5.",
                "Finds us expensive (price cost 4.0/5).",
                "Has spent USD 5,000.00",
            ],
        );
    }

    #[test]
    fn drivers_for_absolute_and_composite_policies() {
        let revenue = TierPolicy {
            metric: TierMetric::HistoricalRevenue,
            mode: TierMode::Absolute,
            tiers: vec![
                TierDef::with_min_value("vip", 1_000_000),
                TierDef::with_min_value("regular", 10_000),
                TierDef::rest("casual"),
            ],
        };
        check(
            Case {
                policy: revenue.clone(),
                metric_value: Some(1_000_000),
                quadrant: ValueQuadrant::UnderServed,
                ..base()
            },
            &[
                "Vip tier: revenue to date of USD 10,000.00, at least the USD 10,000.00 this tier needs.",
                "Under-served: rates us well (benefits 5.0/5 against costs 2.0/5), but is in the bottom half",
                "Has bought on 14 separate days; last purchase 3 days ago.",
                "Predicted lifetime value: USD 1,234.50 over the next 12 months.",
                "Very likely still active",
            ],
        );
        check(
            Case {
                policy: revenue.clone(),
                metric_value: Some(9_999),
                ..base()
            },
            &[
                "Casual tier: revenue to date of USD 99.99, below the USD 100.00 Regular needs.",
                "Mutual value",
                "Has bought on 14",
                "Predicted lifetime value",
                "Very likely still active",
            ],
        );
        let composite = TierPolicy {
            metric: TierMetric::Composite,
            mode: TierMode::Absolute,
            tiers: vec![TierDef::with_min_value("top", 7_000), TierDef::rest("rest")],
        };
        check(
            Case {
                policy: composite,
                metric_value: Some(7_250),
                ..base()
            },
            &["Top tier: combined value score of 72.5/100, at least the 70/100 this tier needs."]
                .into_iter()
                .chain(["Mutual value", "Has bought", "Predicted", "Very likely"])
                .collect::<Vec<_>>(),
        );
        // A one-tier policy.
        check(
            Case {
                policy: TierPolicy {
                    metric: TierMetric::PredictedClv,
                    mode: TierMode::Percentile,
                    tiers: vec![TierDef::rest("member")],
                },
                ..base()
            },
            &[
                "Member tier, the only tier there is; predicted lifetime value USD 1,234.50 over the next 12 months.",
                "Mutual value",
                "Has bought",
                "Very likely",
                "Has spent",
            ],
        );
    }

    #[test]
    fn horizons_read_in_months_or_days() {
        assert_eq!(span(Horizon::Months(1)), "the next month");
        assert_eq!(span(Horizon::Months(12)), "the next 12 months");
        assert_eq!(span(Horizon::Days(1)), "the next day");
        assert_eq!(span(Horizon::Days(273)), "the next 273 days");
    }

    #[test]
    fn drivers_never_fail() {
        // Odd inputs: NaN model outputs, negative counts, an empty tier name, a tier rank out of
        // the policy's range.
        let odd = [
            Case {
                p_alive: Some(f64::NAN),
                predicted_clv: Some(f64::NAN),
                metric_value: None,
                percentile: Some(f64::NAN),
                purchase_days: -3,
                days_since: Some(-10),
                revenue: i64::MIN,
                ..base()
            },
            Case {
                policy: TierPolicy {
                    tiers: vec![TierDef::with_share("", 200.0), TierDef::rest("x")],
                    ..TierPolicy::default()
                },
                percentile: Some(1.0),
                ..base()
            },
            Case {
                support: support_burden(1, 0, 0.0),
                satisfaction: Satisfaction {
                    csat: Some(5.0),
                    csat_count: 1,
                    ..Satisfaction::default()
                },
                ..base()
            },
        ];
        for c in &odd {
            let _ = run(c);
        }
    }

    /// Sentences are put together in one reused buffer: a sentence longer than the buffer was
    /// made for comes out whole, and the next one holds nothing of it.
    #[test]
    fn a_sentence_longer_than_the_buffer_and_the_next_are_whole() {
        let long = "é".repeat(300);
        let c = Case {
            policy: TierPolicy {
                tiers: vec![TierDef::with_share(&long, 10.0), TierDef::rest("rest")],
                ..TierPolicy::default()
            },
            percentile: Some(0.999),
            ..base()
        };
        let got = run(&c);
        let want = format!(
            "É{} tier: in the top 10 % of customers by predicted lifetime value (USD 1,234.50 over the next 12 months).",
            "é".repeat(299)
        );
        assert_eq!(got[0], want);
        assert_eq!(
            got[1],
            "Mutual value: in the top half of customers by value to us, and rates us well (benefits 5.0/5 against costs 2.0/5)."
        );
    }

    #[test]
    fn factor_sentences_and_saliences() {
        let cases: &[(i64, i64, f64, &str)] = &[
            (0, 0, 0.1, "Has never contacted support."),
            (
                1,
                1,
                0.25,
                "Contacted support once; it was resolved on first contact.",
            ),
            (
                1,
                0,
                0.25,
                "Contacted support once; it was not resolved on first contact.",
            ),
            (
                2,
                0,
                0.55,
                "Contacted support 2 times (about 1.8 per 90 days as a customer); none resolved on first contact.",
            ),
            (
                3,
                3,
                0.85,
                "Contacted support 3 times (about 2.7 per 90 days as a customer); all resolved on first contact.",
            ),
        ];
        for &(contacts, resolved, salience, text) in cases {
            let (x, t) = support_factor(support_burden(contacts, resolved, 100.0), Write::Yes);
            assert_eq!(
                (x, t.into_string().expect("written")),
                (salience, text.to_owned())
            );
        }
        let sat = |csat: Option<f64>, count: i64, last: Option<u8>| Satisfaction {
            csat,
            csat_count: count,
            last_nps: last,
            nps_category: last.and_then(NpsCategory::from_answer),
            ..Satisfaction::default()
        };
        let cases: &[(Satisfaction, Option<(f64, &str)>)] = &[
            (sat(None, 0, None), None),
            (
                sat(Some(5.0), 1, None),
                Some((0.6, "Average satisfaction 5.0/5 over 1 answer.")),
            ),
            (
                sat(Some(3.0), 4, None),
                Some((0.0, "Average satisfaction 3.0/5 over 4 answers.")),
            ),
            (
                sat(None, 0, Some(10)),
                Some((0.5, "Promoter: last scored us 10/10 on recommending us.")),
            ),
            (
                sat(Some(4.3), 4, Some(7)),
                Some((
                    0.3,
                    "Passive: last scored us 7/10 on recommending us; average satisfaction 4.3/5.",
                )),
            ),
        ];
        for (s, want) in cases {
            let got =
                nps_factor(*s, Write::Yes).map(|(x, t)| (x, t.into_string().expect("written")));
            assert_eq!(got, want.map(|(x, t)| (x, t.to_owned())), "{s:?}");
        }
        let p = |days: i64, since: Option<i64>| {
            purchase_factor(
                &DriverInput {
                    purchase_days: days,
                    days_since_last_purchase: since,
                    ..input_stub()
                },
                Write::Yes,
            )
        };
        let cases: &[(i64, Option<i64>, f64, &str)] = &[
            (0, None, 0.6, "Has not bought anything yet."),
            (1, Some(0), 0.0, "Has bought once; last purchase today."),
            (
                2,
                Some(1),
                0.07,
                "Has bought on 2 separate days; last purchase yesterday.",
            ),
            (6, None, 0.35, "Has bought on 6 separate days."),
            (
                2,
                Some(730),
                0.7,
                "Has bought on 2 separate days; last purchase 730 days ago.",
            ),
            (
                30,
                Some(5),
                0.7,
                "Has bought on 30 separate days; last purchase 5 days ago.",
            ),
        ];
        for &(days, since, salience, text) in cases {
            let (got_salience, got_text) = p(days, since);
            assert!(
                (got_salience - salience).abs() < 1e-12,
                "{days} {since:?}: {got_salience}"
            );
            assert_eq!(got_text.into_string().expect("written"), text);
        }
    }

    #[test]
    fn a_one_time_buyer_under_bg_nbd_is_not_called_active() {
        // BG/NBD gives a one-time buyer P(alive) = 1 whatever the time since the purchase.
        for days in [3, 400, 900] {
            let input = DriverInput {
                p_alive: Some(1.0),
                p_alive_uninformative: true,
                purchase_days: 1,
                days_since_last_purchase: Some(days),
                ..input_stub()
            };
            let (salience, sentence) = churn_factor(&input, Write::Yes).expect("a sentence");
            let sentence = sentence.into_string().expect("written");
            assert!(sentence.contains("cannot tell"), "{sentence}");
            assert!(!sentence.starts_with("Very likely"), "{sentence}");
            assert_eq!(salience > 0.5, days > 365, "{days}");
            let all = drivers(&input).join(" ");
            assert!(!all.contains("Very likely still active"), "{all}");
        }
        // The same P(alive) from a model that can tell is stated as a chance.
        let input = DriverInput {
            p_alive: Some(0.9),
            ..input_stub()
        };
        let (_, sentence) = churn_factor(&input, Write::Yes).expect("a sentence");
        assert_eq!(
            sentence.into_string().expect("written"),
            "Very likely still active: a 90 % chance."
        );
    }

    fn input_stub() -> DriverInput<'static> {
        static POLICY: std::sync::OnceLock<TierPolicy> = std::sync::OnceLock::new();
        static TIER: std::sync::OnceLock<TierAssignment> = std::sync::OnceLock::new();
        DriverInput {
            currency: usd(),
            policy: POLICY.get_or_init(TierPolicy::default),
            tier: TIER.get_or_init(|| TierAssignment {
                name: "bronze".into(),
                rank: 4,
                metric_value: None,
                percentile: None,
            }),
            quadrant: ValueQuadrant::Unknown,
            perceived: PerceivedValue::default(),
            satisfaction: Satisfaction::default(),
            support: SupportBurden::default(),
            p_alive: None,
            p_alive_uninformative: false,
            predicted_clv: None,
            clv_horizon: Horizon::Months(12),
            historical_revenue: 0,
            purchase_days: 0,
            days_since_last_purchase: None,
        }
    }

    #[test]
    fn a_factor_not_asked_to_write_gives_the_same_salience_and_writes_nothing() {
        let stub = input_stub();
        let mut inputs = vec![stub.clone()];
        for (days, since, p_alive, clv) in [
            (1, Some(400), Some(0.95), Some(12_345.0)),
            (4, Some(3), Some(0.4), None),
            (9, Some(90), Some(0.05), Some(0.0)),
        ] {
            inputs.push(DriverInput {
                purchase_days: days,
                days_since_last_purchase: since,
                p_alive,
                p_alive_uninformative: days == 1,
                predicted_clv: clv,
                historical_revenue: 5_000 * days,
                support: support_burden(days, 1, 30.0),
                satisfaction: Satisfaction {
                    csat: Some(1.5),
                    csat_count: 2,
                    last_nps: Some(2),
                    nps_category: Some(NpsCategory::Detractor),
                    ..Satisfaction::default()
                },
                ..stub.clone()
            });
        }
        let mut written = 0;
        for input in &inputs {
            for factor in FACTORS {
                let (quiet, loud) = (factor(input, Write::No), factor(input, Write::Yes));
                assert_eq!(quiet.as_ref().map(|f| f.0), loud.as_ref().map(|f| f.0));
                assert!(!matches!(quiet, Some((_, Text::Written(_)))));
                if let Some((_, text)) = loud {
                    assert!(!matches!(text, Text::NotWritten));
                    written += usize::from(matches!(text, Text::Written(_)));
                }
            }
        }
        assert!(written >= 10, "{written} written sentences");
    }

    #[test]
    fn formatting() {
        let jpy = Currency::parse("JPY").unwrap_or_else(|_| unreachable!());
        let cases: &[(i64, Currency, &str)] = &[
            (0, usd(), "USD 0.00"),
            (5, usd(), "USD 0.05"),
            (99_999, usd(), "USD 999.99"),
            (100_000, usd(), "USD 1,000.00"),
            (123_456_789, usd(), "USD 1,234,567.89"),
            (-123_456, usd(), "USD -1,234.56"),
            (1_234_567, jpy, "JPY 1,234,567"),
            (100, jpy, "JPY 100"),
            (i64::MIN, jpy, "JPY -9,223,372,036,854,775,808"),
        ];
        for &(minor, cur, want) in cases {
            assert_eq!(format_money(minor, cur), want);
        }
        let chances: &[(f64, &str)] = &[
            (0.0, "0 %"),
            (1.0, "100 %"),
            (0.001, "1 %"),
            (0.999, "99 %"),
            (0.234, "23 %"),
            (0.236, "24 %"),
        ];
        for &(p, want) in chances {
            assert_eq!(chance_percent(p), want, "{p}");
        }
        assert_eq!(short_number(2.0), "2");
        assert_eq!(short_number(0.5), "0.5");
        assert_eq!(short_number(33.333), "33.3");
        assert_eq!(capitalised("élite"), "Élite");
        assert_eq!(capitalised(""), "");
    }

    /// The sentences' one-decimal numbers are written without `format!`; they must read exactly
    /// as `format!("{x:.1}")` does, ties, signs, huge and non-finite values included.
    #[test]
    fn one_decimal_numbers_read_as_format_writes_them() {
        let mut values = vec![
            0.0,
            -0.0,
            0.05,
            0.15,
            0.25,
            0.35,
            -0.25,
            -0.04,
            2.25,
            2.75,
            4.45,
            999_999.95,
            1e6,
            1e300,
            -1e300,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // Every thousandth and every sixteenth from -20 to 20 (exact ties among them), and
        // averages of integer ratings as surveys give them.
        values.extend((-20_000..=20_000).map(|i| f64::from(i) / 1000.0));
        values.extend((-320..=320).map(|i| f64::from(i) / 16.0));
        for count in 1..=60 {
            values.extend((count..=5 * count).map(|sum| f64::from(sum) / f64::from(count)));
        }
        // Pseudo-random values over many magnitudes.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..50_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64;
            let exponent = i32::try_from(state % 24).unwrap_or(0) - 12;
            values.push((mantissa - 0.5) * 10f64.powi(exponent));
        }
        for x in values {
            let want = format!("{x:.1}");
            assert_eq!(text_of(&Fixed1(x)), want, "{x:e}");
            assert_eq!(
                short_number(x),
                want.strip_suffix(".0").unwrap_or(&want),
                "{x:e}"
            );
        }
        for p in [-0.0, 0.0, 0.005, 0.5, 0.994, 0.995, 1.0, f64::NAN, 2.0] {
            let pct = (p * 100.0).round();
            let pct = if p > 0.0 && p < 1.0 {
                pct.clamp(1.0, 99.0)
            } else {
                pct
            };
            assert_eq!(chance_percent(p), format!("{pct:.0} %"), "{p}");
        }
    }
}
