#!/usr/bin/env bash
# The kernel-floor ratio of `/broadcast` fan-out, in one session: for each pass, a fresh
# server per side runs `fanout --fanout-mode broadcast`, then `floor` (a bare send() loop
# over as many loopback sockets, no server) runs once; the ratio is each side's server
# CPU per delivered frame over that pass's floor. Both scenarios read with the same number
# of bench worker threads (THREADS), because the readers' scheduling changes what the
# sender pays for each wake-up (docs/benchmarks.md, "Writing through").
#
# Usage: scripts/bench-floor.sh [-n PASSES] [-c CLIENTS] [-r ROUNDS] [-t THREADS] SIDE [SIDE...]
#   SIDE   LABEL=DIR, DIR holding a `pushwire` binary (e.g. before=/tmp/before/target/release)
#   defaults: 3 passes, 19000 clients, 5 rounds, 1 thread
#   PUSHWIRE_BENCH  the bench binary (default: target/release/pushwire-bench)
# Prints one line per run and, per side, the median ratio to the floor.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/listening.sh
source scripts/listening.sh

passes=3 clients=19000 rounds=5 threads=1
while getopts "n:c:r:t:" opt; do
	case $opt in
	n) passes=$OPTARG ;;
	c) clients=$OPTARG ;;
	r) rounds=$OPTARG ;;
	t) threads=$OPTARG ;;
	*) sed -n '2,14p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
(($#)) || { sed -n '2,14p' "$0" >&2; exit 2; }
bench=${PUSHWIRE_BENCH:-target/release/pushwire-bench}
[[ -x $bench ]] || cargo build --release -p pushwire-bench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" | head -1; }
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

for pass in $(seq "$passes"); do
	declare -A cpu=()
	for side in "$@"; do
		label=${side%%=*} dir=${side#*=}
		"$dir/pushwire" --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 --http-listen off \
			--max-push-connections 64 >"$tmp/$label.log" 2>&1 &
		pid=$!
		listening_ports "$tmp/$label.log" "$label"
		cpu[$label]=$("$bench" --ws "ws://127.0.0.1:$ws_port/" --push "127.0.0.1:$push_port" \
			--server-pid $pid --threads "$threads" --clients "$clients" \
			fanout --fanout-mode broadcast --rounds "$rounds" 2>/dev/null | field server_cpu_us_per_frame)
		kill $pid
		wait $pid 2>/dev/null || true
	done
	floor=$("$bench" floor --threads "$threads" --clients "$clients" --rounds "$rounds" 2>/dev/null |
		field floor_cpu_us_per_frame)
	for side in "$@"; do
		label=${side%%=*}
		ratio=$(awk -v a="${cpu[$label]}" -v b="$floor" 'BEGIN {printf "%.3f", a / b}')
		echo "pass $pass: $label ${cpu[$label]} µs/frame, floor $floor µs/frame, ratio $ratio"
		echo "$ratio" >>"$tmp/ratios-$label"
	done
done
for side in "$@"; do
	label=${side%%=*}
	echo "$label: median ratio to the floor $(median <"$tmp/ratios-$label") over $passes passes" \
		"($clients clients, $threads bench thread(s))"
done
