#!/usr/bin/env bash
# Runs the whole test suite (SQLite and PostgreSQL, local and S3 storage, Chromium pages).
# PostgreSQL: FLOWSTUDIO_TEST_POSTGRES_URL (default postgres@127.0.0.1:5432); without a
# server its tests skip with a message, except under CI=true where they fail.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
exec uv run --frozen pytest "$@"
