#!/usr/bin/env bash
# One node against two, on the same cores and the same load:
#   bash loadgen/cluster_scale.sh [seconds] [rounds] [partitions]
#
# Each round runs, in turn, a cluster of one node pinned to core 0 and a cluster of two nodes
# pinned to cores 0 and 1 (taskset), each on a fresh PostgreSQL database (kizo_cluster_scale
# on DATABASE_ADMIN_URL's server), under the same wallet load (kizo-loadgen --cluster, $VUS
# clients (256), payments between users of every partition, no node killed), and prints the
# payments per second of each with the host's reference (`wrk` on GET /healthz). PostgreSQL
# and the load generator run unpinned on the same two cores.
set -euo pipefail
seconds=${1:-15}
rounds=${2:-2}
partitions=${3:-2}
source "$(dirname "$0")/cluster_nodes.sh"
node_flags=(--worker-threads 1 --shards 1)

run() { # node count
  local count=$1
  start_nodes kizo_cluster_scale "$count" "$partitions" "${KIZO_CLUSTER_PORT:-18211}" pin
  local reference nodes rate
  reference=$(wrk -t2 -c100 -d5s "${urls[0]}/healthz" | awk '/Requests\/sec/ {print $2}')
  nodes=$(IFS=,; echo "${urls[*]}")
  "$root/target/release/kizo-loadgen" --cluster "$nodes" --vus "${VUS:-256}" \
    --duration "${seconds}s" --threads 1 2>"$work/loadgen.err" >"$work/loadgen.out"
  rate=$(sed -n 's/.*(\([0-9]*\)\/s under load).*/\1/p' "$work/loadgen.err")
  echo "nodes=$count partitions=$partitions payments_per_s=$rate host_ref=$reference $(cat "$work/loadgen.out")"
  kill "${pids[@]}" 2>/dev/null || true
  sleep 1
}

for _ in $(seq "$rounds"); do
  run 1
  run 2
done
