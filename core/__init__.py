"""AgriTrace: agricultural traceability backend (sensor ingest, trace pages, cold-chain supervision)."""

__version__ = "0.1.0"
