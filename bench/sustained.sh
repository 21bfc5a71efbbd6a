#!/usr/bin/env bash
# Sustained ICMP at the size of the IPv4 /24 space (issue 3): 4,194,304 /24 blocks probed by
# `blackout-agent run` in 600 s rounds (~7,000 probes/s), uploading to `blackout collector`.
# Goal for the agent process: at most 15 % of one core and 1 GiB RSS.
#
# Everything runs in a network namespace whose loopback owns the 64 public /8s of the
# catalog (AnyIP local routes): every address answers ICMP echo from the kernel and no
# packet leaves the namespace (it has no other interface). The agent's reserved-range
# filter stays on: the catalog is public space only.
#
# Needs root (namespaces, RAW ICMP) and a release build:
#   cargo build --release --bin blackout-agent --bin blackout && bench/sustained.sh
# Knobs (environment): SLASH8S (64 = 4,194,304 blocks), ROUND_SECS (600), MAX_PPS (8000),
# CONCURRENCY (512), WARMUP_SECS (60, after start-up), WINDOW_SECS (240, the measured
# window), PROFILE=FILE (perf record -g of the agent over the window into FILE),
# COLLECTOR_LOG=1 (give the collector a state_dir: ~1.5 GB of log per round),
# KEEP_LOGS=DIR (copy the agent's and the collector's logs there).
set -euo pipefail
cd "$(dirname "$0")/.."
AGENT_BIN=${AGENT_BIN:-target/release/blackout-agent}
BLACKOUT_BIN=${BLACKOUT_BIN:-target/release/blackout}
SLASH8S=${SLASH8S:-64}
ROUND_SECS=${ROUND_SECS:-600}
MAX_PPS=${MAX_PPS:-8000}
CONCURRENCY=${CONCURRENCY:-512}
WARMUP_SECS=${WARMUP_SECS:-60}
WINDOW_SECS=${WINDOW_SECS:-240}
STARTUP_MAX_SECS=${STARTUP_MAX_SECS:-600}
COLLECTOR_LOG=${COLLECTOR_LOG:-0}
PORT=19797
for b in "$AGENT_BIN" "$BLACKOUT_BIN"; do
  [ -x "$b" ] || { echo "build first: cargo build --release --bin blackout-agent --bin blackout"; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespace, RAW ICMP)"; exit 0; }
command -v ip >/dev/null || { echo "SKIP: iproute2 not installed"; exit 0; }
[ "$SLASH8S" -ge 1 ] && [ "$SLASH8S" -le 64 ] || { echo "SLASH8S must be 1..64"; exit 1; }

NS=bo-sus-$$
dir=$(mktemp -d /tmp/bo-sustained.XXXXXX)
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

# 64 public /8s: 1-9 and 11-65 (no 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12,
# 192.168/16, 198.18/15, documentation or multicast space among them).
slash8s=$( (seq 1 9; seq 11 65) | awk -v n="$SLASH8S" 'NR <= n')
BLOCKS=$((SLASH8S * 65536))

ip netns add "$NS"
ip -n "$NS" link set lo up
for a in $slash8s; do ip -n "$NS" route add local "$a.0.0.0/8" dev lo; done
ip netns exec "$NS" ping -c 1 -W 1 1.2.3.4 >/dev/null || { echo "AnyIP set-up failed: 1.2.3.4 does not answer in $NS"; exit 1; }

# The catalog: 16 synthetic countries (user-assigned codes XA..XP), each /8 one entry with
# its own ASN (private-use 64512+), so the collector aggregates per country and per AS.
mkdir -p "$dir/catalog" "$dir/spool"
i=0
for a in $slash8s; do
  cc=$(printf "X\\x$(printf %x $((65 + i % 16)))")
  f="$dir/catalog/$(echo "$cc" | tr A-Z a-z).toml"
  [ -f "$f" ] || printf 'country = "%s"\nname = "Synthetic %s"\n' "$cc" "$cc" > "$f"
  printf '\n[[icmp]]\nprefix = "%s.0.0.0/8"\nasn = %d\n' "$a" $((64512 + i)) >> "$f"
  i=$((i + 1))
done
"$BLACKOUT_BIN" check-config --catalog "$dir/catalog" > "$dir/check.out"

token=sustained-bench-token
sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
{
  echo "listen = \"127.0.0.1:$PORT\""
  echo "catalog = [\"$dir/catalog\"]"
  [ "$COLLECTOR_LOG" = 1 ] && echo "state_dir = \"$dir/collector\""
  echo "[[agent]]"
  echo "id = \"sus-1\""
  echo "token_sha256 = \"$sha\""
} > "$dir/collector.toml"
# No `catalog` key: the agent fetches its catalog from the collector, as deployed.
cat > "$dir/agent.toml" <<EOF
agent_id = "sus-1"
collector_url = "http://127.0.0.1:$PORT"
token = "$token"
spool_dir = "$dir/spool"
round_secs = $ROUND_SECS
max_probes_per_sec = $MAX_PPS
concurrency = $CONCURRENCY
EOF
"$BLACKOUT_BIN" check-config --collector "$dir/collector.toml" --agent "$dir/agent.toml" >> "$dir/check.out"

CLK_TCK=$(getconf CLK_TCK)
now() { date +%s.%N; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
ingested() {
  ip netns exec "$NS" curl -s "http://127.0.0.1:$PORT/metrics" |
    awk '/^blackout_observations_ingested_total\{/ {s += $2} END {printf "%d\n", s}'
}
mib() { echo "scale=1; $1 / 1024" | bc; }

ip netns exec "$NS" "$BLACKOUT_BIN" collector --config "$dir/collector.toml" 2> "$dir/collector.log" &
collector_pid=$!
for _ in $(seq 1200); do
  ip netns exec "$NS" curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$collector_pid" 2>/dev/null || { cat "$dir/collector.log"; exit 1; }
  sleep 0.5
done
c_ready=$(now)

t_start=$(now)
ip netns exec "$NS" "$AGENT_BIN" run --config "$dir/agent.toml" 2> "$dir/agent.log" &
agent_pid=$!
until grep -q "agent started" "$dir/agent.log"; do
  kill -0 "$agent_pid" 2>/dev/null || { echo "agent died:"; tail -20 "$dir/agent.log"; exit 1; }
  if [ "$(echo "$(now) - $t_start > $STARTUP_MAX_SECS" | bc)" = 1 ]; then echo "agent start-up took over ${STARTUP_MAX_SECS}s"; exit 1; fi
  sleep 0.2
done
t_up=$(now)
startup_secs=$(echo "$t_up - $t_start" | bc)
startup_hwm=$(kib "$agent_pid" VmHWM)
startup_ticks=$(ticks "$agent_pid")
echo "agent up after ${startup_secs}s (${BLOCKS} blocks; VmHWM $(mib "$startup_hwm") MiB)"

sleep "$WARMUP_SECS"
w0=$(now); a0=$(ticks "$agent_pid"); c0=$(ticks "$collector_pid"); n0=$(ingested)
if [ -n "${PROFILE:-}" ]; then
  # perf record -g on the agent for the whole window (cpu-clock: no hardware counters in VMs).
  perf record -q -g -e cpu-clock -p "$agent_pid" -o "$PROFILE" -- sleep "$WINDOW_SECS" 2>/dev/null
else
  sleep "$WINDOW_SECS"
fi
w1=$(now); a1=$(ticks "$agent_pid"); c1=$(ticks "$collector_pid"); n1=$(ingested)
kill -0 "$agent_pid" 2>/dev/null || { echo "agent died:"; tail -20 "$dir/agent.log"; exit 1; }

wall=$(echo "$w1 - $w0" | bc -l)
a_cpu=$(echo "($a1 - $a0) / $CLK_TCK / $wall * 100" | bc -l)
c_cpu=$(echo "($c1 - $c0) / $CLK_TCK / $wall * 100" | bc -l)
pps=$(echo "($n1 - $n0) / $wall" | bc -l)
need=$(echo "$BLOCKS / $ROUND_SECS" | bc -l)
a_hwm=$(kib "$agent_pid" VmHWM); a_rss=$(kib "$agent_pid" VmRSS)
c_hwm=$(kib "$collector_pid" VmHWM); c_rss=$(kib "$collector_pid" VmRSS)
per_block=$(echo "$a_rss * 1024 / $BLOCKS" | bc -l)
verdict() { if [ "$(echo "$1" | bc -l)" = 1 ]; then echo met; else echo MISSED; fi; }

echo
echo "sustained: $BLOCKS blocks, round ${ROUND_SECS}s, max_probes_per_sec $MAX_PPS, concurrency $CONCURRENCY,"
echo "window ${WINDOW_SECS}s starting ${WARMUP_SECS}s after start-up"
printf '| %-42s | %-14s | %-16s |\n' "measure" "value" "goal"
printf '| %-42s | %-14s | %-16s |\n' "------------------------------------------" "--------------" "----------------"
printf '| %-42s | %14.1f | %-16s |\n' "agent start-up (catalog fetch+expand), s" "$startup_secs" "-"
printf '| %-42s | %14.1f | %-16s |\n' "agent start-up CPU, s" "$(echo "$startup_ticks / $CLK_TCK" | bc -l)" "-"
printf '| %-42s | %14s | %-16s |\n' "agent VmHWM at start-up, MiB" "$(mib "$startup_hwm")" "-"
printf '| %-42s | %14.0f | %-16s |\n' "block probes/s (collector ingested)" "$pps" "$(printf %.0f "$need") +-2% $(verdict "$pps >= 0.98 * $need")"
printf '| %-42s | %14.1f | %-16s |\n' "agent CPU, % of one core" "$a_cpu" "<= 15 $(verdict "$a_cpu <= 15")"
printf '| %-42s | %14s | %-16s |\n' "agent RSS peak (VmHWM), MiB" "$(mib "$a_hwm")" "<= 1024 $(verdict "$a_hwm <= 1048576")"
printf '| %-42s | %14s | %-16s |\n' "agent RSS at the end, MiB" "$(mib "$a_rss")" "<= 1024 $(verdict "$a_rss <= 1048576")"
printf '| %-42s | %14.0f | %-16s |\n' "agent RSS per block, bytes" "$per_block" "<= 256 $(verdict "$per_block <= 256")"
printf '| %-42s | %14.1f | %-16s |\n' "collector CPU, % of one core" "$c_cpu" "-"
printf '| %-42s | %14s | %-16s |\n' "collector RSS peak / end, MiB" "$(mib "$c_hwm") / $(mib "$c_rss")" "-"
warn=$(grep -c "WARN\|ERROR" "$dir/agent.log" || true)
echo "agent log: $warn warnings/errors$( [ "$warn" -gt 0 ] && echo ": $(grep -m3 "WARN\|ERROR" "$dir/agent.log" | cut -c1-200)")"
[ -n "${KEEP_LOGS:-}" ] && cp "$dir/agent.log" "$dir/collector.log" "$KEEP_LOGS"/ || true
