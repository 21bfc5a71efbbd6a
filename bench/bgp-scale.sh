#!/bin/sh
# The BGP table at Internet scale: ten full tables (1M IPv4 + 200k IPv6 prefixes each)
# loaded through blackout-bgp's Table over a 4M-block catalog; prints RSS, load time,
# update messages per CPU-second, and the cost of a national withdrawal and of a peer
# reset. See docs/scale.md (BGP). Scale down with BGP_SCALE_PEERS, BGP_SCALE_V4,
# BGP_SCALE_V6, BGP_SCALE_BLOCKS, BGP_SCALE_UPDATES.
set -eu
cd "$(dirname "$0")/.."
exec cargo bench -q -p blackout-bgp --bench table_scale
