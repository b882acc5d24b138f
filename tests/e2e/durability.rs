//! A write the server acknowledged survives SIGKILL of the server process.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::support::{connect, purchase, serving_within, ts};

pub(crate) fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

pub(crate) async fn start(url: &str) -> (Child, std::net::SocketAddr) {
    start_with(url, &[]).await
}

/// Starts `patron serve` on `url` with extra flags and waits until it is SERVING.
pub(crate) async fn start_with(url: &str, extra: &[&str]) -> (Child, std::net::SocketAddr) {
    start_configured(url, extra, |_| {}).await
}

/// As `start_with`, with `configure` given the command before it runs (its environment, say).
pub(crate) async fn start_configured(
    url: &str,
    extra: &[&str],
    configure: impl FnOnce(&mut Command),
) -> (Child, std::net::SocketAddr) {
    let addr = free_addr();
    let mut command = Command::new(env!("CARGO_BIN_EXE_patron"));
    command
        .args(["serve", "--listen", &addr.to_string(), "--database", url])
        .args(extra)
        .env("PATRON_LOG", "warn")
        .kill_on_drop(true);
    configure(&mut command);
    let child = command.spawn().expect("start patron");
    if serving_within(addr, 200).await {
        return (child, addr);
    }
    panic!("patron did not become SERVING");
}

#[tokio::test]
async fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let (mut child, addr) = start(&url).await;
    let client = CustomerServiceClient::new(connect(addr).await);

    // Eight writers record small batches as fast as they can; every acknowledged event is noted.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::<(String, String)>::new()));
    let acks = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut client = client.clone();
        let acknowledged = Arc::clone(&acknowledged);
        let acks = Arc::clone(&acks);
        writers.push(tokio::spawn(async move {
            for b in 0..1_000 {
                let events: Vec<_> = (0..20)
                    .map(|i| {
                        let customer = format!("k{}", (w * 7 + i) % 40);
                        purchase(
                            &customer,
                            &format!("w{w}-b{b}-{i}"),
                            ts(b, i),
                            &format!("w{w}-b{b}-{i}"),
                            100,
                        )
                    })
                    .collect();
                let keys: Vec<(String, String)> = events
                    .iter()
                    .map(|e| (e.customer_id.clone(), e.event_id.clone()))
                    .collect();
                let request = patron_proto::customers::v1::RecordEventsRequest { events };
                match client.record_events(request).await {
                    Ok(_) => {
                        acknowledged.lock().await.extend(keys);
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill mid-stream, with writes still in flight.
    while acks.load(Ordering::SeqCst) < 150 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    for w in writers {
        let _ = w.await;
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(acknowledged.len() >= 150 * 20);

    let (_child, addr) = start(&url).await;
    let mut client = CustomerServiceClient::new(connect(addr).await);
    let mut stored = BTreeSet::new();
    for c in 0..40 {
        let customer = format!("k{c}");
        let mut token = String::new();
        loop {
            let page = client
                .list_customer_events(patron_proto::customers::v1::ListCustomerEventsRequest {
                    customer_id: customer.clone(),
                    page_size: 1_000,
                    page_token: token,
                    kinds: vec![],
                })
                .await
                .expect("list after restart")
                .into_inner();
            stored.extend(page.events.into_iter().map(|e| (e.customer_id, e.event_id)));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
    }
    let lost: Vec<_> = acknowledged.difference(&stored).take(5).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, e.g. {lost:?}",
        acknowledged.difference(&stored).count()
    );
}
