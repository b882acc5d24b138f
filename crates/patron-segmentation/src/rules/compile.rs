//! From CEL source to a checked program: parse with the `cel` crate, then type-check and lower
//! the syntax tree into [`Node`]s that evaluate directly against a customer's in-memory summary.

use std::collections::BTreeSet;
use std::sync::Arc;

use cel::common::ast::{CallExpr, Expr, IdedExpr, LiteralValue, SelectExpr, SourceInfo};

use super::schema::{self, GROUPS, MAX_WINDOW_DAYS, Ty, Var};

/// The longest rule accepted, in bytes.
pub const MAX_RULE_BYTES: usize = 4096;
/// The most syntax nodes a rule may have.
pub const MAX_RULE_NODES: usize = 500;
/// The deepest nesting the parser accepts.
const MAX_DEPTH: u16 = 48;

/// What is wrong with a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleErrorKind {
    /// Empty rule.
    Empty,
    /// Longer than [`MAX_RULE_BYTES`] or more than [`MAX_RULE_NODES`] nodes or too deeply nested.
    TooLarge,
    /// Does not parse.
    Syntax,
    /// Names a variable or field that does not exist.
    UnknownVariable,
    /// Operands or arguments of the wrong type, or a rule that is not a bool.
    Type,
    /// CEL that Patron's rules do not support (macros, maps, bytes, …).
    Unsupported,
    /// `in_segment` names no stored or built-in segment.
    UnknownSegment,
    /// `loyalty.*` names no loyalty program.
    UnknownProgram,
}

/// A rule error with its 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub kind: RuleErrorKind,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl std::fmt::Display for RuleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// A constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(Arc<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOp {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv {
    Int,
    Double,
    String,
}

/// A windowed aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Window {
    PurchaseCount {
        days: i32,
    },
    PurchaseRevenue {
        days: i32,
    },
    EngagementCount {
        days: i32,
        activity: Option<Arc<str>>,
    },
}

/// A loyalty value of one program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoyaltyFn {
    Enrolled,
    Points,
    Pending,
    Tier,
    TierRank,
}

/// A checked expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Const(Const),
    Var(Var),
    Attr(Arc<str>),
    HasAttr(Arc<str>),
    Window(Window),
    InSegment(Arc<str>),
    Loyalty(LoyaltyFn, Arc<str>),
    Not(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    Neg(Box<Node>),
    In(Box<Node>, Vec<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Str(StrOp, Box<Node>, Box<Node>),
    Size(Box<Node>),
    Lower(Box<Node>),
    Conv(Conv, Box<Node>),
}

/// A checked rule, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Program {
    pub source: String,
    pub(crate) root: Node,
    /// Every segment named by `in_segment`, sorted.
    pub segments: Vec<String>,
    /// Whether membership can change with time alone (windows, ages, recency, model scores).
    pub time_relative: bool,
}

/// Which segment ids exist, for checking `in_segment` (and loyalty programs, for `loyalty.*`).
pub trait SegmentCatalog {
    fn exists(&self, id: &str) -> bool;

    /// Whether a loyalty program exists; `None` when loyalty is not available at all.
    fn program_exists(&self, _id: &str) -> Option<bool> {
        Some(true)
    }
}

impl<F: Fn(&str) -> bool> SegmentCatalog for F {
    fn exists(&self, id: &str) -> bool {
        self(id)
    }
}

/// Parses and checks a rule.
pub fn compile(source: &str, catalog: &dyn SegmentCatalog) -> Result<Program, RuleError> {
    if source.trim().is_empty() {
        return Err(RuleError {
            kind: RuleErrorKind::Empty,
            line: 1,
            column: 1,
            message: "the rule is empty".into(),
        });
    }
    if source.len() > MAX_RULE_BYTES {
        return Err(RuleError {
            kind: RuleErrorKind::TooLarge,
            line: 1,
            column: 1,
            message: format!(
                "the rule is {} bytes; at most {MAX_RULE_BYTES} are accepted",
                source.len()
            ),
        });
    }
    if let Some((line, column)) = too_deep(source) {
        return Err(RuleError {
            kind: RuleErrorKind::TooLarge,
            line,
            column,
            message: format!("the rule nests brackets more than {MAX_NESTING} deep"),
        });
    }
    let parsed = std::panic::catch_unwind(|| {
        cel::parser::Parser::new()
            .max_recursion_depth(MAX_DEPTH)
            .parse_with_source_info(source)
    });
    let (expr, info) = match parsed {
        Ok(Ok(p)) => p,
        Ok(Err(errors)) => {
            let first = errors.errors.first();
            let (line, column) = first
                .map(|e| (clamp_pos(e.pos.0), clamp_pos(e.pos.1)))
                .unwrap_or((1, 1));
            let message = first.map_or_else(|| "syntax error".to_owned(), |e| e.msg.clone());
            let kind = if message.contains("recursion") || message.contains("depth") {
                RuleErrorKind::TooLarge
            } else {
                RuleErrorKind::Syntax
            };
            return Err(RuleError {
                kind,
                line,
                column,
                message,
            });
        }
        Err(_) => {
            return Err(RuleError {
                kind: RuleErrorKind::Syntax,
                line: 1,
                column: 1,
                message: "the rule could not be parsed".into(),
            });
        }
    };
    let mut c = Compiler {
        source,
        info: &info,
        catalog,
        nodes: 0,
        segments: BTreeSet::new(),
        time_relative: false,
    };
    let (root, ty) = c.expr(&expr)?;
    if !matches!(ty, Ty::Bool | Ty::Dyn) {
        return Err(c.error(
            &expr,
            RuleErrorKind::Type,
            format!("a rule must be a bool (a condition), not {ty}"),
        ));
    }
    Ok(Program {
        source: source.to_owned(),
        root,
        segments: c.segments.into_iter().collect(),
        time_relative: c.time_relative,
    })
}

/// The deepest bracket nesting accepted.
const MAX_NESTING: u32 = 32;

/// Where brackets first nest deeper than [`MAX_NESTING`] (outside string literals).
fn too_deep(source: &str) -> Option<(u32, u32)> {
    let (mut depth, mut line, mut column) = (0u32, 1u32, 0u32);
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for ch in source.chars() {
        column += 1;
        if ch == '\n' {
            line += 1;
            column = 0;
        }
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if ch == '\\' {
                escaped = true;
            } else if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '"' | '\'' => quote = Some(ch),
            '(' | '[' | '{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some((line, column));
                }
            }
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn clamp_pos(p: isize) -> u32 {
    u32::try_from(p.max(1)).unwrap_or(1)
}

struct Compiler<'a> {
    source: &'a str,
    info: &'a SourceInfo,
    catalog: &'a dyn SegmentCatalog,
    nodes: usize,
    segments: BTreeSet<String>,
    time_relative: bool,
}

type Typed = (Node, Ty);

fn is_ident(e: &IdedExpr, name: &str) -> bool {
    matches!(&e.expr, Expr::Ident(n) if n == name)
}

impl Compiler<'_> {
    fn position(&self, e: &IdedExpr) -> (u32, u32) {
        let Some((start, _)) = self.info.offset_for(e.id) else {
            return (1, 1);
        };
        let start = usize::try_from(start).unwrap_or(0).min(self.source.len());
        let mut line = 1u32;
        let mut column = 1u32;
        for (i, ch) in self.source.char_indices() {
            if i >= start {
                break;
            }
            if ch == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        (line, column)
    }

    fn error(&self, e: &IdedExpr, kind: RuleErrorKind, message: impl Into<String>) -> RuleError {
        let (line, column) = self.position(e);
        RuleError {
            kind,
            line,
            column,
            message: message.into(),
        }
    }

    fn expr(&mut self, e: &IdedExpr) -> Result<Typed, RuleError> {
        self.nodes += 1;
        if self.nodes > MAX_RULE_NODES {
            return Err(self.error(
                e,
                RuleErrorKind::TooLarge,
                format!("the rule has more than {MAX_RULE_NODES} parts"),
            ));
        }
        match &e.expr {
            Expr::Literal(l) => self.literal(e, l),
            Expr::Ident(name) => Err(self.unknown_ident(e, name)),
            Expr::Select(s) => self.select(e, s),
            Expr::Call(c) => self.call(e, c),
            Expr::List(_) => Err(self.error(
                e,
                RuleErrorKind::Unsupported,
                "a list may only appear on the right of `in`",
            )),
            Expr::Map(_) | Expr::Struct(_) => Err(self.error(
                e,
                RuleErrorKind::Unsupported,
                "map and message literals are not supported in segment rules",
            )),
            Expr::Comprehension(_) => Err(self.error(
                e,
                RuleErrorKind::Unsupported,
                "macros (all, exists, exists_one, map, filter) are not supported in segment rules",
            )),
            Expr::Unspecified => Err(self.error(e, RuleErrorKind::Syntax, "incomplete expression")),
        }
    }

    fn literal(&self, e: &IdedExpr, l: &LiteralValue) -> Result<Typed, RuleError> {
        Ok(match l {
            LiteralValue::Boolean(b) => (Node::Const(Const::Bool(*b.inner())), Ty::Bool),
            LiteralValue::Int(i) => (Node::Const(Const::Int(*i.inner())), Ty::Int),
            LiteralValue::UInt(u) => match i64::try_from(*u.inner()) {
                Ok(i) => (Node::Const(Const::Int(i)), Ty::Int),
                Err(_) => {
                    return Err(self.error(e, RuleErrorKind::Type, "integer literal too large"));
                }
            },
            LiteralValue::Double(d) => (Node::Const(Const::Double(*d.inner())), Ty::Double),
            LiteralValue::String(s) => (Node::Const(Const::Str(Arc::from(s.inner()))), Ty::String),
            LiteralValue::Null => (Node::Const(Const::Null), Ty::Null),
            LiteralValue::Bytes(_) => {
                return Err(self.error(
                    e,
                    RuleErrorKind::Unsupported,
                    "bytes literals are not supported in segment rules",
                ));
            }
        })
    }

    fn unknown_ident(&self, e: &IdedExpr, name: &str) -> RuleError {
        if GROUPS.contains(&name) {
            self.error(
                e,
                RuleErrorKind::UnknownVariable,
                format!(
                    "`{name}` is a group of variables; use one of its fields: {name}.{}",
                    schema::fields_of(name).join(format!(", {name}.").as_str())
                ),
            )
        } else {
            self.error(
                e,
                RuleErrorKind::UnknownVariable,
                format!(
                    "unknown variable `{name}`; the variables are {}",
                    GROUPS.join(", ")
                ),
            )
        }
    }

    /// `customer.attributes.NAME`, or a plain variable `group.field`.
    fn select(&mut self, e: &IdedExpr, s: &SelectExpr) -> Result<Typed, RuleError> {
        if let Some(name) = self.attribute_name(s) {
            if s.test {
                return Ok((Node::HasAttr(name), Ty::Bool));
            }
            return Ok((Node::Attr(name), Ty::Dyn));
        }
        if s.test {
            return Err(self.error(
                e,
                RuleErrorKind::Unsupported,
                "has() applies to custom attributes only: has(customer.attributes.NAME)",
            ));
        }
        let Expr::Ident(group) = &s.operand.expr else {
            return Err(self.error(
                e,
                RuleErrorKind::UnknownVariable,
                format!("unknown field `{}`", s.field),
            ));
        };
        if !GROUPS.contains(&group.as_str()) {
            return Err(self.unknown_ident(&s.operand, group));
        }
        if group == "customer" && s.field == "attributes" {
            return Err(self.error(
                e,
                RuleErrorKind::Type,
                "customer.attributes is a map; read one attribute: customer.attributes.NAME or customer.attributes[\"NAME\"]",
            ));
        }
        let Some(doc) = schema::lookup(group, &s.field) else {
            return Err(self.error(
                e,
                RuleErrorKind::UnknownVariable,
                format!(
                    "unknown variable `{group}.{}`; {group} has: {}",
                    s.field,
                    schema::fields_of(group).join(", ")
                ),
            ));
        };
        if doc.var.time_relative() {
            self.time_relative = true;
        }
        Ok((Node::Var(doc.var), doc.ty))
    }

    fn attribute_name(&self, s: &SelectExpr) -> Option<Arc<str>> {
        match &s.operand.expr {
            Expr::Select(inner)
                if !inner.test
                    && inner.field == "attributes"
                    && is_ident(&inner.operand, "customer") =>
            {
                Some(Arc::from(s.field.as_str()))
            }
            _ => None,
        }
    }

    fn is_attributes_map(e: &IdedExpr) -> bool {
        matches!(&e.expr, Expr::Select(s) if !s.test && s.field == "attributes" && is_ident(&s.operand, "customer"))
    }

    /// The arguments of a call that takes exactly `N`, as an array: the caller destructures it
    /// without a fallback, so no call site has a branch for a count it cannot get.
    fn args<'e, const N: usize>(
        &self,
        e: &IdedExpr,
        c: &'e CallExpr,
    ) -> Result<&'e [IdedExpr; N], RuleError> {
        <&[IdedExpr; N]>::try_from(c.args.as_slice()).map_err(|_| {
            self.error(
                e,
                RuleErrorKind::Type,
                format!(
                    "{}() takes {N} argument{}, not {}",
                    display_name(&c.func_name),
                    if N == 1 { "" } else { "s" },
                    c.args.len()
                ),
            )
        })
    }

    /// A call: an operator, a global function, or (with a target) a method.
    fn call(&mut self, e: &IdedExpr, c: &CallExpr) -> Result<Typed, RuleError> {
        use cel::common::ast::operators as op;
        if let Some(target) = &c.target {
            return self.method(e, target, c);
        }
        let f = c.func_name.as_str();
        match f {
            op::LOGICAL_AND | op::LOGICAL_OR => self.logical(e, c, f),
            op::LOGICAL_NOT => {
                let [a] = self.args(e, c)?;
                let (na, ta) = self.expr(a)?;
                self.want_bool(a, ta)?;
                Ok((Node::Not(Box::new(na)), Ty::Bool))
            }
            op::EQUALS
            | op::NOT_EQUALS
            | op::LESS
            | op::LESS_EQUALS
            | op::GREATER
            | op::GREATER_EQUALS => self.comparison(e, c, f),
            op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO => {
                self.arithmetic(e, c, f)
            }
            op::NEGATE => {
                let [a] = self.args(e, c)?;
                let (na, ta) = self.expr(a)?;
                if !(ta.is_numeric() || ta == Ty::Dyn) {
                    return Err(self.error(e, RuleErrorKind::Type, format!("cannot negate {ta}")));
                }
                Ok((Node::Neg(Box::new(na)), ta))
            }
            op::CONDITIONAL => self.conditional(e, c),
            op::IN => self.in_list(e, c),
            op::INDEX => self.attribute_index(e, c),
            "in_segment" => self.in_segment(e, c),
            "size" => {
                let [a] = self.args(e, c)?;
                let (na, ta) = self.expr(a)?;
                self.want(a, ta, Ty::String, "size")?;
                Ok((Node::Size(Box::new(na)), Ty::Int))
            }
            "int" | "double" | "string" => self.conversion(e, c, f),
            "has" => Err(self.error(
                e,
                RuleErrorKind::Unsupported,
                "has() applies to custom attributes only: has(customer.attributes.NAME)",
            )),
            other => Err(self.error(
                e,
                RuleErrorKind::UnknownVariable,
                format!(
                    "unknown function `{}`; see the documented functions (in_segment, size, int, double, string, purchases.count, purchases.revenue, engagement.count)",
                    display_name(other)
                ),
            )),
        }
    }

    /// `a && b`, `a || b`.
    fn logical(&mut self, e: &IdedExpr, c: &CallExpr, f: &str) -> Result<Typed, RuleError> {
        let [a, b] = self.args(e, c)?;
        let (na, ta) = self.expr(a)?;
        let (nb, tb) = self.expr(b)?;
        self.want_bool(a, ta)?;
        self.want_bool(b, tb)?;
        let node = if f == cel::common::ast::operators::LOGICAL_AND {
            Node::And(Box::new(na), Box::new(nb))
        } else {
            Node::Or(Box::new(na), Box::new(nb))
        };
        Ok((node, Ty::Bool))
    }

    /// `==`, `!=`, `<`, `<=`, `>`, `>=`: equality between like types (numbers with numbers,
    /// anything with null or dyn), order between numbers or between strings.
    fn comparison(&mut self, e: &IdedExpr, c: &CallExpr, f: &str) -> Result<Typed, RuleError> {
        use cel::common::ast::operators as op;
        let [a, b] = self.args(e, c)?;
        let (na, ta) = self.expr(a)?;
        let (nb, tb) = self.expr(b)?;
        let cmp = match f {
            op::EQUALS => CmpOp::Eq,
            op::NOT_EQUALS => CmpOp::Ne,
            op::LESS => CmpOp::Lt,
            op::LESS_EQUALS => CmpOp::Le,
            op::GREATER => CmpOp::Gt,
            _ => CmpOp::Ge,
        };
        let ok = match cmp {
            CmpOp::Eq | CmpOp::Ne => {
                ta == tb
                    || (ta.is_numeric() && tb.is_numeric())
                    || matches!(ta, Ty::Null | Ty::Dyn)
                    || matches!(tb, Ty::Null | Ty::Dyn)
            }
            _ => {
                (ta.is_numeric() || ta == Ty::Dyn) && (tb.is_numeric() || tb == Ty::Dyn)
                    || (matches!(ta, Ty::String | Ty::Dyn) && matches!(tb, Ty::String | Ty::Dyn))
            }
        };
        if !ok {
            return Err(self.error(
                e,
                RuleErrorKind::Type,
                format!("cannot compare {ta} with {tb} using {}", display_name(f)),
            ));
        }
        Ok((Node::Cmp(cmp, Box::new(na), Box::new(nb)), Ty::Bool))
    }

    /// `+`, `-`, `*`, `/`, `%`: int with int is int, other numbers double (not `%`), `+` also
    /// joins strings.
    fn arithmetic(&mut self, e: &IdedExpr, c: &CallExpr, f: &str) -> Result<Typed, RuleError> {
        use cel::common::ast::operators as op;
        let [a, b] = self.args(e, c)?;
        let (na, ta) = self.expr(a)?;
        let (nb, tb) = self.expr(b)?;
        let arith = match f {
            op::ADD => ArithOp::Add,
            op::SUBSTRACT => ArithOp::Sub,
            op::MULTIPLY => ArithOp::Mul,
            op::DIVIDE => ArithOp::Div,
            _ => ArithOp::Rem,
        };
        let ty = match (ta, tb) {
            (Ty::Int, Ty::Int) => Ty::Int,
            (x, y) if x.is_numeric() && y.is_numeric() && arith != ArithOp::Rem => Ty::Double,
            (Ty::String, Ty::String) if arith == ArithOp::Add => Ty::String,
            (Ty::Dyn, _) | (_, Ty::Dyn) => Ty::Dyn,
            _ => {
                return Err(self.error(
                    e,
                    RuleErrorKind::Type,
                    format!("cannot apply {} to {ta} and {tb}", display_name(f)),
                ));
            }
        };
        Ok((Node::Arith(arith, Box::new(na), Box::new(nb)), ty))
    }

    /// `cond ? yes : no`.
    fn conditional(&mut self, e: &IdedExpr, c: &CallExpr) -> Result<Typed, RuleError> {
        let [cond, yes, no] = self.args(e, c)?;
        let (nc, tc) = self.expr(cond)?;
        self.want_bool(cond, tc)?;
        let (ny, ty) = self.expr(yes)?;
        let (nn, tn) = self.expr(no)?;
        let t = match (ty, tn) {
            (a, b) if a == b => a,
            (Ty::Null, b) => b,
            (a, Ty::Null) => a,
            (a, b) if a.is_numeric() && b.is_numeric() => Ty::Double,
            _ => Ty::Dyn,
        };
        Ok((Node::Cond(Box::new(nc), Box::new(ny), Box::new(nn)), t))
    }

    /// `a in [x, y]`: a list literal only.
    fn in_list(&mut self, e: &IdedExpr, c: &CallExpr) -> Result<Typed, RuleError> {
        let [a, list] = self.args(e, c)?;
        let (na, ta) = self.expr(a)?;
        let Expr::List(items) = &list.expr else {
            return Err(self.error(
                list,
                RuleErrorKind::Unsupported,
                "`in` takes a list literal on its right, e.g. customer.country in [\"DE\", \"AT\"]",
            ));
        };
        let mut nodes = Vec::with_capacity(items.elements.len());
        for item in &items.elements {
            let (ni, ti) = self.expr(item)?;
            let ok = ti == ta
                || (ti.is_numeric() && ta.is_numeric())
                || matches!(ti, Ty::Dyn | Ty::Null)
                || ta == Ty::Dyn;
            if !ok {
                return Err(self.error(
                    item,
                    RuleErrorKind::Type,
                    format!("list element is {ti}, the value tested is {ta}"),
                ));
            }
            nodes.push(ni);
        }
        Ok((Node::In(Box::new(na), nodes), Ty::Bool))
    }

    /// `customer.attributes["NAME"]`: the only indexing there is.
    fn attribute_index(&mut self, e: &IdedExpr, c: &CallExpr) -> Result<Typed, RuleError> {
        let [map, key] = self.args(e, c)?;
        if !Self::is_attributes_map(map) {
            return Err(self.error(
                e,
                RuleErrorKind::Unsupported,
                "indexing applies to custom attributes only: customer.attributes[\"NAME\"]",
            ));
        }
        let Expr::Literal(LiteralValue::String(name)) = &key.expr else {
            return Err(self.error(
                key,
                RuleErrorKind::Type,
                "an attribute name must be a string literal",
            ));
        };
        self.nodes += 1;
        Ok((Node::Attr(Arc::from(name.inner())), Ty::Dyn))
    }

    /// `in_segment("id")`: a stored segment, named by a literal.
    fn in_segment(&mut self, e: &IdedExpr, c: &CallExpr) -> Result<Typed, RuleError> {
        let [id] = self.args(e, c)?;
        let Expr::Literal(LiteralValue::String(id_lit)) = &id.expr else {
            return Err(self.error(
                id,
                RuleErrorKind::Type,
                "in_segment takes a segment id as a string literal",
            ));
        };
        let seg = id_lit.inner();
        if !self.catalog.exists(seg) {
            return Err(self.error(
                id,
                RuleErrorKind::UnknownSegment,
                format!("no segment `{seg}`"),
            ));
        }
        self.segments.insert(seg.to_owned());
        // A referenced segment may be time-relative; membership watchers re-check segments with
        // references on every rescan.
        self.time_relative = true;
        Ok((Node::InSegment(Arc::from(seg)), Ty::Bool))
    }

    /// `int(x)`, `double(x)`, `string(x)`; a bool converts only to a string.
    fn conversion(&mut self, e: &IdedExpr, c: &CallExpr, f: &str) -> Result<Typed, RuleError> {
        let [a] = self.args(e, c)?;
        let (na, ta) = self.expr(a)?;
        let (conv, ty) = match f {
            "int" => (Conv::Int, Ty::Int),
            "double" => (Conv::Double, Ty::Double),
            _ => (Conv::String, Ty::String),
        };
        if ta == Ty::Bool && conv != Conv::String {
            return Err(self.error(
                e,
                RuleErrorKind::Type,
                format!("cannot convert bool to {ty}"),
            ));
        }
        Ok((Node::Conv(conv, Box::new(na)), ty))
    }

    /// `target.f(args)`: three unrelated families, told apart by the target.
    fn method(
        &mut self,
        e: &IdedExpr,
        target: &IdedExpr,
        c: &CallExpr,
    ) -> Result<Typed, RuleError> {
        if is_ident(target, "loyalty") {
            self.loyalty(e, c)
        } else if is_ident(target, "purchases") {
            self.window(e, "purchases", c)
        } else if is_ident(target, "engagement") {
            self.window(e, "engagement", c)
        } else {
            self.string_method(e, target, c)
        }
    }

    /// `loyalty.f("program")`: a member's facts in one program.
    fn loyalty(&mut self, e: &IdedExpr, c: &CallExpr) -> Result<Typed, RuleError> {
        let f = c.func_name.as_str();
        let (func, ty) = match f {
            "enrolled" => (LoyaltyFn::Enrolled, Ty::Bool),
            "points" => (LoyaltyFn::Points, Ty::Int),
            "pending" => (LoyaltyFn::Pending, Ty::Int),
            "tier" => (LoyaltyFn::Tier, Ty::String),
            "tier_rank" => (LoyaltyFn::TierRank, Ty::Int),
            _ => {
                return Err(self.error(
                    e,
                    RuleErrorKind::UnknownVariable,
                    format!(
                        "unknown function `loyalty.{f}`; loyalty has: {}",
                        schema::fields_of("loyalty").join(", ")
                    ),
                ));
            }
        };
        let [arg] = c.args.as_slice() else {
            return Err(self.error(
                e,
                RuleErrorKind::Type,
                format!("loyalty.{f}() takes one argument: a program id"),
            ));
        };
        let Expr::Literal(LiteralValue::String(program)) = &arg.expr else {
            return Err(self.error(
                arg,
                RuleErrorKind::Type,
                "the program id must be a string literal",
            ));
        };
        let program = program.inner();
        match self.catalog.program_exists(program) {
            Some(true) => {}
            Some(false) => {
                return Err(self.error(
                    arg,
                    RuleErrorKind::UnknownProgram,
                    format!("no loyalty program `{program}`"),
                ));
            }
            None => {
                return Err(self.error(
                    e,
                    RuleErrorKind::Unsupported,
                    "loyalty variables need the loyalty service",
                ));
            }
        }
        self.nodes += 1;
        if func != LoyaltyFn::Enrolled {
            self.time_relative = true;
        }
        Ok((Node::Loyalty(func, Arc::from(program)), ty))
    }

    /// `purchases.count(days)`, `purchases.revenue(days)`, `engagement.count(days[, activity])`:
    /// windowed aggregates over the customer's days.
    fn window(&mut self, e: &IdedExpr, group: &str, c: &CallExpr) -> Result<Typed, RuleError> {
        let f = c.func_name.as_str();
        let allowed = match (group, f) {
            ("purchases", "count" | "revenue") => 1..=1,
            ("engagement", "count") => 1..=2,
            _ => {
                return Err(self.error(
                    e,
                    RuleErrorKind::UnknownVariable,
                    format!(
                        "unknown function `{group}.{f}`; {group} has: {}",
                        schema::fields_of(group).join(", ")
                    ),
                ));
            }
        };
        if !allowed.contains(&c.args.len()) {
            return Err(self.error(
                e,
                RuleErrorKind::Type,
                format!(
                    "{group}.{f}() takes {}",
                    if group == "engagement" {
                        "a window in days and optionally an activity name"
                    } else {
                        "one argument: a window in days"
                    }
                ),
            ));
        }
        let days = self.window_days(&c.args[0])?;
        let activity = match c.args.get(1) {
            None => None,
            Some(a) => match &a.expr {
                Expr::Literal(LiteralValue::String(s)) => Some(Arc::from(s.inner())),
                _ => {
                    return Err(self.error(
                        a,
                        RuleErrorKind::Type,
                        "the activity must be a string literal",
                    ));
                }
            },
        };
        self.nodes += c.args.len();
        self.time_relative = true;
        let w = match (group, f) {
            ("purchases", "count") => Window::PurchaseCount { days },
            ("purchases", _) => Window::PurchaseRevenue { days },
            _ => Window::EngagementCount { days, activity },
        };
        Ok((Node::Window(w), Ty::Int))
    }

    /// `s.startsWith(x)`, `s.endsWith(x)`, `s.contains(x)`, `s.size()`, `s.lowerAscii()`.
    fn string_method(
        &mut self,
        e: &IdedExpr,
        target: &IdedExpr,
        c: &CallExpr,
    ) -> Result<Typed, RuleError> {
        let f = c.func_name.as_str();
        let (nt, tt) = self.expr(target)?;
        match f {
            "startsWith" | "endsWith" | "contains" => {
                let [a] = self.args(e, c)?;
                self.want(target, tt, Ty::String, f)?;
                let (na, ta) = self.expr(a)?;
                self.want(a, ta, Ty::String, f)?;
                let op = match f {
                    "startsWith" => StrOp::StartsWith,
                    "endsWith" => StrOp::EndsWith,
                    _ => StrOp::Contains,
                };
                Ok((Node::Str(op, Box::new(nt), Box::new(na)), Ty::Bool))
            }
            "size" => {
                self.args::<0>(e, c)?;
                self.want(target, tt, Ty::String, f)?;
                Ok((Node::Size(Box::new(nt)), Ty::Int))
            }
            "lowerAscii" => {
                self.args::<0>(e, c)?;
                self.want(target, tt, Ty::String, f)?;
                Ok((Node::Lower(Box::new(nt)), Ty::String))
            }
            other => Err(self.error(
                e,
                RuleErrorKind::UnknownVariable,
                format!("unknown method `{other}`; strings have startsWith, endsWith, contains, size, lowerAscii"),
            )),
        }
    }

    fn window_days(&self, a: &IdedExpr) -> Result<i32, RuleError> {
        let days = match &a.expr {
            Expr::Literal(LiteralValue::Int(i)) => *i.inner(),
            Expr::Literal(LiteralValue::UInt(u)) => i64::try_from(*u.inner()).unwrap_or(i64::MAX),
            _ => {
                return Err(self.error(
                    a,
                    RuleErrorKind::Type,
                    "a window is a whole number of days written as a literal, e.g. 90",
                ));
            }
        };
        if !(1..=MAX_WINDOW_DAYS).contains(&days) {
            return Err(self.error(
                a,
                RuleErrorKind::Type,
                format!("a window is 1 to {MAX_WINDOW_DAYS} days, not {days}"),
            ));
        }
        Ok(i32::try_from(days).unwrap_or(1))
    }

    fn want_bool(&self, e: &IdedExpr, t: Ty) -> Result<(), RuleError> {
        if matches!(t, Ty::Bool | Ty::Dyn) {
            Ok(())
        } else {
            Err(self.error(
                e,
                RuleErrorKind::Type,
                format!("expected a bool, found {t}"),
            ))
        }
    }

    fn want(&self, e: &IdedExpr, t: Ty, want: Ty, what: &str) -> Result<(), RuleError> {
        if t == want || t == Ty::Dyn {
            Ok(())
        } else {
            Err(self.error(
                e,
                RuleErrorKind::Type,
                format!("{what} expects a {want}, found {t}"),
            ))
        }
    }
}

/// `_>=_` → `>=`, for messages.
fn display_name(f: &str) -> &str {
    match f {
        "_==_" => "==",
        "_!=_" => "!=",
        "_<_" => "<",
        "_<=_" => "<=",
        "_>_" => ">",
        "_>=_" => ">=",
        "_+_" => "+",
        "_-_" => "-",
        "_*_" => "*",
        "_/_" => "/",
        "_%_" => "%",
        "_&&_" => "&&",
        "_||_" => "||",
        "!_" => "!",
        "-_" => "-",
        "@in" => "in",
        "_?_:_" => "?:",
        other => other,
    }
}
