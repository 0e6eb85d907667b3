"""The audit chain against the database's own users (issue 12, item 4): whoever owns the tables can
recompute the chain from genesis after an edit, delete its tail, or TRUNCATE it and attach the tables
again, and the chain alone still verifies. A checkpoint signed with a key outside the database, kept
outside it, catches each. The signature is checked by OpenSSL, not only by our own code."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agritrace import checkpoint, db
from agritrace.devices import broker
from agritrace.settings import get_settings

AGRITRACE = str(Path(sys.executable).parent / "agritrace")


@pytest.fixture
def scratch() -> Iterator[str]:
    """A database of its own: these tests destroy its audit log."""
    name = f"agritrace_cp_{secrets.token_hex(4)}"
    url = db.create_database(name)
    with db.connect(url) as conn:
        conn.execute("SELECT set_config('agritrace.actor', 'cli:tester', false)")
        for i in range(6):
            conn.execute("INSERT INTO cooperatives (name) VALUES (%s)", (f"合作社 {i}",))
            conn.commit()
    yield url
    db.drop_database(name)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    """The environment of a CLI with its own signing key and checkpoint directory."""
    return {
        "AGRITRACE_AUDIT_SIGNING_KEY": str(tmp_path / "key" / "signing.key"),
        "AGRITRACE_AUDIT_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }


def cli(url: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AGRITRACE, *args],
        env={**os.environ, **env, "AGRITRACE_DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )


def take_checkpoint(url: str, env: dict[str, str]) -> Path:
    assert cli(url, env, "audit", "keygen").returncode == 0
    done = cli(url, env, "audit", "checkpoint", "--no-publish")
    assert done.returncode == 0, done.stderr
    return Path(done.stdout.strip())


def verify(url: str, env: dict[str, str], cp: Path) -> subprocess.CompletedProcess[str]:
    return cli(url, env, "audit", "verify", "--checkpoint", str(cp))


def as_owner(url: str, *statements: str) -> None:
    """What the tables' owner (or a superuser, or a restore) can do: switch the guard off and write."""
    with db.connect(db.owner_url(url)) as conn:
        conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        for statement in statements:
            conn.execute(statement)
        conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
        conn.commit()


RECOMPUTE_FROM_GENESIS = """
DO $$
DECLARE r record; prev bytea := audit_genesis();
BEGIN
    FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
        UPDATE audit_log
           SET prev_hash = prev,
               hash = audit_entry_hash(prev, r.table_name, r.row_key, r.action, r.actor, r.at, r.before, r.after)
         WHERE id = r.id
        RETURNING hash INTO prev;
    END LOOP;
END $$"""


def test_a_checkpoint_signature_verifies_with_openssl(
    scratch: str, keys: dict[str, str], tmp_path: Path
) -> None:
    cp = take_checkpoint(scratch, keys)
    document = json.loads(cp.read_text())
    assert document["checkpoint"]["entry_id"] >= 6
    (tmp_path / "payload").write_bytes(checkpoint.payload(document["checkpoint"]))
    (tmp_path / "sig").write_bytes(__import__("base64").b64decode(document["signature"]))
    public = cli(scratch, keys, "audit", "keygen").stdout
    (tmp_path / "pub.pem").write_text(public)

    def openssl_verify(payload: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(tmp_path / "pub.pem"), "-rawin",
             "-in", str(payload), "-sigfile", str(tmp_path / "sig")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    good = openssl_verify(tmp_path / "payload")
    assert good.returncode == 0 and "Signature Verified Successfully" in good.stdout, good.stderr
    forged = dict(document["checkpoint"], entry_id=document["checkpoint"]["entry_id"] - 1)
    (tmp_path / "forged").write_bytes(checkpoint.payload(forged))
    assert openssl_verify(tmp_path / "forged").returncode != 0
    # The key never enters the database, and only its owner can read it.
    assert oct(Path(keys["AGRITRACE_AUDIT_SIGNING_KEY"]).stat().st_mode & 0o777) == "0o600"
    assert (cp.parent / "latest.json").read_text() == cp.read_text()


def test_an_untouched_chain_holds_against_its_checkpoint_and_grows_after_it(
    scratch: str, keys: dict[str, str]
) -> None:
    cp = take_checkpoint(scratch, keys)
    with db.connect(scratch) as conn:
        conn.execute("INSERT INTO cooperatives (name) VALUES ('后来的合作社')")
        conn.commit()
    done = verify(scratch, keys, cp)
    assert done.returncode == 0, done.stderr
    assert "1 checkpoint(s) hold" in done.stdout


def test_a_chain_recomputed_from_genesis_after_an_edit_verifies_alone_but_not_against_a_checkpoint(
    scratch: str, keys: dict[str, str]
) -> None:
    cp = take_checkpoint(scratch, keys)
    as_owner(
        scratch,
        "UPDATE cooperatives SET name = '改过的名字' WHERE name = '合作社 2'",
        """UPDATE audit_log SET after = jsonb_set(after, '{name}', '"改过的名字"')
            WHERE table_name = 'cooperatives' AND after ->> 'name' = '合作社 2'""",
        RECOMPUTE_FROM_GENESIS,
    )
    # The chain alone is consistent again (this is what the checkpoint is for) ...
    alone = cli(scratch, keys, "audit", "verify")
    assert alone.returncode == 0, alone.stderr
    # ... but the signed head says otherwise.
    done = verify(scratch, keys, cp)
    assert done.returncode == 1
    assert "the chain was rewritten" in done.stderr


def test_deleted_tail_entries_are_detected(scratch: str, keys: dict[str, str]) -> None:
    cp = take_checkpoint(scratch, keys)
    as_owner(scratch, "DELETE FROM audit_log WHERE id > (SELECT max(id) - 2 FROM audit_log)")
    done = verify(scratch, keys, cp)
    assert done.returncode == 1
    assert "the log ends before it" in done.stderr


def test_truncating_the_log_and_attaching_the_tables_again_is_detected(
    scratch: str, keys: dict[str, str]
) -> None:
    cp = take_checkpoint(scratch, keys)
    as_owner(
        scratch,
        "TRUNCATE audit_log RESTART IDENTITY",
        # Enough fresh entries to pass the checkpoint's id, each chained from genesis again.
        "DO $$ DECLARE t text; BEGIN FOR t IN SELECT table_name FROM audit_tables LOOP"
        " PERFORM audit_attach(t::regclass, (SELECT exclude FROM audit_tables WHERE table_name = t));"
        " END LOOP; END $$",
    )
    assert cli(scratch, keys, "audit", "verify").returncode == 0  # a fresh, consistent chain
    done = verify(scratch, keys, cp)
    assert done.returncode == 1
    assert "audit_log entry" in done.stderr


def test_a_checkpoint_from_another_key_or_edited_is_refused(
    scratch: str, keys: dict[str, str], tmp_path: Path
) -> None:
    cp = take_checkpoint(scratch, keys)
    other = {**keys, "AGRITRACE_AUDIT_SIGNING_KEY": str(tmp_path / "other.key")}
    cli(scratch, other, "audit", "keygen")
    done = verify(scratch, other, cp)
    assert done.returncode == 1 and "signature does not verify" in done.stderr
    document = json.loads(cp.read_text())
    document["checkpoint"]["hash"] = "00" * 32
    cp.write_text(json.dumps(document))
    done = verify(scratch, keys, cp)
    assert done.returncode == 1 and "signature does not verify" in done.stderr


def test_the_checkpoint_is_published_retained_for_audit_readers_only(
    database: str, keys: dict[str, str]
) -> None:
    settings = get_settings()
    username = f"agritrace-audit-t{secrets.token_hex(4)}"
    env = {**keys, "AGRITRACE_MQTT_AUDIT_USERNAME": username}
    with broker.admin_session() as dynsec:
        broker.ensure_audit_account(dynsec, settings.model_copy(update={"mqtt_audit_username": username}))
        reader, reader_password = broker.create_audit_reader(dynsec, f"t{secrets.token_hex(4)}")
    try:
        assert cli(database, env, "audit", "keygen").returncode == 0
        done = cli(database, env, "audit", "checkpoint")
        assert done.returncode == 0, done.stderr
        written = json.loads(Path(done.stdout.strip()).read_text())
        # A regulator's archiver connecting later still gets it (retained), and can check it.
        got = _first_retained(reader, reader_password, reader)
        assert got is not None and json.loads(got) == written
        # The reader can only read: its publish to the topic is refused (MQTT 5 reason 0x87).
        assert _publish_refused(reader, reader_password, reader)
        # The publisher account can publish nothing else.
        assert _publish_refused(username, settings.mqtt_audit_password.get_secret_value(), username,
                                topic="agritrace/v1/alerts/fake")  # fmt: skip
    finally:
        with broker.admin_session() as dynsec:
            for name in (username, reader):
                dynsec.run({"command": "deleteClient", "username": name}, tolerate=("not found",))


def _client(username: str, password: str, client_id: str) -> mqtt.Client:
    settings = get_settings()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(username, password)
    c.connect(settings.mqtt_host, settings.mqtt_port)
    return c


def _first_retained(username: str, password: str, client_id: str) -> str | None:
    got: list[str] = []
    done = threading.Event()
    c = _client(username, password, client_id)

    def on_message(_c: mqtt.Client, _u: object, m: mqtt.MQTTMessage) -> None:
        got.append(m.payload.decode())
        done.set()

    def on_connect(cl: mqtt.Client, _u: object, _f: object, _r: object, _p: object) -> None:
        cl.subscribe(broker.AUDIT_TOPIC, qos=1)

    c.on_message = on_message
    c.on_connect = on_connect
    c.loop_start()
    try:
        done.wait(10)
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0] if got else None


def _publish_refused(
    username: str, password: str, client_id: str, *, topic: str = broker.AUDIT_TOPIC
) -> bool:
    codes: list[int] = []
    done = threading.Event()
    c = _client(username, password, client_id)

    def on_publish(_c: mqtt.Client, _u: object, _mid: int, reason: ReasonCode, _p: object) -> None:
        codes.append(reason.value)
        done.set()

    c.on_publish = on_publish
    c.loop_start()
    try:
        c.publish(topic, b"{}", qos=1, retain=True)
        done.wait(10)
    finally:
        c.disconnect()
        c.loop_stop()
    return codes == [0x87]
