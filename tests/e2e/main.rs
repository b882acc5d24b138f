//! End-to-end tests: the real server on 127.0.0.1:0, called over real gRPC with tonic clients,
//! against SQLite (a temporary file) and Postgres (a throwaway database; these tests are ignored
//! unless run with `PATRON_TEST_POSTGRES_URL=… cargo test -- --include-ignored`).
//!
//! Set `TEST_LOG=1` to see the server's logs.

mod support;

mod bad_input;
mod customers;
mod demo;
mod durability;
mod erasure;
mod events;
mod extremes;
mod holdout;
mod import;
mod loyalty;
mod operations;
mod platform;
mod readme;
mod replicas;
mod scoring;
mod security;
mod segmentation;
mod snapshot;
mod tracing_otlp;
