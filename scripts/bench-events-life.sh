#!/usr/bin/env bash
# What a browser connection's whole life costs in events: the server's CPU (schedstat of
# its threads) from its start to CLIENTS connections opened, bound (`storm`), closed (the
# bench exits) and their offlines told (a --events-debounce-ms of 200 waited out), without
# a listener (`off`) and with pushwire-bench's webhook receiver taking every kind but
# `message` (`on`): connect, online, bind, close, offline, five events a connection (a
# queue of 100,000, so the closes' burst drops none).
# Alternates off, on, ... RUNS times; prints each run's CPU per connection and the medians.
#
# Usage: scripts/bench-events-life.sh [RUNS] [CLIENTS]   (defaults 5, 5000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/listening.sh
source scripts/listening.sh
runs=${1:-5} clients=${2:-5000}
bin=target/release/pushwire bench=target/release/pushwire-bench
ulimit -n "$(ulimit -Hn)"
coproc RECEIVER { exec "$bench" events-receiver; }
read -r _ port <&"${RECEIVER[0]}"
log=$(mktemp)
trap 'exec {RECEIVER[1]}>&-; rm -f "$log"' EXIT

# The CPU of PID's threads, ns (schedstat's first field, summed).
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {print s}'; }

declare -A per
for run in $(seq "$runs"); do
	for side in off on; do
		extra=()
		[[ $side == on ]] && extra=(--events-url "http://127.0.0.1:$port/hook" --events-secret bench)
		NO_COLOR=1 "$bin" --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 --http-listen off \
			--max-push-connections 64 --events-debounce-ms 200 --events-queue 100000 "${extra[@]}" 2>"$log" &
		pid=$!
		listening_ports "$log" bench-events-life
		"$bench" --ws "ws://127.0.0.1:$ws_port/" --push "127.0.0.1:$push_port" --json-only \
			--progress-ms 0 storm --clients "$clients" >/dev/null
		sleep 2 # the closes, then the offlines (200 ms debounce)
		ns=$(cpu_ns "$pid")
		kill "$pid"; wait "$pid" || true
		us=$(awk -v ns="$ns" -v n="$clients" 'BEGIN {printf "%.1f", ns / n / 1000}')
		echo "run $run $side: $us µs of server CPU per connection" >&2
		per[$side]+="$us "
	done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
off=$(echo "${per[off]}" | median) on=$(echo "${per[on]}" | median)
awk -v off="$off" -v on="$on" 'BEGIN {printf "median per connection: off %s µs, on %s µs, on/off %.2f, per event (5) %.1f µs\n", off, on, on / off, (on - off) / 5}'
