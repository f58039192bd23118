"""Redis CPU per job of the fetch and ack scripts, and what inside them it is spent on.

    python -m benches.script_cost            # make bench-script-cost (about 10 s)

On a private redis-server: 20,000 no-op jobs enqueued by asyncq, then leased with the real
`src/lua/fetch.lua` (joined to `lib/common.lua` as `scripts.rs` does) in batches of `--batch`,
then acknowledged with `ack.lua`, each phase after `CONFIG RESETSTAT`. Server time per job from
`INFO commandstats` (`evalsha` = the whole script; the nested commands' own time below it; the
rest is the Lua interpreter and the `redis.call` boundary). Prints Markdown; nothing is written.
"""

from __future__ import annotations

import argparse
import asyncio

import redis

import asyncq
from benches.run import ROOT, RedisServer

LUA = ROOT / "src" / "lua"
N = 20_000


def stats(r: redis.Redis) -> dict[str, tuple[int, int]]:
    return {
        k.removeprefix("cmdstat_"): (v["calls"], v["usec"])
        for k, v in r.info("commandstats").items()
    }


def show(title: str, st: dict[str, tuple[int, int]]) -> None:
    total = st.get("evalsha", (0, 0))
    print(f"\n{title}: {total[1] / N:.2f} µs per job in {total[0]} calls\n")
    print("| command | calls per job | µs per job |\n| --- | --- | --- |")
    nested = 0.0
    for name, (calls, usec) in sorted(st.items(), key=lambda kv: -kv[1][1]):
        if name in ("evalsha", "config|resetstat", "info"):
            continue
        nested += usec / N
        print(f"| {name} | {calls / N:.3f} | {usec / N:.2f} |")
    print(f"| (Lua and `redis.call` around them) | | {total[1] / N - nested:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=100)
    args = ap.parse_args()
    server = RedisServer()
    r = server.client
    common = (LUA / "lib" / "common.lua").read_text()
    fetch = r.register_script(common + "\n" + (LUA / "fetch.lua").read_text())
    ack = r.register_script(common + "\n" + (LUA / "ack.lua").read_text())
    app = asyncq.App(server.url)

    @app.task(name="noop")
    async def noop() -> None: ...

    async def fill() -> None:
        for _ in range(0, N, 5_000):
            await noop.enqueue_many([((), {})] * 5_000)

    try:
        asyncio.run(fill())
        p = f"asyncq:{{{app.default_queue}#0}}:"
        keys = [p + "ready", p + "scheduled", p + "active", p + "wake", p + "dead"]
        fetch(keys=keys, args=[p, 0, 60_000, "w", "", ""])  # load the script
        r.config_resetstat()
        batches = []
        while out := fetch(keys=keys, args=[p, args.batch, 60_000, "w", "", ""])[2:]:
            # 7 values per leased job (fetch.lua's header): id, ..., token (the 5th), ...
            batches.append([(out[i], out[i + 4]) for i in range(0, len(out), 7)])
        show(f"fetch, batches of {args.batch}", stats(r))
        ack_keys = [p + "active", p + "stats", p + "ready", p + "wake", p + "outbox"]
        ack(keys=ack_keys, args=[p])  # load the script
        r.config_resetstat()
        for batch in batches:
            flat: list[object] = [p]
            for job_id, token in batch:
                flat += [job_id, token, b"\xc0", 86_400_000]
            ack(keys=ack_keys, args=flat)
        show(f"ack, batches of {args.batch}", stats(r))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
