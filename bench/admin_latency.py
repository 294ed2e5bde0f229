#!/usr/bin/env python3
"""Admin changes versus tracking on the same worker (bench/admin-journal.sh runs it; issue 22,
docs/performance.md "Admin changes").

    admin_latency.py PORT BASELINE_SECS CHANGE_SECS RATE

One worker serves both. A pixel client sends an impression every 2 ms on one keep-alive
connection and times each; first BASELINE_SECS without changes, then CHANGE_SECS while a second
client PUTs campaigns (an existing one, a new landing URL each time) at RATE per second (the
next PUT leaves when the previous one is answered and its slot has come). Prints one JSON
line: PUT latency p50/p99/max and the count, pixel latency p50/p99/max without and during
the changes. Latencies are in milliseconds, measured by this client (Python on the same
machine: add its own noise, the same for every build measured).
"""
import json
import socket
import sys
import multiprocessing
import time


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * p))] * 1000, 2)


def summary(xs):
    return {"n": len(xs), "p50": pct(xs, 0.5), "p99": pct(xs, 0.99),
            "max": round(max(xs) * 1000, 2) if xs else None}


class Conn:
    def __init__(self, port):
        self.port = port
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def request(self, method, path, body=b""):
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "User-Agent: Mozilla/5.0 (X11; Linux x86_64) bench\r\n")
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.s.sendall(head.encode() + b"\r\n" + body)
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed")
            self.buf += chunk
        h, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = int(h.split(b" ", 2)[1])
        length = 0
        for line in h.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(self.buf) < length:
            self.buf += self.s.recv(65536)
        self.buf = self.buf[length:]
        return status


def pixels(port, until, pipe):
    """In a process of its own (no GIL shared with the PUT client): sends (start, latency)."""
    out = []
    c = Conn(port)
    n = 0
    while time.monotonic() < until:
        n += 1
        t0 = time.monotonic()
        st = c.request("GET", f"/i?cid=c{n % 1000:07d}&n={n}")
        out.append((t0, time.monotonic() - t0))
        if st != 200:
            print(f"# pixel {n}: status {st}", file=sys.stderr)
            break
        time.sleep(max(0.0, 0.002 - (time.monotonic() - t0)))
    pipe.send(out)


def changes(port, start, until, rate, out):
    c = Conn(port)
    k = 0
    while time.monotonic() < until:
        slot = start + k / rate
        if slot > time.monotonic():
            time.sleep(slot - time.monotonic())
        k += 1
        body = json.dumps({"status": "active", "landing_url": f"https://bench.example.com/{k}"}).encode()
        t0 = time.monotonic()
        st = c.request("PUT", f"/a/c{k % 1000:07d}", body)
        out.append(time.monotonic() - t0)
        if st not in (200, 201):
            print(f"# PUT {k}: status {st}", file=sys.stderr)
            return


def main():
    port, base, during, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    t0 = time.monotonic()  # CLOCK_MONOTONIC: the same clock in both processes
    change_start = t0 + base
    end = change_start + during
    mine, theirs = multiprocessing.Pipe()
    p = multiprocessing.Process(target=pixels, args=(port, end, theirs))
    p.start()
    time.sleep(base)
    puts = []
    changes(port, change_start, end, rate, puts)
    px = mine.recv()
    p.join()
    before = [d for (t, d) in px if t < change_start]
    while_changing = [d for (t, d) in px if t >= change_start]
    print(json.dumps({
        "put_ms": summary(puts),
        "put_rate_achieved": round(len(puts) / during, 1),
        "pixel_ms_without_changes": summary(before),
        "pixel_ms_during_changes": summary(while_changing),
    }))


if __name__ == "__main__":
    main()
