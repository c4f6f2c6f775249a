#!/usr/bin/env bash
# Installs the real Pusher clients the tests drive (tests/pusher_clients.rs, docs/pusher.md):
#   - tests/pusher/node_modules: pusher-js and laravel-echo (served to headless Chromium
#     from there, no CDN) and the Node server SDK `pusher`, exactly as package-lock.json
#     pins them (`npm ci`);
#   - tests/pusher/.venv: a Python virtualenv with the PyPI server SDK `pusher` and what it
#     pulls in, pinned in tests/pusher/requirements.txt.
# Idempotent: a second run only checks the stamps and that both load.
#
# Usage: scripts/pusher-clients.sh          install if needed
#        scripts/pusher-clients.sh --check  exit 0 if installed and loading, 1 if not
#
# Needs node and npm (Node 20 or later) and python3 with its venv module; scripts/test.sh
# installs them with apt-get when missing. Fails loudly if anything cannot be had.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../tests/pusher"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 npm_config_audit=false npm_config_fund=false

die() {
	echo "pusher-clients.sh: $*" >&2
	exit 1
}

NODE_STAMP="$(sha256sum package-lock.json | cut -d' ' -f1)"
PY_STAMP="$(sha256sum requirements.txt | cut -d' ' -f1)"

node_ok() {
	[[ -f node_modules/.pushwire-stamp && "$(cat node_modules/.pushwire-stamp)" == "$NODE_STAMP" ]] &&
		[[ -f node_modules/pusher-js/dist/web/pusher.js && -f node_modules/laravel-echo/dist/echo.iife.js ]] &&
		node -e 'require("pusher")' >/dev/null 2>&1
}

python_ok() {
	[[ -f .venv/.pushwire-stamp && "$(cat .venv/.pushwire-stamp)" == "$PY_STAMP" ]] &&
		.venv/bin/python -c 'import pusher' >/dev/null 2>&1
}

if [[ ${1:-} == --check ]]; then
	node_ok && python_ok
	exit
fi
[[ $# -eq 0 ]] || die "usage: scripts/pusher-clients.sh [--check]"

command -v node >/dev/null 2>&1 || die "no node (scripts/test.sh installs nodejs)"
command -v npm >/dev/null 2>&1 || die "no npm (scripts/test.sh installs npm)"
major="$(node -p 'process.versions.node.split(".")[0]')"
((major >= 20)) || die "node $(node --version) is too old: laravel-echo 2 wants Node 20 or later"

# Two test runs may start this at once: one installs, the other waits and finds it done.
exec 9>.install.lock || die "cannot write tests/pusher/.install.lock"
flock 9

if ! node_ok; then
	echo "pusher-clients.sh: npm ci (pusher-js, laravel-echo, pusher)" >&2
	rm -rf node_modules
	npm ci --no-audit --no-fund --loglevel=error >&2 || die "npm ci failed (pins in tests/pusher/package-lock.json)"
	echo "$NODE_STAMP" >node_modules/.pushwire-stamp
	node_ok || die "the npm packages do not load"
fi

if ! python_ok; then
	echo "pusher-clients.sh: python venv with pusher (PyPI)" >&2
	rm -rf .venv
	python3 -m venv .venv || die "python3 -m venv failed (scripts/test.sh installs python3-venv)"
	.venv/bin/pip install -q --no-cache-dir -r requirements.txt >&2 ||
		die "pip could not install tests/pusher/requirements.txt"
	echo "$PY_STAMP" >.venv/.pushwire-stamp
	python_ok || die "the Python SDK does not load"
fi
