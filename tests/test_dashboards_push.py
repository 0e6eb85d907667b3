"""`agritrace dashboards push` against a fake Grafana (an outside system): idempotent uploads."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from agritrace.cli import app
from agritrace.dashboards import boards
from agritrace.dashboards.exceptions import GrafanaUnavailable
from agritrace.dashboards.push import push

TOKEN = "glsa_fake_service_account_token"


@dataclass
class FakeGrafanaState:
    """What the fake Grafana holds and every request it was sent."""

    folders: dict[str, str] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)


class FakeGrafanaHandler(BaseHTTPRequestHandler):
    """The few Grafana HTTP API routes the push uses, with bearer-token auth."""

    state: FakeGrafanaState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        self.state.requests.append((self.command, self.path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._reply(401, {"message": "Unauthorized"})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path.startswith("/api/folders/"):
            uid = self.path.rsplit("/", 1)[1]
            if uid in self.state.folders:
                self._reply(200, {"uid": uid, "title": self.state.folders[uid]})
            else:
                self._reply(404, {"message": "folder not found"})
            return
        self._reply(404, {"message": "not found"})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/api/folders":
            if body["uid"] in self.state.folders:
                self._reply(409, {"message": "a folder with the same uid already exists"})
                return
            self.state.folders[body["uid"]] = body["title"]
            self._reply(200, {"uid": body["uid"], "title": body["title"]})
        elif self.path == "/api/dashboards/db":
            dash = body["dashboard"]
            exists = dash["uid"] in self.state.dashboards
            if exists and not body.get("overwrite"):
                self._reply(412, {"status": "version-mismatch"})
                return
            if body.get("folderUid") not in self.state.folders:
                self._reply(400, {"message": "folder not found"})
                return
            self.state.dashboards[dash["uid"]] = body
            self._reply(200, {"status": "success", "uid": dash["uid"], "version": 1})
        else:
            self._reply(404, {"message": "not found"})


@pytest.fixture
def fake_grafana() -> Iterator[tuple[str, FakeGrafanaState]]:
    state = FakeGrafanaState()
    handler = type("Handler", (FakeGrafanaHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()
    server.server_close()


def test_operator_pushes_dashboards_twice_and_grafana_holds_one_copy_of_each(
    fake_grafana: tuple[str, FakeGrafanaState],
) -> None:
    url, state = fake_grafana
    first = push(url=url, token=TOKEN)
    second = push(url=url, token=TOKEN)
    assert first == second and len(first) == len(boards.BOARDS)
    assert set(state.dashboards) == set(first)
    assert state.folders == {boards.FOLDER_UID: boards.FOLDER_TITLE}
    assert sum(1 for method, path in state.requests if (method, path) == ("POST", "/api/folders")) == 1
    for body in state.dashboards.values():
        assert body["overwrite"] is True and body["folderUid"] == boards.FOLDER_UID
        assert "id" not in body["dashboard"]
        assert body["dashboard"]["panels"]


def test_push_with_a_bad_token_says_grafana_refused_and_changes_nothing(
    fake_grafana: tuple[str, FakeGrafanaState],
) -> None:
    url, state = fake_grafana
    with pytest.raises(GrafanaUnavailable, match="Unauthorized"):
        push(url=url, token="wrong")
    assert state.dashboards == {}


def test_push_to_an_unreachable_grafana_is_a_one_line_error() -> None:
    with pytest.raises(GrafanaUnavailable):
        push(url="http://127.0.0.1:9", token=TOKEN, timeout=2)


def test_cli_push_prints_each_dashboard_pushed(fake_grafana: tuple[str, FakeGrafanaState]) -> None:
    url, _ = fake_grafana
    result = CliRunner().invoke(app, ["dashboards", "push", "--url", url, "--token", TOKEN])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [f"pushed {m.uid}" for m in boards.build_all().values()]
