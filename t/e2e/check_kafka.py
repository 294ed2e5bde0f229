#!/usr/bin/env python3
"""Checks what the shipper's Kafka sink produced against nginx's access log: exactly once.

usage: check_kafka.py ACCESS_LOG KAFKA_DUMP_JSONL [EVENTS_DIR]

ACCESS_LOG has lines `<event_id> <status> <uri>?<args>` (log_format e2e of the end-to-end
tests). KAFKA_DUMP_JSONL is the output of `kafka_dump` (shipper/examples/kafka_dump.rs): one
JSON object per message with topic, partition, offset, key, headers and the decoded `event` (or
`undecodable`). EVENTS_DIR, if given, is the file sink's directory of the same shipper run: each
Kafka message must then hold exactly the event the file sink wrote for that id.

Checks:
- every request nginx logged has its event in Kafka exactly once: a missing event and a
  duplicate are errors (docs/shipper.md, "Exactly once"); both are counted and listed;
- no message is undecodable, none has an id nginx did not log;
- each message is on the topic of its type (tracker.impression, tracker.click,
  tracker.conversion, tracker.video; any other type on tracker.custom), its key is the campaign
  id (an event without a campaign may have no key), its headers are schema_version=1,
  event_type=<type>, ring_id (32 hex digits, the same on every message: one ring) and ring_pos
  (decimal, a different one on every message);
- the event's type, campaign, status and dimensions are those its request implies;
- the messages of one key are all on one partition of their topic.
Prints a summary and exits non-zero on any error.
"""
import collections, glob, gzip, json, os, sys
from urllib.parse import parse_qs, urlsplit

TYPES = {"/i": "impression", "/c": "click", "/cv": "conversion", "/v": "video", "/b": "signup"}
BUILTIN = ("impression", "click", "conversion", "video")


def topic_of(event_type):
    return "tracker." + (event_type if event_type in BUILTIN else "custom")


def read_access_log(path):
    served = {}
    for line in open(path, encoding="utf-8", errors="replace"):
        parts = line.rstrip("\n").split(" ", 2)
        if len(parts) != 3 or parts[0] in ("", "-"):
            continue
        served[parts[0]] = (int(parts[1]), parts[2])
    return served


def read_file_sink(events_dir):
    events = {}
    for f in glob.glob(os.path.join(events_dir, "type=*", "date=*", "hour=*", "*.ndjson.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                ev = json.loads(line)
                events[ev["id"]] = ev
    return events


def main(log_path, dump_path, events_dir=None):
    served = read_access_log(log_path)
    file_events = read_file_sink(events_dir) if events_dir else None
    errors = []
    problems = collections.Counter()

    def problem(kind, text):
        problems[kind] += 1
        if problems[kind] <= 3:
            errors.append(f"{kind}: {text}")

    copies = collections.defaultdict(list)   # id -> [(topic, partition, offset, event)]
    per_topic = collections.Counter()
    key_partitions = collections.defaultdict(set)  # (topic, key) -> partitions
    messages = 0
    ring_ids = set()
    positions = collections.Counter()
    for n, line in enumerate(open(dump_path, encoding="utf-8"), 1):
        if not line.strip():
            continue
        messages += 1
        m = json.loads(line)
        where = f"{m['topic']}/{m['partition']}@{m['offset']}"
        per_topic[m["topic"]] += 1
        ev = m.get("event")
        if ev is None:
            problem("undecodable", f"{where}: {m.get('undecodable')}")
            continue
        eid = ev["id"]
        copies[eid].append((m["topic"], m["partition"], m["offset"], ev))
        if m["topic"] != topic_of(ev["type"]):
            problem("wrong topic", f"{where}: type {ev['type']!r} belongs on {topic_of(ev['type'])}")
        if m.get("key") != ev["campaign"] and not (ev["campaign"] == "" and m.get("key") is None):
            problem("wrong key", f"{where}: key {m.get('key')!r}, campaign {ev['campaign']!r}")
        key_partitions[(m["topic"], m.get("key"))].add(m["partition"])
        want_headers = {"schema_version": "1", "event_type": ev["type"]}
        got_headers = {k: m["headers"].get(k) for k in want_headers}
        if got_headers != want_headers:
            problem("wrong headers", f"{where}: {m['headers']}, expected {want_headers}")
        rid, rpos = m["headers"].get("ring_id"), m["headers"].get("ring_pos")
        if rid is None or len(rid) != 32 or rpos is None or not rpos.isdigit():
            problem("no ring_id/ring_pos header", f"{where}: {m['headers']}")
        else:
            ring_ids.add(rid)
            positions[rpos] += 1
        if eid not in served:
            problem("not logged by nginx", f"{where}: event {eid}")
            continue
        status, uri = served[eid]
        u = urlsplit(uri)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        want = {"type": TYPES.get(u.path), "status": status, "campaign": q.get("cid", "")}
        got = {"type": ev.get("type"), "status": ev.get("status"), "campaign": ev.get("campaign")}
        dims = ev.get("dims") or {}
        if want != got or dims.get("publisher") != q.get("pub") or dims.get("n") != q.get("n"):
            problem("does not match its request", f"{where}: event {ev} for {uri} ({status})")
        if file_events is not None:
            fe = file_events.get(eid)
            if fe is not None and fe != ev:
                problem("differs from the file sink", f"{where}: kafka {ev} file {fe}")

    missing = [i for i in served if i not in copies]
    for i in missing:
        problem("missing from Kafka", f"request {served[i][1]} ({served[i][0]}), event {i}")
    dups = {i: c for i, c in copies.items() if len(c) > 1}
    extra_copies = sum(len(c) - 1 for c in dups.values())
    for i, c in dups.items():
        problem("duplicated", f"event {i}: {[(t, p, o) for (t, p, o, _) in c]}")
    if len(ring_ids) > 1:
        problem("several ring ids", f"{sorted(ring_ids)}")
    for pos, n in positions.items():
        if n > 1:
            problem("ring_pos repeated", f"ring_pos {pos} on {n} messages")
    for (topic, key), parts in key_partitions.items():
        if len(parts) > 1:
            problem("key on several partitions", f"{topic} key {key!r}: partitions {sorted(parts)}")
    if file_events is not None:
        not_in_file = [i for i in copies if i not in file_events]
        for i in not_in_file:
            problem("in Kafka, not in the file sink", f"event {i}")

    print(f"check_kafka: {len(served)} requests served; {messages} messages in Kafka "
          f"({', '.join(f'{t} {n}' for t, n in sorted(per_topic.items()))}); "
          f"{len(copies)} distinct events, {len(missing)} missing, "
          f"{len(dups)} events duplicated ({extra_copies} extra copies)")
    print(f"exactly-once: lost {len(missing)}, duplicates {extra_copies}")
    if dups:
        shown = sorted(dups.items(), key=lambda kv: min(o for (_, _, o, _) in kv[1]))
        print(f"  duplicates ({len(dups)} events, first 20 shown):")
        for i, c in shown[:20]:
            print(f"    {i}: " + ", ".join(f"{t}/{p}@{o}" for (t, p, o, _) in c))
    for kind, n in sorted(problems.items()):
        print(f"  ERROR {n} x {kind}")
    for e in errors:
        print("    " + e)
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
