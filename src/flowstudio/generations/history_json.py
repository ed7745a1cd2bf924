"""History list pages as JSON bytes, straight from the rows the database returns.

A list page is the busiest read: 50 items of 30 fields each. Turning every value into a Python
object (UUID, datetime, ORM row, pydantic model) only to print it again cost most of a page, so
the list query reads the columns untyped and this module writes each value in the API's JSON
form directly. The result is the same document `HistoryItem` describes (the OpenAPI schema);
a test holds the two equal field by field on both databases.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pydantic_core

from flowstudio.generations.schemas import asset_values, error_values
from flowstudio.pagination import Position

RunContext = Mapping[uuid.UUID, tuple[str, str | None, dict[str, str]]]
_NO_CONTEXT: tuple[str | None, str | None, dict[str, str]] = (None, None, {})
_fromisoformat = datetime.fromisoformat
_Fragment = orjson.Fragment


def _iso(value: datetime) -> str:
    """The way pydantic writes an aware UTC datetime: ISO 8601, `Z`, no zero microseconds."""
    text = value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


class RowValues:
    """The untyped columns of a history row as the list query hands them back: times as
    naive-UTC text 'YYYY-MM-DD HH:MM:SS.ffffff' and JSON documents as text on both databases
    (SQLite stores them so; PostgreSQL writes them so, see repository._StoredText); ids as
    PostgreSQL writes a UUID. Each becomes its API form by slicing, without building the
    object."""

    def text_id(self, value: Any) -> str:
        return value

    def uuid(self, value: Any) -> uuid.UUID:
        return uuid.UUID(value)

    def time(self, value: Any) -> datetime:
        return _fromisoformat(value).replace(tzinfo=UTC)

    def text_time(self, value: Any) -> str | None:
        if value is None:
            return None
        if len(value) == 26 and value[10] == " ":
            if value.endswith(".000000"):
                return f"{value[:10]}T{value[11:19]}Z"
            return f"{value[:10]}T{value[11:]}Z"
        return _iso(self.time(value))

    def document(self, value: Any) -> Any:
        """The stored JSON text, written into the page as it is (orjson.Fragment): parsing it
        only to print it again was a third of a page's rendering. Python's json module (which
        stored it on SQLite) writes NaN and Infinity, which are not JSON: such a document is
        parsed, and the page says null, as for a parsed one."""
        if not isinstance(value, str):
            return value
        if value == "null":
            return None
        if "NaN" in value or "Infinity" in value:
            return pydantic_core.from_json(value, allow_inf_nan=True)
        return _Fragment(value)

    def parsed_document(self, value: Any) -> Any:
        if isinstance(value, str | bytes):
            return pydantic_core.from_json(value, allow_inf_nan=True)
        return value


class SQLiteValues(RowValues):
    """SQLite stores UUIDs as 32 hex digits."""

    def text_id(self, value: Any) -> str:
        h = value
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def uuid(self, value: Any) -> uuid.UUID:
        return uuid.UUID(hex=value)


def row_values(dialect: str) -> RowValues:
    return SQLiteValues() if dialect == "sqlite" else RowValues()


def position(row: Sequence[Any], values: RowValues) -> Position:
    """The keyset position of an untyped row of COLUMNS (for the next page's cursor)."""
    return Position(values.time(row[_CREATED_AT]), values.uuid(row[_ID]))


def sort_key(row: Sequence[Any]) -> tuple[Any, Any]:
    """(created_at, id) of an untyped row: raw values sort as the typed ones do (SQLite's
    stored times are fixed-width text, its ids fixed-width hex)."""
    return row[_CREATED_AT], row[_ID]


def run_ids(rows: Sequence[Sequence[Any]], values: RowValues) -> list[uuid.UUID]:
    seen: dict[Any, uuid.UUID] = {}
    for row in rows:
        if row[_RUN_ID] not in seen:
            seen[row[_RUN_ID]] = values.uuid(row[_RUN_ID])
    return list(seen.values())


# The columns a list page reads, in this order (the query adds the adopted flag last).
COLUMNS = (
    "id",
    "run_id",
    "step_id",
    "flow_slug",
    "batch_id",
    "batch_index",
    "source",
    "status",
    "prompt",
    "params",
    "temperature",
    "seed",
    "provider",
    "model",
    "provider_request_id",
    "object_key",
    "mime",
    "width",
    "height",
    "size_bytes",
    "sha256",
    "output",
    "error_code",
    "error_message",
    "attempts",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "deleted_at",
)
_ID, _RUN_ID, _CREATED_AT = (COLUMNS.index(name) for name in ("id", "run_id", "created_at"))


def render_page(
    rows: Sequence[Sequence[Any]],
    *,
    values: RowValues,
    context: RunContext,
    trash_days: int,
    next_cursor: str | None,
    documents_as_stored: bool = True,
) -> bytes:
    """`{"items": [...], "next_cursor": ...}` for untyped rows of COLUMNS + the adopted flag.

    Stored JSON documents (params, output) go in as the database wrote them, spacing and all;
    with `documents_as_stored=False` they are parsed and written again (compact)."""
    try:
        if not documents_as_stored:
            raise orjson.JSONEncodeError
        return orjson.dumps(_page(rows, values, values.document, context, trash_days, next_cursor))
    except orjson.JSONEncodeError:
        # orjson stops at 64-bit integers; a document may hold a bigger one.
        page = _page(rows, values, values.parsed_document, context, trash_days, next_cursor)
        return pydantic_core.to_json(page, inf_nan_mode="null")


def _page(
    rows: Sequence[Sequence[Any]],
    values: RowValues,
    document: Callable[[Any], Any],
    context: RunContext,
    trash_days: int,
    next_cursor: str | None,
) -> dict[str, Any]:
    text_id: Callable[[Any], str] = values.text_id
    text_time = values.text_time
    to_uuid = values.uuid
    by_run: dict[Any, tuple[str | None, str | None, dict[str, str]]] = {}
    items = []
    for (
        generation_id,
        run_id,
        step_id,
        flow_slug,
        batch_id,
        batch_index,
        source,
        status,
        prompt,
        params,
        temperature,
        seed,
        provider,
        model,
        provider_request_id,
        object_key,
        mime,
        width,
        height,
        size_bytes,
        sha256,
        output,
        error_code,
        error_message,
        attempts,
        created_at,
        started_at,
        finished_at,
        updated_at,
        deleted_at,
        adopted,
    ) in rows:
        item_id = text_id(generation_id)
        run = by_run.get(run_id)
        if run is None:  # a page has few runs: one UUID conversion each
            run = by_run[run_id] = context.get(to_uuid(run_id), _NO_CONTEXT)
        title, flow_title, step_titles = run
        asset = None
        if object_key and status == "succeeded":
            asset = asset_values(
                item_id,
                object_key=object_key,
                mime=mime,
                width=width,
                height=height,
                size_bytes=size_bytes,
                sha256=sha256,
            )
        purge_after = None
        if deleted_at is not None:
            purge_after = _iso(values.time(deleted_at) + timedelta(days=trash_days))
        items.append(
            {
                "id": item_id,
                "run_id": text_id(run_id),
                "step_id": step_id,
                "flow": flow_slug,
                "batch_id": text_id(batch_id),
                "batch_index": batch_index,
                "source": source,
                "status": status,
                "prompt": prompt,
                "params": document(params),
                "temperature": temperature,
                "seed": seed,
                "provider": provider,
                "model": model,
                "provider_request_id": provider_request_id,
                "error": error_values(error_code, error_message),
                "asset": asset,
                "output": document(output) or {},
                "attempts": attempts,
                "adopted": bool(adopted),
                "created_at": text_time(created_at),
                "started_at": text_time(started_at),
                "finished_at": text_time(finished_at),
                "updated_at": text_time(updated_at),
                "deleted_at": text_time(deleted_at),
                "run_title": title,
                "step_title": step_titles.get(step_id),
                "flow_title": flow_title,
                "purge_after": purge_after,
            }
        )
    return {"items": items, "next_cursor": next_cursor}
