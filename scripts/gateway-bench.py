#!/usr/bin/env python3
"""Server CPU per push: GatewayClient's sendToUid through the gateway door against the
same push as a line on the TCP push port, in one session, alternating (issue 22).

Usage: scripts/gateway-bench.py BINARY [N] [ROUNDS]

Starts BINARY (a release pushwire) with the gateway door on port-0-style free ports,
binds one page to uid `u` (a raw WebSocket client that drains what it gets), and per
round sends N pushes of a 40-byte message each way:
  gateway   N sendToUid frames (cmd 14, ext ["u"]) pipelined on one connection (as
            `Gateway::$persistentConnection = true` sends them), then an isOnline query
            whose reply says they all ran;
  gateway1  N/10 sendToUid calls the library's default way: a new connection per call,
            each written and closed (Register discovery not counted: it is cached);
  push      N lines {"uid":"u",...} pipelined on one push-port connection, N replies read.
  queue     N/20 plain elements LPUSHed (pipelined, 100 per LPUSH) onto a list the
            Redis-queue door consumes (`--redis-queue mc`, seed 000's push centre): each
            goes to every page (one here);
  queueline N/20 push lines {"uid":"u",...} LPUSHed the same way: each runs as a push.
The queue ways need `redis-server` on the PATH (started on a free port, no persistence);
without it they are skipped. The door takes one element at a time (a BLMOVE, the send,
then its removal from the processing list: docs/redis-queue.md), so its rate is bounded
by Redis round trips; the figure is the daemon's CPU only, not Redis's.
It prints the daemon's CPU (utime+stime from /proc) per push in microseconds, per round
and the median per way. The page's reads are checked: every push arrives.
"""
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
MSG = b'{"type":"say","msg":"Hello ThinkPHP5 0"}'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def frame(cmd, ext=b"", body=b"", conn=0):
    head = struct.pack(">IBIHIHIBHI", 28 + len(ext) + len(body), cmd, 0, 0, 0, 0, conn, 1, 0, len(ext))
    return head + ext + body


class Page:
    """A WebSocket client bound to `uid` that counts the text frames it gets."""

    def __init__(self, port, uid):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.sock.recv(4096)
        self.rest = buf.split(b"\r\n\r\n", 1)[1]
        data = uid.encode()
        self.sock.sendall(bytes([0x81, 0x80 | len(data), 0, 0, 0, 0]) + data)
        self.count = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        buf = self.rest
        while True:
            while len(buf) >= 2:
                n = buf[1] & 0x7F
                at = 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n, at = struct.unpack(">H", buf[2:4])[0], 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n, at = struct.unpack(">Q", buf[2:10])[0], 10
                if len(buf) < at + n:
                    break
                if buf[0] & 0x0F == 1:
                    with self.lock:
                        self.count += 1
                buf = buf[at + n:]
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return
            buf += chunk

    def wait(self, want, within=60):
        end = time.time() + within
        while time.time() < end:
            with self.lock:
                if self.count >= want:
                    return
            time.sleep(0.005)
        raise SystemExit(f"page got {self.count} of {want}")


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise SystemExit("connection closed")
        out += chunk
    return out


def via_gateway(gw, n):
    s = socket.create_connection(("127.0.0.1", gw))
    one = frame(14, b'["u"]', MSG)
    for i in range(0, n, 1000):
        s.sendall(one * min(1000, n - i))
    s.sendall(frame(11, conn=1))
    length = struct.unpack(">I", read_exact(s, 4))[0]
    read_exact(s, length)
    s.close()


def via_gateway_per_call(gw, n):
    one = frame(14, b'["u"]', MSG)
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", gw))
        s.sendall(one)
        s.close()


def via_push(push, n):
    s = socket.create_connection(("127.0.0.1", push))
    line = b'{"uid":"u","type":"say","msg":"Hello ThinkPHP5 0"}\n'
    f = s.makefile("rb")
    for i in range(0, n, 1000):
        k = min(1000, n - i)
        s.sendall(line * k)
        for _ in range(k):
            f.readline()
    s.close()


def resp(*args):
    """One Redis command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def lpush_all(port, element, n):
    """LPUSHes n copies of element onto `mc`, 100 per command, pipelined; reads the replies."""
    s = socket.create_connection(("127.0.0.1", port))
    f = s.makefile("rb")
    sent = 0
    while sent < n:
        k = min(100, n - sent)
        s.sendall(resp(b"LPUSH", b"mc", *([element] * k)))
        sent += k
        line = f.readline()
        if not line.startswith(b":"):
            raise SystemExit(f"LPUSH answered {line!r}")
    s.close()


def via_queue(redis_port, n):
    lpush_all(redis_port, MSG, n)


def via_queue_line(redis_port, n):
    lpush_all(redis_port, b'{"uid":"u","type":"say","msg":"Hello ThinkPHP5 0"}', n)


def start_redis():
    """A redis-server on a free port, or None if there is none to run."""
    if not shutil.which("redis-server"):
        return None, None
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return proc, port
        except OSError:
            time.sleep(0.02)
    proc.kill()
    raise SystemExit("redis-server did not start")


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    ws, push, gw, reg, gws = (free_port() for _ in range(5))
    redis, redis_port = start_redis()
    queue = []
    if redis_port:
        queue = ["--redis-queue-url", f"redis://127.0.0.1:{redis_port}/", "--redis-queue", "mc",
                 "--redis-queue-rate", "1000000"]
    daemon = subprocess.Popen(
        [binary, "--ws-listen", f"127.0.0.1:{ws}", "--push-listen", f"127.0.0.1:{push}",
         "--http-listen", "off", "--gateway-listen", f"127.0.0.1:{gw}",
         "--gateway-register-listen", f"127.0.0.1:{reg}", "--gateway-ws-listen", f"127.0.0.1:{gws}",
         *queue],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in daemon.stderr:
            if re.search(r"\blistening\b", line) and "GatewayClient" not in line:
                break
        threading.Thread(target=lambda: [None for _ in daemon.stderr], daemon=True).start()
        page = Page(ws, "u")
        time.sleep(0.3)
        got = 0
        ways = [("gateway", via_gateway, gw, n), ("gateway1", via_gateway_per_call, gw, n // 10),
                ("push", via_push, push, n)]
        if redis_port:
            ways += [("queue", via_queue, redis_port, n // 20),
                     ("queueline", via_queue_line, redis_port, n // 20)]
        else:
            print("no redis-server: the queue ways are skipped", flush=True)
        results = {name: [] for name, *_ in ways}
        for r in range(rounds):
            for name, way, port, count in ways:
                before, began = cpu(daemon.pid), time.time()
                way(port, count)
                got += count
                # A queue is drained one element at a time, at Redis round trips' pace.
                page.wait(got, within=600 if name.startswith("queue") else 60)
                used, took = cpu(daemon.pid) - before, time.time() - began
                results[name].append(used / count * 1e6)
                print(f"round {r + 1} {name:9} {count:6} pushes  {used * 1e6 / count:7.2f} us CPU/push"
                      f"  {count / took:9.0f} /s", flush=True)
        print(json.dumps({k: round(statistics.median(v), 2) for k, v in results.items()}))
    finally:
        daemon.kill()
        if redis:
            redis.kill()


if __name__ == "__main__":
    main()
