#!/usr/bin/env bash
# Installs what FlowStudio needs, then runs it on http://127.0.0.1:8000 with embedded defaults
# (SQLite + a local object directory under ./flowstudio-data). Extra arguments go to `serve`.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" --no-dev
exec uv run --frozen --no-dev flowstudio serve "$@"
