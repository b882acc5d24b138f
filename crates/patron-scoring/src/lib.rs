//! `patron.scoring.v1.ScoringService`: what a customer is worth to the business and what the
//! business is worth to the customer. The numbers come from the views in `patron-views` (the
//! customer index, the value models, the tier policy, profile computation); this crate is the
//! service and its proto conversions.

pub mod convert;
pub mod service;
