//! Evaluating a checked rule against one customer's in-memory summary.
//!
//! Semantics follow CEL's: a value that is not known for a customer (`customer.age` without a
//! birth date, a missing custom attribute, a score without a model) makes every comparison or
//! arithmetic on it an *error*; `&&` and `||` absorb an error when the other side decides
//! (`false && error` is false, `true || error` is true), `!error` is an error, and a rule whose
//! result is an error or not `true` does not match. Comparing with `null` is allowed and
//! null-safe: `customer.age == null` is true exactly when the age is unknown.

use std::cell::OnceCell;
use std::fmt;
use std::sync::Arc;

use patron_domain::clv::RfmScore;
use patron_domain::{AttributeValue, Day, Timestamp};
use patron_store::SummaryRow;
use patron_views::engine::State;
use patron_views::model::{DayRfm, Prediction};
use patron_views::profile::{self, Scored, Subject};

use super::compile::{ArithOp, CmpOp, Const, Conv, Node, Program, StrOp, Window};
use super::schema::Var;

/// Why a value is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An operand is null (unknown for this customer).
    Null,
    /// A custom attribute is not set.
    MissingAttribute,
    /// Operand types do not fit (custom attributes only: everything else is checked).
    Type,
    /// Division by zero or integer overflow.
    Arithmetic,
    /// `in_segment` names a segment that no longer exists, or segments nest too deeply.
    Segment,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Fault::Null => "a value it needs is not known for this customer",
            Fault::MissingAttribute => "a custom attribute it reads is not set",
            Fault::Type => "a custom attribute has another type than the rule compares it with",
            Fault::Arithmetic => "division by zero or overflow",
            Fault::Segment => "a segment it refers to no longer exists",
        }
    }
}

/// A runtime string: borrowed from the customer's row, shared with the program, or computed.
#[derive(Debug, Clone)]
pub enum Text<'a> {
    Borrowed(&'a str),
    Shared(Arc<str>),
    Owned(String),
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Shared(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl PartialEq for Text<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// A runtime value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(Text<'a>),
    Err(Fault),
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Double(d) => write!(f, "{d}"),
            Value::Str(s) => write!(f, "{:?}", &**s),
            Value::Err(e) => write!(f, "error: {}", e.describe()),
        }
    }
}

/// Looks up other segments' programs for `in_segment`, and loyalty state for `loyalty.*`.
pub trait SegmentResolver {
    /// Borrowed, not an `Arc` clone: `in_segment` resolves its segment once per customer, and
    /// every core evaluating a count would bump the one shared reference count each time.
    fn program(&self, id: &str) -> Option<&Program>;

    fn loyalty(&self) -> Option<&dyn LoyaltyFacts> {
        None
    }
}

/// One member's loyalty state at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFacts {
    pub points: i64,
    pub pending: i64,
    pub tier: Option<String>,
    pub tier_rank: Option<i64>,
}

/// Loyalty state, provided by the loyalty service (which depends on this crate, not the reverse).
pub trait LoyaltyFacts: Send + Sync + std::fmt::Debug {
    fn program_exists(&self, program: &str) -> bool;
    /// `None` when the customer is not a member of the program.
    fn member(
        &self,
        customer: &patron_domain::CustomerId,
        program: &str,
        now: Timestamp,
    ) -> Option<MemberFacts>;
}

/// How deeply `in_segment` may nest at evaluation (cycles are refused when saving; this only
/// guards against one created by a race between two processes).
const MAX_NESTING: u8 = 16;

/// One customer, as rules see it. Model-dependent values are computed once, on first use.
pub struct Facts<'a> {
    pub row: &'a SummaryRow,
    pub state: &'a State,
    pub now: Timestamp,
    pub today: Day,
    /// Computed on first use, each only as far as the rule needs: RFM scores are quantile
    /// lookups, P(alive) one closed form, predictions (CLV) the expensive part, and the whole
    /// profile (tier, quadrant) everything.
    day_rfm: OnceCell<Option<DayRfm>>,
    rfm_score: OnceCell<Option<RfmScore>>,
    p_alive: OnceCell<Option<f64>>,
    prediction: OnceCell<Option<Prediction>>,
    scored: OnceCell<Scored>,
}

impl fmt::Debug for Facts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Facts")
            .field("customer_id", &self.row.customer_id)
            .field("today", &self.today)
            .finish()
    }
}

impl<'a> Facts<'a> {
    pub fn new(row: &'a SummaryRow, state: &'a State, now: Timestamp) -> Self {
        Self {
            row,
            state,
            now,
            today: now.day(),
            day_rfm: OnceCell::new(),
            rfm_score: OnceCell::new(),
            p_alive: OnceCell::new(),
            prediction: OnceCell::new(),
            scored: OnceCell::new(),
        }
    }

    fn day_rfm(&self) -> Option<&DayRfm> {
        self.day_rfm
            .get_or_init(|| {
                DayRfm::for_model(
                    &self.row.summary,
                    &self.row.orders,
                    self.now,
                    self.state.model.as_deref(),
                )
            })
            .as_ref()
    }

    fn rfm_score(&self) -> Option<RfmScore> {
        *self.rfm_score.get_or_init(|| {
            profile::rfm_score(
                self.state.model.as_deref(),
                self.day_rfm(),
                self.row.summary.purchases.net_revenue,
            )
        })
    }

    fn prediction(&self) -> Option<Prediction> {
        *self.prediction.get_or_init(|| {
            let model = self.state.model.as_deref()?;
            model.predict(self.day_rfm()?)
        })
    }

    fn p_alive(&self) -> Option<f64> {
        *self.p_alive.get_or_init(|| {
            if let Some(p) = self.prediction.get() {
                return p.map(|p| p.probability_alive);
            }
            let model = self.state.model.as_deref()?;
            model.probability_alive(self.day_rfm()?)
        })
    }

    fn scored(&self) -> &Scored {
        self.scored.get_or_init(|| {
            let subject = Subject {
                customer_id: self.row.customer_id.as_str(),
                summary: &self.row.summary,
                orders: &self.row.orders,
                since: Some(self.since()),
            };
            profile::compute(&subject, self.now, self.state)
        })
    }

    fn since(&self) -> Timestamp {
        self.row.since()
    }

    fn days_to_today(&self, day: Day) -> i64 {
        i64::from(self.today.as_days()) - i64::from(day.as_days())
    }

    pub fn var(&self, v: Var) -> Value<'a> {
        let row = self.row;
        let s = &row.summary;
        let opt_int = |x: Option<i64>| x.map_or(Value::Null, Value::Int);
        let opt_f = |x: Option<f64>| {
            x.filter(|x| x.is_finite())
                .map_or(Value::Null, Value::Double)
        };
        let name =
            |x: Option<&'static str>| x.map_or(Value::Null, |s| Value::Str(Text::Borrowed(s)));
        match v {
            Var::CustomerId => Value::Str(Text::Borrowed(row.customer_id.as_str())),
            Var::Age => opt_int(row.birth_date.and_then(|b| age_on(b, self.today))),
            Var::Gender => Value::Str(Text::Borrowed(row.gender.as_str())),
            Var::Country => row
                .country
                .as_deref()
                .map_or(Value::Null, |c| Value::Str(Text::Borrowed(c))),
            Var::TenureDays => Value::Int(
                ((self.now.as_micros() - self.since().as_micros()) / 86_400_000_000).max(0),
            ),
            Var::RecencyDays | Var::PurchasesDaysSinceLast => opt_int(
                s.purchases
                    .last_purchase_day
                    .map(|d| self.days_to_today(d).max(0)),
            ),
            Var::Frequency => opt_int(s.purchases.first_purchase_day.map(|_| s.frequency())),
            Var::MonetaryTotal | Var::PurchasesTotalRevenue => Value::Int(s.purchases.net_revenue),
            Var::PurchasesTotalCount => {
                Value::Int(i64::try_from(row.orders.len()).unwrap_or(i64::MAX))
            }
            Var::EngagementTotal => Value::Int(s.totals.engagement_count),
            Var::EngagementDaysSinceLast => opt_int(
                s.totals
                    .last_engagement_at
                    .map(|t| self.days_to_today(t.day()).max(0)),
            ),
            Var::RScore => opt_int(self.rfm_score().map(|r| i64::from(r.r()))),
            Var::FScore => opt_int(self.rfm_score().map(|r| i64::from(r.f()))),
            Var::MScore => opt_int(self.rfm_score().map(|r| i64::from(r.m()))),
            Var::RfmSegment => name(self.rfm_score().map(|r| r.segment().name())),
            Var::PredictedClv => opt_int(
                self.prediction()
                    .and_then(|p| p.predicted_clv)
                    .and_then(patron_domain::value::clv_minor_units),
            ),
            Var::ProbabilityAlive => opt_f(self.p_alive()),
            Var::Tier => match &self.scored().tier {
                Some(t) => Value::Str(Text::Owned(t.name.clone())),
                None => Value::Null,
            },
            Var::TierRank => opt_int(self.scored().tier.as_ref().map(|t| i64::from(t.rank))),
            Var::ValueIndex => opt_f(self.scored().perceived.value_index),
            Var::Quadrant => Value::Str(Text::Borrowed(self.scored().quadrant.name())),
            Var::Csat => opt_f(self.scored().satisfaction.csat),
            Var::Nps => opt_int(s.totals.last_nps.map(i64::from)),
            Var::NpsCategory => name(
                s.totals
                    .last_nps
                    .and_then(patron_domain::value::NpsCategory::from_answer)
                    .map(|c| c.name()),
            ),
            Var::ChurnRisk => {
                let level = match (self.state.model.as_deref(), self.day_rfm()) {
                    (Some(m), Some(c)) => m.churn_risk(c, self.p_alive()).level,
                    _ => patron_domain::value::ChurnLevel::Unknown,
                };
                if level == patron_domain::value::ChurnLevel::Unknown {
                    Value::Null
                } else {
                    Value::Str(Text::Borrowed(level.name()))
                }
            }
        }
    }

    pub fn attribute(&self, name: &str) -> Value<'a> {
        let found = self
            .row
            .attributes
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v);
        match found {
            None => Value::Err(Fault::MissingAttribute),
            Some(AttributeValue::String(s)) => Value::Str(Text::Borrowed(s.as_str())),
            Some(AttributeValue::Int(i)) => Value::Int(*i),
            Some(AttributeValue::Double(d)) => Value::Double(*d),
            Some(AttributeValue::Bool(b)) => Value::Bool(*b),
            Some(AttributeValue::Date(d)) => Value::Str(Text::Owned(d.to_string())),
        }
    }

    pub fn window(&self, w: &Window) -> Value<'a> {
        let first_day = |days: i32| self.today.as_days() - days + 1;
        let today = self.today.as_days();
        match w {
            Window::PurchaseCount { days } | Window::PurchaseRevenue { days } => {
                let from = first_day(*days);
                let orders = &self.row.orders;
                let start = orders.partition_point(|o| o.day.as_days() < from);
                let mut in_window = orders[start..]
                    .iter()
                    .take_while(|o| o.day.as_days() <= today);
                if matches!(w, Window::PurchaseCount { .. }) {
                    Value::Int(i64::try_from(in_window.count()).unwrap_or(i64::MAX))
                } else {
                    in_window
                        .try_fold(0i64, |acc, o| acc.checked_add(o.net_amount))
                        .map_or(Value::Err(Fault::Arithmetic), Value::Int)
                }
            }
            Window::EngagementCount { days, activity } => {
                let from = first_day(*days);
                let rows = &self.row.engagement;
                let start = rows.partition_point(|r| r.day.as_days() < from);
                let total = rows[start..]
                    .iter()
                    .take_while(|r| r.day.as_days() <= today)
                    .filter(|r| activity.as_deref().is_none_or(|a| &*r.activity == a))
                    .map(|r| r.count)
                    .fold(0i64, i64::saturating_add);
                Value::Int(total)
            }
        }
    }
}

/// Whole years from `birth` to `today`: a year is complete on the birthday (29 February counts
/// on 1 March in years without one). `None` if `today` is before the birth.
pub fn age_on(birth: patron_domain::Date, today: Day) -> Option<i64> {
    let t = today.date();
    let mut years = i64::from(t.year()) - i64::from(birth.year());
    if (t.month(), t.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    (years >= 0 && birth.to_day() <= today).then_some(years)
}

/// Evaluation state for one customer.
pub struct Eval<'f, 'a> {
    pub facts: &'f Facts<'a>,
    pub segments: &'f dyn SegmentResolver,
    depth: u8,
}

impl fmt::Debug for Eval<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Eval").field("facts", self.facts).finish()
    }
}

fn truthy(v: &Value<'_>) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

impl<'f, 'a> Eval<'f, 'a> {
    pub fn new(facts: &'f Facts<'a>, segments: &'f dyn SegmentResolver) -> Self {
        Self {
            facts,
            segments,
            depth: 0,
        }
    }

    /// Whether the program matches this customer.
    pub fn matches(&self, program: &Program) -> bool {
        matches!(self.eval(&program.root), Value::Bool(true))
    }

    pub fn eval(&self, n: &Node) -> Value<'a> {
        match n {
            Node::Const(c) => match c {
                Const::Null => Value::Null,
                Const::Bool(b) => Value::Bool(*b),
                Const::Int(i) => Value::Int(*i),
                Const::Double(d) => Value::Double(*d),
                Const::Str(s) => Value::Str(Text::Shared(Arc::clone(s))),
            },
            Node::Var(v) => self.facts.var(*v),
            Node::Attr(name) => self.facts.attribute(name),
            Node::HasAttr(name) => Value::Bool(!matches!(
                self.facts.attribute(name),
                Value::Err(Fault::MissingAttribute)
            )),
            Node::Window(w) => self.facts.window(w),
            Node::InSegment(id) => self.in_segment(id),
            Node::Loyalty(f, program) => {
                let member = self
                    .segments
                    .loyalty()
                    .and_then(|l| l.member(&self.facts.row.customer_id, program, self.facts.now));
                use super::compile::LoyaltyFn;
                match (f, member) {
                    (LoyaltyFn::Enrolled, m) => Value::Bool(m.is_some()),
                    (_, None) => Value::Null,
                    (LoyaltyFn::Points, Some(m)) => Value::Int(m.points),
                    (LoyaltyFn::Pending, Some(m)) => Value::Int(m.pending),
                    (LoyaltyFn::Tier, Some(m)) => {
                        m.tier.map_or(Value::Null, |t| Value::Str(Text::Owned(t)))
                    }
                    (LoyaltyFn::TierRank, Some(m)) => m.tier_rank.map_or(Value::Null, Value::Int),
                }
            }
            Node::Not(a) => match self.eval(a) {
                Value::Bool(b) => Value::Bool(!b),
                Value::Err(e) => Value::Err(e),
                _ => Value::Err(Fault::Type),
            },
            Node::And(a, b) => {
                let va = self.eval(a);
                if truthy(&va) == Some(false) {
                    return Value::Bool(false);
                }
                let vb = self.eval(b);
                match (truthy(&va), truthy(&vb)) {
                    (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Err(first_fault(&va, &vb)),
                }
            }
            Node::Or(a, b) => {
                let va = self.eval(a);
                if truthy(&va) == Some(true) {
                    return Value::Bool(true);
                }
                let vb = self.eval(b);
                match (truthy(&va), truthy(&vb)) {
                    (_, Some(true)) => Value::Bool(true),
                    (Some(false), Some(false)) => Value::Bool(false),
                    _ => Value::Err(first_fault(&va, &vb)),
                }
            }
            Node::Cmp(op, a, b) => compare(*op, &self.eval(a), &self.eval(b)),
            Node::Arith(op, a, b) => arith(*op, self.eval(a), self.eval(b)),
            Node::Neg(a) => match self.eval(a) {
                Value::Int(i) => i
                    .checked_neg()
                    .map_or(Value::Err(Fault::Arithmetic), Value::Int),
                Value::Double(d) => Value::Double(-d),
                Value::Null => Value::Err(Fault::Null),
                Value::Err(e) => Value::Err(e),
                _ => Value::Err(Fault::Type),
            },
            Node::In(a, items) => {
                let va = self.eval(a);
                if let Value::Err(e) = va {
                    return Value::Err(e);
                }
                let mut fault = None;
                for item in items {
                    match compare(CmpOp::Eq, &va, &self.eval(item)) {
                        Value::Bool(true) => return Value::Bool(true),
                        Value::Err(e) => fault = fault.or(Some(e)),
                        _ => {}
                    }
                }
                fault.map_or(Value::Bool(false), Value::Err)
            }
            Node::Cond(c, y, n) => match self.eval(c) {
                Value::Bool(true) => self.eval(y),
                Value::Bool(false) => self.eval(n),
                Value::Err(e) => Value::Err(e),
                _ => Value::Err(Fault::Type),
            },
            Node::Str(op, a, b) => match (self.eval(a), self.eval(b)) {
                (Value::Str(a), Value::Str(b)) => Value::Bool(match op {
                    StrOp::StartsWith => a.starts_with(&*b),
                    StrOp::EndsWith => a.ends_with(&*b),
                    StrOp::Contains => a.contains(&*b),
                }),
                (Value::Err(e), _) | (_, Value::Err(e)) => Value::Err(e),
                (Value::Null, _) | (_, Value::Null) => Value::Err(Fault::Null),
                _ => Value::Err(Fault::Type),
            },
            Node::Size(a) => match self.eval(a) {
                Value::Str(s) => Value::Int(i64::try_from(s.chars().count()).unwrap_or(i64::MAX)),
                Value::Err(e) => Value::Err(e),
                Value::Null => Value::Err(Fault::Null),
                _ => Value::Err(Fault::Type),
            },
            Node::Lower(a) => match self.eval(a) {
                Value::Str(s) => Value::Str(Text::Owned(s.to_ascii_lowercase())),
                Value::Err(e) => Value::Err(e),
                Value::Null => Value::Err(Fault::Null),
                _ => Value::Err(Fault::Type),
            },
            Node::Conv(conv, a) => convert(*conv, self.eval(a)),
        }
    }

    fn in_segment(&self, id: &str) -> Value<'a> {
        if self.depth >= MAX_NESTING {
            return Value::Err(Fault::Segment);
        }
        let Some(program) = self.segments.program(id) else {
            return Value::Err(Fault::Segment);
        };
        let inner = Eval {
            facts: self.facts,
            segments: self.segments,
            depth: self.depth + 1,
        };
        Value::Bool(inner.matches(program))
    }
}

fn first_fault(a: &Value<'_>, b: &Value<'_>) -> Fault {
    match (a, b) {
        (Value::Err(e), _) | (_, Value::Err(e)) => *e,
        _ => Fault::Type,
    }
}

fn num(v: &Value<'_>) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        _ => None,
    }
}

fn compare(op: CmpOp, a: &Value<'_>, b: &Value<'_>) -> Value<'static> {
    use std::cmp::Ordering;
    if let Value::Err(e) = a {
        return Value::Err(*e);
    }
    if let Value::Err(e) = b {
        return Value::Err(*e);
    }
    let ord: Option<Ordering> = match (a, b) {
        (Value::Null, Value::Null) => Some(Ordering::Equal),
        (Value::Null, _) | (_, Value::Null) => {
            return match op {
                CmpOp::Eq => Value::Bool(false),
                CmpOp::Ne => Value::Bool(true),
                _ => Value::Err(Fault::Null),
            };
        }
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some((**x).cmp(&**y)),
        (Value::Bool(x), Value::Bool(y)) => match op {
            CmpOp::Eq | CmpOp::Ne => Some(x.cmp(y)),
            _ => return Value::Err(Fault::Type),
        },
        (x, y) => match (num(x), num(y)) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => return Value::Err(Fault::Type),
        },
    };
    let Some(ord) = ord else {
        // NaN compares false except for !=.
        return Value::Bool(op == CmpOp::Ne);
    };
    Value::Bool(match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
    })
}

fn arith<'a>(op: ArithOp, a: Value<'a>, b: Value<'a>) -> Value<'a> {
    match (a, b) {
        (Value::Err(e), _) | (_, Value::Err(e)) => Value::Err(e),
        (Value::Null, _) | (_, Value::Null) => Value::Err(Fault::Null),
        (Value::Int(x), Value::Int(y)) => {
            let r = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
                ArithOp::Div => x.checked_div(y),
                ArithOp::Rem => x.checked_rem(y),
            };
            r.map_or(Value::Err(Fault::Arithmetic), Value::Int)
        }
        (Value::Str(x), Value::Str(y)) if op == ArithOp::Add => {
            Value::Str(Text::Owned(format!("{}{}", &*x, &*y)))
        }
        (x, y) => match (num(&x), num(&y)) {
            (Some(x), Some(y)) => {
                let r = match op {
                    ArithOp::Add => x + y,
                    ArithOp::Sub => x - y,
                    ArithOp::Mul => x * y,
                    ArithOp::Div => x / y,
                    ArithOp::Rem => return Value::Err(Fault::Type),
                };
                if r.is_finite() {
                    Value::Double(r)
                } else {
                    Value::Err(Fault::Arithmetic)
                }
            }
            _ => Value::Err(Fault::Type),
        },
    }
}

fn convert<'a>(conv: Conv, v: Value<'a>) -> Value<'a> {
    match (conv, v) {
        (_, Value::Err(e)) => Value::Err(e),
        (_, Value::Null) => Value::Err(Fault::Null),
        (Conv::Int, Value::Int(i)) => Value::Int(i),
        (Conv::Int, Value::Double(d)) => {
            if d.is_finite() && d.abs() < 9.2e18 {
                Value::Int(d.trunc() as i64)
            } else {
                Value::Err(Fault::Arithmetic)
            }
        }
        (Conv::Int, Value::Str(s)) => s
            .trim()
            .parse::<i64>()
            .map_or(Value::Err(Fault::Type), Value::Int),
        (Conv::Double, Value::Int(i)) => Value::Double(i as f64),
        (Conv::Double, Value::Double(d)) => Value::Double(d),
        (Conv::Double, Value::Str(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|d| d.is_finite())
            .map_or(Value::Err(Fault::Type), Value::Double),
        (Conv::String, Value::Str(s)) => Value::Str(s),
        (Conv::String, Value::Int(i)) => Value::Str(Text::Owned(i.to_string())),
        (Conv::String, Value::Double(d)) => Value::Str(Text::Owned(d.to_string())),
        (Conv::String, Value::Bool(b)) => Value::Str(Text::Owned(b.to_string())),
        _ => Value::Err(Fault::Type),
    }
}
