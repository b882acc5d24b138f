//! `patron import`: CSV customers and transactions, a summary of what was loaded, skipped and
//! rejected, and no double loading on a second run.

use patron_domain::CustomerId;
use patron_store::Store;

fn run_import(url: &str, customers: &std::path::Path, transactions: &std::path::Path) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patron"))
        .args(["import", "--database", url, "--customers"])
        .arg(customers)
        .arg("--transactions")
        .arg(transactions)
        .env("PATRON_LOG", "warn")
        .output()
        .expect("run patron import");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "import failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn import_loads_csv_and_reports_what_it_skipped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let customers = dir.path().join("customers.csv");
    let transactions = dir.path().join("transactions.csv");
    std::fs::write(
        &customers,
        "customer_id,birth_date,gender,country\nc1,1980-04-02,female,DE\nc2,,male,US\nc3,1980-02-30,,FR\n",
    )
    .expect("write");
    std::fs::write(
        &transactions,
        "customer_id,date,amount,order_id\n\
         c1,2024-01-05,19.99,A1\n\
         c1,2024-01-05,5.00,A2\n\
         c1,2024-02-10T12:00:00Z,10,\n\
         c1,2024-02-10T12:00:00Z,10,\n\
         c2,20240301,7.5,\n\
         c4,2024-03-02,1.234,\n\
         c4,not-a-date,1.00,\n\
         ,2024-03-02,1.00,\n\
         c4,2024-03-03,-2.00,\n",
    )
    .expect("write");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());

    let first = run_import(&url, &customers, &transactions);
    assert!(first.contains("loaded: 5\n"), "{first}");
    assert!(first.contains("skipped as duplicate: 0\n"), "{first}");
    // One bad customer row (Feb 30) and four bad transaction rows.
    assert!(first.contains("rejected: 5\n"), "{first}");
    assert!(first.contains("more than 2 decimal places"), "{first}");
    assert!(first.contains("not a date or timestamp"), "{first}");
    assert!(first.contains("customers upserted: 2\n"), "{first}");

    let second = run_import(&url, &customers, &transactions);
    assert!(second.contains("loaded: 0\n"), "{second}");
    assert!(second.contains("skipped as duplicate: 5\n"), "{second}");

    let store = patron_store_sqlite::SqliteStore::connect(&url)
        .await
        .expect("open");
    let c1 = store
        .get_customer(&CustomerId::parse("c1").expect("id"))
        .await
        .expect("get")
        .expect("imported");
    assert_eq!(c1.customer.profile.country.as_deref(), Some("DE"));
    // Two identical rows are two purchases; 19.99 + 5.00 + 10 + 10.
    assert_eq!(c1.summary.purchases.order_count, 4);
    assert_eq!(c1.summary.purchases.net_revenue, 4_499);
    assert_eq!(c1.summary.purchases.purchase_days, 2);
}
