#!/usr/bin/env python3
"""Reads the callgrind dumps of bench/callgrind.sh (one per case, each covering exactly N
requests) and prints, per request:

  - total instructions (Ir) per case and what each adds over empty_gif;
  - the inclusive cost of the module's handler and of each function it calls directly;
  - the module's own functions by exclusive cost;
  - the functions whose exclusive cost differs most from empty_gif's (where the added
    instructions go, nginx and libc included).

Writes summary.json and report.md next to the dumps.

    callgrind_report.py OUTDIR N CASE=FILE [CASE=FILE...]     (the first case is the base)

The parser reads the callgrind format directly (name compression, fi/fe inline files, calls=
lines) and keys functions by name: a function's costs under several inline files are summed,
as are the calls it makes.
"""
import json
import os
import re
import sys
from collections import defaultdict

HANDLER = "ngx_http_tracker_module::handler::handler"
MODULE_OBJ = None  # the object that holds the handler (whatever the .so is called)


def parse(path):
    """-> (total, self_cost{fn}, calls{caller:{callee:inclusive}}, obj{fn})."""
    names = {"fn": {}, "fl": {}, "ob": {}}
    kind_of = {"fn": "fn", "cfn": "fn", "fl": "fl", "fi": "fl", "fe": "fl", "cfi": "fl", "cfl": "fl",
               "ob": "ob", "cob": "ob"}
    self_cost = defaultdict(int)
    calls = defaultdict(lambda: defaultdict(int))
    obj_of = {}
    total = None
    cur_ob = cur_fn = None
    callee = callee_ob = None
    pending_call = False
    spec = re.compile(r"^(\w+)=(?:\((\d+)\))?\s*(.*)$")
    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line[0] == "#":
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                parts = line.split()
                cost = int(parts[1]) if len(parts) > 1 else 0
                if pending_call:
                    if callee != cur_fn:
                        calls[cur_fn][callee] += cost
                    pending_call = False
                else:
                    self_cost[cur_fn] += cost
                continue
            if line.startswith("summary:") or line.startswith("totals:"):
                v = int(line.split(":", 1)[1].split()[0])
                if line.startswith("summary:") or total is None:
                    total = v
                continue
            if line.startswith("calls="):
                pending_call = True
                continue
            m = spec.match(line)
            if not m:
                continue
            key, ident, name = m.groups()
            if key not in kind_of:
                continue
            table = names[kind_of[key]]
            if ident is not None:
                if name:
                    table[ident] = name
                name = table.get(ident, f"({ident})")
            if key == "ob":
                cur_ob = name
            elif key == "fn":
                cur_fn = name
                obj_of.setdefault(name, cur_ob)
                callee_ob = None
            elif key == "cob":
                callee_ob = name
            elif key == "cfn":
                callee = name
                obj_of.setdefault(name, callee_ob or cur_ob)
                callee_ob = None
    return total, self_cost, calls, obj_of


def merge_handler(self_cost, calls, obj_of):
    """Folds the handler's closures (`handler::{{closure}}`, the per-request body run inside
    the worker state) into the handler itself, so that its callees show as the handler's."""
    group = [fn for fn in list(self_cost) + list(calls) if fn.startswith(HANDLER + "::")]
    for fn in set(group):
        self_cost[HANDLER] += self_cost.pop(fn, 0)
        for callee, c in calls.pop(fn, {}).items():
            if callee != HANDLER and not callee.startswith(HANDLER + "::"):
                calls[HANDLER][callee] += c
    calls[HANDLER] = defaultdict(int, {k: v for k, v in calls[HANDLER].items()
                                       if k != HANDLER and not k.startswith(HANDLER + "::")})
    for table in calls.values():
        for callee in [k for k in table if k.startswith(HANDLER + "::")]:
            table[HANDLER] += table.pop(callee)


def inclusive(fn, self_cost, calls):
    return self_cost.get(fn, 0) + sum(calls.get(fn, {}).values())


def short(name, width=90):
    return name if len(name) <= width else name[: width - 1] + "…"


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    cases = [a.split("=", 1) for a in sys.argv[3:]]
    data = {name: parse(path) for name, path in cases}
    for total, self_cost, calls, obj_of in data.values():
        if HANDLER in self_cost:
            merge_handler(self_cost, calls, obj_of)
    base_name = cases[0][0]
    base_total, base_self, _, _ = data[base_name]
    lines = []
    summary = {"requests": n, "base": base_name, "cases": {}}

    lines.append(f"Instructions (Ir) per request, {n} keep-alive requests per case after a warm-up")
    lines.append("")
    lines.append(f"| case | Ir/request | added vs {base_name} | ratio | handler inclusive Ir/request |")
    lines.append("|---|---:|---:|---:|---:|")
    for name, _ in cases:
        total, self_cost, calls, _ = data[name]
        h = inclusive(HANDLER, self_cost, calls) if HANDLER in self_cost else 0
        summary["cases"][name] = {"ir_per_request": total / n, "added_per_request": (total - base_total) / n,
                                  "ratio": total / base_total, "handler_inclusive_per_request": h / n}
        lines.append(f"| {name} | {total / n:,.0f} | {(total - base_total) / n:+,.0f} | {total / base_total:.3f} | "
                     + (f"{h / n:,.0f}" if h else "—") + " |")

    for name, _ in cases[1:]:
        total, self_cost, calls, obj_of = data[name]
        if HANDLER not in self_cost:
            continue
        h = inclusive(HANDLER, self_cost, calls)
        lines += ["", f"### {name}: the handler's {h / n:,.0f} Ir/request, by direct callee (inclusive)", "",
                  "| Ir/request | share | function |", "|---:|---:|---|"]
        rows = [("(handler itself)", self_cost[HANDLER])]
        rows += sorted(calls[HANDLER].items(), key=lambda kv: -kv[1])
        top = []
        for fn, cost in rows[:20]:
            lines.append(f"| {cost / n:,.1f} | {cost / h:.1%} | `{short(fn)}` |")
            top.append({"function": fn, "ir_per_request": cost / n})
        summary["cases"][name]["handler_callees"] = top

        module_obj = obj_of.get(HANDLER)
        mod = sorted(((fn, c) for fn, c in self_cost.items() if module_obj and obj_of.get(fn) == module_obj),
                     key=lambda kv: -kv[1])
        mod_total = sum(c for _, c in mod)
        lines += ["", f"### {name}: the module's own functions (exclusive), {mod_total / n:,.0f} Ir/request in all", "",
                  "| Ir/request | function |", "|---:|---|"]
        for fn, cost in mod[:15]:
            lines.append(f"| {cost / n:,.1f} | `{short(fn)}` |")
        summary["cases"][name]["module_exclusive"] = [{"function": fn, "ir_per_request": c / n} for fn, c in mod[:30]]

        delta = defaultdict(int)
        for fn in set(self_cost) | set(base_self):
            delta[fn] = self_cost.get(fn, 0) - base_self.get(fn, 0)
        top = sorted(delta.items(), key=lambda kv: -abs(kv[1]))[:15]
        lines += ["", f"### {name}: largest exclusive differences from {base_name} (any object)", "",
                  "| Ir/request | function | object |", "|---:|---|---|"]
        for fn, d in top:
            lines.append(f"| {d / n:+,.1f} | `{short(fn, 70)}` | {os.path.basename(obj_of.get(fn) or '?')} |")
        summary["cases"][name]["delta_exclusive"] = [{"function": fn, "ir_per_request": d / n} for fn, d in top]

    txt = "\n".join(lines) + "\n"
    open(os.path.join(out, "report.md"), "w").write(txt)
    json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
    print(txt)


if __name__ == "__main__":
    main()
