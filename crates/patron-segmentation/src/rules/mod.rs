//! Segment rules: a checked subset of CEL over documented customer variables.
//!
//! Rules are parsed by the `cel` crate (cel-rust) and then type-checked and lowered here into
//! [`compile::Node`]s that read a customer's in-memory summary directly. cel-rust has no type
//! checker, and its interpreter needs every variable materialised as a dynamic map per
//! evaluation; lowering once and evaluating typed nodes keeps a count over 1,000,000 customers
//! in the hundreds of milliseconds. ARCHITECTURE.md records the choice.

pub mod compile;
pub mod eval;
pub mod explain;
pub mod schema;

pub use compile::{Program, RuleError, RuleErrorKind, SegmentCatalog, compile};
pub use eval::{Eval, Facts, LoyaltyFacts, MemberFacts, SegmentResolver, Value};

#[cfg(test)]
mod tests;
