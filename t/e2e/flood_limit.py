#!/usr/bin/env python3
"""The limit_conn and limit_req example of docs/security.md, checked deterministically after the
flood (t/e2e/flood.sh) on 127.0.0.1:PORT.

usage: flood_limit.py PORT

limit_conn (location /limc, `limit_conn flood_conn 1`): a postback whose body is still coming
(Content-Length 1000, 10 bytes sent) holds the one slot, since nginx keeps the request until it
has discarded the body; a second request meanwhile gets 503 and reaches no tracker; once the
body is complete, the next one gets 200 again. limit_req (location /lim, 50 requests/s, no
burst, `limit_req_status 429`): 10 requests back to back on one connection, at most 2 pass.
Every request carries X-Kind/X-N so that flood_check.py finds them in the access log and checks
that the refused ones have no event and the others exactly one.
Prints one line per request and exits non-zero if a status is not the expected one.
"""
import socket
import sys
import time

UA = "Mozilla/5.0 (X11; Linux x86_64) flood"


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def head(method, path, kind, n, extra=""):
    return (f"{method} {path}?cid=camp-ok&n={n} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Kind: {kind}\r\nX-N: {n}\r\n"
            f"User-Agent: {UA}\r\n{extra}\r\n").encode()


def response(s):
    """Reads one response (headers and a Content-Length body); returns its status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = s.recv(65536)
        if not c:
            raise RuntimeError(f"connection closed, got {buf!r}")
        buf += c
    hdr, rest = buf.split(b"\r\n\r\n", 1)
    status = int(hdr.split(b" ", 2)[1])
    length = 0
    for line in hdr.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        c = s.recv(65536)
        if not c:
            break
        rest += c
    return status


def main(port):
    failures = 0

    def expect(what, status, want):
        nonlocal failures
        ok = status in want
        failures += not ok
        print(f"{'ok' if ok else 'not ok'} - {what}: {status} (want {' or '.join(map(str, sorted(want)))})")

    # limit_conn: hold the slot with an unfinished postback body.
    a = connect(port)
    a.sendall(head("POST", "/limc", "limc-hold", "900000001", "Content-Length: 1000\r\n") + b"x" * 10)
    expect("limit_conn: a postback with its body still coming is answered", response(a), {200})
    time.sleep(0.2)
    b = connect(port)
    b.sendall(head("GET", "/limc", "limc-over", "900000002"))
    expect("limit_conn: a second request while the slot is held", response(b), {503})
    b.close()
    a.sendall(b"y" * 990)
    time.sleep(0.3)
    c = connect(port)
    c.sendall(head("GET", "/limc", "limc-after", "900000003"))
    expect("limit_conn: the next request once the body is complete", response(c), {200})
    c.close()
    a.close()

    # limit_req: 10 requests back to back.
    time.sleep(0.1)
    d = connect(port)
    statuses = []
    for i in range(10):
        d.sendall(head("GET", "/lim", "lim", str(900000010 + i)))
        statuses.append(response(d))
    d.close()
    passed = statuses.count(200)
    refused = statuses.count(429)
    ok = passed + refused == 10 and passed <= 2 and refused >= 8
    failures += not ok
    print(f"{'ok' if ok else 'not ok'} - limit_req: 10 requests back to back: {passed} passed, {refused} got 429 ({statuses})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
