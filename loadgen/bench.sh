#!/usr/bin/env bash
# Regenerates the load-generator table of docs/benchmarks.md:
#   bash loadgen/bench.sh [seconds per run]
#
# Builds the release gateway and kizo-loadgen, serves the gateway on a fresh PostgreSQL
# database (kizo_loadgen_bench on DATABASE_ADMIN_URL's server), runs each row's scenario for
# the given seconds (default 15), and prints the table as Markdown. Every run is audited; a
# failed audit stops the script.
set -euo pipefail
seconds=${1:-15}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
admin=${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
port=${KIZO_BENCH_PORT:-18097}
work=$(mktemp -d)
trap 'kill $gateway 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release -q -p kizo-gateway -p kizo-loadgen --manifest-path "$root/Cargo.toml"
psql "$admin" -q -c "DROP DATABASE IF EXISTS kizo_loadgen_bench" -c "CREATE DATABASE kizo_loadgen_bench"
export KIZO_API_KEY=bench-api-key-0123456789abcdef0123456789
export DATABASE_URL=$admin
DATABASE_URL="${admin%/*}/kizo_loadgen_bench" KIZO_LISTEN=127.0.0.1:$port KIZO_METRICS_LISTEN=127.0.0.1:$((port + 1)) KIZO_DATA_DIR="$work" \
  KIZO_AUTH_RATE_PER_ADDRESS=1000000 KIZO_AUTH_RATE_PER_EMAIL=1000000 \
  "$root/target/release/kizo-gateway" >"$work/gateway.log" 2>&1 &
gateway=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
  sleep 0.1
done
http=http://127.0.0.1:$port
# Waits until the projector has caught up and PostgreSQL has written its dirty pages
# (CHECKPOINT), so that one run's writes do not land in the next run's figures.
settle() {
  psql "$admin" -q -c CHECKPOINT
  for _ in $(seq 600); do
    lag=$(curl -fs "http://127.0.0.1:$((port + 1))/metrics" | awk '/^kizo_projector_lag_commits/ {print $2}' | head -1)
    [ "${lag:-0}" = "0" ] && return
    sleep 0.5
  done
}
loadgen() { settle; "$root/target/release/kizo-loadgen" --duration "${seconds}s" --json "$@" 2>>"$work/runs.log"; }

row() { # name, json file, [json file of the run to compare p99 with]
  python3 - "$@" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
run = json.load(open(path))
if "kizo" in run:
    k, b = run["kizo"], run["baseline"]
    def main(r):
        return next((s for s in r["requests"] if s["kind"] in ("transfer", "batch", "spend")), r["requests"][0])
    print(f"| {name} | {k['transfers_per_second']:,.0f} vs {b['transfers_per_second']:,.0f} "
          f"| **{run['throughput_ratio']:.1f}×** | {main(k)['p99_ms']:.1f} vs {main(b)['p99_ms']:.1f} ms "
          f"| {'passed' if not k['failures'] and not b['failures'] else 'FAILED'} |")
else:
    parts = [f"{s['kind']} {s['per_second']:,.0f}/s p99 {s['p99_ms']:.1f} ms ({s['success']:.2f}%)" for s in run["requests"]]
    extra = ""
    if len(sys.argv) > 3:
        other = json.load(open(sys.argv[3]))
        p99 = lambda r: next(s["p99_ms"] for s in r["requests"] if s["kind"] == "transfer")
        extra = f"; transfer p99 {p99(run) / p99(other):.2f}× the p99 without logins"
    print(f"| {name} | {run['transfers_per_second']:,.0f} | | {'; '.join(parts)}{extra} "
          f"| {'passed' if not run['failures'] else 'FAILED: ' + '; '.join(run['failures'])} |")
PY
}

loadgen --target "$http" --scenario wallet --vus 100 >"$work/wallet.json"
loadgen --target "$http" --scenario transfers --vus 64 >"$work/http.json"
# The login storm against the same load without logins: three back-to-back pairs, the pair with
# the median ratio of transfer p99 is shown (one pair alone swings with what PostgreSQL does in
# the background, e.g. autovacuum after the runs before).
for pair in 1 2 3; do
  loadgen --target "$http" --scenario transfers --vus 56 >"$work/calm-$pair.json"
  loadgen --target "$http" --scenario login-storm --vus 64 --login-vus 8 >"$work/storm-$pair.json"
done
median=$(python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
p99 = lambda path: next(s["p99_ms"] for s in json.load(open(path))["requests"] if s["kind"] == "transfer")
ratios = sorted((p99(f"{work}/storm-{i}.json") / p99(f"{work}/calm-{i}.json"), i) for i in (1, 2, 3))
print(ratios[1][1])
PY
)
cp "$work/calm-$median.json" "$work/calm.json"
cp "$work/storm-$median.json" "$work/storm.json"
loadgen --target "$http" --scenario double-spend --vus 64 --funded 1000 --accounts 100 >"$work/spend.json"
loadgen --target "$http" --scenario ledger-batch --vus 4 >"$work/batch.json"
loadgen --target engine --scenario transfers --vus 256 >"$work/engine.json"
loadgen --target engine --scenario ledger-batch --vus 8 >"$work/engine-batch.json"
loadgen --target engine --scenario transfers --vus 256 --compare pg-rowlock >"$work/cmp-engine-uniform.json"
loadgen --target engine --scenario transfers --vus 256 --hot 10 --compare pg-rowlock >"$work/cmp-engine-hot.json"
loadgen --target "$http" --scenario transfers --vus 64 --compare pg-rowlock >"$work/cmp-http-uniform.json"
loadgen --target "$http" --scenario transfers --vus 64 --hot 10 --compare pg-rowlock >"$work/cmp-http-hot.json"

echo "| run | transfers/s | | requests | audit |"
echo "|---|---:|---|---|---|"
row "engine in process, transfers, 256 users" "$work/engine.json"
row "engine in process, ledger-batch of 8189, 8 users" "$work/engine-batch.json"
row "HTTP, transfers (one per request), 64 users" "$work/http.json"
row "HTTP, ledger-batch of 8189, 4 users" "$work/batch.json"
row "HTTP, wallet journey, 100 users, 1 s think" "$work/wallet.json"
row "HTTP, transfers, 56 users (no logins)" "$work/calm.json"
row "HTTP, login-storm: 56 transferring + 8 logging in (median of 3 pairs)" "$work/storm.json" "$work/calm.json"
row "HTTP, double-spend: 64 users race for 1000 spends" "$work/spend.json"
echo
echo "| comparison (Kizo vs pg-rowlock, same scenario, same PostgreSQL) | transfers/s | ratio | p99 | audits |"
echo "|---|---:|---:|---|---|"
row "engine in process vs baseline, uniform over 10,000 accounts, 256 users" "$work/cmp-engine-uniform.json"
row "engine in process vs baseline, hot: credits to 10 accounts, 256 users" "$work/cmp-engine-hot.json"
row "HTTP vs baseline, uniform, 64 users" "$work/cmp-http-uniform.json"
row "HTTP vs baseline, hot, 64 users" "$work/cmp-http-hot.json"
