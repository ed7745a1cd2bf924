#!/usr/bin/env bash
# Regenerate docs/screenshots/*.png: the run page, a candidates dialog and the history page at
# desktop (1280x800) and phone (390x844) width, plus a dark-scheme set. Needs Debian's chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
exec uv run python -m tests.web.screenshots "$@"
