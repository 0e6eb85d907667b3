"""Attack tests of issue 12 (a package so mypy tells its conftest from the top-level one)."""
