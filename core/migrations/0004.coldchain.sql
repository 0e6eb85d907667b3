-- Cold chain: product profiles with excursion rules, what each channel is watched against,
-- alerts with an append-only history (also the notification outbox), and webhooks.

-- A profile is what a product needs (mango, citrus, tea ...): bands for the summary and rules for alerts.
CREATE TABLE coldchain_profiles (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{1,39}$'),
    description  text CHECK (length(description) <= 500),
    -- Bands (NULL = unbounded on that side); used by the summary's time in/out of band.
    temp_low     double precision,
    temp_high    double precision,
    rh_low       double precision,
    rh_high      double precision,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (temp_low IS NULL OR temp_high IS NULL OR temp_low < temp_high),
    CHECK (rh_low IS NULL OR rh_high IS NULL OR rh_low < rh_high)
);

-- An excursion rule. metric picks the channels it applies to by unit (temperature = Cel,
-- humidity = %RH); 'no_data' applies to every monitored channel and uses delay_s as the
-- silence allowed. 'single' = continuous time beyond the threshold; 'cumulative' = total time
-- beyond it within window_s. Hysteresis: an open excursion ends only once readings are back past
-- threshold +/- clear_margin for clear_delay_s.
CREATE TABLE coldchain_rules (
    id             integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id     integer NOT NULL REFERENCES coldchain_profiles (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_-]{1,39}$'),
    metric         text NOT NULL CHECK (metric IN ('temperature', 'humidity', 'no_data')),
    direction      text CHECK (direction IN ('below', 'above')),
    threshold      double precision,
    clear_margin   double precision NOT NULL DEFAULT 0 CHECK (clear_margin >= 0),
    delay_s        integer NOT NULL CHECK (delay_s > 0),
    clear_delay_s  integer NOT NULL DEFAULT 600 CHECK (clear_delay_s >= 0),
    mode           text NOT NULL DEFAULT 'single' CHECK (mode IN ('single', 'cumulative')),
    window_s       integer CHECK (window_s > 0),
    -- A gap between readings longer than this counts only this long (a logger that stops is the
    -- no-data rule's business, not an excursion of unknown length).
    max_gap_s      integer NOT NULL DEFAULT 900 CHECK (max_gap_s > 0),
    severity       text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    enabled        boolean NOT NULL DEFAULT true,
    UNIQUE (profile_id, name),
    CHECK ((metric = 'no_data') = (direction IS NULL AND threshold IS NULL)),
    CHECK ((mode = 'cumulative') = (window_s IS NOT NULL)),
    CHECK (window_s IS NULL OR window_s >= delay_s)
);

-- What a channel is watched against, set by an operator (`agritrace channels profile`).
CREATE TABLE coldchain_channel_profiles (
    channel_id  integer PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    profile_id  integer NOT NULL REFERENCES coldchain_profiles (id),
    set_at      timestamptz NOT NULL DEFAULT now()
);

-- The one place that says which profile a channel is monitored against. Today: its own setting.
-- After the trace branch lands, the batches in custody of the channel can be added here
-- (CREATE OR REPLACE VIEW in a later migration) without touching the evaluator.
CREATE VIEW coldchain_monitored_channels AS
    SELECT cp.channel_id, cp.profile_id, 'channel'::text AS source
      FROM coldchain_channel_profiles cp;

-- Which ingest the evaluator has already looked at, per channel.
CREATE TABLE coldchain_eval_state (
    channel_id        integer PRIMARY KEY REFERENCES channels (id) ON DELETE CASCADE,
    evaluated_ingest  timestamptz NOT NULL
);

CREATE TABLE alerts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel_id       integer NOT NULL REFERENCES channels (id),
    rule_id          integer NOT NULL REFERENCES coldchain_rules (id),
    profile_id       integer NOT NULL REFERENCES coldchain_profiles (id),
    severity         text NOT NULL,
    -- withdrawn: late readings showed the excursion never happened (or merged it into another).
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'acknowledged', 'resolved', 'withdrawn')),
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    worst_value      double precision,
    minutes_out      double precision NOT NULL DEFAULT 0,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    resolved_at      timestamptz,
    resolved_by      text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- One open alert per channel and rule.
CREATE UNIQUE INDEX alerts_one_open_idx ON alerts (channel_id, rule_id)
    WHERE status IN ('open', 'acknowledged');
CREATE INDEX alerts_status_idx ON alerts (status, started_at DESC);
CREATE INDEX alerts_channel_idx ON alerts (channel_id, rule_id, started_at);

-- An alert as the API, the history and the notifications show it.
CREATE VIEW alerts_view AS
    SELECT a.id, a.status, ch.gateway_id, ch.name AS channel, a.severity, a.channel_id, ch.unit,
           g.cooperative_id, co.name AS cooperative, p.name AS product, r.name AS rule, r.metric,
           r.direction, r.threshold, a.started_at, a.ended_at, a.worst_value, a.minutes_out,
           a.opened_at, a.acknowledged_at, a.acknowledged_by, a.resolved_at, a.resolved_by, a.updated_at
      FROM alerts a
      JOIN channels ch ON ch.id = a.channel_id
      JOIN gateways g ON g.id = ch.gateway_id
      JOIN cooperatives co ON co.id = g.cooperative_id
      JOIN coldchain_rules r ON r.id = a.rule_id
      JOIN coldchain_profiles p ON p.id = a.profile_id;

-- Every change to an alert, never updated or deleted. Its id order is also the notification
-- outbox that `agritrace alerts run` publishes from (so API changes are published too).
CREATE TABLE alert_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id  bigint NOT NULL REFERENCES alerts (id),
    at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    action    text NOT NULL CHECK (action IN
              ('opened', 'updated', 'acknowledged', 'resolved', 'commented', 'withdrawn')),
    actor     text NOT NULL,
    comment   text CHECK (length(comment) <= 2000),
    state     jsonb NOT NULL
);
CREATE INDEX alert_events_alert_idx ON alert_events (alert_id, id);

CREATE FUNCTION alert_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'alert_events is append-only';
END $$;
CREATE TRIGGER alert_events_no_change BEFORE UPDATE OR DELETE ON alert_events
    FOR EACH ROW EXECUTE FUNCTION alert_events_append_only();

-- How far each notifier has published the outbox.
CREATE TABLE coldchain_outbox_cursor (
    name           text PRIMARY KEY,
    last_event_id  bigint NOT NULL
);

-- Webhooks receive every alert change, signed with HMAC-SHA256 of the body under their secret.
CREATE TABLE coldchain_webhooks (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url             text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    secret          text NOT NULL,
    -- NULL: every cooperative's alerts (a regulator's hook).
    cooperative_id  bigint REFERENCES cooperatives (id),
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE coldchain_webhook_deliveries (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id    integer NOT NULL REFERENCES coldchain_webhooks (id) ON DELETE CASCADE,
    event_id      bigint NOT NULL REFERENCES alert_events (id),
    attempts      integer NOT NULL,
    status_code   integer,
    error         text,
    delivered_at  timestamptz,
    finished_at   timestamptz NOT NULL DEFAULT now()
);

-- The default profiles (DESIGN.md "Cold chain") are inserted by agritrace.coldchain.profiles
-- when missing, so a wiped table (tests truncate) comes back with them and edits are kept.
