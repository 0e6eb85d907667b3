"""The broker's transport, tried as an attacker and as a gateway installer would, with real clients
(mosquitto_pub/mosquitto_sub, openssl, ip netns) against the local stack's Mosquitto (issue 12):
gateways come in over TLS verified against the CA they were given, the plaintext listener answers
loopback only, gateways cannot leave retained messages except their own status, and the broker's
accounts file and the CA key are nobody else's to read."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_ingest import Stack, count, wait_for

from agritrace.settings import get_settings

REPO = Path(__file__).resolve().parents[2]
AGRITRACE = str(Path(sys.executable).parent / "agritrace")


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def create_gateway(stack: Stack) -> dict[str, Any]:
    """A gateway made as an installer makes one (`agritrace gateways create --json`); its broker client
    is removed with the stack."""
    out = subprocess.run(
        [AGRITRACE, "gateways", "create", "--cooperative", "芒果合作社", "--json"],
        env=dict(os.environ, AGRITRACE_DATABASE_URL=stack.database),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    doc: dict[str, Any] = json.loads(out)
    stack.gateways.append(doc["gateway_id"])
    return doc


def save_ca(doc: dict[str, Any], tmp_path: Path) -> Path:
    """The CA certificate exactly as the credentials gave it, saved as an installer would."""
    assert doc["mqtt"]["tls"] is True
    assert doc["mqtt"]["ca_certificate"].startswith("-----BEGIN CERTIFICATE-----")
    ca = tmp_path / "ca.pem"
    ca.write_text(doc["mqtt"]["ca_certificate"])
    return ca


def mosquitto_pub(
    mqtt: dict[str, Any], *args: str, host: str | None = None, port: int | None = None
) -> list[str]:
    """A gateway's mosquitto_pub command line, from its credentials."""
    return [
        "mosquitto_pub",
        "-h",
        host or mqtt["host"],
        "-p",
        str(port or mqtt["port"]),
        "-i",
        mqtt["client_id"],
        "-u",
        mqtt["username"],
        "-P",
        mqtt["password"],
        *args,
    ]


def pack(name: str, value: float) -> str:
    return json.dumps([{"n": name, "u": "Cel", "v": value, "t": time.time() - 5}])


def stored(database: str, gateway: str, name: str) -> int:
    return count(
        database,
        """SELECT count(*) FROM readings r JOIN channels c ON c.id = r.channel_id
            WHERE c.gateway_id = %s AND c.name = %s""",
        (gateway, name),
    )


def other_ca(tmp_path: Path) -> Path:
    """A CA that did not sign the broker's certificate (what an impostor broker would present)."""
    key, crt = tmp_path / "other.key", tmp_path / "other.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=Not the AgriTrace CA"],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt


# --- 1. TLS for gateways -----------------------------------------------------------------------


def test_gateway_publishes_over_tls_with_the_ca_from_its_credentials_and_the_reading_is_stored(
    stack: Stack, tmp_path: Path
) -> None:
    doc = create_gateway(stack)
    mqtt, gw = doc["mqtt"], doc["gateway_id"]
    settings = get_settings()
    assert (mqtt["host"], mqtt["port"]) == (settings.gateway_mqtt_host, settings.mqtt_tls_port)
    assert mqtt["client_id"] == mqtt["username"] == gw
    ca = save_ca(doc, tmp_path)
    stack.start_worker(1)
    stack.wait_subscribed(gw, mqtt["password"])

    # The documented command (docs/ingest.md), as a gateway runs it.
    out = run(*mosquitto_pub(mqtt, "--cafile", str(ca), "-V", "mqttv5", "-q", "1",
                             "-t", f"agritrace/v1/{gw}/senml", "-m", pack("coldroom/temp", 4.5)))  # fmt: skip
    assert out.returncode == 0 and "failed" not in out.stderr, out.stderr
    wait_for(lambda: stored(stack.database, gw, "coldroom/temp") == 1, timeout=30)

    # openssl, not our code, validates the chain and the name (or address) the gateway is told.
    name_check = (
        "-verify_ip" if mqtt["host"].replace(".", "").isdigit() or ":" in mqtt["host"] else "-verify_hostname"
    )
    verified = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{mqtt['port']}", "-verify_return_error",
         name_check, mqtt["host"], "-CAfile", str(ca), "-brief"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    assert "Verification: OK" in verified.stderr
    refused = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{mqtt['port']}", "-verify_return_error",
         "-CAfile", str(other_ca(tmp_path)), "-brief"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "verify" in refused.stderr.lower(), refused.stderr


def test_a_gateway_without_the_ca_or_with_another_ca_or_name_cannot_publish(
    stack: Stack, tmp_path: Path
) -> None:
    doc = create_gateway(stack)
    mqtt, gw = doc["mqtt"], doc["gateway_id"]
    ca = save_ca(doc, tmp_path)
    stack.start_worker(1)
    stack.wait_subscribed(gw, mqtt["password"])
    attempts = {
        # Plain MQTT on the TLS port: no TLS at all.
        "no TLS": [],
        # The machine's public CAs, which did not sign the broker's certificate.
        "system CAs": ["--capath", "/etc/ssl/certs"],
        # An impostor's CA.
        "another CA": ["--cafile", str(other_ca(tmp_path))],
    }
    for i, (why, tls) in enumerate(attempts.items()):
        topic = f"agritrace/v1/{gw}/senml"
        out = run(
            *mosquitto_pub(mqtt, *tls, "-q", "1", "-t", topic, "-m", pack(f"refused/{i}", 1)), timeout=30
        )
        assert out.returncode != 0, why
    # The right CA, but a name the certificate does not carry: mosquitto_pub checks the name.
    out = run(*mosquitto_pub(mqtt, "--cafile", str(ca), "-q", "1", "-t", f"agritrace/v1/{gw}/senml",
                             "-m", pack("refused/name", 1), host="127.0.0.2"))  # fmt: skip
    assert out.returncode != 0, out.stderr
    # A good pack afterwards is stored; none of the refused ones are.
    run(
        *mosquitto_pub(
            mqtt, "--cafile", str(ca), "-q", "1", "-t", f"agritrace/v1/{gw}/senml", "-m", pack("ok", 2)
        )
    )
    wait_for(lambda: stored(stack.database, gw, "ok") == 1, timeout=30)
    assert count(stack.database, "SELECT count(*) FROM channels WHERE name LIKE 'refused/%%'") == 0


# --- 2. The plaintext listener answers loopback only ---------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    """A network namespace joined to this host by a veth pair, like a gateway on the farm's network:
    yields (namespace, the host's address as seen from it)."""
    if run("ip", "netns", "list").returncode != 0:
        pytest.skip("`ip netns` is not available here")
    tag = secrets.token_hex(3)
    ns, host_if, ns_if = f"agt-{tag}", f"agth{tag}", f"agtn{tag}"
    subnet = f"10.231.{secrets.randbelow(256)}"
    host_addr, ns_addr = f"{subnet}.1", f"{subnet}.2"
    etc = Path("/etc/netns") / ns
    try:
        _ip("netns", "add", ns)
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("-n", ns, "addr", "add", f"{ns_addr}/30", "dev", ns_if)
        _ip("-n", ns, "link", "set", ns_if, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        # The namespace resolves this machine's name to its address on the veth (`ip netns exec`
        # bind-mounts /etc/netns/NS/hosts over /etc/hosts), as a farm's LAN would.
        etc.mkdir(parents=True)
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{host_addr} {socket.gethostname()}\n")
        yield ns, host_addr
    finally:
        run("ip", "netns", "del", ns)
        run("ip", "link", "del", host_if)
        if etc.exists():
            (etc / "hosts").unlink(missing_ok=True)
            etc.rmdir()


def test_plaintext_from_another_host_is_refused_while_tls_from_it_works(
    stack: Stack, netns: tuple[str, str], tmp_path: Path
) -> None:
    ns, host_addr = netns
    doc = create_gateway(stack)
    mqtt, gw = doc["mqtt"], doc["gateway_id"]
    ca = save_ca(doc, tmp_path)
    settings = get_settings()
    stack.start_worker(1)
    stack.wait_subscribed(gw, mqtt["password"])
    # The name the gateway dials must be in the certificate (deploy/local/stack.sh adds the host name).
    server_san = run(
        "sh", "-c", f"openssl s_client -connect 127.0.0.1:{mqtt['port']} -showcerts </dev/null 2>/dev/null"
        " | openssl x509 -noout -ext subjectAltName"
    ).stdout  # fmt: skip
    assert f"DNS:{socket.gethostname()}" in server_san, server_san

    inside = ["ip", "netns", "exec", ns]
    topic = f"agritrace/v1/{gw}/senml"
    plain = run(*inside, *mosquitto_pub(mqtt, "-q", "1", "-t", topic, "-m", pack("from-farm/plain", 1),
                                        host=host_addr, port=settings.mqtt_port))  # fmt: skip
    assert plain.returncode != 0
    assert "refused" in plain.stderr.lower(), plain.stderr
    tls = run(*inside, *mosquitto_pub(mqtt, "--cafile", str(ca), "-V", "mqttv5", "-q", "1", "-t", topic,
                                      "-m", pack("from-farm/tls", 2), host=socket.gethostname()))  # fmt: skip
    assert tls.returncode == 0 and "failed" not in tls.stderr, tls.stderr
    wait_for(lambda: stored(stack.database, gw, "from-farm/tls") == 1, timeout=30)
    assert stored(stack.database, gw, "from-farm/plain") == 0


# --- 3. Retained messages -------------------------------------------------------------------------


def retained(observer: tuple[str, str], topic_filter: str) -> list[str]:
    """What a fresh subscriber finds retained under the filter ("topic payload" lines)."""
    settings = get_settings()
    user, password = observer
    out = run(
        "mosquitto_sub", "-h", settings.mqtt_host, "-p", str(settings.mqtt_port), "-u", user, "-P", password,
        "-t", topic_filter, "--retained-only", "-v", "-W", "2",
    )  # fmt: skip
    assert out.returncode in (0, 27), out.stderr  # 27: the -W timeout, after the retained messages
    return out.stdout.splitlines()


def die_with_will(mqtt: dict[str, Any], ca: Path, topic: str, payload: str) -> None:
    """A gateway connects with a retained will and vanishes without DISCONNECT: the broker publishes
    the will."""
    gw = mqtt["client_id"]
    client = subprocess.Popen(
        ["mosquitto_sub", "--cafile", str(ca), "-h", mqtt["host"], "-p", str(mqtt["port"]), "-i", gw,
         "-u", gw, "-P", mqtt["password"], "-t", f"agritrace/v1/{gw}/receipts", "-V", "mqttv5",
         "--will-topic", topic, "--will-payload", payload, "--will-retain", "--will-qos", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.5)
    client.send_signal(signal.SIGKILL)
    client.wait(10)
    time.sleep(0.3)


def test_a_gateway_cannot_leave_retained_messages_except_its_own_small_status(
    stack: Stack, observer_account: tuple[str, str], tmp_path: Path
) -> None:
    doc = create_gateway(stack)
    mqtt, gw = doc["mqtt"], doc["gateway_id"]
    ca = save_ca(doc, tmp_path)
    tls = ["--cafile", str(ca), "-q", "1", "-r"]
    try:
        # MQTT 5: the broker answers PUBACK 0x87 (mosquitto_pub: "Not authorized") and keeps nothing.
        for topic in (f"agritrace/v1/{gw}/senml", f"agritrace/v1/{gw}/senml/7"):
            out = run(*mosquitto_pub(mqtt, *tls, "-V", "mqttv5", "-t", topic, "-m", pack("retained", 1)))
            assert "not authorized" in out.stderr.lower(), out.stderr
        # MQTT 3.1.1 has no reason codes: the publish is acknowledged and dropped.
        out = run(*mosquitto_pub(mqtt, *tls, "-V", "mqttv311", "-t", f"agritrace/v1/{gw}/senml", "-m", "[]"))
        assert out.returncode == 0, out.stderr
        # Wills are checked when they fire: one left retained on a pack topic is dropped, the
        # documented "offline" will on the status topic is kept.
        for topic, payload in ((f"agritrace/v1/{gw}/senml", "[]"), (f"agritrace/v1/{gw}/status", "offline")):
            die_with_will(mqtt, ca, topic, payload)
        assert retained(observer_account, f"agritrace/v1/{gw}/#") == [f"agritrace/v1/{gw}/status offline"]
        # The birth/will status is the one thing a gateway may retain, and only a small one.
        out = run(
            *mosquitto_pub(mqtt, *tls, "-V", "mqttv5", "-t", f"agritrace/v1/{gw}/status", "-m", "online")
        )
        assert out.returncode == 0 and not out.stderr, out.stderr
        big = json.dumps({"status": "online", "note": "x" * 300})
        out = run(*mosquitto_pub(mqtt, *tls, "-V", "mqttv5", "-t", f"agritrace/v1/{gw}/status", "-m", big))
        assert "not authorized" in out.stderr.lower(), out.stderr
        time.sleep(0.5)
        assert retained(observer_account, f"agritrace/v1/{gw}/#") == [f"agritrace/v1/{gw}/status online"]
    finally:
        # Clear what the shared broker keeps (an empty retained message on the status is allowed too;
        # the pack topics hold something only on a broker without the guard, which lets them be cleared).
        for topic in ("status", "senml", "senml/7"):
            run(*mosquitto_pub(mqtt, *tls, "-t", f"agritrace/v1/{gw}/{topic}", "-n"))
    assert retained(observer_account, f"agritrace/v1/{gw}/#") == []


# --- 4. Files ------------------------------------------------------------------------------------


def _data_root() -> Path:
    env_file = Path(os.environ.get("AGRITRACE_ENV_FILE", REPO / ".local" / "agritrace.env"))
    out = subprocess.run(
        ["bash", str(REPO / "deploy/local/stack.sh"), "data-root"],
        env=dict(os.environ, AGRITRACE_STATE_DIR=str(env_file.parent)),
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(out.stdout.strip())


def readable_by(user: str, path: Path) -> bool:
    return run("runuser", "-u", user, "--", "cat", str(path)).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="reads the broker's files as other users (runuser)")
def test_the_brokers_accounts_file_and_ca_key_are_readable_by_no_one_else(stack: Stack) -> None:
    # After a dynamic-security change (Mosquitto writes the accounts file again).
    create_gateway(stack)
    root = _data_root()
    accounts = root / "mosquitto" / "dynamic-security.json"
    assert accounts.is_file(), accounts
    time.sleep(0.5)
    assert (accounts.stat().st_mode & 0o777, accounts.owner()) == (0o600, "mosquitto")
    assert (accounts.parent.stat().st_mode & 0o777, accounts.parent.owner()) == (0o700, "mosquitto")
    assert not readable_by("nobody", accounts)
    assert readable_by("mosquitto", accounts)

    tls = get_settings().mqtt_tls_ca_file
    assert tls is not None and tls.parent == root / "tls"
    ca_key, server_key = tls.parent / "ca.key", tls.parent / "server.key"
    assert (ca_key.stat().st_mode & 0o777, ca_key.owner()) == (0o600, "root")
    assert (server_key.stat().st_mode & 0o777, server_key.owner()) == (0o600, "mosquitto")
    # The broker reads its own key but cannot read the CA's (it could mint certificates with it).
    assert readable_by("mosquitto", server_key) and not readable_by("mosquitto", ca_key)
    assert not readable_by("nobody", server_key)
    assert readable_by("nobody", tls)  # the CA certificate is public
