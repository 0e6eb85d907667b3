"""GS1 identifiers: GTIN-14 check digits and Digital Link URIs (AI 01 -> 10 -> 21)."""

from __future__ import annotations

import re
from urllib.parse import quote

from agritrace.errors import InvalidInput

_DIGITS14 = re.compile(r"^[0-9]{14}$")
# Lots and serials we issue are restricted to this URI-safe subset of GS1's character set 82.
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,19}$")


def check_digit(body: str) -> int:
    """The GS1 mod-10 check digit of the digits before it (weights 3,1,3,... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def is_valid_gtin14(value: str) -> bool:
    """Fourteen digits whose last digit is the check digit of the first thirteen."""
    return bool(_DIGITS14.match(value)) and check_digit(value[:13]) == int(value[13])


def normalize_gtin(value: str) -> str:
    """Accepts GTIN-8/12/13/14 and returns the GTIN-14 (left-padded with zeros), or raises InvalidInput."""
    digits = value.strip()
    if not digits.isascii() or not digits.isdigit() or len(digits) not in (8, 12, 13, 14):
        raise InvalidInput("a GTIN has 8, 12, 13 or 14 digits")
    gtin14 = digits.zfill(14)
    if not is_valid_gtin14(gtin14):
        raise InvalidInput(f"GTIN {value!r} has a wrong check digit (expected {check_digit(gtin14[:13])})")
    return gtin14


def is_uri_safe(value: str) -> bool:
    """True for lot and serial values we can place in a Digital Link path unescaped."""
    return bool(_SAFE.match(value))


def digital_link(base_url: str, *, gtin14: str, lot: str, serial: str) -> str:
    """`{base}/01/{gtin14}/10/{lot}/21/{serial}`: key first, then qualifiers in the order 22 -> 10 -> 21."""
    if not is_valid_gtin14(gtin14):
        raise InvalidInput(f"not a valid GTIN-14: {gtin14!r}")
    # quote() is a no-op for the values we issue; it guards any lot entered before the rules tightened.
    return f"{base_url.rstrip('/')}/01/{gtin14}/10/{quote(lot, safe='')}/21/{quote(serial, safe='')}"
