-- Foundation: TimescaleDB, the readings hypertable and the relational core.

CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE cooperatives (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One gateway = one broker client; its id is its MQTT username and topic segment.
CREATE TABLE gateways (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{2,63}$'),
    cooperative_id  bigint NOT NULL REFERENCES cooperatives (id),
    description     text CHECK (length(description) <= 500),
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz,
    online          boolean NOT NULL DEFAULT false,
    status_at       timestamptz,
    last_seen       timestamptz
);
CREATE INDEX gateways_cooperative_idx ON gateways (cooperative_id);

-- A channel is one SenML resolved name (bn + n) of one gateway. Registered on first sight.
CREATE TABLE channels (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway_id   text NOT NULL REFERENCES gateways (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    unit         text CHECK (length(unit) <= 32),
    description  text CHECK (length(description) <= 500),
    first_seen   timestamptz NOT NULL DEFAULT now(),
    -- Newest reading by timestamp (not by arrival), kept by the ingest worker.
    last_time    timestamptz,
    last_value   double precision,
    -- When the ingest worker last committed readings for this channel (evaluators poll this).
    last_ingested_at timestamptz,
    UNIQUE (gateway_id, name)
);

-- Narrow and typed: one row per (channel, time). The primary key is what makes a
-- re-delivered or re-sent reading a duplicate that is stored once.
CREATE TABLE readings (
    time        timestamptz NOT NULL,
    channel_id  integer NOT NULL,
    value       double precision NOT NULL,
    PRIMARY KEY (channel_id, time)
);
DO $$ BEGIN PERFORM create_hypertable('readings', by_range('time', INTERVAL '7 days')); END $$;

-- API tokens: only a keyed hash of the token is kept; the token is shown once.
CREATE TABLE api_tokens (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash      bytea NOT NULL UNIQUE,
    prefix          text NOT NULL,
    role            text NOT NULL CHECK (role IN ('admin', 'regulator', 'cooperative')),
    cooperative_id  bigint REFERENCES cooperatives (id),
    description     text CHECK (length(description) <= 200),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    CHECK ((role = 'cooperative') = (cooperative_id IS NOT NULL))
);
