//! `patron`: see `patron --help`.

use clap::Parser;

// Scoring answers allocate many small strings and messages per call; glibc malloc spent ~19 % of
// the server's CPU on them under load (docs/benchmarks.md), mimalloc much less.
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
