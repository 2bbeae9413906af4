#!/usr/bin/env bash
# The wallet API under wrk: `bash gateway/benches/wrk/run.sh [seconds] [connections] [requests]`.
#
# Builds the release gateway, serves it on a fresh PostgreSQL database (kizo_wrk, on
# DATABASE_ADMIN_URL's server), signs up, funds and logs in 100 users, then runs wrk with
# 2 threads and 100 connections (by default) for 20 s: every request is an authenticated
# POST /v1/transfers (requests `transfers`, the default) or POST /v1/deposits (`deposits`, through
# the in-process bank) with a new Idempotency-Key. wrk's "Non-2xx" line must be absent. After
# deposits, it waits until every settlement has ended and prints how long that took.
set -euo pipefail
seconds=${1:-20}
connections=${2:-100}
requests=${3:-transfers}
case "$requests" in transfers|deposits) ;; *) echo "the requests are transfers or deposits" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
port=${KIZO_WRK_PORT:-18095}
work=$(mktemp -d)
gateway=
trap 'kill $gateway 2>/dev/null || true; cp "$work/gateway.log" "${TMPDIR:-/tmp}/kizo-wrk-gateway.log"; rm -rf "$work"' EXIT

. "$here/serve.sh"
RUST_LOG=${RUST_LOG:-info} serve_wallet kizo_wrk "$port" \
  KIZO_METRICS_LISTEN=127.0.0.1:$((port + 1)) KIZO_SETTLEMENTS_PER_USER=10000
KIZO_WRK_REQUEST="$requests" wrk -t2 -c"$connections" -d"${seconds}s" --latency \
  -s "$here/wallet.lua" "http://127.0.0.1:$port"
# The log's slow flushes: every request waits for the flush that holds its commit, so a few
# slow ones (the disk's fsync) are enough to set the p99.
curl -fs "http://127.0.0.1:$((port + 1))/metrics" | awk '
  /^kizo_wal_flush_seconds_bucket\{le="0.01"\}/ {fast = $2}
  /^kizo_wal_flush_seconds_bucket\{le="0.1"\}/ {tenth = $2}
  /^kizo_wal_flush_seconds_count/ {all = $2}
  END {printf "log flushes: %d, over 10 ms: %d, over 100 ms: %d\n", all, all - fast, all - tenth}'
if [ "$requests" = deposits ]; then
  started=$(date +%s.%N)
  while :; do
    metrics=$(curl -fs "http://127.0.0.1:$((port + 1))/metrics")
    under_way=$(echo "$metrics" | awk '/^kizo_settlements_(waiting|running) / {s += $2} END {print s + 0}')
    [ "$under_way" = 0 ] && break
    sleep 0.2
  done
  echo "$metrics" | grep '^kizo_settlements{'
  echo "every settlement ended $(echo "$(date +%s.%N) - $started" | bc) s after wrk stopped"
fi
# The host's speed, for comparing figures across days: this VM moves between hosts, and the
# same build's rate moves with it. GET /healthz does no work beyond the shared middleware.
wrk -t2 -c"$connections" -d5s "http://127.0.0.1:$port/healthz" |
  awk '/Requests\/sec/ {printf "reference: GET /healthz %d requests/s\n", $2}'
