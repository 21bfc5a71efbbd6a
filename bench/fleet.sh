#!/usr/bin/env bash
# Fleet benchmark (issue 17): one release `blackout collector` with a state directory,
# driven by AGENTS real `blackout-agent` processes, each in its own network namespace
# probing TARGETS AnyIP /24 blocks (the kernel answers ICMP for a local route: wire.sh),
# uploading through its own encoder, spool and upload path over a veth link. Every agent
# gets the collector's catalog through fleet assignment (`assign_k` = AGENTS: every
# target goes to every agent, served as the per-agent share), so each target has AGENTS
# readings, as in a fleet of vantages. ROUNDS rounds of ROUND_SECS, then:
#  - upload bytes/obs: `blackout_upload_bytes_total` over `blackout_observations_ingested_total`;
#  - log bytes/obs: the observation log's segments over the same observations;
#  - collector RSS per target: peak (VmHWM of /proc/PID/status, which includes catalog
#    loading, the latest view, the detector, and the snapshots written every ROUND_SECS)
#    over TARGETS;
#    (beside it: RSS when ready, i.e. the catalog, and the snapshot file written at stop);
#  - observations ingested per collector CPU-second: utime + stime of /proc/PID/stat,
#    counted from the agents' start (detector ticks, snapshots and catalog serving included);
#  - fleet assignment: bytes and time of `GET /api/v1/catalog?agent=fleet-1` with the
#    AGENTS agents live;
#  - restart: time to ready (and peak RSS) of the collector started again on its state
#    directory, from the snapshot written at the stop, then from the whole log.
#
# Needs root (namespaces, RAW ICMP):
#   cargo build --release --bin blackout-agent --bin blackout && bench/fleet.sh
# Knobs (environment): TARGETS (262144, a power of two <= 2^22: blocks of one prefix),
# AGENTS (4), ROUNDS (2), ROUND_SECS (60), LOSS_PCT (20: echo replies dropped at random by
# nftables so that beliefs, follow-ups and failures vary; 0 for none), SCRAPE_SECS (15:
# how often the script reads the collector's /metrics while it waits), PORT (19799),
# AGENT_BIN, BLACKOUT_BIN (target/release/...).
set -euo pipefail
cd "$(dirname "$0")/.."
AGENT_BIN=${AGENT_BIN:-target/release/blackout-agent}
BLACKOUT_BIN=${BLACKOUT_BIN:-target/release/blackout}
TARGETS=${TARGETS:-262144}
AGENTS=${AGENTS:-4}
ROUNDS=${ROUNDS:-2}
ROUND_SECS=${ROUND_SECS:-60}
LOSS_PCT=${LOSS_PCT:-20}
PORT=${PORT:-19799}
SCRAPE_SECS=${SCRAPE_SECS:-15}
for b in "$AGENT_BIN" "$BLACKOUT_BIN"; do
  [ -x "$b" ] || { echo "build first: cargo build --release --bin blackout-agent --bin blackout"; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces, RAW ICMP)"; exit 0; }
command -v ip >/dev/null || { echo "SKIP: iproute2 not installed"; exit 0; }
[ "$LOSS_PCT" = 0 ] || command -v nft >/dev/null || { echo "SKIP: LOSS_PCT needs nftables (or LOSS_PCT=0)"; exit 0; }

len=24
while [ $((1 << (24 - len))) -lt "$TARGETS" ]; do len=$((len - 1)); done
[ $((1 << (24 - len))) -eq "$TARGETS" ] && [ "$len" -ge 2 ] ||
  { echo "TARGETS must be a power of two, at most 4194304"; exit 1; }
# 4.0.0.0/6 holds 2^18 blocks (public space, unreachable from the namespaces anyway);
# larger sets take the aligned prefix above it, which from /5 on holds private and
# reserved ranges (allowed to the agents then).
if [ "$len" -ge 6 ]; then PREFIX=4.0.0.0/$len; else PREFIX=$((1 << (8 - len))).0.0.0/$len; fi
reserved=false; [ "$len" -ge 6 ] || reserved=true
# Pace each agent to finish a round in about 80 % of ROUND_SECS; replies come in
# microseconds, lost ones hold a slot for the 1 s timeout.
PPS=$(((TARGETS * 5 / 4 + ROUND_SECS - 1) / ROUND_SECS))

CNS=bo-fleet-$$-c
dir=$(mktemp -d /tmp/bo-fleet.XXXXXX)
agent_pids=(); collector_pid=""
cleanup() {
  for p in "${agent_pids[@]}" $collector_pid; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${agent_pids[@]}" $collector_pid; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  for i in $(seq "$AGENTS"); do ip netns del "bo-fleet-$$-a$i" 2>/dev/null || true; done
  ip netns del "$CNS" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$CNS"
ip -n "$CNS" link set lo up
mkdir -p "$dir/catalog" "$dir/state"
printf 'country = "XA"\nname = "Synthetic XA"\n\n[[icmp]]\nprefix = "%s"\nasn = 64512\n' "$PREFIX" > "$dir/catalog/xa.toml"
cat > "$dir/collector.toml" <<EOF
listen = "0.0.0.0:$PORT"
catalog = ["$dir/catalog"]
state_dir = "$dir/state"
assign_k = $AGENTS
snapshot_interval_secs = $ROUND_SECS
EOF
for i in $(seq "$AGENTS"); do
  ns=bo-fleet-$$-a$i
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip -n "$ns" route add local "$PREFIX" dev lo
  ip link add "bofc$$x$i" netns "$CNS" type veth peer name eth0 netns "$ns"
  ip -n "$CNS" addr add "10.77.$i.1/24" dev "bofc$$x$i"
  ip -n "$CNS" link set "bofc$$x$i" up
  ip -n "$ns" addr add "10.77.$i.2/24" dev eth0
  ip -n "$ns" link set eth0 up
  if [ "$LOSS_PCT" -gt 0 ]; then
    ip netns exec "$ns" nft -f - <<EOF
table inet bo_loss {
  chain out {
    type filter hook output priority 0;
    icmp type echo-reply numgen random mod 100 < $LOSS_PCT drop
  }
}
EOF
  fi
  token=fleet-bench-token-$i
  sha=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
  printf '[[agent]]\nid = "fleet-%d"\ntoken_sha256 = "%s"\n' "$i" "$sha" >> "$dir/collector.toml"
  mkdir -p "$dir/spool-$i"
  cat > "$dir/agent-$i.toml" <<EOF
agent_id = "fleet-$i"
collector_url = "http://10.77.$i.1:$PORT"
token = "$token"
spool_dir = "$dir/spool-$i"
round_secs = $ROUND_SECS
max_probes_per_sec = $PPS
timeout_ms = 1000
concurrency = 4096
icmp_max_probes_per_block_hour = 100000
allow_reserved = $reserved
EOF
done

metric() {
  ip netns exec "$CNS" curl -s "http://127.0.0.1:$PORT/metrics" |
    awk -v m="$1" -v l="$2" 'index($0, m "{") == 1 && index($0, l) {s += $2} END {printf "%d\n", s}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

t0=$(date +%s.%N)
ip netns exec "$CNS" "$BLACKOUT_BIN" collector --config "$dir/collector.toml" 2> "$dir/collector.log" &
collector_pid=$!
for _ in $(seq 1500); do
  ip netns exec "$CNS" curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$collector_pid" 2>/dev/null || { cat "$dir/collector.log"; exit 1; }
  sleep 0.2
done
ready_secs=$(printf %.2f "$(echo "$(date +%s.%N) - $t0" | bc)")
ready_rss_kb=$(status_kb "$collector_pid" VmRSS)
ticks0=$(cpu_ticks "$collector_pid")

for i in $(seq "$AGENTS"); do
  ip netns exec "bo-fleet-$$-a$i" "$AGENT_BIN" run --config "$dir/agent-$i.toml" 2> "$dir/agent-$i.log" &
  agent_pids+=($!)
done
start=$(date +%s)
want=$((TARGETS * AGENTS * ROUNDS))
# ROUNDS whole rounds: the time they take and every block seen ROUNDS times per agent.
n=0; last_scrape=0
while :; do
  # Every /metrics scrape aggregates the whole latest view: read it at a Prometheus
  # scrape interval, not faster, or the benchmark measures itself.
  if [ $(($(date +%s) - last_scrape)) -ge "$SCRAPE_SECS" ]; then
    n=$(metric blackout_observations_ingested_total 'agent="fleet-'); last_scrape=$(date +%s)
  fi
  [ "$n" -ge "$want" ] && [ $(($(date +%s) - start)) -ge $((ROUNDS * ROUND_SECS)) ] && break
  for p in "${agent_pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "an agent died:"; tail -20 "$dir"/agent-*.log; exit 1; }
  done
  [ $(($(date +%s) - start)) -lt $((ROUNDS * ROUND_SECS * 4 + 300)) ] ||
    { echo "too slow: $n of $want observations after $(($(date +%s) - start)) s"; tail -5 "$dir"/agent-*.log; exit 1; }
  sleep 1
done
elapsed=$(($(date +%s) - start))

# Fleet assignment while the agents are live (they reported within agent_timeout_secs).
assign=$(ip netns exec "$CNS" curl -s -o /dev/null -w '%{size_download} %{time_total}' \
  -H "Authorization: Bearer fleet-bench-token-1" "http://127.0.0.1:$PORT/api/v1/catalog?agent=fleet-1")
assign_bytes=${assign% *}; assign_secs=${assign#* }
# One /metrics scrape with the agents live: it aggregates the whole latest view.
scrape_secs=$(ip netns exec "$CNS" curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$PORT/metrics")

for p in "${agent_pids[@]}"; do kill -TERM "$p"; done
for p in "${agent_pids[@]}"; do wait "$p" || true; done
agent_pids=()
sleep 1
n=$(metric blackout_observations_ingested_total 'agent="fleet-')
compact=$(metric blackout_upload_bytes_total 'encoding="compact"')
json=$(metric blackout_upload_bytes_total 'encoding="json"')
ticks1=$(cpu_ticks "$collector_pid")
hwm_kb=$(status_kb "$collector_pid" VmHWM)
rss_kb=$(status_kb "$collector_pid" VmRSS)
kill -TERM "$collector_pid"; wait "$collector_pid" || true; collector_pid=""
log_bytes=$(cat "$dir"/state/observations-*.jsonl | wc -c)
snap_bytes=$(stat -c %s "$dir/state/snapshot.bin" 2>/dev/null || echo 0)

# Restart at this scale: time to ready (the collector answers /healthz once its state
# is restored), first from the snapshot written at the stop, then from the whole log
# (snapshot removed), with the peak RSS of each restore.
restart() {
  local t0 pid secs
  t0=$(date +%s.%N)
  ip netns exec "$CNS" "$BLACKOUT_BIN" collector --config "$dir/collector.toml" 2> "$dir/restart.log" &
  pid=$!; collector_pid=$pid
  for _ in $(seq 6000); do
    ip netns exec "$CNS" curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/restart.log"; exit 1; }
    sleep 0.1
  done
  secs=$(printf %.2f "$(echo "$(date +%s.%N) - $t0" | bc)")
  echo "$secs $(($(status_kb "$pid" VmHWM) / 1024))"
  kill -TERM "$pid"; wait "$pid" || true; collector_pid=""
}
from_snapshot=$(restart)
# The restart above wrote a new snapshot at its stop: remove it to replay the whole log.
rm -f "$dir/state/snapshot.bin"
from_log=$(restart)
hz=$(getconf CLK_TCK)
cpu=$(printf %.2f "$(echo "scale=2; ($ticks1 - $ticks0) / $hz" | bc)")

f1() { printf %.1f "$(echo "scale=2; $1" | bc)"; }
echo "fleet: $TARGETS targets ($PREFIX) x $AGENTS agents, $ROUNDS rounds of ${ROUND_SECS}s" \
  "(${PPS} probes/s cap per agent, ${LOSS_PCT}% of echo replies dropped): $n observations in ${elapsed}s"
echo "collector: ready in ${ready_secs}s at $((ready_rss_kb / 1024)) MiB RSS; peak $((hwm_kb / 1024)) MiB," \
  "$((rss_kb / 1024)) MiB at the end; ${cpu} CPU-s from the agents' start"
echo
echo "| measure | value | goal |"
echo "|---|---:|---:|"
echo "| upload bytes/obs | $(f1 "($compact + $json) / $n") | <= 32 |"
echo "| log bytes/obs | $(f1 "$log_bytes / $n") | <= 32 |"
echo "| collector peak RSS bytes/target | $(f1 "$hwm_kb * 1024 / $TARGETS") | <= 512 |"
echo "| of which RSS when ready (catalog loaded, nothing ingested), bytes/target | $(f1 "$ready_rss_kb * 1024 / $TARGETS") | |"
echo "| snapshot file (written at stop), bytes/target | $(f1 "$snap_bytes / $TARGETS") | |"
echo "| observations ingested per collector CPU-second | $(echo "$n / $cpu" | bc) | >= 300000 |"
echo "| fleet assignment: catalog for one of $AGENTS agents (k = $AGENTS) | $assign_bytes B in ${assign_secs}s | compact |"
echo "| one /metrics scrape (aggregates the latest view), seconds | ${scrape_secs} | |"
echo "| restart, ready from the snapshot: seconds, peak MiB | ${from_snapshot% *} s, ${from_snapshot#* } MiB | |"
echo "| restart, ready from the whole log (no snapshot): seconds, peak MiB | ${from_log% *} s, ${from_log#* } MiB | |"
