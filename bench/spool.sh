#!/usr/bin/env bash
# Spool bytes per observation, as a real agent writes them while its collector is away.
#
# One agent probes 4,096 /24 blocks (10.0.0.0/12) in a namespace with nothing but
# loopback, where half of them answer (AnyIP local route for 10.0.0.0/13) and half are
# silent: up and down verdicts, block reports, RTTs. Its collector URL points at a closed
# port, so every batch stays in the spool. After ROUNDS rounds the spool is read back by
# `blackout-agent spool --summary`, which prints the bytes on disk against the same
# batches as JSON (the spool's format before 2026-12-08).
#
#   sudo AGENT_BIN=target/release/blackout-agent bench/spool.sh
set -euo pipefail
AGENT_BIN=${AGENT_BIN:-target/release/blackout-agent}
ROUND_SECS=${ROUND_SECS:-15}
ROUNDS=${ROUNDS:-3}
NS=blackout-spool-bench-$$
dir=$(mktemp -d)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" route add local 10.0.0.0/13 dev lo
cat > "$dir/xa.toml" <<CAT
country = "XA"
name = "Synthetic XA"

[[icmp]]
prefix = "10.0.0.0/12"
asn = 64512
CAT
cat > "$dir/agent.toml" <<CFG
agent_id = "spool-bench"
collector_url = "http://127.0.0.1:1"
catalog = ["$dir/xa.toml"]
allow_reserved = true
spool_dir = "$dir/spool"
round_secs = $ROUND_SECS
CFG
ip netns exec "$NS" "$AGENT_BIN" run --config "$dir/agent.toml" 2> "$dir/agent.log" &
pid=$!
sleep $((ROUND_SECS * ROUNDS + 3))
kill -INT "$pid"
wait "$pid" 2>/dev/null || true
pid=
echo "agent: $AGENT_BIN, $ROUNDS rounds of $ROUND_SECS s over 4,096 blocks (half answering)"
"$AGENT_BIN" spool --summary "$dir/spool"
