-- Trace: batches and their lineage, EPCIS-aligned events, custody in sensor channels,
-- certificates and inspections, product codes and their scans, recalls.

-- A batch (批次) of one product from one cooperative. `lot` is the GS1 AI (10) value printed on
-- labels: at most 20 characters, restricted to a URI-safe subset so Digital Link URIs need no escaping.
CREATE TABLE batches (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lot             text NOT NULL UNIQUE CHECK (lot ~ '^[A-Za-z0-9][A-Za-z0-9-]{0,19}$'),
    cooperative_id  bigint NOT NULL REFERENCES cooperatives (id),
    product         text NOT NULL CHECK (product IN ('mango', 'citrus', 'tea')),
    variety         text CHECK (length(variety) <= 100),
    gtin            text CHECK (gtin ~ '^[0-9]{14}$'),
    origin_plot     text CHECK (length(origin_plot) <= 200),
    gi_area         text CHECK (length(gi_area) <= 200),
    latitude        double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude       double precision CHECK (longitude BETWEEN -180 AND 180),
    harvest_date    date,
    quantity        numeric CHECK (quantity > 0),
    unit            text CHECK (length(unit) <= 16),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_cooperative_idx ON batches (cooperative_id);

-- Split and merge: one row per parent -> child edge. Queried both ways with recursive CTEs.
CREATE TABLE batch_lineage (
    parent_id   bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    child_id    bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    quantity    numeric CHECK (quantity > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (parent_id, child_id),
    CHECK (parent_id <> child_id)
);
CREATE INDEX batch_lineage_child_idx ON batch_lineage (child_id);

-- GS1 EPCIS 2.0-aligned events (bizStep and disposition from the CBV vocabulary).
CREATE TABLE trace_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    biz_step        text NOT NULL CHECK (biz_step IN
                      ('commissioning', 'packing', 'storing', 'shipping', 'receiving', 'inspecting',
                       'loading', 'unloading', 'transforming', 'retail_selling', 'recalling')),
    disposition     text CHECK (disposition IN
                      ('active', 'in_progress', 'in_transit', 'recalled', 'conformant', 'non_conformant',
                       'container_closed', 'sellable_not_accessible', 'sellable_accessible', 'destroyed', 'expired')),
    event_time      timestamptz NOT NULL,
    -- EPCIS wants the local offset the event was recorded in (China: +08:00).
    event_tz        text NOT NULL DEFAULT '+08:00' CHECK (event_tz ~ '^[+-][0-9]{2}:[0-9]{2}$'),
    place           text CHECK (length(place) <= 200),
    actor           text CHECK (length(actor) <= 200),
    -- Reference documents (EPCIS bizTransactionList): [{"type": "po"|"desadv"|"inv"|..., "id": "..."}]
    documents       jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(documents) = 'array'),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trace_events_batch_idx ON trace_events (batch_id, event_time);

-- Which sensor channel (cold room, truck) held a batch, and when. Open-ended while it is still there.
CREATE TABLE batch_custody (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id    bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    channel_id  integer NOT NULL REFERENCES channels (id),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    CHECK (ended_at IS NULL OR ended_at > started_at)
);
CREATE INDEX batch_custody_batch_idx ON batch_custody (batch_id);

-- 三品一标 certificates, held by a cooperative (covering its batches) or by one batch.
CREATE TABLE certificates (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('pollution_free', 'green_food', 'organic', 'geographical_indication')),
    number          text NOT NULL CHECK (length(number) BETWEEN 4 AND 64),
    issuer          text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 200),
    valid_from      date NOT NULL,
    valid_to        date NOT NULL,
    scope           text CHECK (length(scope) <= 500),
    cooperative_id  bigint REFERENCES cooperatives (id),
    batch_id        bigint REFERENCES batches (id) ON DELETE CASCADE,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, number),
    CHECK (valid_to >= valid_from),
    CHECK ((cooperative_id IS NULL) <> (batch_id IS NULL))
);
CREATE INDEX certificates_cooperative_idx ON certificates (cooperative_id);
CREATE INDEX certificates_batch_idx ON certificates (batch_id);

-- 承诺达标合格证: one per batch, with the fields the rules require.
CREATE TABLE compliance_certificates (
    batch_id      bigint PRIMARY KEY REFERENCES batches (id) ON DELETE CASCADE,
    product_name  text NOT NULL CHECK (length(product_name) BETWEEN 1 AND 100),
    quantity      numeric NOT NULL CHECK (quantity > 0),
    unit          text NOT NULL CHECK (length(unit) BETWEEN 1 AND 16),
    origin        text NOT NULL CHECK (length(origin) BETWEEN 1 AND 200),
    issued_at     timestamptz NOT NULL,
    issuer        text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 200),
    contact       text NOT NULL CHECK (length(contact) BETWEEN 5 AND 40)
);

-- Inspection results (pesticide residues and the like).
CREATE TABLE inspections (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id      bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    inspected_at  timestamptz NOT NULL,
    kind          text NOT NULL CHECK (length(kind) BETWEEN 1 AND 100),
    standard      text CHECK (length(standard) <= 100),
    laboratory    text CHECK (length(laboratory) <= 200),
    passed        boolean NOT NULL,
    details       text CHECK (length(details) <= 1000)
);
CREATE INDEX inspections_batch_idx ON inspections (batch_id);

-- A recall on a batch; it covers everything downstream in the lineage (computed when read, so a lot
-- packed after the recall is covered too).
CREATE TABLE batch_recalls (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id      bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    reason        text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    recalled_at   timestamptz NOT NULL DEFAULT now(),
    recalled_by   text NOT NULL
);
CREATE INDEX batch_recalls_batch_idx ON batch_recalls (batch_id);

-- One code per box: a random serial (>= 64 bits), resolving to its batch.
CREATE TABLE codes (
    serial        text PRIMARY KEY CHECK (serial ~ '^[A-Z2-7]{16,20}$'),
    batch_id      bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    scan_count    bigint NOT NULL DEFAULT 0,
    first_scan_at timestamptz,
    last_scan_at  timestamptz,
    -- Set when the scan pattern looks like a copied label (too many scans, too many places).
    flagged_at    timestamptz,
    flag_reason   text
);
CREATE INDEX codes_batch_idx ON codes (batch_id);
CREATE INDEX codes_flagged_idx ON codes (flagged_at) WHERE flagged_at IS NOT NULL;

-- Scans keep no personal data: a keyed hash of the network prefix (/24, /48) and the browser family.
CREATE TABLE code_scans (
    time        timestamptz NOT NULL DEFAULT now(),
    serial      text NOT NULL,
    place_hash  text,
    ua_family   text
);
CREATE INDEX code_scans_serial_idx ON code_scans (serial, time DESC);
DO $$ BEGIN PERFORM create_hypertable('code_scans', by_range('time', INTERVAL '7 days')); END $$;

-- Consumer pages show China time (no daylight saving: a fixed +08:00), built as JSON in one query.
CREATE FUNCTION trace_cn_time(t timestamptz) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT to_char(t AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD"T"HH24:MI:SS"+08:00"') $$;
