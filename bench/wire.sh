#!/usr/bin/env bash
# Bytes per observation on the wire and in the collector's log (issue 17): a real `blackout-agent` probes AnyIP /24
# blocks in a network namespace and uploads to a real `blackout collector` with a state
# directory, for one round. Then:
#  - the wire as it was: `blackout_upload_bytes_total` (bytes as they arrived, content
#    coding included) over `blackout_observations_ingested_total`;
#  - every candidate encoding over the very batches the collector logged
#    (`blackout wire-sizes`): JSON, JSON + gzip/zstd, postcard rows, compact columns,
#    each with and without compression, and the log's record forms;
#  - the log as written: its segments' bytes over the observations.
# Goals: <= 32 bytes per observation for ICMP block observations as agents send them, and
# <= 32 on disk.
#
# Needs root (namespace, RAW ICMP):
#   cargo build --release --bin blackout-agent --bin blackout && bench/wire.sh
# Knobs (environment): PREFIX (5.0.0.0/12 = 4,096 blocks), ROUND_SECS (10: with the
# default 5 s upload interval, batches of ~2,000 observations; at 4.2M blocks in 600 s
# agents send full batches of `batch_max` = 5,000), MAX_PPS (8000), LOSS_PCT (20: echo
# replies dropped at random by nftables, so that beliefs, verdicts, follow-up probes and
# failures vary as on the Internet instead of every block answering at once; 0 for none),
# AGENT_BIN, BLACKOUT_BIN (target/release/...).
set -euo pipefail
cd "$(dirname "$0")/.."
AGENT_BIN=${AGENT_BIN:-target/release/blackout-agent}
BLACKOUT_BIN=${BLACKOUT_BIN:-target/release/blackout}
PREFIX=${PREFIX:-5.0.0.0/12}
ROUND_SECS=${ROUND_SECS:-10}
MAX_PPS=${MAX_PPS:-8000}
LOSS_PCT=${LOSS_PCT:-20}
PORT=${PORT:-19798}
for b in "$AGENT_BIN" "$BLACKOUT_BIN"; do
  [ -x "$b" ] || { echo "build first: cargo build --release --bin blackout-agent --bin blackout"; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespace, RAW ICMP)"; exit 0; }
command -v ip >/dev/null || { echo "SKIP: iproute2 not installed"; exit 0; }

len=${PREFIX#*/}
BLOCKS=$((1 << (24 - len)))
NS=bo-wire-$$
dir=$(mktemp -d /tmp/bo-wire.XXXXXX)
agent_pid=""; collector_pid=""
cleanup() {
  for p in $agent_pid $collector_pid; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $agent_pid $collector_pid; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" route add local "$PREFIX" dev lo
if [ "$LOSS_PCT" -gt 0 ]; then
  command -v nft >/dev/null || { echo "SKIP: LOSS_PCT needs nftables (or LOSS_PCT=0)"; exit 0; }
  ip netns exec "$NS" nft -f - <<EOF
table inet bo_loss {
  chain out {
    type filter hook output priority 0;
    icmp type echo-reply numgen random mod 100 < $LOSS_PCT drop
  }
}
EOF
fi

mkdir -p "$dir/catalog" "$dir/spool" "$dir/state"
printf 'country = "XA"\nname = "Synthetic XA"\n\n[[icmp]]\nprefix = "%s"\nasn = 64512\n' "$PREFIX" > "$dir/catalog/xa.toml"
token=wire-bench-token
sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
cat > "$dir/collector.toml" <<EOF
listen = "127.0.0.1:$PORT"
catalog = ["$dir/catalog"]
state_dir = "$dir/state"
[[agent]]
id = "wire-1"
token_sha256 = "$sha"
EOF
cat > "$dir/agent.toml" <<EOF
agent_id = "wire-1"
collector_url = "http://127.0.0.1:$PORT"
token = "$token"
spool_dir = "$dir/spool"
round_secs = $ROUND_SECS
max_probes_per_sec = $MAX_PPS
EOF

metric() {
  ip netns exec "$NS" curl -s "http://127.0.0.1:$PORT/metrics" |
    awk -v m="$1" -v l="$2" 'index($0, m "{") == 1 && index($0, l) {s += $2} END {printf "%d\n", s}'
}

ip netns exec "$NS" "$BLACKOUT_BIN" collector --config "$dir/collector.toml" 2> "$dir/collector.log" &
collector_pid=$!
for _ in $(seq 600); do
  ip netns exec "$NS" curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$collector_pid" 2>/dev/null || { cat "$dir/collector.log"; exit 1; }
  sleep 0.2
done
ip netns exec "$NS" "$AGENT_BIN" run --config "$dir/agent.toml" 2> "$dir/agent.log" &
agent_pid=$!
# One whole round: every block observed once.
for _ in $(seq $((ROUND_SECS * 20 + 600))); do
  n=$(metric blackout_observations_ingested_total 'agent="wire-1"')
  [ "$n" -ge "$BLOCKS" ] && break
  kill -0 "$agent_pid" 2>/dev/null || { echo "agent died:"; tail -20 "$dir/agent.log"; exit 1; }
  sleep 0.5
done
kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=""
sleep 1
n=$(metric blackout_observations_ingested_total 'agent="wire-1"')
compact=$(metric blackout_upload_bytes_total 'encoding="compact"')
json=$(metric blackout_upload_bytes_total 'encoding="json"')
kill -TERM "$collector_pid"; wait "$collector_pid" || true; collector_pid=""

echo "wire: $BLOCKS blocks ($PREFIX), one ${ROUND_SECS}s round, ${LOSS_PCT}% of echo replies dropped, $n observations ingested"
echo "as uploaded by the agent: compact $compact bytes, json $json bytes =" \
  "$(echo "scale=1; ($compact + $json) / $n" | bc) bytes per observation (goal <= 32)"
log_bytes=$(cat "$dir"/state/observations-*.jsonl | wc -c)
echo "log on disk: $log_bytes bytes = $(echo "scale=1; $log_bytes / $n" | bc) bytes per observation (goal <= 32)"
echo
"$BLACKOUT_BIN" wire-sizes --log "$dir/state"
