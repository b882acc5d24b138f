//! Benchmark tools for Patron: `bare-server` (a tonic server answering only
//! `grpc.health.v1.Health`, the baseline) and `patron-load` (a closed-loop gRPC load generator,
//! and the segment scenario of [`segments`]). `scripts/bench-scoring.sh` and
//! `scripts/bench-segments.sh` run them; `docs/benchmarks.md` has the method and the results.

use std::net::{SocketAddr, ToSocketAddrs};

pub mod histogram;
pub mod segments;

/// Resolves `addr` and refuses anything that is not loopback: these tools only load the local
/// machine.
pub fn loopback_addr(addr: &str) -> Result<SocketAddr, String> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr:?}: {e}"))?
        .collect();
    let Some(first) = resolved.first().copied() else {
        return Err(format!("{addr:?} resolves to no address"));
    };
    if resolved.iter().any(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "{addr:?} is not a loopback address; the benchmark tools only talk to 127.0.0.1 / ::1"
        ));
    }
    Ok(first)
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::loopback_addr;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(loopback_addr("127.0.0.1:50051").is_ok());
        assert!(loopback_addr("[::1]:50051").is_ok());
        assert!(loopback_addr("10.0.0.1:50051").is_err());
        assert!(loopback_addr("not an address").is_err());
    }
}
