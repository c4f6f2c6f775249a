#!/usr/bin/env bash
# Installs Autobahn|Testsuite's `wstest` for tests/conformance.rs, in a virtualenv of its
# own made from Python 2.7 (the suite runs on nothing newer). Idempotent: a second run
# only checks that the install is whole and prints the path.
#
# Usage: scripts/autobahn.sh          install if needed, then print the wstest path
#        scripts/autobahn.sh --check  exit 0 if installed and working, 1 if not (no install)
#
# Environment:
#   AUTOBAHN_HOME  the virtualenv (default /opt/autobahn); wstest is $AUTOBAHN_HOME/bin/wstest,
#                  which is where tests/conformance.rs looks (it reads AUTOBAHN_HOME too).
#                  Outside target/ on purpose: `cargo clean` and a fresh clone keep it,
#                  and every worktree on the machine shares one install.
#   PYTHON2        the interpreter to build it from (default: pyenv's 2.7.18, which this
#                  machine image has at /root/.pyenv/versions/2.7.18).
#
# Needs PyPI (the pins below) and a C compiler (wsaccel and scandir build from source);
# gcc is installed with apt-get if it is missing. Fails loudly if anything cannot be had.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# Python 2 itself and cryptography warn on every start that Python 2 is unsupported.
export PYTHONWARNINGS=ignore

AUTOBAHN_HOME=${AUTOBAHN_HOME:-/opt/autobahn}
WSTEST=$AUTOBAHN_HOME/bin/wstest

die() {
	echo "autobahn.sh: $*" >&2
	exit 1
}

# virtualenv 20.15.1 is the last release that runs on Python 2.7 (and still makes 2.7
# environments); the rest is what it pulls in on 2.7, pinned.
BOOTSTRAP_PINS=(
	virtualenv==20.15.1
	configparser==4.0.2
	contextlib2==0.6.0.post1
	distlib==0.4.4
	filelock==3.2.1
	importlib-metadata==2.1.3
	importlib-resources==3.3.1
	pathlib2==2.3.7.post1
	platformdirs==2.0.2
	scandir==1.10.0
	singledispatch==3.7.0
	six==1.16.0
	typing==3.10.0.0
	zipp==1.2.0
)

# autobahntestsuite 0.8.2 (the last release) requires autobahn 0.10.9 exactly. Everything
# else is the newest version that still installs and runs on Python 2.7, as resolved and
# run here: Twisted 19.10.0 (20.3 needs a newer incremental), cryptography 3.3.2 (last
# with Python 2 wheels), pyOpenSSL 19.1.0, klein 17.10.0, Werkzeug 1.0.1, Jinja2 2.11.3.
SUITE_PINS=(
	autobahntestsuite==0.8.2
	autobahn==0.10.9
	attrs==21.4.0
	Automat==22.10.0
	argparse==1.4.0
	cffi==1.15.1
	constantly==15.1.0
	cryptography==3.3.2
	enum34==1.1.10
	hyperlink==21.0.0
	idna==2.10
	incremental==16.10.1
	ipaddress==1.0.23
	Jinja2==2.11.3
	klein==17.10.0
	linecache2==1.0.0
	MarkupSafe==1.1.1
	pyasn1==0.5.1
	pyasn1-modules==0.3.0
	pycparser==2.21
	PyHamcrest==1.10.1
	pyOpenSSL==19.1.0
	service-identity==18.1.0
	six==1.16.0
	traceback2==1.4.0
	Twisted==19.10.0
	txaio==2.1.0
	typing==3.10.0.0
	ujson==2.0.3
	unittest2==1.1.0
	Werkzeug==1.0.1
	wsaccel==0.6.6
	zope.interface==4.6.0
)

# What pip builds wsaccel with (its pyproject.toml asks for Cython~=3.0.0, setuptools>=35),
# pinned too: PIP_CONSTRAINT reaches pip's isolated build environment, -c would not.
BUILD_PINS=(
	Cython==3.0.12
	setuptools==44.1.1
)

# Changes whenever a pin does, so an install made from other pins is redone.
STAMP="autobahntestsuite install v1: ${BOOTSTRAP_PINS[*]} | ${SUITE_PINS[*]} | ${BUILD_PINS[*]}"
MARKER=$AUTOBAHN_HOME/.pushwire-autobahn

installed() {
	[[ -x $WSTEST && -f $MARKER && "$(cat "$MARKER")" == "$STAMP" ]] &&
		"$WSTEST" --autobahnversion >/dev/null 2>&1
}

if [[ ${1:-} == --check ]]; then
	installed
	exit
fi
[[ $# -eq 0 ]] || die "usage: scripts/autobahn.sh [--check]"

if installed; then
	echo "$WSTEST"
	exit 0
fi

find_python2() {
	local p
	for p in "${PYTHON2:-}" /root/.pyenv/versions/2.7.18/bin/python \
		"$(pyenv root 2>/dev/null)/versions/2.7.18/bin/python" "$(command -v python2.7 || true)"; do
		if [[ -n $p && -x $p ]] && "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	return 1
}

PY=$(find_python2) ||
	die "no Python 2.7 found (looked for \$PYTHON2, /root/.pyenv/versions/2.7.18/bin/python, pyenv's 2.7.18, python2.7); Debian has no python2 package, so install one with pyenv and set PYTHON2"

if ! command -v cc >/dev/null 2>&1; then
	((EUID == 0)) || die "no C compiler and not root: install gcc yourself"
	echo "autobahn.sh: installing gcc" >&2
	apt-get update -q
	apt-get install -y -q gcc
fi

mkdir -p "$(dirname "$AUTOBAHN_HOME")" || die "cannot create $(dirname "$AUTOBAHN_HOME") (set AUTOBAHN_HOME to a writable place)"
# Two worktrees may run this at once: one installs, the other waits and then finds it done.
exec 9>"$AUTOBAHN_HOME.lock" || die "cannot write $AUTOBAHN_HOME.lock (set AUTOBAHN_HOME to a writable place)"
flock 9
if installed; then
	echo "$WSTEST"
	exit 0
fi

# Start clean, but never delete a directory this script did not make.
if [[ -e $AUTOBAHN_HOME ]]; then
	if [[ -f $MARKER || -z "$(ls -A "$AUTOBAHN_HOME")" ]]; then
		rm -rf "$AUTOBAHN_HOME"
	else
		die "$AUTOBAHN_HOME exists and is not an install of this script; move it away or set AUTOBAHN_HOME"
	fi
fi
mkdir -p "$AUTOBAHN_HOME"
echo "incomplete" >"$MARKER"

echo "autobahn.sh: installing autobahntestsuite into $AUTOBAHN_HOME (from $PY)" >&2
boot=$AUTOBAHN_HOME/bootstrap
pins=$AUTOBAHN_HOME/constraints.txt
printf '%s\n' "${BOOTSTRAP_PINS[@]}" >"$pins.bootstrap"
printf '%s\n' "${SUITE_PINS[@]}" "${BUILD_PINS[@]}" >"$pins"

# Python 2.7 has no venv module: virtualenv goes into a side directory (not into pyenv's
# own site-packages) and makes the environment from there.
"$PY" -m pip install -q --no-cache-dir --target "$boot" -c "$pins.bootstrap" virtualenv ||
	die "pip could not install virtualenv for Python 2.7"
PYTHONPATH=$boot "$PY" -m virtualenv -q --no-download --no-periodic-update \
	--app-data "$boot/app-data" "$AUTOBAHN_HOME" ||
	die "virtualenv could not make $AUTOBAHN_HOME"
PIP_CONSTRAINT=$pins "$AUTOBAHN_HOME/bin/pip" install -q --no-cache-dir autobahntestsuite ||
	die "pip could not install autobahntestsuite (pins in $pins)"
"$WSTEST" --autobahnversion >&2 || die "$WSTEST does not run"

echo "$STAMP" >"$MARKER"
echo "$WSTEST"
