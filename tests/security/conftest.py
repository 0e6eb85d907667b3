"""Fixtures the security tests share with the trace tests (a mango lot with an issued code, tokens)."""

from tracing.conftest import mango_lot, regulator  # noqa: F401 - re-exported fixtures
