#!/usr/bin/env python3
"""Two costs of the HTTP door, measured against a fresh daemon (issue 20).

    scripts/http-door-check.py BINARY scrape    # CPU per GET /metrics at 10,000 connections
    scripts/http-door-check.py BINARY replies   # 8 clients that never read their replies

scrape: opens 10,000 idle connections to the push port (each one descriptor in the
daemon), then times 1,000 scrapes of /metrics by the daemon's own CPU time (utime + stime
from /proc/PID/stat), and the same with no extra connections. `/metrics` and `/stats`
count the open descriptors: listing /proc/self/fd costs time in proportion to them.

replies: with --max-http-connections 8, eight clients each POST 4 MiB of three-byte bad
lines (`/x`, each answered with a 45-byte error) and never read, from addresses
127.0.0.2-9; prints the daemon's RSS after 5 s and its peak, then how long a ninth
client's GET /healthz (from 127.0.0.10) waited (given up after 50 s).

Compare two builds with it, e.g. a checkout of main against target/release/pushwire.
"""
import re
import resource
import socket
import subprocess
import sys
import time

if len(sys.argv) != 3 or sys.argv[2] not in ("scrape", "replies"):
    sys.exit(__doc__)
binary, mode = sys.argv[1], sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

args = [binary, "--ws-listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0",
        "--http-listen", "127.0.0.1:0"]
if mode == "scrape":
    args += ["--max-push-connections", "12000"]
else:
    args += ["--max-http-connections", "8"]
daemon = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env={"RUST_LOG": "info"})


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def cpu_secs():
    with open(f"/proc/{daemon.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def status(key):
    with open(f"/proc/{daemon.pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024  # KiB -> MiB


def get(http, path, timeout, source=None):
    c = socket.create_connection(http, timeout=timeout,
                                 source_address=(source, 0) if source else None)
    c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    got = b""
    while True:
        b = c.recv(65536)
        if not b:
            return got
        got += b


try:
    push = http = None
    for raw in daemon.stderr:
        line = raw.decode(errors="replace")
        m = re.search(r"listening.*push=(\S+).*http=(\S+)", line)
        if m:
            push, http = addr(m.group(1)), addr(m.group(2))
            break
    if push is None:
        sys.exit("the daemon did not log its listening line")
    time.sleep(0.5)

    if mode == "scrape":
        def per_scrape(n=1000):
            get(http, "/metrics", 10)  # warm
            t0 = cpu_secs()
            for _ in range(n):
                get(http, "/metrics", 10)
            return (cpu_secs() - t0) / n * 1000

        idle = per_scrape()
        conns = [socket.create_connection(push) for _ in range(10_000)]
        time.sleep(1)
        text = get(http, "/metrics", 10).decode()
        fds = re.search(r"^pushwire_open_fds (\d+)", text, re.M).group(1)
        busy = per_scrape()
        print(f"open_fds {fds}: {busy:.3f} ms of CPU per scrape "
              f"({idle:.3f} ms with no extra connections)")
    else:
        req = b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        body = b"/x\n" * (4 * 1024 * 1024 // 3)
        before = status("VmRSS")
        clients = []
        for i in range(8):
            # One address each (127.0.0.2-9), as eight backends: the per-address cap is
            # not what this measures.
            c = socket.create_connection(http, source_address=(f"127.0.0.{2 + i}", 0))
            c.sendall(req % len(body) + body)
            clients.append(c)
        time.sleep(5)
        print(f"RSS {before:.1f} MiB before, {status('VmRSS'):.1f} MiB 5 s after "
              f"8 unread 4 MiB bodies (peak {status('VmHWM'):.1f} MiB)")
        t0 = time.monotonic()
        try:
            status_line = get(http, "/healthz", 50, "127.0.0.10").split(b"\r\n")[0].decode()
            print(f"a 9th client's GET /healthz: {status_line} "
                  f"after {time.monotonic() - t0:.1f} s")
        except OSError as e:
            print(f"a 9th client's GET /healthz: no answer after "
                  f"{time.monotonic() - t0:.1f} s ({e})")
finally:
    daemon.kill()
    daemon.wait()
