"""Keyset pagination for list endpoints: an opaque, stable cursor and a bounded page size.

A router declares `limit: LimitQuery = DEFAULT_LIMIT, cursor: CursorQuery = None`, its service
selects `WHERE (sort key) > (after)` ordered by that key with `LIMIT limit + 1`, and the router returns
`page(rows, limit=limit, key=lambda r: [r["id"]])`, typed as `Page[ItemModel]`. Rows inserted
while a client pages never shift or repeat items (unlike OFFSET).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

from agritrace.errors import InvalidInput

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
MAX_CURSOR_LENGTH = 512

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size (at most {MAX_LIMIT}).")]
CursorQuery = Annotated[
    str | None,
    Query(
        max_length=MAX_CURSOR_LENGTH,
        description="`next_cursor` from the previous page; omit for the first page.",
    ),
]

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list: its items, and the cursor of the next page (null on the last)."""

    items: list[T]
    next_cursor: str | None = Field(default=None, examples=["WzQyXQ"])


def encode_cursor(key: Sequence[Any]) -> str:
    """Turns the last item's sort key into an opaque token."""
    raw = json.dumps(list(key), separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, *, types: tuple[type, ...] = (int,)) -> list[Any] | None:
    """The sort key a cursor stands for (None for the first page), one value of each of `types`
    (int or str); a malformed or foreign cursor is a 422, never a 500."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidInput("the cursor is not one this API issued") from None
    if (
        not isinstance(key, list)
        or len(key) != len(types)
        or not all(isinstance(k, t) and not isinstance(k, bool) for k, t in zip(key, types, strict=True))
        or any(isinstance(k, int) and abs(k) >= 2**63 for k in key)
    ):
        raise InvalidInput("the cursor is not one this API issued")
    return key


def page(rows: Sequence[T], *, limit: int, key: Callable[[T], Sequence[Any]]) -> dict[str, Any]:
    """Builds `{"items", "next_cursor"}` from `limit + 1` fetched rows."""
    items = list(rows[:limit])
    more = len(rows) > limit
    return {"items": items, "next_cursor": encode_cursor(key(items[-1])) if more and items else None}
