"""Cloudflare D1 as a SQLAlchemy backend: a DB-API driver over D1's REST API, and a dialect.

D1 is SQLite, so the dialect is SQLAlchemy's SQLite dialect (the same SQL, the same FTS5 and
trigger statements, the same Alembic migrations) with this driver underneath. What differs is
the transaction: D1's REST API has no interactive transactions (it rejects BEGIN), but it runs
a *batch* of statements as one transaction, all or nothing. So a connection here keeps the
writes of a unit of work (INSERT, UPDATE, DELETE, DDL without RETURNING) and sends them as one
batch when the unit commits; a rollback drops them, and nothing was written. A statement whose
answer the code needs now (a read, or a write with RETURNING) is sent at once, behind the
writes kept so far, in the same batch: the unit's reads see its own writes, and those writes
are then applied (a unit that reads after writing goes out as two batches). A worker's claim
is one `UPDATE … RETURNING`, atomic on its own.

Writes that are kept report `rowcount` -1 (unknown): the dialect says so, and code that needs
to know whether a write hit a row asks with RETURNING.

Errors: D1's constraint errors become `IntegrityError` (the same problem codes as on the other
backends); no answer, a 5xx or a 429 becomes `D1Unavailable`, an `OperationalError` the
application answers with 503 `database_unavailable`. The API token travels only in the
Authorization header; no message here contains it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import pool
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL
from sqlalchemy.util.concurrency import await_

DEFAULT_API_URL = "https://api.cloudflare.com/client/v4"
URL_SCHEME = "d1"
# What SQLAlchemy and Alembic know the driver as: the SQLite dialect, this driver.
SQLALCHEMY_DRIVERNAME = "sqlite+d1"

# D1 runs a recent SQLite (RETURNING, window functions, FTS5, partial indexes).
SQLITE_VERSION_INFO = (3, 45, 0)

_READS = re.compile(r"^\s*(SELECT|WITH|PRAGMA|EXPLAIN|VALUES)\b", re.IGNORECASE)
_RETURNING = re.compile(r"\bRETURNING\b", re.IGNORECASE)
_TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE)\b", re.I)
_SAVEPOINT = re.compile(r"^\s*SAVEPOINT\s+(\w+)", re.I)
_RELEASE = re.compile(r"^\s*RELEASE\s+(?:SAVEPOINT\s+)?(\w+)", re.I)
_ROLLBACK_TO = re.compile(r"^\s*ROLLBACK\s+TO\s+(?:SAVEPOINT\s+)?(\w+)", re.I)
_CONSTRAINT = re.compile(r"constraint failed|SQLITE_CONSTRAINT", re.IGNORECASE)


# -- DB-API exceptions (PEP 249) ----------------------------------------------------------------
class Warning(Exception):  # noqa: A001 - the name PEP 249 gives it
    pass


class Error(Exception):
    pass


class InterfaceError(Error):
    pass


class DatabaseError(Error):
    pass


class DataError(DatabaseError):
    pass


class OperationalError(DatabaseError):
    pass


class IntegrityError(DatabaseError):
    pass


class InternalError(DatabaseError):
    pass


class ProgrammingError(DatabaseError):
    pass


class NotSupportedError(DatabaseError):
    pass


class D1Unavailable(OperationalError):
    """D1 did not answer, or answered 5xx / 429: try again later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- the REST client ----------------------------------------------------------------------------
@dataclass(frozen=True)
class D1Address:
    account_id: str
    database_id: str
    api_url: str = DEFAULT_API_URL

    @property
    def endpoint(self) -> str:
        return (
            f"{self.api_url.rstrip('/')}/accounts/{self.account_id}"
            f"/d1/database/{self.database_id}/raw"
        )


@dataclass
class StatementResult:
    columns: list[str]
    rows: list[list[Any]]
    changes: int = -1
    last_row_id: int | None = None


@dataclass
class D1Client:
    """Sends statements to D1's `raw` endpoint: one, or several as one batch (a transaction)."""

    address: D1Address
    api_token: str
    timeout: float = 30.0
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.timeout,
                headers={"Authorization": f"Bearer {self.api_token}"},
            )
        return self._http

    async def run(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[StatementResult]:
        if len(statements) == 1:
            sql, params = statements[0]
            body: dict[str, Any] = {"sql": sql, "params": list(params)}
        else:
            body = {"batch": [{"sql": sql, "params": list(params)} for sql, params in statements]}
        try:
            response = await self._client().post(self.address.endpoint, json=body)
        except httpx.HTTPError as exc:
            raise D1Unavailable(f"D1 did not answer: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise D1Unavailable(
                f"D1 answered HTTP {response.status_code}",
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        try:
            envelope = response.json()
        except ValueError:
            raise D1Unavailable(f"D1 answered HTTP {response.status_code} without JSON") from None
        if response.status_code in (401, 403):
            raise OperationalError(
                f"D1 refused the API token (HTTP {response.status_code}): check "
                "FLOWSTUDIO_D1_API_TOKEN and that it may edit this database"
            )
        if not envelope.get("success", False):
            raise _error(envelope, response.status_code)
        return [_statement_result(item) for item in envelope.get("result") or []]

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _error(envelope: dict[str, Any], status: int) -> DatabaseError:
    errors = envelope.get("errors") or []
    message = "; ".join(str(e.get("message", "")) for e in errors if isinstance(e, dict))
    message = message or f"D1 refused the request (HTTP {status})"
    if _CONSTRAINT.search(message):
        return IntegrityError(message)
    return OperationalError(message)


def _statement_result(item: dict[str, Any]) -> StatementResult:
    results = item.get("results") or {}
    meta = item.get("meta") or {}
    return StatementResult(
        columns=list(results.get("columns") or []),
        rows=[list(row) for row in results.get("rows") or []],
        changes=int(meta.get("changes", -1)),
        last_row_id=meta.get("last_row_id"),
    )


# -- DB-API connection and cursor ---------------------------------------------------------------
class D1Cursor:
    arraysize = 1

    def __init__(self, connection: D1Connection) -> None:
        self.connection = connection
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._rows: list[list[Any]] = []
        self._next = 0

    def execute(self, operation: str, parameters: Sequence[Any] | None = None) -> D1Cursor:
        result = self.connection._execute(operation, _params(parameters))
        self._show(result)
        return self

    def executemany(self, operation: str, seq_of_parameters: Sequence[Sequence[Any]]) -> D1Cursor:
        for parameters in seq_of_parameters:
            result = self.connection._execute(operation, _params(parameters))
        self._show(None if not seq_of_parameters else result)
        return self

    def _show(self, result: StatementResult | None) -> None:
        if result is None:  # kept for the commit batch
            self.description, self._rows, self.rowcount = None, [], -1
            return
        self.description = [
            (name, None, None, None, None, None, None) for name in result.columns
        ] or None
        self._rows, self._next = result.rows, 0
        self.rowcount = result.changes
        self.lastrowid = result.last_row_id

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return tuple(row)

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        size = size or self.arraysize
        rows = self._rows[self._next : self._next + size]
        self._next += len(rows)
        return [tuple(row) for row in rows]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return [tuple(row) for row in rows]

    def close(self) -> None:
        self._rows = []

    async def _async_soft_close(self) -> None:
        """What SQLAlchemy's async results call when done: the rows are already here."""

    def setinputsizes(self, *args: Any) -> None:
        pass

    def setoutputsize(self, *args: Any) -> None:
        pass


def _params(parameters: Sequence[Any] | None) -> list[Any]:
    values = []
    for value in parameters or ():
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            raise NotSupportedError("FlowStudio stores no binary values in D1")
        values.append(value)
    return values


async def _kept() -> None:
    """What a kept write awaits: nothing (it goes out with the unit's batch)."""


class D1Connection:
    """One DB-API connection: the writes of the current unit, kept until it commits."""

    def __init__(self, client: D1Client) -> None:
        self.client = client
        self._kept: list[tuple[str, list[Any]]] = []
        self._savepoints: list[tuple[str, int]] = []  # (name, writes kept before it)

    def cursor(self) -> D1Cursor:
        return D1Cursor(self)

    def _execute(self, sql: str, params: list[Any]) -> StatementResult | None:
        if _TRANSACTION_CONTROL.match(sql):
            self._savepoint(sql)
            await_(_kept())
            return None
        if not (_READS.match(sql) or _RETURNING.search(sql)):
            self._kept.append((sql, params))
            # SQLAlchemy's async engine wants every execute to await something.
            await_(_kept())
            return None
        statements, self._kept = [*self._kept, (sql, params)], []
        return await_(self.client.run(statements))[-1]

    def _savepoint(self, sql: str) -> None:
        """Savepoints guard a write whose conflict the code handles (a unique key raced by a
        concurrent request). D1 cannot hold one open, so the writes kept so far and those
        inside it go out as one batch when it is released: a conflict raises there, where
        the code expects it, and the batch, all or nothing, wrote none of them (the writes
        from before the savepoint are kept again for the unit's commit)."""
        if match := _SAVEPOINT.match(sql):
            self._savepoints.append((match.group(1), len(self._kept)))
        elif match := _RELEASE.match(sql):
            mark = self._pop_savepoint(match.group(1))
            if self._savepoints or not self._kept:
                return
            statements, self._kept = self._kept, []
            try:
                await_(self.client.run(statements))
            except Error:
                self._kept = statements[:mark]
                raise
        elif match := _ROLLBACK_TO.match(sql):
            mark = self._pop_savepoint(match.group(1))
            del self._kept[mark:]
        else:
            raise NotSupportedError(
                "D1 has no interactive transactions: a unit's writes go out as one batch"
            )

    def _pop_savepoint(self, name: str) -> int:
        while self._savepoints:
            found, mark = self._savepoints.pop()
            if found == name:
                return mark
        return len(self._kept)

    def commit(self) -> None:
        statements, self._kept, self._savepoints = self._kept, [], []
        if statements:
            await_(self.client.run(statements))

    def rollback(self) -> None:
        self._kept, self._savepoints = [], []

    def close(self) -> None:
        self._kept = []
        await_(self.client.aclose())

    def create_function(self, *args: Any, **kwargs: Any) -> None:
        """SQLAlchemy registers a REGEXP function on SQLite connections; D1 has none to add."""


class D1DBAPI:
    """The module-like object SQLAlchemy expects of a DB-API driver."""

    paramstyle = "qmark"
    apilevel = "2.0"
    threadsafety = 1
    sqlite_version_info = SQLITE_VERSION_INFO
    sqlite_version = ".".join(map(str, SQLITE_VERSION_INFO))
    PARSE_COLNAMES = 0
    PARSE_DECLTYPES = 0
    Binary = bytes
    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def connect(
        self, *, account_id: str, database_id: str, api_url: str, api_token: str, timeout: float
    ) -> D1Connection:
        address = D1Address(account_id, database_id, api_url)
        return D1Connection(D1Client(address, api_token, timeout=timeout))


class D1Dialect(SQLiteDialect_pysqlite):
    """SQLite's dialect over the D1 driver (`sqlite+d1://token:TOKEN@ACCOUNT/DATABASE?api_url=…`)."""

    driver = "d1"
    is_async = True
    supports_statement_cache = True
    supports_server_side_cursors = False
    # Writes kept for the commit batch have no row count yet.
    supports_sane_rowcount = False
    supports_sane_multi_rowcount = False
    # D1 binds at most 100 parameters a statement: a many-row INSERT is cut to fit.
    insertmanyvalues_max_parameters = 100

    @classmethod
    def import_dbapi(cls) -> Any:
        return D1DBAPI()

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.AsyncAdaptedQueuePool

    def create_connect_args(self, url: URL) -> Any:
        if not url.host or not url.database:
            raise ValueError("a D1 URL names an account and a database: d1://ACCOUNT/DATABASE")
        options = dict(url.query)
        return [], {
            "account_id": url.host,
            "database_id": url.database,
            "api_url": str(options.get("api_url") or DEFAULT_API_URL),
            "api_token": url.password or "",
            "timeout": float(str(options.get("timeout") or 30)),
        }

    def _get_server_version_info(self, connection: Any) -> tuple[int, ...]:
        return SQLITE_VERSION_INFO

    def get_isolation_level(self, dbapi_connection: Any) -> str:
        return "SERIALIZABLE"  # every batch is a transaction

    def set_isolation_level(self, dbapi_connection: Any, level: str) -> None:
        pass

    def get_default_isolation_level(self, _dbapi_connection: Any) -> str:
        return "SERIALIZABLE"

    def _get_table_pragma(
        self, connection: Any, pragma: str, table_name: str, schema: str | None = None
    ) -> Any:
        # D1 has no temp schema to look in (its PRAGMA temp.… fails): main only.
        return super()._get_table_pragma(connection, pragma, table_name, schema=schema or "main")

    def get_table_names(self, connection: Any, schema: str | None = None, **kw: Any) -> Any:
        # D1's own tables (`_cf_…`) are listed but cannot be read.
        names = super().get_table_names(connection, schema, **kw)
        return [name for name in names if not name.startswith("_cf_")]

    def do_ping(self, dbapi_connection: Any) -> bool:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT 1")
        return True

    def is_disconnect(self, e: Any, connection: Any, cursor: Any) -> bool:
        return isinstance(e, D1Unavailable)

    def on_connect(self) -> None:
        return None

    def get_driver_connection(self, connection: Any) -> Any:
        return connection


def sqlalchemy_url(url: str, *, api_token: str, api_url: str | None) -> URL:
    """`d1://ACCOUNT/DATABASE` as the URL SQLAlchemy connects with. The token rides as the
    URL's password, which SQLAlchemy masks wherever it shows a URL."""
    rest = url.removeprefix(f"{URL_SCHEME}://")
    account_id, _, database_id = rest.partition("/")
    database_id = database_id.strip("/")
    if not account_id or not database_id or "/" in database_id:
        raise ValueError("a D1 database URL is d1://ACCOUNT_ID/DATABASE_ID")
    return URL.create(
        SQLALCHEMY_DRIVERNAME,
        username="token",  # a URL shows a password only after a user name
        password=api_token,
        host=account_id,
        database=database_id,
        query={"api_url": api_url or DEFAULT_API_URL},
    )
