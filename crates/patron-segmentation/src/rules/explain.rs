//! Why a customer is or is not in a segment: the values the rule read and the outcome of each of
//! its conditions, rendered back in rule syntax.

use std::fmt;

use super::compile::{ArithOp, CmpOp, Const, Conv, Node, Program, StrOp, Window};
use super::eval::{Eval, Value};

/// One value a rule read, e.g. `rfm.recency_days` = `120`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub expression: String,
    pub value: String,
}

/// One condition of a rule (a comparison or other bool leaf joined by `&&`, `||`, `!`) and
/// what it came to: "true", "false", or "error: …".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub expression: String,
    pub outcome: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub matched: bool,
    /// The rule's value: "true", "false", or "error: …" (not a member).
    pub outcome: String,
    pub conditions: Vec<Condition>,
    pub facts: Vec<Fact>,
}

/// Evaluates `program` and explains the result.
pub fn explain(eval: &Eval<'_, '_>, program: &Program) -> Explanation {
    let result = eval.eval(&program.root);
    let mut conditions = Vec::new();
    collect_conditions(&program.root, eval, &mut conditions);
    let mut facts: Vec<Fact> = Vec::new();
    collect_facts(&program.root, eval, &mut facts);
    Explanation {
        matched: matches!(result, Value::Bool(true)),
        outcome: result.to_string(),
        conditions,
        facts,
    }
}

fn collect_conditions(n: &Node, eval: &Eval<'_, '_>, out: &mut Vec<Condition>) {
    match n {
        Node::And(a, b) | Node::Or(a, b) => {
            collect_conditions(a, eval, out);
            collect_conditions(b, eval, out);
        }
        Node::Not(a) => collect_conditions(a, eval, out),
        other => out.push(Condition {
            expression: other.to_string(),
            outcome: eval.eval(other).to_string(),
        }),
    }
}

fn collect_facts(n: &Node, eval: &Eval<'_, '_>, out: &mut Vec<Fact>) {
    let mut push = |n: &Node| {
        let expression = n.to_string();
        if !out.iter().any(|f| f.expression == expression) {
            let value = match (n, eval.eval(n)) {
                (Node::Attr(_), Value::Err(_)) => "not set".to_owned(),
                (_, v) => v.to_string(),
            };
            out.push(Fact { expression, value });
        }
    };
    match n {
        Node::Var(_) | Node::Attr(_) | Node::Window(_) | Node::InSegment(_) | Node::Loyalty(..) => {
            push(n)
        }
        Node::HasAttr(name) => push(&Node::Attr(name.clone())),
        Node::Const(_) => {}
        Node::Not(a) | Node::Neg(a) | Node::Size(a) | Node::Lower(a) | Node::Conv(_, a) => {
            collect_facts(a, eval, out)
        }
        Node::And(a, b)
        | Node::Or(a, b)
        | Node::Cmp(_, a, b)
        | Node::Arith(_, a, b)
        | Node::Str(_, a, b) => {
            collect_facts(a, eval, out);
            collect_facts(b, eval, out);
        }
        Node::In(a, items) => {
            collect_facts(a, eval, out);
            for i in items {
                collect_facts(i, eval, out);
            }
        }
        Node::Cond(c, y, n) => {
            collect_facts(c, eval, out);
            collect_facts(y, eval, out);
            collect_facts(n, eval, out);
        }
    }
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Const(c) => match c {
                Const::Null => f.write_str("null"),
                Const::Bool(b) => write!(f, "{b}"),
                Const::Int(i) => write!(f, "{i}"),
                Const::Double(d) => {
                    if d.fract() == 0.0 && d.abs() < 1e15 {
                        write!(f, "{d:.1}")
                    } else {
                        write!(f, "{d}")
                    }
                }
                Const::Str(s) => f.write_str(&quote(s)),
            },
            Node::Var(v) => {
                let d = v.doc();
                write!(f, "{}.{}", d.group, d.field)
            }
            Node::Attr(name) => write!(f, "customer.attributes[{}]", quote(name)),
            Node::HasAttr(name) => write!(f, "has(customer.attributes[{}])", quote(name)),
            Node::Window(w) => match w {
                Window::PurchaseCount { days } => write!(f, "purchases.count({days})"),
                Window::PurchaseRevenue { days } => write!(f, "purchases.revenue({days})"),
                Window::EngagementCount {
                    days,
                    activity: None,
                } => write!(f, "engagement.count({days})"),
                Window::EngagementCount {
                    days,
                    activity: Some(a),
                } => write!(f, "engagement.count({days}, {})", quote(a)),
            },
            Node::InSegment(id) => write!(f, "in_segment({})", quote(id)),
            Node::Loyalty(func, program) => {
                use super::compile::LoyaltyFn;
                let name = match func {
                    LoyaltyFn::Enrolled => "enrolled",
                    LoyaltyFn::Points => "points",
                    LoyaltyFn::Pending => "pending",
                    LoyaltyFn::Tier => "tier",
                    LoyaltyFn::TierRank => "tier_rank",
                };
                write!(f, "loyalty.{name}({})", quote(program))
            }
            Node::Not(a) => write!(f, "!({a})"),
            Node::And(a, b) => write!(f, "({a} && {b})"),
            Node::Or(a, b) => write!(f, "({a} || {b})"),
            Node::Cmp(op, a, b) => {
                let op = match op {
                    CmpOp::Eq => "==",
                    CmpOp::Ne => "!=",
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                write!(f, "{a} {op} {b}")
            }
            Node::Arith(op, a, b) => {
                let op = match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                    ArithOp::Mul => "*",
                    ArithOp::Div => "/",
                    ArithOp::Rem => "%",
                };
                write!(f, "({a} {op} {b})")
            }
            Node::Neg(a) => write!(f, "-{a}"),
            Node::In(a, items) => {
                write!(f, "{a} in [")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Node::Cond(c, y, n) => write!(f, "({c} ? {y} : {n})"),
            Node::Str(op, a, b) => {
                let op = match op {
                    StrOp::StartsWith => "startsWith",
                    StrOp::EndsWith => "endsWith",
                    StrOp::Contains => "contains",
                };
                write!(f, "{a}.{op}({b})")
            }
            Node::Size(a) => write!(f, "size({a})"),
            Node::Lower(a) => write!(f, "{a}.lowerAscii()"),
            Node::Conv(c, a) => {
                let name = match c {
                    Conv::Int => "int",
                    Conv::Double => "double",
                    Conv::String => "string",
                };
                write!(f, "{name}({a})")
            }
        }
    }
}
