#!/usr/bin/env bash
# Before/after in one session: run one pushwire-bench scenario against two (or more)
# servers, alternating A, B, A, B, ... with a fresh server per run, then print each
# figure's median per side and its ratio to the first side (`pushwire-bench compare`).
# Machines here are noisy (the same build differed by 2-3x between sessions), so a
# change is judged by this ratio, never by absolute figures from different sessions.
#
# Usage: scripts/bench-compare.sh [-n RUNS] [-o DIR] SIDE [SIDE...] -- SCENARIO [bench args...]
#   SIDE   a directory holding a `pushwire` binary (e.g. a git worktree's target/release),
#          or `node` for the seed pattern on Node + ws (scripts/peers/; NODE_PATH must
#          reach the `ws` package). Its label is the directory's checkout name or `node`;
#          write LABEL=DIR to name a side yourself.
#          One side alone gives its medians over RUNS fresh servers (a scaling table).
#   -n     runs per side (default 3)        -o  where the JSON lines go (default: a temp dir)
#   PUSHWIRE_BENCH  the bench binary (default: target/release/pushwire-bench, built if missing)
#   PUSHWIRE_ARGS   extra daemon flags for pushwire sides
#   PUSHWIRE_TLS_CERT, PUSHWIRE_TLS_KEY  serve wss:// (the daemon reads them itself); the
#          bench then connects to wss://localhost:P trusting that certificate (--tls-ca)
#
# Example (the change in your working tree against main, 19k clients, broadcast only):
#   git worktree add /tmp/main main && (cd /tmp/main && cargo build --release)
#   cargo build --release --workspace
#   scripts/bench-compare.sh main=/tmp/main/target/release new=target/release -- \
#       fanout --fanout-mode broadcast --clients 19000 --rounds 5
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/listening.sh
source scripts/listening.sh

runs=3 out=""
while getopts "n:o:" opt; do
	case $opt in
	n) runs=$OPTARG ;;
	o) out=$OPTARG ;;
	*) sed -n '2,24p' "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
labels=() dirs=()
while (($#)) && [[ $1 != -- ]]; do
	case $1 in
	*=*) labels+=("${1%%=*}") dirs+=("${1#*=}") ;;
	node) labels+=(node) dirs+=(node) ;;
	*) labels+=("$(basename "$(dirname "$(dirname "$(realpath "$1")")")")") dirs+=("$1") ;;
	esac
	shift
done
[[ ${1:-} == -- ]] && shift
if ((${#dirs[@]} < 1 || $# < 1)); then
	sed -n '2,24p' "$0" >&2
	exit 2
fi
for i in "${!dirs[@]}"; do
	[[ ${dirs[$i]} == node || -x ${dirs[$i]}/pushwire ]] ||
		{ echo "bench-compare: no pushwire binary in ${dirs[$i]}" >&2; exit 2; }
	for j in "${!labels[@]}"; do
		((i < j)) && [[ ${labels[$i]} == "${labels[$j]}" ]] &&
			{ echo "bench-compare: two sides are labelled ${labels[$i]}; use LABEL=DIR" >&2; exit 2; }
	done
done

bench=${PUSHWIRE_BENCH:-target/release/pushwire-bench}
if [[ -z ${PUSHWIRE_BENCH:-} ]]; then
	cargo build --release -p pushwire-bench >&2
fi
[[ -n $out ]] || out=$(mktemp -d)
mkdir -p "$out"
for label in "${labels[@]}"; do : >"$out/$label.jsonl"; done

# Raise the soft open-files limit so ~19k clients fit (the children inherit it).
ulimit -n "$(ulimit -Hn)"

pid="" log=""
cleanup() {
	if [[ -n $pid ]]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true # node dies of the signal; pushwire exits 0
	fi
	if [[ -n $log ]]; then rm -f "$log"; fi
}
trap cleanup EXIT

# Starts a server on free ports (port 0) and reads them from its "listening" line.
start() {
	log=$(mktemp)
	if [[ $1 == node ]]; then
		node scripts/peers/node-seed-push.js 0 0 2>"$log" &
	else
		# shellcheck disable=SC2086 # PUSHWIRE_ARGS is a list of flags
		# The HTTP door (absent from older builds, which ignore the variable) on a free port.
		PUSHWIRE_HTTP_LISTEN=127.0.0.1:0 NO_COLOR=1 "$1/pushwire" --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 \
			--max-push-connections 64 ${PUSHWIRE_ARGS:-} 2>"$log" &
	fi
	pid=$!
	listening_ports "$log" "bench-compare ($1)"
}

for run in $(seq "$runs"); do
	for i in "${!dirs[@]}"; do
		echo "bench-compare: run $run/$runs, ${labels[$i]}" >&2
		start "${dirs[$i]}"
		ws_args=(--ws "ws://127.0.0.1:$ws_port/")
		if [[ -n ${PUSHWIRE_TLS_CERT:-} ]]; then
			ws_args=(--ws "wss://localhost:$ws_port/" --tls-ca "$PUSHWIRE_TLS_CERT")
		fi
		# A failed check is kept (its line says ok:false) and fails the comparison below.
		"$bench" "${ws_args[@]}" --push "127.0.0.1:$push_port" --server-pid "$pid" \
			--json-only --progress-ms 0 "$@" >>"$out/${labels[$i]}.jsonl" ||
			echo "bench-compare: ${labels[$i]} run $run failed its checks" >&2
		cleanup
		pid="" log=""
	done
done

files=()
for label in "${labels[@]}"; do files+=("$out/$label.jsonl"); done
echo "bench-compare: JSON lines in $out" >&2
exec "$bench" compare "${files[@]}"
