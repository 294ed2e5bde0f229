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
base = next(s for s in summary if s["case"] == "empty_gif")
for s in summary:
    s["rps_ratio"] = s["rps"] / base["rps"]
    s["cpu_ratio"] = s["cpu_us_per_req"] / base["cpu_us_per_req"]
    s["cpu_added_us"] = s["cpu_us_per_req"] - base["cpu_us_per_req"]

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
         f"{rounds} round(s) x {secs}s, medians",
         "| case | req/s | req/s vs empty_gif | worker CPU µs/req | added µs vs empty_gif | CPU vs empty_gif | events stored/req | p50 ms | p99 ms | errors |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for s in summary:
    spr = f'{s["stored_per_req"]:.4f}' if s["stored_per_req"] is not None else "—"
    lines.append(f'| {s["case"]} | {s["rps"]:.0f} | {s["rps_ratio"]:.3f} | {s["cpu_us_per_req"]:.2f} | '
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
txt = "\n".join(lines) + "\n"
open(os.path.join(out, "table.txt"), "w").write(txt)
print(txt)
