#!/usr/bin/env bash
# One node against two, on the same cores and the same load:
#   bash loadgen/cluster_scale.sh [seconds] [rounds] [partitions]
#
# Each round runs, in turn, a cluster of one node pinned to core 0 and a cluster of two nodes
# pinned to cores 0 and 1 (taskset), each on a fresh PostgreSQL database (kizo_cluster_scale
# on DATABASE_ADMIN_URL's server), under the same wallet load (kizo-loadgen --cluster, $VUS (256)
# clients, payments between users of every partition, no node killed), and prints the
# payments per second of each with the host's reference (`wrk` on GET /healthz). PostgreSQL
# and the load generator run unpinned on the same two cores.
set -euo pipefail
seconds=${1:-15}
rounds=${2:-2}
partitions=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
admin=${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
port=${KIZO_CLUSTER_PORT:-18211}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release -q -p kizo-gateway -p kizo-loadgen --manifest-path "$root/Cargo.toml"
export KIZO_API_KEY=cluster-api-key-0123456789abcdef0123456789
export KIZO_ADMIN_API_KEY=cluster-admin-key-0123456789abcdef012345
export KIZO_JWT_SECRET=cluster-jwt-secret-0123456789abcdef01234567
export KIZO_PASSWORD_PEPPER=cluster-pepper-0123456789abcdef0123456789
export KIZO_AUTH_RATE_PER_ADDRESS=1000000 KIZO_METRICS_LISTEN=off KIZO_NO_SNAPSHOTS=true

run() { # node count
  local count=$1 urls=() n listen
  pids=()
  psql "$admin" -q -c "DROP DATABASE IF EXISTS kizo_cluster_scale" -c "CREATE DATABASE kizo_cluster_scale" 2>/dev/null
  for n in $(seq "$count"); do
    listen=127.0.0.1:$((port + n - 1))
    mkdir -p "$work/n$n"
    DATABASE_URL="${admin%/*}/kizo_cluster_scale" KIZO_DATA_DIR="$work/n$n" \
      taskset -c $((n - 1)) "$root/target/release/kizo-gateway" --node-id "n$n" \
      --partitions "$partitions" --listen "$listen" --worker-threads 1 --shards 1 \
      >"$work/n$n.log" 2>&1 &
    pids+=($!)
    disown
    urls+=("http://$listen")
  done
  for url in "${urls[@]}"; do
    for _ in $(seq 200); do
      curl -fs "$url/readyz" >/dev/null && break
      sleep 0.1
    done
  done
  local reference
  reference=$(wrk -t2 -c100 -d5s "${urls[0]}/healthz" | awk '/Requests\/sec/ {print $2}')
  local nodes
  nodes=$(IFS=,; echo "${urls[*]}")
  "$root/target/release/kizo-loadgen" --cluster "$nodes" --vus "${VUS:-256}" --duration "${seconds}s" \
    --threads 1 2>"$work/loadgen.err" >"$work/loadgen.out"
  local rate
  rate=$(sed -n 's/.*(\([0-9]*\)\/s under load).*/\1/p' "$work/loadgen.err")
  echo "nodes=$count partitions=$partitions payments_per_s=$rate host_ref=$reference $(cat "$work/loadgen.out")"
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  sleep 1
}

for _ in $(seq "$rounds"); do
  run 1
  run 2
done
