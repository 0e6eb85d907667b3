"""MQTT ingest: SenML parsing, validation and batched COPY into TimescaleDB."""
