"""The local Cloudflare D1 (scripts/d1-local.sh): workerd through miniflare, behind a worker
that answers D1's REST API (/query and /raw).

These tests pin both the REST contract FlowStudio will rely on and the D1 behaviour the
runtime reproduces (transactions rejected, batches atomic, FTS5 and triggers working, the
way numbers come back), so that a miniflare upgrade that changes any of it is noticed.

Needs node and npm (the first start runs `npm ci` in scripts/d1-local). Without them the
tests skip with a message, except under CI=true where they fail.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "d1-local.sh"
READY_PREFIX = "d1-local listening on "
# The first start may run `npm ci` (about 5 s here; more on a slow registry).
START_TIMEOUT = 240.0
STOP_TIMEOUT = 15.0
DB_PATH = "/accounts/0123456789abcdef0123456789abcdef/d1/database/any-database-id"


def _require_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if not missing:
        return
    message = f"local D1 needs Node.js >= 20 with npm; not found: {', '.join(missing)}"
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{message} (mandatory in CI)", pytrace=False)
    pytest.skip(message)


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (an exited process not yet reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


HAS_PROC = sys.platform.startswith("linux") and Path("/proc/self/stat").exists()


@dataclass
class D1Server:
    """One `scripts/d1-local.sh PORT DIR` process."""

    directory: Path
    process: subprocess.Popen[str]
    base_url: str  # http://127.0.0.1:PORT/client/v4
    stderr_path: Path
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(
            base_url=self.base_url + DB_PATH,
            headers={"Authorization": "Bearer any-token-at-all"},
            timeout=30.0,
        )

    # -- requests ------------------------------------------------------------------------
    def post(self, endpoint: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(f"/{endpoint}", json=body)

    def results(self, endpoint: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.post(endpoint, body)
        payload = response.json()
        assert response.status_code == 200 and payload["success"], payload
        return payload["result"]

    def query(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a single statement."""
        (result,) = self.results("query", {"sql": sql, "params": list(params)})
        return result["results"]

    def batch(self, *statements: tuple[str, list[Any]]) -> list[dict[str, Any]]:
        return self.results(
            "query", {"batch": [{"sql": sql, "params": params} for sql, params in statements]}
        )

    def error(self, body: dict[str, Any], endpoint: str = "query") -> tuple[int, dict[str, Any]]:
        response = self.post(endpoint, body)
        return response.status_code, response.json()

    # -- process -------------------------------------------------------------------------
    def workerd_pids(self) -> list[int]:
        return [pid for pid in _children(self.process.pid) if _comm(pid).startswith("workerd")]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)
            raise AssertionError(f"d1-local did not stop on {sig!r}:\n{self.stderr()}") from None


def start_server(directory: Path, log_dir: Path) -> D1Server:
    _require_node()
    stderr_path = log_dir / f"d1-local-{time.monotonic_ns()}.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [str(SCRIPT), "0", str(directory)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:  # keeps reading so that the server never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            process.wait()
            pytest.fail(
                f"d1-local did not become ready:\n{stderr_path.read_text(errors='replace')}",
                pytrace=False,
            )
        if line.startswith(READY_PREFIX):
            return D1Server(directory, process, line[len(READY_PREFIX) :].strip(), stderr_path)


def assert_stopped_cleanly(server: D1Server, workerd: list[int], returncode: int) -> None:
    assert returncode == 0, server.stderr()
    if HAS_PROC:
        left = [pid for pid in workerd if _running(pid)]
        assert not left, f"workerd still running after d1-local stopped: {left}"


@pytest.fixture(scope="module")
def d1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[D1Server]:
    base = tmp_path_factory.mktemp("d1-local")
    server = start_server(base / "db", base)
    workerd = server.workerd_pids()
    yield server
    assert_stopped_cleanly(server, workerd, server.stop())


# -- the REST contract ----------------------------------------------------------------------


def test_single_statements_with_params(d1: D1Server) -> None:
    d1.query("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, age INT)")
    (created,) = d1.results(
        "query", {"sql": "INSERT INTO users (email, age) VALUES (?, ?)", "params": ["a@x.io", 41]}
    )
    assert created["success"] is True and created["results"] == []
    meta = created["meta"]
    assert meta["changes"] == 1 and meta["last_row_id"] == 1 and meta["changed_db"] is True
    for key in ("duration", "rows_read", "rows_written", "size_after", "served_by"):
        assert key in meta
    assert d1.query("SELECT id, email, age FROM users WHERE email = ?", "a@x.io") == [
        {"id": 1, "email": "a@x.io", "age": 41}
    ]
    # Numbered parameters and a missing "params" key.
    assert d1.query("SELECT ?2 AS b, ?1 AS a", "first", "second") == [{"b": "second", "a": "first"}]
    assert d1.results("query", {"sql": "SELECT 1 AS one"})[0]["results"] == [{"one": 1}]


def test_batch_runs_in_order_one_result_per_statement(d1: D1Server) -> None:
    d1.query("CREATE TABLE events (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    results = d1.batch(
        *[("INSERT INTO events (name) VALUES (?)", [f"e{i}"]) for i in range(5)],
        ("SELECT name FROM events ORDER BY id", []),
    )
    assert len(results) == 6
    assert [r["meta"]["last_row_id"] for r in results[:5]] == [1, 2, 3, 4, 5]
    assert results[5]["results"] == [{"name": f"e{i}"} for i in range(5)]


def test_batch_is_atomic(d1: D1Server) -> None:
    d1.query("CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT UNIQUE)")
    d1.query("INSERT INTO accounts (email) VALUES ('taken@x.io')")
    status, payload = d1.error(
        {
            "batch": [
                {"sql": "INSERT INTO accounts (email) VALUES (?)", "params": ["one@x.io"]},
                {"sql": "UPDATE accounts SET email = 'moved@x.io' WHERE email = 'taken@x.io'"},
                {"sql": "INSERT INTO accounts (email) VALUES (?)", "params": ["moved@x.io"]},
            ]
        }
    )
    assert status == 400 and payload["success"] is False
    assert "UNIQUE constraint failed: accounts.email" in payload["errors"][0]["message"]
    # Neither the insert nor the update of the failed batch is there.
    assert d1.query("SELECT email FROM accounts ORDER BY id") == [{"email": "taken@x.io"}]


def test_sql_error_envelope(d1: D1Server) -> None:
    d1.query("CREATE TABLE members (email TEXT PRIMARY KEY)")
    d1.query("INSERT INTO members VALUES ('a@x.io')")
    status, payload = d1.error({"sql": "INSERT INTO members VALUES (?)", "params": ["a@x.io"]})
    assert status == 400
    assert payload["success"] is False and payload["result"] is None
    assert payload["messages"] == []
    (error,) = payload["errors"]
    assert error["code"] == 7500
    assert error["message"].startswith(
        "D1_ERROR: UNIQUE constraint failed: members.email: SQLITE_CONSTRAINT"
    )
    status, payload = d1.error({"sql": "SELEC 1"})
    assert status == 400 and "syntax error" in payload["errors"][0]["message"]
    status, payload = d1.error({"sql": "SELECT * FROM no_such_table"})
    assert status == 400 and "no such table: no_such_table" in payload["errors"][0]["message"]


def test_transactions_are_rejected_like_production(d1: D1Server) -> None:
    for statement in ("BEGIN", "BEGIN IMMEDIATE", "COMMIT", "SAVEPOINT s1"):
        status, payload = d1.error({"sql": statement})
        assert status == 400, statement
        assert "state.storage.transaction()" in payload["errors"][0]["message"]


def test_bad_requests_and_auth(d1: D1Server) -> None:
    url = d1.base_url + DB_PATH + "/query"
    response = httpx.post(url, json={"sql": "SELECT 1"})
    assert response.status_code == 401
    assert response.json()["success"] is False and response.json()["errors"][0]["code"] == 10000
    # Any account id, database id and token.
    other = d1.base_url + "/accounts/x/d1/database/y/query"
    response = httpx.post(
        other, json={"sql": "SELECT 1 AS n"}, headers={"Authorization": "Bearer z"}
    )
    assert response.status_code == 200 and response.json()["result"][0]["results"] == [{"n": 1}]
    response = httpx.get(d1.base_url + "/accounts/x/tokens", headers={"Authorization": "Bearer z"})
    assert response.status_code == 404
    assert response.json() == {
        "result": None,
        "success": False,
        "errors": [{"code": 7000, "message": "No route for that URI"}],
        "messages": [],
    }
    for body in ({}, {"sql": 1}, {"sql": "SELECT ?", "params": "x"}, {"batch": []}, {"sql": " ;"}):
        status, payload = d1.error(body)
        assert status == 400 and payload["success"] is False, body
    response = d1.client.post("/query", content=b"{not json")
    assert response.status_code == 400 and response.json()["success"] is False
    # More than one statement in one string cannot take params: which would they bind to?
    status, payload = d1.error({"sql": "SELECT ?; SELECT ?", "params": [1, 2]})
    assert status == 400 and "batch" in payload["errors"][0]["message"]


def test_raw_endpoint(d1: D1Server) -> None:
    d1.query("CREATE TABLE pets (id INTEGER PRIMARY KEY, name TEXT)")
    d1.query("INSERT INTO pets (name) VALUES ('rex'), ('tom')")
    (result,) = d1.results(
        "raw", {"sql": "SELECT a.id, b.id, a.name FROM pets a JOIN pets b ON a.id = b.id"}
    )
    # Repeated column names survive in /raw (as objects the second `id` would win).
    assert result["results"] == {
        "columns": ["id", "id", "name"],
        "rows": [[1, 1, "rex"], [2, 2, "tom"]],
    }
    assert result["success"] is True and "rows_read" in result["meta"]
    # An empty result still names its columns; a batch gives one entry per statement.
    empty, written = d1.results(
        "raw",
        {
            "batch": [
                {"sql": "SELECT id, name FROM pets WHERE 0"},
                {"sql": "INSERT INTO pets (name) VALUES (?)", "params": ["kit"]},
            ]
        },
    )
    assert empty["results"] == {"columns": ["id", "name"], "rows": []}
    assert written["results"] == {"columns": [], "rows": []}
    assert written["meta"]["changes"] == 1


def test_returning_upsert_and_partial_index(d1: D1Server) -> None:
    d1.query("CREATE TABLE counters (k TEXT PRIMARY KEY, v INTEGER NOT NULL, deleted_at TEXT)")
    upsert = (
        "INSERT INTO counters (k, v) VALUES (?, ?) "
        "ON CONFLICT (k) DO UPDATE SET v = counters.v + excluded.v RETURNING k, v"
    )
    assert d1.query(upsert, "a", 1) == [{"k": "a", "v": 1}]
    assert d1.query(upsert, "a", 5) == [{"k": "a", "v": 6}]
    assert (
        d1.query("INSERT INTO counters (k, v) VALUES ('a', 9) ON CONFLICT DO NOTHING RETURNING k")
        == []
    )
    assert d1.query("UPDATE counters SET v = v * 10 WHERE k = ? RETURNING v", "a") == [{"v": 60}]
    assert d1.query("DELETE FROM counters WHERE k = 'nope' RETURNING k") == []
    d1.query("CREATE UNIQUE INDEX counters_live ON counters (v) WHERE deleted_at IS NULL")
    d1.query("INSERT INTO counters (k, v, deleted_at) VALUES ('b', 60, 'gone')")
    status, _ = d1.error({"sql": "INSERT INTO counters (k, v) VALUES ('c', 60)"})
    assert status == 400
    ranked = d1.query(
        "SELECT k, row_number() OVER (ORDER BY k DESC) AS rn, sum(v) OVER () AS total "
        "FROM counters ORDER BY k"
    )
    assert ranked == [{"k": "a", "rn": 2, "total": 120}, {"k": "b", "rn": 1, "total": 120}]


def test_multi_statement_script_with_trigger(d1: D1Server) -> None:
    script = """
        -- a migration script: comments; semicolons in strings; a trigger body
        CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
        CREATE TABLE note_log (note_id INTEGER, what TEXT);
        CREATE TRIGGER notes_ai AFTER INSERT ON notes BEGIN
            INSERT INTO note_log (note_id, what) VALUES (new.id, 'inserted; really');
            UPDATE note_log SET what = what || CASE WHEN new.id > 1 THEN '!' ELSE '' END;
        END;
        /* block comment ; */ INSERT INTO notes (body) VALUES ('semi;colon ''quoted''');
        SELECT body FROM notes;
    """
    results = d1.results("query", {"sql": script})
    assert len(results) == 5
    assert results[4]["results"] == [{"body": "semi;colon 'quoted'"}]
    assert d1.query("SELECT note_id, what FROM note_log") == [
        {"note_id": 1, "what": "inserted; really"}
    ]
    # A script is one transaction too: a failing statement undoes the ones before it.
    status, _ = d1.error({"sql": "CREATE TABLE half (x); INSERT INTO missing VALUES (1);"})
    assert status == 400
    assert d1.query("SELECT name FROM sqlite_master WHERE name = 'half'") == []


def test_fts5_and_triggers_as_flowstudio_uses_them(d1: D1Server) -> None:
    d1.results(
        "query",
        {
            "sql": """
            CREATE TABLE docs (id TEXT PRIMARY KEY, owner INTEGER NOT NULL, prompt TEXT NOT NULL);
            CREATE TABLE doc_search (rowid INTEGER PRIMARY KEY, doc_id TEXT NOT NULL UNIQUE);
            CREATE VIRTUAL TABLE docs_fts USING fts5(prompt, owner,
                tokenize='unicode61 remove_diacritics 2');
            CREATE TRIGGER docs_fts_insert AFTER INSERT ON docs BEGIN
                INSERT INTO doc_search (doc_id) VALUES (new.id);
                INSERT INTO docs_fts (rowid, prompt, owner) VALUES (
                    (SELECT rowid FROM doc_search WHERE doc_id = new.id), new.prompt,
                    'u' || new.owner);
            END;
            CREATE TRIGGER docs_fts_delete AFTER DELETE ON docs BEGIN
                DELETE FROM docs_fts WHERE rowid =
                    (SELECT rowid FROM doc_search WHERE doc_id = old.id);
                DELETE FROM doc_search WHERE doc_id = old.id;
            END;
            CREATE TABLE doc_terms (term TEXT PRIMARY KEY) WITHOUT ROWID;
            CREATE VIRTUAL TABLE docs_fts_new USING fts5(prompt, content='',
                tokenize='unicode61 remove_diacritics 2');
            CREATE VIRTUAL TABLE docs_fts_new_vocab USING fts5vocab(docs_fts_new, 'row');
            CREATE TRIGGER doc_terms_insert AFTER INSERT ON docs BEGIN
                INSERT INTO docs_fts_new (prompt) VALUES (new.prompt);
                INSERT OR IGNORE INTO doc_terms (term) SELECT term FROM docs_fts_new_vocab;
                INSERT INTO docs_fts_new (docs_fts_new) VALUES ('delete-all');
            END;
            """
        },
    )
    d1.batch(
        ("INSERT INTO docs VALUES (?, ?, ?)", ["d1", 1, "A café in Paris"]),
        ("INSERT INTO docs VALUES (?, ?, ?)", ["d2", 2, "Paris by night"]),
        ("INSERT INTO docs VALUES (?, ?, ?)", ["d3", 1, "product shot"]),
    )
    search = (
        "SELECT s.doc_id FROM docs_fts JOIN doc_search s ON s.rowid = docs_fts.rowid "
        "WHERE docs_fts MATCH ? ORDER BY docs_fts.rowid"
    )
    assert d1.query(search, 'owner:u1 AND prompt:"cafe"') == [{"doc_id": "d1"}]
    assert d1.query(search, "paris") == [{"doc_id": "d1"}, {"doc_id": "d2"}]
    assert d1.query(search, '"prod"*') == [{"doc_id": "d3"}]
    terms = [row["term"] for row in d1.query("SELECT term FROM doc_terms ORDER BY term")]
    assert terms == ["a", "by", "cafe", "in", "night", "paris", "product", "shot"]
    d1.query("DELETE FROM docs WHERE id = 'd2'")
    assert d1.query(search, "paris") == [{"doc_id": "d1"}]
    # FTS5 commands FlowStudio runs (incremental merge) and its shadow tables are reachable.
    d1.query("INSERT INTO docs_fts (docs_fts, rank) VALUES ('merge', ?)", -16)
    assert d1.query("SELECT count(DISTINCT segid) AS n FROM docs_fts_idx") == [{"n": 1}]
    d1.query("INSERT INTO docs_fts (docs_fts) VALUES ('integrity-check')")


# -- D1 behaviour worth knowing (pinned so that an upgrade changing it is noticed) ----------


def test_d1_value_typing(d1: D1Server) -> None:
    d1.query("CREATE TABLE nums (i INTEGER, t TEXT)")
    d1.query("INSERT INTO nums VALUES (?, ?)", "9007199254740993", "9007199254740993")
    (row,) = d1.query("SELECT i, CAST(i AS TEXT) AS exact, typeof(i) AS ty FROM nums")
    # SQLite keeps the exact 64-bit integer, but D1 hands it out as a JS double: past 2^53 it
    # is rounded. CAST(... AS TEXT) reads it exactly.
    assert row == {"i": 9007199254740992, "exact": "9007199254740993", "ty": "integer"}
    # JSON numbers are bound as REAL (even 3), booleans as 1/0, null as NULL.
    assert d1.query("SELECT typeof(?) AS t, ? / 2 AS half", 3, 3) == [{"t": "real", "half": 1.5}]
    assert d1.query("SELECT ? AS yes, ? AS no, ? AS absent", True, False, None) == [
        {"yes": 1, "no": 0, "absent": None}
    ]
    # ... but stored in an INTEGER column they are integers again.
    d1.query("INSERT INTO nums (i) VALUES (?)", 7)
    assert d1.query("SELECT typeof(i) AS t FROM nums WHERE i = 7") == [{"t": "integer"}]
    status, payload = d1.error({"sql": "SELECT ?", "params": [{"an": "object"}]})
    assert status == 400 and "D1_TYPE_ERROR" in payload["errors"][0]["message"]


def test_d1_schema_access_and_pragmas(d1: D1Server) -> None:
    d1.query("CREATE TABLE schema_probe (x)")
    names = {row["name"] for row in d1.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "schema_probe" in names
    assert d1.query("PRAGMA table_info(schema_probe)")[0]["name"] == "x"
    assert d1.query("PRAGMA foreign_keys") == [{"foreign_keys": 1}]
    for denied in ("PRAGMA user_version", "PRAGMA journal_mode", "CREATE TEMP TABLE tt (x)"):
        status, payload = d1.error({"sql": denied})
        assert status == 400 and "SQLITE_AUTH" in payload["errors"][0]["message"], denied


# -- the process ------------------------------------------------------------------------


def test_persistence_across_restart_and_clean_stop(tmp_path: Path) -> None:
    directory = tmp_path / "persisted"
    first = start_server(directory, tmp_path)
    first.query("CREATE TABLE kept (id INTEGER PRIMARY KEY, v TEXT)")
    first.batch(
        ("INSERT INTO kept (v) VALUES (?)", ["one"]), ("INSERT INTO kept (v) VALUES (?)", ["two"])
    )
    workerd = first.workerd_pids()
    if HAS_PROC:
        assert workerd, "expected a workerd child of node"
    assert_stopped_cleanly(first, workerd, first.stop(signal.SIGTERM))

    second = start_server(directory, tmp_path)
    try:
        assert second.query("SELECT v FROM kept ORDER BY id") == [{"v": "one"}, {"v": "two"}]
        workerd = second.workerd_pids()
    finally:
        returncode = second.stop(signal.SIGINT)
    assert_stopped_cleanly(second, workerd, returncode)


@pytest.mark.skipif(not HAS_PROC, reason="checks the process tree through Linux /proc")
def test_workerd_dies_with_a_killed_server(tmp_path: Path) -> None:
    server = start_server(tmp_path / "db", tmp_path)
    workerd = server.workerd_pids()
    assert workerd
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while any(_running(pid) for pid in workerd) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workerd if _running(pid)], "workerd outlived a SIGKILLed node"
