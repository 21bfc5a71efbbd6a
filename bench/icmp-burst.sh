#!/usr/bin/env bash
# Burst ICMP: `blackout-agent probe --signal icmp` against fping on the same 65,536
# addresses of 127.0.0.0/8 (127.1.0.0/16), in the same run, REPS times each, alternating.
# Prints each run, then medians of probes/s, loss and CPU per probe (user + system time of
# the whole command from /usr/bin/time, divided by the addresses) for both, and the ratio.
# Needs root (fping -i 0, RAW ICMP sockets) and a release build:
#   cargo build --release --bin blackout-agent && bench/icmp-burst.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
BIN=${BIN:-target/release/blackout-agent}
CONCURRENCY=${CONCURRENCY:-8192}
TIMEOUT_MS=${TIMEOUT_MS:-2000}
command -v fping >/dev/null || { echo "SKIP: fping not installed (apt-get install fping)"; exit 0; }
[ -x /usr/bin/time ] || { echo "SKIP: /usr/bin/time not installed (apt-get install time)"; exit 0; }
[ -x "$BIN" ] || { echo "build first: cargo build --release --bin blackout-agent"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (fping -i 0, RAW sockets)"; exit 0; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for i in $(seq 0 255); do for j in $(seq 0 255); do echo "127.1.$i.$j"; done; done > "$dir/addrs"
N=$(wc -l < "$dir/addrs")

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: > "$dir/b.rate"; : > "$dir/b.loss"; : > "$dir/f.rate"; : > "$dir/f.loss"
: > "$dir/b.cpu"; : > "$dir/f.cpu"
# CPU microseconds per address from a /usr/bin/time -f '%U %S' file.
cpu_us() { awk -v n="$N" '{printf "%.2f", ($1 + $2) * 1e6 / n}' "$1"; }
for rep in $(seq 1 "$REPS"); do
  t0=$(now)
  /usr/bin/time -o "$dir/b.time" -f '%U %S' "$BIN" probe --signal icmp --targets "$dir/addrs" --concurrency "$CONCURRENCY" \
    --timeout-ms "$TIMEOUT_MS" > "$dir/b.out" 2> "$dir/b.err"
  t1=$(now)
  ok=$(grep -c '"ok":true' "$dir/b.out" || true)
  rate=$(echo "$N / ($t1 - $t0)" | bc -l)
  cpu=$(cpu_us "$dir/b.time")
  echo "$rate" >> "$dir/b.rate"; echo $((N - ok)) >> "$dir/b.loss"; echo "$cpu" >> "$dir/b.cpu"
  printf 'run %d blackout: %6.0f probes/s  wall %.3f s  ok %d/%d  cpu %s us/probe  (%s)\n' "$rep" "$rate" "$(echo "$t1 - $t0" | bc -l)" "$ok" "$N" "$cpu" "$(tail -1 "$dir/b.err")"

  t0=$(now)
  /usr/bin/time -o "$dir/f.time" -f '%U %S' fping -a -q -i 0 -r 0 -t "$TIMEOUT_MS" -f "$dir/addrs" > "$dir/f.out" 2>/dev/null || true
  t1=$(now)
  ok=$(wc -l < "$dir/f.out")
  rate=$(echo "$N / ($t1 - $t0)" | bc -l)
  # fping exits non-zero when a target is unreachable; time then prefixes a status line.
  cpu=$(grep -v '^Command' "$dir/f.time" > "$dir/f.time2"; cpu_us "$dir/f.time2")
  echo "$rate" >> "$dir/f.rate"; echo $((N - ok)) >> "$dir/f.loss"; echo "$cpu" >> "$dir/f.cpu"
  printf 'run %d fping:    %6.0f probes/s  wall %.3f s  ok %d/%d  cpu %s us/probe\n' "$rep" "$rate" "$(echo "$t1 - $t0" | bc -l)" "$ok" "$N" "$cpu"
done
b=$(median < "$dir/b.rate"); f=$(median < "$dir/f.rate")
printf 'median blackout: %.0f probes/s, loss %s of %d, cpu %s us/probe\n' "$b" "$(median < "$dir/b.loss")" "$N" "$(median < "$dir/b.cpu")"
printf 'median fping:    %.0f probes/s, loss %s of %d, cpu %s us/probe\n' "$f" "$(median < "$dir/f.loss")" "$N" "$(median < "$dir/f.cpu")"
printf 'ratio blackout/fping: %.2f\n' "$(echo "$b / $f" | bc -l)"
