//! The in-memory views every service reads: every customer's summary ([`engine`], kept current by
//! the change feed), the value models ([`model`], with the population distributions of [`cdf`])
//! and the tier policy, the profile computed from them ([`profile`], explained by [`drivers`]),
//! customers as they were at an earlier instant ([`history`]), the dated past fits at an earlier
//! calibration end read ([`dated`]) and the index's copy on local disk ([`snapshot`]).
//!
//! No gRPC and no proto: the services convert what they read here to their messages.

pub mod cdf;
pub mod dated;
pub mod drivers;
pub mod engine;
pub mod history;
pub mod model;
pub mod par;
pub mod profile;
pub mod snapshot;
