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
source "$(dirname "$0")/cluster_nodes.sh"

start_nodes kizo_cluster 3 "$partitions" "${KIZO_CLUSTER_PORT:-18201}"
nodes=$(IFS=,; echo "${urls[*]}")
"$root/target/release/kizo-loadgen" --cluster "$nodes" --kill "${pids[1]}@${urls[1]}" \
  --vus 16 --duration "${seconds}s" --threads 1
