"""Trace: batches, lineage, certificates, QR codes and the consumer page."""
