"""`agritrace api run` writes one JSON line per request (issue 12, "Input"): who called what, how it
ended and how long it took, without the token, the Authorization header or the query string (a
webhook-style `?key=` must not land in a log file). The real server process, called with curl."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from attacker import Tenant, curl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_request_is_one_json_line_without_the_token_or_the_query(
    tenant: Tenant, tmp_path: Path
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    agritrace = Path(sys.executable).parent / "agritrace"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(agritrace), "api", "run", "--port", str(port), "--workers", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=os.environ,
        )
    try:
        for _ in range(300):
            try:
                if curl("GET", base + "/healthz")[0] in (200, 503):
                    break
            except subprocess.CalledProcessError:  # not listening yet
                pass
            time.sleep(0.1)
        token = tenant.own["Authorization"].removeprefix("Bearer ")
        assert curl("GET", f"{base}/api/v1/batches?key=SECRET-QUERY&limit=5", headers=tenant.own)[0] == 200
        forged = "agt_" + "F" * 43
        assert curl("GET", f"{base}/api/v1/batches", headers={"Authorization": f"Bearer {forged}"})[0] == 401
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    text = log.read_text()
    assert token not in text and forged not in text and "SECRET-QUERY" not in text
    assert "Bearer" not in text and "authorization" not in text.lower()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    ok = next(x for x in lines if x["path"] == "/api/v1/batches" and x["status"] == 200)
    assert ok["method"] == "GET" and ok["client"] == "127.0.0.1" and ok["duration_ms"] >= 0
    assert (ok["role"], ok["cooperative_id"]) == ("cooperative", tenant.cooperative_id)
    assert isinstance(ok["token_id"], int)
    assert ok["time"].endswith("+00:00")
    refused = next(x for x in lines if x["path"] == "/api/v1/batches" and x["status"] == 401)
    assert "role" not in refused and "token_id" not in refused
