#![allow(clippy::print_stdout, clippy::unwrap_used)]
use std::time::Instant;
use patron_store::Store;
use patron_store::conformance::{now, purchase};
use sqlx::Row;
#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.db").display());
    let store = patron_store_sqlite::SqliteStore::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    for start in (0..n).step_by(20_000) {
        let events: Vec<_> = (start..(start + 20_000).min(n))
            .map(|i| purchase(&format!("c{i:08}"), "e1", now(), "o1", 100))
            .collect();
        store.record_events(&events, now()).await.unwrap();
    }
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let cols: Vec<String> = patron_store::columns::all().map(|c| format!("s.{c}")).collect();
    let packed: Vec<String> = patron_store::columns::all().map(|c| format!("IFNULL(s.{c}, '')")).collect();
    let packed = packed.join(" || ',' || ");
    for (label, select) in [("1 col", "c.customer_id".to_string()), ("packed", format!("c.customer_id, c.signed_up_at, c.create_time, c.birth_date, {packed}")), ("json", format!("c.customer_id, c.signed_up_at, c.create_time, c.birth_date, json_array({})", cols.join(", "))), ("all cols", format!("c.customer_id, c.signed_up_at, c.create_time, c.birth_date, {}", cols.join(", ")))] {
        let sql = format!("SELECT {select} FROM customers c LEFT JOIN customer_summaries s ON s.customer_id = c.customer_id WHERE c.customer_id > ? ORDER BY c.customer_id LIMIT 10000");
        let t = Instant::now();
        let mut after = String::new();
        let mut total = 0;
        loop {
            let rows = sqlx::query(&sql).bind(&after).fetch_all(&pool).await.unwrap();
            if rows.is_empty() { break; }
            total += rows.len();
            if label != "1 col" && label != "all cols" {
                for r in &rows {
                    let t: &str = r.get(4);
                    let v: Vec<Option<i64>> = t.trim_matches(|c| c == '[' || c == ']').split(',').map(|x| x.parse().ok()).collect();
                    assert_eq!(v.len(), 47);
                }
            }
            after = rows.last().unwrap().get::<String, _>(0);
        }
        println!("raw {label} {total}: {:?}", t.elapsed());
    }
    let t = Instant::now();
    let mut after = None;
    let mut total = 0;
    loop {
        let page = store.scan_summaries(after.as_ref(), 10_000).await.unwrap();
        if page.is_empty() { break; }
        total += page.len();
        after = page.last().map(|r| r.customer_id.clone());
    }
    println!("scan {total}: {:?}", t.elapsed());
    let t = Instant::now();
    let mut after = None;
    let mut total = 0;
    loop {
        let page = store.list_customers(after.as_ref(), 10_000).await.unwrap();
        if page.is_empty() { break; }
        total += page.len();
        after = page.last().map(|r| r.customer.customer_id.clone());
    }
    println!("list_customers {total}: {:?}", t.elapsed());
}
