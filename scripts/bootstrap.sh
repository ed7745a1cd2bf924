# Sourced by scripts/serve.sh and scripts/test.sh: makes sure uv exists, then syncs the
# locked environment. Needs only Python 3.11+; uses no Python downloads.
set -euo pipefail
export UV_PYTHON_DOWNLOADS=never
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v uv >/dev/null 2>&1; then
  if [ -x "$ROOT/.uv-bootstrap/bin/uv" ]; then
    PATH="$ROOT/.uv-bootstrap/bin:$PATH"
  else
    # The first interpreter that really runs and is 3.11+ (a version manager's shim may exist
    # for a version that is not installed).
    PYTHON=""
    for candidate in python3.13 python3.12 python3.11 python3; do
      if command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
        PYTHON="$(command -v "$candidate")"
        break
      fi
    done
    if [ -z "$PYTHON" ]; then
      echo "FlowStudio needs Python 3.11 or newer (none was found on PATH)." >&2
      exit 1
    fi
    echo "Installing uv into .uv-bootstrap/ ..." >&2
    if "$PYTHON" -m venv "$ROOT/.uv-bootstrap" >/dev/null 2>&1; then
      "$ROOT/.uv-bootstrap/bin/python" -m pip install --quiet --disable-pip-version-check uv
    else
      # Debian without python3-venv: a user-level install still works.
      "$PYTHON" -m pip install --quiet --user --break-system-packages uv 2>/dev/null \
        || "$PYTHON" -m pip install --quiet --user uv
      mkdir -p "$ROOT/.uv-bootstrap/bin"
      ln -sf "$("$PYTHON" -c 'import site,os;print(os.path.join(site.USER_BASE,"bin","uv"))')" \
        "$ROOT/.uv-bootstrap/bin/uv"
    fi
    PATH="$ROOT/.uv-bootstrap/bin:$PATH"
  fi
fi

uv sync --frozen --quiet "$@"
