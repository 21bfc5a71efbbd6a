#!/usr/bin/env bash
# Benchmark: `blackout catalog build --all` over every registry input in ../shared/data
# (both RIR delegated files, ipverse per-country prefixes, ip-location-db IPv4 + IPv6,
# the root zone): every country, every /24, no sampling. Release build; prints the
# wall time of each of RUNS runs (default 3), the median, and the output's size.
# Goal: median <= 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-../shared/data}"
[ -d "$DATA" ] || DATA=/work/shared/data
if [ ! -d "$DATA/country-prefixes" ]; then
    echo "SKIP: registry data not found (set DATA=.../shared/data)" >&2
    exit 0
fi
RUNS="${RUNS:-3}"
cargo build --release --quiet --bin blackout
BIN=target/release/blackout
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
ASN="$DATA/asn/ip-location-db_asn_2.3.2026061719"
args=(catalog build --all --out "$OUT/catalogs"
    --delegated "$DATA/rir/delegated-ripencc-extended-latest"
    --delegated "$DATA/rir/delegated-afrinic-extended-latest"
    --country-prefixes "$DATA/country-prefixes/ipverse-rir-ip_latest-20260201"
    --asn-csv "$ASN/asn-ipv4.csv" --asn-csv "$ASN/asn-ipv6.csv"
    --root-zone "$DATA/dns/root.zone_2026082201_kidmin-rza_RRSIG-stripped")
times=()
for i in $(seq "$RUNS"); do
    rm -rf "$OUT/catalogs"
    start=$(date +%s.%N)
    RUST_LOG=warn "$BIN" "${args[@]}"
    end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc)
    times+=("$t")
    printf 'run %d: %.2f s\n' "$i" "$t"
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}')
files=$(ls "$OUT/catalogs" | wc -l)
size=$(du -sh "$OUT/catalogs" | cut -f1)
blocks=$(cat "$OUT"/catalogs/*.toml | grep -o "ICMP coverage: [0-9]*" | awk '{s+=$3} END {print s}')
printf 'median: %.2f s  (%s catalogs, %s, %s /24 blocks)\n' "$median" "$files" "$size" "$blocks"
awk -v m="$median" 'BEGIN {exit !(m <= 30)}' || { echo "FAIL: median above 30 s" >&2; exit 1; }
