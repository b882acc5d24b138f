//! `bare-server`: the "hello world" baseline for Patron's read benchmarks. A tonic server built the
//! way `patron serve` builds its own (tonic 0.14, `#[tokio::main]` runtime defaults, a
//! `TcpListener` served through `serve_with_incoming_shutdown` with TCP_NODELAY, HTTP/2 without
//! TLS) that serves only `grpc.health.v1.Health`, reporting SERVING. Its `Check` is a trivial
//! unary RPC: whatever a Patron call costs beyond it is Patron's own work.
//!
//! `bare-server --listen 127.0.0.1:50198` (loopback only); stops on SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

#[derive(Debug, Parser)]
#[command(
    name = "bare-server",
    about = "A bare tonic server serving only grpc.health.v1.Health (SERVING): the baseline"
)]
struct Args {
    /// Loopback address to serve on.
    #[arg(long, default_value = "127.0.0.1:50198")]
    listen: String,
    /// Leave Nagle's algorithm on (no TCP_NODELAY), as `patron serve` did before it served
    /// through `TcpIncoming::with_nodelay` (commit 2b64a6b). By default accepted connections get
    /// TCP_NODELAY, as Patron's do.
    #[arg(long)]
    no_tcp_nodelay: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let addr = match patron_bench::loopback_addr(&args.listen) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bare-server: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    // As Patron does: a reporter, the whole server ("") SERVING.
    let health = HealthReporter::new();
    let service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
    health.set_service_status("", ServingStatus::Serving).await;
    eprintln!("bare-server: serving grpc.health.v1.Health on {addr}");
    let router = Server::builder().add_service(service);
    let served = if !args.no_tcp_nodelay {
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        router
            .serve_with_incoming_shutdown(incoming, patron_bench::shutdown_signal())
            .await
    } else {
        router
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                patron_bench::shutdown_signal(),
            )
            .await
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-server: {e}");
            ExitCode::FAILURE
        }
    }
}
