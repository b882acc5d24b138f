//! Migration 0003 fills `engagement_days` in from the engagement events stored before it.
//! Ignored by default, like the conformance suite: needs `PATRON_TEST_POSTGRES_URL`.

use patron_store::conformance::{backfill_events, engagement_days_were_backfilled, now};
use patron_store::encode_event_data;
use patron_store_postgres::PgStore;
use patron_store_postgres::testing::TestDatabase;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

#[tokio::test]
#[ignore = "Postgres suite: set PATRON_TEST_POSTGRES_URL and run with -- --include-ignored"]
async fn engagement_days_are_backfilled_from_stored_events() {
    let db = TestDatabase::create().await;

    // The schema before 0003 (the same files, so the store's migrator sees them applied), and
    // events stored as the code of that time stored them: no engagement days.
    let before = tempfile::tempdir().expect("temp dir");
    let migrations =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations/postgres");
    for name in ["0001_customers_and_events.sql", "0002_value_models.sql"] {
        std::fs::copy(migrations.join(name), before.path().join(name)).expect("copy migration");
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .expect("connect");
    Migrator::new(before.path())
        .await
        .expect("migrations")
        .run(&pool)
        .await
        .expect("migrate to 0002");
    let events = backfill_events();
    for e in &events {
        sqlx::query(
            "INSERT INTO customers (customer_id, create_time) VALUES ($1, $2) \
             ON CONFLICT (customer_id) DO NOTHING",
        )
        .bind(e.customer_id.as_str())
        .bind(now().as_micros())
        .execute(&pool)
        .await
        .expect("insert customer");
        sqlx::query(
            "INSERT INTO events (customer_id, event_id, kind, occurred_at, recorded_at, data) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.customer_id.as_str())
        .bind(e.event_id.as_str())
        .bind(e.data.kind().code())
        .bind(e.occurred_at.as_micros())
        .bind(now().as_micros())
        .bind(encode_event_data(&e.data).expect("encode"))
        .execute(&pool)
        .await
        .expect("insert event");
    }
    pool.close().await;

    let store = PgStore::connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    engagement_days_were_backfilled(&store, &events).await;
    store.close().await;
}
