#!/usr/bin/env python3
"""Checks the shipper's files against nginx's access log: exactly one event per served request.

usage: check_events.py ACCESS_LOG EVENTS_DIR
The access log has lines `<event_id> <status> <uri>?<args>` (log_format e2e). Every logged
request must have exactly one event with that id across the committed files, with the type,
campaign, dimensions and status the request implies; no event may be there twice or without a
request. Prints a summary and exits non-zero on any mismatch.
"""
import collections, glob, gzip, json, os, sys
from urllib.parse import parse_qs, urlsplit

TYPES = {"/i": "impression", "/c": "click", "/cv": "conversion", "/v": "video", "/b": "signup"}

def main(log_path, events_dir):
    served = {}
    for line in open(log_path, encoding="utf-8", errors="replace"):
        parts = line.rstrip("\n").split(" ", 2)
        if len(parts) != 3 or parts[0] in ("", "-"):
            continue
        served[parts[0]] = (int(parts[1]), parts[2])
    seen = collections.Counter()
    events = {}
    files = [f for f in glob.glob(os.path.join(events_dir, "type=*", "date=*", "hour=*", "*.ndjson.gz"))]
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                ev = json.loads(line)
                seen[ev["id"]] += 1
                events[ev["id"]] = ev
    errors = []
    dup = [i for i, n in seen.items() if n > 1]
    missing = [i for i in served if i not in seen]
    extra = [i for i in seen if i not in served]
    if dup:
        errors.append(f"{len(dup)} events stored more than once, e.g. {dup[:3]}")
    if missing:
        errors.append(f"{len(missing)} served requests have no event, e.g. {missing[:3]}")
    if extra:
        errors.append(f"{len(extra)} events have no served request, e.g. {extra[:3]}")
    bad = 0
    for eid, (status, uri) in served.items():
        ev = events.get(eid)
        if ev is None:
            continue
        u = urlsplit(uri)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        want = {
            "type": TYPES.get(u.path),
            "status": status,
            "campaign": q.get("cid", ""),
        }
        got = {"type": ev.get("type"), "status": ev.get("status"), "campaign": ev.get("campaign")}
        dims = ev.get("dims") or {}
        if want != got or dims.get("publisher") != q.get("pub") or dims.get("n") != q.get("n"):
            bad += 1
            if bad <= 3:
                errors.append(f"event {eid} does not match its request {uri} ({status}): {ev}")
    if bad:
        errors.append(f"{bad} events do not match their requests")
    print(f"check_events: {len(served)} requests served, {sum(seen.values())} events in {len(files)} files, "
          f"{len(dup)} duplicates, {len(missing)} missing, {len(extra)} unexpected, {bad} mismatched")
    for e in errors:
        print("  " + e)
    return 1 if errors else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
