#!/usr/bin/env python3
"""Strangers binding fresh uids: a daemon's histories and RSS before and after.

    scripts/stranger-binds.py BINARY N [FLAG ...]   # N protocol v1 binds of fresh uids

Starts BINARY on free ports (with FLAGs, e.g. --history-max-uids 5000), then from one
client binds N fresh uids as protocol v1 tabs (`?pushwire=1`), 64 at a time, each
closing once it has its status frame, and prints the daemon's VmRSS and `/stats`
`history_uids`, `history_evicted` before and after. Each bind of a uid without a
history makes one, kept `--history-keep-ms` after the tab leaves.
"""
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time

if len(sys.argv) < 3:
    sys.exit(__doc__)
binary, n, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

daemon = subprocess.Popen(
    [binary, "--ws-listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0",
     "--http-listen", "off", *flags],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    env={"RUST_LOG": "warn,pushwire=info"})
try:
    line = b""
    while b"listening" not in line:
        line = daemon.stderr.readline()
        if not line:
            sys.exit("the daemon ended before listening")
    text = re.sub(r"\x1b\[[0-9;]*m", "", line.decode())
    ws = int(re.search(r"ws=[^ ]*:(\d+)", text).group(1))
    push = int(re.search(r"push=[^ ]*:(\d+)", text).group(1))

    def rss_kib():
        status = open(f"/proc/{daemon.pid}/status").read()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))

    def stats():
        with socket.create_connection(("127.0.0.1", push)) as s:
            s.sendall(b"/stats\n")
            out = b""
            while not out.endswith(b"\n"):
                out += s.recv(65536)
        return json.loads(out)

    def open_tab(uid):
        s = socket.create_connection(("127.0.0.1", ws))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET /?pushwire=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
        s.sendall(bytes([0x81, 0x80 | len(uid), 0, 0, 0, 0]) + uid)
        return s

    def finish(s):
        # The 101, then the status frame (or a close): the bind is done.
        got = b""
        while b"\r\n\r\n" not in got or len(got.split(b"\r\n\r\n", 1)[1]) < 2:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        s.close()

    def show(when):
        st = stats()
        print(f"{when}: RSS {rss_kib()} KiB, history_uids {st['history_uids']}, "
              f"history_evicted {st.get('history_evicted', '-')}")

    show("before")
    started = time.monotonic()
    for base in range(0, n, 64):
        tabs = [open_tab(f"s{i}".encode()) for i in range(base, min(n, base + 64))]
        for t in tabs:
            finish(t)
    time.sleep(0.5)
    print(f"{n} binds in {time.monotonic() - started:.1f} s")
    show("after")
finally:
    daemon.kill()
    daemon.wait()
