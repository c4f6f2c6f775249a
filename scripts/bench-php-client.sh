#!/usr/bin/env bash
# Server CPU per push from the PHP client (clients/php/Pushwire.php), two ways:
#   fresh       a new connection per push (PHP-FPM code without persistence, the seed
#               snippet's pattern: connect, one line, read the reply, close)
#   persistent  the client's default: one socket kept across Client objects (requests)
# One release daemon on port 0; rounds alternate fresh, persistent, fresh, ...; each
# run reads the daemon's utime+stime from /proc/PID/stat before and after and divides by
# its pushes. Pushes go to an offline uid (`fail`): the figure is the push port's cost,
# without fan-out. Prints every run, then the medians and their ratio.
# The persistent figure is about twice as high on an idle box as on a busy one (each push
# is a request/reply ping-pong; likely the wake-up of idle cores): say which box you had.
#
# Usage: scripts/bench-php-client.sh [-r ROUNDS] [-f FRESH_PUSHES] [-p PERSISTENT_PUSHES]
#   -r  rounds of each mode (default 5)   -f  pushes per fresh run (default 10000)
#   -p  pushes per persistent run (default 50000; more than fresh because each costs less,
#       and /proc counts CPU in clock ticks, 10 ms here)
#   PUSHWIRE_BIN   the daemon (default: target/release/pushwire, built first)
#   PUSHWIRE_ARGS  extra daemon flags
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/listening.sh
source scripts/listening.sh

rounds=5 fresh_n=10000 persistent_n=50000
while getopts "r:f:p:" opt; do
	case $opt in
	r) rounds=$OPTARG ;;
	f) fresh_n=$OPTARG ;;
	p) persistent_n=$OPTARG ;;
	*) sed -n '2,19p' "$0" >&2; exit 2 ;;
	esac
done
command -v php >/dev/null || { echo "bench-php-client: php-cli is missing (scripts/test.sh installs it)" >&2; exit 2; }
bin=${PUSHWIRE_BIN:-target/release/pushwire}
if [[ -z ${PUSHWIRE_BIN:-} ]]; then
	cargo build --release --bin pushwire >&2
fi

log=$(mktemp) pid=""
cleanup() {
	if [[ -n $pid ]]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -f "$log"
}
trap cleanup EXIT
# shellcheck disable=SC2086 # PUSHWIRE_ARGS is a list of flags
"$bin" --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 --http-listen off ${PUSHWIRE_ARGS:-} 2>"$log" &
pid=$!
listening_ports "$log" pushwire
addr=tcp://127.0.0.1:$push_port
tck=$(getconf CLK_TCK)

# utime + stime of the daemon, all threads, in clock ticks.
server_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

# run MODE N: prints "server_us_per_push client_us_per_push"
run() {
	local mode=$1 n=$2 before after out wall
	before=$(server_ticks)
	out=$(php scripts/bench-php-client.php "$mode" "$addr" "$n")
	after=$(server_ticks)
	[[ $out == *"fail=$n "* ]] || { echo "bench-php-client: unexpected result: $out" >&2; exit 1; }
	wall=${out##*client_wall_s=}
	awk -v t=$((after - before)) -v tck="$tck" -v n="$n" -v w="$wall" \
		'BEGIN { printf "%.2f %.2f\n", t / tck * 1e6 / n, w * 1e6 / n }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Warm-up (page cache, the daemon's allocator), not counted.
run fresh 1000 >/dev/null
run persistent 1000 >/dev/null

fresh_server=() persistent_server=() fresh_client=() persistent_client=()
echo "round  mode        pushes  server_us/push  php_wall_us/push"
for r in $(seq "$rounds"); do
	read -r s c < <(run fresh "$fresh_n")
	fresh_server+=("$s") fresh_client+=("$c")
	printf '%-6s %-11s %6s  %14s  %16s\n' "$r" fresh "$fresh_n" "$s" "$c"
	read -r s c < <(run persistent "$persistent_n")
	persistent_server+=("$s") persistent_client+=("$c")
	printf '%-6s %-11s %6s  %14s  %16s\n' "$r" persistent "$persistent_n" "$s" "$c"
done
fs=$(printf '%s\n' "${fresh_server[@]}" | median)
ps=$(printf '%s\n' "${persistent_server[@]}" | median)
fc=$(printf '%s\n' "${fresh_client[@]}" | median)
pc=$(printf '%s\n' "${persistent_client[@]}" | median)
echo "medians of $rounds: server CPU per push: fresh $fs us, persistent $ps us," \
	"fresh/persistent $(awk -v a="$fs" -v b="$ps" 'BEGIN { printf "%.2f", a / b }')x;" \
	"php-cli wall per push: fresh $fc us, persistent $pc us"
