-- Devices and ingest: describing channels, credential bookkeeping, and the dead-letter table.

-- What a channel measures and where it hangs (a cold room, a truck, an orchard plot).
ALTER TABLE channels
    ADD COLUMN quantity    text CHECK (length(quantity) <= 64),
    ADD COLUMN asset_kind  text CHECK (asset_kind IN ('cold_room', 'truck', 'plot', 'garden', 'warehouse', 'other')),
    ADD COLUMN asset_name  text CHECK (length(asset_name) <= 200);

-- The broker holds the gateway's password (as a salted hash, in dynamic security); we only
-- remember when it was last issued, so operators can see stale credentials.
ALTER TABLE gateways ADD COLUMN credentials_issued_at timestamptz;

-- Messages the ingest worker could not accept, kept with their raw bytes so nothing a gateway
-- sent is ever silently dropped. gateway_id is the topic segment and has no foreign key:
-- a message may name a gateway that does not exist (any more).
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    gateway_id   text,
    reason       text NOT NULL,
    detail       text,
    payload      bytea NOT NULL
);
CREATE INDEX dead_letters_received_idx ON dead_letters (received_at);
CREATE INDEX dead_letters_gateway_idx ON dead_letters (gateway_id, received_at);
