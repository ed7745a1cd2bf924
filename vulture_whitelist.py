"""Names the dead-code check (vulture, configured in pyproject.toml) must count as used.

Each is used where vulture cannot see it; say where when adding one.
"""

# Columns and response fields: read by SQLAlchemy, pydantic and the database, not by name.
token_prefix
running
next_due_at
served_at
thumbnail_url
download_url
run_title
step_title
prompt_template
candidate_counts
ready
waiting_for
adopted_key
generations_deleted
multiline  # a flow input's field, read by the home page template

# sqlite3 connection attribute (autocommit mode: FlowStudio sends BEGIN itself).
isolation_level

# Small read-only views kept for callers outside the request path (the tests use them to
# observe state without reaching into private attributes).
overflowed  # Subscription: how often a slow subscriber was sent `resync`
upstream_of  # FlowDefinition: the steps a step reads from
slugs  # FlowRegistry
current_revision  # migrate: the database's Alembic revision
to_dict  # ProviderError
configured_names  # ProviderRegistry

# db/d1.py: the DB-API (PEP 249) driver and the SQLAlchemy dialect, called by SQLAlchemy by name.
executemany
fetchone
fetchmany
fetchall
lastrowid
_async_soft_close
setinputsizes
setoutputsize
create_function
paramstyle
apilevel
threadsafety
sqlite_version_info
sqlite_version
PARSE_COLNAMES
PARSE_DECLTYPES
Binary
is_async
supports_statement_cache
supports_server_side_cursors
supports_sane_rowcount
supports_sane_multi_rowcount
import_dbapi
get_pool_class
create_connect_args
_get_server_version_info
get_isolation_level
set_isolation_level
get_default_isolation_level
is_disconnect
on_connect
get_driver_connection
rowcount
insertmanyvalues_max_parameters
# Read by the database through FTS5 triggers and the generated tsvector (migration 0009).
search_text
# The definition of a search match the backends are tested against.
matches
# Babel reads these catalogue header fields when it writes a .po file (i18n/extract.py).
header_comment
fuzzy
last_translator
language_team
msgid_bugs_address
copyright_holder
