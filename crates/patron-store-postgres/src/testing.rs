//! A throwaway database per test, on the server named by `PATRON_TEST_POSTGRES_URL`, and what the
//! conformance suite reads below the `Store` API (`RawTables`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};

/// The variable naming the server the Postgres suite runs against.
pub const URL_VARIABLE: &str = "PATRON_TEST_POSTGRES_URL";

/// A fresh, empty database (not migrated), dropped again when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
    /// The URL it was created through (from [`URL_VARIABLE`]).
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// Creates `patron_test_<unique>` on the server named by `PATRON_TEST_POSTGRES_URL`.
    ///
    /// # Panics
    ///
    /// When the variable is unset or the database cannot be created: this is for tests.
    pub async fn create() -> TestDatabase {
        let admin_url = std::env::var(URL_VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{URL_VARIABLE} is not set: the Postgres suite needs a server, e.g. \
                 postgres://postgres@127.0.0.1:5432/postgres"
            )
        });
        let name = unique_name();
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connect to {URL_VARIABLE} ({admin_url}): {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("create test database {name}: {e}"));
        let _ = conn.close().await;
        TestDatabase {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        }
    }

    /// The new database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    /// Drops the database, ending any connections still open to it. Runs on a thread of its own
    /// with its own runtime, so it works inside and outside async code; errors are ignored.
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ = conn.execute(sql.as_str()).await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// `patron_test_<pid>_<time>_<counter>`: unique across concurrent test processes and within one.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("patron_test_{}_{micros}_{n}", std::process::id())
}

/// `url` with its database (the path) replaced by `name`, keeping any query parameters.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(authority, _)| authority);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What the conformance suite reads below the `Store` API: the schema's text columns from
/// `information_schema`, and rows by substring.
#[async_trait::async_trait]
impl patron_store::conformance::RawTables for crate::PgStore {
    async fn text_columns(&self) -> patron_store::StoreResult<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() \
             AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb') \
             ORDER BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(crate::db_err)
    }

    async fn rows_containing(
        &self,
        table: &str,
        column: &str,
        needle: &str,
    ) -> patron_store::StoreResult<i64> {
        sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {} WHERE strpos({}::text, $1) > 0",
            quoted(table),
            quoted(column)
        ))
        .bind(needle)
        .fetch_one(&self.pool)
        .await
        .map_err(crate::db_err)
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1", "x"),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(
            with_database("postgresql://h/db?sslmode=disable", "x"),
            "postgresql://h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres:///db?host=/run/postgresql", "x"),
            "postgres:///x?host=/run/postgresql"
        );
    }
}
