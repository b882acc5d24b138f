//! `patron.scoring.v1.ScoringService`: what a customer is worth to the business and what the
//! business is worth to the customer.

pub mod cdf;
pub mod drivers;
pub mod engine;
pub mod history;
pub mod model;
pub mod profile;
pub mod service;
