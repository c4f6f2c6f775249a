# Sourced by the scripts that start a server on port 0 (soak.sh, bench-compare.sh):
# the kernel picks free ports, and the server's "listening ws=HOST:PORT push=HOST:PORT"
# log line (pushwire's, or the Node peer's in the same words) says which.

# listening_ports LOG WHO: waits up to 10 s for that line in LOG, then sets ws_port and
# push_port (and http_port, the HTTP door's, empty if it is off); on failure prints LOG
# and exits 1.
listening_ports() {
	local log=$1 who=$2
	for _ in $(seq 100); do
		grep -q listening "$log" && break
		sleep 0.1
	done
	ws_port=$(sed -n 's/.*listening ws=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
	push_port=$(sed -n 's/.*listening.* push=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
	http_port=$(sed -n 's/.*listening.* http=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
	if [[ -z $ws_port || -z $push_port ]]; then
		cat "$log" >&2
		echo "$who: the server did not start (no ports in its log)" >&2
		exit 1
	fi
}
