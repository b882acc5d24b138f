#![allow(clippy::print_stdout, clippy::unwrap_used)]
use patron_store::Store;
use patron_store::conformance::{now, purchase};
use std::time::Instant;
#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let store = patron_store_sqlite::SqliteStore::connect(&url)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let t = Instant::now();
    for start in (0..n).step_by(20_000) {
        let events: Vec<_> = (start..(start + 20_000).min(n))
            .map(|i| purchase(&format!("c{i:08}"), "e1", now(), "o1", 100))
            .collect();
        store.record_events(&events, now()).await.unwrap();
    }
    println!("ingest {n}: {:?}", t.elapsed());
    let t = Instant::now();
    let mut after = None;
    let mut total = 0;
    loop {
        let page = store.scan_summaries(after.as_ref(), 10_000).await.unwrap();
        if page.is_empty() {
            break;
        }
        total += page.len();
        after = page.last().map(|r| r.customer_id.clone());
    }
    println!("scan {total}: {:?}", t.elapsed());
    let ids: Vec<_> = (0..n)
        .step_by(7)
        .map(|i| patron_domain::CustomerId::parse(format!("c{i:08}")).unwrap())
        .collect();
    let t = Instant::now();
    let rows = store.get_summaries(&ids).await.unwrap();
    println!("get_summaries {}: {:?}", rows.len(), t.elapsed());
}
