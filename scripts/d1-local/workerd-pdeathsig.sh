#!/bin/sh
# Starts workerd with a parent-death signal (SIGKILL) so that workerd dies with the d1-local
# node process even when that one is killed with SIGKILL. serve.mjs points miniflare at this
# file (MINIFLARE_WORKERD_PATH) and passes setpriv's and the real binary's paths.
exec "${D1_LOCAL_SETPRIV:-setpriv}" --pdeathsig KILL -- "$D1_LOCAL_WORKERD_BIN" "$@"
