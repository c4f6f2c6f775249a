#!/usr/bin/env bash
# What events cost the daemon: one pushwire binary run with no event listener (`off`)
# and with a webhook receiver attached that takes every kind but `message` (`on`),
# alternating off, on, off, on, ... in one session (scripts/bench-compare.sh), then the
# medians and their ratio. The receiver is pushwire-bench's own (`events-receiver`: a
# hyper server answering 204), a separate process, so its CPU is not the server's.
#
# Usage: scripts/bench-events.sh [-n RUNS] [-d DIR] -- SCENARIO [bench args...]
#   -d    where the pushwire binary is (default target/release)
# Examples (docs/benchmarks.md, "Events"):
#   scripts/bench-events.sh -n 5 -- throughput --clients 1000 --pushes 200000
#   scripts/bench-events.sh -n 5 -- storm --clients 5000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

runs=3 dir=target/release
while getopts "n:d:" opt; do
	case $opt in
	n) runs=$OPTARG ;;
	d) dir=$OPTARG ;;
	*) sed -n '2,13p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[[ ${1:-} == -- ]] && shift
(($#)) || { sed -n '2,13p' "$0" >&2; exit 2; }
bin=$(realpath "$dir/pushwire")
[[ -x $bin ]] || { echo "bench-events: no pushwire binary in $dir" >&2; exit 2; }
bench=${PUSHWIRE_BENCH:-target/release/pushwire-bench}
if [[ -z ${PUSHWIRE_BENCH:-} ]]; then
	cargo build --release -p pushwire-bench >&2
fi

tmp=$(mktemp -d)
# The receiver runs until its stdin closes: this script's end.
coproc RECEIVER { exec "$bench" events-receiver; }
trap 'exec {RECEIVER[1]}>&-; wait "$RECEIVER_PID" 2>/dev/null || true; rm -rf "$tmp"' EXIT
read -r word port <&"${RECEIVER[0]}"
[[ $word == port ]] || { echo "bench-events: the receiver said $word $port" >&2; exit 1; }

# Each side is a directory whose `pushwire` execs the one binary (so the bench's
# --server-pid is the daemon's), with or without the receiver.
mkdir -p "$tmp/off" "$tmp/on"
printf '#!/bin/sh\nexec %q "$@"\n' "$bin" >"$tmp/off/pushwire"
printf '#!/bin/sh\nexec %q --events-url %q --events-secret bench "$@"\n' \
	"$bin" "http://127.0.0.1:$port/hook" >"$tmp/on/pushwire"
chmod +x "$tmp/off/pushwire" "$tmp/on/pushwire"
PUSHWIRE_BENCH=$bench scripts/bench-compare.sh -n "$runs" off="$tmp/off" on="$tmp/on" -- "$@"
