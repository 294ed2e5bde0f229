#!/usr/bin/env python3
"""Aggregates bench/run.sh's raw.csv: medians per case, ratios to empty_gif; writes
summary.csv, summary.json, summary.dat (gnuplot) and table.txt, prints the table."""
import csv, json, statistics, sys, os

out, nproc, cpu, rounds, secs, conns = sys.argv[1:7]
rows = list(csv.DictReader(open(os.path.join(out, "raw.csv"))))
order = []
for r in rows:
    if r["case"] not in order:
        order.append(r["case"])
med = lambda xs: statistics.median(xs) if xs else None
summary = []
for c in order:
    rs = [r for r in rows if r["case"] == c]
    s = {
        "case": c, "path": rs[0]["path"], "rounds": len(rs),
        "rps": med([float(r["rps"]) for r in rs]),
        "cpu_us_per_req": med([float(r["cpu_us_per_req"]) for r in rs]),
        "p50_us": med([int(r["p50_us"]) for r in rs]),
        "p99_us": med([int(r["p99_us"]) for r in rs]),
        "requests_total": sum(int(r["requests"]) for r in rs),
        "errors_total": sum(int(r["errors"]) + int(r["status_errors"]) for r in rs),
        "stored_per_req": med([float(r["stored_per_req"]) for r in rs if r["stored_per_req"]]),
        "rps_all": [float(r["rps"]) for r in rs],
        "cpu_us_all": [float(r["cpu_us_per_req"]) for r in rs],
    }
    summary.append(s)
# Ratios are taken within each round (a case against the empty_gif of the same round, a
# minute apart at most) and then the median over rounds: on a shared machine whose load drifts
# during a run, that cancels most of the drift, which a ratio of medians does not.
base_by_round = {r["round"]: r for r in rows if r["case"] == "empty_gif"}
for s in summary:
    rs = [r for r in rows if r["case"] == s["case"] and r["round"] in base_by_round]
    pairs = [(float(r["rps"]), float(r["cpu_us_per_req"]),
              float(base_by_round[r["round"]]["rps"]), float(base_by_round[r["round"]]["cpu_us_per_req"])) for r in rs]
    s["rps_ratio"] = med([a / b for a, _, b, _ in pairs if b]) or float("nan")
    s["cpu_ratio"] = med([c / d for _, c, _, d in pairs if d]) or float("nan")
    s["cpu_added_us"] = med([c - d for _, c, _, d in pairs]) if pairs else float("nan")
    s["rps_ratio_all"] = [round(a / b, 3) for a, _, b, _ in pairs if b]

meta = {"nproc": int(nproc), "cpu": cpu, "rounds": int(rounds), "seconds": int(secs),
        "wrk": f"-t1 -c{conns}", "nginx_workers": 1}
drain = os.path.join(out, "drain.csv")
if os.path.exists(drain):
    meta["drain"] = list(csv.DictReader(open(drain)))
for f in ("ring-stats.json",):
    p = os.path.join(out, f)
    if os.path.exists(p):
        meta["ring_stats_end"] = json.load(open(p))
p = os.path.join(out, "events-shipped.txt")
if os.path.exists(p):
    meta["events_shipped_lines"] = int(open(p).read().strip() or 0)
json.dump({"meta": meta, "cases": summary}, open(os.path.join(out, "summary.json"), "w"), indent=2)

cols = ["case", "rps", "rps_ratio", "cpu_us_per_req", "cpu_added_us", "cpu_ratio", "stored_per_req",
        "p50_us", "p99_us", "requests_total", "errors_total"]
with open(os.path.join(out, "summary.csv"), "w", newline="") as f:
    w = csv.writer(f); w.writerow(cols)
    for s in summary:
        w.writerow([s[c] if not isinstance(s[c], float) else round(s[c], 4) for c in cols])
with open(os.path.join(out, "summary.dat"), "w") as f:
    f.write("# case rps_ratio cpu_us_per_req rps\n")
    for s in summary:
        f.write(f'"{s["case"]}" {s["rps_ratio"]:.4f} {s["cpu_us_per_req"]:.3f} {s["rps"]:.0f}\n')

lines = [f"nproc={nproc} cpu={cpu!r} nginx worker_processes=1 wrk -t1 -c{conns} "
         f"{rounds} round(s) x {secs}s; req/s and CPU: medians; ratios and added CPU: medians of the per-round values",
         "| case | req/s | req/s vs empty_gif | (per round) | worker CPU µs/req | added µs vs empty_gif | CPU vs empty_gif | events stored/req | p50 ms (saturated) | p99 ms (saturated) | errors |",
         "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
if not summary:
    lines = ["(no throughput phase)"]
for s in summary:
    spr = f'{s["stored_per_req"]:.4f}' if s["stored_per_req"] is not None else "—"
    lines.append(f'| {s["case"]} | {s["rps"]:.0f} | {s["rps_ratio"]:.3f} | {" ".join(f"{x:.2f}" for x in s["rps_ratio_all"])} | {s["cpu_us_per_req"]:.2f} | '
                 f'{s["cpu_added_us"]:+.2f} | {s["cpu_ratio"]:.3f} | {spr} | {s["p50_us"]/1000:.2f} | '
                 f'{s["p99_us"]/1000:.2f} | {s["errors_total"]} |')
if "drain" in meta:
    lines.append("")
    lines.append("shipper drain (s to lag 0 after the cases): " +
                 ", ".join(f'r{d["round"]} {d["phase"]}={d["seconds_to_drain"]}' for d in meta["drain"]))
if "events_shipped_lines" in meta and "ring_stats_end" in meta:
    rs = meta["ring_stats_end"]
    lines.append(f'ring at end: written={rs["written"]["total"]} dropped_full={rs["dropped_full"]["total"]} '
                 f'lag_bytes={rs["lag_bytes"]}; NDJSON lines shipped={meta["events_shipped_lines"]}')
# Fill rate of the ring (the fastest tracker case) against the shipper's drain of the backlog
# the shipper-less cases left (run.sh starts the shipper after them and times lag 0).
tracker = [x for x in summary if x["case"].startswith("tracker_") and x["stored_per_req"]]
rs_end = meta.get("ring_stats_end") or {}
written_total = (rs_end.get("written") or {}).get("total") or 0
rec_bytes = rs_end.get("producer_pos", 0) / written_total if written_total else None
if tracker:
    fastest = max(tracker, key=lambda x: x["rps"] * x["stored_per_req"])
    fill = fastest["rps"] * fastest["stored_per_req"]
    meta["fill_events_per_s"] = fill
    meta["fill_case"] = fastest["case"]
    meta["record_bytes"] = rec_bytes
    drains = []
    for d in meta.get("drain", []):
        if d["phase"] != "after_noship_cases":
            continue
        ev = sum(int(r["stored"]) for r in rows if r["round"] == d["round"] and r["case"].endswith("_noship"))
        secs = float(d["seconds_to_drain"])
        if secs > 0:
            drains.append(ev / secs)
    mb = f", {fill * rec_bytes / 1e6:.1f} MB/s at {rec_bytes:.0f} bytes/record" if rec_bytes else ""
    lines.append("")
    lines.append(f"ring fill rate (fastest tracker case, {fastest['case']}): {fill:.0f} events/s{mb}")
    if drains:
        dr = med(drains)
        meta["drain_backlog_events_per_s"] = dr
        lines.append(f"shipper (files) draining the shipper-less cases' backlog: {dr:.0f} events/s = "
                     f"{dr / fill:.1f}x the fill rate (a lower bound: includes its start and 0.1 s polling of the lag)")
    json.dump({"meta": meta, "cases": summary}, open(os.path.join(out, "summary.json"), "w"), indent=2)

lat_path = os.path.join(out, "latency.csv")
if os.path.exists(lat_path):
    lrows = list(csv.DictReader(open(lat_path)))
    lorder = []
    for r in lrows:
        if r["case"] not in lorder:
            lorder.append(r["case"])
    lat = []
    for c in lorder:
        rs = [r for r in lrows if r["case"] == c]
        num = lambda k: med([float(r[k]) for r in rs if r[k] != ""])
        lat.append({"case": c, "rate": int(rs[0]["rate"]), "rounds": len(rs), "rps": num("rps"),
                    "p50_us": num("p50_us"), "p90_us": num("p90_us"), "p99_us": num("p99_us"),
                    "p999_us": num("p999_us"), "max_us": num("max_us"),
                    "non_2xx_3xx": sum(int(r["non_2xx_3xx"]) for r in rs),
                    "p99_us_all": [float(r["p99_us"]) for r in rs if r["p99_us"] != ""]})
    lbase = next((l for l in lat if l["case"] == "empty_gif"), None)
    for l in lat:
        l["p99_ratio"] = l["p99_us"] / lbase["p99_us"] if lbase and lbase["p99_us"] else None
        l["p999_ratio"] = l["p999_us"] / lbase["p999_us"] if lbase and lbase["p999_us"] else None
    meta["latency"] = lat
    json.dump({"meta": meta, "cases": summary}, open(os.path.join(out, "summary.json"), "w"), indent=2)
    rate = lat[0]["rate"] if lat else 0
    lines += ["", f"latency at a fixed {rate} req/s (oha -q, latency correction, shipper running), "
              f"{lat[0]['rounds'] if lat else 0} round(s), medians",
              "| case | req/s achieved | rate held | p50 ms | p90 ms | p99 ms | p99.9 ms | p99 vs empty_gif | p99.9 vs empty_gif | non-2xx/3xx |",
              "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for l in lat:
        r99 = f'{l["p99_ratio"]:.2f}' if l["p99_ratio"] is not None else "—"
        r999 = f'{l["p999_ratio"]:.2f}' if l["p999_ratio"] is not None else "—"
        held = "yes" if l["rps"] >= 0.97 * l["rate"] else "no: saturated"
        lines.append(f'| {l["case"]} | {l["rps"]:.0f} | {held} | {l["p50_us"]/1000:.3f} | {l["p90_us"]/1000:.3f} | '
                     f'{l["p99_us"]/1000:.3f} | {l["p999_us"]/1000:.3f} | {r99} | {r999} | {l["non_2xx_3xx"]} |')

txt = "\n".join(lines) + "\n"
open(os.path.join(out, "table.txt"), "w").write(txt)
print(txt)
