"""``python -m tests.chaos.run [--scale full|smoke] [cases...]``: run cases, print the table."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import traceback

from tests.chaos.cases import CASES, SMOKE
from tests.chaos.harness import Result, table, timed


async def main(scale: str, names: list[str], out: str | None) -> int:
    results: list[Result] = []
    for name in names:
        t0 = time.monotonic()
        print(f"== case {name} ({scale}) ...", file=sys.stderr, flush=True)
        try:
            r = await timed(CASES[name](scale))
        except Exception as exc:
            traceback.print_exc()
            r = Result(f"{name} (crashed)", 0, 0, 0, checks={f"ran: {exc}": False})
        print(
            f"   {'pass' if r.passed else 'FAIL'} in {time.monotonic() - t0:.0f}s",
            file=sys.stderr,
            flush=True,
        )
        results.append(r)
    print(table(results))
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            json.dump([r.row() for r in results], fh, indent=2, default=str)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--scale", default="full", choices=["full", "smoke"])
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("cases", nargs="*")
    a = p.parse_args()
    chosen = a.cases or (SMOKE if a.scale == "smoke" else list(CASES))
    sys.exit(asyncio.run(main(a.scale, chosen, a.json)))
