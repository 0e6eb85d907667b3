"""The trivial FastAPI endpoint the trace benchmark compares against (same server, same worker count)."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()


@app.get("/ping")
def ping() -> dict[str, bool]:
    # A plain `def`, like our handlers: it runs in the same thread pool.
    return {"ok": True}
