#!/usr/bin/env bash
# How fast the BGP sources turn input into route events (issue 16): MRT import of a RIB
# dump (TABLE_DUMP_V2, plain and gzip) of PREFIXES /24s from each of PEERS peers, and
# RIS Live UPDATE decoding. The table's side (applying events, the longest-prefix
# mapping) is measured by bgp-rib's benchmark, not here.
#
#   bench/bgp-feeds.sh            # 1,000,000 prefixes x 10 peers, median of 3 runs
# Knobs (environment): PREFIXES, PEERS, RUNS.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIXES=${PREFIXES:-1000000}
PEERS=${PEERS:-10}
RUNS=${RUNS:-3}
DIR=$(mktemp -d)
trap 'rm -rf "$DIR"' EXIT
cargo build --release -q -p blackout-bgp --example mrt_bench
target/release/examples/mrt_bench "$PREFIXES" "$PEERS" "$RUNS" "$DIR"
