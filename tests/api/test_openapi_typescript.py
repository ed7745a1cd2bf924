"""The published OpenAPI document is one a TypeScript front end can use as it stands:
openapi-typescript (pinned in scripts/openapi-ts/) turns the app's own schema into types with
no error and no warning, and the types name the operations and schemas the API documents.

Needs Node.js and npm; without them the test skips (CI has both). `npm ci` runs once, under a
file lock (pytest-xdist workers share the folder), and again only when the package files change.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOL_DIR = ROOT / "scripts" / "openapi-ts"
NODE_MODULES = TOOL_DIR / "node_modules"
# Written after a successful `npm ci` (which starts by deleting node_modules): the digest of the
# package files that it installed.
STAMP = NODE_MODULES / ".flowstudio-installed"
# Plain output: no colours in what the assertions read, no update notice from npm.
QUIET_ENV = {"NO_COLOR": "1", "FORCE_COLOR": "0", "npm_config_update_notifier": "false"}

# The schema does not depend on the database: one backend is enough.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


def _package_digest() -> str:
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        digest.update((TOOL_DIR / name).read_bytes())
    return digest.hexdigest()


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=TOOL_DIR,
        env={**os.environ, **QUIET_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def openapi_typescript() -> list[str]:
    """The command that runs the pinned openapi-typescript, installed by `npm ci` if needed."""
    npm, npx = shutil.which("npm"), shutil.which("npx")
    if shutil.which("node") is None or npm is None or npx is None:
        pytest.skip("openapi-typescript needs Node.js and npm (node, npm and npx on PATH)")
    digest = _package_digest()
    # Outside the work tree, named after it: one lock per checkout, shared by its workers.
    key = hashlib.sha256(str(TOOL_DIR).encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"flowstudio-openapi-ts-{key}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        installed = STAMP.read_text() if STAMP.exists() else None
        if installed != digest:
            result = _run([npm, "ci", "--no-audit", "--no-fund"], timeout=600)
            assert result.returncode == 0, f"npm ci failed:\n{result.stdout}{result.stderr}"
            STAMP.write_text(digest)
    # --no-install: the pinned copy in node_modules, never one fetched on the fly.
    return [npx, "--no-install", "openapi-typescript"]


def test_the_schema_makes_typescript_types_without_a_warning(
    app: Any, openapi_typescript: list[str], tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(app.openapi()))
    out = tmp_path / "out.ts"

    result = _run([*openapi_typescript, str(schema), "-o", str(out)], timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    # openapi-typescript reports schema problems (Redocly's lint) as warnings on stderr.
    assert result.stderr.strip() == "", result.stderr
    assert "⚠" not in result.stdout, result.stdout
    types = out.read_text()
    assert "export interface paths" in types
    assert '"/api/history": {' in types
    for operation in ("history_list", "run_generate", "auth_login"):
        assert f'operations["{operation}"]' in types, operation
        assert f"\n    {operation}: {{" in types, operation
    for model in ("HistoryItem", "Problem", "FlowList"):
        assert f"\n        {model}: {{" in types, model
        assert f'components["schemas"]["{model}"]' in types, model
