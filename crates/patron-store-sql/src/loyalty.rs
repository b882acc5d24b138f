//! The loyalty ledger's statements, for both backends.
//!
//! Every member change ([`Sql::mutate_member`]) is one transaction that holds the member's lock
//! ([`Lock::Member`]) from its start: SQLite's write lock (`BEGIN IMMEDIATE`), Postgres's
//! advisory lock on the member's key. The operation thus decides on exactly the state its changes
//! replace. Rows of the member are written in key order (lots by id, entries by id, activity by
//! day); the one shared row a change may touch, its reward's stock, is written last, so it is
//! held for the shortest time.

use std::collections::{BTreeMap, HashMap};

use patron_domain::loyalty::{Entry, Lot, Points};
use patron_domain::{CustomerId, Day, Timestamp};
use patron_store::feed::ChangeKind;
use patron_store::loyalty::{
    Changes, Loaded, MemberOp, MemberRow, MutateOutcome, Needs, ProgramRecord, RedemptionRecord,
    RewardRecord,
};
use patron_store::{StoreError, StoreResult};
use sqlx::FromRow;

use crate::bounds::shared_impl;
use crate::rows::{
    ActivityRow, EntryRow, LotRow, MemberDbRow, MemberKeyRow, OrderRow, ProgramRow, RedemptionRow,
    RewardRow, encode_lots, status_name,
};
use crate::{Conn, Lock, NewChange, customer_id, limit_param, revision_mismatch};

/// One member of one program: the leading columns of every member-owned table's key.
#[derive(Debug, Clone, Copy)]
pub struct MemberKey<'a> {
    /// The customer's id.
    pub customer: &'a str,
    /// The program's id.
    pub program: &'a str,
}

/// The member-owned tables, each with the text columns an erasure scrubs (see each backend's
/// `keep_books_as`): every text column but `customer_id` (re-keyed), `program_id` and
/// `reward_id` (names of global rows that stay), the fixed vocabularies `kind` and `status`, and
/// `lots` (numbers).
pub const MEMBER_TABLES: &[(&str, &[&str])] = &[
    ("loyalty_members", &[]),
    ("loyalty_lots", &[]),
    (
        "loyalty_entries",
        &["event_id", "redemption_id", "rule", "issuer", "reason"],
    ),
    ("loyalty_orders", &["order_id"]),
    ("loyalty_applied_events", &["event_id"]),
    ("loyalty_bonus_counts", &["event_name"]),
    ("loyalty_activity", &[]),
    (
        "loyalty_redemptions",
        &["redemption_id", "request_id", "fingerprint"],
    ),
];

/// The statement that finds the programs in which `$1` owns rows of any [`MEMBER_TABLES`], in
/// id order.
pub fn programs_with_rows_sql() -> String {
    MEMBER_TABLES
        .iter()
        .map(|(table, _)| format!("SELECT program_id FROM {table} WHERE customer_id = $1"))
        .collect::<Vec<_>>()
        .join(" UNION ")
        + " ORDER BY 1"
}

/// The SET list that re-keys a row of `customer` (`$1`) to `pseudonym` (`$2`), scrubbing the
/// customer id out of the table's text columns.
pub fn rekey_set(scrubbed: &[&str]) -> String {
    let mut set = String::from("customer_id = $2");
    for column in scrubbed {
        set.push_str(&format!(", {column} = replace({column}, $1, $2)"));
    }
    set
}

/// The end of a backend's multi-row insert into `loyalty_lots` ([`crate::Backend::upsert_lots`]):
/// a stored lot is replaced.
pub const ON_LOT_CONFLICT: &str = " ON CONFLICT (customer_id, program_id, lot_id) DO UPDATE SET \
     original = excluded.original, remaining = excluded.remaining, \
     earned_at = excluded.earned_at, available_at = excluded.available_at, \
     expires_at = excluded.expires_at, activated = excluded.activated";

/// The end of a backend's multi-row insert into `loyalty_activity` ([`crate::Backend::add_activity`]):
/// a stored day adds up.
pub const ON_ACTIVITY_CONFLICT: &str = " ON CONFLICT (customer_id, program_id, day) DO UPDATE SET \
     points = loyalty_activity.points + excluded.points, \
     spend = loyalty_activity.spend + excluded.spend";

/// The error of changes that write what `needs` did not ask for.
fn not_asked(what: &str) -> StoreError {
    StoreError::Internal(format!("the operation changed {what} it did not ask for"))
}

/// What [`Sql::write_changes`] did.
enum Written {
    /// The reward's stock ran out: the caller rolls back.
    OutOfStock,
    /// Written; `stock_of`: the program of the reward whose stock changed, if one did.
    Done { stock_of: Option<String> },
}

/// What [`Sql::take_stock`] found.
enum Stock {
    /// A unit was taken from the reward of this program.
    Taken(String),
    /// The reward is unlimited: nothing to take.
    Unlimited,
    /// None left, or the reward is gone.
    SoldOut,
}

/// Whether `changes` write anything at all (a member operation that only looked writes nothing,
/// and appends nothing to the feed).
fn writes_anything(changes: &Changes) -> bool {
    let Changes {
        member,
        order,
        bonus_count,
        activity,
        take_stock,
        return_stock,
        redemption,
        mark_event_applied,
    } = changes;
    member.is_some()
        || order.is_some()
        || bonus_count.is_some()
        || !activity.is_empty()
        || *take_stock
        || *return_stock
        || redemption.is_some()
        || *mark_event_applied
}

shared_impl! {
    /// Creates a program ([`StoreError::AlreadyExists`] if the id is taken).
    pub async fn create_program(b: &B, record: &ProgramRecord) -> StoreResult<ProgramRecord> {
        let mut tx = b.begin_write(Lock::Rows).await?;
        let inserted = sqlx::query(
            "INSERT INTO loyalty_programs (program_id, body, target_segment, revision, \
             create_time, update_time) VALUES ($1, $2, $3, 1, $4, $5) \
             ON CONFLICT (program_id) DO NOTHING",
        )
        .bind(record.program_id.as_str())
        .bind(record.body.as_str())
        .bind(record.target_segment.as_deref())
        .bind(record.create_time.as_micros())
        .bind(record.update_time.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(B::db_err)?;
        let inserted = B::rows_affected(&inserted);
        if inserted == 0 {
            return Err(StoreError::AlreadyExists(format!(
                "program {}",
                record.program_id
            )));
        }
        B::append_changes(
            &mut tx,
            &[(ChangeKind::Program, record.program_id.as_str(), "")],
        )
        .await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(ProgramRecord {
            revision: 1,
            ..record.clone()
        })
    }

    /// A program by id.
    pub async fn get_program(b: &B, id: &str) -> StoreResult<Option<ProgramRecord>> {
        let sql = format!(
            "SELECT {} FROM loyalty_programs WHERE program_id = $1",
            ProgramRow::COLUMNS
        );
        let row: Option<ProgramRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(b.reader()?)
            .await
            .map_err(B::db_err)?;
        Ok(row.map(ProgramRecord::from))
    }

    /// Programs in id order (bytewise: `program_id` is `COLLATE "C"` on Postgres), after `after`.
    pub async fn list_programs(
        b: &B,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<ProgramRecord>> {
        let sql = format!(
            "SELECT {} FROM loyalty_programs WHERE program_id > $1 \
             ORDER BY program_id LIMIT $2",
            ProgramRow::COLUMNS
        );
        let rows: Vec<ProgramRow> = sqlx::query_as(&sql)
            .bind(after.unwrap_or(""))
            .bind(limit_param(limit))
            .fetch_all(b.reader()?)
            .await
            .map_err(B::db_err)?;
        Ok(rows.into_iter().map(ProgramRecord::from).collect())
    }

    /// Replaces a program's body as its next revision.
    pub async fn update_program(
        b: &B,
        id: &str,
        body: &str,
        target_segment: Option<&str>,
        now: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<Option<ProgramRecord>> {
        let mut tx = b.begin_write(Lock::Rows).await?;
        let stored: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT revision FROM loyalty_programs WHERE program_id = $1{}",
            B::FOR_UPDATE
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(B::db_err)?;
        let Some(revision) = stored else {
            return Ok(None);
        };
        if let Some(expected) = expected_revision.filter(|&e| e != revision) {
            return Err(revision_mismatch("program", id, expected, revision));
        }
        let sql = format!(
            "UPDATE loyalty_programs SET body = $2, target_segment = $3, \
             revision = revision + 1, update_time = $4 WHERE program_id = $1 \
             RETURNING {}",
            ProgramRow::COLUMNS
        );
        let row: ProgramRow = sqlx::query_as(&sql)
            .bind(id)
            .bind(body)
            .bind(target_segment)
            .bind(now.as_micros())
            .fetch_one(&mut *tx)
            .await
            .map_err(B::db_err)?;
        let record = ProgramRecord::from(row);
        B::append_changes(
            &mut tx,
            &[(ChangeKind::Program, record.program_id.as_str(), "")],
        )
        .await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(Some(record))
    }

    /// Creates a reward of a stored program.
    pub async fn create_reward(b: &B, record: &RewardRecord) -> StoreResult<RewardRecord> {
        let taken = || StoreError::AlreadyExists(format!("reward {}", record.reward_id));
        let mut tx = b.begin_write(Lock::Rows).await?;
        let exists = sqlx::query("SELECT 1 FROM loyalty_rewards WHERE reward_id = $1")
            .bind(record.reward_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(B::db_err)?
            .is_some();
        if exists {
            return Err(taken());
        }
        // Held (as the foreign key would) until the reward is committed.
        let program = sqlx::query(&format!(
            "SELECT 1 FROM loyalty_programs WHERE program_id = $1{}",
            B::FOR_KEY_SHARE
        ))
        .bind(record.program_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(B::db_err)?
        .is_some();
        if !program {
            return Err(StoreError::MissingDependency(record.program_id.clone()));
        }
        let inserted = sqlx::query(
            "INSERT INTO loyalty_rewards (reward_id, program_id, body, required_segment, \
             stock_remaining, revision, create_time, update_time) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7) ON CONFLICT (reward_id) DO NOTHING",
        )
        .bind(record.reward_id.as_str())
        .bind(record.program_id.as_str())
        .bind(record.body.as_str())
        .bind(record.required_segment.as_deref())
        .bind(record.stock_remaining)
        .bind(record.create_time.as_micros())
        .bind(record.update_time.as_micros())
        .execute(&mut *tx)
        .await
        .map_err(B::db_err)?;
        let inserted = B::rows_affected(&inserted);
        if inserted == 0 {
            // Created concurrently since the check above.
            return Err(taken());
        }
        B::append_changes(
            &mut tx,
            &[(
                ChangeKind::Reward,
                record.reward_id.as_str(),
                record.program_id.as_str(),
            )],
        )
        .await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(RewardRecord {
            revision: 1,
            ..record.clone()
        })
    }

    /// A reward by id.
    pub async fn get_reward(b: &B, id: &str) -> StoreResult<Option<RewardRecord>> {
        let sql = format!(
            "SELECT {} FROM loyalty_rewards WHERE reward_id = $1",
            RewardRow::COLUMNS
        );
        let row: Option<RewardRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(b.reader()?)
            .await
            .map_err(B::db_err)?;
        Ok(row.map(RewardRecord::from))
    }

    /// Rewards of one program in id order, after `after`.
    pub async fn list_rewards(
        b: &B,
        program_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<RewardRecord>> {
        let sql = format!(
            "SELECT {} FROM loyalty_rewards WHERE program_id = $1 \
             AND reward_id > $2 ORDER BY reward_id LIMIT $3",
            RewardRow::COLUMNS
        );
        let rows: Vec<RewardRow> = sqlx::query_as(&sql)
            .bind(program_id)
            .bind(after.unwrap_or(""))
            .bind(limit_param(limit))
            .fetch_all(b.reader()?)
            .await
            .map_err(B::db_err)?;
        Ok(rows.into_iter().map(RewardRecord::from).collect())
    }

    /// Replaces a reward's body (and its stock, when `Some`) as its next revision.
    pub async fn update_reward(
        b: &B,
        id: &str,
        body: &str,
        required_segment: Option<&str>,
        stock_remaining: Option<Option<i64>>,
        now: Timestamp,
        expected_revision: Option<i64>,
    ) -> StoreResult<Option<RewardRecord>> {
        let mut tx = b.begin_write(Lock::Rows).await?;
        let stored: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT revision FROM loyalty_rewards WHERE reward_id = $1{}",
            B::FOR_UPDATE
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(B::db_err)?;
        let Some(revision) = stored else {
            return Ok(None);
        };
        if let Some(expected) = expected_revision.filter(|&e| e != revision) {
            return Err(revision_mismatch("reward", id, expected, revision));
        }
        let sql = format!(
            "UPDATE loyalty_rewards SET body = $2, required_segment = $3, \
             stock_remaining = CASE WHEN $4 THEN CAST($5 AS BIGINT) ELSE stock_remaining END, \
             revision = revision + 1, update_time = $6 WHERE reward_id = $1 \
             RETURNING {}",
            RewardRow::COLUMNS
        );
        let row: RewardRow = sqlx::query_as(&sql)
            .bind(id)
            .bind(body)
            .bind(required_segment)
            .bind(stock_remaining.is_some())
            .bind(stock_remaining.flatten())
            .bind(now.as_micros())
            .fetch_one(&mut *tx)
            .await
            .map_err(B::db_err)?;
        let record = RewardRecord::from(row);
        B::append_changes(
            &mut tx,
            &[(
                ChangeKind::Reward,
                record.reward_id.as_str(),
                record.program_id.as_str(),
            )],
        )
        .await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(Some(record))
    }

    /// Locks the member, loads what `op` needs, applies it and writes its changes, atomically.
    pub async fn mutate_member(
        b: &B,
        program_id: &str,
        customer: &CustomerId,
        now: Timestamp,
        op: &dyn MemberOp,
    ) -> StoreResult<MutateOutcome> {
        let key = MemberKey {
            customer: customer.as_str(),
            program: program_id,
        };
        let needs = op.needs();
        // The member's lock first: nothing below can change until this transaction ends.
        let mut tx = b
            .begin_write(Lock::Member {
                program: program_id,
                customer: customer.as_str(),
            })
            .await?;
        let loaded = Self::load(&mut tx, key, &needs).await?;
        let changes = match op.apply(&loaded, now) {
            Ok(changes) => changes,
            Err(reason) => {
                tx.rollback().await.map_err(B::db_err)?;
                return Ok(MutateOutcome::Refused(reason));
            }
        };
        let stock_of = match Self::write_changes(&mut tx, key, &needs, &loaded, &changes).await? {
            Written::OutOfStock => {
                tx.rollback().await.map_err(B::db_err)?;
                return Ok(MutateOutcome::OutOfStock);
            }
            Written::Done { stock_of } => stock_of,
        };
        let mut feed: Vec<NewChange<'_>> = Vec::with_capacity(2);
        if writes_anything(&changes) {
            feed.push((ChangeKind::Member, key.customer, key.program));
        }
        if let (Some(program), Some(reward)) = (&stock_of, &needs.reward_id) {
            feed.push((ChangeKind::Reward, reward.as_str(), program.as_str()));
        }
        B::append_changes(&mut tx, &feed).await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(MutateOutcome::Applied { loaded, changes })
    }

    /// The member row with its lots and activity, read in one snapshot, without locking.
    pub async fn get_member(
        b: &B,
        program_id: &str,
        customer: &CustomerId,
    ) -> StoreResult<Option<MemberRow>> {
        let mut tx = b.begin_read().await?;
        let member = Self::load_member(
            &mut tx,
            MemberKey {
                customer: customer.as_str(),
                program: program_id,
            },
        )
        .await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(member)
    }

    /// A page of members with their lots and activity, read in one snapshot.
    pub async fn scan_members(
        b: &B,
        after: Option<(&CustomerId, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<(CustomerId, String, MemberRow)>> {
        let mut tx = b.begin_read().await?;
        let page = Self::scan_members_in(&mut tx, after, limit).await?;
        tx.commit().await.map_err(B::db_err)?;
        Ok(page)
    }

    /// Programs the customer is a member of, in id order.
    pub async fn member_programs(b: &B, customer: &CustomerId) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT program_id FROM loyalty_members WHERE customer_id = $1 ORDER BY program_id",
        )
        .bind(customer.as_str())
        .fetch_all(b.reader()?)
        .await
        .map_err(B::db_err)
    }

    /// A member's entries, newest first, strictly below `before`.
    pub async fn list_entries(
        b: &B,
        program_id: &str,
        customer: &CustomerId,
        before: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<Entry>> {
        let sql = format!(
            "SELECT {} FROM loyalty_entries WHERE customer_id = $1 \
             AND program_id = $2 AND entry_id < $3 ORDER BY entry_id DESC LIMIT $4",
            EntryRow::COLUMNS
        );
        let rows: Vec<EntryRow> = sqlx::query_as(&sql)
            .bind(customer.as_str())
            .bind(program_id)
            .bind(before.unwrap_or(i64::MAX))
            .bind(limit_param(limit))
            .fetch_all(b.reader()?)
            .await
            .map_err(B::db_err)?;
        rows.into_iter().map(Entry::try_from).collect()
    }

    /// A redemption by id.
    pub async fn get_redemption(
        b: &B,
        program_id: &str,
        customer: &CustomerId,
        redemption_id: &str,
    ) -> StoreResult<Option<RedemptionRecord>> {
        let mut conn = b.reader()?.acquire().await.map_err(B::db_err)?;
        Self::load_redemption(
            &mut conn,
            MemberKey {
                customer: customer.as_str(),
                program: program_id,
            },
            "redemption_id",
            redemption_id,
        )
        .await
    }

    /// Completed redemptions of each reward by the member.
    pub async fn completed_redemptions(
        b: &B,
        program_id: &str,
        customer: &CustomerId,
    ) -> StoreResult<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT reward_id, COUNT(*) FROM loyalty_redemptions \
             WHERE customer_id = $1 AND program_id = $2 AND status = 'COMPLETED' \
             GROUP BY reward_id",
        )
        .bind(customer.as_str())
        .bind(program_id)
        .fetch_all(b.reader()?)
        .await
        .map_err(B::db_err)?;
        Ok(rows.into_iter().collect())
    }

    /// Members with a lot to expire or to activate by `now`, in (program, customer) order.
    pub async fn members_to_settle(
        b: &B,
        now: Timestamp,
        after: Option<(&str, &CustomerId)>,
        limit: usize,
    ) -> StoreResult<Vec<(String, CustomerId)>> {
        // Each half reads one partial index (loyalty_lots_expiring, loyalty_lots_maturing).
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT program_id, customer_id FROM loyalty_lots \
             WHERE remaining > 0 AND expires_at <= $1 AND (program_id, customer_id) > ($2, $3) \
             UNION \
             SELECT program_id, customer_id FROM loyalty_lots \
             WHERE {} AND available_at <= $1 AND (program_id, customer_id) > ($2, $3) \
             ORDER BY program_id, customer_id LIMIT $4",
            B::NOT_ACTIVATED
        ))
        .bind(now.as_micros())
        .bind(after.map_or("", |a| a.0))
        .bind(after.map_or("", |a| a.1.as_str()))
        .bind(limit_param(limit))
        .fetch_all(b.reader()?)
        .await
        .map_err(B::db_err)?;
        rows.into_iter()
            .map(|(program, customer)| Ok((program, customer_id(customer)?)))
            .collect()
    }

    /// The member row with all its lots (by lot id) and activity (by day); `None` if not a
    /// member.
    async fn load_member(
        conn: &mut Conn<B>,
        key: MemberKey<'_>,
    ) -> StoreResult<Option<MemberRow>> {
        let sql = format!(
            "SELECT {} FROM loyalty_members WHERE customer_id = $1 AND program_id = $2",
            MemberDbRow::COLUMNS
        );
        let row: Option<MemberDbRow> = sqlx::query_as(&sql)
            .bind(key.customer)
            .bind(key.program)
            .fetch_optional(&mut *conn)
            .await
            .map_err(B::db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut member = MemberRow::from(row);

        let sql = format!(
            "SELECT {} FROM loyalty_lots WHERE customer_id = $1 AND program_id = $2 \
             ORDER BY lot_id",
            LotRow::COLUMNS
        );
        let lots: Vec<LotRow> = sqlx::query_as(&sql)
            .bind(key.customer)
            .bind(key.program)
            .fetch_all(&mut *conn)
            .await
            .map_err(B::db_err)?;
        member.wallet.lots = lots.into_iter().map(Lot::from).collect();

        let sql = format!(
            "SELECT {} FROM loyalty_activity \
             WHERE customer_id = $1 AND program_id = $2 ORDER BY day",
            ActivityRow::COLUMNS
        );
        let days: Vec<ActivityRow> = sqlx::query_as(&sql)
            .bind(key.customer)
            .bind(key.program)
            .fetch_all(&mut *conn)
            .await
            .map_err(B::db_err)?;
        member.activity = days.into_iter().map(Into::into).collect();
        Ok(Some(member))
    }

    /// A page of members strictly after `after` in (customer id, program id) order, each with
    /// all its lots and activity: three statements, the lots and activity read over the page's
    /// key range (row comparisons on the primary keys; on Postgres, text in the "C" collation
    /// like the keys' order here).
    async fn scan_members_in(
        conn: &mut Conn<B>,
        after: Option<(&CustomerId, &str)>,
        limit: usize,
    ) -> StoreResult<Vec<(CustomerId, String, MemberRow)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let columns = format!("customer_id, program_id, {}", MemberDbRow::COLUMNS);
        let rows = match after {
            Some((customer, program)) => {
                let sql = format!(
                    "SELECT {columns} FROM loyalty_members \
                     WHERE (customer_id, program_id) > ($1, $2) \
                     ORDER BY customer_id, program_id LIMIT $3"
                );
                sqlx::query(&sql)
                    .bind(customer.as_str())
                    .bind(program)
                    .bind(limit_param(limit))
                    .fetch_all(&mut *conn)
                    .await
            }
            None => {
                let sql = format!(
                    "SELECT {columns} FROM loyalty_members \
                     ORDER BY customer_id, program_id LIMIT $1"
                );
                sqlx::query(&sql)
                    .bind(limit_param(limit))
                    .fetch_all(&mut *conn)
                    .await
            }
        }
        .map_err(B::db_err)?;
        let mut keys = Vec::with_capacity(rows.len());
        let mut members = Vec::with_capacity(rows.len());
        for row in &rows {
            let key = MemberKeyRow::from_row(row).map_err(B::db_err)?;
            keys.push((key.customer_id, key.program_id));
            members.push(MemberRow::from(
                MemberDbRow::from_row(row).map_err(B::db_err)?,
            ));
        }
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
            return Ok(Vec::new());
        };
        // Rows of the page's key range; any of a key not in the page (no member row) is
        // skipped.
        let index: HashMap<(&str, &str), usize> = keys
            .iter()
            .enumerate()
            .map(|(i, (c, p))| ((c.as_str(), p.as_str()), i))
            .collect();
        let range =
            "(customer_id, program_id) >= ($1, $2) AND (customer_id, program_id) <= ($3, $4)";

        let sql = format!(
            "SELECT customer_id, program_id, {} FROM loyalty_lots WHERE {range} \
             ORDER BY customer_id, program_id, lot_id",
            LotRow::COLUMNS
        );
        let lots = sqlx::query(&sql)
            .bind(first.0.as_str())
            .bind(first.1.as_str())
            .bind(last.0.as_str())
            .bind(last.1.as_str())
            .fetch_all(&mut *conn)
            .await
            .map_err(B::db_err)?;
        for row in &lots {
            let key = MemberKeyRow::from_row(row).map_err(B::db_err)?;
            if let Some(&i) = index.get(&(key.customer_id.as_str(), key.program_id.as_str())) {
                let lot = LotRow::from_row(row).map_err(B::db_err)?;
                members[i].wallet.lots.push(lot.into());
            }
        }

        let sql = format!(
            "SELECT customer_id, program_id, {} FROM loyalty_activity \
             WHERE {range} ORDER BY customer_id, program_id, day",
            ActivityRow::COLUMNS
        );
        let days = sqlx::query(&sql)
            .bind(first.0.as_str())
            .bind(first.1.as_str())
            .bind(last.0.as_str())
            .bind(last.1.as_str())
            .fetch_all(&mut *conn)
            .await
            .map_err(B::db_err)?;
        for row in &days {
            let key = MemberKeyRow::from_row(row).map_err(B::db_err)?;
            if let Some(&i) = index.get(&(key.customer_id.as_str(), key.program_id.as_str())) {
                let day = ActivityRow::from_row(row).map_err(B::db_err)?;
                members[i].activity.push(day.into());
            }
        }

        keys.into_iter()
            .zip(members)
            .map(|((customer, program), member)| Ok((customer_id(customer)?, program, member)))
            .collect()
    }

    async fn load_redemption(
        conn: &mut Conn<B>,
        key: MemberKey<'_>,
        column: &str,
        value: &str,
    ) -> StoreResult<Option<RedemptionRecord>> {
        let sql = format!(
            "SELECT {} FROM loyalty_redemptions \
             WHERE customer_id = $1 AND program_id = $2 AND {column} = $3",
            RedemptionRow::COLUMNS
        );
        let row: Option<RedemptionRow> = sqlx::query_as(&sql)
            .bind(key.customer)
            .bind(key.program)
            .bind(value)
            .fetch_optional(&mut *conn)
            .await
            .map_err(B::db_err)?;
        row.map(RedemptionRecord::try_from).transpose()
    }

    /// Loads what `needs` asks for (and the member row), under the member's lock.
    async fn load(conn: &mut Conn<B>, key: MemberKey<'_>, needs: &Needs) -> StoreResult<Loaded> {
        let mut loaded = Loaded {
            member: Self::load_member(conn, key).await?,
            ..Loaded::default()
        };
        if let Some(order_id) = &needs.order_id {
            let sql = format!(
                "SELECT {} FROM loyalty_orders \
                 WHERE customer_id = $1 AND program_id = $2 AND order_id = $3",
                OrderRow::COLUMNS
            );
            let row: Option<OrderRow> = sqlx::query_as(&sql)
                .bind(key.customer)
                .bind(key.program)
                .bind(order_id.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(B::db_err)?;
            loaded.order = row.map(TryInto::try_into).transpose()?;
        }
        if let Some((name, period_start)) = &needs.bonus {
            let count: Option<i64> = sqlx::query_scalar(
                "SELECT count FROM loyalty_bonus_counts WHERE customer_id = $1 \
                 AND program_id = $2 AND event_name = $3 AND period_start = $4",
            )
            .bind(key.customer)
            .bind(key.program)
            .bind(name.as_str())
            .bind(period_start.as_days())
            .fetch_optional(&mut *conn)
            .await
            .map_err(B::db_err)?;
            loaded.bonus_count = count.unwrap_or(0);
        }
        if let Some(reward_id) = &needs.reward_id {
            // The reward is shared by all members and not locked here: its stock is only ever
            // changed by conditional updates (see `take_stock`).
            let sql = format!(
                "SELECT {} FROM loyalty_rewards WHERE reward_id = $1",
                RewardRow::COLUMNS
            );
            let row: Option<RewardRow> = sqlx::query_as(&sql)
                .bind(reward_id.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(B::db_err)?;
            loaded.reward = row.map(RewardRecord::from);
            loaded.reward_redemptions = sqlx::query_scalar(
                "SELECT COUNT(*) FROM loyalty_redemptions WHERE customer_id = $1 \
                 AND program_id = $2 AND reward_id = $3 AND status = 'COMPLETED'",
            )
            .bind(key.customer)
            .bind(key.program)
            .bind(reward_id.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(B::db_err)?;
        }
        // By request id first (a replayed redemption), else by redemption id (a cancellation).
        if let Some(request_id) = &needs.request_id {
            loaded.redemption =
                Self::load_redemption(conn, key, "request_id", request_id).await?;
        }
        if loaded.redemption.is_none()
            && let Some(redemption_id) = &needs.redemption_id
        {
            loaded.redemption =
                Self::load_redemption(conn, key, "redemption_id", redemption_id).await?;
        }
        if let Some(event_id) = &needs.event_id {
            loaded.event_applied = sqlx::query(
                "SELECT 1 FROM loyalty_applied_events WHERE customer_id = $1 \
                 AND program_id = $2 AND event_id = $3",
            )
            .bind(key.customer)
            .bind(key.program)
            .bind(event_id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(B::db_err)?
            .is_some();
        }
        Ok(loaded)
    }

    /// Writes `changes` under the member's lock.
    async fn write_changes(
        conn: &mut Conn<B>,
        key: MemberKey<'_>,
        needs: &Needs,
        loaded: &Loaded,
        changes: &Changes,
    ) -> StoreResult<Written> {
        if let Some(member) = &changes.member {
            Self::write_member(conn, key, loaded.member.as_ref(), member).await?;
        }
        if let Some(order) = &changes.order {
            sqlx::query(
                "INSERT INTO loyalty_orders (customer_id, program_id, order_id, amount, \
                 refunded, purchased, day, multiplier_percent, points) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (customer_id, program_id, order_id) DO UPDATE SET \
                 amount = excluded.amount, refunded = excluded.refunded, \
                 purchased = excluded.purchased, day = excluded.day, \
                 multiplier_percent = excluded.multiplier_percent, points = excluded.points",
            )
            .bind(key.customer)
            .bind(key.program)
            .bind(order.order_id.as_str())
            .bind(order.amount)
            .bind(order.refunded)
            .bind(order.purchased)
            .bind(order.day.map(Day::as_days))
            .bind(i64::from(order.multiplier_percent))
            .bind(order.points)
            .execute(&mut *conn)
            .await
            .map_err(B::db_err)?;
        }
        if let Some(count) = changes.bonus_count {
            let (name, period_start) =
                needs.bonus.as_ref().ok_or_else(|| not_asked("a bonus"))?;
            sqlx::query(
                "INSERT INTO loyalty_bonus_counts (customer_id, program_id, event_name, \
                 period_start, count) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (customer_id, program_id, event_name, period_start) DO UPDATE SET \
                 count = excluded.count",
            )
            .bind(key.customer)
            .bind(key.program)
            .bind(name.as_str())
            .bind(period_start.as_days())
            .bind(count)
            .execute(&mut *conn)
            .await
            .map_err(B::db_err)?;
        }
        if !changes.activity.is_empty() {
            // One row per day (a day named twice adds up: an upsert may not touch a row twice),
            // in day order.
            let mut days: BTreeMap<i32, (Points, i64)> = BTreeMap::new();
            for a in &changes.activity {
                let d = days.entry(a.day.as_days()).or_insert((0, 0));
                d.0 = d
                    .0
                    .checked_add(a.points)
                    .ok_or_else(|| StoreError::Overflow("activity points".into()))?;
                d.1 = d
                    .1
                    .checked_add(a.spend)
                    .ok_or_else(|| StoreError::Overflow("activity spend".into()))?;
            }
            let days: Vec<(i32, i64, i64)> = days
                .into_iter()
                .map(|(day, (points, spend))| (day, points, spend))
                .collect();
            B::add_activity(conn, key.customer, key.program, &days).await?;
        }
        if let Some(r) = &changes.redemption {
            let result = sqlx::query(
                "INSERT INTO loyalty_redemptions (customer_id, program_id, redemption_id, \
                 request_id, reward_id, cost, lots, fingerprint, status, created_at, \
                 cancelled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (customer_id, program_id, redemption_id) DO UPDATE SET \
                 request_id = excluded.request_id, reward_id = excluded.reward_id, \
                 cost = excluded.cost, lots = excluded.lots, \
                 fingerprint = excluded.fingerprint, status = excluded.status, \
                 created_at = excluded.created_at, cancelled_at = excluded.cancelled_at",
            )
            .bind(key.customer)
            .bind(key.program)
            .bind(r.redemption_id.as_str())
            .bind(r.request_id.as_str())
            .bind(r.reward_id.as_str())
            .bind(r.cost)
            .bind(encode_lots(&r.lots)?)
            .bind(r.fingerprint.as_str())
            .bind(status_name(r.status))
            .bind(r.created_at.as_micros())
            .bind(r.cancelled_at.map(Timestamp::as_micros))
            .execute(&mut *conn)
            .await;
            match result {
                Ok(_) => {}
                // Another redemption of the member has this request id.
                Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                    return Err(StoreError::Conflict(format!(
                        "redemption request id {} is taken",
                        r.request_id
                    )));
                }
                Err(e) => return Err(B::db_err(e)),
            }
        }
        if changes.mark_event_applied {
            let event_id = needs
                .event_id
                .as_ref()
                .ok_or_else(|| not_asked("an event"))?;
            sqlx::query(
                "INSERT INTO loyalty_applied_events (customer_id, program_id, event_id) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(key.customer)
            .bind(key.program)
            .bind(event_id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(B::db_err)?;
        }
        let mut stock_of = None;
        if changes.take_stock || changes.return_stock {
            let reward_id = needs
                .reward_id
                .as_deref()
                .ok_or_else(|| not_asked("a reward's stock"))?;
            if changes.take_stock {
                match Self::take_stock(conn, reward_id).await? {
                    Stock::Taken(program) => stock_of = Some(program),
                    Stock::Unlimited => {}
                    Stock::SoldOut => return Ok(Written::OutOfStock),
                }
            }
            if changes.return_stock {
                let returned: Option<String> = sqlx::query_scalar(
                    "UPDATE loyalty_rewards SET stock_remaining = stock_remaining + 1 \
                     WHERE reward_id = $1 AND stock_remaining IS NOT NULL RETURNING program_id",
                )
                .bind(reward_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(B::db_err)?;
                stock_of = stock_of.or(returned);
            }
        }
        Ok(Written::Done { stock_of })
    }

    /// Takes one unit of a reward's stock. The decrement is conditional (and Postgres re-checks
    /// its condition after waiting for a concurrent taker), so two members never take the last
    /// unit.
    async fn take_stock(conn: &mut Conn<B>, reward_id: &str) -> StoreResult<Stock> {
        let taken: Option<String> = sqlx::query_scalar(
            "UPDATE loyalty_rewards SET stock_remaining = stock_remaining - 1 \
             WHERE reward_id = $1 AND stock_remaining IS NOT NULL AND stock_remaining > 0 \
             RETURNING program_id",
        )
        .bind(reward_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(B::db_err)?;
        if let Some(program) = taken {
            return Ok(Stock::Taken(program));
        }
        let stock: Option<Option<i64>> =
            sqlx::query_scalar("SELECT stock_remaining FROM loyalty_rewards WHERE reward_id = $1")
                .bind(reward_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(B::db_err)?;
        Ok(if matches!(stock, Some(None)) {
            Stock::Unlimited
        } else {
            Stock::SoldOut
        })
    }

    /// Writes the member row, the lots that differ from the loaded ones (by lot id), and the
    /// new entries (by entry id).
    async fn write_member(
        conn: &mut Conn<B>,
        key: MemberKey<'_>,
        before: Option<&MemberRow>,
        member: &MemberRow,
    ) -> StoreResult<()> {
        let w = &member.wallet;
        sqlx::query(
            "INSERT INTO loyalty_members (customer_id, program_id, enrolled_at, debt, \
             lifetime_earned, lifetime_redeemed, next_lot_id, next_entry_id, \
             first_purchase_done) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (customer_id, program_id) DO UPDATE SET \
             enrolled_at = excluded.enrolled_at, debt = excluded.debt, \
             lifetime_earned = excluded.lifetime_earned, \
             lifetime_redeemed = excluded.lifetime_redeemed, next_lot_id = excluded.next_lot_id, \
             next_entry_id = excluded.next_entry_id, \
             first_purchase_done = excluded.first_purchase_done",
        )
        .bind(key.customer)
        .bind(key.program)
        .bind(member.enrolled_at.as_micros())
        .bind(w.debt)
        .bind(w.lifetime_earned)
        .bind(w.lifetime_redeemed)
        .bind(w.next_lot_id)
        .bind(w.next_entry_id)
        .bind(member.first_purchase_done)
        .execute(&mut *conn)
        .await
        .map_err(B::db_err)?;

        let stored: HashMap<i64, &Lot> = before
            .map(|m| m.wallet.lots.iter().map(|l| (l.lot_id, l)).collect())
            .unwrap_or_default();
        let mut changed: Vec<&Lot> = w
            .lots
            .iter()
            .filter(|l| stored.get(&l.lot_id) != Some(l))
            .collect();
        changed.sort_unstable_by_key(|l| l.lot_id);
        if !changed.is_empty() {
            B::upsert_lots(conn, key.customer, key.program, &changed).await?;
        }

        if !w.new_entries.is_empty() {
            let mut entries: Vec<&Entry> = w.new_entries.iter().collect();
            entries.sort_unstable_by_key(|e| e.entry_id);
            let entries = entries
                .into_iter()
                .map(|e| Ok((e, encode_lots(&e.lots)?)))
                .collect::<StoreResult<Vec<_>>>()?;
            B::insert_entries(conn, key.customer, key.program, &entries).await?;
        }
        Ok(())
    }
}
