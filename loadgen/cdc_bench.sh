#!/usr/bin/env bash
# Batches with and without change events, interleaved, on the same cores:
#   bash loadgen/cdc_bench.sh [seconds] [rounds]
#
# Starts a nats-server with JetStream (its own folder and port) and two gateways on fresh
# PostgreSQL schemas of DATABASE_URL's server (default the local one), one with --nats-url, one
# without; each round loads the one without, then the one with (kizo-loadgen ledger-batch, 4
# clients, batches of 8000, 10,000 accounts, each run audited), waits until its publisher has
# caught up, and prints both commit rates, the events published per second while the load ran,
# how long the events took to be all published, and the host's reference (`wrk` on GET /healthz).
# Needs the release binaries: cargo build --release -p kizo-gateway -p kizo-loadgen.
set -euo pipefail
seconds=${1:-10}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
key=cdc-bench-key-0123456789abcdef0123456789
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

nats_port=${KIZO_NATS_PORT:-14322}
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)

gateway() { # port schema [flags...]
  local port=$1 schema=$2
  shift 2
  PGOPTIONS=--client-min-messages=warning psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null
  mkdir -p "$work/$schema"
  KIZO_API_KEY=$key DATABASE_URL=$url KIZO_PG_SCHEMA=$schema KIZO_DATA_DIR="$work/$schema" \
    "$root/target/release/kizo-gateway" --listen "127.0.0.1:$port" \
    --metrics-listen "127.0.0.1:$((port + 1))" "$@" >"$work/$schema.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && return; sleep 0.1; done
  echo "the gateway on $port did not start" >&2
  exit 1
}
gateway 18655 kizo_cdc_bench_off
gateway 18665 kizo_cdc_bench_on --nats-url "nats://127.0.0.1:$nats_port"

published() { curl -s 127.0.0.1:18666/metrics | awk '/^kizo_cdc_events_published_total/ {print $2}'; }
lag() { curl -s 127.0.0.1:18665/readyz | sed -n 's/.*"lag_commits":\([0-9]*\).*/\1/p'; }
load() { # port
  "$root/target/release/kizo-loadgen" --target "http://127.0.0.1:$1" --scenario ledger-batch \
    --vus 4 --duration "${seconds}s" --batch 8000 --accounts 10000 --api-key "$key" --json \
    2>/dev/null | sed -n 's/.*"transfers_per_second": *\([0-9]*\).*/\1/p'
}

for round in $(seq "$rounds"); do
  reference=$(wrk -t2 -c100 -d5s http://127.0.0.1:18655/healthz | awk '/Requests\/sec/ {print $2}')
  off=$(load 18655)
  before=$(published)
  started=$(date +%s.%N)
  load 18665 >"$work/on" &
  loading=$!
  # Sampled when the load ends (before its audit reads the ledger back).
  sleep "$seconds"
  during=$(published)
  loaded=$(date +%s.%N)
  wait "$loading"
  on=$(cat "$work/on")
  until [ "$(lag)" = "0" ]; do sleep 0.2; done
  done_at=$(date +%s.%N)
  after=$(published)
  echo "round=$round without_cdc=${off}/s with_cdc=${on}/s" \
    "events_per_s_under_load=$(echo "($during - $before) / ($loaded - $started)" | bc)" \
    "events=$(echo "$after - $before" | bc) all_published_after_s=$(echo "$done_at - $started" | bc)" \
    "host_ref=$reference"
done
