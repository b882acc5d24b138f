-- The change feed: a durable, ordered log of what every committed write changed, appended in the
-- write's own transaction (see patron-store feed.rs). Global (not customer-owned) tables;
-- instants are microseconds since the Unix epoch (UTC).
--
-- Positions are dense (1, 2, 3, …) and in commit order: SQLite has one writer, and each write
-- transaction, as its last statement, takes its positions with
--   UPDATE change_feed_head SET position = position + n WHERE id = 1 RETURNING position
-- and inserts its n rows.

-- One row per change. kind: what changed (ChangeKind::code); key: its id; scope: the program of
-- a member or reward change, '' otherwise; txn: the writing transaction's number (its first
-- position), the same for every change of one commit and carried by the events it recorded;
-- committed_at: the clock when the changes were appended, just before the commit.
CREATE TABLE change_feed (
    position INTEGER NOT NULL PRIMARY KEY,
    kind TEXT NOT NULL
        CHECK (kind IN ('customer', 'model', 'tier_policy', 'segment', 'program', 'reward',
                        'member')),
    key TEXT NOT NULL,
    scope TEXT NOT NULL DEFAULT '',
    txn INTEGER NOT NULL,
    committed_at INTEGER NOT NULL
);

-- The feed's head: a single row. position: the last position handed out (0 while the feed is
-- empty); pruned_through: every position up to it has been pruned; database_id: a random id made
-- here, which consistency tokens name so that a token from another deployment is refused.
CREATE TABLE change_feed_head (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL,
    pruned_through INTEGER NOT NULL,
    database_id TEXT NOT NULL
);

INSERT INTO change_feed_head (id, position, pruned_through, database_id)
VALUES (1, 0, 0, lower(hex(randomblob(16))));

-- Live readers (one per server process): how far each has applied the feed, and when it last
-- said so. Pruning keeps what a live reader has not passed and forgets silent readers.
CREATE TABLE change_feed_readers (
    reader TEXT NOT NULL PRIMARY KEY,
    position INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Durable consumers (e.g. the loyalty earner): their position, and which process holds their
-- lease until when. Pruning keeps what any consumer has not passed.
CREATE TABLE feed_consumers (
    name TEXT NOT NULL PRIMARY KEY,
    position INTEGER NOT NULL,
    owner TEXT,
    lease_until INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The transaction that recorded each event (change_feed.txn), so a reader can fetch the events
-- of one commit (FeedStore::events_of, through the primary key's customer_id prefix). NULL for
-- events recorded before this migration.
ALTER TABLE events ADD COLUMN txn INTEGER;
