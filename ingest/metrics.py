"""Prometheus metrics of an ingest worker (served on its own port, see settings.ingest_metrics_port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter("agritrace_ingest_messages", "MQTT messages handled, by kind", ["kind"])
READINGS = Counter("agritrace_ingest_readings", "Readings committed (new rows)")
DUPLICATES = Counter("agritrace_ingest_duplicates", "Readings already stored (same channel and time)")
SKIPPED = Counter("agritrace_ingest_skipped_records", "SenML records without a numeric value (vs, vd, s)")
DEAD_LETTERS = Counter("agritrace_ingest_dead_letters", "Messages kept in the dead-letter table", ["reason"])
BATCH_SECONDS = Histogram(
    "agritrace_ingest_batch_commit_seconds",
    "Time to write and commit one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_READINGS = Histogram(
    "agritrace_ingest_batch_readings", "Readings per batch", buckets=(1, 10, 100, 1000, 5000, 10000, 50000)
)
# Lag: how old a message is when its batch commits (arrival at the worker -> committed), and
# how old the newest reading is (a gateway's clock -> committed; large after store-and-forward).
COMMIT_LAG = Histogram(
    "agritrace_ingest_commit_lag_seconds",
    "Arrival at the worker to commit",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
READING_AGE = Gauge("agritrace_ingest_reading_age_seconds", "Age of the newest reading in the last batch")
QUEUE = Gauge("agritrace_ingest_queue_messages", "Messages received and not yet committed")
CONNECTED = Gauge("agritrace_ingest_connected", "1 while connected to the broker")
RETENTION_DROPPED = Counter(
    "agritrace_ingest_retention_dropped_chunks", "Readings chunks dropped by retention"
)
