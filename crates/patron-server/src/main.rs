//! `patron`: see `patron --help`.

use clap::Parser;

// Scoring answers allocate many small strings and messages per call; glibc malloc spent ~19 % of
// the server's CPU on them under load (docs/benchmarks.md), mimalloc much less. Its `override`
// feature (patron-server's Cargo.toml) sends C code's malloc to mimalloc too: the bundled SQLite
// allocates for every value it hands out, and with glibc malloc a start-up load from SQLite took
// half as long again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = patron_server::cli::Cli::parse();
    match patron_server::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("patron: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
