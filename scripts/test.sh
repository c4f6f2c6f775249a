#!/usr/bin/env bash
# The project's test command: make sure the real clients the tests drive exist
# (php with its curl and redis extensions, OpenBSD nc, chromium, curl, Prometheus's
# promtool, nginx with its nchan module and openssl, iproute2, Autobahn|Testsuite's wstest, the Pusher clients:
# pusher-js, Laravel Echo and the Node and Python server SDKs), then run every cargo test
# of the workspace: the daemon's and the load tool's (bench/, whose smoke tests run both binaries).
#
# Usage: scripts/test.sh [extra cargo test args...]
#   e.g. scripts/test.sh chromium -- --nocapture   (a name filter, applied to every target)
#
# Missing packages are installed with apt-get (as root, or through sudo). The
# tests never skip: if a client cannot be provided, this script fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

die() {
	echo "test.sh: $*" >&2
	exit 1
}

# nc must be the OpenBSD netcat: the tests use -N (shut down the write side at EOF).
nc_is_openbsd() {
	local help
	command -v nc >/dev/null 2>&1 || return 1
	help="$(nc -h 2>&1 || true)"
	grep -qE '^[[:space:]]+-N[[:space:]]' <<<"$help"
}

missing_packages() {
	command -v php >/dev/null 2>&1 || echo php-cli
	# The seed's web-msg-sender backend posts with PHP's curl_* functions.
	php -r 'exit(function_exists("curl_init") ? 0 : 1);' >/dev/null 2>&1 || echo php-curl
	# The seed's Redis-queue push centre (issue 22) lpushes with phpredis's Redis class.
	php -r 'exit(class_exists("Redis") ? 0 : 1);' >/dev/null 2>&1 || echo php-redis
	nc_is_openbsd || echo netcat-openbsd
	command -v chromium >/dev/null 2>&1 || echo chromium
	command -v curl >/dev/null 2>&1 || echo curl
	# promtool checks /metrics; Debian ships it in the prometheus package.
	command -v promtool >/dev/null 2>&1 || echo prometheus
	command -v redis-server >/dev/null 2>&1 || echo redis-server
	# tests/cluster_faults.rs cuts a node's link to Redis: a veth pair between network
	# namespaces (ip netns, ip link), as root.
	command -v ip >/dev/null 2>&1 || echo iproute2
	# tests/nginx.rs puts Debian's nginx (run as this user, on free ports) in front of the
	# daemon, with a throw-away certificate made by openssl. Installing the package also
	# starts a system nginx on port 80; the tests never talk to it.
	command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || echo nginx
	command -v openssl >/dev/null 2>&1 || echo openssl
	# bench/tests/bench_doors.rs compares the load tool's doors with nchan, nginx's pub/sub
	# module (scripts/peers/nchan.sh runs it as this user, on a free port).
	[[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]] || echo libnginx-mod-nchan
	# The Pusher clients (scripts/pusher-clients.sh): npm packages and a Python venv.
	command -v node >/dev/null 2>&1 || echo nodejs
	command -v npm >/dev/null 2>&1 || echo npm
	python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || echo python3-venv
}

as_root() {
	if ((EUID == 0)); then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo env DEBIAN_FRONTEND=noninteractive "$@"
	else
		die "not root and no sudo: cannot run '$*'; install ${missing[*]} yourself"
	fi
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]})); then
	command -v apt-get >/dev/null 2>&1 ||
		die "missing ${missing[*]} and no apt-get here; install them yourself"
	echo "test.sh: installing ${missing[*]}" >&2
	as_root apt-get update -q
	plain=() lean=()
	for p in "${missing[@]}"; do
		# prometheus (for its promtool) without the node exporter it recommends.
		if [[ $p == prometheus ]]; then lean+=("$p"); else plain+=("$p"); fi
	done
	((${#plain[@]} == 0)) || as_root apt-get install -y -q "${plain[@]}"
	((${#lean[@]} == 0)) || as_root apt-get install -y -q --no-install-recommends "${lean[@]}"
fi

# netcat-traditional may still own the `nc` alternative after netcat-openbsd is in.
if ! nc_is_openbsd && [[ -x /bin/nc.openbsd ]]; then
	as_root update-alternatives --set nc /bin/nc.openbsd
fi

mapfile -t missing < <(missing_packages)
((${#missing[@]} == 0)) || die "still missing after install: ${missing[*]}"

# Autobahn|Testsuite's wstest for tests/conformance.rs: a Python 2.7 virtualenv from PyPI,
# by default in /opt/autobahn (AUTOBAHN_HOME moves it; the test reads the same variable).
scripts/autobahn.sh >/dev/null || die "cannot install Autobahn|Testsuite (scripts/autobahn.sh)"

# pusher-js, laravel-echo and the Node server SDK (npm ci, tests/pusher/package-lock.json)
# and the Python server SDK (a venv, tests/pusher/requirements.txt) for tests/pusher_clients.rs.
scripts/pusher-clients.sh || die "cannot install the Pusher clients (scripts/pusher-clients.sh)"

# --no-fail-fast: one failing target must not hide the results of the others.
exec cargo test --workspace --all-targets --no-fail-fast "$@"
