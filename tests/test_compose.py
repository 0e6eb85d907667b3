"""deploy/compose.yaml is valid Compose and stays in step with deploy/local (no Docker engine here)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from agritrace.dashboards import provisioning
from agritrace.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
EXAMPLE_ENV = {
    "AGRITRACE_DB_SUPERUSER_PASSWORD": "db-superuser-secret",
    "AGRITRACE_DB_OWNER_PASSWORD": "db-owner-secret",
    "AGRITRACE_DB_PASSWORD": "db-secret",
    "AGRITRACE_MQTT_ADMIN_PASSWORD": "admin-secret",
    "AGRITRACE_MQTT_INGEST_PASSWORD": "ingest-secret",
    "AGRITRACE_MQTT_ALERTS_PASSWORD": "alerts-secret",
    "AGRITRACE_MQTT_AUDIT_PASSWORD": "audit-secret",
    "AGRITRACE_TOKEN_PEPPER": "pepper-secret",
    "AGRITRACE_GRAFANA_DB_PASSWORD": "grafana-db-secret",
    "AGRITRACE_GRAFANA_ADMIN_PASSWORD": "grafana-admin-secret",
}
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, and $$ for a literal $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", "-"):
            return value if value else arg
        if op in (":?", "?"):
            if not value:
                raise ValueError(f"{name}: {arg}")
            return value
        return value or ""

    return _VAR.sub(sub, text)


def _compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    data = yaml.safe_load(interpolate(COMPOSE.read_text(), EXAMPLE_ENV if env is None else env))
    assert isinstance(data, dict)
    return data


def _schema() -> dict[str, Any]:
    # check-jsonschema vendors the compose-spec schema (compose-spec/compose-spec, Apache-2.0).
    text = (resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()
    schema = json.loads(text)
    assert isinstance(schema, dict)
    return schema


def test_compose_file_is_valid_against_the_compose_spec_schema() -> None:
    schema = _schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(_compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_compose_refuses_to_start_without_the_secrets() -> None:
    with pytest.raises(ValueError, match="AGRITRACE_DB_"):
        _compose(env={})
    for name in EXAMPLE_ENV:
        with pytest.raises(ValueError, match=name):
            _compose(env={k: v for k, v in EXAMPLE_ENV.items() if k != name})
    example = (DEPLOY / "compose.env.example").read_text()
    assert all(f"\n{name}=" in example for name in EXAMPLE_ENV)


def test_compose_runs_the_whole_stack_with_healthchecks_and_volumes() -> None:
    services = _compose()["services"]
    assert {"timescaledb", "mosquitto", "migrate", "api", "ingest-1", "ingest-2", "grafana"} <= set(services)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    # The broker image is the official one plus the retain guard plugin (deploy/mosquitto/Dockerfile).
    build = services["mosquitto"]["build"]
    dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).read_text()
    assert re.search(r"^ARG MOSQUITTO_IMAGE=eclipse-mosquitto:2\.0\.\d+$", dockerfile, re.M)
    assert "COPY retain_guard.c" in dockerfile and "/usr/lib/mosquitto_retain_guard.so" in dockerfile
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    for name, service in services.items():
        if name != "migrate":
            assert "healthcheck" in service, f"{name} has no healthcheck"
    # Every long-running process `make up` starts (the demo simulator aside) runs in compose too.
    local = (DEPLOY / "local" / "apps.sh").read_text()
    for name, command in [
        ("alerts", "alerts run"),
        ("rollup", "dashboards rollup"),
        ("audit", "audit checkpoint"),
    ]:
        assert f"agritrace {command}" in local.replace('"$BIN/agritrace" ', "agritrace ")
        assert " ".join(services[name]["command"]).startswith(f"agritrace {command}"), name
    assert set(_compose()["volumes"]) == {"pgdata", "mosquitto", "mqtt-ca", "grafana", "audit"}


def test_compose_publishes_only_the_brokers_tls_port_and_gives_gateways_its_ca() -> None:
    services = _compose()["services"]
    mosquitto = services["mosquitto"]
    # Issue 12: the plaintext listener was published on every host interface.
    assert [p.split(":")[-1] for p in mosquitto["ports"]] == ["8883"]
    env = services["api"]["environment"]
    assert str(env["AGRITRACE_MQTT_TLS_PORT"]) == str(env["AGRITRACE_MQTT_PUBLIC_PORT"]) == "8883"
    assert mosquitto["environment"]["AGRITRACE_MQTT_PUBLIC_HOST"] == env["AGRITRACE_MQTT_PUBLIC_HOST"]
    # The CA certificate the broker's entrypoint writes is the file the app hands to gateways.
    ca_volume = next(v for v in mosquitto["volumes"] if v.startswith("mqtt-ca:"))
    for name in ("api", "migrate"):
        mount = next(v for v in services[name]["volumes"] if v.startswith("mqtt-ca:"))
        assert mount.endswith(":ro")
        assert env["AGRITRACE_MQTT_TLS_CA_FILE"] == mount.split(":")[1] + "/ca.crt"
    assert ca_volume.split(":")[1] == "/mosquitto/ca"
    assert (
        'public_ca="${MOSQUITTO_PUBLIC_CA_DIR:-/mosquitto/ca}"'
        in (DEPLOY / "mosquitto" / "compose-entrypoint.sh").read_text()
    )


def test_compose_ingest_workers_each_have_their_own_identity() -> None:
    # Issue 19: replicas of one service all ran as worker 1 and took each other's broker session.
    services = _compose()["services"]
    workers = {name: s for name, s in services.items() if name.startswith("ingest")}
    assert len(workers) >= 2
    ids = []
    for name, service in workers.items():
        assert "deploy" not in service or int(service["deploy"].get("replicas", 1)) == 1, name
        command = service["command"]
        assert command[:3] == ["agritrace", "ingest", "run"], name
        worker_id = int(command[command.index("--worker-id") + 1])
        assert name == f"ingest-{worker_id}"
        ids.append(worker_id)
    assert sorted(ids) == list(range(1, len(ids) + 1))
    # `broker setup` gives each of them an account (agritrace-ingest-N).
    assert int(services["migrate"]["environment"]["AGRITRACE_INGEST_WORKERS"]) == len(ids)


def test_compose_runs_no_application_process_with_database_powers() -> None:
    services = _compose()["services"]
    database = services["timescaledb"]["environment"]
    assert database["POSTGRES_USER"] == "postgres"
    superuser_password = database["POSTGRES_PASSWORD"]
    owner_password = EXAMPLE_ENV["AGRITRACE_DB_OWNER_PASSWORD"]
    for name, service in services.items():
        if name in ("timescaledb", "grafana", "mosquitto"):
            continue
        env = service["environment"]
        assert env["AGRITRACE_DATABASE_URL"].startswith("postgresql://agritrace_app:"), name
        assert superuser_password not in json.dumps(env), name
        assert "AGRITRACE_DATABASE_ROLES_URL" not in env, name
        # Only the one-shot migration has the owner's password.
        assert (owner_password in json.dumps(env)) == (name == "migrate"), name
    # The roles themselves come from the same script as the local stack's.
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["timescaledb"]["volumes"]}
    assert mounts["/agritrace/roles.sql"] == "./postgres/roles.sql"
    assert (COMPOSE.parent / "postgres" / "initdb.sh").is_file()
    assert "deploy/postgres/roles.sql" in (DEPLOY / "local" / "stack.sh").read_text()


def test_compose_broker_uses_the_same_config_template_as_the_local_stack() -> None:
    mosquitto = _compose()["services"]["mosquitto"]
    mounts = {
        v.split(":")[1]: (COMPOSE.parent / v.split(":")[0]).resolve()
        for v in mosquitto["volumes"]
        if v.startswith(".")
    }
    template = DEPLOY / "mosquitto" / "mosquitto.conf.in"
    assert template.resolve() in mounts.values()
    placeholders = set(re.findall(r"@[A-Z_]+@", template.read_text()))
    assert placeholders
    entrypoint = (DEPLOY / "mosquitto" / "compose-entrypoint.sh").read_text()
    local = (DEPLOY / "local" / "stack.sh").read_text()
    for placeholder in placeholders:
        assert f"s|{placeholder}|" in entrypoint, f"compose does not fill {placeholder}"
        assert f"s|{placeholder}|" in local, f"deploy/local does not fill {placeholder}"


def test_compose_migrates_with_the_same_commands_as_make_migrate() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\nmigrate:", 1)[1].split("\n\n", 1)[0]
    local_steps = [re.sub(r"^@\$\(BIN\)/", "", line.strip()) for line in recipe.splitlines()[1:]]
    assert local_steps, recipe
    command = " ".join(_compose()["services"]["migrate"]["command"])
    for step in local_steps:
        assert step in command, f"compose's migrate does not run `{step}`"


def test_compose_grafana_mounts_the_exported_provisioning_and_sets_what_it_reads() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("."))
    assert (COMPOSE.parent / "grafana" / "provisioning" / "datasources").is_dir()
    assert (COMPOSE.parent / "grafana" / "dashboards" / "agritrace").is_dir()
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    assert provisioning.GRAFANA_DASHBOARDS_PATH.startswith(mounts["./grafana/dashboards"] + "/")
    used = set(
        re.findall(
            r"\$\{(AGRITRACE_[A-Z_]+)\}",
            (DEPLOY / "grafana/provisioning/datasources/agritrace.yaml").read_text(),
        )
    )
    assert used and used <= set(grafana["environment"])


def test_compose_sets_only_settings_the_app_knows() -> None:
    known = {f"AGRITRACE_{name.upper()}" for name in Settings.model_fields}
    for name in ("migrate", "api", "ingest-1", "ingest-2", "alerts", "rollup", "audit"):
        env = _compose()["services"][name]["environment"]
        assert set(env) <= known, set(env) - known
        assert env["AGRITRACE_MODE"] == "production"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RETAIN_PLUGIN = os.environ.get(
    "AGRITRACE_MQTT_RETAIN_PLUGIN", "/usr/local/lib/agritrace/mosquitto_retain_guard.so"
)


@pytest.mark.skipif(shutil.which("mosquitto") is None or os.geteuid() != 0, reason="needs mosquitto and root")
def test_compose_broker_entrypoint_starts_a_broker_that_admits_only_its_admin() -> None:
    # The container's entrypoint, run against this machine's Mosquitto with temporary paths: the
    # rendered template must start, and dynamic security must admit the admin and refuse others, on
    # the plaintext listener and on the TLS one (verified against the CA the app hands out).
    work = Path(tempfile.mkdtemp(prefix="agritrace-compose-mqtt-"))
    work.chmod(0o755)  # the broker drops to the mosquitto user
    port, tls_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "MOSQUITTO_DATA_DIR": str(work / "data"),
        "MOSQUITTO_CONFIG_DIR": str(work / "config"),
        "MOSQUITTO_TEMPLATE": str(DEPLOY / "mosquitto" / "mosquitto.conf.in"),
        "MOSQUITTO_PORT": str(port),
        "MOSQUITTO_TLS_PORT": str(tls_port),
        "MOSQUITTO_PUBLIC_CA_DIR": str(work / "ca"),
        "MOSQUITTO_RETAIN_PLUGIN": RETAIN_PLUGIN,
        "AGRITRACE_MQTT_PUBLIC_HOST": "mqtt.example.cn",
        "AGRITRACE_MQTT_ADMIN_USERNAME": "compose-admin",
        "AGRITRACE_MQTT_ADMIN_PASSWORD": "compose-admin-secret",
    }
    broker = subprocess.Popen(
        ["sh", str(DEPLOY / "mosquitto" / "compose-entrypoint.sh")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", tls_port)) == 0:
                    break
            time.sleep(0.1)

        def publish(password: str, *tls: str) -> int:
            args = ["mosquitto_pub", *tls, "-p", str(tls_port if tls else port), "-u", "compose-admin"]
            return subprocess.run(
                [
                    *args,
                    "-h",
                    "localhost" if tls else "127.0.0.1",
                    "-P",
                    password,
                    "-t",
                    "agritrace/healthcheck",
                    "-n",
                ],
                capture_output=True,
                check=False,
            ).returncode

        ca = work / "ca" / "ca.crt"
        assert publish("compose-admin-secret") == 0
        assert publish("wrong") != 0
        assert publish("compose-admin-secret", "--cafile", str(ca)) == 0
        assert publish("wrong", "--cafile", str(ca)) != 0
        # The certificate names the public host gateways are told, and the CA key is root's alone.
        tls_dir = work / "data" / "tls"
        san = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tls_dir / "server.crt")],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "DNS:mqtt.example.cn" in san and "DNS:localhost" in san and "IP Address:127.0.0.1" in san
        assert ca.read_bytes() == (tls_dir / "ca.crt").read_bytes()
        for path, owner in (
            (tls_dir / "ca.key", "root"),
            (work / "data" / "dynamic-security.json", "mosquitto"),
        ):
            assert (path.stat().st_mode & 0o777, path.owner()) == (0o600, owner), path
    finally:
        broker.terminate()
        broker.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
