# Sourced by the wrk benches: `serve_wallet DATABASE PORT [VAR=value ...]` builds the release
# gateway, serves it on a fresh PostgreSQL database (on DATABASE_ADMIN_URL's server) at PORT
# with the extra environment given, waits until it is ready, and signs up, funds and logs in
# 100 users (setup.py), whose tokens and wallets it leaves in $work/users.lua (exported as
# KIZO_WRK_USERS). Needs $here, $root and $work set, and sets $gateway (the server's pid).
serve_wallet() {
  local database=$1 port=$2
  shift 2
  local admin=${DATABASE_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
  local key=wrk-api-key-0123456789abcdef0123456789
  cargo build --release -q -p kizo-gateway --manifest-path "$root/Cargo.toml"
  psql "$admin" -q -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database"
  env DATABASE_URL="${admin%/*}/$database" KIZO_LISTEN="127.0.0.1:$port" KIZO_DATA_DIR="$work" \
    KIZO_API_KEY=$key KIZO_AUTH_RATE_PER_ADDRESS=100000 KIZO_AUTH_RATE_PER_EMAIL=100000 \
    RUST_LOG="${RUST_LOG:-warn}" "$@" "$root/target/release/kizo-gateway" >"$work/gateway.log" 2>&1 &
  gateway=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
  python3 "$here/setup.py" "http://127.0.0.1:$port" $key 100 "$work/users.lua"
  export KIZO_WRK_USERS="$work/users.lua"
}
