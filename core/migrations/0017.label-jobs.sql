-- depends: 0016.custody-evidence
-- Label sheets as background jobs (issue 12, item 5: a 208,000-code sheet was rendered inside one
-- request for 10+ minutes at 2.3 GB and went on after the client had gone). A job is claimed by one
-- API process's runner (FOR UPDATE SKIP LOCKED), reports progress per page, stops when cancelled,
-- and keeps its PDF here until it is deleted with the batch or cleaned up after a day.
CREATE TABLE label_jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id        bigint NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    total           integer NOT NULL CHECK (total >= 0),
    done            integer NOT NULL DEFAULT 0 CHECK (done >= 0),
    error           text CHECK (length(error) <= 500),
    pdf             bytea,
    requested_by    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    heartbeat_at    timestamptz,
    finished_at     timestamptz
);
CREATE INDEX label_jobs_queue_idx ON label_jobs (id) WHERE status IN ('queued', 'running');
CREATE INDEX label_jobs_batch_idx ON label_jobs (batch_id);
