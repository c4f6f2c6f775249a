#!/usr/bin/env bash
# Server CPU per push line: the TCP push port against the HTTP door (`POST /push` on
# keep-alive connections), measured from outside: the daemon's utime+stime from /proc
# over each load, divided by the lines it answered. Every push is delivered: one browser
# (a small WebSocket reader in Python) is bound to the uid and reads every frame.
#
#   tcp       the push port, lines pipelined (batches of 1,000; the issue's reference)
#   tcp-rtt   the push port, one line per round trip (the client waits for each reply):
#             the like-for-like of a keep-alive request
#   http-1    one line per `POST /push` (wrk, keep-alive, one request at a time per connection)
#   http-N    N lines per body, per line
#
# Usage: scripts/bench-http-door.sh [-n RUNS] [-d SECONDS] [-c CONNS] [-l LINES] SIDE [SIDE...]
#   SIDE  a directory holding a `pushwire` binary (LABEL=DIR to name it); sides alternate,
#         a fresh daemon per run, and each figure is the median over RUNS.
#   -d    seconds of load per figure (default 5)   -c  HTTP keep-alive connections (default 4)
#   -l    lines per body in the many-line figure (default 100)
# Needs wrk (Debian: apt-get install wrk) and python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=3 secs=5 conns=4 lines=100
while getopts "n:d:c:l:" opt; do
	case $opt in
	n) runs=$OPTARG ;;
	d) secs=$OPTARG ;;
	c) conns=$OPTARG ;;
	l) lines=$OPTARG ;;
	*) sed -n '2,19p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
(($# >= 1)) || { sed -n '2,19p' "$0" >&2; exit 2; }
command -v wrk >/dev/null || { echo "bench-http-door: needs wrk (apt-get install wrk)" >&2; exit 2; }
labels=() dirs=()
for side in "$@"; do
	case $side in
	*=*) labels+=("${side%%=*}") dirs+=("${side#*=}") ;;
	*) labels+=("$(basename "$(dirname "$(dirname "$(realpath "$side")")")")") dirs+=("$side") ;;
	esac
done

work=$(mktemp -d)
pid="" browser=""
cleanup() {
	if [[ -n $browser ]]; then kill "$browser" 2>/dev/null || true; wait "$browser" 2>/dev/null || true; fi
	if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
	pid="" browser=""
}
trap 'cleanup; rm -rf "$work"' EXIT

line='{"uid":"bench-u","msg":"hello from the bench"}'
# wrk scripts: one line per request, and a body of $lines lines.
cat >"$work/one.lua" <<LUA
wrk.method = "POST"
wrk.body = '$line\n'
LUA
body=$(for _ in $(seq "$lines"); do printf '%s\\n' "$line"; done)
cat >"$work/many.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
LUA
# The push port: pipelined batches of 1,000 lines (every reply read before the next
# batch), or (rtt) one line per round trip.
cat >"$work/tcp.py" <<'PY'
import socket, sys, time
port, secs, line, rtt = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3].encode() + b"\n", sys.argv[4] == "rtt"
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
batch = 1 if rtt else 1000
done, end = 0, time.time() + secs
while time.time() < end:
    for _ in range(1000 // batch):
        s.sendall(line * batch)
        got = 0
        while got < batch:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("the server closed the connection")
            got += chunk.count(b"\n")
    done += 1000
print(done)
PY
# The browser: binds bench-u, then reads and drops every frame until killed.
cat >"$work/browser.py" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1024)
uid = b"bench-u"
s.sendall(bytes([0x81, 0x80 | len(uid), 0, 0, 0, 0]) + uid)
while s.recv(1 << 16):
    pass
PY
# One push, its reply printed (to wait for the bind).
cat >"$work/push1.py" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(sys.argv[2].encode() + b"\n")
print(s.recv(64).decode().strip())
PY

ticks=$(getconf CLK_TCK)
cpu_ms() { awk -v t="$ticks" '{ print ($14 + $15) * 1000 / t }' "/proc/$pid/stat"; }

# start DIR: a daemon on free ports with the browser bound; sets pid, push_port, http_port.
start() {
	local log=$work/log
	PUSHWIRE_HTTP_LISTEN=127.0.0.1:0 NO_COLOR=1 "$1/pushwire" --ws-listen 127.0.0.1:0 \
		--push-listen 127.0.0.1:0 2>"$log" &
	pid=$!
	for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.1; done
	ws_port=$(sed -n 's/.*listening ws=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
	push_port=$(sed -n 's/.*listening.* push=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
	http_port=$(sed -n 's/.*listening.* http=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
	[[ -n $ws_port && -n $push_port && -n $http_port ]] ||
		{ cat "$log" >&2; echo "bench-http-door: $1 did not start" >&2; exit 1; }
	python3 "$work/browser.py" "$ws_port" &
	browser=$!
	for _ in $(seq 50); do
		[[ $(python3 "$work/push1.py" "$push_port" "$line") == ok ]] && return
		sleep 0.1
	done
	echo "bench-http-door: the browser did not bind" >&2
	exit 1
}

# wrk_requests SCRIPT: runs wrk, prints the requests it completed (non-2xx fail the run).
wrk_requests() {
	local out
	out=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$1" "http://127.0.0.1:$http_port/push")
	if grep -q "Non-2xx" <<<"$out"; then echo "$out" >&2; exit 1; fi
	awk '/requests in/ { print $1 }' <<<"$out"
}

# µs of server CPU per line: CPU_BEFORE_MS CPU_AFTER_MS LINES
per_line() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.3f", (b - a) * 1000 / n }'; }

for label in "${labels[@]}"; do : >"$work/$label.runs"; done
for run in $(seq "$runs"); do
	for i in "${!dirs[@]}"; do
		start "${dirs[$i]}"
		c0=$(cpu_ms); n=$(python3 "$work/tcp.py" "$push_port" "$secs" "$line" pipelined); c1=$(cpu_ms)
		tcp=$(per_line "$c0" "$c1" "$n")
		c0=$(cpu_ms); n=$(python3 "$work/tcp.py" "$push_port" "$secs" "$line" rtt); c1=$(cpu_ms)
		rtt=$(per_line "$c0" "$c1" "$n")
		c0=$(cpu_ms); n=$(wrk_requests "$work/one.lua"); c1=$(cpu_ms)
		one=$(per_line "$c0" "$c1" "$n")
		c0=$(cpu_ms); n=$(wrk_requests "$work/many.lua"); c1=$(cpu_ms)
		many=$(per_line "$c0" "$c1" "$((n * lines))")
		echo "$tcp $rtt $one $many" >>"$work/${labels[$i]}.runs"
		echo "bench-http-door: run $run ${labels[$i]}: tcp $tcp, tcp-rtt $rtt, http-1 $one, http-$lines $many" >&2
		cleanup
	done
done

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo "server CPU in µs per line (http-1: per request), medians of $runs"
printf '%-10s %8s %8s %8s %9s %11s %13s %11s\n' side tcp tcp-rtt http-1 "http-$lines" \
	"http-1÷tcp" "http-1÷rtt" "http-$lines÷tcp"
for label in "${labels[@]}"; do
	f=$work/$label.runs
	tcp=$(cut -d' ' -f1 "$f" | median) rtt=$(cut -d' ' -f2 "$f" | median)
	one=$(cut -d' ' -f3 "$f" | median) many=$(cut -d' ' -f4 "$f" | median)
	printf '%-10s %8s %8s %8s %9s %11s %13s %11s\n' "$label" "$tcp" "$rtt" "$one" "$many" \
		"$(ratio "$one" "$tcp")" "$(ratio "$one" "$rtt")" "$(ratio "$many" "$tcp")"
done
