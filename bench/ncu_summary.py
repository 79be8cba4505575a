#!/usr/bin/env python3
"""Sums an ncu CSV (--csv --page raw, the metrics of bench/gpu-ncu.sh) by kernel: launches, time,
DRAM bytes, DRAM throughput as % of peak (time-weighted), warps active, registers, GB/s. Template
arguments are abbreviated to ternlab's reader/writer types so that kernels group as the code names
them. Prints a table, slowest kernels first.

    python3 bench/ncu_summary.py ncu.csv [title]
"""
import collections
import csv
import re
import sys

KINDS = r"(TermX|TermSqDev|TermDy|DyFromPhi|DyStored|XhatRecomputed|XhatStored|I16In|F32In|StorePhi|StoreY|GradBf16|GradF32|__nv_bfloat16|true|false)"


def short(name):
    # ncu writes the anonymous namespace as "unnamed>::" (a "<" before it is a template's)
    name = name.replace("void ", "").replace("unnamed>::", "").replace("(anonymous namespace)::", "")
    base = name.split("<")[0].split("(")[0]
    kinds = list(dict.fromkeys(re.findall(KINDS, name)))
    return base + ("<" + ",".join(kinds) + ">" if kinds else "")


def main():
    path = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else path
    rows = list(csv.reader(open(path)))
    head = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
    h = rows[head]
    col = {n: i for i, n in enumerate(h)}
    data = [r for r in rows[head + 2:] if len(r) == len(h)]
    num = lambda s: float(s.replace(",", "")) if s else 0.0
    agg = collections.OrderedDict()
    for r in data:
        k = short(r[col["Kernel Name"]])
        t = num(r[col["gpu__time_duration.sum"]])
        a = agg.setdefault(k, [0, 0.0, 0.0, 0.0, 0.0, r[col["launch__registers_per_thread"]]])
        a[0] += 1
        a[1] += t
        a[2] += num(r[col["dram__bytes.sum"]])
        a[3] += num(r[col["dram__throughput.avg.pct_of_peak_sustained_elapsed"]]) * t
        a[4] += num(r[col["sm__warps_active.avg.pct_of_peak_sustained_active"]]) * t
    total = sum(a[1] for a in agg.values())
    print(f"{title}: {len(data)} launches, {total / 1e6:.3f} ms of kernel time (ncu: each kernel alone, serialised)")
    print("kernel | launches | ms | DRAM GB | DRAM % of peak | warps active % | registers | GB/s")
    for k, a in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        t = max(a[1], 1e-9)
        print(f"{k[:80]:80s} | {a[0]:3d} | {a[1] / 1e6:6.3f} | {a[2] / 1e9:6.3f} | {a[3] / t:5.1f} | {a[4] / t:5.1f} | {a[5]} | {a[2] / t:.0f}")


if __name__ == "__main__":
    main()
