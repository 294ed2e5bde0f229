#!/usr/bin/env python3
"""The admin API's crash test (run by t/e2e/admin-crash.sh; docs/admin-api.md "Persistence").

Rounds: nginx (2 workers) starts; three clients stream changes to the admin API, each on ids
of its own (PUT, DELETE, and bulk POSTs of 5 campaigns), and remember every change that was
answered (200/201/204) and the one in flight, if any. At a random moment one of:
  worker  kill -9 of one worker (the master forks another; the clients go on), later all;
  all     kill -9 of the master and the workers at once;
  reload  a HUP (the master replays and compacts the journal) and, 0-300 ms later, kill -9 of
          the master in the middle of it, then of every worker.
Then nginx starts again and every id must hold its last answered state, or the state of the
change that was in flight when the crash came (never anything else); the 5 campaigns of a
bulk POST in flight all have its new state or none does (one record). Prints TAP lines; exits 1 on failure.

Env: NGINX_BIN, MODULE, WORK (a directory), CRASH_ROUNDS (default 6), CRASH_SEED.
"""
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time

NGINX = os.environ.get("NGINX_BIN", "/usr/sbin/nginx")
MODULE = os.environ["MODULE"]
WORK = os.environ["WORK"]
ROUNDS = int(os.environ.get("CRASH_ROUNDS", "6"))
SEED = int(os.environ.get("CRASH_SEED", str(int(time.time()))))
rng = random.Random(SEED)
CAMPAIGNS = os.path.join(WORK, "campaigns.json")
PIDFILE = os.path.join(WORK, "nginx.pid")
failures = 0
passes = 0


def ok(cond, what):
    global failures, passes
    if cond:
        passes += 1
        print(f"ok - {what}")
    else:
        failures += 1
        print(f"not ok - {what}")
    sys.stdout.flush()
    return cond


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


PORT = free_port()


def write_conf():
    user = "user root;\n" if os.geteuid() == 0 else ""
    with open(os.path.join(WORK, "nginx.conf"), "w") as f:
        f.write(f"""load_module {MODULE};
{user}worker_processes 2;
error_log {WORK}/error.log notice;
pid {PIDFILE};
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {WORK}/body;
    tracker_ring {WORK}/ring 1m;
    tracker_campaigns {CAMPAIGNS} zone=campaigns:8m;
    server {{
        listen 127.0.0.1:{PORT};
        location /a {{ tracker_admin; }}
    }}
}}
""")


def children(pid):
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
        except OSError:
            continue
        if int(st.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(p))
    return out


def ours():
    """Every live process of our nginx (masters, workers, orphaned workers): they map the ring."""
    ring = os.path.join(WORK, "ring")
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{p}/maps") as f:
                mapped = ring in f.read()
        except OSError:
            continue
        if state != "Z" and mapped:
            pids.append(int(p))
    return pids


def master():
    try:
        with open(PIDFILE) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def start():
    subprocess.run([NGINX, "-p", WORK + "/", "-c", os.path.join(WORK, "nginx.conf")], check=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        m = master()
        if m and len(children(m)) >= 2:
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise SystemExit("nginx did not start")


def kill_all():
    for _ in range(100):
        pids = ours()
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    try:
        os.unlink(PIDFILE)
    except FileNotFoundError:
        pass


def request(conn, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    return r.status


class Client(threading.Thread):
    def __init__(self, k, state):
        super().__init__(daemon=True)
        self.k = k
        self.ids = [f"c{k}-{i}" for i in range(20)]
        self.state = state  # id -> landing url or None: the last answered state
        self.uncertain = {}  # id -> possible states besides the answered one
        self.bulk_in_flight = None  # (ids, old states, new states)
        self.stop = threading.Event()
        self.rng = random.Random(rng.random())
        self.answered = 0

    def run(self):
        conn = None
        n = 0
        while not self.stop.is_set():
            n += 1
            op = self.rng.random()
            if op < 0.2:
                ids = self.rng.sample(self.ids, 5)
                new = {i: f"https://crash.example.com/{i}/{self.k}-{n}" for i in ids}
                call = ("POST", "/a", [{"id": i, "status": "active", "landing_url": u} for i, u in new.items()])
                okay = (200,)
            elif op < 0.35:
                ids = [self.rng.choice(self.ids)]
                new = {ids[0]: None}
                call = ("DELETE", f"/a/{ids[0]}", None)
                okay = (204, 404)
            else:
                ids = [self.rng.choice(self.ids)]
                new = {ids[0]: f"https://crash.example.com/{ids[0]}/{self.k}-{n}"}
                call = ("PUT", f"/a/{ids[0]}", {"status": "active", "landing_url": new[ids[0]]})
                okay = (200, 201)
            old = {i: self.state.get(i) for i in ids}
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
                status = request(conn, *call)
            except (OSError, http.client.HTTPException):
                status = None
                conn = None
            if status in okay:
                for i in ids:
                    self.state[i] = new[i]
                    self.uncertain.pop(i, None)
                self.answered += 1
                if self.bulk_in_flight and set(ids) & set(self.bulk_in_flight[0]):
                    self.bulk_in_flight = None
            else:
                # No answer (or an error): the change may or may not be there.
                for i in ids:
                    self.uncertain.setdefault(i, set()).add(new[i])
                if len(ids) > 1:
                    self.bulk_in_flight = (ids, old, new)
                if status is None:
                    time.sleep(0.05)

    def check(self, zone):
        bad = []
        for i in self.ids:
            got = zone.get(i)
            allowed = {self.state.get(i)} | self.uncertain.get(i, set())
            if got not in allowed:
                bad.append(f"{i}: got {got}, answered {self.state.get(i)}, in flight {self.uncertain.get(i)}")
        torn_bulk = None
        if self.bulk_in_flight:
            ids, old, new = self.bulk_in_flight
            got = {i: zone.get(i) for i in ids}
            applied = [i for i in ids if got[i] == new[i]]
            # One record: applied to all of its campaigns or to none.
            if applied and len(applied) != len(ids):
                torn_bulk = f"bulk {ids}: got {got}, old {old}, new {new}"
        # What is there now is durable: it is the truth for the next round.
        for i in self.ids:
            self.state[i] = zone.get(i)
        self.uncertain.clear()
        self.bulk_in_flight = None
        return bad, torn_bulk


def zone_campaigns():
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
    out, cursor = {}, None
    while True:
        q = "/a?limit=1000" + (f"&cursor={cursor}" if cursor is not None else "")
        conn.request("GET", q)
        r = conn.getresponse()
        body = json.loads(r.read())
        for c in body["campaigns"]:
            out[c["id"]] = c["landing_url"]
        cursor = body.get("next")
        if cursor is None:
            return out


def main():
    print(f"# admin crash test: {ROUNDS} rounds, seed {SEED} (CRASH_SEED to repeat)")
    os.makedirs(WORK, exist_ok=True)
    with open(CAMPAIGNS, "w") as f:
        f.write("[]\n")
    write_conf()
    start()
    state = {}
    clients_state = [dict() for _ in range(3)]
    answered_total = 0
    for rnd in range(1, ROUNDS + 1):
        clients = [Client(k, clients_state[k]) for k in range(3)]
        for c in clients:
            c.start()
        time.sleep(rng.uniform(0.3, 1.5))
        how = rng.choice(["worker", "all", "reload"])
        m = master()
        if how == "worker":
            ws = children(m)
            os.kill(rng.choice(ws), signal.SIGKILL)
            time.sleep(rng.uniform(0.1, 0.5))
            kill_all()
        elif how == "all":
            kill_all()
        else:
            os.kill(m, signal.SIGHUP)
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(m, signal.SIGKILL)
            kill_all()
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(10)
        kill_all()  # a client's last request may have reached a worker being killed
        answered = sum(c.answered for c in clients)
        answered_total += answered
        start()
        zone = zone_campaigns()
        bad, torn = [], []
        for c in clients:
            b, t = c.check(zone)
            bad += b
            if t:
                torn.append(t)
        ok(not bad, f"round {rnd} ({how}, {answered} changes answered): after restart every answered change is there")
        for b in bad[:10]:
            print(f"#   {b}")
        ok(not torn, f"round {rnd}: a bulk POST in flight is all there or not at all")
        for t in torn:
            print(f"#   {t}")
    ok(answered_total > 50, f"{answered_total} changes answered in all (the stream ran)")
    kill_all()
    print(f"admin-crash: {passes} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        kill_all()
