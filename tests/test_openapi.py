"""The OpenAPI document reads well for client generators: short unique operationIds, described tags."""

from __future__ import annotations

from typing import Any

from agritrace.api.app import create_app


def _operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [op for item in spec["paths"].values() for op in item.values() if isinstance(op, dict)]


def test_each_operation_id_is_its_functions_name_and_unique() -> None:
    ids = [op["operationId"] for op in _operations(create_app().openapi())]
    assert len(ids) == len(set(ids))
    assert "healthz" in ids and "healthz_healthz_get" not in ids
    assert [i for i in ids if i.endswith(("_get", "_post", "_put", "_patch", "_delete"))] == []


def test_every_tag_in_use_is_described() -> None:
    spec = create_app().openapi()
    described = {t["name"] for t in spec["tags"] if t.get("description")}
    used = {tag for op in _operations(spec) for tag in op.get("tags", [])}
    assert used <= described
