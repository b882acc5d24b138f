-- Value models and the tier policy of the scoring service: opaque JSON documents owned by
-- patron-scoring, kept byte for byte (TEXT, not JSONB, which would reformat them). Global (not
-- customer-owned) tables, small enough to be reference tables if the data is ever distributed;
-- instants are microseconds since the Unix epoch (UTC).

-- One row per fitted model, versions 1, 2, … in insertion order. Writers take
-- LOCK TABLE value_models IN EXCLUSIVE MODE (readers are not blocked), so versions are assigned
-- and activation switched one writer at a time.
CREATE TABLE value_models (
    version BIGINT NOT NULL PRIMARY KEY,
    created_at BIGINT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT FALSE,
    body TEXT NOT NULL
);

-- At most one model is active.
CREATE UNIQUE INDEX value_models_one_active ON value_models (active) WHERE active;

-- The tier policy: a single row, revised with optimistic concurrency.
CREATE TABLE tier_policy (
    id SMALLINT NOT NULL PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    body TEXT NOT NULL
);
