#!/usr/bin/env bash
# Burst ICMP: `blackout-agent probe --signal icmp` against fping on the same 65,536
# addresses of 127.0.0.0/8 (127.1.0.0/16), in the same run, REPS times each, alternating.
# Prints each run, then medians of probes/s and loss for both, and their ratio.
# Needs root (fping -i 0, RAW ICMP sockets) and a release build:
#   cargo build --release --bin blackout-agent && bench/icmp-burst.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
BIN=${BIN:-target/release/blackout-agent}
CONCURRENCY=${CONCURRENCY:-8192}
TIMEOUT_MS=${TIMEOUT_MS:-2000}
command -v fping >/dev/null || { echo "SKIP: fping not installed (apt-get install fping)"; exit 0; }
[ -x "$BIN" ] || { echo "build first: cargo build --release --bin blackout-agent"; exit 1; }
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (fping -i 0, RAW sockets)"; exit 0; }

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for i in $(seq 0 255); do for j in $(seq 0 255); do echo "127.1.$i.$j"; done; done > "$dir/addrs"
N=$(wc -l < "$dir/addrs")

now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

: > "$dir/b.rate"; : > "$dir/b.loss"; : > "$dir/f.rate"; : > "$dir/f.loss"
for rep in $(seq 1 "$REPS"); do
  t0=$(now)
  "$BIN" probe --signal icmp --targets "$dir/addrs" --concurrency "$CONCURRENCY" \
    --timeout-ms "$TIMEOUT_MS" > "$dir/b.out" 2> "$dir/b.err"
  t1=$(now)
  ok=$(grep -c '"ok":true' "$dir/b.out" || true)
  rate=$(echo "$N / ($t1 - $t0)" | bc -l)
  echo "$rate" >> "$dir/b.rate"; echo $((N - ok)) >> "$dir/b.loss"
  printf 'run %d blackout: %6.0f probes/s  wall %.3f s  ok %d/%d  (%s)\n' "$rep" "$rate" "$(echo "$t1 - $t0" | bc -l)" "$ok" "$N" "$(tail -1 "$dir/b.err")"

  t0=$(now)
  fping -a -q -i 0 -r 0 -t "$TIMEOUT_MS" -f "$dir/addrs" > "$dir/f.out" 2>/dev/null || true
  t1=$(now)
  ok=$(wc -l < "$dir/f.out")
  rate=$(echo "$N / ($t1 - $t0)" | bc -l)
  echo "$rate" >> "$dir/f.rate"; echo $((N - ok)) >> "$dir/f.loss"
  printf 'run %d fping:    %6.0f probes/s  wall %.3f s  ok %d/%d\n' "$rep" "$rate" "$(echo "$t1 - $t0" | bc -l)" "$ok" "$N"
done
b=$(median < "$dir/b.rate"); f=$(median < "$dir/f.rate")
printf 'median blackout: %.0f probes/s, loss %s of %d\n' "$b" "$(median < "$dir/b.loss")" "$N"
printf 'median fping:    %.0f probes/s, loss %s of %d\n' "$f" "$(median < "$dir/f.loss")" "$N"
printf 'ratio blackout/fping: %.2f\n' "$(echo "$b / $f" | bc -l)"
