#!/usr/bin/env bash
# Durable batches over the wire, JSON against the binary format, beside TigerBeetle's own
# benchmark, interleaved on the same cores:
#   bash loadgen/wire_bench.sh TIGERBEETLE_BINARY [seconds] [rounds]
#
# Starts a gateway on a fresh PostgreSQL schema of DATABASE_URL's server (default the local
# one). Each round measures the host's reference (`wrk` on GET /healthz), then TigerBeetle's
# `benchmark --transfer-count=10000000` (one replica, one client, its own temporary data file),
# then kizo-loadgen's ledger-batch (batches of 8189, 10,000 accounts, each run audited) over
# JSON with one client, and over the binary format with one and with four clients (HTTP/1.1,
# one connection each), and prints one line with every figure and the binary batch's p99.
# TigerBeetle is built outside this repository (its build.zig names the Zig it needs).
# Needs the release binaries: cargo build --release -p kizo-gateway -p kizo-loadgen.
set -euo pipefail
tigerbeetle=${1:?the tigerbeetle binary}
seconds=${2:-15}
rounds=${3:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
url=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
key=wire-bench-key-0123456789abcdef0123456789
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port=18675
schema=kizo_wire_bench
PGOPTIONS=--client-min-messages=warning psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null
mkdir -p "$work/data"
KIZO_API_KEY=$key DATABASE_URL=$url KIZO_PG_SCHEMA=$schema KIZO_DATA_DIR="$work/data" \
  "$root/target/release/kizo-gateway" --listen "127.0.0.1:$port" --no-snapshots \
  >"$work/gateway.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

load() { # wire vus -> "transfers/s p99_ms"
  "$root/target/release/kizo-loadgen" --target "http://127.0.0.1:$port" --scenario ledger-batch \
    --vus "$2" --duration "${seconds}s" --batch 8189 --accounts 10000 --api-key "$key" \
    --wire "$1" --json 2>/dev/null >"$work/run.json"
  python3 - "$work/run.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
assert not run["failures"] and not run["audit"]["failures"], (run["failures"], run["audit"]["failures"])
batch = [r for r in run["requests"] if r["kind"] == "batch"][0]
print(f'{run["transfers_per_second"]:.0f} {batch["p99_ms"]:.1f}')
PY
}

for round in $(seq "$rounds"); do
  reference=$(wrk -t2 -c100 -d5s "http://127.0.0.1:$port/healthz" | awk '/Requests\/sec/ {print $2}')
  tb=$(cd "$work" && "$tigerbeetle" benchmark --transfer-count=10000000 2>&1 \
    | awk '/load accepted/ {print $4}')
  read -r json json_p99 <<<"$(load json 1)"
  read -r one one_p99 <<<"$(load binary 1)"
  read -r four four_p99 <<<"$(load binary 4)"
  echo "round $round: reference ${reference}/s; tigerbeetle ${tb} tx/s; kizo json x1 ${json}/s (p99 ${json_p99} ms), binary x1 ${one}/s (p99 ${one_p99} ms), binary x4 ${four}/s (p99 ${four_p99} ms)"
done
