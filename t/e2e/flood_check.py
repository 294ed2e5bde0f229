#!/usr/bin/env python3
"""Checks the flood test (t/e2e/flood.sh) against nginx's access log: the ground truth.

usage: flood_check.py ACCESS_LOG EVENTS_DIR STATS_JSON

ACCESS_LOG lines (log_format flood of flood.sh):
    EVENT_ID STATUS "METHOD" "URI" "X-KIND" "X-N" "UA" "REFERER" "ARGS"
with nginx's default escaping (\\xHH for '"', '\\' and bytes outside 0x20-0x7e). Every line with
an event id must have exactly one event with that id in EVENTS_DIR (the file sink's committed
files), with exactly the fields the request implies, computed here from the logged arguments
with the rules of docs/event-schema.md and docs/directives.md (percent-decoding, cuts at 1024 /
128 / 64 / 16 bytes, the campaign id charset, the flags); no event may have no line. Lines
without an event id (requests the module did not record: nginx's own 400 and 414, 405 for other
methods, limit_req and limit_conn refusals) must have the status their kind implies. STATS_JSON
is `tracker-shipper stats` after the drain: nothing dropped or abandoned, as many events written
as found. Prints a summary and exits non-zero on any mismatch.
"""
import codecs
import collections
import glob
import gzip
import json
import math
import multiprocessing
import os
import re
import sys
from urllib.parse import unquote_to_bytes

# The strings of flood_load.lua.
NORMAL_UA = b"Mozilla/5.0 (X11; Linux x86_64) flood"
LONG_UA = b"Mozilla/5.0 " + b"\xc3\xa9x\x01" * 5000
LONG_REFERER = b"https://ref.example/" + b"r%0d%0a\xff" * 700

CAMPAIGNS = {b"camp-ok": "active", b"camp-paused": "paused"}
TYPES = {"/i": "impression", "/c": "click", "/c0": "click", "/cv": "conversion", "/v": "video",
         "/b": "signup", "/lim": "lim_req", "/limc": "lim_conn"}
KIND_OF_TYPE = {"impression": "impression", "click": "click", "conversion": "conversion", "video": "video"}
VIDEO_EVENTS = {b"start", b"q1", b"mid", b"q3", b"complete"}

# Kinds whose requests never reach the module (no event), and the statuses they may get.
NO_EVENT = {
    "method": {400, 405},   # other methods: 405 from the module (or nginx itself for TRACE)
    "rawctl": {400},        # control bytes in the request line: nginx's 400
    "both": {400},          # Content-Length and Transfer-Encoding: nginx's 400
    "toolong": {414},       # request line over large_client_header_buffers
    "-": {400, 414},        # nginx refused the request before reading X-Kind
}
# Kinds the module records, and the statuses it answers with (by path where it varies).
STATUS = {
    "i": {200}, "c": {302}, "cv": {200}, "cvbig": {200}, "cvchunk": {200}, "v": {200}, "b": {204},
    "badcid": {200, 302}, "unknown": {200, 404}, "paused": {302}, "huge": {200}, "manyargs": {302},
    "badpct": {200}, "binval": {200}, "badvalue": {200}, "badvideo": {200}, "longua": {200},
    "lim": {200}, "limc": {200}, "limc-hold": {200}, "limc-after": {200},
}
# Refused by limit_req (429, its limit_req_status) or limit_conn (503): no event.
LIMITED = {"lim": {429}, "limc": {503}, "limc-over": {503}}
VALID_KINDS = {"i", "c", "cv", "cvbig", "cvchunk", "v", "b"}

LINE = re.compile(rb'^(\S+) (\d{3}) "(.*?)" "(.*?)" "(.*?)" "(.*?)" "(.*?)" "(.*?)" "(.*)"$')
CID = re.compile(rb"^[A-Za-z0-9_.:-]{1,64}$")


def unescape(b):
    """Undoes nginx's log escaping: \\xHH (a backslash itself is \\x5C, so there is no other
    backslash sequence)."""
    if b"\\x" not in b:
        return b
    return codecs.escape_decode(b)[0]


def pdecode(b, cut=None):
    """core/src/input.rs percent_decode (%XX and '+' as space; bad escapes kept), of enough of
    `b` to know its first `cut` + 1 bytes: an escape that starts before 3 * cut + 3 ends before
    3 * cut + 6, and those bytes decode to at least cut + 1 bytes."""
    if cut is not None and len(b) > 3 * cut + 6:
        b = b[:3 * cut + 6]
    if b"%" not in b:
        return b.replace(b"+", b" ")
    return unquote_to_bytes(b.replace(b"+", b" "))


def arg(args, low, name):
    """nginx's $arg_NAME (core input::arg_value): the value of the first &-part that starts
    with NAME= (any case); `low` is args.lower()."""
    key = name + b"="
    if low.startswith(key):
        start = len(key)
    else:
        i = low.find(b"&" + key)
        if i < 0:
            return None
        start = i + 1 + len(key)
    end = args.find(b"&", start)
    return args[start:] if end < 0 else args[start:end]


def lossy(b):
    return b.decode("utf-8", "replace")


def parse_number(b):
    body = b[1:] if b[:1] in (b"-", b"+") else b
    if not body or not re.fullmatch(rb"[0-9.]*", body) or body.count(b".") > 1 or not re.search(rb"[0-9]", body):
        return None
    v = float(b)
    return v if math.isfinite(v) else None


def expected(path, args, kind, xn, ua, referer):
    """The event the module must store for this request."""
    flags = set()
    ev = {"type": TYPES[path]}
    low = args.lower()

    def value(name, cut, src=None):
        v = pdecode(src if src is not None else (arg(args, low, name) or b""), cut)
        if len(v) > cut:
            flags.add("truncated")
            v = v[:cut]
        return v

    cid = value(b"cid", 1024)
    if CID.match(cid):
        ev["campaign"] = cid.decode()
        state = CAMPAIGNS.get(cid)
        if state is None:
            flags.add("unknown_campaign")
        elif state != "active":
            flags.add("inactive_campaign")
    else:
        flags.add("invalid_campaign")
        ev["campaign"] = ""
    if ev["type"] != "click":
        click = value(b"click_id", 128)
        ev["click_id"] = lossy(click) if click else None
    if ev["type"] in ("conversion", "signup", "lim_req", "lim_conn"):
        v = value(b"value", 64)
        if v:
            ev["value"] = parse_number(v)
            if ev["value"] is None:
                flags.add("invalid_value")
    if ev["type"] == "video":
        e = value(b"event", 16)
        if e in VIDEO_EVENTS:
            ev["video_event"] = e.decode()
        else:
            flags.add("invalid_video_event")
        w = value(b"watch_time", 64)
        if w:
            ev["watch_time"] = parse_number(w)
            if ev["watch_time"] is None:
                flags.add("invalid_value")
    ev["dims"] = {
        "pub": lossy(value(b"pub", 1024)),
        "n": lossy(value(b"n", 1024)),
        "xn": lossy(value(None, 1024, xn)),
        "kind": lossy(value(None, 1024, kind.encode())),
    }
    for field, raw, cut in (("ua", ua, 512), ("referer", referer, 2048)):
        if raw:
            if len(raw) > cut:
                flags.add("truncated")
            ev[field] = lossy(raw[:cut])
        else:
            ev[field] = None
    ev["flags"] = sorted(flags)
    return ev


def check_part(k, parts, log_path, files):
    """Checks the requests and events whose event id falls in part k of `parts` (by its last hex
    digit; the requests without an event are part 0's): run in `parts` processes at once."""
    errors = []
    counts = collections.Counter()

    def err(msg):
        if len(errors) < 40:
            errors.append(msg)
        counts["errors"] += 1

    def mine(eid):
        return int(eid[-1], 16) % parts == k

    # -- the events -----------------------------------------------------------------------------
    events, seen = {}, collections.Counter()
    prefix = '{"v":1,"id":"'
    for f in files:
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(prefix) and not mine(line[len(prefix) + 31]):
                    continue
                ev = json.loads(line)
                if not mine(ev["id"]):
                    continue
                seen[ev["id"]] += 1
                events[ev["id"]] = ev
    for eid, n in seen.items():
        if n > 1:
            err(f"event {eid} stored {n} times")

    # -- the requests ---------------------------------------------------------------------------
    served = set()
    by_kind = collections.defaultdict(collections.Counter)
    valid_n = collections.Counter()
    with open(log_path, "rb") as fh:
        for raw in fh:
            eid = raw[:raw.find(b" ")].decode()
            if (eid == "-" and k != 0) or (eid != "-" and not mine(eid)):
                continue
            m = LINE.match(raw.rstrip(b"\n"))
            if not m:
                err(f"unparsable access log line {raw[:200]!r}")
                continue
            eid, status, method, uri, kind, xn, ua, referer, args = m.groups()
            eid, status = eid.decode(), int(status)
            uri, kind, xn = unescape(uri).decode("latin-1"), unescape(kind).decode("latin-1"), unescape(xn)
            ua, referer, args = unescape(ua), unescape(referer), unescape(args)
            kind = kind or "-"
            by_kind[kind][status] += 1
            counts["requests"] += 1
            if eid == "-":
                allowed = NO_EVENT.get(kind, set()) | LIMITED.get(kind, set())
                if status not in allowed:
                    err(f"{kind} request {uri} got {status} and no event (allowed without event: {sorted(allowed)})")
                counts["no event"] += 1
                continue
            served.add(eid)
            if kind not in STATUS or status not in STATUS[kind]:
                err(f"{kind} request {uri} got {status} with event {eid} (want {sorted(STATUS.get(kind, set()))}, no event for {sorted(NO_EVENT.get(kind, set()))})")
            ev = events.get(eid)
            if ev is None:
                err(f"{kind} request {uri} ({status}): its event {eid} was not stored")
                continue
            # The User-Agent and Referer each kind sent (binval: logged, as they are random).
            if kind == "longua":
                ua, referer = LONG_UA, LONG_REFERER
            elif kind != "binval":
                ua, referer = NORMAL_UA, b""
            if uri not in TYPES:
                err(f"event {eid} for a request to {uri}")
                continue
            want = expected(uri, args, kind, xn, ua, referer)
            want["status"] = status
            got = {
                "type": ev.get("type"), "campaign": ev.get("campaign"), "status": ev.get("status"),
                "flags": sorted(ev.get("flags") or []), "dims": ev.get("dims"), "ua": ev.get("ua"),
                "referer": ev.get("referer"),
            }
            for key in ("click_id", "value", "video_event", "watch_time"):
                if key in want:
                    got[key] = ev.get(key)
                elif ev.get(key) is not None and key != "click_id":
                    err(f"event {eid} ({kind}) has {key}={ev.get(key)!r}, the request has none")
            if ev.get("type") == "click" and ev.get("click_id") != eid:
                err(f"click {eid}: click_id {ev.get('click_id')}")
            if ev.get("ip") != "127.0.0.0":
                err(f"event {eid}: ip {ev.get('ip')!r}, want the anonymized 127.0.0.0")
            if got != want:
                diff = {key: (got.get(key), want.get(key)) for key in want if got.get(key) != want.get(key)}
                err(f"{kind} event {eid} for {uri}?{args[:120]!r}: (got, want) {str(diff)[:600]}")
            if ev.get("campaign") and not CID.match(ev["campaign"].encode()):
                err(f"event {eid}: campaign {ev['campaign']!r} outside [A-Za-z0-9_.:-]{{1,64}}")
            if "invalid_campaign" in (ev.get("flags") or []) and ev.get("campaign") != "":
                err(f"event {eid}: invalid_campaign with campaign {ev.get('campaign')!r}")
            if kind in VALID_KINDS:
                counts["valid stored"] += 1
                valid_n[want["dims"]["n"]] += 1
                if ev.get("flags"):
                    err(f"valid {kind} request {uri}?{args[:80]!r} has flags {ev.get('flags')}")

    extra = [i for i in seen if i not in served]
    if extra:
        err(f"{len(extra)} events have no request in the access log, e.g. {[events[i] for i in extra[:2]]}")
    twice = [n for n, c in valid_n.items() if c > 1]
    if twice:
        err(f"{len(twice)} valid tags n stored more than once, e.g. {twice[:3]}")
    counts["events"] = sum(seen.values())
    counts["unexpected events"] = len(extra)
    counts["valid tags"] = len(valid_n)
    return counts, {kd: dict(c) for kd, c in by_kind.items()}, errors


def main(log_path, events_dir, stats_path):
    files = glob.glob(os.path.join(events_dir, "type=*", "date=*", "hour=*", "*.ndjson.gz"))
    parts = max(1, min(2, os.cpu_count() or 1))
    with multiprocessing.Pool(parts) as pool:
        results = pool.starmap(check_part, [(k, parts, log_path, files) for k in range(parts)])
    counts = collections.Counter()
    by_kind = collections.defaultdict(collections.Counter)
    errors = []
    for c, bk, e in results:
        counts.update(c)
        for kd, st in bk.items():
            by_kind[kd].update(st)
        errors.extend(e)

    def err(msg):
        errors.append(msg)
        counts["errors"] += 1

    dead = [p for p in glob.glob(os.path.join(events_dir, "_dead_letter", "*"))
            if not p.endswith("reasons.log") or os.path.getsize(p)]
    if dead:
        err(f"dead letters: {dead[:5]}")

    # -- the ring's counters ------------------------------------------------------------------
    stats = json.load(open(stats_path))
    for c in ("dropped_full", "dropped_too_large"):
        if stats[c]["total"] != 0:
            err(f"ring {c}: {stats[c]}")
    if stats.get("abandoned", 0) != 0:
        err(f"ring abandoned: {stats['abandoned']}")
    if stats["written"]["total"] != counts["events"]:
        err(f"ring written {stats['written']['total']} events, the files hold {counts['events']}")

    # -- limits: some refused, none stored ------------------------------------------------------
    for kind, statuses in (("lim", {429}), ("limc-over", {503})):
        refused = sum(by_kind[kind][s] for s in statuses)
        if refused == 0:
            err(f"no {kind} request was refused with {sorted(statuses)}: {dict(by_kind[kind])}")
    if by_kind["lim"][200] == 0:
        err("no /lim request passed limit_req")

    print(f"flood_check: {counts['requests']} requests in the access log, {counts['events']} events in {len(files)} files, "
          f"{counts['valid stored']} valid requests stored (unique tags: {counts['valid tags']}), "
          f"{counts['no event']} requests without an event, {counts['unexpected events']} unexpected events, "
          f"{len(dead)} dead letters, {counts['errors']} errors ({parts} processes)")
    print("  requests by kind and status:")
    for kind in sorted(by_kind):
        print(f"    {kind:>10}: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_kind[kind].items())))
    for e in errors[:40]:
        print("  ERROR " + e)
    return 1 if counts["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
