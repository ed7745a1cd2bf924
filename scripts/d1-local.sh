#!/usr/bin/env bash
# Runs a local Cloudflare D1 (workerd via miniflare) answering D1's REST API at http://127.0.0.1:PORT/client/v4, persisted in DIR, in the foreground.
#
# Usage: scripts/d1-local.sh PORT DIR
#   PORT  TCP port on 127.0.0.1 (0 = pick a free one; the real one is printed)
#   DIR   directory holding the D1 database (created if missing; survives restarts)
#
# Prints `d1-local listening on http://127.0.0.1:PORT/client/v4` on stdout once ready.
# Any account id, database id and bearer token are accepted:
#   POST /client/v4/accounts/{any}/d1/database/{any}/query   (rows as objects)
#   POST /client/v4/accounts/{any}/d1/database/{any}/raw     (columns + rows as arrays)
# The pinned miniflare (scripts/d1-local/package-lock.json) is installed with `npm ci` on
# first use, and again whenever the lock file is newer than the installed node_modules.
# Stop it with SIGTERM / SIGINT (Ctrl-C); workerd goes with it.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 PORT DIR" >&2
  exit 2
fi
port=$1
dir=$2

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/d1-local" && pwd)

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "d1-local: '$tool' not found: install Node.js >= 20 with npm (Debian: apt-get install nodejs npm)" >&2
    exit 127
  fi
done

# npm ci writes node_modules/.package-lock.json last; it is missing or older than the lock
# when node_modules has to be (re)installed.
needs_install() {
  [[ ! -f "$here/node_modules/.package-lock.json" ]] ||
    [[ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]]
}

install_deps() {
  echo "d1-local: installing pinned miniflare (npm ci) in $here" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error 1>&2)
}

if needs_install; then
  # Several servers may start at once (parallel tests): one runs npm ci, the others wait.
  lock="$here/.npm-ci.lock"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$lock"
    flock 9
    if needs_install; then install_deps; fi
    flock -u 9
    exec 9>&- # must not stay open in the server (it would hold the lock)
  else
    waited=0
    until mkdir "$lock.d" 2>/dev/null; do
      if ((waited++ > 1500)); then # 5 minutes
        echo "d1-local: another start holds $lock.d (remove it if no npm ci is running)" >&2
        exit 1
      fi
      sleep 0.2
    done
    trap 'rmdir "$lock.d" 2>/dev/null || true' EXIT
    if needs_install; then install_deps; fi
    rmdir "$lock.d"
    trap - EXIT
  fi
fi

exec node "$here/serve.mjs" "$port" "$dir"
