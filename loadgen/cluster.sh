#!/usr/bin/env bash
# Failover of a three-node cluster under wallet load:
#   bash loadgen/cluster.sh [seconds] [partitions]
#
# Builds the release gateway and kizo-loadgen, starts three nodes (kizo-gateway --node-id) on
# a fresh PostgreSQL database (kizo_cluster on DATABASE_ADMIN_URL's server) with the default
# lease (5 s), runs wallet payments between users of every partition through all three,
# kills the second node with SIGKILL half way, makes every payment final, audits, and ends
# with one line:
#   failover: nodes=3 partitions=P acked=N lost=0 doubled=0 takeover_s=X clearing_net=0
# It exits non-zero when the audit finds anything lost or doubled.
set -euo pipefail
seconds=${1:-20}
partitions=${2:-12}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
admin=${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
port=${KIZO_CLUSTER_PORT:-18201}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release -q -p kizo-gateway -p kizo-loadgen --manifest-path "$root/Cargo.toml"
psql "$admin" -q -c "DROP DATABASE IF EXISTS kizo_cluster" -c "CREATE DATABASE kizo_cluster"
export KIZO_API_KEY=cluster-api-key-0123456789abcdef0123456789
export KIZO_ADMIN_API_KEY=cluster-admin-key-0123456789abcdef012345
export KIZO_JWT_SECRET=cluster-jwt-secret-0123456789abcdef01234567
export KIZO_PASSWORD_PEPPER=cluster-pepper-0123456789abcdef0123456789
export KIZO_AUTH_RATE_PER_ADDRESS=1000000 KIZO_METRICS_LISTEN=off KIZO_NO_SNAPSHOTS=true
urls=()
for n in 1 2 3; do
  listen=127.0.0.1:$((port + n - 1))
  mkdir -p "$work/n$n"
  DATABASE_URL="${admin%/*}/kizo_cluster" KIZO_DATA_DIR="$work/n$n" \
    "$root/target/release/kizo-gateway" --node-id "n$n" --partitions "$partitions" --listen "$listen" \
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
nodes=$(IFS=,; echo "${urls[*]}")
"$root/target/release/kizo-loadgen" --cluster "$nodes" --kill "${pids[1]}@${urls[1]}" \
  --vus 16 --duration "${seconds}s" --threads 1
