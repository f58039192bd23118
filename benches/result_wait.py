"""How soon `await job.result()` returns after the job's body ends (issue 9's "result wait").

    python -m benches.result_wait            # make bench-result (about 30 s)
    python -m benches.result_wait --quick

One `asyncq-worker` at its defaults on a private redis-server; the producer enqueues one job at
a time, 5 ms apart (as W3), and awaits its result. The task returns the wall-clock time at the
end of its body, so each sample is `result returned - body ended`: the outcome's flush, the
ack script, the end notification (`PUBLISH`) and the waiter's wake-up, i.e. an upper bound on
the time from the ack reaching Redis to `result()` returning. Worker and producer share the
host clock. Prints a Markdown table; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from benches.growth import start_worker, stop
from benches.growth_app import app, stamp
from benches.run import RedisServer, percentile


async def one_run(n: int) -> list[float]:
    await stamp.enqueue()  # the worker is up and has its connections when this returns
    samples = []
    for _ in range(n):
        handle = await stamp.enqueue()
        ended = await handle.result(timeout=10)
        samples.append((time.time() - ended) * 1000)
        await asyncio.sleep(0.005)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    n = 200 if args.quick else 1000
    server = RedisServer()
    app.broker = app.broker.with_url(server.url)
    app.url = server.url
    rows = []
    try:
        for _ in range(args.reps):
            server.client.flushall()
            worker = start_worker(server.url, [app.default_queue])
            try:
                samples = asyncio.run(one_run(n))
            finally:
                stop([worker])
            ordered = sorted(samples)
            rows.append([percentile(ordered, p) for p in (50, 90, 99)] + [ordered[-1]])
    finally:
        server.stop()
    print(f"result wait, {n} jobs one at a time, {args.reps} runs (ms after the body ended)\n")
    print("| run | p50 | p90 | p99 | max |")
    print("| --- | --- | --- | --- | --- |")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | " + " | ".join(f"{v:.2f}" for v in r) + " |")
    med = [statistics.median(r[k] for r in rows) for k in range(4)]
    print("| median | " + " | ".join(f"**{v:.2f}**" for v in med) + " |")


if __name__ == "__main__":
    main()
