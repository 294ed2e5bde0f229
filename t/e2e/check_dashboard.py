#!/usr/bin/env python3
"""Checks of t/e2e/dashboard.sh.

    check_dashboard.py static DOM JSON    the numbers the page shows are those of the JSON
    check_dashboard.py rates DOM CAMPAIGN the page shows non-zero rates (taken under load)
    check_dashboard.py png FILE W H       FILE is a W x H PNG that is not a blank page

DOM is the page as headless Chromium dumped it (--dump-dom): every number cell carries data-k
(the JSON field) and data-v (the JSON value) attributes, and its text is what a person sees.
Prints one "ok"/"not ok" line per check; exits 1 if any failed.
"""
import html.parser
import json
import struct
import sys
import zlib

failures = 0


def check(ok, what):
    global failures
    print(("ok - " if ok else "not ok - ") + what)
    if not ok:
        failures += 1
    return ok


class Page(html.parser.HTMLParser):
    """Collects element texts by id, the body's attributes and the rows of the tables."""

    def __init__(self):
        super().__init__()
        self.body = {}
        self.by_id = {}
        self.rows = []  # (tr attributes, [cell dicts: k, v, text])
        self.stack = []  # open elements: (tag, id or None)
        self.cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "tr":
            self.rows.append((a, []))
        if tag == "td" and self.rows:
            self.cell = {"k": a.get("data-k"), "v": a.get("data-v"), "text": ""}
            self.rows[-1][1].append(self.cell)
        if tag in ("br", "meta", "img", "input", "link", "hr"):
            return
        self.stack.append((tag, a.get("id")))
        if a.get("id"):
            self.by_id[a["id"]] = {"text": "", "attrs": a}

    def handle_endtag(self, tag):
        if tag == "td":
            self.cell = None
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break

    def handle_data(self, data):
        for _, i in self.stack:
            if i:
                self.by_id[i]["text"] += data
        if self.cell is not None:
            self.cell["text"] += data

    def text(self, i):
        return self.by_id.get(i, {}).get("text", "").strip()

    def table(self, key):
        """{row key attribute value: {data-k: cell}} for rows that carry `key`."""
        out = {}
        for a, cells in self.rows:
            if key in a:
                out[a[key]] = {c["k"]: c for c in cells if c["k"]}
        return out


def parse(path):
    p = Page()
    with open(path, encoding="utf-8") as f:
        p.feed(f.read())
    return p


def as_int(text):
    t = text.replace(",", "").strip()
    return int(t) if t.isdigit() else None


def as_float(text):
    try:
        return float(text.replace(",", "").strip().rstrip("%"))
    except ValueError:
        return None


INT_FIELDS = ["impressions", "clicks", "conversions", "video_completes", "over_budget", "rejected"]
MONEY_FIELDS = ["spend", "spend_today"]
RING_FIELDS = ["written", "dropped_full", "dropped_too_large", "rejected", "duplicates"]


def static(dom_path, json_path):
    p = parse(dom_path)
    with open(json_path, encoding="utf-8") as f:
        d = json.load(f)
    samples = int(p.body.get("data-samples", "0"))
    check(samples >= 2, f"the page fetched the JSON every second ({samples} samples in the time budget)")
    state = p.by_id.get("status", {}).get("attrs", {}).get("data-state")
    check(state == "ok", f"status says live (data-state={state}, text {p.text('status')!r})")
    check(as_int(p.text("campaign-count")) == d["campaigns"]["count"],
          f"campaign count shown {p.text('campaign-count')!r} = {d['campaigns']['count']}")
    ring = d["ring"]
    check(as_int(p.text("written-total")) == ring["written"]["total"],
          f"events written shown {p.text('written-total')!r} = {ring['written']['total']}")
    dropped = ring["dropped_full"]["total"] + ring["dropped_too_large"]["total"]
    check(as_int(p.text("dropped-total")) == dropped, f"dropped shown {p.text('dropped-total')!r} = {dropped}")
    fill = as_float(p.text("ring-fill"))
    check(fill is not None and abs(fill - ring["fill_ratio"] * 100) <= 0.05 + 1e-9,
          f"ring fill shown {p.text('ring-fill')!r} = {ring['fill_ratio'] * 100:.3f}%")
    check(as_int(p.text("ring-abandoned")) == ring["abandoned"], f"abandoned shown {p.text('ring-abandoned')!r}")

    types = p.table("data-type")
    want_types = [t for t in ring["written"] if t != "total"] + ["total"]
    check(sorted(types) == sorted(want_types), f"ring rows {sorted(types)} = {sorted(want_types)}")
    for t in want_types:
        row = types.get(t, {})
        for k in RING_FIELDS:
            want = ring[k][t]
            cell = row.get(k, {"text": "", "v": None})
            check(as_int(cell["text"]) == want and cell["v"] == str(want),
                  f"ring {t} {k}: shown {cell['text']!r} (data-v {cell['v']}) = {want}")

    reasons = p.table("data-reason")
    check(sorted(reasons) == sorted(ring["invalid"]), f"invalid rows {sorted(reasons)} = {sorted(ring['invalid'])}")
    for reason, want in sorted(ring["invalid"].items()):
        cell = reasons.get(reason, {}).get("requests", {"text": "", "v": None})
        check(as_int(cell["text"]) == want and cell["v"] == str(want),
              f"invalid {reason}: shown {cell['text']!r} (data-v {cell['v']}) = {want}")

    rows = p.table("data-campaign")
    items = {it["id"]: it for it in d["campaigns"]["items"]}
    check(sorted(rows) == sorted(items), f"campaign rows {sorted(rows)} = {sorted(items)}")
    for cid, it in sorted(items.items()):
        row = rows.get(cid, {})
        bad = []
        if row.get("status", {}).get("text") != it["status"]:
            bad.append(f"status {row.get('status', {}).get('text')!r} != {it['status']!r}")
        for k in INT_FIELDS:
            cell = row.get(k, {"text": "", "v": None})
            if as_int(cell["text"]) != it[k] or cell["v"] != str(it[k]):
                bad.append(f"{k} shown {cell['text']!r} (data-v {cell['v']}) != {it[k]}")
        for k in MONEY_FIELDS:
            cell = row.get(k, {"text": "", "v": None})
            shown = as_float(cell["text"])
            if shown is None or abs(shown - it[k]) > 0.005 + 1e-9 or as_float(cell["v"] or "") != it[k]:
                bad.append(f"{k} shown {cell['text']!r} (data-v {cell['v']}) != {it[k]}")
        check(not bad, f"campaign {cid}: every number shown equals the JSON" + (": " + "; ".join(bad) if bad else ""))


def rates(dom_path, campaign):
    p = parse(dom_path)
    samples = int(p.body.get("data-samples", "0"))
    check(samples >= 2, f"{samples} samples: rates computed")
    total = p.table("data-type").get("total", {}).get("written_rate", {}).get("text", "")
    r = as_float(total)
    check(r is not None and r > 0, f"events written per second under load: {total!r}")
    imp = p.table("data-campaign").get(campaign, {}).get("impressions_rate", {}).get("text", "")
    r = as_float(imp)
    check(r is not None and r > 0, f"{campaign} impressions per second under load: {imp!r}")
    head = p.text("written-rate")
    check(as_float(head) is not None and as_float(head) > 0, f"headline events/s under load: {head!r}")


def png(path, width, height):
    with open(path, "rb") as f:
        data = f.read()
    if not check(data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is a PNG ({len(data)} bytes)"):
        return
    w, h, depth, color = struct.unpack(">IIBB", data[16:26])
    check((w, h) == (width, height), f"screenshot is {w}x{h} (window {width}x{height})")
    idat, pos = b"", 8
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    # Not a blank page: many distinct byte values (text, table lines, the fill bar).
    distinct = len(set(raw))
    check(distinct > 32, f"screenshot is not blank ({distinct} distinct byte values, depth {depth}, color type {color})")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "static" and len(sys.argv) == 4:
        static(sys.argv[2], sys.argv[3])
    elif mode == "rates" and len(sys.argv) == 4:
        rates(sys.argv[2], sys.argv[3])
    elif mode == "png" and len(sys.argv) == 5:
        png(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
    sys.exit(1 if failures else 0)
