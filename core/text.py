"""Text a consumer or a regulator will read: no invisible characters that change what it seems to say.

Bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069), zero-width characters
(U+200B-U+200F, U+2060-U+2064, U+FEFF) and the other Unicode format (Cf) and control (Cc) characters
make "百色芒果合作社" and a look-alike differ invisibly, or reorder what a page shows
("coop\u202egnp.exe"); line and paragraph separators (Zl, Zp) break a one-line field. They are
refused in every field the consumer page shows, here (pydantic, 422 naming the field) and in the
database (`consumer_text_ok()`, migration 0019, so the CLI and direct writes are held to it too).
Multi-line fields (a recall's reason, inspection details, a certificate's scope) may also hold
newlines and tabs. CJK punctuation, the middle dot and full-width forms are ordinary text.

Also: lone surrogates, which a JSON `"\\ud800"` escape decodes to in Python and no UTF-8 encoder
accepts (PostgreSQL never sees them: `api/protection.py` refuses such bodies with 422 first).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator

# Every code point Unicode 15.1 puts in Cc, Cf, Zl or Zp, as inclusive ranges, plus U+2065 (reserved
# in the invisible-operators block, default-ignorable). Python 3.11's unicodedata (Unicode 14) is
# the oracle in tests/security/test_consumer_text.py; U+13439-U+1343F are Cf since Unicode 15.
# Migration 0019 spells out the same ranges for PostgreSQL.
INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
)
# What a multi-line field may hold besides ordinary text.
LINE_BREAKS = frozenset("\t\n\r")


def _class(ranges: tuple[tuple[int, int], ...], allowed: frozenset[str] = frozenset()) -> re.Pattern[str]:
    """A regex character class of the ranges (minus `allowed`) and the surrogates."""
    parts = [
        re.escape(chr(cp))
        for low, high in ranges
        for cp in range(low, high + 1)
        if chr(cp) not in allowed and high - low < 64
    ]
    parts += [f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in ranges if high - low >= 64]
    return re.compile(f"[{''.join(parts)}\ud800-\udfff]")


_ONE_LINE = _class(INVISIBLE_RANGES)
_MULTI_LINE = _class(INVISIBLE_RANGES, LINE_BREAKS)
_SURROGATE = re.compile("[\ud800-\udfff]")


def describe(ch: str) -> str:
    """`U+202E (RIGHT-TO-LEFT OVERRIDE)`: a character named so a person can find it."""
    name = unicodedata.name(ch, "") if not "\ud800" <= ch <= "\udfff" else "lone surrogate"
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


def invisible(text: str, *, multiline: bool = False) -> str | None:
    """The first character a reader could not see (or that breaks the line), described; else None."""
    found = (_MULTI_LINE if multiline else _ONE_LINE).search(text)
    return describe(found.group()) if found else None


def has_lone_surrogate(text: str) -> bool:
    """Whether the string holds a surrogate code point (never valid in UTF-8)."""
    return _SURROGATE.search(text) is not None


def surrogate_paths(doc: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Where a decoded JSON document holds a lone surrogate, in a key or a string value.

    Keys are given with their surrogates escaped (`\\ud800`), so the path itself can be encoded."""
    found: list[tuple[str | int, ...]] = []
    if isinstance(doc, str):
        if has_lone_surrogate(doc):
            found.append(path)
    elif isinstance(doc, dict):
        for key, value in doc.items():
            safe = key.encode("utf-8", "backslashreplace").decode() if has_lone_surrogate(key) else key
            if safe is not key:
                found.append((*path, safe))
            found.extend(surrogate_paths(value, (*path, safe)))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found.extend(surrogate_paths(value, (*path, i)))
    return found


def _visible(text: str) -> str:
    bad = invisible(text)
    if bad:
        raise ValueError(f"text must not contain invisible or control characters (found {bad})")
    return text


def _visible_lines(text: str) -> str:
    bad = invisible(text, multiline=True)
    if bad:
        raise ValueError(f"text must not contain invisible or control characters (found {bad})")
    return text


# One line of text a consumer reads (a name, a place, an issuer): use as a field's type.
VisibleText = Annotated[str, AfterValidator(_visible)]
# Several lines (a reason, details, a scope): newlines and tabs allowed, nothing else invisible.
VisibleLines = Annotated[str, AfterValidator(_visible_lines)]
