//! Value models, the tier policy and segment definitions, for both backends: small tables
//! written one row at a time by one writer at a time ([`Lock::Table`]).

use patron_domain::Timestamp;
use patron_store::feed::ChangeKind;
use patron_store::{
    Activation, SegmentRecord, StoreError, StoreResult, StoredModel, StoredPolicy, find_cycle,
};

use crate::bounds::shared_impl;
use crate::rows::{ModelRow, PolicyRow, SegmentRow};
use crate::{Backend, Lock, limit_param, revision_mismatch};

/// `depends_on` sorted, without repeats.
fn normalized_dependencies(depends_on: &[String]) -> Vec<String> {
    let mut deps = depends_on.to_vec();
    deps.sort_unstable();
    deps.dedup();
    deps
}

/// The columns of a segment row; `s` is the segment.
fn segment_select<B: Backend>() -> String {
    format!(
        "s.segment_id, s.display_name, s.description, s.rule, s.revision, s.create_time, \
         s.update_time, {} AS depends_on",
        B::SEGMENT_DEPENDENCIES
    )
}

shared_impl! {
    /// Stores a value model as the next version, active as `activation` says.
    pub async fn insert_value_model(
        b: &B,
        body: &str,
        created_at: Timestamp,
        activation: Activation,
    ) -> StoreResult<StoredModel> {
        // The next version and the active flag are decided under the lock.
        let mut tx = b.begin_write(Lock::Table("value_models")).await?;
        let (version, any_active): (i64, bool) = sqlx::query_as(&format!(
            "SELECT COALESCE(MAX(version), 0) + 1, \
             EXISTS (SELECT 1 FROM value_models WHERE active = {}) FROM value_models",
            B::TRUE
        ))
        .fetch_one(&mut *tx)
        .await
        .map_err(B::db_err)?;
        let active = activation.activates(any_active);
        if active {
            sqlx::query(&format!(
                "UPDATE value_models SET active = {} WHERE active = {}",
                B::FALSE,
                B::TRUE
            ))
            .execute(&mut *tx)
            .await
            .map_err(B::db_err)?;
        }
        let sql = format!(
            "INSERT INTO value_models ({0}) VALUES ($1, $2, $3, $4) RETURNING {0}",
            ModelRow::COLUMNS
        );
        let row: ModelRow = sqlx::query_as(&sql)
            .bind(version)
            .bind(created_at.as_micros())
            .bind(active)
            .bind(body)
            .fetch_one(&mut *tx)
            .await
            .map_err(B::db_err)?;
        let model = StoredModel::from(row);
        let key = model.version.to_string();
        B::append_changes(&mut tx, &[(ChangeKind::Model, &key, "")]).await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(model)
    }

    /// A value model by version.
    pub async fn get_value_model(b: &B, version: i64) -> StoreResult<Option<StoredModel>> {
        let sql = format!(
            "SELECT {} FROM value_models WHERE version = $1",
            ModelRow::COLUMNS
        );
        let row: Option<ModelRow> = sqlx::query_as(&sql)
            .bind(version)
            .fetch_optional(b.reader()?)
            .await
            .map_err(B::db_err)?;
        Ok(row.map(StoredModel::from))
    }

    /// Value models newest first, strictly below `before`.
    pub async fn list_value_models(
        b: &B,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<StoredModel>> {
        let sql = format!(
            "SELECT {} FROM value_models WHERE version < $1 ORDER BY version DESC LIMIT $2",
            ModelRow::COLUMNS
        );
        let rows: Vec<ModelRow> = sqlx::query_as(&sql)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit_param(limit))
            .fetch_all(b.reader()?)
            .await
            .map_err(B::db_err)?;
        Ok(rows.into_iter().map(StoredModel::from).collect())
    }

    /// Makes a stored model the active one; `None` if there is no such version.
    pub async fn activate_value_model(b: &B, version: i64) -> StoreResult<Option<StoredModel>> {
        let mut tx = b.begin_write(Lock::Table("value_models")).await?;
        let exists = sqlx::query("SELECT 1 FROM value_models WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(B::db_err)?
            .is_some();
        if !exists {
            return Ok(None);
        }
        // Deactivate first: the unique index is checked row by row, not at the statement's
        // end.
        sqlx::query(&format!(
            "UPDATE value_models SET active = {} WHERE active = {} AND version <> $1",
            B::FALSE,
            B::TRUE
        ))
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(B::db_err)?;
        let sql = format!(
            "UPDATE value_models SET active = {} WHERE version = $1 RETURNING {}",
            B::TRUE,
            ModelRow::COLUMNS
        );
        let row: ModelRow = sqlx::query_as(&sql)
            .bind(version)
            .fetch_one(&mut *tx)
            .await
            .map_err(B::db_err)?;
        let model = StoredModel::from(row);
        let key = model.version.to_string();
        B::append_changes(&mut tx, &[(ChangeKind::Model, &key, "")]).await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(Some(model))
    }

    /// The active value model, if any.
    pub async fn active_value_model(b: &B) -> StoreResult<Option<StoredModel>> {
        let sql = format!(
            "SELECT {} FROM value_models WHERE active = {}",
            ModelRow::COLUMNS,
            B::TRUE
        );
        let row: Option<ModelRow> = sqlx::query_as(&sql)
            .fetch_optional(b.reader()?)
            .await
            .map_err(B::db_err)?;
        Ok(row.map(StoredModel::from))
    }

    /// The stored tier policy, if any.
    pub async fn get_tier_policy(b: &B) -> StoreResult<Option<StoredPolicy>> {
        let sql = format!("SELECT {} FROM tier_policy WHERE id = 1", PolicyRow::COLUMNS);
        let row: Option<PolicyRow> = sqlx::query_as(&sql)
            .fetch_optional(b.reader()?)
            .await
            .map_err(B::db_err)?;
        Ok(row.map(StoredPolicy::from))
    }

    /// Stores the tier policy as its next revision (optionally only at `expected_revision`).
    pub async fn put_tier_policy(
        b: &B,
        body: &str,
        updated_at: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<StoredPolicy> {
        // One writer at a time, also while no row exists yet (a row lock could not cover that).
        let mut tx = b.begin_write(Lock::Table("tier_policy")).await?;
        let stored: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(revision), 0) FROM tier_policy WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(B::db_err)?;
        if let Some(expected) = expected_revision.filter(|&e| e != stored) {
            return Err(patron_store::revision_mismatch(expected, stored));
        }
        let revision = stored + 1;
        sqlx::query(
            "INSERT INTO tier_policy (id, revision, updated_at, body) VALUES (1, $1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET revision = excluded.revision, \
             updated_at = excluded.updated_at, body = excluded.body",
        )
        .bind(revision)
        .bind(updated_at.as_micros())
        .bind(body)
        .execute(&mut *tx)
        .await
        .map_err(B::db_err)?;
        let key = revision.to_string();
        B::append_changes(&mut tx, &[(ChangeKind::TierPolicy, &key, "")]).await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(StoredPolicy {
            revision,
            updated_at,
            body: body.to_owned(),
        })
    }

    /// Creates a segment. Segment writes hold [`Lock::Table`]`("segments")`: one writer at a
    /// time, so the cycle check over every stored edge, and the existence checks, see exactly
    /// the state the write replaces.
    pub async fn create_segment(b: &B, record: &SegmentRecord) -> StoreResult<SegmentRecord> {
        let deps = normalized_dependencies(&record.depends_on);
        let id = record.segment_id.as_str();
        let mut tx = b.begin_write(Lock::Table("segments")).await?;
        let exists = sqlx::query("SELECT 1 FROM segments WHERE segment_id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(B::db_err)?
            .is_some();
        if exists {
            return Err(StoreError::AlreadyExists(format!("segment {id}")));
        }
        // Nothing stored depends on a new segment: only a dependency on itself is a cycle.
        if let Some(cycle) = find_cycle(&[], id, &deps) {
            return Err(StoreError::SegmentCycle(cycle));
        }
        Self::check_dependencies_exist(&mut tx, &deps).await?;
        sqlx::query(
            "INSERT INTO segments (segment_id, display_name, description, rule, revision, \
             create_time, update_time) VALUES ($1, $2, $3, $4, 1, $5, $6)",
        )
        .bind(id)
        .bind(record.display_name.as_str())
        .bind(record.description.as_str())
        .bind(record.rule.as_str())
        .bind(record.create_time.as_micros())
        .bind(record.update_time.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(B::db_err)?;
        if !deps.is_empty() {
            B::insert_dependencies(&mut tx, id, &deps).await?;
        }
        B::append_changes(&mut tx, &[(ChangeKind::Segment, id, "")]).await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(SegmentRecord {
            depends_on: deps,
            revision: 1,
            ..record.clone()
        })
    }

    /// A segment by id.
    pub async fn get_segment(b: &B, id: &str) -> StoreResult<Option<SegmentRecord>> {
        let sql = format!(
            "SELECT {} FROM segments s WHERE s.segment_id = $1",
            segment_select::<B>()
        );
        let row: Option<SegmentRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(b.reader()?)
            .await
            .map_err(B::db_err)?;
        row.map(SegmentRecord::try_from).transpose()
    }

    /// Segments in id order (bytewise: `segment_id` is `COLLATE "C"` on Postgres), after
    /// `after`.
    pub async fn list_segments(
        b: &B,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<SegmentRecord>> {
        let sql = format!(
            "SELECT {} FROM segments s WHERE s.segment_id > $1 ORDER BY s.segment_id LIMIT $2",
            segment_select::<B>()
        );
        let rows: Vec<SegmentRow> = sqlx::query_as(&sql)
            .bind(after.unwrap_or(""))
            .bind(limit_param(limit))
            .fetch_all(b.reader()?)
            .await
            .map_err(B::db_err)?;
        rows.into_iter().map(SegmentRecord::try_from).collect()
    }

    /// Replaces a segment's definition as its next revision; `None` if there is no such
    /// segment.
    pub async fn update_segment(
        b: &B,
        record: &SegmentRecord,
        expected_revision: Option<i64>,
    ) -> StoreResult<Option<SegmentRecord>> {
        let deps = normalized_dependencies(&record.depends_on);
        let id = record.segment_id.as_str();
        let mut tx = b.begin_write(Lock::Table("segments")).await?;
        let stored: Option<(i64, i64)> =
            sqlx::query_as("SELECT revision, create_time FROM segments WHERE segment_id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(B::db_err)?;
        let Some((revision, create_time)) = stored else {
            return Ok(None);
        };
        if let Some(expected) = expected_revision.filter(|&e| e != revision) {
            return Err(revision_mismatch("segment", id, expected, revision));
        }
        let edges: Vec<(String, String)> =
            sqlx::query_as("SELECT segment_id, depends_on FROM segment_dependencies")
                .fetch_all(&mut *tx)
                .await
                .map_err(B::db_err)?;
        if let Some(cycle) = find_cycle(&edges, id, &deps) {
            return Err(StoreError::SegmentCycle(cycle));
        }
        Self::check_dependencies_exist(&mut tx, &deps).await?;
        sqlx::query(
            "UPDATE segments SET display_name = $2, description = $3, rule = $4, \
             revision = revision + 1, update_time = $5 WHERE segment_id = $1",
        )
        .bind(id)
        .bind(record.display_name.as_str())
        .bind(record.description.as_str())
        .bind(record.rule.as_str())
        .bind(record.update_time.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(B::db_err)?;
        sqlx::query("DELETE FROM segment_dependencies WHERE segment_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(B::db_err)?;
        if !deps.is_empty() {
            B::insert_dependencies(&mut tx, id, &deps).await?;
        }
        B::append_changes(&mut tx, &[(ChangeKind::Segment, id, "")]).await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(Some(SegmentRecord {
            depends_on: deps,
            revision: revision + 1,
            create_time: Timestamp::from_micros(create_time),
            ..record.clone()
        }))
    }

    /// Deletes a segment nothing depends on (segments, programs' targets, rewards'
    /// requirements: [`StoreError::InUse`] otherwise); `false` if there is no such segment.
    pub async fn delete_segment(b: &B, id: &str) -> StoreResult<bool> {
        let mut tx = b.begin_write(Lock::Table("segments")).await?;
        let exists = sqlx::query("SELECT 1 FROM segments WHERE segment_id = $1")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(B::db_err)?
            .is_some();
        if !exists {
            return Ok(false);
        }
        let mut dependents: Vec<String> = sqlx::query_scalar(
            "SELECT segment_id FROM segment_dependencies WHERE depends_on = $1 \
             AND segment_id <> $1 \
             UNION ALL SELECT 'program:' || program_id FROM loyalty_programs \
             WHERE target_segment = $1 \
             UNION ALL SELECT 'reward:' || reward_id FROM loyalty_rewards \
             WHERE required_segment = $1",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(B::db_err)?;
        // Bytewise.
        dependents.sort_unstable();
        if !dependents.is_empty() {
            return Err(StoreError::InUse(dependents));
        }
        // Its own dependency rows first: correct also without a cascading foreign key.
        for sql in [
            "DELETE FROM segment_dependencies WHERE segment_id = $1",
            "DELETE FROM segments WHERE segment_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(B::db_err)?;
        }
        B::append_changes(&mut tx, &[(ChangeKind::Segment, id, "")]).await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(true)
    }

    /// [`StoreError::MissingDependency`] for the first of `deps` (sorted) that is not stored.
    async fn check_dependencies_exist(
        conn: &mut crate::Conn<B>,
        deps: &[String],
    ) -> StoreResult<()> {
        if deps.is_empty() {
            return Ok(());
        }
        let stored = B::stored_segments(conn, deps).await?;
        let stored: std::collections::HashSet<&str> = stored.iter().map(String::as_str).collect();
        match deps.iter().find(|d| !stored.contains(d.as_str())) {
            Some(missing) => Err(StoreError::MissingDependency(missing.clone())),
            None => Ok(()),
        }
    }
}
