//! `patron.segmentation.v1.SegmentationService`: segments defined by CEL rules over customer,
//! RFM, value, purchase-window and engagement variables, evaluated against the scoring engine's
//! in-memory summaries, with live membership changes streamed to watchers.

pub mod membership;
pub mod registry;
pub mod rules;
pub mod service;
mod watch;

pub use service::{SegmentationApi, Settings};
