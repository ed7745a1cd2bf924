#!/usr/bin/env bash
# Runs the whole test suite (SQLite and PostgreSQL, local and S3 storage, Chromium pages).
# PostgreSQL: FLOWSTUDIO_TEST_POSTGRES_URL (default postgres@127.0.0.1:5432); without a
# server its tests skip with a message, except under CI=true where they fail.
# (An explicit argument: without one, `source` would hand the pytest arguments to uv sync.)
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" --dev
exec uv run --frozen pytest "$@"
