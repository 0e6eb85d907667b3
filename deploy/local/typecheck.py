"""Runs mypy over the agritrace packages as they are laid out once installed.

The folders are mapped into `agritrace.*` by pyproject.toml, which mypy cannot follow from the
source tree, and mypy skips the symlinks of a strict editable install. So this builds a tree of
hard links laid out like the installed package, checks it with the tests and benchmarks, and prints
errors with the real source paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    tree = REPO / ".local" / "typecheck"
    shutil.rmtree(tree, ignore_errors=True)
    back: dict[str, str] = {}
    for package, folder in sorted(mapping.items()):
        target = tree.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for src in sorted((REPO / folder).glob("*.py*")):
            os.link(src, target / src.name)
        back[str(target.relative_to(REPO)) + "/"] = folder + "/"
    extra = [p for p in ("tests", "bench") if any((REPO / p).glob("**/*.py"))]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", str(tree.relative_to(REPO) / "agritrace"), *extra, *sys.argv[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    out = proc.stdout + proc.stderr
    for mirrored, real in sorted(back.items(), key=lambda kv: -len(kv[0])):
        out = out.replace(mirrored, real)
    sys.stdout.write(out)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
