#!/usr/bin/env bash
# Build pushwire and install it as a systemd service.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: scripts/install.sh [--no-start] [-h|--help]

Builds pushwire in release mode and installs:
  /usr/local/bin/pushwire                      the daemon
  /etc/systemd/system/pushwire.service         the hardened unit (Type=notify)
  /etc/pushwire/pushwire.env                   settings (0600), only if absent (never overwritten)
then runs `systemctl daemon-reload`, enables the service and (re)starts it.

Options:
  --no-start   install and enable, but do not start or restart the service
  -h, --help   show this help

The build runs as the invoking user; installing needs root (sudo is used when
available). Edit /etc/pushwire/pushwire.env, then `systemctl restart pushwire`.
EOF
}

start=1
while (($#)); do
	case "$1" in
	--no-start) start=0 ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "install.sh: unknown argument: $1" >&2
		usage >&2
		exit 2
		;;
	esac
	shift
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ((EUID == 0)); then
	as_root=()
elif command -v sudo >/dev/null 2>&1; then
	as_root=(sudo)
else
	echo "install.sh: must run as root (or have sudo) to install" >&2
	exit 1
fi

if ! command -v cargo >/dev/null 2>&1; then
	echo "install.sh: cargo not found in PATH (run as the user who has the Rust toolchain;" >&2
	echo "            root steps use sudo)" >&2
	exit 1
fi

echo "==> cargo build --release --bin pushwire"
cargo build --release --bin pushwire

echo "==> installing /usr/local/bin/pushwire"
# Copy next to the target and rename over it, so a running daemon's binary is
# replaced atomically instead of being rewritten in place ("Text file busy").
"${as_root[@]}" install -D -m 0755 target/release/pushwire /usr/local/bin/.pushwire.new
"${as_root[@]}" mv -f /usr/local/bin/.pushwire.new /usr/local/bin/pushwire

echo "==> installing /etc/systemd/system/pushwire.service"
"${as_root[@]}" install -D -m 0644 systemd/pushwire.service /etc/systemd/system/pushwire.service

if "${as_root[@]}" test -e /etc/pushwire/pushwire.env; then
	echo "==> keeping existing /etc/pushwire/pushwire.env"
else
	echo "==> installing /etc/pushwire/pushwire.env"
	# 0600: it may hold PUSHWIRE_JWT_SECRET / PUSHWIRE_PUSH_SECRET (systemd reads it as root).
	"${as_root[@]}" install -D -m 0600 systemd/pushwire.env /etc/pushwire/pushwire.env
fi

if [[ ! -d /run/systemd/system ]]; then
	echo "install.sh: files installed, but systemd is not running on this machine;" >&2
	echo "            start /usr/local/bin/pushwire some other way." >&2
	((start == 0)) && exit 0
	exit 1
fi

echo "==> systemctl daemon-reload"
"${as_root[@]}" systemctl daemon-reload
echo "==> systemctl enable pushwire.service"
"${as_root[@]}" systemctl enable pushwire.service

if ((start)); then
	# restart, not start: on an upgrade the running daemon must pick up the new binary.
	echo "==> systemctl restart pushwire.service"
	"${as_root[@]}" systemctl restart pushwire.service
	"${as_root[@]}" systemctl --no-pager status pushwire.service || true
else
	echo "==> not started (--no-start); run: systemctl start pushwire"
fi
