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
    small_pages_only();
    let cli = patron_server::cli::Cli::parse();
    match patron_server::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("patron: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`) unless
/// `MIMALLOC_ALLOW_THP` is set, in which case mimalloc does as that says.
///
/// Where the kernel backs memory with 2 MiB pages (THP `always`), a page mimalloc has given back
/// and takes again is faulted in whole and zeroed. SQLite's page cache and statement buffers churn
/// through memory like that on every write batch: during ingest a quarter of the server's CPU went
/// to zeroing pages. Without huge pages, ingest into SQLite runs about 30 % faster; reads and
/// memory are unchanged and a 10M start from the database is 4 % slower (docs/benchmarks.md,
/// "Huge pages off").
fn small_pages_only() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // A kernel without the setting leaves huge pages as they were: nothing to report.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}
