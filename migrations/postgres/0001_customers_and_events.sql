-- Customers, their events, their orders and their summaries.
-- Instants are microseconds since the Unix epoch (UTC); days are days since 1970-01-01 (UTC).
-- Every customer-owned table carries customer_id first in its primary key, so the data could be
-- distributed by customer_id later.
-- Text keys use the "C" collation so that ids compare and sort bytewise, exactly as in SQLite:
-- ListCustomers pages by customer_id and must see the same order on both backends.

CREATE TABLE customers (
    customer_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    birth_date INTEGER,
    gender TEXT NOT NULL DEFAULT 'unspecified',
    country TEXT,
    signed_up_at BIGINT,
    attributes TEXT NOT NULL DEFAULT '{}',
    create_time BIGINT NOT NULL,
    update_time BIGINT
);

-- One row per event; (customer_id, event_id) makes events idempotent.
CREATE TABLE events (
    customer_id TEXT COLLATE "C" NOT NULL,
    event_id TEXT COLLATE "C" NOT NULL,
    kind SMALLINT NOT NULL,
    occurred_at BIGINT NOT NULL,
    recorded_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (customer_id, event_id)
);

CREATE INDEX events_newest_first ON events (customer_id, occurred_at DESC, event_id DESC);

-- One row per order: purchases set day and add to amount, refunds add to refunded. A refund may
-- arrive first; day stays NULL until the purchase does.
CREATE TABLE orders (
    customer_id TEXT COLLATE "C" NOT NULL,
    order_id TEXT COLLATE "C" NOT NULL,
    day INTEGER,
    amount BIGINT NOT NULL DEFAULT 0,
    item_count BIGINT NOT NULL DEFAULT 0,
    refunded BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, order_id)
);

-- Per-customer aggregates kept in the same transaction as the events (see patron-store columns.rs).
CREATE TABLE customer_summaries (
    customer_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    event_count BIGINT NOT NULL DEFAULT 0,
    engagement_count BIGINT NOT NULL DEFAULT 0,
    support_count BIGINT NOT NULL DEFAULT 0,
    support_fcr_count BIGINT NOT NULL DEFAULT 0,
    survey_count BIGINT NOT NULL DEFAULT 0,
    csat_count BIGINT NOT NULL DEFAULT 0,
    csat_sum BIGINT NOT NULL DEFAULT 0,
    nps_promoters BIGINT NOT NULL DEFAULT 0,
    nps_passives BIGINT NOT NULL DEFAULT 0,
    nps_detractors BIGINT NOT NULL DEFAULT 0,
    economic_sum BIGINT NOT NULL DEFAULT 0,
    economic_n BIGINT NOT NULL DEFAULT 0,
    functional_sum BIGINT NOT NULL DEFAULT 0,
    functional_n BIGINT NOT NULL DEFAULT 0,
    experiential_sum BIGINT NOT NULL DEFAULT 0,
    experiential_n BIGINT NOT NULL DEFAULT 0,
    symbolic_sum BIGINT NOT NULL DEFAULT 0,
    symbolic_n BIGINT NOT NULL DEFAULT 0,
    price_sum BIGINT NOT NULL DEFAULT 0,
    price_n BIGINT NOT NULL DEFAULT 0,
    time_sum BIGINT NOT NULL DEFAULT 0,
    time_n BIGINT NOT NULL DEFAULT 0,
    effort_sum BIGINT NOT NULL DEFAULT 0,
    effort_n BIGINT NOT NULL DEFAULT 0,
    emotional_sum BIGINT NOT NULL DEFAULT 0,
    emotional_n BIGINT NOT NULL DEFAULT 0,
    custom_event_count BIGINT NOT NULL DEFAULT 0,
    first_event_at BIGINT,
    last_event_at BIGINT,
    last_engagement_at BIGINT,
    -- The latest NPS answer and when it was given (arg-max of (last_nps_at, last_nps)).
    last_nps_at BIGINT,
    last_nps SMALLINT,
    order_count BIGINT NOT NULL DEFAULT 0,
    purchase_days BIGINT NOT NULL DEFAULT 0,
    first_purchase_day INTEGER,
    last_purchase_day INTEGER,
    net_revenue BIGINT NOT NULL DEFAULT 0,
    refunded BIGINT NOT NULL DEFAULT 0,
    first_day_revenue BIGINT NOT NULL DEFAULT 0
);
