#!/usr/bin/env bash
# Issue 25's run: NODES release nodes (10), each holding CLIENTS browsers (19,000: 190,000 in
# all), linked by one redis-server (REDIS=single) or a three-master Redis Cluster
# (REDIS=cluster, made with `redis-cli --cluster create` as tests/common/redis.rs does), all
# started here on free ports. Per round (ROUNDS):
#   floor        the kernel's floor: a bare send() loop over CLIENTS loopback sockets
#   floor-N      NODES such senders at once (CLIENTS sockets each): the like-for-like floor
#                for NODES nodes fanning out together on the same cores
#   N-nodes      cluster-fanout: one bench child per node (its browsers from 127.K+1.0.0/16),
#                bound one node at a time (cluster-bind: each node's connect time, its CPU per
#                client and idle RSS per connection; Redis's CPU and used_memory per uid
#                online, all masters summed; node and Redis CPU in two idle 5 s windows,
#                right after the storms and 10 s later), then per-uid (one line per uid, 190k lines on one
#                connection to node PUSH_VIA), /broadcast and /group (FANOUT_MODE): last
#                delivery on any node, each node's CPU per frame it delivered, Redis's CPU
# Every run's JSON line (tagged with its round) goes to OUT/runs.jsonl; at the end a table
# per node and the ratios of each node's CPU per frame to the floors of the same round.
#
# Usage: flock /tmp/bench.lock scripts/bench-190k.sh
# Env: NODES (10), CLIENTS (19000: browsers per node), REDIS (single | cluster), ROUNDS (1),
#      FANOUT_ROUNDS (3), FANOUT_MODE (all; or per-uid, broadcast, group), PUSH_VIA (0),
#      THREADS (1: bench worker threads per child, for the floor and the holders alike),
#      CLUSTER_TIMEOUT_MS (10000: a /group of 190k members outlasts the default 1 s on 2
#      cores; every member still gets it but the reply would count fewer), DRAIN_MS (60000:
#      how long a holder waits for its frames), the nodes' --max-group-members is NODES x
#      CLIENTS (its default, 100,000, is below 190k), FLOOR (1; 0 skips both floors),
#      NODE_FLAGS, BENCH_FLAGS (more flags for the nodes / the bench), OUT (a new temporary
#      directory), BIN (target/release).
# Needs target/release/{pushwire,pushwire-bench}, redis-server and redis-cli, and an open-files
# limit (ulimit -n) above CLIENTS + 200: each node and each bench child holds CLIENTS sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/listening.sh
NODES=${NODES:-10} CLIENTS=${CLIENTS:-19000} REDIS=${REDIS:-single} ROUNDS=${ROUNDS:-1}
FANOUT_ROUNDS=${FANOUT_ROUNDS:-3} FANOUT_MODE=${FANOUT_MODE:-all} PUSH_VIA=${PUSH_VIA:-0}
THREADS=${THREADS:-1} CLUSTER_TIMEOUT_MS=${CLUSTER_TIMEOUT_MS:-10000} DRAIN_MS=${DRAIN_MS:-60000}
FLOOR=${FLOOR:-1}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
runs=$OUT/runs.jsonl
: >"$runs"
bin=${BIN:-target/release}
nofile=$(ulimit -n)
if [[ $nofile != unlimited ]] && ((nofile < CLIENTS + 200)); then
	echo "bench-190k: ulimit -n is $nofile; $CLIENTS browsers per node need $((CLIENTS + 200))" >&2
	exit 2
fi
free_port() { # below 55535: a cluster master's bus listens on port + 10000
	python3 -c 'import socket,random
while True:
    p=random.randrange(20000,55000); s=socket.socket(); b=socket.socket()
    try: s.bind(("127.0.0.1",p)); b.bind(("127.0.0.1",p+10000)); print(p); break
    except OSError: pass'
}
pids=()
# Whatever ends the script ends what it started: the nodes first (a node whose Redis is
# gone waits for it while shutting down), then Redis.
node_pids=()
stop_all() {
	kill "${node_pids[@]}" 2>/dev/null || true
	for p in "${node_pids[@]}"; do
		while kill -0 "$p" 2>/dev/null; do sleep 0.1; done
	done
	kill "${pids[@]}" 2>/dev/null || true
}
trap stop_all EXIT
# Redis: rpids (every master's PID), raddrs (HOST:PORT each), url (the nodes' --redis).
rpids=() raddrs=()
redis_up() { # $1 port
	for _ in $(seq 100); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0 || sleep 0.1; done
	echo "bench-190k: redis-server on $1 did not start" >&2 && exit 1
}
case $REDIS in
single)
	port=$(free_port)
	redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null 2>&1 &
	pids+=($!) rpids+=($!) raddrs+=("127.0.0.1:$port")
	redis_up "$port"
	url="redis://127.0.0.1:$port/"
	;;
cluster)
	ports=()
	for _ in 1 2 3; do
		port=$(free_port)
		mkdir -p "$OUT/redis-$port"
		(cd "$OUT/redis-$port" && exec redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
			--cluster-enabled yes --cluster-config-file nodes.conf >/dev/null 2>&1) &
		pids+=($!) rpids+=($!) raddrs+=("127.0.0.1:$port") ports+=("$port")
	done
	for p in "${ports[@]}"; do redis_up "$p"; done
	redis-cli --cluster create "${raddrs[@]}" --cluster-replicas 0 --cluster-yes >"$OUT/cluster-create.log" 2>&1
	for _ in $(seq 100); do
		redis-cli -p "${ports[0]}" cluster info | grep -q 'cluster_state:ok' && break
		sleep 0.1
	done
	url="redis-cluster://127.0.0.1:${ports[0]}?node=127.0.0.1:${ports[1]}&node=127.0.0.1:${ports[2]}"
	;;
*) echo "bench-190k: REDIS must be single or cluster" >&2 && exit 2 ;;
esac
read -ra node_flags <<<"${NODE_FLAGS:-}"
read -ra bench_flags <<<"${BENCH_FLAGS:-}"
node_args=()
for k in $(seq 0 $((NODES - 1))); do
	log=$OUT/node-$k.log # kept: WARN lines at this size are findings
	PUSHWIRE_HTTP_LISTEN=off NO_COLOR=1 $bin/pushwire --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 \
		--max-push-connections 64 --redis "$url" --cluster-timeout-ms "$CLUSTER_TIMEOUT_MS" \
		--max-group-members $((NODES * CLIENTS)) "${node_flags[@]}" >/dev/null 2>"$log" &
	pids+=($!) node_pids+=($!)
	listening_ports "$log" "node $k"
	node_args+=(--node "ws://127.0.0.1:$ws_port/,127.0.0.1:$push_port,${node_pids[k]}")
done
sleep 1
redis_pid_list=$(
	IFS=,
	echo "${rpids[*]}"
)
redis_flags=()
for a in "${raddrs[@]}"; do redis_flags+=(--redis "$a"); done
echo "bench-190k: $NODES nodes x $CLIENTS browsers, Redis $REDIS (${raddrs[*]}), out $OUT" >&2
failed=0
bench() { # LABEL ARGS...: one run, its JSON lines tagged with what=LABEL and the round; a
	# run that fails its checks is marked in them (ok: false) and the rest still runs
	local label=$1
	shift
	echo "bench-190k: $(date -u +%T) $label (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
	$bin/pushwire-bench --json-only --progress-ms 0 "${bench_flags[@]}" "$@" |
		python3 -c "
import json,sys
for l in sys.stdin:
    if l.startswith('{'):
        d=json.loads(l); d['what']='$label'; d['round']=$round; d['redis_mode']='$REDIS'; print(json.dumps(d))
" >>"$runs" || failed=1
}
for round in $(seq "$ROUNDS"); do
	if ((FLOOR)); then
		bench floor --threads "$THREADS" floor --clients "$CLIENTS" --rounds "$FANOUT_ROUNDS"
		bench "floor-$NODES" --threads "$THREADS" --floor-senders "$NODES" floor --clients "$CLIENTS" --rounds "$FANOUT_ROUNDS"
	fi
	bench "$NODES-nodes" --threads "$THREADS" --redis-pid "$redis_pid_list" --fanout-mode "$FANOUT_MODE" \
		--drain-timeout-ms "$DRAIN_MS" cluster-fanout --push-via "$PUSH_VIA" --clients "$CLIENTS" \
		--rounds "$FANOUT_ROUNDS" "${redis_flags[@]}" "${node_args[@]}"
done
((failed)) && echo "bench-190k: a run failed its checks (see above)" >&2
echo "bench-190k: $(date -u +%T) done (load $(cut -d' ' -f1-3 /proc/loadavg)); runs in $runs" >&2
python3 - "$runs" "$NODES" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
nodes = int(sys.argv[2])
med = statistics.median
floors = {}
for r in runs:
    if r['scenario'] == 'floor':
        floors.setdefault(r['round'], {})[r['what']] = r['floor_cpu_us_per_frame']
        print(f"round {r['round']} {r['what']}: {r['floor_cpu_us_per_frame']:.3f} us/frame")
for r in runs:
    if r['scenario'] == 'cluster-bind':
        print(f"\n== round {r['round']} cluster-bind: {r['clients']} browsers on {r['nodes']} nodes")
        print('node  connect_ms  cpu_us/client  rss_B/conn  rss_MiB  idle_cpu_ms/s  steady_ms/s')
        for k in range(nodes):
            g = lambda key: r.get(f'node{k}_{key}')
            print(f"{k:4}  {g('connect_ms') or 0:10.0f}  {g('cpu_us_per_client_bound') or 0:13.1f}  "
                  f"{g('rss_bytes_per_conn') or 0:10.0f}  {(g('rss_kib') or 0) / 1024:7.1f}  "
                  f"{g('idle_cpu_ms_per_s') or 0:13.2f}  {g('steady_cpu_ms_per_s') or 0:11.2f}")
        for key in ['connect_ms_median', 'connect_ms_max', 'rss_bytes_per_conn_median', 'slab_bytes_per_conn',
                    'redis_cpu_us_per_uid_online', 'redis_bytes_per_uid_online', 'redis_used_memory_after',
                    'redis_idle_cpu_ms_per_s', 'redis_steady_cpu_ms_per_s']:
            if key in r:
                print(f'  {key:30} {r[key]}')
for r in runs:
    s = r['scenario']
    if not s.startswith('cluster-fanout'):
        continue
    fl = floors.get(r['round'], {})
    print(f"\n== round {r['round']} {s}: last delivery {r['last_delivery_ms']} ms "
          f"(rounds {r['last_delivery_ms_rounds']}), last reply {r['last_reply_ms']} ms, "
          f"redis {r.get('redis_cpu_us_per_frame')} us/frame, all nodes {r['server_cpu_us_per_frame']} us/frame")
    print('node  cpu_us/frame' + ''.join(f'  / {w:>9}' for w in fl))
    for k in range(nodes):
        v = r[f'node{k}_cpu_us_per_frame']
        print(f'{k:4}  {v:12.2f}' + ''.join(f'  {v / f:10.2f}x' for f in fl.values()))
    v = r['node_cpu_us_per_frame_max']
    print(' max  ' + f'{v:12.2f}' + ''.join(f'  {v / f:10.2f}x' for f in fl.values()))
failed = [r for r in runs if not r.get('ok')]
if failed:
    print(f"FAILED runs: {[(r['what'], r['scenario'], r.get('errors')) for r in failed]}")
    sys.exit(1)
EOF
