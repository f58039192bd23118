"""Run by .ci/smoke-installed: 20 jobs of an ``executor="process"`` task, on memory://.

The children are started from the installed package and talk to the worker over their stdin
and stdout: after the event loop's wake-ups, the part of asyncq most tied to the platform.
"""

import asyncio
import os
import sys

import asyncq

app = asyncq.App("memory://smoke-proc")


@app.task(executor="process")
def square(x: int) -> tuple[int, int]:
    if x == 0:  # a child's stdout goes to stderr, not into the pool's pipes
        print("smoke: (printed by a child process, to its stdout)")
    return x * x, os.getpid()


async def main() -> None:
    worker = app.worker(processes=2, handle_signals=False)
    run = asyncio.ensure_future(worker.run())
    await worker.ready.wait()
    handles = [await square.enqueue(i) for i in range(20)]
    got = [await h.result(timeout=60) for h in handles]
    worker.stop()
    await run
    assert [r[0] for r in got] == [i * i for i in range(20)], got
    pids = {r[1] for r in got}
    assert os.getpid() not in pids, pids
    print(f"smoke: 20 process-pool jobs ran in {len(pids)} child process(es)", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
