"""Trace domain errors."""

from __future__ import annotations

from agritrace.errors import NotFound


class BatchNotFound(NotFound):
    type_slug = "batch-not-found"
    title = "Batch not found"


class CodeNotFound(NotFound):
    type_slug = "code-not-found"
    title = "Code not found or not genuine"
