#!/usr/bin/env bash
# Three doors side by side with pushwire-bench's channel-fanout (docs/benchmarks.md):
# pushwire's own protocol (uids, a group, the TCP push port), pushwire's Pusher Channels
# door (`pusher:subscribe`, the signed HTTP API on the HTTP door) and nchan (nginx; the
# channel in the subscriber's URL, `POST /pub/CHANNEL`). Each run starts a fresh server
# (a release pushwire with a Pusher app and its HTTP door on, or nginx with nchan via
# scripts/peers/nchan.sh), runs one bench against it and stops it; the doors alternate
# (own, pusher, nchan) for ROUNDS rounds. Then each figure's median per door and its
# ratio to the own door (`pushwire-bench compare`).
#
# Usage: scripts/bench-doors.sh [-n ROUNDS] [-c CLIENTS] [-m shared|per-uid|both]
#                               [-r PUBLISHES] [-o DIR] [-- extra bench args]
#   -n  ROUNDS, alternations (default 3, or $ROUNDS)
#   -c  CLIENTS, subscribers (default 19000, or $CLIENTS): 19k client sockets and 19k server
#       sockets need ~20,000 open files per process (the bench spreads its sockets over
#       127.0.0.x source addresses by itself)
#   -m  shared: every client on one channel, one publish per round (the default);
#       per-uid: a channel per client, one publish per client per round; both
#   -r  publish rounds within one run (default 5): figures are their medians
#   -o  where the JSON lines go (default: a temp dir), one file per door and mode
#   PUSHWIRE_BIN_DIR  where pushwire and pushwire-bench are (default target/release, built
#       with cargo if that is the one used)
#   NCHAN_PORT  nchan's port (default: a free one)
# Needs nginx and libnginx-mod-nchan (Debian) for the nchan side. Measure under the
# machine's CPU lock if it is shared, e.g. `flock /tmp/bench.lock scripts/bench-doors.sh`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/listening.sh
source scripts/listening.sh

rounds=${ROUNDS:-3} clients=${CLIENTS:-19000} modes=shared publishes=5 out=""
while getopts "n:c:m:r:o:" opt; do
	case $opt in
	n) rounds=$OPTARG ;;
	c) clients=$OPTARG ;;
	m) modes=$OPTARG ;;
	r) publishes=$OPTARG ;;
	o) out=$OPTARG ;;
	*) sed -n '2,27p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ ${1:-} == -- ]] && shift
[[ $modes == both ]] && modes="shared per-uid"
for m in $modes; do
	[[ $m == shared || $m == per-uid ]] || { echo "bench-doors: -m shared|per-uid|both" >&2; exit 2; }
done

bin=${PUSHWIRE_BIN_DIR:-target/release}
if [[ -z ${PUSHWIRE_BIN_DIR:-} ]]; then
	cargo build --release --workspace >&2
fi
for b in pushwire pushwire-bench; do
	[[ -x $bin/$b ]] || { echo "bench-doors: no $bin/$b" >&2; exit 2; }
done
[[ -n $out ]] || out=$(mktemp -d)
mkdir -p "$out"
work=$(mktemp -d)

# One Pusher app for the door (the bench's defaults for key, id and secret).
key=bench-key id=bench secret=bench-secret-0123456789
printf '{"apps":[{"id":"%s","key":"%s","secret":"%s"}]}\n' "$id" "$key" "$secret" >"$work/apps.json"
nchan_port=${NCHAN_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}

# Raise the soft open-files limit to the hard one (the servers and the bench inherit it).
ulimit -n "$(ulimit -Hn)"

pid="" log=""
cleanup() {
	if [[ -n $pid ]]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	scripts/peers/nchan.sh stop "$work/nchan" 2>/dev/null || true
	pid=""
}
trap 'cleanup; rm -rf "$work"' EXIT

# A fresh pushwire on free ports, the HTTP door and the Pusher app on; the push and HTTP
# connection budgets small so the open-files limit leaves room for the browsers.
start_pushwire() {
	log=$(mktemp -p "$work" pushwire.XXXXXX.log) # a new file: the last run's says "listening" too
	NO_COLOR=1 "$bin/pushwire" --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 \
		--http-listen 127.0.0.1:0 --pusher-apps "$work/apps.json" \
		--max-push-connections 64 --max-http-connections 16 --max-http-connections-per-ip 8 \
		2>"$log" &
	pid=$!
	listening_ports "$log" "bench-doors (pushwire)"
	[[ -n $http_port ]] || { cat "$log" >&2; echo "bench-doors: no HTTP door" >&2; exit 1; }
}

echo "bench-doors: $rounds rounds, $clients clients, modes: $modes; load average: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for mode in $modes; do
	mkdir -p "$out/$mode"
	for door in own pusher nchan; do : >"$out/$mode/$door.jsonl"; done
	for run in $(seq "$rounds"); do
		for door in own pusher nchan; do
			echo "bench-doors: $mode, run $run/$rounds, $door (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
			case $door in
			own)
				start_pushwire
				args=(--ws "ws://127.0.0.1:$ws_port/" --push "127.0.0.1:$push_port" --server-pid "$pid")
				;;
			pusher)
				start_pushwire
				args=(--door pusher --ws "ws://127.0.0.1:$ws_port" --http "127.0.0.1:$http_port"
					--pusher-key "$key" --pusher-id "$id" --pusher-secret "$secret" --server-pid "$pid")
				;;
			nchan)
				npid=$(scripts/peers/nchan.sh start "$work/nchan" "$nchan_port")
				args=(--door nchan --ws "ws://127.0.0.1:$nchan_port" --server-pid "$npid" --server-children)
				;;
			esac
			# A failed check is kept (its line says ok:false) and fails the comparison below.
			"$bin/pushwire-bench" "${args[@]}" --json-only --progress-ms 0 channel-fanout \
				--channel-mode "$mode" --clients "$clients" --rounds "$publishes" "$@" \
				>>"$out/$mode/$door.jsonl" ||
				echo "bench-doors: $door run $run failed its checks" >&2
			cleanup
		done
	done
done
echo "bench-doors: load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); JSON lines in $out" >&2
status=0
for mode in $modes; do
	echo "== $mode: medians of $rounds runs; ratio = door / own =="
	"$bin/pushwire-bench" compare "$out/$mode/own.jsonl" "$out/$mode/pusher.jsonl" \
		"$out/$mode/nchan.jsonl" || status=1
done
exit "$status"
