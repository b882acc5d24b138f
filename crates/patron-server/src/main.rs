//! `patron`: see `patron --help`.

use clap::Parser;

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
