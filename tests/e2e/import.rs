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
    let customers_path = customers.display().to_string();
    let transactions_path = transactions.display().to_string();
    // Each file on its own: its rows, what was loaded of its kind, its rejections.
    assert!(
        first.contains(&format!(
            "customers from {customers_path}:\n  rows read: 3\n  loaded: 2 customers\n  rejected: 1\n"
        )),
        "{first}"
    );
    assert!(
        first.contains(&format!(
            "transactions from {transactions_path}:\n  rows read: 9\n  loaded: 5 purchases\n  skipped as duplicate: 0\n  rejected: 4\n"
        )),
        "{first}"
    );
    // Rejected line numbers say which file they are in.
    assert!(
        first.contains(&format!("({customers_path} line 4)")),
        "{first}"
    );
    assert!(first.contains("more than 2 decimal places"), "{first}");
    assert!(
        first.contains("\"not-a-date\" is not a date or timestamp"),
        "{first}"
    );
    assert!(
        first.contains(&format!("({transactions_path} line 8)")),
        "{first}"
    );
    assert!(
        first.contains("in all: 2 customers and 5 purchases loaded, 5 rows rejected\n"),
        "{first}"
    );

    let second = run_import(&url, &customers, &transactions);
    assert!(second.contains("  loaded: 0 purchases\n"), "{second}");
    assert!(second.contains("  skipped as duplicate: 5\n"), "{second}");

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

fn patron(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_patron"))
        .args(args)
        .env("PATRON_LOG", "warn")
        .output()
        .expect("run patron")
}

/// `patron generate`: the CSV it writes imports into the customers and purchases it says it
/// wrote; straight into the database it stores them too, and a second run adds nothing; bad
/// arguments are refused before anything is written.
#[tokio::test]
async fn generate_writes_csv_for_import_and_straight_into_the_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("csv");
    let csv_arg = csv.to_str().expect("utf-8 path");
    let out = patron(&[
        "generate",
        "--customers",
        "120",
        "--now",
        "2026-06-01",
        "--csv",
        csv_arg,
    ]);
    assert!(out.status.success(), "{out:?}");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(csv.join("generate.json")).expect("meta"))
            .expect("json");
    assert_eq!(meta["customers"], 120);
    assert_eq!(meta["now"], "2026-06-01T00:00:00Z");
    let purchases = meta["transactions"].as_u64().expect("transactions");
    assert!(purchases > 50, "{meta}");

    let imported = format!("sqlite://{}", dir.path().join("imported.db").display());
    let report = run_import(
        &imported,
        &csv.join("customers.csv"),
        &csv.join("transactions.csv"),
    );
    assert!(report.contains(&format!("{purchases}")), "{report}");
    let store = patron_store_sqlite::SqliteStore::connect(&imported)
        .await
        .expect("open");
    let listed = store.list_customers(None, 1_000).await.expect("list");
    assert_eq!(listed.len(), 120);
    assert_eq!(
        listed[0].customer.customer_id,
        CustomerId::parse("cust-000001").expect("id")
    );
    store.close().await;

    let direct = format!("sqlite://{}", dir.path().join("direct.db").display());
    let args = [
        "generate",
        "--database",
        &direct,
        "--customers",
        "120",
        "--now",
        "2026-06-01",
    ];
    let first = patron(&args);
    assert!(first.status.success(), "{first:?}");
    let first = String::from_utf8_lossy(&first.stdout).into_owned();
    let total = meta["events"].as_u64().expect("events");
    assert!(
        first.contains(&format!("{total} events new to the database")),
        "{first}"
    );
    let again = patron(&args);
    assert!(again.status.success(), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 events new to the database"),
        "{again:?}"
    );

    let bad_dir = dir.path().join("bad");
    let bad_dir_arg = bad_dir.to_str().expect("utf-8");
    for bad in [
        vec!["generate", "--customers", "0"],
        vec!["generate", "--customers", "10000001"],
        vec!["generate", "--customers", "5", "--now", "yesterday"],
        vec!["generate", "--customers", "5", "--events", "some"],
    ] {
        let mut args = bad.clone();
        args.extend(["--csv", bad_dir_arg]);
        let out = patron(&args);
        assert!(!out.status.success(), "{bad:?} was accepted");
        assert!(!bad_dir.exists(), "{bad:?} wrote files");
    }
}

/// A timestamp without a zone is never guessed as UTC: without --assume-timezone its row is
/// rejected with the reason and its line; with it, the row is read in that zone.
#[tokio::test]
async fn import_refuses_zoneless_timestamps_unless_a_zone_is_given() {
    let dir = tempfile::tempdir().expect("temp dir");
    let transactions = dir.path().join("transactions.csv");
    std::fs::write(
        &transactions,
        "customer_id,timestamp,amount\nz1,2024-05-01 23:30:00,10.00\nz1,2024-05-03T10:00:00Z,5.00\n",
    )
    .expect("write");
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    let path = transactions.to_str().expect("utf-8 path");
    let out = patron(&["import", "--database", &url, "--transactions", path]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(report.contains("  loaded: 1 purchases\n"), "{report}");
    assert!(
        report.contains(&format!(
            "\"2024-05-01 23:30:00\" has no time zone: add Z or an offset such as +02:00, or pass --assume-timezone ({path} line 2)"
        )),
        "{report}"
    );

    let out = patron(&[
        "import",
        "--database",
        &url,
        "--transactions",
        path,
        "--assume-timezone",
        "-02:00",
    ]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(report.contains("  loaded: 1 purchases\n"), "{report}");
    assert!(report.contains("  skipped as duplicate: 1\n"), "{report}");
    let store = patron_store_sqlite::SqliteStore::connect(&url)
        .await
        .expect("open");
    let z1 = store
        .get_customer(&CustomerId::parse("z1").expect("id"))
        .await
        .expect("get")
        .expect("imported");
    // 23:30 at -02:00 is 01:30 UTC on 2 May: the first purchase day is the 2nd, not the 1st.
    let first = z1
        .summary
        .purchases
        .first_purchase_day
        .expect("a purchase day");
    assert_eq!(
        first,
        patron_domain::Date::new(2024, 5, 2).expect("date").to_day()
    );

    let bad = patron(&[
        "import",
        "--database",
        &url,
        "--transactions",
        path,
        "--assume-timezone",
        "CET",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("not a UTC offset"),
        "{bad:?}"
    );
}
