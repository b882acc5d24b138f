-- Customers, their events, their orders and their summaries.
-- Instants are microseconds since the Unix epoch (UTC); days are days since 1970-01-01 (UTC).
-- Every customer-owned table carries customer_id first in its primary key, so the data could be
-- distributed by customer_id later.

CREATE TABLE customers (
    customer_id TEXT NOT NULL PRIMARY KEY,
    birth_date INTEGER,
    gender TEXT NOT NULL DEFAULT 'unspecified',
    country TEXT,
    signed_up_at INTEGER,
    attributes TEXT NOT NULL DEFAULT '{}',
    create_time INTEGER NOT NULL,
    update_time INTEGER
) WITHOUT ROWID;

-- One row per event; (customer_id, event_id) makes events idempotent.
CREATE TABLE events (
    customer_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    kind SMALLINT NOT NULL,
    occurred_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (customer_id, event_id)
) WITHOUT ROWID;

CREATE INDEX events_newest_first ON events (customer_id, occurred_at DESC, event_id DESC);

-- One row per order: purchases set day and add to amount, refunds add to refunded. A refund may
-- arrive first; day stays NULL until the purchase does.
CREATE TABLE orders (
    customer_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    day INTEGER,
    amount INTEGER NOT NULL DEFAULT 0,
    item_count INTEGER NOT NULL DEFAULT 0,
    refunded INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, order_id)
) WITHOUT ROWID;

-- Per-customer aggregates kept in the same transaction as the events (see patron-store columns.rs).
CREATE TABLE customer_summaries (
    customer_id TEXT NOT NULL PRIMARY KEY,
    event_count INTEGER NOT NULL DEFAULT 0,
    engagement_count INTEGER NOT NULL DEFAULT 0,
    support_count INTEGER NOT NULL DEFAULT 0,
    support_fcr_count INTEGER NOT NULL DEFAULT 0,
    survey_count INTEGER NOT NULL DEFAULT 0,
    csat_count INTEGER NOT NULL DEFAULT 0,
    csat_sum INTEGER NOT NULL DEFAULT 0,
    nps_promoters INTEGER NOT NULL DEFAULT 0,
    nps_passives INTEGER NOT NULL DEFAULT 0,
    nps_detractors INTEGER NOT NULL DEFAULT 0,
    economic_sum INTEGER NOT NULL DEFAULT 0,
    economic_n INTEGER NOT NULL DEFAULT 0,
    functional_sum INTEGER NOT NULL DEFAULT 0,
    functional_n INTEGER NOT NULL DEFAULT 0,
    experiential_sum INTEGER NOT NULL DEFAULT 0,
    experiential_n INTEGER NOT NULL DEFAULT 0,
    symbolic_sum INTEGER NOT NULL DEFAULT 0,
    symbolic_n INTEGER NOT NULL DEFAULT 0,
    price_sum INTEGER NOT NULL DEFAULT 0,
    price_n INTEGER NOT NULL DEFAULT 0,
    time_sum INTEGER NOT NULL DEFAULT 0,
    time_n INTEGER NOT NULL DEFAULT 0,
    effort_sum INTEGER NOT NULL DEFAULT 0,
    effort_n INTEGER NOT NULL DEFAULT 0,
    emotional_sum INTEGER NOT NULL DEFAULT 0,
    emotional_n INTEGER NOT NULL DEFAULT 0,
    custom_event_count INTEGER NOT NULL DEFAULT 0,
    first_event_at INTEGER,
    last_event_at INTEGER,
    last_engagement_at INTEGER,
    -- The latest NPS answer and when it was given (arg-max of (last_nps_at, last_nps)).
    last_nps_at INTEGER,
    last_nps INTEGER,
    order_count INTEGER NOT NULL DEFAULT 0,
    purchase_days INTEGER NOT NULL DEFAULT 0,
    first_purchase_day INTEGER,
    last_purchase_day INTEGER,
    net_revenue INTEGER NOT NULL DEFAULT 0,
    refunded INTEGER NOT NULL DEFAULT 0,
    first_day_revenue INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
