#!/usr/bin/env bash
# Cluster mode against a single node, in one session, alternating: one redis-server and
# three release nodes A, B, C linked by it, plus one node S without Redis (the single-node
# reference), all started here on free ports. Each round runs, in turn:
#   latency     paced pushes to browsers on B: through B (same node), through A (routed
#               through Redis), and on S (single node); p50/p99, holder CPU, Redis CPU
#   throughput  pipelined pushes, the same three ways: pushes/s, CPU and Redis CPU per push
#   fanout      floor (a bare send() loop over CLIENTS loopback sockets; and three at once,
#               floor-3, the like-for-like floor for three nodes), S's broadcast to
#               CLIENTS browsers, and cluster-fanout: CLIENTS browsers on each of A, B, C
#               (3 x CLIENTS; one bench child process per node), pushed through A: per-uid,
#               /broadcast, /group; each node's CPU per delivered frame
#   count       (only when named) cluster-count: COUNT_CLIENTS browsers on each of A, B, C,
#               then COUNTS `/count`s one at a time through A, each checked exact: each
#               node's and Redis's CPU per /count, the round trip, Redis's CPU and memory
#               per uid online; once per size in COUNT_CLIENTS
# Every run's JSON line (tagged with its round) goes to OUT/runs.jsonl; at the end, each
# figure's median per (what, scenario), the per-node ratios to the floors' medians, and
# the paired ratios (each run to the floor of its own round) are printed.
#
# Usage: scripts/bench-cluster.sh [latency] [throughput] [fanout] [count]
#        (default: latency throughput fanout)
# Env: ROUNDS (3), CLIENTS (19000), LAT_CLIENTS (2000), RATE (2000), DURATION_MS (3000),
#      PUSHES (40000), FANOUT_ROUNDS (3), OUT (a new temporary directory),
#      BIN (target/release): where pushwire and pushwire-bench are;
#      CLUSTER_TIMEOUT_MS (1000, the default): the nodes' --cluster-timeout-ms (a /group
#      of 3 x 19k members can outlast 1 s on 2 cores: every member still gets it, but the
#      reply then counts only what was confirmed in time, and the bench's check fails);
#      FANOUT_MODE (all; or per-uid, broadcast, group): which cluster fan-outs run;
#      PUSH_VIA (0): the node (0 = A, 1 = B, 2 = C) the cluster fan-outs are pushed to;
#      COUNT_CLIENTS ("334 6334 19000": about 1k, 19k and 57k uids online on the three
#      nodes), COUNTS (2000): the count part's sizes and calls per run;
#      THREADS (1): bench worker threads reading the fan-out, the same for the floor and
#      for pushwire (the readers' scheduling changes what the sender pays per wake-up);
#      NODE_FLAGS (none): more flags for A, B and C (e.g. `--history-messages 0`: history off);
#      BENCH_FLAGS (none): more global flags for the bench (e.g. `--v1`: v1 browsers, so
#      every uid has a history in Redis and each push is numbered and kept).
# Needs target/release/{pushwire,pushwire-bench} (cargo build --release --workspace) and redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/listening.sh
parts=${*:-latency throughput fanout}
ROUNDS=${ROUNDS:-3} CLIENTS=${CLIENTS:-19000} LAT_CLIENTS=${LAT_CLIENTS:-2000}
RATE=${RATE:-2000} DURATION_MS=${DURATION_MS:-3000} PUSHES=${PUSHES:-40000}
FANOUT_ROUNDS=${FANOUT_ROUNDS:-3} FANOUT_MODE=${FANOUT_MODE:-all} PUSH_VIA=${PUSH_VIA:-0} THREADS=${THREADS:-1} CLUSTER_TIMEOUT_MS=${CLUSTER_TIMEOUT_MS:-1000}
COUNT_CLIENTS=${COUNT_CLIENTS:-334 6334 19000} COUNTS=${COUNTS:-2000}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
runs=$OUT/runs.jsonl
: >"$runs"
bin=${BIN:-target/release}
rport=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
rpid=$!
pids=($rpid)
logs=()
# Whatever ends the script (a failed step under set -e too) ends what it started.
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -f "${logs[@]}"' EXIT
sleep 0.3
start() { # $1 name, $2... extra flags; sets ${name}_pid, _ws, _push
	local log
	log=$(mktemp)
	logs+=("$log")
	PUSHWIRE_HTTP_LISTEN=off NO_COLOR=1 $bin/pushwire --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 \
		--max-push-connections 64 "${@:2}" >/dev/null 2>"$log" &
	pids+=($!)
	printf -v "${1}_pid" %s $!
	listening_ports "$log" "$1"
	printf -v "${1}_ws" %s "$ws_port"
	printf -v "${1}_push" %s "$push_port"
}
read -ra node_flags <<<"${NODE_FLAGS:-}"
read -ra bench_flags <<<"${BENCH_FLAGS:-}"
for n in a b c; do start $n --redis "redis://127.0.0.1:$rport/" --cluster-timeout-ms "$CLUSTER_TIMEOUT_MS" "${node_flags[@]}"; done
start s "${node_flags[@]}"
sleep 1
# bench LABEL ARGS...: one run, its JSON lines tagged with what=LABEL.
bench() {
	local label=$1
	shift
	echo "bench-cluster: $label: $*" >&2
	$bin/pushwire-bench --json-only --progress-ms 0 "${bench_flags[@]}" "$@" |
		python3 -c "
import json,sys
for l in sys.stdin:
    if l.startswith('{'):
        d=json.loads(l); d['what']='$label'; d['round']=$round; print(json.dumps(d))
" >>"$runs"
}
ws() { echo "ws://127.0.0.1:$1/"; }
for round in $(seq "$ROUNDS"); do
	echo "bench-cluster: round $round/$ROUNDS" >&2
	for part in $parts; do
		case $part in
		latency | throughput)
			if [[ $part == latency ]]; then
				args=(latency --clients "$LAT_CLIENTS" --rate "$RATE" --duration-ms "$DURATION_MS")
			else
				args=(throughput --clients "$LAT_CLIENTS" --pushes "$PUSHES")
			fi
			bench same-node --ws "$(ws $b_ws)" --push 127.0.0.1:$b_push --server-pid $b_pid --redis-pid $rpid "${args[@]}"
			bench cross-node --ws "$(ws $b_ws)" --push 127.0.0.1:$a_push --server-pid $b_pid --redis-pid $rpid "${args[@]}"
			bench single-node --ws "$(ws $s_ws)" --push 127.0.0.1:$s_push --server-pid $s_pid "${args[@]}"
			;;
		fanout)
			bench floor --threads "$THREADS" floor --clients "$CLIENTS" --rounds "$FANOUT_ROUNDS"
			# Three senders at once, as the three nodes fan out at once on the same cores.
			bench floor-3 --threads "$THREADS" --floor-senders 3 floor --clients "$CLIENTS" --rounds "$FANOUT_ROUNDS"
			bench single-node --threads "$THREADS" --ws "$(ws $s_ws)" --push 127.0.0.1:$s_push --server-pid $s_pid \
				fanout --fanout-mode broadcast --clients "$CLIENTS" --rounds "$FANOUT_ROUNDS"
			bench 3-nodes --threads "$THREADS" --redis-pid $rpid --fanout-mode "$FANOUT_MODE" \
				cluster-fanout --push-via "$PUSH_VIA" --clients "$CLIENTS" --rounds "$FANOUT_ROUNDS" \
				--node "$(ws $a_ws),127.0.0.1:$a_push,$a_pid" --node "$(ws $b_ws),127.0.0.1:$b_push,$b_pid" \
				--node "$(ws $c_ws),127.0.0.1:$c_push,$c_pid"
			;;
		count)
			for per_node in $COUNT_CLIENTS; do
				bench "count-3x$per_node" --threads "$THREADS" --redis-pid $rpid \
					cluster-count --clients "$per_node" --counts "$COUNTS" --redis "127.0.0.1:$rport" \
					--node "$(ws $a_ws),127.0.0.1:$a_push,$a_pid" --node "$(ws $b_ws),127.0.0.1:$b_push,$b_pid" \
					--node "$(ws $c_ws),127.0.0.1:$c_push,$c_pid"
			done
			;;
		*) echo "bench-cluster: unknown part $part" >&2 && exit 2 ;;
		esac
	done
done
echo "bench-cluster: runs in $runs" >&2
python3 - "$runs" <<'EOF'
import json, statistics, sys
from collections import defaultdict
runs = [json.loads(l) for l in open(sys.argv[1])]
failed = [r for r in runs if not r.get('ok')]
keys = ['p50_ms', 'p99_ms', 'pushes_per_s', 'server_cpu_us_per_push_hires', 'redis_cpu_us_per_push',
        'last_delivery_ms', 'server_cpu_us_per_frame', 'node0_cpu_us_per_frame', 'node1_cpu_us_per_frame',
        'node2_cpu_us_per_frame', 'node_cpu_us_per_frame_max', 'redis_cpu_us_per_frame', 'floor_cpu_us_per_frame',
        'uids_online', 'count_ms.p50_ms', 'count_ms.p99_ms', 'node0_cpu_us_per_count', 'node1_cpu_us_per_count',
        'node2_cpu_us_per_count', 'nodes_cpu_us_per_count', 'redis_cpu_us_per_count',
        'redis_cpu_us_per_uid_online', 'redis_bytes_per_uid_online']
by = defaultdict(lambda: defaultdict(list))
for r in runs:
    flat = dict(r)
    for k, v in r.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                flat[kk if k == 'latency_ms' else f'{k}.{kk}'] = vv
    for k in keys:
        if isinstance(flat.get(k), (int, float)):
            by[(r['what'], r['scenario'])][k].append(flat[k])
fmt = lambda v: ' '.join(f'{x:g}' for x in v)
for (what, scen), figs in sorted(by.items()):
    print(f'== {what} {scen}')
    for k, v in figs.items():
        print(f'  {k:32} median {statistics.median(v):10.3f}   runs: {fmt(v)}')
for name, floor_what in [('the floor', 'floor'), ('three floors at once', 'floor-3')]:
    floor = [r['floor_cpu_us_per_frame'] for r in runs if r['what'] == floor_what]
    if not floor:
        continue
    f = statistics.median(floor)
    print(f'== ratio to {name} ({f:.3f} us/frame, median of {len(floor)})')
    for (what, scen), figs in sorted(by.items()):
        for k in ['server_cpu_us_per_frame', 'node0_cpu_us_per_frame', 'node1_cpu_us_per_frame',
                  'node2_cpu_us_per_frame', 'node_cpu_us_per_frame_max']:
            if k in figs and scen != 'floor':
                print(f'  {what} {scen} {k}: {statistics.median(figs[k]) / f:.2f}x')
# Paired: each run divided by the floor run of its own round (minutes apart at most), so
# a slow phase of the box moves both sides of the ratio; the median and range of those.
for floor_what in ['floor', 'floor-3']:
    floors = {r['round']: r['floor_cpu_us_per_frame'] for r in runs if r['what'] == floor_what}
    if not floors:
        continue
    print(f'== paired ratio to {floor_what} of the same round ({len(floors)} rounds)')
    paired = defaultdict(list)
    for r in runs:
        if r['scenario'] == 'floor' or r['round'] not in floors:
            continue
        for k in ['server_cpu_us_per_frame', 'node0_cpu_us_per_frame', 'node1_cpu_us_per_frame',
                  'node2_cpu_us_per_frame', 'node_cpu_us_per_frame_max']:
            if isinstance(r.get(k), (int, float)):
                paired[(r['what'], r['scenario'], k)].append(r[k] / floors[r['round']])
    for (what, scen, k), v in sorted(paired.items()):
        print(f'  {what} {scen} {k}: median {statistics.median(v):.2f}x   rounds: {fmt(round(x, 2) for x in v)}')
if failed:
    print(f'FAILED runs: {len(failed)}')
    sys.exit(1)
EOF
