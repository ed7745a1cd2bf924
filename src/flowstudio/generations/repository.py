"""SQL for generations: candidate lists, counts, and the queue (claim, lease, finish, recover)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    column,
    func,
    literal_column,
    or_,
    select,
    table,
    text,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy import delete as sa_delete
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import ARRAY, NullType

from flowstudio.db import UTCDateTime, utcnow
from flowstudio.generations import history_json
from flowstudio.generations.models import (
    Generation,
    GenerationStatus,
    ObjectDeletion,
    UserQueue,
)
from flowstudio.i18n.search import Term
from flowstudio.pagination import Position
from flowstudio.runs.models import Run, RunStep

PENDING = GenerationStatus.PENDING.value
RUNNING = GenerationStatus.RUNNING.value


def _adopted_column() -> Any:
    return (RunStep.adopted_generation_id == Generation.id).label("adopted")


def with_adoption(query: Any) -> Any:
    """Add an `adopted` flag to a query over generations (one LEFT JOIN, no extra queries)."""
    return query.add_columns(func.coalesce(_adopted_column(), False)).outerjoin(
        RunStep,
        and_(RunStep.run_id == Generation.run_id, RunStep.step_id == Generation.step_id),
    )


class _StoredText(FunctionElement[Any]):
    """A column read as text, the way SQLite stores it: ids, JSON documents, and times as
    'YYYY-MM-DD HH:MM:SS.ffffff' in UTC. On SQLite that is the column itself; PostgreSQL
    writes its values so (`history_json` then slices them into the API's form), which costs
    it less than handing over typed values for Python to decode and print again."""

    type = NullType()
    inherit_cache = True
    name = "stored_text"


@compiles(_StoredText)
def _stored_text(element: _StoredText, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses.clauses[0], **kw)


@compiles(_StoredText, "postgresql")
def _stored_text_postgres(element: _StoredText, compiler: Any, **kw: Any) -> str:
    column = element.clauses.clauses[0]
    sql = compiler.process(column, **kw)
    if isinstance(column.type, UTCDateTime):
        return f"to_char(timezone('UTC', {sql}), 'YYYY-MM-DD HH24:MI:SS.US')"
    return f"CAST({sql} AS TEXT)"


_TEXT_COLUMNS = {"id", "run_id", "batch_id", "params", "output"} | {
    column.name for column in Generation.__table__.c if isinstance(column.type, UTCDateTime)
}

# What a history item shows, read as plain untyped rows: values come back as the driver gives
# them (ids, times and documents as text, see _StoredText), and history_json writes them
# straight into the page's JSON. Typed loading (UUIDs, datetimes, parsed JSON, the ORM's
# identity map) cost more than the query itself. Rows answer to Generation's attribute names.
_ITEM_COLUMNS = tuple(
    (
        _StoredText(Generation.__table__.c[name])
        if name in _TEXT_COLUMNS
        else type_coerce(Generation.__table__.c[name], NullType())
    ).label(name)
    for name in history_json.COLUMNS
)


def _item_rows() -> Any:
    return with_adoption(select(*_ITEM_COLUMNS))


async def get_owned(
    db: AsyncSession,
    *,
    user_id: uuid.UUID,
    generation_id: uuid.UUID,
    include_deleted: bool = False,
) -> tuple[Generation, bool] | None:
    query = with_adoption(select(Generation)).where(
        Generation.id == generation_id, Generation.user_id == user_id
    )
    if not include_deleted:
        query = query.where(Generation.deleted_at.is_(None))
    row = (await db.execute(query.execution_options(populate_existing=True))).first()
    return (row[0], bool(row[1])) if row else None


async def get_many_with_adoption(
    db: AsyncSession, generation_ids: Sequence[uuid.UUID]
) -> list[tuple[Generation, bool]]:
    if not generation_ids:
        return []
    rows = await db.execute(
        with_adoption(select(Generation))
        .where(Generation.id.in_(generation_ids))
        .execution_options(populate_existing=True)
    )
    by_id = {row[0].id: (row[0], bool(row[1])) for row in rows}
    return [by_id[i] for i in generation_ids if i in by_id]


async def by_idempotency_key(db: AsyncSession, *, user_id: uuid.UUID, key: str) -> list[Generation]:
    return list(
        await db.scalars(
            select(Generation)
            .where(Generation.user_id == user_id, Generation.idempotency_key == key)
            .order_by(Generation.batch_index)
        )
    )


async def find_by_object_key(
    db: AsyncSession, *, run_id: uuid.UUID, step_id: str, object_key: str
) -> Generation | None:
    return await db.scalar(
        select(Generation).where(
            Generation.run_id == run_id,
            Generation.step_id == step_id,
            Generation.object_key == object_key,
        )
    )


async def list_step_candidates(
    db: AsyncSession,
    *,
    run_id: uuid.UUID,
    step_id: str,
    statuses: Sequence[str],
    after: Position | None,
    limit: int,
) -> list[tuple[Generation, bool]]:
    query = with_adoption(select(Generation)).where(
        Generation.run_id == run_id,
        Generation.step_id == step_id,
        Generation.deleted_at.is_(None),
    )
    if statuses:
        query = query.where(Generation.status.in_(statuses))
    if after is not None:
        query = query.where(
            tuple_(Generation.created_at, Generation.id) < tuple_(after.created_at, after.id)
        )
    query = query.order_by(Generation.created_at.desc(), Generation.id.desc()).limit(limit)
    return [(row[0], bool(row[1])) for row in await db.execute(query)]


async def status_counts(
    db: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[tuple[uuid.UUID, str], dict[str, int]]:
    """Live candidates per (run, step) and status, for many runs in one query."""
    if not run_ids:
        return {}
    rows = await db.execute(
        select(Generation.run_id, Generation.step_id, Generation.status, func.count())
        .where(Generation.run_id.in_(run_ids), Generation.deleted_at.is_(None))
        .group_by(Generation.run_id, Generation.step_id, Generation.status)
    )
    counts: dict[tuple[uuid.UUID, str], dict[str, int]] = {}
    for run_id, step_id, status, count in rows:
        counts.setdefault((run_id, step_id), {})[status] = count
    return counts


async def get_by_ids(db: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Generation]:
    if not ids:
        return []
    query = select(Generation).where(Generation.id.in_(ids))
    return list(await db.scalars(query.execution_options(populate_existing=True)))


# -- the queue -------------------------------------------------------------------------------

# One round of the queue: each of up to :limit users with due work and a free slot, in the
# order they were last served, gets its oldest due row. The users come from user_queues'
# ready index, their rows from ix_generations_pending (one seek each), so a round reads about
# as many index entries as it claims, at any depth. The trigger on the update moves each
# served user to the back of the round (migration 0005).
_CLAIM_ROUND_SQL = """
UPDATE generations
SET status = 'running', lease_owner = :owner, lease_expires_at = :lease_until,
    attempts = attempts + 1, started_at = coalesce(started_at, :now), updated_at = :now
WHERE id IN (
    SELECT (SELECT g.id FROM generations g
            WHERE g.user_id = turn.user_id AND g.status = 'pending'
              AND g.next_attempt_at <= :now
            ORDER BY g.next_attempt_at, g.id LIMIT 1 {lock})
    FROM (SELECT user_id FROM user_queues
          WHERE next_due_at IS NOT NULL AND next_due_at <= :now AND running < :per_user
          ORDER BY served_at, user_id LIMIT :limit
          {lock}) AS turn
) AND status = 'pending'
RETURNING {columns}
"""


@functools.cache
def _claim_round(dialect: str) -> Any:
    # PostgreSQL: a claimer locks the users it serves, and concurrent claimers skip them, so
    # a user's running count cannot be read by two claimers at once (the per-user cap holds).
    # It skips locked rows too: a claim never waits for anything. Every other writer locks a
    # generation first and then (in the trigger) its user's queue row; a claim that waited for
    # a generation while holding the user's row would close that circle (a purge of a pending
    # row deadlocked with it). SQLite: claims run inside BEGIN IMMEDIATE, one at a time.
    lock = "FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    columns = Generation.__table__.c
    # The claimed rows come back whole: no second statement inside the write lock.
    returning = ", ".join(f"generations.{c.name}" for c in columns)
    statement = (
        text(_CLAIM_ROUND_SQL.format(lock=lock, columns=returning))
        .bindparams(
            bindparam("now", type_=UTCDateTime()),
            bindparam("lease_until", type_=UTCDateTime()),
        )
        .columns(*columns)
    )
    return select(Generation).from_statement(statement).execution_options(populate_existing=True)


async def claim_pending(
    db: AsyncSession,
    *,
    owner: str,
    limit: int,
    per_user: int,
    now: datetime,
    lease: timedelta,
) -> list[Generation]:
    """Claim up to `limit` due pending rows, round-robin between users, never more than
    `per_user` running for one user.

    Each round is one atomic statement that takes at most one row per user; rounds repeat
    (in the caller's transaction) until `limit` rows are claimed or a round finds nothing, so
    a user with one due row is served in the first round whatever the others have queued.
    Rows come back in the order they were claimed."""
    statement = _claim_round(db.get_bind().dialect.name)
    params = {"now": now, "lease_until": now + lease, "owner": owner, "per_user": per_user}
    claimed: list[Generation] = []
    while len(claimed) < limit:
        batch = list(
            (await db.execute(statement, {**params, "limit": limit - len(claimed)})).scalars()
        )
        if not batch:
            break
        claimed.extend(sorted(batch, key=lambda g: (g.next_attempt_at, g.id)))
    return claimed


async def run_and_pending(
    db: AsyncSession, *, user_id: uuid.UUID, run_id: uuid.UUID, count_pending: bool
) -> tuple[Run | None, int]:
    """The user's live run and, when `count_pending`, how many of the user's generations wait
    in the queue, in one statement (one round trip; on D1 one request). On PostgreSQL the
    user's queue row stays locked to the end of the transaction (``FOR UPDATE`` in the
    sub-select), so concurrent generates of one user count one after the other."""
    columns: list[Any] = [Run]
    if count_pending:
        pending = select(UserQueue.pending).where(UserQueue.user_id == user_id)
        if db.get_bind().dialect.name == "postgresql":
            pending = pending.with_for_update()
        columns.append(pending.scalar_subquery())
    query = select(*columns).where(
        Run.id == run_id, Run.user_id == user_id, Run.deleted_at.is_(None)
    )
    row = (await db.execute(query)).first()
    if row is None:
        return None, 0
    return row[0], (row[1] or 0) if count_pending else 0


ADMISSION_CHECK = "ck_user_queues_admission"


async def admit(db: AsyncSession, *, user_id: uuid.UUID, limit: int) -> None:
    """The last write of a unit that queued generations: with the user now past `limit`
    pending, it fails the queue row's CHECK (`ADMISSION_CHECK`), which undoes the whole unit.
    The count it reads holds this unit's rows and every committed unit's, so concurrent
    requests never overshoot (PostgreSQL: the row is locked by the insert trigger, and the
    update re-reads it once the lock is free; SQLite and D1: one writer at a time). On D1 it
    travels in the unit's one batch."""
    await db.execute(
        update(UserQueue)
        .where(UserQueue.user_id == user_id, UserQueue.pending > limit)
        .values(refused=1)
        .execution_options(synchronize_session=False)
    )


def refused_admission(exc: BaseException) -> bool:
    """Whether a failed statement or commit is `admit` turning a unit away."""
    return ADMISSION_CHECK in str(getattr(exc, "orig", None) or exc)


async def extend_leases(
    db: AsyncSession, *, owner: str, ids: Sequence[uuid.UUID], until: datetime
) -> set[uuid.UUID]:
    """Heartbeat: extend our leases; returns the ids we still hold."""
    if not ids:
        return set()
    result = await db.execute(
        update(Generation)
        .where(
            Generation.id.in_(ids), Generation.lease_owner == owner, Generation.status == RUNNING
        )
        .values(lease_expires_at=until)
        .returning(Generation.id)
    )
    return set(result.scalars())


async def update_if_leased(
    db: AsyncSession, *, generation_id: uuid.UUID, owner: str, values: dict[str, Any]
) -> Generation | None:
    """Apply `values` only while the row is running under our lease; None if we lost it."""
    result = await db.execute(
        update(Generation)
        .where(
            Generation.id == generation_id,
            Generation.lease_owner == owner,
            Generation.status == RUNNING,
        )
        .values(**values)
        .returning(Generation.id)
    )
    if result.scalar() is None:
        return None
    return await db.get(Generation, generation_id, populate_existing=True)


async def expired_leases(db: AsyncSession, *, now: datetime, limit: int = 100) -> list[Generation]:
    query = (
        select(Generation)
        .where(Generation.status == RUNNING, Generation.lease_expires_at < now)
        .order_by(Generation.lease_expires_at)
        .limit(limit)
    )
    if db.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    # Changed in user order: each change locks the user's queue row (migration 0005), and two
    # recoveries that took them in different orders could deadlock.
    return sorted(await db.scalars(query), key=lambda g: (g.user_id, g.id))


async def update_row(db: AsyncSession, generation: Generation, values: dict[str, Any]) -> None:
    for key, value in values.items():
        setattr(generation, key, value)
    await db.flush()


async def live_generations_of_run(db: AsyncSession, run_id: uuid.UUID) -> list[Generation]:
    return list(
        await db.scalars(
            select(Generation).where(Generation.run_id == run_id, Generation.deleted_at.is_(None))
        )
    )


# -- history ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryFilters:
    flow: str | None = None
    run_id: uuid.UUID | None = None
    step_id: str | None = None
    statuses: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    adopted: bool | None = None
    terms: tuple[Term, ...] = ()
    deleted: bool = False


def _postgres_tsquery(terms: Sequence[Term], user_id: uuid.UUID) -> str:
    """Every term's tokens as the user's lexemes (`<user id hex>/token`, migration 0009), as
    tsquery input (the tokens are letters and digits only, quoted as they are: nothing in them
    is tsquery syntax); a word or lone CJK character as a prefix. `prompt_tsv` has no
    positions, so a CJK run's bigrams are only required here; that they stand in a row is
    checked by `_postgres_phrases`."""
    owner = f"{user_id.hex}/"
    parts = []
    for term in terms:
        if term.prefix:
            parts.append(f"'{owner}{term.tokens[0]}':*")
        else:
            parts.extend(f"'{owner}{token}'" for token in term.tokens)
    return " & ".join(parts)


def _postgres_phrases(terms: Sequence[Term]) -> list[str]:
    """LIKE patterns over ' ' || search_text || ' ': the bigrams of each CJK run of three or
    more characters, in a row (a two-character run is one token: the tsquery is exact). None
    when there is nothing to check: the statement then has no such condition, which would
    only mislead the planner's row estimate."""
    return ["% " + " ".join(t.tokens) + " %" for t in terms if len(t.tokens) > 1]


# The query is rendered as a literal: with a bind parameter, asyncpg's prepared statement soon
# gets PostgreSQL's generic plan, which cannot tell a common word from a rare one and scans
# every match of a heavy user (1.5 s instead of 2 ms on a 1M-row history).
_POSTGRES_SEARCH = text("generations.prompt_tsv @@ CAST(:tsquery AS tsquery)").bindparams(
    bindparam("tsquery", type_=String(), literal_execute=True)
)
_POSTGRES_PHRASES = text("(' ' || generations.search_text || ' ') LIKE ALL (:phrases)").bindparams(
    bindparam("phrases", type_=ARRAY(String()))
)


@dataclass(frozen=True)
class _Shape:
    """Which filters a history query has (not their values): one statement per shape."""

    deleted: bool
    flow: bool
    run_id: bool
    step_id: bool
    statuses: bool
    since: bool
    until: bool
    adopted: bool | None
    after: bool

    @property
    def narrowed(self) -> bool:
        """Whether a filter other than live-or-trash applies."""
        flags = (self.flow, self.run_id, self.step_id, self.statuses, self.since, self.until)
        return any(flags) or self.adopted is not None


def _shape(filters: HistoryFilters, after: Position | None) -> _Shape:
    return _Shape(
        deleted=filters.deleted,
        flow=bool(filters.flow),
        run_id=filters.run_id is not None,
        step_id=bool(filters.step_id),
        statuses=bool(filters.statuses),
        since=filters.since is not None,
        until=filters.until is not None,
        adopted=filters.adopted,
        after=after is not None,
    )


def _history_params(filters: HistoryFilters, after: Position | None) -> dict[str, Any]:
    """The values for the bind parameters of _history_conditions."""
    params: dict[str, Any] = {
        "flow": filters.flow,
        "run_id": filters.run_id,
        "step_id": filters.step_id,
        "statuses": list(filters.statuses),
        "since": filters.since,
        "until": filters.until,
    }
    if after is not None:
        params["after_created_at"] = after.created_at
        params["after_id"] = after.id
    return {k: v for k, v in params.items() if v is not None and v != []}


def _history_conditions(shape: _Shape) -> list[Any]:
    """The WHERE conditions of a history query of this shape, with named bind parameters."""
    conditions: list[Any] = [
        Generation.deleted_at.is_not(None) if shape.deleted else Generation.deleted_at.is_(None)
    ]
    if shape.flow:
        conditions.append(Generation.flow_slug == bindparam("flow"))
    if shape.run_id:
        conditions.append(Generation.run_id == bindparam("run_id"))
    if shape.step_id:
        conditions.append(Generation.step_id == bindparam("step_id"))
    if shape.statuses:
        conditions.append(Generation.status.in_(bindparam("statuses", expanding=True)))
    if shape.since:
        conditions.append(Generation.created_at >= bindparam("since"))
    if shape.until:
        conditions.append(Generation.created_at < bindparam("until"))
    if shape.adopted is True:
        conditions.append(RunStep.adopted_generation_id == Generation.id)
    elif shape.adopted is False:
        conditions.append(
            or_(
                RunStep.adopted_generation_id.is_(None),
                RunStep.adopted_generation_id != Generation.id,
            )
        )
    if shape.after:
        conditions.append(
            tuple_(Generation.created_at, Generation.id)
            < tuple_(
                bindparam("after_created_at", type_=UTCDateTime()),
                bindparam("after_id", type_=Generation.__table__.c.id.type),
            )
        )
    return conditions


@functools.lru_cache(maxsize=512)
def _history_statement(shape: _Shape, search: bool, phrases: bool = False) -> Any:
    """Built once per shape: building the statement cost a sixth of a cached page."""
    conditions = _history_conditions(shape)
    owner = bindparam("user_id", type_=Generation.__table__.c.user_id.type)
    if search:
        conditions.append(_POSTGRES_SEARCH)
        # A literal too: a prepared statement's generic plan takes the owner for an average
        # user and intersects a rare word's matches with the owner's whole history (30 ms for a
        # 200,000-row user); knowing the owner, the plan reads the word's matches alone.
        owner = bindparam(
            "user_id", type_=Generation.__table__.c.user_id.type, literal_execute=True
        )
    if phrases:
        conditions.append(_POSTGRES_PHRASES)
    newest_first = (Generation.created_at.desc(), Generation.id.desc())
    if not search:
        return (
            _item_rows()
            .where(Generation.user_id == owner, *conditions)
            .order_by(*newest_first)
            .limit(bindparam("limit"))
        )
    # A rare word's matches are sorted before the page is read: ids and times only, so a few
    # thousand matches sort in a few hundred kilobytes (whole rows took megabytes, and the
    # planner added a parallel worker whose start cost more than the sort).
    page = (
        select(Generation.id)
        .where(Generation.user_id == owner, *conditions)
        .order_by(*newest_first)
        .limit(bindparam("limit"))
        .subquery("page")
    )
    return _item_rows().join(page, page.c.id == Generation.id).order_by(*newest_first)


def history_rows(
    connection: Connection,
    *,
    user_id: uuid.UUID,
    filters: HistoryFilters,
    after: Position | None,
    limit: int,
) -> list[Row[Any]]:
    """Up to `limit` untyped item rows (history_json.COLUMNS + the adopted flag), newest first.

    A synchronous unit of Core statements, run whole through `db.Reads`: on SQLite in one
    hand-off to a reader thread, on PostgreSQL through the async engine."""
    shape = _shape(filters, after)
    params = _history_params(filters, after)
    if filters.terms and connection.dialect.name == "sqlite":
        return _sqlite_search_rows(
            connection,
            shape,
            params,
            user_id=user_id,
            terms=filters.terms,
            after=after,
            limit=limit,
        )
    phrases = _postgres_phrases(filters.terms)
    if filters.terms:
        params["tsquery"] = _postgres_tsquery(filters.terms, user_id)
    if phrases:
        params["phrases"] = phrases
    query = _history_statement(shape, bool(filters.terms), bool(phrases))
    return connection.execute(query, {**params, "user_id": user_id, "limit": limit}).all()


_FTS_BATCH = 500

# A prefix is searched through its terms (migration 0004) up to this many. Each term costs an
# index lookup (about 0.1 ms on a 1M-row history: 70 terms 9 ms where "s"* took 350 ms); past
# the cap FTS5's own prefix query is used, whose cost follows the matches of all users instead.
MAX_PREFIX_TERMS = 100


_PREFIX_TERMS = text(
    "SELECT term FROM generations_fts_terms WHERE term >= :word AND term < :upper "
    "ORDER BY term LIMIT :n"
)


def _prefix_terms(connection: Connection, word: str) -> list[str] | None:
    """The indexed prompt tokens starting with `word`, or None when there are too many. (The
    FTS5 tokenizer, `ascii`, reads every token of `search_text` as itself.)"""
    # Every string that starts with the word sorts in [word, the word with its last character
    # incremented); SQLite compares UTF-8 text in code point order.
    upper = word[:-1] + chr(ord(word[-1]) + 1)
    terms = list(
        connection.execute(
            _PREFIX_TERMS, {"word": word, "upper": upper, "n": MAX_PREFIX_TERMS + 1}
        ).scalars()
    )
    return None if len(terms) > MAX_PREFIX_TERMS else terms


def _sqlite_term_match(connection: Connection, term: Term) -> str:
    """The FTS5 expression for one search term (tokens are letters and digits: no quoting).

    A CJK run is the phrase of its bigrams. A word matches as a prefix of prompt tokens: FTS5
    answers `"w"*` by merging the doclists of every term starting with w, over all users,
    before the first row, while exact terms are read lazily and stop at the page; so the prefix
    is spelled out as its terms when there are few. The word itself is always one of them: a
    word typed in full is found even if the term table were to miss it."""
    if not term.prefix:
        return 'prompt : "' + " ".join(term.tokens) + '"'
    [word] = term.tokens
    terms = _prefix_terms(connection, word)
    if terms is None:
        return f'prompt : "{word}"*'
    alternatives = " OR ".join(f'"{t}"' for t in dict.fromkeys([word, *terms]))
    return f"prompt : ({alternatives})"


@functools.lru_cache(maxsize=256)
def _sqlite_search_statement(shape: _Shape) -> Any:
    """One batch of a user's FTS matches, newest first, as full untyped item rows with the FTS
    rowid and whether the row passes the other filters. Built once per filter shape."""
    # "+user_id" keeps SQLite from answering this from the (covering) history index by walking
    # the user's whole history; the ids are probed by primary key instead.
    unindexed_owner = literal_column(
        "+generations.user_id", type_=Generation.__table__.c.user_id.type
    )
    search = table("generation_search", column("rowid", Integer), column("generation_id"))
    # The other filters are computed per match rather than applied, so that one statement
    # tells which matches pass and how far the batch reached (NULL, as in WHERE, fails).
    passes = func.coalesce(
        and_(unindexed_owner == bindparam("user_id"), *_history_conditions(shape)), False
    )
    # Below the previous batch, else below the cursor's row, else from the newest match.
    below = func.coalesce(
        bindparam("below", type_=Integer),
        select(search.c.rowid)
        .where(search.c.generation_id == bindparam("after_key", type_=String()))
        .scalar_subquery(),
        2**62,
    )
    fts = (
        select(literal_column("rowid", Integer).label("rowid"))
        .select_from(text("generations_fts"))
        .where(text("generations_fts MATCH :match"), literal_column("rowid") < below)
    )
    # Alone in its subquery, FTS5 walks its index newest first and stops at the limit.
    batch = fts.order_by(literal_column("rowid").desc()).limit(bindparam("size")).subquery("b")
    return (
        _item_rows()
        .add_columns(search.c.rowid, passes)
        .select_from(
            batch.join(search, search.c.rowid == batch.c.rowid).join(
                Generation, Generation.id == search.c.generation_id
            )
        )
        .order_by(search.c.rowid.desc())
    )


def _sqlite_search_rows(
    connection: Connection,
    shape: _Shape,
    params: dict[str, Any],
    *,
    user_id: uuid.UUID,
    terms: Sequence[Term],
    after: Position | None,
    limit: int,
) -> list[Row[Any]]:
    """Walk the user's FTS matches newest first (FTS rowids grow with insertion, which is
    created_at order on SQLite's single writer) and apply the other filters batch by batch,
    so a page costs a few index probes however many rows match overall. The batches carry
    the full rows: no statement after them."""
    match = f'owner : "u{user_id.hex}" AND ' + " AND ".join(
        [_sqlite_term_match(connection, term) for term in terms]
    )
    statement = _sqlite_search_statement(shape)
    found: list[Any] = []
    # The first batch is about a page: with no other filter than the trash's, nearly every
    # match passes (a few spare rows cover trashed ones); with others, twice that. Later
    # batches grow, for filters that drop most matches.
    size = min(_FTS_BATCH, 2 * limit if shape.narrowed else limit + 8)
    below = None
    while True:
        batch = connection.execute(
            statement,
            {
                **params,
                "user_id": user_id,
                "match": match,
                "below": below,
                "after_key": after.id.hex if after is not None else None,
                "size": size,
            },
        ).all()
        found.extend(row[:-2] for row in batch if row[-1])
        if len(found) >= limit or len(batch) < size:
            break
        below = batch[-1][-2]
        size = min(_FTS_BATCH, 4 * size)
    found.sort(key=history_json.sort_key, reverse=True)
    return found[:limit]


def search_index_segments(connection: Connection) -> int:
    """How many b-tree segments SQLite's full-text index holds (1 once fully merged)."""
    return connection.scalar(text("SELECT count(DISTINCT segid) FROM generations_fts_idx"))


def merge_search_index(connection: Connection, *, pages: int) -> bool:
    """One step of FTS5's incremental optimize on SQLite: merge about `pages` pages of the
    full-text index's segments into one. True while there was work to do.

    Every insert adds a small segment and FTS5's automerge keeps only their number in check;
    a search seeks into every segment for every term, and at a keyset cursor that seek is
    most of its cost (0.5 ms with 12 segments against 0.06 ms with one, 200k matches). The
    negative count merges across levels: repeated, it is FTS5's 'optimize', done in short
    write transactions instead of one that holds the write lock for seconds."""
    before = connection.scalar(text("SELECT total_changes()"))
    connection.execute(
        text("INSERT INTO generations_fts(generations_fts, rank) VALUES ('merge', :pages)"),
        {"pages": -abs(pages)},
    )
    return connection.scalar(text("SELECT total_changes()")) - before >= 2


def run_context(
    connection: Connection, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[str, dict[str, Any]]]:
    """Title and flow snapshot of each run (for history items' context)."""
    if not run_ids:
        return {}
    rows = connection.execute(
        select(Run.id, Run.title, Run.flow_snapshot).where(Run.id.in_(set(run_ids)))
    )
    return {run_id: (title, snapshot) for run_id, title, snapshot in rows}


async def owned_by_ids(
    db: AsyncSession, *, user_id: uuid.UUID, ids: Sequence[uuid.UUID], include_deleted: bool
) -> list[Generation]:
    if not ids:
        return []
    query = select(Generation).where(Generation.user_id == user_id, Generation.id.in_(ids))
    if not include_deleted:
        query = query.where(Generation.deleted_at.is_(None))
    return list(await db.scalars(query.execution_options(populate_existing=True)))


async def delete_rows(db: AsyncSession, ids: Sequence[uuid.UUID]) -> list[str]:
    """Delete the rows; returns the object keys they held when they went (a worker may have
    finished one a moment ago: PostgreSQL's DELETE waits for that and sees its keys)."""
    if not ids:
        return []
    result = await db.execute(
        sa_delete(Generation)
        .where(Generation.id.in_(ids))
        .returning(Generation.object_key, Generation.thumbnail_key)
        .execution_options(synchronize_session=False)
    )
    return [key for row in result for key in row if key]


# -- objects that must go ----------------------------------------------------------------------


async def record_object_deletions(db: AsyncSession, keys: Sequence[str]) -> None:
    """Remember keys the store refused to delete (already remembered ones stay as they are)."""
    if not keys:
        return
    if db.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = utcnow()
    await db.execute(
        insert(ObjectDeletion)
        .values([{"key": key, "recorded_at": now} for key in dict.fromkeys(keys)])
        .on_conflict_do_nothing(index_elements=["key"])
    )


async def recorded_object_deletions(db: AsyncSession, *, limit: int) -> list[str]:
    return list(
        await db.scalars(
            select(ObjectDeletion.key).order_by(ObjectDeletion.recorded_at).limit(limit)
        )
    )


async def forget_object_deletions(db: AsyncSession, keys: Sequence[str]) -> None:
    if keys:
        await db.execute(sa_delete(ObjectDeletion).where(ObjectDeletion.key.in_(keys)))
