# ruff: noqa: E501
"""What packing per-item script arguments and replies as msgpack would cost Redis.

    python -m benches.script_args      # make bench-script-args

The issue asked whether each fetched job (and each job to enqueue) should cross into and out of
the Lua scripts as one msgpack value instead of positional fields. This measures the two
per-item shapes the way Redis pays for them: server CPU per call from `INFO commandstats`
(script run plus argument parsing and reply encoding), on a private redis-server, for batches of
100 jobs with a 120-byte payload, alternating the variants over several rounds. The scripts do
only the per-item work (no keys are touched), so the difference is the cost of the shape alone.
"""

from __future__ import annotations

import statistics

import msgpack
import redis

from benches.run import RedisServer

BATCH = 100
CALLS = 300
ROUNDS = 5
PAYLOAD = b"x" * 120

FETCH_POSITIONAL = """
local out, k = {}, 0
for i = 1, tonumber(ARGV[1]) do
  out[k + 1], out[k + 2], out[k + 3] = 'id' .. i, ARGV[2], 1
  out[k + 4], out[k + 5], out[k + 6] = 3, 7, 1700000000000
  k = k + 6
end
return out
"""
FETCH_PACKED = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  out[i] = cmsgpack.pack({id = 'id' .. i, p = ARGV[2], a = 1, m = 3, t = 7, e = 1700000000000})
end
return out
"""
ENQUEUE_POSITIONAL = """
local ids = {}
for i = 0, tonumber(ARGV[1]) - 1 do
  local b = 1 + i * 8
  local id, p, pr, d = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  local eta, m, key, kt = tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), ARGV[b + 7], tonumber(ARGV[b + 8])
  ids[#ids + 1] = id
end
return #ids
"""
ENQUEUE_PACKED = """
local ids = {}
for i = 1, tonumber(ARGV[1]) do
  local j = cmsgpack.unpack(ARGV[1 + i])
  ids[#ids + 1] = j.id
end
return #ids
"""


def usec_per_call(r: redis.Redis, script: redis.commands.core.Script, args: list[object]) -> float:
    script(args=args)  # loaded, warm
    r.config_resetstat()
    for _ in range(CALLS):
        script(args=args)
    return float(r.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])


def main() -> None:
    server = RedisServer()
    try:
        r = redis.Redis(port=server.port)
        enqueue_flat: list[object] = [BATCH]
        enqueue_packed: list[object] = [BATCH]
        for i in range(BATCH):
            fields = {
                "id": f"id{i}",
                "p": PAYLOAD,
                "pr": 5,
                "d": 0,
                "eta": 0,
                "m": 3,
                "k": "",
                "kt": 86_400_000,
            }
            enqueue_flat += list(fields.values())
            # Redis' cmsgpack reads msgpack's old raw type only (no bin), hence use_bin_type=False.
            enqueue_packed.append(msgpack.packb(fields, use_bin_type=False))
        cases = {
            "fetch reply": [
                (r.register_script(FETCH_POSITIONAL), [BATCH, PAYLOAD]),
                (r.register_script(FETCH_PACKED), [BATCH, PAYLOAD]),
            ],
            "enqueue args": [
                (r.register_script(ENQUEUE_POSITIONAL), enqueue_flat),
                (r.register_script(ENQUEUE_PACKED), enqueue_packed),
            ],
        }
        print(
            f"Redis {server.version}; {BATCH} jobs per call, {CALLS} calls, median of {ROUNDS} rounds"
        )
        print(f"{'per job':14} {'positional µs':>14} {'msgpack µs':>11} {'extra µs':>9}")
        for name, (positional, packed) in cases.items():
            pos, pack = [], []
            for _ in range(ROUNDS):
                pos.append(usec_per_call(r, *positional) / BATCH)
                pack.append(usec_per_call(r, *packed) / BATCH)
            a, b = statistics.median(pos), statistics.median(pack)
            print(f"{name:14} {a:14.2f} {b:11.2f} {b - a:9.2f}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
