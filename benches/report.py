# ruff: noqa: RUF001, E501
"""Renders benches/RESULTS.md from the harness's data (see run.py)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

# (workload, key in the run, label, higher is better)
METRICS = [
    ("W1", "rate", "W1 drain, INCR body (jobs/s)", True),
    ("W1n", "rate", "W1n drain, no-op body (jobs/s)", True),
    ("W2", "bulk", "W2 enqueue, bulk API (jobs/s)", True),
    ("W2", "single", "W2 enqueue, single awaited (jobs/s)", True),
    ("W2", "concurrent", "W2 enqueue, 64 concurrent (jobs/s)", True),
    ("W3", "p50", "W3 pickup latency p50 (ms)", False),
    ("W3", "p90", "W3 pickup latency p90 (ms)", False),
    ("W3", "p99", "W3 pickup latency p99 (ms)", False),
    ("W3", "max", "W3 pickup latency max (ms)", False),
    ("W4", "p50", "W4 delay lateness p50 (ms)", False),
    ("W4", "p99", "W4 delay lateness p99 (ms)", False),
    ("W5", "rate", "W5 io-bound, sleep 50 ms x 10k, concurrency 1,000 (jobs/s)", True),
    ("W6", "rate", "W6 sync hash 1 KiB, 8 threads (jobs/s)", True),
    ("W1", "rss_mib", "W7 peak RSS during W1 (MiB)", False),
    ("W1", "worker_cpu_us", "W7 worker CPU per job, W1 (µs)", False),
    ("W1", "redis_cpu_us", "W7 Redis CPU per job, W1 (µs)", False),
    ("W3", "rss_mib", "W7 peak RSS during W3 (MiB)", False),
    ("W3", "worker_cpu_us", "W7 worker CPU per job, W3 (µs)", False),
    ("W3", "redis_cpu_us", "W7 Redis CPU per job, W3 (µs)", False),
]


def _value(run: dict[str, Any], key: str) -> tuple[float | None, str]:
    """(value, flag): flag '' valid, '†' capped (partial rate), '✗' invalid, 'n/a' unsupported."""
    if run["workload"] == "W2":
        sub = run.get(key) or {}
        if sub.get("unsupported"):
            return None, "n/a"
        v = sub.get("rate")
        if sub.get("capped"):
            return v, "†"
        return v, "" if sub.get("valid") else "✗"
    if run.get("unsupported"):
        return None, "n/a"
    if run.get("capped"):
        return (run.get("rate_partial") if key == "rate" else None), "†"
    v = run.get(key)
    return v, "" if run.get("valid") else "✗"


def _fmt(v: float | None) -> str:
    if v is None:
        return "–"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(vals: list[tuple[float | None, str]]) -> str:
    if vals and all(f == "n/a" for _, f in vals):
        return "n/a"
    nums = [v for v, _ in vals if v is not None]
    flags = "".join(sorted({f for _, f in vals if f and f != "n/a"}))
    if not nums:
        return f"–{flags}" if flags else "–"
    med = statistics.median(nums)
    rng = f" ({_fmt(min(nums))}–{_fmt(max(nums))})" if len(nums) > 1 else ""
    return f"{_fmt(med)}{rng}{flags}"


def render(data: dict[str, Any]) -> str:
    runs = data["runs"]
    adapters = list(dict.fromkeys(r["adapter"] for r in runs))
    reps = data["reps"]
    m = data["machine"]
    out: list[str] = []
    w = out.append
    w("# asyncq benchmark results\n")
    w(
        "Protocol: `/work/shared/BENCHMARKS.md` (W1–W7). Reproduce with `make bench-deps && "
        "make bench-peers` (asyncq alone, quick: `make bench`). Raw figures: `benches/results.json`.\n"
    )
    w(
        f"- Started {data['started']}, took {data['elapsed_s'] / 60:.1f} min; {reps} repetition(s), "
        f"library order rotated each repetition: " + "; ".join(" → ".join(o) for o in data["order"])
    )
    w(
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, Linux {m['kernel']}. "
        "**Shared with other engineers' builds and tests while this ran: absolute figures are "
        "noisy; compare ratios taken in the same repetition.**"
    )
    w(
        f"- Load average (1/5/15 min): start {data['load_start']}; at each repetition "
        + ", ".join(data.get("load_reps", []))
        + f"; end {data['load_end']}."
    )
    w(
        f"- Redis {data['redis']} (Debian), private `redis-server --save '' --appendonly no` on a "
        "free loopback port; `FLUSHALL` before every run. N = "
        f"{data['n']:,} (W5: {data['n'] // 2:,}; W3/W4: 500 jobs)."
    )
    w(
        f"- Each run is cut off after {data['cap']:.0f} s; a cut-off drain reports the rate over "
        "the jobs done so far, marked †. ✗ = run invalid (count ≠ N: loss or duplicates). "
        "n/a = the library has no such feature. Cells: median (min–max) over repetitions.\n"
    )

    w("## Versions\n")
    w("| adapter | python | packages |\n|---|---|---|")
    for name, vers in data["versions"].items():
        pk = ", ".join(f"{k} {v}" for k, v in vers.items() if k != "python")
        w(f"| {name} | {vers.get('python', '?')} | {pk} |")
    for name, why in data.get("skipped", {}).items():
        w(f"| {name} | – | **not run**: {why} |")
    w("")

    w("## Redis-side ceiling (redis-benchmark, same server)\n")
    w("| command | -P 1 (req/s) | -P 16 (req/s) |\n|---|---|---|")
    for cmd, v in data.get("ceiling", {}).items():
        w(f"| {cmd} | {_fmt(v.get('P1'))} | {_fmt(v.get('P16'))} |")
    w('\n`EVAL` is `EVAL "return 1" 0`: the floor cost of one script call.\n')

    if data["n"] != 20_000 or data["cap"] < 1e8:
        w("## Deviations from the protocol in this run\n")
        if data["n"] != 20_000:
            w(
                f"- **N = {data['n']:,} instead of 20,000** (W5: {data['n'] // 2:,} instead of "
                "10,000): ten adapters x seven workloads x 3 repetitions had to fit in ~20 minutes "
                "on 2 shared cores. The protocol does not allow this; `make bench-peers` without "
                "`BENCH_ARGS` runs N = 20,000 (expect about an hour)."
            )
        w(
            f"- Runs cut off after {data['cap']:.0f} s (marked †): rq's drains (one job at a time) and one streaq W6 repetition hit it; see the list below."
        )
        w(
            "- W1/W3 CPU per job is read from /proc (10 ms clock ticks): at small N the worker "
            "CPU of the fastest queues (asyncq, floor) is only a few ticks, so ±10-20 %.\n"
        )
    w("## Results\n")
    w("| figure | " + " | ".join(adapters) + " |")
    w("|---|" + "---|" * len(adapters))
    for wl, key, label, _ in METRICS:
        cells = []
        for a in adapters:
            vals = [_value(r, key) for r in runs if r["adapter"] == a and r["workload"] == wl]
            cells.append(_cell(vals) if vals else "")
        w(f"| {label} | " + " | ".join(cells) + " |")
    w("")

    w("## asyncq against each peer, per repetition\n")
    w(
        "Throughput: asyncq ÷ peer; latency, CPU and memory: peer ÷ asyncq. Above 1 = asyncq "
        "better. One value per repetition (same run, same Redis), then the median.\n"
    )
    peers = [a for a in adapters if a != "asyncq"]
    if "asyncq" in adapters and peers:
        w("| figure | " + " | ".join(peers) + " | fastest peer |")
        w("|---|" + "---|" * (len(peers) + 1))
        for wl, key, label, higher in METRICS:
            cells, best = [], None
            for p in peers:
                ratios = []
                for rep in range(reps):
                    mine = [
                        _value(r, key)
                        for r in runs
                        if r["adapter"] == "asyncq" and r["workload"] == wl and r["rep"] == rep
                    ]
                    theirs = [
                        _value(r, key)
                        for r in runs
                        if r["adapter"] == p and r["workload"] == wl and r["rep"] == rep
                    ]
                    if not mine or not theirs:
                        continue
                    (a_v, a_f), (p_v, p_f) = mine[0], theirs[0]
                    if a_v is None or p_v is None or a_v <= 0 or p_v <= 0 or a_f == "✗":
                        continue
                    ratios.append((a_v / p_v if higher else p_v / a_v, p_f))
                if ratios:
                    med = statistics.median(r for r, _ in ratios)
                    flag = "".join(sorted({f for _, f in ratios if f}))
                    cells.append(
                        " ".join(f"{r:.2f}" for r, _ in ratios) + f" → **{med:.2f}**{flag}"
                    )
                    if not flag and p != "floor" and (best is None or med < best[1]):
                        best = (p, med)
                else:
                    cells.append("–")
            best_txt = f"{best[0]}: {best[1]:.2f}×" if best else "–"
            w(f"| {label} | " + " | ".join(cells) + f" | {best_txt} |")
        w(
            '\n"fastest peer" = the valid, uncut peer with the lowest median ratio (asyncq\'s '
            "closest competitor on that figure); the floor is not a peer and never counted there.\n"
        )

    acc = data.get("accounting")
    if acc:
        w("## Redis work per job (separate, untimed runs under MONITOR)\n")
        w(
            "`calls` = `INFO commandstats` deltas summed (script-internal commands included); "
            "top-level = commands a client sent (MONITOR lines not from Lua; EVALSHA counts once); "
            "socket reads = `total_reads_processed` delta (a pipeline read at once counts once). "
            "Per job, over N jobs, worker start-up included.\n"
        )
        w(
            "| adapter | workload | calls/job | top-level/job | inside scripts/job | socket "
            "reads/job | top-level commands | script-internal commands |"
        )
        w("|---|---|---|---|---|---|---|---|")
        for name, per in acc.items():
            for wl, res in per.items():
                mon = res.get("monitor", {})
                top = ", ".join(
                    f"{k} {v / data['n']:.2f}"
                    for k, v in sorted(mon.get("top", {}).items(), key=lambda kv: -kv[1])[:8]
                )
                inner = ", ".join(
                    f"{k} {v / data['n']:.2f}"
                    for k, v in sorted(mon.get("inner", {}).items(), key=lambda kv: -kv[1])[:8]
                )
                w(
                    f"| {name} | {wl} | {_fmt(res.get('calls_per_job'))} | "
                    f"{_fmt(mon.get('top_per_job'))} | {_fmt(mon.get('inner_per_job'))} | "
                    f"{_fmt(res.get('reads_per_job'))} | {top} | {inner} |"
                )
        w("")

    w("## Invalid or cut-off runs\n")
    bad = [
        r for r in runs if not r.get("valid") and not r.get("unsupported") and r["workload"] != "W2"
    ]
    for r in runs:
        if r["workload"] == "W2":
            for mode in ("bulk", "single", "concurrent"):
                sub = r.get(mode) or {}
                if sub and not sub.get("valid") and not sub.get("unsupported"):
                    w(f"- rep {r['rep']} {r['adapter']} W2 {mode}: {sub.get('error')}")
    for r in bad:
        w(f"- rep {r['rep']} {r['adapter']} {r['workload']}: {r.get('error')}")
    w("")

    w("## How each library is run (adapters in `benches/adapters/`)\n")
    for name, note in data.get("notes", {}).items():
        w(f"- **{name}**: {note}")
    w("")
    growth = Path(__file__).with_name("GROWTH.md")
    if growth.exists():
        w("## How cost grows (`make bench-growth`, a separate run: see its date)\n")
        w(growth.read_text().strip())
        w("")
    return "\n".join(out)


if __name__ == "__main__":
    import json
    import sys
    from pathlib import Path

    src = Path(sys.argv[1] if len(sys.argv) > 1 else "benches/results.json")
    src.with_name("RESULTS.md").write_text(render(json.loads(src.read_text())))
