#!/usr/bin/env python3
"""Careless-backend floods against a fresh daemon; prints its RSS before and after.

    scripts/flood-check.py BINARY join   # 300 `/join` lines, each with a 1 MB group name
    scripts/flood-check.py BINARY send   # 20 `/send` lines, each with a 1 MB array of uids

Starts BINARY on free ports (127.0.0.1:0), reads VmRSS from /proc/PID/status before and
after the flood (VmHWM is the peak), and the longest reply. Compare two builds with it,
e.g. a checkout of main against target/release/pushwire.
"""
import re
import socket
import subprocess
import sys
import time

if len(sys.argv) != 3 or sys.argv[2] not in ("join", "send"):
    sys.exit(__doc__)
binary, mode = sys.argv[1], sys.argv[2]
size = 1_000_000


def lines():
    if mode == "join":
        for i in range(300):
            yield f"/join {(f'g{i:04d}-' + 'x' * size)[:size]} u1\n"
    else:
        items, total = [], 0
        while total < size:
            items.append(str(len(items)))
            total += len(items[-1]) + 1
        for _ in range(20):
            yield "/send [" + ",".join(items) + "] x\n"


daemon = subprocess.Popen(
    [binary, "--ws-listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    env={"RUST_LOG": "info", "PUSHWIRE_HTTP_LISTEN": "127.0.0.1:0"})
try:
    push = None
    for raw in daemon.stderr:
        m = re.search(r"listening.*push=(\S+)", raw.decode(errors="replace"))
        if m:
            host, port = m.group(1).rsplit(":", 1)
            push = (host, int(port))
            break
    if push is None:
        sys.exit("the daemon did not log its listening line")

    def status(key):
        with open(f"/proc/{daemon.pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024  # KiB -> MiB

    time.sleep(0.5)
    before = status("VmRSS")
    conn = socket.create_connection(push)
    replies = conn.makefile("rb")
    count = longest = accepted = 0
    started = time.time()
    for line in lines():
        conn.sendall(line.encode())
        reply = replies.readline()
        count += 1
        longest = max(longest, len(reply))
        accepted += reply.startswith(b'{"ok":true')
    elapsed = time.time() - started
    time.sleep(0.5)
    after, peak = status("VmRSS"), status("VmHWM")
    conn.sendall(b"/count\n")
    groups = re.search(rb'"groups":(\d+)', replies.readline()).group(1).decode()
    print(f"{binary} {mode}: {count} lines of ~1 MB in {elapsed:.2f} s, {accepted} accepted, "
          f"longest reply {longest} B, groups after: {groups}")
    print(f"  VmRSS before {before:.1f} MiB, after {after:.1f} MiB; peak (VmHWM) {peak:.1f} MiB")
finally:
    daemon.terminate()
    daemon.wait()
