-- The change feed: a durable, ordered log of what every committed write changed, appended in the
-- write's own transaction (see patron-store feed.rs). Global (not customer-owned) tables;
-- instants are microseconds since the Unix epoch (UTC). Text keys use the "C" collation
-- (bytewise, as in SQLite), like every other table.
--
-- Positions are dense (1, 2, 3, …) and become visible in position order: each write transaction,
-- as its last statement, takes its positions with
--   UPDATE change_feed_head SET position = position + n WHERE id = 1 RETURNING position
-- and inserts its n rows in the same statement. The head row's lock is held until the commit is
-- visible, so the next writer can only take the following positions after that; a reader that has
-- applied everything up to p and reads position > p never skips a change that commits later.

-- One row per change. kind: what changed (ChangeKind::code); key: its id; scope: the program of
-- a member or reward change, '' otherwise; txn: the writing transaction (pg_current_xact_id),
-- the same for every change of one commit and carried by the events it recorded; committed_at:
-- the database clock when the changes were appended, just before the commit.
CREATE TABLE change_feed (
    position BIGINT NOT NULL PRIMARY KEY,
    kind TEXT COLLATE "C" NOT NULL
        CHECK (kind IN ('customer', 'model', 'tier_policy', 'segment', 'program', 'reward',
                        'member')),
    key TEXT COLLATE "C" NOT NULL,
    scope TEXT COLLATE "C" NOT NULL DEFAULT '',
    txn BIGINT NOT NULL,
    committed_at BIGINT NOT NULL
);

-- The feed's head: a single row. position: the last position handed out (0 while the feed is
-- empty); pruned_through: every position up to it has been pruned; database_id: a random id made
-- here, which consistency tokens name so that a token from another deployment is refused.
CREATE TABLE change_feed_head (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    position BIGINT NOT NULL,
    pruned_through BIGINT NOT NULL,
    database_id TEXT NOT NULL
);

INSERT INTO change_feed_head (id, position, pruned_through, database_id)
VALUES (1, 0, 0, md5(random()::text || clock_timestamp()::text));

-- Live readers (one per server process): how far each has applied the feed, and when it last
-- said so. Pruning keeps what a live reader has not passed and forgets silent readers.
CREATE TABLE change_feed_readers (
    reader TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- Durable consumers (e.g. the loyalty earner): their position, and which process holds their
-- lease until when. Pruning keeps what any consumer has not passed.
CREATE TABLE feed_consumers (
    name TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL,
    owner TEXT COLLATE "C",
    lease_until BIGINT NOT NULL DEFAULT 0
);

-- The transaction that recorded each event (change_feed.txn), so a reader can fetch the events
-- of one commit (FeedStore::events_of, through the primary key's customer_id prefix). NULL for
-- events recorded before this migration.
ALTER TABLE events ADD COLUMN txn BIGINT;
