"""The lint step, run with the tests so it holds on every commit: ruff's rules and format, and
no dead code (vulture, configured in pyproject.toml with its short whitelist)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["src", "tests", "bench"]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: run `uv sync --dev`")
    return found


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_rules_hold() -> None:
    result = _run(_tool("ruff"), "check", *SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_formatted() -> None:
    result = _run(_tool("ruff"), "format", "--check", *SOURCES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_dead_code() -> None:
    result = _run(_tool("vulture"))
    assert result.returncode == 0, (
        "vulture found code nothing uses: remove it, or (when something vulture cannot see "
        "uses it) add it to vulture_whitelist.py saying what\n" + result.stdout + result.stderr
    )
