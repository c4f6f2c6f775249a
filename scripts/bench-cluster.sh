#!/usr/bin/env bash
# Cluster mode, same node vs across nodes, in one session: two release nodes on one
# redis-server (started here on a free port), browsers on node B; each round runs the
# bench once with its pushes sent to B (the uid's own node) and once to A (routed through
# Redis), alternating. Prints latency p50/p99 (push written -> frame received), server
# CPU per push of node B (the holder), and redis-server's CPU ticks (10 ms) per run.
#
# Usage: scripts/bench-cluster.sh SCENARIO [bench args...]
#   e.g. scripts/bench-cluster.sh latency --clients 2000 --rate 2000 --duration-ms 3000
# Needs target/release/{pushwire,pushwire-bench} (cargo build --release) and redis-server.
set -euo pipefail
cd /work/main
source scripts/listening.sh
rport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port $rport --save "" --appendonly no >/dev/null 2>&1 &
rpid=$!
sleep 0.3
start() { # $1 log
	PUSHWIRE_HTTP_LISTEN=off NO_COLOR=1 target/release/pushwire --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 \
		--max-push-connections 64 --redis redis://127.0.0.1:$rport/ >/dev/null 2>"$1" &
	echo $!
}
la=$(mktemp); lb=$(mktemp)
pa=$(start $la); pb=$(start $lb)
# Whatever ends the script (a failed step under set -e too) ends what it started.
trap 'kill $pa $pb $rpid 2>/dev/null || true; rm -f $la $lb' EXIT
listening_ports $la a; wsa=$ws_port; pua=$push_port
listening_ports $lb b; wsb=$ws_port; pub=$push_port
sleep 1
for round in $(seq "${ROUNDS:-3}"); do
	for mode in same cross; do
		if [[ $mode == same ]]; then push=$pub; else push=$pua; fi
		r0=$(awk '{print $14+$15}' /proc/$rpid/stat)
		target/release/pushwire-bench --ws ws://127.0.0.1:$wsb/ --push 127.0.0.1:$push --server-pid $pb --json-only "$@" \
			| python3 -c "
import json,sys
for l in sys.stdin:
    d=json.loads(l)
    if d.get('scenario') in ('latency','throughput'):
        lat=d.get('latency_ms') or {}
        print('$mode', d['scenario'], 'p50', lat.get('p50_ms'), 'p99', lat.get('p99_ms'), 'cpu/push(holder node)', d.get('server_cpu_us_per_push'), 'pushes', d.get('pushes'), 'per_s', d.get('pushes_per_s'))
"
		r1=$(awk '{print $14+$15}' /proc/$rpid/stat)
		echo "$mode redis_cpu_ticks=$((r1-r0))"
	done
done
