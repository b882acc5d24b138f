//! What the conformance suite reads below the `Store` API ([`RawTables`]): the schema's text
//! columns from `sqlite_master` and `pragma_table_info`, and rows by substring.

use async_trait::async_trait;
use patron_store::StoreResult;
use patron_store::conformance::RawTables;

use crate::{SqliteStore, db_err};

/// `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[async_trait]
impl RawTables for SqliteStore {
    async fn text_columns(&self) -> StoreResult<Vec<(String, String)>> {
        sqlx::query_as(
            "SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' \
             AND upper(c.type) IN ('TEXT', 'VARCHAR', 'CHAR', 'CLOB') \
             ORDER BY m.name, c.name",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)
    }

    async fn rows_containing(&self, table: &str, column: &str, needle: &str) -> StoreResult<i64> {
        sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {} WHERE instr({}, ?) > 0",
            quoted(table),
            quoted(column)
        ))
        .bind(needle)
        .fetch_one(&self.reader)
        .await
        .map_err(db_err)
    }
}
