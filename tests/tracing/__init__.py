"""Trace domain tests (a package so mypy tells its conftest from the top-level one)."""
