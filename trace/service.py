"""Batches, lineage (split/merge, upstream/downstream), events, custody, certificates, inspections, recalls."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from agritrace.db import Conn
from agritrace.errors import Conflict, InvalidInput, NotFound
from agritrace.trace import gs1
from agritrace.trace.exceptions import BatchNotFound

PRODUCTS = ("mango", "citrus", "tea")
# CBV 2.0 business steps, and only those (GS1's schema refuses anything else; migration 0021). A
# recall is the disposition `recalled` (on `holding`); a split or merge is a transformation of its own.
BIZ_STEPS = (
    "accepting", "arriving", "assembling", "collecting", "commissioning", "consigning",
    "creating_class_instance", "cycle_counting", "decommissioning", "departing", "destroying",
    "disassembling", "dispensing", "encoding", "entering_exiting", "holding", "inspecting", "installing",
    "killing", "loading", "other", "packing", "picking", "receiving", "removing", "repackaging",
    "repairing", "replacing", "reserving", "retail_selling", "sampling", "sensor_reporting", "shipping",
    "staging_outbound", "stock_taking", "stocking", "storing", "transporting", "unloading", "unpacking",
    "void_shipping",
)  # fmt: skip
RECALL_STEP = "holding"
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")
DISPOSITIONS = (
    "active",
    "in_progress",
    "in_transit",
    "recalled",
    "conformant",
    "non_conformant",
    "container_closed",
    "sellable_not_accessible",
    "sellable_accessible",
    "destroyed",
    "expired",
)

# 三品一标 certificate numbers as printed on certificates issued in recent years. The authorities
# have changed formats over time, so these are deliberately loose: they catch typos and pasted
# garbage (wrong prefix, stray characters), not every historical variant.
CERTIFICATE_FORMATS: dict[str, re.Pattern[str]] = {
    # 无公害农产品: e.g. WGH-GX-20-01234 (province code, year, serial)
    "pollution_free": re.compile(r"^WGH-[A-Z]{2}-\d{2}-\d{4,10}$"),
    # 绿色食品 licence numbers: e.g. LB-15-20110112345A
    "green_food": re.compile(r"^LB-\d{2}-\d{8,14}[A-Z]$"),
    # 有机产品: certification body code + OP + year + serial, e.g. 124OP2100123
    "organic": re.compile(r"^\d{3}OP\d{2}\d{4,10}$"),
    # 农产品地理标志 registration: AGI + five digits, e.g. AGI01426
    "geographical_indication": re.compile(r"^AGI\d{5}$"),
}
_CONTACT = re.compile(r"^\+?[0-9][0-9 -]{4,38}$")


def _one(conn: Conn, query: str, params: tuple[Any, ...]) -> dict[str, Any]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row


def ensure_cooperative(conn: Conn, *, name: str) -> int:
    """Returns the cooperative's id, creating it when new."""
    name = name.strip()
    if not 1 <= len(name) <= 200:
        raise InvalidInput("a cooperative name has 1 to 200 characters")
    conn.execute("INSERT INTO cooperatives (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,))
    return int(_one(conn, "SELECT id FROM cooperatives WHERE name = %s", (name,))["id"])


def _new_lot(product: str, harvest: date | None) -> str:
    """A readable, unique-enough lot: product letter, harvest date, random suffix (`M260915-3FA9C2D1E0`)."""
    day = (harvest or date.today()).strftime("%y%m%d")
    return f"{product[0].upper()}{day}-{secrets.token_hex(5).upper()}"


def create_batch(
    conn: Conn,
    *,
    product: str,
    cooperative_id: int,
    variety: str | None = None,
    gtin: str | None = None,
    lot: str | None = None,
    origin_plot: str | None = None,
    gi_area: str | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    harvest_date: date | None = None,
    quantity: Decimal | float | None = None,
    unit: str | None = None,
) -> dict[str, Any]:
    """Registers a batch; validates the product, GTIN check digit and lot."""
    if product not in PRODUCTS:
        raise InvalidInput(f"product must be one of {', '.join(PRODUCTS)}")
    gtin14 = gs1.normalize_gtin(gtin) if gtin else None
    if lot is not None and not gs1.is_uri_safe(lot):
        raise InvalidInput("a lot has 1 to 20 characters: letters, digits and '-' (not first)")
    if quantity is not None and quantity <= 0:
        raise InvalidInput("quantity must be positive")
    if lot is not None and conn.execute("SELECT 1 FROM batches WHERE lot = %s", (lot,)).fetchone():
        raise Conflict(f"lot {lot!r} already exists")
    # Generated lots carry 40 random bits; on the rare collision (or a concurrent insert of the same
    # given lot) the savepoint lets us retry or answer 409 instead of failing the transaction.
    for _attempt in range(3):
        try:
            with conn.transaction():
                return _insert_batch(
                    conn,
                    lot or _new_lot(product, harvest_date),
                    cooperative_id,
                    product,
                    variety,
                    gtin14,
                    origin_plot,
                    gi_area,
                    latitude,
                    longitude,
                    harvest_date,
                    quantity,
                    unit,
                )
        except psycopg.errors.UniqueViolation:
            if lot is not None:
                raise Conflict(f"lot {lot!r} already exists") from None
    raise Conflict("could not allocate a unique lot number, try again")


def _insert_batch(conn: Conn, *values: Any) -> dict[str, Any]:
    return _one(
        conn,
        """INSERT INTO batches (lot, cooperative_id, product, variety, gtin, origin_plot, gi_area,
                                latitude, longitude, harvest_date, quantity, unit)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        values,
    )


def get_batch(conn: Conn, *, batch_id: int, cooperative_id: int | None = None) -> dict[str, Any]:
    """A batch with its cooperative's name; another cooperative's batch is not found."""
    row = conn.execute(
        """SELECT b.*, c.name AS cooperative FROM batches b JOIN cooperatives c ON c.id = b.cooperative_id
            WHERE b.id = %s AND (%s::bigint IS NULL OR b.cooperative_id = %s)""",
        (batch_id, cooperative_id, cooperative_id),
    ).fetchone()
    if row is None:
        raise BatchNotFound(f"no batch {batch_id}")
    return row


def list_batches(
    conn: Conn, *, cooperative_id: int | None = None, limit: int = 100, after_id: int = 0
) -> list[dict[str, Any]]:
    """Batches by id (keyset pages), scoped to a cooperative when given."""
    return conn.execute(
        """SELECT b.*, c.name AS cooperative FROM batches b JOIN cooperatives c ON c.id = b.cooperative_id
            WHERE b.id > %s AND (%s::bigint IS NULL OR b.cooperative_id = %s) ORDER BY b.id LIMIT %s""",
        (after_id, cooperative_id, cooperative_id, limit),
    ).fetchall()


def offset_of(event_time: datetime, event_tz: str | None) -> str:
    """The event's UTC offset: as given (checked: -12:00 to +14:00), else the one its time was written with."""
    if event_tz is None:
        delta = event_time.utcoffset()
        if delta is None:
            raise InvalidInput("the time needs its UTC offset")
        minutes = int(delta.total_seconds() // 60)
        event_tz = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    m = _OFFSET.match(event_tz)
    if m is None or int(m.group(3)) >= 60:
        raise InvalidInput("event_tz is a UTC offset like +08:00")
    minutes = int(m.group(2)) * 60 + int(m.group(3))
    if minutes > (840 if m.group(1) == "+" else 720):
        raise InvalidInput("event_tz is a UTC offset between -12:00 and +14:00")
    return event_tz


def _link(
    conn: Conn,
    *,
    parent_id: int,
    child_id: int,
    quantity: Decimal | float | None,
    transformation_id: uuid.UUID | None = None,
    event_time: datetime | None = None,
    event_tz: str = "+08:00",
) -> None:
    # A child that is already upstream of the parent would close a loop and make lineage infinite.
    if child_id in {b["id"] for b in upstream(conn, batch_id=parent_id)} | {parent_id}:
        raise Conflict(f"batch {child_id} is upstream of {parent_id}: lineage cannot loop")
    conn.execute(
        """INSERT INTO batch_lineage (parent_id, child_id, quantity, transformation_id, event_time, event_tz)
           VALUES (%s, %s, %s, %s, coalesce(%s, now()), %s) ON CONFLICT DO NOTHING""",
        (parent_id, child_id, quantity, transformation_id or uuid.uuid4(), event_time, event_tz),
    )


def split_batch(
    conn: Conn,
    *,
    batch_id: int,
    parts: list[dict[str, Any]],
    cooperative_id: int | None = None,
    event_time: datetime | None = None,
    event_tz: str | None = None,
) -> list[dict[str, Any]]:
    """Packs a batch into child lots (each part: quantity, unit, optional lot/gtin); returns the children.
    One transformation, at `event_time` (the business time; now when not given)."""
    parent = get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    tz = offset_of(event_time or datetime.now(UTC), event_tz or (None if event_time else "+08:00"))
    transformation = uuid.uuid4()
    if not parts:
        raise InvalidInput("a split needs at least one part")
    if parent["quantity"] is not None and all(
        p.get("quantity") is not None and (p.get("unit") or parent["unit"]) == parent["unit"] for p in parts
    ):
        packed = _one(
            conn,
            "SELECT coalesce(sum(quantity), 0) AS q FROM batch_lineage WHERE parent_id = %s",
            (parent["id"],),
        )["q"]
        if packed + sum(Decimal(str(p["quantity"])) for p in parts) > parent["quantity"]:
            raise InvalidInput(
                f"batch {parent['id']} holds {parent['quantity']} {parent['unit'] or ''}, "
                f"{packed} already packed: the parts do not fit"
            )
    children = []
    for part in parts:
        child = create_batch(
            conn,
            product=parent["product"],
            cooperative_id=parent["cooperative_id"],
            variety=parent["variety"],
            gtin=part.get("gtin") or parent["gtin"],
            lot=part.get("lot"),
            origin_plot=parent["origin_plot"],
            gi_area=parent["gi_area"],
            latitude=parent["latitude"],
            longitude=parent["longitude"],
            harvest_date=parent["harvest_date"],
            quantity=part.get("quantity"),
            unit=part.get("unit") or parent["unit"],
        )
        _link(
            conn,
            parent_id=parent["id"],
            child_id=child["id"],
            quantity=part.get("quantity"),
            transformation_id=transformation,
            event_time=event_time,
            event_tz=tz,
        )
        children.append(child)
    return children


def merge_batches(
    conn: Conn,
    *,
    batch_ids: list[int],
    cooperative_id: int | None = None,
    lot: str | None = None,
    gtin: str | None = None,
    event_time: datetime | None = None,
    event_tz: str | None = None,
) -> dict[str, Any]:
    """Mixes batches of one product into a new lot; returns it. Origin fields are kept only if shared.
    One transformation, at `event_time` (the business time; now when not given)."""
    tz = offset_of(event_time or datetime.now(UTC), event_tz or (None if event_time else "+08:00"))
    if len(set(batch_ids)) < 2:
        raise InvalidInput("a merge needs at least two different batches")
    parents = [get_batch(conn, batch_id=b, cooperative_id=cooperative_id) for b in batch_ids]
    if len({p["product"] for p in parents}) != 1 or len({p["cooperative_id"] for p in parents}) != 1:
        raise InvalidInput("merged batches must be the same product from the same cooperative")

    def shared(field: str) -> Any:
        values = {p[field] for p in parents}
        return values.pop() if len(values) == 1 else None

    units = {p["unit"] for p in parents}
    total = sum((Decimal(p["quantity"]) for p in parents if p["quantity"] is not None), Decimal(0))
    child = create_batch(
        conn,
        product=parents[0]["product"],
        cooperative_id=parents[0]["cooperative_id"],
        variety=shared("variety"),
        gtin=gtin or shared("gtin"),
        lot=lot,
        origin_plot=shared("origin_plot"),
        gi_area=shared("gi_area"),
        harvest_date=shared("harvest_date"),
        quantity=total if total > 0 and len(units) == 1 else None,
        unit=units.pop() if len(units) == 1 else None,
    )
    transformation = uuid.uuid4()
    for p in parents:
        _link(
            conn,
            parent_id=p["id"],
            child_id=child["id"],
            quantity=p["quantity"],
            transformation_id=transformation,
            event_time=event_time,
            event_tz=tz,
        )
    return child


_UPSTREAM = """
WITH RECURSIVE up(id, depth) AS (
    SELECT parent_id, 1 FROM batch_lineage WHERE child_id = %s
    UNION
    SELECT l.parent_id, up.depth + 1 FROM batch_lineage l JOIN up ON l.child_id = up.id WHERE up.depth < 64
)
SELECT b.id, b.lot, b.product, min(up.depth) AS depth FROM up JOIN batches b ON b.id = up.id
GROUP BY b.id ORDER BY depth, b.id
"""
_DOWNSTREAM = """
WITH RECURSIVE down(id, depth) AS (
    SELECT child_id, 1 FROM batch_lineage WHERE parent_id = %s
    UNION
    SELECT l.child_id, down.depth + 1 FROM batch_lineage l JOIN down ON l.parent_id = down.id WHERE down.depth < 64
)
SELECT b.id, b.lot, b.product, min(down.depth) AS depth FROM down JOIN batches b ON b.id = down.id
GROUP BY b.id ORDER BY depth, b.id
"""


def upstream(conn: Conn, *, batch_id: int) -> list[dict[str, Any]]:
    """Every batch this one came from (parents, their parents, ...), nearest first."""
    return conn.execute(_UPSTREAM, (batch_id,)).fetchall()


def downstream(conn: Conn, *, batch_id: int) -> list[dict[str, Any]]:
    """Every batch made from this one (the recall scope), nearest first."""
    return conn.execute(_DOWNSTREAM, (batch_id,)).fetchall()


def add_event(
    conn: Conn,
    *,
    batch_id: int,
    biz_step: str,
    event_time: datetime,
    disposition: str | None = None,
    event_tz: str | None = None,
    place: str | None = None,
    actor: str | None = None,
    documents: list[dict[str, str]] | None = None,
    cooperative_id: int | None = None,
) -> dict[str, Any]:
    """Records an EPCIS-aligned event (harvest = commissioning, packing, shipping, ...)."""
    get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    if biz_step not in BIZ_STEPS:
        raise InvalidInput(f"biz_step must be one of {', '.join(BIZ_STEPS)}")
    if disposition is not None and disposition not in DISPOSITIONS:
        raise InvalidInput(f"disposition must be one of {', '.join(DISPOSITIONS)}")
    event_tz = offset_of(event_time, event_tz)
    return _one(
        conn,
        """INSERT INTO trace_events (batch_id, biz_step, disposition, event_time, event_tz, place, actor, documents)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (batch_id, biz_step, disposition, event_time, event_tz, place, actor, Jsonb(documents or [])),
    )


def list_events(conn: Conn, *, batch_ids: list[int]) -> list[dict[str, Any]]:
    """Events of these batches in time order."""
    return conn.execute(
        "SELECT * FROM trace_events WHERE batch_id = ANY(%s) ORDER BY event_time, id", (batch_ids,)
    ).fetchall()


def add_custody(
    conn: Conn,
    *,
    batch_id: int,
    channel_id: int,
    started_at: datetime,
    ended_at: datetime | None = None,
    cooperative_id: int | None = None,
) -> dict[str, Any]:
    """Records that a sensor channel (cold room, truck) held the batch over an interval."""
    get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    if ended_at is not None and ended_at <= started_at:
        raise InvalidInput("a custody interval ends after it starts")
    channel = conn.execute(
        """SELECT ch.id FROM channels ch JOIN gateways g ON g.id = ch.gateway_id
            WHERE ch.id = %s AND (%s::bigint IS NULL OR g.cooperative_id = %s)""",
        (channel_id, cooperative_id, cooperative_id),
    ).fetchone()
    if channel is None:
        raise NotFound(f"no channel {channel_id}")
    return _one(
        conn,
        "INSERT INTO batch_custody (batch_id, channel_id, started_at, ended_at) VALUES (%s, %s, %s, %s) RETURNING *",
        (batch_id, channel_id, started_at, ended_at),
    )


def add_certificate(
    conn: Conn,
    *,
    kind: str,
    number: str,
    issuer: str,
    valid_from: date,
    valid_to: date,
    scope: str | None = None,
    batch_id: int | None = None,
    holder_cooperative_id: int | None = None,
    cooperative_id: int | None = None,
) -> dict[str, Any]:
    """Attaches a 三品一标 certificate to a batch or a cooperative, after format and date checks."""
    pattern = CERTIFICATE_FORMATS.get(kind)
    if pattern is None:
        raise InvalidInput(f"kind must be one of {', '.join(CERTIFICATE_FORMATS)}")
    number = number.strip().upper()
    if not pattern.match(number):
        raise InvalidInput(f"{number!r} is not a {kind} certificate number (expected like {pattern.pattern})")
    if valid_to < valid_from:
        raise InvalidInput("valid_to is before valid_from")
    if (batch_id is None) == (holder_cooperative_id is None):
        raise InvalidInput("a certificate belongs to exactly one batch or one cooperative")
    if batch_id is not None:
        get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    elif cooperative_id is not None and holder_cooperative_id != cooperative_id:
        raise NotFound("no such cooperative")
    if conn.execute("SELECT 1 FROM certificates WHERE kind = %s AND number = %s", (kind, number)).fetchone():
        raise Conflict(f"certificate {number} is already registered")
    return _one(
        conn,
        """INSERT INTO certificates (kind, number, issuer, valid_from, valid_to, scope, cooperative_id, batch_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (kind, number, issuer, valid_from, valid_to, scope, holder_cooperative_id, batch_id),
    )


def certificates_for(conn: Conn, *, batch_id: int, on: date | None = None) -> list[dict[str, Any]]:
    """Certificates covering a batch (its own, its ancestors', its cooperative's) with a status."""
    return conn.execute(
        """WITH RECURSIVE up(id) AS (
               SELECT %s::bigint
               UNION SELECT l.parent_id FROM batch_lineage l JOIN up ON l.child_id = up.id)
           SELECT c.*, CASE WHEN c.revoked_at IS NOT NULL THEN 'revoked'
                            WHEN coalesce(%s, current_date) > c.valid_to THEN 'expired'
                            WHEN coalesce(%s, current_date) < c.valid_from THEN 'not_yet_valid'
                            ELSE 'valid' END AS status
             FROM certificates c
            WHERE c.batch_id IN (SELECT id FROM up)
               OR c.cooperative_id = (SELECT cooperative_id FROM batches WHERE id = %s)
            ORDER BY c.kind, c.valid_to DESC""",
        (batch_id, on, on, batch_id),
    ).fetchall()


def set_compliance_certificate(
    conn: Conn,
    *,
    batch_id: int,
    product_name: str,
    quantity: Decimal | float,
    unit: str,
    origin: str,
    issued_at: datetime,
    issuer: str,
    contact: str,
    cooperative_id: int | None = None,
) -> dict[str, Any]:
    """Sets the batch's 承诺达标合格证 (all fields required; re-issuing replaces it)."""
    get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    for name, value in (
        ("product_name", product_name),
        ("unit", unit),
        ("origin", origin),
        ("issuer", issuer),
    ):
        if not value or not value.strip():
            raise InvalidInput(f"{name} is required on a 承诺达标合格证")
    if quantity <= 0:
        raise InvalidInput("quantity must be positive")
    if not _CONTACT.match(contact.strip()):
        raise InvalidInput("contact is a phone number (digits, spaces, '-', optional leading '+')")
    return _one(
        conn,
        """INSERT INTO compliance_certificates
               (batch_id, product_name, quantity, unit, origin, issued_at, issuer, contact)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (batch_id) DO UPDATE SET product_name = excluded.product_name,
               quantity = excluded.quantity, unit = excluded.unit, origin = excluded.origin,
               issued_at = excluded.issued_at, issuer = excluded.issuer, contact = excluded.contact
           RETURNING *""",
        (
            batch_id,
            product_name.strip(),
            quantity,
            unit.strip(),
            origin.strip(),
            issued_at,
            issuer.strip(),
            contact.strip(),
        ),
    )


def add_inspection(
    conn: Conn,
    *,
    batch_id: int,
    inspected_at: datetime,
    kind: str,
    passed: bool,
    standard: str | None = None,
    laboratory: str | None = None,
    details: str | None = None,
    cooperative_id: int | None = None,
) -> dict[str, Any]:
    """Records an inspection result (e.g. a pesticide residue test) with pass/fail."""
    get_batch(conn, batch_id=batch_id, cooperative_id=cooperative_id)
    return _one(
        conn,
        """INSERT INTO inspections (batch_id, inspected_at, kind, standard, laboratory, passed, details)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (batch_id, inspected_at, kind, standard, laboratory, passed, details),
    )


def recall_batch(conn: Conn, *, batch_id: int, reason: str, recalled_by: str) -> dict[str, Any]:
    """Flags a batch as recalled; returns the recall with its scope (downstream batches, code count)."""
    get_batch(conn, batch_id=batch_id)
    if not reason.strip():
        raise InvalidInput("a recall needs a reason")
    recall = _one(
        conn,
        "INSERT INTO batch_recalls (batch_id, reason, recalled_by) VALUES (%s, %s, %s) RETURNING *",
        (batch_id, reason.strip(), recalled_by),
    )
    # The recall is part of the batch's journey (and of its EPCIS export) too.
    conn.execute(
        """INSERT INTO trace_events (batch_id, biz_step, disposition, event_time, actor)
           VALUES (%s, %s, 'recalled', %s, %s)""",
        (batch_id, RECALL_STEP, recall["recalled_at"], recalled_by),
    )
    affected = downstream(conn, batch_id=batch_id)
    ids = [batch_id, *(b["id"] for b in affected)]
    codes = _one(conn, "SELECT count(*) AS n FROM codes WHERE batch_id = ANY(%s)", (ids,))["n"]
    return {**recall, "affected_batches": affected, "affected_codes": int(codes)}
