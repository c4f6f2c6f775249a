#!/usr/bin/env bash
# Soak test: one pushwire daemon, round after round of clients that connect, bind,
# receive and leave while backends push, each round checked by pushwire-bench's exact
# ledger (every `ok` delivered exactly once, byte-exact, no unexpected `fail`).
# At the end the registry must be empty again and the daemon's memory back near the
# level it had after the first round.
#
# Usage: scripts/soak.sh [SECONDS] [CLIENTS]      (defaults: 600 s, 2000 clients)
#   PUSHWIRE_BIN_DIR  where pushwire and pushwire-bench are (default: target/release,
#                     built if missing)
#   SOAK_MAX_GROWTH_KIB  allowed RSS growth over the first round (default 16384)
# Prints one summary line and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/listening.sh
source scripts/listening.sh

duration=${1:-600}
clients=${2:-2000}
bin_dir=${PUSHWIRE_BIN_DIR:-target/release}
max_growth=${SOAK_MAX_GROWTH_KIB:-16384}
if [[ -z ${PUSHWIRE_BIN_DIR:-} ]]; then
	cargo build --release --workspace --bins >&2
fi

log=$(mktemp)
PUSHWIRE_HTTP_LISTEN=127.0.0.1:0 NO_COLOR=1 "$bin_dir/pushwire" --ws-listen 127.0.0.1:0 --push-listen 127.0.0.1:0 \
	--max-push-connections 64 --group-grace-ms 1000 2>"$log" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -f "$log"' EXIT
listening_ports "$log" soak

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
ask() { printf '%s\n' "$1" | nc -N 127.0.0.1 "$push_port"; }

rounds=0 failures=0 baseline=0
start=$(date +%s)
while (($(date +%s) - start < duration)) || ((rounds == 0)); do
	if ! "$bin_dir/pushwire-bench" --ws "ws://127.0.0.1:$ws_port/" --push "127.0.0.1:$push_port" \
		--server-pid "$pid" all --clients "$clients" --smoke >/dev/null 2>&1; then
		failures=$((failures + 1))
		echo "soak: round $((rounds + 1)) failed its ledger" >&2
	fi
	rounds=$((rounds + 1))
	((rounds == 1)) && baseline=$(rss_kib)
	kill -0 "$pid" || { echo "soak: daemon died" >&2; exit 1; }
done

# Every client of the last round has left: the registry must drain to empty, and the
# groups the rounds created must expire with their members' grace period (1 s here).
count=""
for _ in $(seq 50); do
	count=$(ask /count)
	[[ $count == *'"uids":0,"connections":0,"groups":0'* ]] && break
	sleep 0.1
done
final=$(rss_kib)
stats=$(ask /stats)
growth=$((final - baseline))
echo "soak: ${rounds} rounds x ${clients} clients in $(($(date +%s) - start)) s;" \
	"ledger failures ${failures}; registry ${count}; RSS after round 1 ${baseline} KiB," \
	"at end ${final} KiB (growth ${growth} KiB); stats ${stats}"
((failures == 0)) || exit 1
[[ $count == *'"uids":0,"connections":0,"groups":0'* ]] || { echo "soak: registry not empty" >&2; exit 1; }
((growth <= max_growth)) || { echo "soak: memory grew by ${growth} KiB" >&2; exit 1; }
