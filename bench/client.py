#!/usr/bin/env python3
"""Sends exactly N keep-alive GET requests on one connection, one after the other, with the
same URLs and headers as bench/load.lua (varying pub/plc and a counter, browser User-Agent and
Referer), and checks every status. For bench/callgrind.sh, where the request count must be
exact and the client's speed does not matter.

    client.py PORT PATH N EXPECTED_STATUS [START_COUNTER [DIMS]]

DIMS > 0 adds d1=...&dDIMS=... (bench/callgrind.sh with CG_DIMS, as bench/growth.lua does).
"""
import socket
import sys

UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/120.0 Safari/537.36")
REFERER = "https://news.example.com/articles/2026/11/some-story.html"
PLC = ["top", "side", "footer", "inline"]


def main():
    port, base, n, expected = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    counter = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    dims = int(sys.argv[6]) if len(sys.argv) > 6 else 0
    sep = "&" if "?" in base else "?"
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    for _ in range(n):
        counter += 1
        path = f"{base}{sep}pub=site{counter % 97}&plc={PLC[counter % 4]}&n={counter}"
        path += "".join(f"&d{d}=v{(counter + d) % 97}" for d in range(1, dims + 1))
        req = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {UA}\r\n"
               f"Referer: {REFERER}\r\n\r\n").encode()
        s.sendall(req)
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit(f"connection closed by the server after {counter} requests")
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        if status != expected:
            sys.exit(f"GET {path}: status {status}, expected {expected}")
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        while len(buf) < length:
            chunk = s.recv(65536)
            if not chunk:
                sys.exit("connection closed in a body")
            buf += chunk
        buf = buf[length:]
    s.close()


if __name__ == "__main__":
    main()
