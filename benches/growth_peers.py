"""Throughput with 1, 2 and 4 worker processes on one Redis: asyncq beside the fastest peers.

    python -m benches.growth_peers                       # part of make bench-growth
    python -m benches.growth_peers --adapters asyncq,ardiq --n 20000

The W1 shape (N jobs queued, body = one `INCR` through redis-py asyncio, which also counts
completions across processes), then K worker processes started together, each as the adapter
runs one in `make bench-peers` (concurrency 100, 8 threads). Throughput is N over the time from
starting the workers to the N-th `INCR`, so every worker's start-up is inside it, the same for
every library; the Redis CPU is the redis-server process's over the same span. Medians of
`--reps` runs. Prints a Markdown table; nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benches.run import Bench, proc_cpu


def one(bench: Bench, name: str, workers: int, n: int, cap: float) -> tuple[float, float] | None:
    bench.r.flushall()
    fill = bench.produce(name, "fill", "incr", n)
    if fill["done"] != n:
        raise RuntimeError(f"{name}: pre-queue put {fill['done']}/{n}")
    rcpu0, t0 = proc_cpu(bench.redis.proc.pid), time.time()
    procs = [bench.start_worker(name, n, 100, 8) for _ in range(workers)]
    try:
        while int(bench.r.get("bench:count") or 0) < n:
            if time.time() - t0 > cap:
                return None
            time.sleep(0.005)
        wall, rcpu1 = time.time() - t0, proc_cpu(bench.redis.proc.pid)
    finally:
        for p in procs:
            bench.stop_worker(p)
    return n / wall, (rcpu1 - rcpu0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", default="asyncq,ardiq,taskiq")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cap", type=float, default=120.0)
    args = ap.parse_args()
    # Bench reads these from the harness's own arguments.
    args.quick, args.no_account = False, True
    bench = Bench(args)
    ks = [int(k) for k in args.workers.split(",")]
    rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
    try:
        for _ in range(args.reps):  # repetitions outermost: drift hits every cell alike
            for name in args.adapters.split(","):
                for k in ks:
                    got = one(bench, name, k, args.n, args.cap)
                    if got is not None:
                        rows.setdefault((name, k), []).append(got)
                    print(f"{name} x{k}: {got}", flush=True)
    finally:
        bench.redis.stop()
    print(f"\nW1 body, N = {args.n:,}, worker start-up included, medians of {args.reps}:\n")
    print("| library | workers | jobs/s | Redis CPU per job (µs) |\n| --- | --- | --- | --- |")
    for name in args.adapters.split(","):
        for k in ks:
            got = rows.get((name, k))
            if not got:
                print(f"| {name} | {k} | (cut at {args.cap:.0f} s) | |")
                continue
            rate = statistics.median(g[0] for g in got)
            rcpu = statistics.median(g[1] for g in got)
            print(f"| {name} | {k} | {rate:,.0f} | {rcpu:.1f} |")


if __name__ == "__main__":
    main()
