#!/usr/bin/env bash
# Memory per kept message (protocol v1 history), history on vs off, in one session: for
# each side a fresh daemon, N opted-in clients (pushwire-bench --v1) take P pipelined
# pushes (so every uid keeps --history-messages of them), the clients leave (histories
# stay for --history-keep-ms), then the daemon's VmRSS and /stats history figures.
#
# Usage: scripts/bench-history-mem.sh [PUSHWIRE_BINARY]   (default target/release/pushwire)
#   N (2000) clients, P (400000) pushes, RUNS (2) per side.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/listening.sh
source scripts/listening.sh
bin=${1:-target/release/pushwire}
bench=${PUSHWIRE_BENCH:-target/release/pushwire-bench}
N=${N:-2000} P=${P:-400000} RUNS=${RUNS:-2}
pid=""
trap '[[ -n $pid ]] && kill "$pid" 2>/dev/null; true' EXIT
run() { # label, extra daemon flags
	local log
	log=$(mktemp)
	# shellcheck disable=SC2086 # $2 is a list of flags
	NO_COLOR=1 "$bin" --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 --http-listen off \
		--max-push-connections 64 $2 2>"$log" &
	pid=$!
	listening_ports "$log" "bench-history-mem"
	"$bench" --ws "ws://127.0.0.1:$ws_port/" --push "127.0.0.1:$push_port" --server-pid "$pid" \
		--json-only --progress-ms 0 throughput --v1 --clients "$N" --pushes "$P" >/dev/null
	sleep 1
	local rss stats
	rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
	stats=$(printf '/stats\n' | nc -N 127.0.0.1 "$push_port")
	echo "$1 rss_kib=$rss $(grep -o '"history_uids":[0-9]*' <<<"$stats") $(grep -o '"history_bytes":[0-9]*' <<<"$stats")"
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=""
	rm -f "$log"
}
for _ in $(seq "$RUNS"); do
	run off "--history-messages 0"
	run on ""
done
