# Sourced by loadgen/cluster.sh and loadgen/cluster_scale.sh: builds the release binaries, sets
# the secrets every node shares, and starts nodes on a fresh database.
#   start_nodes DATABASE COUNT PARTITIONS PORT [PIN]
# starts COUNT nodes (n1, n2, ...) of a cluster of PARTITIONS on database DATABASE (dropped and
# created again on DATABASE_ADMIN_URL's server), listening from 127.0.0.1:PORT up, each pinned
# to its own core when PIN is `pin`, and waits until they answer; their pids are in `pids`,
# their base URLs in `urls`.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
admin=${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
work=$(mktemp -d)
pids=()
urls=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release -q -p kizo-gateway -p kizo-loadgen --manifest-path "$root/Cargo.toml"
export KIZO_API_KEY=cluster-api-key-0123456789abcdef0123456789
export KIZO_ADMIN_API_KEY=cluster-admin-key-0123456789abcdef012345
export KIZO_JWT_SECRET=cluster-jwt-secret-0123456789abcdef01234567
export KIZO_PASSWORD_PEPPER=cluster-pepper-0123456789abcdef0123456789
export KIZO_AUTH_RATE_PER_ADDRESS=1000000 KIZO_METRICS_LISTEN=off KIZO_NO_SNAPSHOTS=true

start_nodes() {
  local database=$1 count=$2 partitions=$3 port=$4 pin=${5:-} n listen pinning=()
  pids=()
  urls=()
  psql "$admin" -q -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database" 2>/dev/null
  for n in $(seq "$count"); do
    listen=127.0.0.1:$((port + n - 1))
    mkdir -p "$work/n$n"
    pinning=()
    [ "$pin" = pin ] && pinning=(taskset -c $((n - 1)))
    DATABASE_URL="${admin%/*}/$database" KIZO_DATA_DIR="$work/n$n" \
      "${pinning[@]}" "$root/target/release/kizo-gateway" --node-id "n$n" \
      --partitions "$partitions" --listen "$listen" "${node_flags[@]}" >"$work/n$n.log" 2>&1 &
    pids+=($!)
    disown
    urls+=("http://$listen")
  done
  local url
  for url in "${urls[@]}"; do
    for _ in $(seq 200); do
      curl -fs "$url/readyz" >/dev/null && break
      sleep 0.1
    done
  done
}
node_flags=()
