//! The `patron` server: configuration, wiring, health, reflection, telemetry and the CLI's
//! commands. `main.rs` only parses the command line and calls in here.

pub mod app;
pub mod cli;
pub mod config;
pub mod conn;
pub mod demo;
pub mod generate;
pub mod import;
pub mod ops;
pub mod snapshots;
pub mod telemetry;
pub mod tls;

pub use app::{AppError, Application};
pub use config::Settings;
