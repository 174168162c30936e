#!/usr/bin/env python3
"""Turns the `| W… |` rows printed by ../shared/bench/loadgen/run.sh (via
bench/http-vs-openbao.sh) into one KeyFlow-vs-OpenBao table with ratios.

    python3 bench/summarize.py /tmp/httpbench.log
"""
import re
import sys

rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"\| (W\d-[\w-]+?)-(keyflow|openbao)-(https?) \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", line)
    if not m:
        continue
    w, server, proto, c, rps, p50, p99, non2xx, _, rss, cpu = m.groups()
    # A level that was rerun prints twice; the last one is the one that counts.
    rows[(w, proto, int(c), server)] = (int(rps), float(p99), int(non2xx), int(rss), int(cpu))

print("| workload | proto | conc | KeyFlow req/s | OpenBao req/s | ratio | KeyFlow p99 ms | OpenBao p99 ms | p99 ratio | RSS MiB KF / Bao | server CPU % KF / Bao |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for (w, proto, c, server) in sorted(k for k in rows if k[3] == "keyflow"):
    kf = rows[(w, proto, c, "keyflow")]
    bao = rows.get((w, proto, c, "openbao"))
    if not bao:
        continue
    print(f"| {w} | {proto} | {c} | {kf[0]:,} | {bao[0]:,} | {kf[0] / max(bao[0], 1):.1f}× | {kf[1]:.2f} | {bao[1]:.2f} | {kf[1] / max(bao[1], 1e-9):.2f} | {kf[3]} / {bao[3]} | {kf[4]} / {bao[4]} |")
