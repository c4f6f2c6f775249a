#!/usr/bin/env python3
"""CPU a daemon spends registering `ack=` waits; prints it for N waits.

    scripts/ack-waits.py BINARY N     # N pushes `/push ID ack=60000 LINE` to one uid

Starts BINARY on free ports with a queue deep enough for N messages, binds one protocol
v1 tab (`?pushwire=1`) that never reads or acks, then pipelines the pushes over N/1000
backend connections (a connection holds at most 1024 waiting replies) and reads the
daemon's CPU time (utime + stime, /proc/PID/stat) from the first push until `/stats`
counts all N. Every push registers a wait on the uid's history: the cost of a wait
that scanned every earlier one grows with N squared. Compare two builds with it.
"""
import base64
import os
import re
import socket
import subprocess
import sys
import time

if len(sys.argv) != 3:
    sys.exit(__doc__)
binary, n = sys.argv[1], int(sys.argv[2])
per_conn = 1000

daemon = subprocess.Popen(
    [binary, "--ws-listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0",
     "--http-listen", "off", "--queue-depth", str(n + 100),
     "--queue-bytes", str(64 * n + (1 << 20)), "--dedupe-window-ms", "0"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    env={"RUST_LOG": "info"})
try:
    line = b""
    while b"listening" not in line:
        line = daemon.stderr.readline()
        if not line:
            sys.exit("the daemon ended before listening")
    text = re.sub(r"\x1b\[[0-9;]*m", "", line.decode())
    ws = int(re.search(r"ws=[^ ]*:(\d+)", text).group(1))
    push = int(re.search(r"push=[^ ]*:(\d+)", text).group(1))

    def cpu():
        fields = open(f"/proc/{daemon.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def request(line):
        with socket.create_connection(("127.0.0.1", push)) as s:
            s.sendall(line.encode() + b"\n")
            out = b""
            while not out.endswith(b"\n"):
                out += s.recv(65536)
            return out.decode()

    tab = socket.create_connection(("127.0.0.1", ws))
    key = base64.b64encode(os.urandom(16)).decode()
    tab.sendall(("GET /?pushwire=1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += tab.recv(4096)
    uid = b"w"
    tab.sendall(bytes([0x81, 0x80 | len(uid), 0, 0, 0, 0]) + uid)
    while '"connections":1' not in request("/online w"):
        time.sleep(0.01)

    conns = []
    before = cpu()
    started = time.monotonic()
    for c in range((n + per_conn - 1) // per_conn):
        s = socket.create_connection(("127.0.0.1", push))
        count = min(per_conn, n - c * per_conn)
        s.sendall("".join(f"/push {c}-{i} ack=60000 {{\"uid\":\"w\",\"i\":{i}}}\n"
                          for i in range(count)).encode())
        conns.append(s)
    while True:
        stats = request("/stats")
        done = int(re.search(r'"pushes_ok":(\d+)', stats).group(1))
        if done >= n:
            break
        time.sleep(0.02)
    took, wall = cpu() - before, time.monotonic() - started
    print(f"{n} ack waits: daemon CPU {took:.2f} s (wall {wall:.2f} s)")
finally:
    daemon.kill()
    daemon.wait()
