"""Product profiles and their rules: defaults from DESIGN.md "Cold chain", editable, and channel settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from agritrace.coldchain.exceptions import ProfileNotFound
from agritrace.coldchain.rules import Rule
from agritrace.db import Conn
from agritrace.errors import Conflict, InvalidInput, NotFound

# (name, description, temp_low, temp_high, rh_low, rh_high)
DEFAULT_PROFILES = [
    (
        "mango",
        "Mango (e.g. 百色芒果): 10-13 °C, 85-95 %RH; chilling injury below ~10 °C",
        10.0,
        13.0,
        85.0,
        95.0,
    ),
    (
        "citrus",
        "Mandarin / citrus (沃柑, 砂糖橘): 5-8 °C, 90-95 %RH; chilling injury below ~5 °C",
        5.0,
        8.0,
        90.0,
        95.0,
    ),
    ("tea", "Green tea, dry storage (GB/T 30375): at most 10 °C and 50 %RH", None, 10.0, None, 50.0),
]
# (profile, name, metric, direction, threshold, clear_margin, delay_s, clear_delay_s, mode, window_s, severity)
# Chilling injury is the costly failure for tropical fruit, so it is critical after 30 min; a cumulative
# rule catches a room that keeps dipping below without ever staying there for 30 min (WHO PQS E006 style).
DEFAULT_RULES = [
    ("mango", "chilling", "temperature", "below", 10.0, 0.5, 1800, 600, "single", None, "critical"),
    (
        "mango",
        "chilling-cumulative",
        "temperature",
        "below",
        10.0,
        0.5,
        7200,
        600,
        "cumulative",
        86400,
        "warning",
    ),
    ("mango", "warm", "temperature", "above", 13.0, 0.5, 3600, 600, "single", None, "warning"),
    ("mango", "dry", "humidity", "below", 85.0, 2.0, 3600, 600, "single", None, "warning"),
    ("citrus", "chilling", "temperature", "below", 5.0, 0.5, 1800, 600, "single", None, "critical"),
    (
        "citrus",
        "chilling-cumulative",
        "temperature",
        "below",
        5.0,
        0.5,
        7200,
        600,
        "cumulative",
        86400,
        "warning",
    ),
    ("citrus", "warm", "temperature", "above", 8.0, 0.5, 3600, 600, "single", None, "warning"),
    ("citrus", "dry", "humidity", "below", 90.0, 2.0, 3600, 600, "single", None, "warning"),
    ("tea", "warm", "temperature", "above", 10.0, 0.5, 3600, 600, "single", None, "warning"),
    ("tea", "humid", "humidity", "above", 50.0, 2.0, 3600, 600, "single", None, "critical"),
    ("mango", "no-data", "no_data", None, None, 0.0, 1800, 0, "single", None, "warning"),
    ("citrus", "no-data", "no_data", None, None, 0.0, 1800, 0, "single", None, "warning"),
    ("tea", "no-data", "no_data", None, None, 0.0, 1800, 0, "single", None, "warning"),
]
RULE_FIELDS = (
    "name",
    "metric",
    "direction",
    "threshold",
    "clear_margin",
    "delay_s",
    "clear_delay_s",
    "mode",
    "window_s",
    "max_gap_s",
    "severity",
    "enabled",
)


def ensure_defaults(conn: Conn) -> None:
    """Inserts the default profiles that do not exist yet (an edited profile is left as it is)."""
    with conn.cursor() as cur:
        for name, description, tl, th, rl, rh in DEFAULT_PROFILES:
            cur.execute(
                """INSERT INTO coldchain_profiles (name, description, temp_low, temp_high, rh_low, rh_high)
                   VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id""",
                (name, description, tl, th, rl, rh),
            )
            if cur.fetchone() is None:
                continue  # existed already: its rules are whatever was made of them
            for rule in (r for r in DEFAULT_RULES if r[0] == name):
                cur.execute(
                    """INSERT INTO coldchain_rules (profile_id, name, metric, direction, threshold,
                           clear_margin, delay_s, clear_delay_s, mode, window_s, severity)
                       SELECT id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s
                         FROM coldchain_profiles WHERE name = %s""",
                    (*rule[1:], name),
                )


def list_profiles(conn: Conn) -> list[dict[str, Any]]:
    """All profiles with their rules."""
    ensure_defaults(conn)
    return conn.execute(
        """SELECT p.*, coalesce(jsonb_agg(to_jsonb(r) - 'profile_id' ORDER BY r.id)
                                FILTER (WHERE r.id IS NOT NULL), '[]') AS rules
             FROM coldchain_profiles p LEFT JOIN coldchain_rules r ON r.profile_id = p.id
            GROUP BY p.id ORDER BY p.name"""
    ).fetchall()


def get_profile(conn: Conn, *, name: str) -> dict[str, Any]:
    """One profile with its rules."""
    for profile in list_profiles(conn):
        if profile["name"] == name:
            return profile
    raise ProfileNotFound(f"no profile named {name!r}")


def create_profile(conn: Conn, *, name: str, description: str | None, bands: dict[str, float | None]) -> None:
    """Creates a profile (rules are added separately)."""
    try:
        conn.execute(
            """INSERT INTO coldchain_profiles (name, description, temp_low, temp_high, rh_low, rh_high)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            (
                name,
                description,
                bands.get("temp_low"),
                bands.get("temp_high"),
                bands.get("rh_low"),
                bands.get("rh_high"),
            ),
        )
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"a profile named {name!r} exists") from exc
    except psycopg.errors.CheckViolation as exc:
        raise InvalidInput(f"profile rejected: {exc.diag.message_primary}") from exc


def update_profile(conn: Conn, *, name: str, changes: dict[str, Any]) -> None:
    """Changes a profile's description or bands."""
    profile = get_profile(conn, name=name)
    merged = {
        k: changes.get(k, profile[k]) for k in ("description", "temp_low", "temp_high", "rh_low", "rh_high")
    }
    try:
        conn.execute(
            """UPDATE coldchain_profiles SET description = %(description)s, temp_low = %(temp_low)s,
                      temp_high = %(temp_high)s, rh_low = %(rh_low)s, rh_high = %(rh_high)s, updated_at = now()
                WHERE id = %(id)s""",
            {**merged, "id": profile["id"]},
        )
    except psycopg.errors.CheckViolation as exc:
        raise InvalidInput(f"bands rejected: {exc.diag.message_primary}") from exc


def add_rule(conn: Conn, *, profile: str, rule: dict[str, Any]) -> int:
    """Adds a rule to a profile; returns its id."""
    profile_id = get_profile(conn, name=profile)["id"]
    values = {k: rule.get(k) for k in RULE_FIELDS}
    values = {k: v for k, v in values.items() if v is not None}
    cols = ", ".join(values)
    params = ", ".join(f"%({k})s" for k in values)
    try:
        row = conn.execute(
            f"INSERT INTO coldchain_rules (profile_id, {cols}) VALUES (%(profile_id)s, {params}) RETURNING id",  # noqa: S608 - column names from RULE_FIELDS
            {**values, "profile_id": profile_id},
        ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict(f"profile {profile!r} has a rule named {rule.get('name')!r}") from exc
    except (psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation) as exc:
        raise InvalidInput(f"rule rejected: {exc.diag.message_primary} ({exc.diag.constraint_name})") from exc
    assert row is not None
    return int(row["id"])


def update_rule(conn: Conn, *, rule_id: int, changes: dict[str, Any]) -> None:
    """Changes fields of a rule (threshold, delay, severity, enabled ...)."""
    row = conn.execute("SELECT * FROM coldchain_rules WHERE id = %s", (rule_id,)).fetchone()
    if row is None:
        raise NotFound(f"no rule {rule_id}")
    merged = {k: changes[k] if k in changes else row[k] for k in RULE_FIELDS}
    sets = ", ".join(f"{k} = %({k})s" for k in RULE_FIELDS)
    try:
        conn.execute(
            f"UPDATE coldchain_rules SET {sets} WHERE id = %(id)s",  # noqa: S608 - column names from RULE_FIELDS
            {**merged, "id": rule_id},
        )
    except psycopg.errors.UniqueViolation as exc:
        raise Conflict("the profile has a rule with that name") from exc
    except (psycopg.errors.CheckViolation, psycopg.errors.NotNullViolation) as exc:
        raise InvalidInput(f"rule rejected: {exc.diag.message_primary} ({exc.diag.constraint_name})") from exc


def set_channel_profile(
    conn: Conn,
    *,
    gateway_id: str,
    channel: str,
    profile: str,
    unit: str | None = None,
    cooperative_id: int | None = None,
) -> dict[str, Any]:
    """Sets the profile a channel is watched against; registers the channel if `unit` is given.
    With `cooperative_id`, another cooperative's gateway is not found (None: any gateway)."""
    profile_id = get_profile(conn, name=profile)["id"]
    gateway = conn.execute(
        "SELECT 1 FROM gateways WHERE id = %s AND (%s::bigint IS NULL OR cooperative_id = %s)",
        (gateway_id, cooperative_id, cooperative_id),
    ).fetchone()
    if gateway is None:
        raise NotFound(f"no gateway {gateway_id!r}")
    row = conn.execute(
        "SELECT id, unit FROM channels WHERE gateway_id = %s AND name = %s", (gateway_id, channel)
    ).fetchone()
    if row is None:
        if unit is None:
            raise NotFound(
                f"gateway {gateway_id!r} has not reported channel {channel!r} yet: give its unit to register it now"
            )
        row = conn.execute(
            "INSERT INTO channels (gateway_id, name, unit) VALUES (%s, %s, %s) RETURNING id, unit",
            (gateway_id, channel, unit),
        ).fetchone()
        assert row is not None
    _check_unit(conn, channel=channel, unit=row["unit"], profile_id=profile_id, profile=profile)
    conn.execute(
        """INSERT INTO coldchain_channel_profiles (channel_id, profile_id) VALUES (%s, %s)
           ON CONFLICT (channel_id) DO UPDATE SET profile_id = EXCLUDED.profile_id, set_at = now()""",
        (row["id"], profile_id),
    )
    return {
        "gateway_id": gateway_id,
        "channel": channel,
        "channel_id": row["id"],
        "unit": row["unit"],
        "profile": profile,
    }


def _check_unit(conn: Conn, *, channel: str, unit: str | None, profile_id: int, profile: str) -> None:
    """Refuses a profile that has nothing to watch on a channel in this unit (a voltage, a channel
    without a unit, a humidity channel for a profile with no humidity band or rule)."""
    row = conn.execute(
        """SELECT coldchain_metric(%s) AS metric,
                  CASE coldchain_metric(%s) WHEN 'temperature' THEN p.temp_low IS NOT NULL OR p.temp_high IS NOT NULL
                                            WHEN 'humidity' THEN p.rh_low IS NOT NULL OR p.rh_high IS NOT NULL
                  END OR EXISTS (SELECT 1 FROM coldchain_rules r WHERE r.profile_id = p.id AND r.enabled
                                   AND r.metric = coldchain_metric(%s)) AS watched
             FROM coldchain_profiles p WHERE p.id = %s""",
        (unit, unit, unit, profile_id),
    ).fetchone()
    if row is None or row["metric"] is None:
        raise InvalidInput(
            f"channel {channel!r} reports in {unit or 'no unit'}: a cold-chain profile watches temperature "
            "(Cel, K) or humidity (%RH)"
        )
    if not row["watched"]:
        raise InvalidInput(f"profile {profile!r} has no {row['metric']} band or rule for channel {channel!r}")


def rule_from_row(row: dict[str, Any]) -> Rule:
    """The engine's view of a threshold rule row."""
    return Rule(
        id=row["id"],
        direction=row["direction"],
        threshold=row["threshold"],
        delay=timedelta(seconds=row["delay_s"]),
        clear_margin=row["clear_margin"],
        clear_delay=timedelta(seconds=row["clear_delay_s"]),
        mode=row["mode"],
        window=timedelta(seconds=row["window_s"]) if row["window_s"] else None,
        max_gap=timedelta(seconds=row["max_gap_s"]),
    )
