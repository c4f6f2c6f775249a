#!/usr/bin/env bash
# Build the Debian package with `cargo deb`, install it with dpkg, check what it installed
# and that it runs, upgrade it over itself (the edited conffile must survive), then remove
# and purge it so the machine is left as it was. For CI (.ci/run runs it after
# scripts/test.sh) or any Debian machine where pushwire is not installed for real.
#
# Usage: scripts/check-package.sh
#
# Needs root (or sudo) for apt-get and dpkg. Installs cargo-deb with `cargo install
# --locked` when `cargo deb` is missing ($CARGO_DEB_VERSION, default below), and Debian's
# systemd package when systemd-analyze is missing. Never starts the service.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DEBIAN_FRONTEND=noninteractive

CARGO_DEB_VERSION="${CARGO_DEB_VERSION:-3.8.0}"
unit=/usr/lib/systemd/system/pushwire.service
env_file=/etc/pushwire/pushwire.env
started=$SECONDS

die() {
	echo "check-package.sh: $*" >&2
	exit 1
}

step() {
	echo "==> [$((SECONDS - started))s] $*"
}

as_root() {
	if ((EUID == 0)); then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo env DEBIAN_FRONTEND=noninteractive "$@"
	else
		die "not root and no sudo: cannot run '$*'"
	fi
}

# Installed, or removed with its conffiles left ("config-files"); not after a purge.
is_installed() {
	local status
	status="$(dpkg-query -W -f='${db:Status-Status}' pushwire 2>/dev/null)" || return 1
	[[ -n $status && $status != not-installed ]]
}

# This script installs and then purges pushwire: it must not touch a real installation.
if is_installed; then
	die "pushwire is already installed here (dpkg -s pushwire); this script would purge it"
fi
for f in /usr/bin/pushwire "$env_file" /etc/systemd/system/pushwire.service; do
	[[ ! -e $f && ! -L $f ]] || die "$f exists (scripts/install.sh?); run this on a machine without pushwire"
done

# --- tools -------------------------------------------------------------------------------
apt_updated=0
apt_install() {
	if ((apt_updated == 0)); then
		as_root apt-get update -q
		apt_updated=1
	fi
	as_root apt-get install -y -q --no-install-recommends "$@"
}
if ! cargo deb --version >/dev/null 2>&1; then
	step "cargo install cargo-deb --locked --version $CARGO_DEB_VERSION"
	cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi
command -v systemd-analyze >/dev/null 2>&1 || {
	step "apt-get install systemd (for systemd-analyze)"
	apt_install systemd
}
# What the package depends on (present on any Debian system, but a slim image may lack it).
dpkg-query -W -f='${db:Status-Status}' init-system-helpers 2>/dev/null | grep -qx installed ||
	apt_install init-system-helpers

# --- build -------------------------------------------------------------------------------
step "cargo deb"
deb="$(cargo deb | tail -n 1)"
[[ -f $deb ]] || die "cargo deb did not print the package it built (got '$deb')"
version="$(dpkg-deb -f "$deb" Version)"
echo "built $deb ($version)"
# The daemon alone: the load tool (bench/, a workspace member of its own) is never shipped.
programs="$(dpkg-deb -c "$deb" | awk '{print $NF}' | grep -E '^\./usr/s?bin/.' || true)"
[[ $programs == ./usr/bin/pushwire ]] || die "the package's programs are not just /usr/bin/pushwire: $programs"
! dpkg-deb -c "$deb" | grep -q 'pushwire-bench' || die "the package holds the load tool"
echo "ok  one program in the package: /usr/bin/pushwire"

cleanup() {
	if is_installed; then
		echo "check-package.sh: purging pushwire after a failure" >&2
		as_root dpkg --purge pushwire >/dev/null || true
	fi
}
trap cleanup EXIT

# --- install -----------------------------------------------------------------------------
step "dpkg -i $deb"
as_root dpkg -i "$deb" </dev/null

step "installed files"
check_file() { # path mode owner
	local got
	got="$(stat -c '%a %U' "$1" 2>/dev/null)" || die "$1 is not installed"
	[[ $got == "$2 $3" ]] || die "$1 is $got, want $2 $3"
	echo "ok  $1 ($got)"
}
check_file /usr/bin/pushwire 755 root
check_file "$unit" 644 root
check_file "$env_file" 600 root
check_file /usr/share/pushwire/Pushwire.php 644 root
check_file /usr/share/pushwire/Webhook.php 644 root
check_file /usr/share/pushwire/examples/Events.php 644 root
check_file /usr/share/pushwire/examples/webhook.php 644 root
check_file /usr/share/pushwire/pushwire.js 644 root
check_file /usr/share/doc/pushwire/examples/nginx-pushwire.conf 644 root
check_file /usr/share/doc/pushwire/README.md 644 root
# The docs the README links to, at the same relative place, so its links work there too.
for doc in docs/*.md; do
	check_file "/usr/share/doc/pushwire/$doc" 644 root
done
dpkg-query -W -f='${Conffiles}\n' pushwire | grep -q "^ $env_file " ||
	die "$env_file is not a conffile of the package"
echo "ok  $env_file is a conffile"
cmp -s systemd/pushwire.env "$env_file" || die "$env_file differs from systemd/pushwire.env"
cmp -s deploy/debian/pushwire.service "$unit" || die "$unit differs from deploy/debian/pushwire.service"
if command -v php >/dev/null 2>&1; then
	for f in /usr/share/pushwire/Pushwire.php /usr/share/pushwire/Webhook.php /usr/share/pushwire/examples/*.php; do
		php -l "$f" >/dev/null || die "php -l $f failed"
		echo "ok  php -l $f"
	done
fi
# Neither enabled nor started by the install.
[[ ! -e /etc/systemd/system/multi-user.target.wants/pushwire.service ]] ||
	die "the install enabled pushwire.service"
echo "ok  pushwire.service not enabled"
if command -v pgrep >/dev/null 2>&1; then
	! pgrep -f '^/usr/bin/pushwire( |$)' >/dev/null ||
		die "/usr/bin/pushwire runs after the install: $(pgrep -a -f '^/usr/bin/pushwire( |$)')"
	echo "ok  nothing started"
fi

step "/usr/bin/pushwire --version"
got="$(/usr/bin/pushwire --version)"
echo "$got"
want_version="${version%-*}"
re="^pushwire ${want_version//./\\.} \\(git ([0-9a-f]{7,}(, dirty)?|unknown)\\)$"
[[ $got =~ $re ]] || die "unexpected --version: $got"
if head="$(git rev-parse --short HEAD 2>/dev/null)"; then
	[[ $got == *"(git $head"* ]] || die "--version does not name HEAD ($head): $got"
fi

step "/usr/bin/pushwire check-config with $env_file (EnvironmentFile semantics: set -a; .)"
# As the unit's ExecStartPre runs it: the installed env file and nothing else.
out="$(as_root env -i PATH=/usr/bin:/bin bash -c \
	"set -a; . '$env_file'; set +a; exec /usr/bin/pushwire check-config" 2>&1)" ||
	die "check-config refused the shipped env file: $out"
echo "$out"
[[ $out == "config ok" ]] || die "check-config with the shipped env file printed more than 'config ok': $out"
# ...and it does stop a start that would fail.
if out="$(env -i PATH=/usr/bin:/bin PUSHWIRE_WS_LISTEN=127.0.0.1:0 PUSHWIRE_PUSH_LISTEN=127.0.0.1:0 \
	PUSHWIRE_HTTP_LISTEN=off PUSHWIRE_JWT_SECRET_FILE=/nonexistent/jwt-secret \
	/usr/bin/pushwire check-config 2>&1)"; then
	die "check-config accepted a missing secret file: $out"
fi
[[ $out == *"--jwt-secret-file"*"/nonexistent/jwt-secret"* ]] || die "check-config's refusal does not name the file: $out"
echo "ok  refuses a missing secret file: $out"

step "systemd-analyze verify $unit"
# verify exits 0 on unknown keys and bad values it ignores: any output is a failure here.
out="$(systemd-analyze verify "$unit" 2>&1)" || die "systemd-analyze verify failed: $out"
[[ -z $out ]] || die "systemd-analyze verify complained: $out"
echo "ok  systemd-analyze verify: no complaint"
# The sandbox stays tight: exposure as systemd scores it (0 best, 10 worst) at most 2.0.
out="$(systemd-analyze security --offline=yes --threshold=20 "$unit" 2>&1)" ||
	die "systemd-analyze security: exposure above 2.0: $(tail -n 1 <<<"$out")"
echo "ok  systemd-analyze security: $(grep -o 'Overall exposure level.*' <<<"$out")"

# --- upgrade: the admin's edits to the conffile survive ----------------------------------
step "upgrade to revision 2 over an edited $env_file"
# A comment line: the env file parser refuses inline comments (docs/deployment.md, Reload).
marker="# edited by check-package.sh"
as_root sh -c "echo '$marker' >> '$env_file'"
deb2="$(cargo deb --no-build --deb-revision 2 | tail -n 1)"
[[ -f $deb2 && $deb2 != "$deb" ]] || die "cargo deb --deb-revision 2 built no new package ($deb2)"
as_root dpkg -i "$deb2" </dev/null
[[ "$(dpkg-query -W -f='${Version}' pushwire)" == "${version%-*}-2" ]] || die "the upgrade did not install revision 2"
as_root grep -qxF "$marker" "$env_file" || die "the upgrade lost the edit to $env_file"
check_file "$env_file" 600 root
echo "ok  $env_file kept on upgrade"

# --- remove, purge -----------------------------------------------------------------------
step "dpkg -r pushwire"
as_root dpkg -r pushwire </dev/null
for f in /usr/bin/pushwire "$unit" /usr/share/pushwire/Pushwire.php; do
	[[ ! -e $f ]] || die "$f is still there after dpkg -r"
done
# Debian keeps conffiles until purge.
as_root test -f "$env_file" || die "dpkg -r removed the conffile $env_file (only purge should)"
echo "ok  removed; $env_file kept until purge"

step "dpkg --purge pushwire"
as_root dpkg --purge pushwire </dev/null
for f in /etc/pushwire /etc/systemd/system/pushwire.service /usr/share/doc/pushwire /usr/share/pushwire; do
	[[ ! -e $f && ! -L $f ]] || die "$f is still there after the purge"
done
! is_installed || die "dpkg still lists pushwire after the purge"
echo "ok  purged, nothing left"

step "package checks passed"
