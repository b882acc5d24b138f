-- Loyalty programs, rewards and members' points (patron-loyalty).
-- Instants are microseconds since the Unix epoch (UTC); days are days since 1970-01-01 (UTC).
-- Every change to a member's points is one transaction of the store's single writer connection
-- (BEGIN IMMEDIATE): it loads what the operation needs, the operation decides, and its changes
-- are written together, or nothing is.

-- Programs and rewards: global (not customer-owned) tables. The body is an opaque JSON document
-- owned by patron-loyalty, kept byte for byte; revision is 1 when created, one more per update.
-- The target / required segment is a copy of the body's, so that a segment in use cannot be
-- deleted (the store refuses first, naming the programs and rewards). No foreign key to
-- segments: built-in segments are not stored.
CREATE TABLE loyalty_programs (
    program_id TEXT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL,
    target_segment TEXT,
    revision INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);

CREATE INDEX loyalty_programs_target_segment ON loyalty_programs (target_segment)
    WHERE target_segment IS NOT NULL;

-- stock_remaining: units left, NULL for unlimited. Taken one at a time by a conditional
-- decrement, so it never goes below zero.
CREATE TABLE loyalty_rewards (
    reward_id TEXT NOT NULL PRIMARY KEY,
    program_id TEXT NOT NULL REFERENCES loyalty_programs (program_id),
    body TEXT NOT NULL,
    required_segment TEXT,
    stock_remaining INTEGER CHECK (stock_remaining >= 0),
    revision INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);

-- A program's rewards in id order (ListRewards).
CREATE INDEX loyalty_rewards_program ON loyalty_rewards (program_id, reward_id);

CREATE INDEX loyalty_rewards_required_segment ON loyalty_rewards (required_segment)
    WHERE required_segment IS NOT NULL;

-- The rest is customer-owned: customer_id first in every primary key.

-- One row per member of a program: the wallet's totals and id counters (lots and entries are
-- numbered 1, 2, … per member).
CREATE TABLE loyalty_members (
    customer_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    enrolled_at INTEGER NOT NULL,
    debt INTEGER NOT NULL CHECK (debt >= 0),
    lifetime_earned INTEGER NOT NULL,
    lifetime_redeemed INTEGER NOT NULL,
    next_lot_id INTEGER NOT NULL,
    next_entry_id INTEGER NOT NULL,
    first_purchase_done INTEGER NOT NULL CHECK (first_purchase_done IN (0, 1)),
    PRIMARY KEY (customer_id, program_id)
) WITHOUT ROWID;

-- A credit of points: pending until available_at, expiring at expires_at (NULL: never).
CREATE TABLE loyalty_lots (
    customer_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    lot_id INTEGER NOT NULL,
    original INTEGER NOT NULL,
    remaining INTEGER NOT NULL CHECK (remaining >= 0),
    earned_at INTEGER NOT NULL,
    available_at INTEGER NOT NULL,
    expires_at INTEGER,
    activated INTEGER NOT NULL CHECK (activated IN (0, 1)),
    PRIMARY KEY (customer_id, program_id, lot_id)
) WITHOUT ROWID;

-- The members to settle (members_to_settle): lots expired with points left, and pending lots
-- that became available. Partial, so they hold only the lots still to settle.
CREATE INDEX loyalty_lots_expiring ON loyalty_lots (expires_at, program_id, customer_id)
    WHERE remaining > 0;
CREATE INDEX loyalty_lots_maturing ON loyalty_lots (available_at, program_id, customer_id)
    WHERE activated = 0;

-- The ledger: one row per entry, never changed once written. lots is a JSON array of
-- [lot_id, points] pairs; kind is the entry kind's name (EARN, PENDING, REDEEM, …).
CREATE TABLE loyalty_entries (
    customer_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    points INTEGER NOT NULL,
    lots TEXT NOT NULL,
    event_id TEXT,
    redemption_id TEXT,
    rule TEXT,
    issuer TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    effective_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (customer_id, program_id, entry_id)
) WITHOUT ROWID;

-- The program's view of one order of the member: purchases and refunds fold into it in any
-- order; points are the net points credited for it so far.
CREATE TABLE loyalty_orders (
    customer_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    refunded INTEGER NOT NULL,
    purchased INTEGER NOT NULL CHECK (purchased IN (0, 1)),
    day INTEGER,
    multiplier_percent INTEGER NOT NULL,
    points INTEGER NOT NULL,
    PRIMARY KEY (customer_id, program_id, order_id)
) WITHOUT ROWID;

-- Events already applied to the member (each is applied exactly once).
CREATE TABLE loyalty_applied_events (
    customer_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (customer_id, program_id, event_id)
) WITHOUT ROWID;

-- Custom-event bonuses given per cap period (period_start: the period's first day).
CREATE TABLE loyalty_bonus_counts (
    customer_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    period_start INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (customer_id, program_id, event_name, period_start)
) WITHOUT ROWID;

-- Points earned and net spend per member and UTC day (tiers are evaluated from them).
CREATE TABLE loyalty_activity (
    customer_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    day INTEGER NOT NULL,
    points INTEGER NOT NULL,
    spend INTEGER NOT NULL,
    PRIMARY KEY (customer_id, program_id, day)
) WITHOUT ROWID;

-- Redemptions: request_id is the caller's idempotency key, unique per member; lots is a JSON
-- array of [lot_id, points] pairs; status is COMPLETED or CANCELLED.
CREATE TABLE loyalty_redemptions (
    customer_id TEXT NOT NULL,
    program_id TEXT NOT NULL,
    redemption_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    reward_id TEXT NOT NULL,
    cost INTEGER NOT NULL,
    lots TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('COMPLETED', 'CANCELLED')),
    created_at INTEGER NOT NULL,
    cancelled_at INTEGER,
    PRIMARY KEY (customer_id, program_id, redemption_id),
    UNIQUE (customer_id, program_id, request_id)
) WITHOUT ROWID;

-- A member's redemptions of one reward (per-member limits).
CREATE INDEX loyalty_redemptions_reward ON loyalty_redemptions (customer_id, program_id, reward_id);
