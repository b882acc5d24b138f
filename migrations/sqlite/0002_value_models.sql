-- Value models and the tier policy of the scoring service: opaque JSON documents owned by
-- patron-scoring, kept byte for byte. Global (not customer-owned) tables; instants are
-- microseconds since the Unix epoch (UTC).

-- One row per fitted model, versions 1, 2, … in insertion order.
CREATE TABLE value_models (
    version INTEGER NOT NULL PRIMARY KEY,
    created_at INTEGER NOT NULL,
    active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
    body TEXT NOT NULL
);

-- At most one model is active.
CREATE UNIQUE INDEX value_models_one_active ON value_models (active) WHERE active = 1;

-- The tier policy: a single row, revised with optimistic concurrency.
CREATE TABLE tier_policy (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
