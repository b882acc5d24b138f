-- Engagement per customer and UTC day, and the segment definitions of patron-segmentation.
-- Instants are microseconds since the Unix epoch (UTC); days are days since 1970-01-01 (UTC).
-- Text keys use the "C" collation (bytewise, as in SQLite), like every other table.

-- Engagement events counted per customer, UTC day and activity name, kept in the same
-- transaction as the events (count = count + the batch's new events): the windowed engagement
-- counts that segment rules read. Customer-owned: customer_id first in the primary key.
CREATE TABLE engagement_days (
    customer_id TEXT COLLATE "C" NOT NULL,
    day INTEGER NOT NULL,
    activity TEXT COLLATE "C" NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (customer_id, day, activity)
);

-- Backfill from the engagement events already stored: kind 3, data
-- {"engagement":{"activity":"…"}}; the day is floor(occurred_at / one day), also before 1970.
INSERT INTO engagement_days (customer_id, day, activity, count)
SELECT customer_id, day, activity, COUNT(*)
FROM (
    SELECT customer_id,
        floor(occurred_at / 86400000000::NUMERIC)::INTEGER AS day,
        (data::JSONB -> 'engagement' ->> 'activity') AS activity
    FROM events
    WHERE kind = 3
) AS e
GROUP BY customer_id, day, activity
ORDER BY customer_id, day, activity;

-- Segment definitions: global (not customer-owned) tables, small enough to be reference tables
-- if the data is ever distributed. The rule is CEL source text checked by patron-segmentation
-- before it is stored; revision is 1 when created, one more per update. Writers take
-- LOCK TABLE segments IN EXCLUSIVE MODE (readers are not blocked), so the dependency-cycle check
-- over every stored edge and the write it guards are never interleaved with another segment
-- write.
CREATE TABLE segments (
    segment_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    display_name TEXT NOT NULL,
    description TEXT NOT NULL,
    rule TEXT NOT NULL,
    revision BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);

-- The stored segments a segment's rule names with in_segment("…"). A segment's own rows go with
-- it; a segment others depend on cannot be deleted (the store refuses first, naming them).
CREATE TABLE segment_dependencies (
    segment_id TEXT COLLATE "C" NOT NULL REFERENCES segments (segment_id) ON DELETE CASCADE,
    depends_on TEXT COLLATE "C" NOT NULL REFERENCES segments (segment_id),
    PRIMARY KEY (segment_id, depends_on)
);

-- Who depends on a segment (the check before a delete; the foreign key's own lookups).
CREATE INDEX segment_dependencies_depends_on ON segment_dependencies (depends_on);
