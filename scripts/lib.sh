# Shared by scripts/run and scripts/test: install what is missing (idempotent,
# fast when everything is present) and start local servers.

SECANTUS_VERSION=0.5.3-beta.196
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_tools() {
  command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
  command -v redis-server >/dev/null || apt_install redis-server
  command -v redis-cli >/dev/null || apt_install redis-tools
  if ! secantusd-rs --version 2>/dev/null | grep -q "$SECANTUS_VERSION"; then
    command -v cmake >/dev/null || apt_install cmake
    log "installing secantusd-rs $SECANTUS_VERSION (MongoDB-wire test server; takes a few minutes once)"
    cargo install secantus-mdb --version "$SECANTUS_VERSION" --ignore-rust-version --locked
  fi
}

# 32 random bytes as hex: a secret for one run.
random_hex() {
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# Fresh secrets for a throwaway server: the JWT secret and the key that
# seals lobby seeds.
export_random_secrets() {
  FLASHDROP_JWT_SECRET=$(random_hex)
  FLASHDROP_SEED_KEY=$(random_hex)
  FLASHDROP_PAYMENT_WEBHOOK_SECRET=$(random_hex)
  export FLASHDROP_JWT_SECRET FLASHDROP_SEED_KEY FLASHDROP_PAYMENT_WEBHOOK_SECRET
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1 what=$2
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$what did not start on port $port" >&2
  exit 1
}

# start_redis DIR -> sets REDIS_URL
start_redis() {
  local dir=$1 port
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
    --daemonize no >"$dir/redis.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" redis-server
  REDIS_URL="redis://127.0.0.1:$port"
}

# start_mongo DIR -> sets MONGODB_URI
start_mongo() {
  local dir=$1 port
  port=$(free_port)
  mkdir -p "$dir/mongo"
  secantusd-rs --host 127.0.0.1 --port "$port" --storage-path "$dir/mongo" >"$dir/mongo.log" 2>&1 &
  PIDS+=($!)
  wait_port "$port" secantusd-rs
  MONGODB_URI="mongodb://127.0.0.1:$port/?directConnection=true"
}

# post_json URL TOKEN BODY FIELD -> prints FIELD of the JSON answer
post_json() {
  curl -fsS -X POST "$1" -H "Authorization: Bearer $2" -H 'content-type: application/json' -d "$3" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$4"
}

# baseline_bin REV -> prints the path of REV's release binary, built once
# in a git worktree under target/.
baseline_bin() {
  local rev tree
  rev=$(git rev-parse --short "$1")
  tree="target/worktrees/$rev"
  if [ ! -x "target/baseline-$rev/release/flashdrop" ]; then
    log "building the baseline $rev in a worktree (minutes, once)"
    [ -d "$tree" ] || git worktree add --force --detach "$tree" "$rev" >/dev/null
    (cd "$tree" && CARGO_TARGET_DIR="$PWD/../../baseline-$rev" cargo build --release --bin flashdrop >&2)
  fi
  echo "target/baseline-$rev/release/flashdrop"
}

PIDS=()
# Stops what was started, newest first (flashdrop before its stores).
stop_started() {
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
