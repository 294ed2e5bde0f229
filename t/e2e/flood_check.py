#!/usr/bin/env python3
"""Checks the flood test (t/e2e/flood.sh) against nginx's access log: the ground truth.

usage: flood_check.py ACCESS_LOG EVENTS_DIR STATS_JSON

ACCESS_LOG lines (log_format flood of flood.sh):
    EVENT_ID STATUS "METHOD" "URI" "X-KIND" "X-N" "UA" "REFERER" "CONTENT-LENGTH" "ARGS"
with nginx's default escaping (\\xHH for '"', '\\' and bytes outside 0x20-0x7e). For each request
the module handled, this computes from the logged request alone, with the rules of
docs/directives.md (tracker_limits, tracker_invalid) and docs/event-schema.md, what it must have
done (LOCATIONS: the location's event type, answer and mode):
  - refused (nothing stored): the first failing check of src/handler.rs's order (Content-Length
    over body=; query string over query=, then over args= non-empty parts; with tracker_invalid
    reject also: the campaign id, the click id of non-click events, the value of conversions and
    custom events, the video event and watch time, the dimensions pub n xn kind). The line must
    have no event id and the reason's status: 413 for the body, else the GIF's 200 on GIF
    locations and 400 on the others;
  - stored: the line has an event id, exactly one event has it in EVENTS_DIR (the file sink's
    committed files), with exactly the fields the request implies (percent-decoding, the cuts at
    1024 / 128 / 64 / 16 bytes and the flags invalid_campaign, invalid_value,
    invalid_video_event, truncated of the flag-mode locations; unknown_campaign,
    inactive_campaign; ua, referer, ip), and the status its location answers (200, 204, 302 to
    the landing or fallback URL, 404 without one).
No event may lack its line. Requests the module never saw (nginx's own 400 and 414, 405 for
other methods, the limit_req and limit_conn refusals) must have no event and the status their
kind implies. STATS_JSON is `tracker-shipper stats` after the drain: nothing dropped or
abandoned, as many events written as found, and its `invalid` counters equal, reason by reason,
the refusals counted here (each reason occurring, in a run of 50,000 requests or more). Prints a summary and exits non-zero on any mismatch.
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
VIDEO_EVENTS = {b"start", b"q1", b"mid", b"q3", b"complete"}

# tracker_limits: (query, args, value, body) of the default locations (reject) and of the
# flag-mode ones (query=64k args=4096).
DEFAULT_LIMITS = (4096, 64, 1024, 65536)
FLAG_LIMITS = (65536, 4096, 1024, 65536)
# Each tracker location of flood.sh: event type, answer (gif, empty, redirect), whether
# tracker_fallback_url applies (redirect), tracker_invalid mode, limits.
LOCATIONS = {
    "/i": ("impression", "gif", False, "reject", DEFAULT_LIMITS),
    "/c": ("click", "redirect", True, "reject", DEFAULT_LIMITS),
    "/c0": ("click", "redirect", False, "reject", DEFAULT_LIMITS),
    "/cv": ("conversion", "gif", False, "reject", DEFAULT_LIMITS),
    "/v": ("video", "gif", False, "reject", DEFAULT_LIMITS),
    "/b": ("signup", "empty", False, "reject", DEFAULT_LIMITS),
    "/lim": ("lim_req", "gif", False, "reject", DEFAULT_LIMITS),
    "/limc": ("lim_conn", "gif", False, "reject", DEFAULT_LIMITS),
    "/if": ("impression", "gif", False, "flag", FLAG_LIMITS),
    "/cf": ("click", "redirect", True, "flag", FLAG_LIMITS),
    "/cvf": ("conversion", "gif", False, "flag", FLAG_LIMITS),
    "/vf": ("video", "gif", False, "flag", FLAG_LIMITS),
}
# The reasons, in the order of the ring header's invalid[] slots (core/src/limits.rs).
REASONS = ["query_too_long", "too_many_args", "value_too_long", "invalid_campaign", "invalid_click_id",
           "invalid_value", "invalid_video_event", "body_too_large"]

# Kinds whose requests never reach the module (no event), and the statuses they may get.
NO_EVENT = {
    "method": {400, 405},   # other methods: 405 from the module (or nginx itself for TRACE)
    "rawctl": {400},        # control bytes in the request line: nginx's 400
    "both": {400},          # Content-Length and Transfer-Encoding: nginx's 400
    "toolong": {414},       # request line over large_client_header_buffers
    "-": {400, 414},        # nginx refused the request before reading X-Kind
}
# Refused by limit_req (429, its limit_req_status) or limit_conn (503): no event.
LIMITED = {"lim": {429}, "limc": {503}, "limc-over": {503}}
# Kinds that are valid requests: each must be stored, without a flag.
VALID_KINDS = {"i", "c", "cv", "cvchunk", "v", "b"}

LINE = re.compile(rb'^(\S+) (\d{3}) "(.*?)" "(.*?)" "(.*?)" "(.*?)" "(.*?)" "(.*?)" "(.*?)" "(.*)"$')
CID = re.compile(rb"[A-Za-z0-9_.:-]{1,64}")


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


def count_args(args):
    """core limits::count_args: the &-separated parts that are not empty."""
    return sum(1 for p in args.split(b"&") if p)


def refusal(loc, args, kind, xn, content_length):
    """The reason the module must refuse this request for, or None: src/handler.rs's checks, in
    its order (handler(), then track()), for the location `loc` (a LOCATIONS value)."""
    etype, _, _, mode, (max_query, max_args, max_value, max_body) = loc
    if content_length > max_body:
        return "body_too_large"
    if len(args) > max_query:
        return "query_too_long"
    if count_args(args) > max_args:
        return "too_many_args"
    if mode != "reject":
        return None
    low = args.lower()

    def value(name, cut, src=None):
        """The decoded value, and whether it is over `cut` bytes."""
        v = pdecode(src if src is not None else (arg(args, low, name) or b""), cut)
        return v, len(v) > cut

    cid, over = value(b"cid", max_value)
    if over or not CID.fullmatch(cid):
        return "invalid_campaign"
    if etype != "click" and value(b"click_id", 128)[1]:
        return "invalid_click_id"
    if etype not in ("impression", "click", "video"):    # conversion and custom kinds
        v, over = value(b"value", 64)
        if over or (v and parse_number(v) is None):
            return "invalid_value"
    if etype == "video":
        e, over = value(b"event", 16)
        if over or e not in VIDEO_EVENTS:
            return "invalid_video_event"
        w, over = value(b"watch_time", 64)
        if over or (w and parse_number(w) is None):
            return "invalid_value"
    for name, src in ((b"pub", None), (b"n", None), (None, xn), (None, kind.encode())):
        if value(name, max_value, src)[1]:
            return "value_too_long"
    return None


def answer(loc, ev):
    """The status the location answers a stored event with."""
    _, response, fallback, _, _ = loc
    if response == "gif":
        return 200
    if response == "empty":
        return 204
    # A click: the landing URL of an active campaign (camp-ok), else tracker_fallback_url or 404.
    return 302 if ev["campaign"] == "camp-ok" or fallback else 404


def refused_status(loc, reason):
    if reason == "body_too_large":
        return 413
    return 200 if loc[1] == "gif" else 400


def expected(loc, args, kind, xn, ua, referer):
    """The event the module must store for this request (one refusal() lets through): with
    tracker_invalid reject nothing below is cut or flagged invalid, refusal() saw to that."""
    flags = set()
    ev = {"type": loc[0]}
    low = args.lower()

    def value(name, cut, src=None):
        v = pdecode(src if src is not None else (arg(args, low, name) or b""), cut)
        if len(v) > cut:
            flags.add("truncated")
            v = v[:cut]
        return v

    cid = value(b"cid", loc[4][2])
    if CID.fullmatch(cid):
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
        "pub": lossy(value(b"pub", loc[4][2])),
        "n": lossy(value(b"n", loc[4][2])),
        "xn": lossy(value(None, loc[4][2], xn)),
        "kind": lossy(value(None, loc[4][2], kind.encode())),
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
    digit; the requests without an event by their line number): run in `parts` processes at
    once."""
    errors = []
    counts = collections.Counter()
    reasons = collections.Counter()
    flag_counts = collections.Counter()
    statuses = collections.defaultdict(collections.Counter)   # outcome -> status -> n

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
        for lineno, raw in enumerate(fh):
            eid = raw[:raw.find(b" ")].decode()
            if (eid == "-" and lineno % parts != k) or (eid != "-" and not mine(eid)):
                continue
            m = LINE.match(raw.rstrip(b"\n"))
            if not m:
                err(f"unparsable access log line {raw[:200]!r}")
                continue
            eid, status, method, uri, kind, xn, ua, referer, clen, args = m.groups()
            eid, status = eid.decode(), int(status)
            uri, kind, xn = unescape(uri).decode("latin-1"), unescape(kind).decode("latin-1"), unescape(xn)
            ua, referer, args = unescape(ua), unescape(referer), unescape(args)
            clen = int(clen) if clen.isdigit() else 0
            kind = kind or "-"
            by_kind[kind][status] += 1
            counts["requests"] += 1

            # Requests the module never saw: nginx's refusals, other methods, the limits.
            if kind in NO_EVENT or (kind in LIMITED and status in LIMITED[kind] and eid == "-"):
                allowed = NO_EVENT.get(kind, set()) | LIMITED.get(kind, set())
                if eid != "-":
                    err(f"{kind} request {uri} got {status} and event {eid} (want none, status {sorted(allowed)})")
                    served.add(eid)
                elif status not in allowed:
                    err(f"{kind} request {uri} got {status} and no event (allowed: {sorted(allowed)})")
                counts["not seen by the module"] += 1
                statuses["not seen by the module"][status] += 1
                continue
            loc = LOCATIONS.get(uri)
            if loc is None or method not in (b"GET", b"POST"):
                err(f"{kind} request {method!r} {uri} ({status}, event {eid}): not a request this test sends")
                continue

            # Refused: no event, counted by its reason, answered with its status.
            reason = refusal(loc, args, kind, xn, clen)
            if reason is not None:
                reasons[reason] += 1
                counts["refused"] += 1
                statuses[f"refused ({loc[3]})"][status] += 1
                want = refused_status(loc, reason)
                if eid != "-":
                    served.add(eid)
                    err(f"{kind} request {uri}?{args[:120]!r} (Content-Length {clen}) must be refused ({reason}), has event {eid}")
                elif status != want:
                    err(f"{kind} request {uri}?{args[:120]!r} refused ({reason}) with {status}, want {want}")
                if kind in VALID_KINDS:
                    err(f"valid {kind} request {uri}?{args[:120]!r} refused ({reason})")
                continue

            # Stored: exactly its event.
            if eid == "-":
                err(f"{kind} request {uri}?{args[:120]!r} ({status}) must be stored, has no event")
                continue
            served.add(eid)
            counts["stored"] += 1
            counts[f"stored ({loc[3]})"] += 1
            ev = events.get(eid)
            if ev is None:
                err(f"{kind} request {uri} ({status}): its event {eid} was not stored")
                continue
            # The User-Agent and Referer each kind sent (binval: logged, as they are random).
            if kind == "longua":
                ua, referer = LONG_UA, LONG_REFERER
            elif kind != "binval":
                ua, referer = NORMAL_UA, b""
            want = expected(loc, args, kind, xn, ua, referer)
            want["status"] = answer(loc, want)
            statuses[f"stored ({loc[3]})"][status] += 1
            if status != want["status"]:
                err(f"{kind} request {uri}?{args[:120]!r} answered {status} with event {eid}, want {want['status']}")
            if loc[3] == "reject":
                bad = [f for f in want["flags"] if f.startswith("invalid_") or f == "truncated" and kind != "longua"]
                if bad:
                    err(f"model: {kind} request {uri}?{args[:120]!r} passes the checks of tracker_invalid reject with flags {bad}")
            for f in want["flags"]:
                flag_counts[f"{f} ({loc[3]})"] += 1
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
            if ev.get("campaign") and not CID.fullmatch(ev["campaign"].encode()):
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
    return (counts, {kd: dict(c) for kd, c in by_kind.items()}, errors, dict(reasons), dict(flag_counts),
            {o: dict(c) for o, c in statuses.items()})


def main(log_path, events_dir, stats_path):
    files = glob.glob(os.path.join(events_dir, "type=*", "date=*", "hour=*", "*.ndjson.gz"))
    parts = max(1, min(2, os.cpu_count() or 1))
    with multiprocessing.Pool(parts) as pool:
        results = pool.starmap(check_part, [(k, parts, log_path, files) for k in range(parts)])
    counts = collections.Counter()
    by_kind = collections.defaultdict(collections.Counter)
    reasons = collections.Counter()
    flag_counts = collections.Counter()
    statuses = collections.defaultdict(collections.Counter)
    errors = []
    for c, bk, e, rs, fc, st in results:
        counts.update(c)
        for kd, n in bk.items():
            by_kind[kd].update(n)
        errors.extend(e)
        reasons.update(rs)
        flag_counts.update(fc)
        for o, n in st.items():
            statuses[o].update(n)

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
    # Refusals per reason: the ring header's invalid[] counters equal the access log's.
    ring_invalid = stats.get("invalid")
    if not isinstance(ring_invalid, dict) or sorted(ring_invalid) != sorted(REASONS):
        err(f"tracker-shipper stats: invalid is {ring_invalid!r}, want a counter for each of {REASONS}")
        ring_invalid = {}
    for r in REASONS:
        if ring_invalid.get(r) != reasons[r]:
            err(f"ring invalid[{r}] = {ring_invalid.get(r)}, the access log has {reasons[r]} such refusals")
        if reasons[r] == 0 and counts["requests"] >= 50000:    # a short run may miss the rare ones
            err(f"no request refused for {r}: the flood does not exercise it")

    # -- limits: some refused, none stored ------------------------------------------------------
    for kind, want in (("lim", {429}), ("limc-over", {503})):
        refused = sum(by_kind[kind][s] for s in want)
        if refused == 0:
            err(f"no {kind} request was refused with {sorted(want)}: {dict(by_kind[kind])}")
    if by_kind["lim"][200] == 0:
        err("no /lim request passed limit_req")

    print(f"flood_check: {counts['requests']} requests in the access log, {counts['events']} events in {len(files)} files; "
          f"{counts['stored']} requests stored ({counts['stored (reject)']} on the reject locations, "
          f"{counts['stored (flag)']} on the flag ones), {counts['valid stored']} of them valid requests "
          f"(unique tags: {counts['valid tags']}); {counts['refused']} refused; "
          f"{counts['not seen by the module']} not seen by the module; {counts['unexpected events']} unexpected events, "
          f"{len(dead)} dead letters, {counts['errors']} errors ({parts} processes)")
    print("  refused, by reason (access log = ring header): "
          + ", ".join(f"{r} {reasons[r]}" for r in REASONS))
    print("  flags of the stored events: " + ", ".join(f"{f} {n}" for f, n in sorted(flag_counts.items())))
    print("  statuses:")
    for o in sorted(statuses):
        print(f"    {o:>24}: " + ", ".join(f"{s}: {n}" for s, n in sorted(statuses[o].items())))
    print("  requests by kind and status:")
    for kind in sorted(by_kind):
        print(f"    {kind:>10}: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_kind[kind].items())))
    for e in errors[:40]:
        print("  ERROR " + e)
    return 1 if counts["errors"] else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
