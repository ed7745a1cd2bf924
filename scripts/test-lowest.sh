#!/usr/bin/env bash
# Runs the fast tests against the lowest versions pyproject.toml allows for its direct dependencies.
# The environment is .venv-lowest/, resolved with uv's `lowest-direct` (each direct dependency at
# its floor, everything else at its newest); uv.lock and .venv/ are left alone. Without arguments
# it runs the suite less the Chromium pages and the multi-process reliability tests (about four
# minutes); arguments replace those pytest arguments.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" --dev
# bootstrap.sh has put uv on PATH and moved to the project's root.

VENV="$PWD/.venv-lowest"
REQUIREMENTS="$VENV/requirements-lowest.txt"

uv venv --quiet --allow-existing "$VENV"
uv pip compile --quiet pyproject.toml --group dev --resolution lowest-direct \
  --python "$VENV/bin/python" --no-header --output-file "$REQUIREMENTS"
echo "-e ." >>"$REQUIREMENTS"
uv pip sync --quiet --python "$VENV/bin/python" "$REQUIREMENTS"

# The direct dependencies as installed (the annotations name pyproject.toml as their source).
echo "Lowest direct versions:"
awk '/^[A-Za-z0-9]/ { pin = $1 } /# via flowstudio \(pyproject\.toml|#   flowstudio \(pyproject\.toml/ \
  { if (pin != shown) { printf "  %s", pin; shown = pin } } END { print "" }' "$REQUIREMENTS"

if [ "$#" -eq 0 ]; then
  set -- -m "not browser" --ignore tests/reliability -q
fi
exec "$VENV/bin/python" -m pytest "$@"
