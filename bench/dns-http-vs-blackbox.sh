#!/usr/bin/env bash
# DNS and HTTP probes per CPU-second: `blackout-agent probe` against
# prometheus-blackbox-exporter (driven through its /probe endpoint, 32 requests in
# flight), on the same loopback targets in the same run: knot serving kz.test on
# 127.0.0.1 (high port), nginx on 127.0.0.1 (high port). CPU time is the prober's own
# (user + system): /usr/bin/time for blackout, /proc/PID/stat for the exporter; the
# servers' and curl's CPU is counted for neither. REPS runs each, medians printed.
#   cargo build --release --bin blackout-agent && bench/dns-http-vs-blackbox.sh
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
BIN=${BIN:-$PWD/target/release/blackout-agent}
N_DNS=${N_DNS:-10000}
N_HTTP=${N_HTTP:-5000}
CONC=${CONC:-32}
for b in knotd nginx prometheus-blackbox-exporter curl; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "SKIP: $b not installed"; exit 0; }
done
[ -x "$BIN" ] || { echo "build first: cargo build --release --bin blackout-agent"; exit 1; }
PATH=$PATH:/usr/sbin

dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
KNOT=$(free_port); NGINX=$(free_port); BB=$(free_port)

cat > "$dir/kz.test.zone" <<ZONE
\$ORIGIN kz.test.
\$TTL 300
@ SOA ns.kz.test. hostmaster.kz.test. 1 3600 600 86400 300
@ NS ns.kz.test.
ns A 127.0.0.1
ZONE
cat > "$dir/knot.conf" <<CONF
server:
    rundir: "$dir"
    listen: 127.0.0.1@$KNOT
control:
    listen: "$dir/knot.sock"
database:
    storage: "$dir/db"
log:
  - target: stderr
    any: error
template:
  - id: default
    storage: "$dir"
    file: "%s.zone"
zone:
  - domain: kz.test
CONF
knotd -c "$dir/knot.conf" & pids+=($!)

mkdir -p "$dir/nginx"
cat > "$dir/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/nginx/cb; proxy_temp_path $dir/nginx/p;
  fastcgi_temp_path $dir/nginx/f; uwsgi_temp_path $dir/nginx/u; scgi_temp_path $dir/nginx/s;
  server { listen 127.0.0.1:$NGINX; location / { return 200 "ok\n"; } }
}
CONF
nginx -p "$dir/nginx" -e "$dir/nginx/error.log" -c "$dir/nginx.conf" & pids+=($!)

cat > "$dir/bb.yml" <<CONF
modules:
  dns_soa:
    prober: dns
    timeout: 2s
    dns:
      query_name: kz.test
      query_type: SOA
      transport_protocol: udp
      preferred_ip_protocol: ip4
  http_2xx:
    prober: http
    timeout: 2s
    http:
      preferred_ip_protocol: ip4
CONF
prometheus-blackbox-exporter --config.file="$dir/bb.yml" --web.listen-address="127.0.0.1:$BB" \
  --log.level=error 2> "$dir/bb.log" & BBPID=$!; pids+=($BBPID)

DNS_URL="http://127.0.0.1:$BB/probe?module=dns_soa&target=127.0.0.1:$KNOT"
HTTP_URL="http://127.0.0.1:$BB/probe?module=http_2xx&target=http://127.0.0.1:$NGINX/"
for _ in $(seq 100); do
  curl -sf "$DNS_URL" 2>/dev/null | grep -q '^probe_success 1' \
    && curl -sf "$HTTP_URL" 2>/dev/null | grep -q '^probe_success 1' && break
  sleep 0.1
done
curl -s "$DNS_URL" | grep -q '^probe_success 1' || { echo "blackbox DNS probe does not succeed"; exit 1; }
curl -s "$HTTP_URL" | grep -q '^probe_success 1' || { echo "blackbox HTTP probe does not succeed"; exit 1; }

repeat() { awk -v n="$2" -v l="$1" 'BEGIN { for (i = 0; i < n; i++) print l }'; }
repeat "127.0.0.1:$KNOT kz.test. SOA" "$N_DNS" > "$dir/dns.targets"
repeat "http://127.0.0.1:$NGINX/" "$N_HTTP" > "$dir/http.targets"
TCK=$(getconf CLK_TCK)
cpu_of() { awk -v t="$TCK" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

run_blackout() { # signal file n -> probes per CPU-second
  /usr/bin/time -f "%U %S" -o "$dir/time" "$BIN" probe --signal "$1" --targets "$2" \
    --concurrency "$CONC" --timeout-ms 2000 > "$dir/out" 2> "$dir/err"
  local ok; ok=$(grep -c '"ok":true' "$dir/out" || true)
  [ "$ok" = "$3" ] || echo "  warning: blackout $1 ok $ok of $3" >&2
  awk -v n="$3" '{print n / ($1 + $2)}' "$dir/time"
}
run_blackbox() { # url n -> probes per CPU-second
  local c0 c1
  c0=$(cpu_of "$BBPID")
  repeat "$1" "$2" | xargs -P "$CONC" -n 50 curl -s > "$dir/bb.out"
  c1=$(cpu_of "$BBPID")
  local ok; ok=$(grep -c '^probe_success 1' "$dir/bb.out" || true)
  [ "$ok" = "$2" ] || echo "  warning: blackbox ok $ok of $2" >&2
  echo "$2 / ($c1 - $c0)" | bc -l
}

for kind in dns http; do
  : > "$dir/$kind.b"; : > "$dir/$kind.x"
  for rep in $(seq 1 "$REPS"); do
    if [ $kind = dns ]; then
      b=$(run_blackout dns "$dir/dns.targets" "$N_DNS"); x=$(run_blackbox "$DNS_URL" "$N_DNS")
    else
      b=$(run_blackout http "$dir/http.targets" "$N_HTTP"); x=$(run_blackbox "$HTTP_URL" "$N_HTTP")
    fi
    echo "$b" >> "$dir/$kind.b"; echo "$x" >> "$dir/$kind.x"
    printf 'run %d %-4s blackout %8.0f probes/CPU-s   blackbox %8.0f probes/CPU-s\n' "$rep" "$kind" "$b" "$x"
  done
  mb=$(median < "$dir/$kind.b"); mx=$(median < "$dir/$kind.x")
  printf 'median %-4s blackout %.0f, blackbox_exporter %.0f probes per CPU-second: ratio %.1f\n' \
    "$kind" "$mb" "$mx" "$(echo "$mb / $mx" | bc -l)"
done
