#!/usr/bin/env bash
# Payments' latency with and without a read flood beside them:
# `bash gateway/benches/wrk/read_flood.sh [seconds] [rounds] [reads-per-user]`.
#
# Builds the release gateway, serves it on a fresh PostgreSQL database (kizo_wrk_reads), sets
# up 100 users (setup.py), then, `rounds` times, interleaved: payments alone (wrk, 1 thread,
# 50 connections, POST /v1/transfers), and payments with a flood of history reads beside them
# (a second wrk, 1 thread, 50 connections, GET /v1/accounts/{wallet}/transfers?limit=200 by
# the same users). `reads-per-user` is --reads-per-user (default 600 a minute; a large value
# lifts the per-user limit, leaving only the read admission budget between reads and writes).
# Prints each run's payment rate and p99 and the flood's rate and statuses.
set -euo pipefail
seconds=${1:-15}
rounds=${2:-2}
reads_per_user=${3:-600}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
port=${KIZO_WRK_PORT:-18097}
work=$(mktemp -d)
gateway=
trap 'kill $gateway 2>/dev/null || true; rm -rf "$work"' EXIT

. "$here/serve.sh"
serve_wallet kizo_wrk_reads "$port" KIZO_METRICS_LISTEN=off KIZO_READS_PER_USER="$reads_per_user"
payments() {
  KIZO_WRK_REQUEST=transfers wrk -t1 -c50 -d"${seconds}s" --latency -s "$here/wallet.lua" "http://127.0.0.1:$port" >"$work/payments.txt"
  echo "  payments: $(awk '/Requests\/sec/ {print $2}' "$work/payments.txt")/s, p99 $(awk '$1 == "99%" {print $2}' "$work/payments.txt")$(grep -o 'Non-2xx.*' "$work/payments.txt" | sed 's/^/, /')"
}
for round in $(seq "$rounds"); do
  echo "round $round, payments alone:"
  payments
  echo "round $round, payments beside a read flood:"
  KIZO_WRK_READ=history wrk -t1 -c50 -d"${seconds}s" -s "$here/reads.lua" "http://127.0.0.1:$port" >"$work/reads.txt" &
  flood=$!
  payments
  wait $flood
  echo "  reads: $(awk '/Requests\/sec/ {print $2}' "$work/reads.txt")/s$(grep -o 'Non-2xx.*' "$work/reads.txt" | sed 's/^/, /')"
done
