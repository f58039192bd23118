# ruff: noqa: RUF002, PLC0415, PLW1510, E501, RUF046
"""The benchmark harness (protocol: /work/shared/BENCHMARKS.md, W1–W7).

    python -m benches.run --quick                 # asyncq alone, small N (make bench)
    python -m benches.run --reps 3                # every adapter (make bench-peers)
    python -m benches.run --adapters asyncq,arq --workloads W1,W3 --reps 1

Starts a private redis-server on a free loopback port (never 6379), FLUSHALL before every run,
runs every worker in a fresh subprocess of its library's interpreter, and writes
benches/RESULTS.md (+ results.json) unless --no-write.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from benches.adapters import NAMES

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ROOT / "benches"
VENVS = {
    "main": ROOT / ".venv" / "bin" / "python",
    "peers": BENCHES / ".peers" / "bin" / "python",
    "peers312": BENCHES / ".peers312" / "bin" / "python",
}
ADAPTER_VENV = {
    "asyncq": "main",
    "asyncq_limited": "main",
    "asyncq_metrics": "main",
    "floor": "main",
    "ardiq": "peers312",
}
PACKAGES = {
    "asyncq": ["asyncq", "redis", "uvloop"],
    "asyncq_limited": ["asyncq", "redis", "uvloop"],
    "asyncq_metrics": ["asyncq", "redis", "uvloop"],
    "floor": ["redis", "hiredis", "uvloop"],
    "saq": ["saq"],
    "streaq": ["streaq"],
    "taskiq": ["taskiq", "taskiq-redis"],
    "arq": ["arq"],
    "dramatiq": ["dramatiq"],
    "rq": ["rq"],
    "celery": ["celery", "kombu"],
    "ardiq": ["ardiq", "redis", "uvloop"],
}
WORKLOADS = ["W1", "W1n", "W2", "W3", "W4", "W5", "W6"]
LOG_DIR = Path(tempfile.gettempdir()) / "asyncq-bench-logs"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- redis ---------------------------------------------------------------------------------------


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url, socket_timeout=None)  # redis-py 8: 5 s
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if self.client.ping():
                    break
            time.sleep(0.05)
        self.version = self.client.info("server")["redis_version"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)

    def commandstats(self) -> dict[str, int]:
        return {
            k.removeprefix("cmdstat_"): v["calls"]
            for k, v in self.client.info("commandstats").items()
        }

    def reads(self) -> int:
        return int(self.client.info("stats")["total_reads_processed"])


# ---- process helpers -----------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(ordered: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of already sorted samples."""
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def vm_hwm_kib(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.redis = RedisServer()
        self.r = self.redis.client
        LOG_DIR.mkdir(exist_ok=True)

    def env(self, n: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            BENCH_REDIS_URL=self.redis.url,
            BENCH_REDIS_PID=str(self.redis.proc.pid),
            BENCH_N=str(n),
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        env.pop("VIRTUAL_ENV", None)
        return env

    def python(self, name: str) -> str:
        return str(VENVS[ADAPTER_VENV.get(name, "peers")])

    def produce(
        self,
        name: str,
        mode: str,
        body: str,
        n: int,
        gap: float = 0.0,
        delay: float = 0.0,
        cap: float = 1e9,
        env_n: int | None = None,
    ) -> dict[str, Any]:
        cmd = [
            self.python(name),
            "-m",
            "benches.drive",
            name,
            "produce",
            mode,
            body,
            str(n),
            str(gap),
            str(delay),
            str(cap),
        ]
        out = subprocess.run(
            cmd,
            cwd=ROOT,
            env=self.env(env_n or n),
            capture_output=True,
            text=True,
            timeout=cap + 120 if cap < 1e8 else 600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{name} producer {mode} failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def start_worker(
        self, name: str, n: int, concurrency: int, threads: int, sync: bool = False
    ) -> subprocess.Popen:
        logf = open(LOG_DIR / f"{name}-worker.log", "w")  # noqa: SIM115
        cmd = [
            self.python(name),
            "-m",
            "benches.drive",
            name,
            "worker",
            str(concurrency),
            str(threads),
            "1" if sync else "0",
        ]
        spec_cmd = subprocess.run(
            [
                self.python(name),
                "-c",
                "import sys; from benches.drive import load; from benches.adapters.base import "
                "WorkerSpec; a = load(sys.argv[1]); "
                "print(a.worker_argv(WorkerSpec(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == '1'))"
                " or '')",
                name,
                str(concurrency),
                str(threads),
                "1" if sync else "0",
            ],
            cwd=ROOT,
            env=self.env(n),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if spec_cmd:
            argv = eval(spec_cmd)  # a list literal printed by the adapter
            cmd = [str(Path(self.python(name)).parent / argv[0]), *argv[1:]]
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env(n),
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @staticmethod
    def stop_worker(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def wait_done(self, cap: float) -> dict[str, Any] | None:
        popped = self.r.blpop(["bench:done"], timeout=max(1, int(cap)))
        return json.loads(popped[1]) if popped else None

    def progress(self) -> tuple[int, float]:
        """(jobs done, time of the first completion) as the worker's reporter last wrote."""
        raw = self.r.get("bench:final")
        if not raw:
            return 0, time.time()
        count, first = raw.split()
        return int(count), float(first)

    # ---- workloads -------------------------------------------------------------------------------

    def drain(
        self,
        name: str,
        body: str,
        n: int,
        concurrency: int,
        threads: int,
        count_key: str,
        account: bool = False,
    ) -> dict[str, Any]:
        """W1/W1n/W5/W6: N jobs already queued, then ONE worker process; first→last completion."""
        self.r.flushall()
        fill = self.produce(name, "fill", body, n)
        if fill["done"] != n:
            return {"valid": False, "error": f"pre-queue put {fill['done']}/{n}"}
        before, reads0 = self.redis.commandstats(), self.redis.reads()
        monitor = None
        if account:
            monitor_out = open(LOG_DIR / f"{name}-monitor.txt", "w")  # noqa: SIM115
            monitor = subprocess.Popen(
                ["redis-cli", "-p", str(self.redis.port), "monitor"], stdout=monitor_out
            )
            time.sleep(0.2)
        worker = self.start_worker(name, n, concurrency, threads, sync=body == "hash1k")
        try:
            report = self.wait_done(self.args.cap)
            if report is None:
                done, first_t = self.progress()
                if count_key == "bench:count":
                    done = int(self.r.get(count_key) or 0)
                return {
                    "valid": False,
                    "capped": True,
                    "done": done,
                    "error": f"capped at {self.args.cap:.0f}s: {done}/{n} done",
                    "rate_partial": done / max(1e-9, time.time() - min(first_t, time.time())),
                }
            time.sleep(0.5)
            count = (
                int(self.r.get(count_key) or 0)
                if count_key == "bench:count"
                else self.progress()[0]
            )
            rss = vm_hwm_kib(report["pid"])
        finally:
            self.stop_worker(worker)
            if monitor:
                time.sleep(0.2)
                monitor.terminate()
                monitor.wait()
        after, reads1 = self.redis.commandstats(), self.redis.reads()
        first, last = report["first"], report["last"]
        wall = last["t"] - first["t"]
        res: dict[str, Any] = {
            "valid": count == n,
            "count": count,
            "rate": (n - 1) / wall if wall > 0 else None,
            "wall": wall,
            "worker_cpu_us": (last["cpu"] - first["cpu"]) / n * 1e6,
            "redis_cpu_us": (last["rcpu"] - first["rcpu"]) / n * 1e6,
            "rss_mib": rss / 1024 if rss else None,
        }
        if count != n:
            res["error"] = f"count {count} != {n}"
        calls = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        calls = {k: v for k, v in calls.items() if v and k not in ("info", "monitor")}
        res["calls_per_job"] = sum(calls.values()) / n
        res["calls"] = calls
        res["reads_per_job"] = (reads1 - reads0) / n
        if monitor:
            res["monitor"] = self.monitor_counts(name, n)
        return res

    def monitor_counts(self, name: str, n: int) -> dict[str, Any]:
        top: dict[str, int] = {}
        inner: dict[str, int] = {}
        for line in (LOG_DIR / f"{name}-monitor.txt").read_text(errors="replace").splitlines():
            m = re.match(r'^[\d.]+ \[\d+ ([^\]]+)\] "([^"]+)"', line)
            if not m:
                continue
            where, cmd = m.group(1), m.group(2).lower()
            if cmd in ("info", "monitor"):
                continue
            bucket = inner if where == "lua" else top
            bucket[cmd] = bucket.get(cmd, 0) + 1
        return {
            "top_per_job": sum(top.values()) / n,
            "inner_per_job": sum(inner.values()) / n,
            "top": top,
            "inner": inner,
        }

    def ready_worker(self, name: str, n: int) -> subprocess.Popen:
        self.r.flushall()
        worker = self.start_worker(name, n, 100, 8)
        for _ in range(3):
            self.produce(name, "ping", "ping", 1, env_n=n)
            if self.r.blpop(["bench:ready"], timeout=8):
                return worker
        self.stop_worker(worker)
        raise RuntimeError(f"{name}: worker never answered the readiness ping")

    def trickle(self, name: str, body: str, n: int, delay: float) -> dict[str, Any]:
        """W3/W4: idle worker, N jobs one every 5 ms; samples = start - enqueue (or - due)."""
        worker = self.ready_worker(name, n)
        try:
            prod = self.produce(name, "trickle", body, n, 0.005, delay)
            if prod.get("unsupported"):
                return {"valid": False, "unsupported": True}
            report = self.wait_done(15 + delay)
            rss = vm_hwm_kib(report["pid"]) if report else None
            if report is None:
                done, _ = self.progress()
                return {"valid": False, "error": f"{done}/{n} ran within 15 s"}
            time.sleep(0.5)
            done, _ = self.progress()
        finally:
            self.stop_worker(worker)
        ms = sorted(s * 1000 for s in report["samples"])
        first, last = report["first"], report["last"]
        return {
            "valid": done == n and len(ms) == n,
            "count": done,
            "p50": percentile(ms, 50),
            "p90": percentile(ms, 90),
            "p99": percentile(ms, 99),
            "max": ms[-1],
            "worker_cpu_us": (last["cpu"] - first["cpu"]) / n * 1e6,
            "redis_cpu_us": (last["rcpu"] - first["rcpu"]) / n * 1e6,
            "rss_mib": rss / 1024 if rss else None,
            **({} if done == n else {"error": f"count {done} != {n}"}),
        }

    def enqueue(self, name: str, n: int) -> dict[str, Any]:
        """W2: bulk / single awaited / 64 concurrent, no worker running."""
        out: dict[str, Any] = {}
        for mode in ("bulk", "single", "concurrent"):
            self.r.flushall()
            res = self.produce(name, mode, "noop", n, cap=self.args.cap)
            if res.get("unsupported"):
                out[mode] = {"valid": False, "unsupported": True}
                continue
            queued = res["queued"]
            ok = res["done"] == n and (queued is None or queued == n)
            out[mode] = {
                "valid": ok,
                "rate": res["done"] / res["elapsed"],
                "count": queued,
                "verified": queued is not None,
            }
            if res["done"] != n:
                out[mode]["capped"] = True
                out[mode]["error"] = f"capped at {self.args.cap:.0f}s: {res['done']}/{n}"
            elif not ok:
                out[mode]["error"] = f"queue holds {queued} != {n}"
        return out

    def run_one(self, name: str, workload: str) -> dict[str, Any]:
        a, q = self.args, self.args.quick
        if workload == "W1":
            return self.drain(name, "incr", a.n, 100, 8, "bench:count")
        if workload == "W1n":
            return self.drain(name, "noop", a.n, 100, 8, "bench:final")
        if workload == "W2":
            return self.enqueue(name, a.n)
        if workload == "W3":
            return self.trickle(name, "latency", 200 if q else 500, 0.0)
        if workload == "W4":
            return self.trickle(name, "lateness", 200 if q else 500, 0.1)
        if workload == "W5":
            return self.drain(name, "sleep", a.n // 2, 1000, 8, "bench:final")
        if workload == "W6":
            return self.drain(name, "hash1k", a.n, 100, 8, "bench:final")
        raise ValueError(workload)


# ---- ceilings, machine, versions -----------------------------------------------------------------


def redis_ceiling(port: int, n: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    base = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-q", "-n", str(n)]
    for p in (1, 16):
        runs = [
            subprocess.run(
                [*base, "-P", str(p), "-t", "lpush,rpop,set,get"],
                capture_output=True,
                text=True,
                timeout=300,
            ).stdout,
            subprocess.run(
                [*base, "-P", str(p), "eval", "return 1", "0"],
                capture_output=True,
                text=True,
                timeout=300,
            ).stdout,
        ]
        for text in runs:
            for line in text.replace("\r", "\n").splitlines():
                m = re.match(r"^(\S.*?): ([\d.]+) requests per second", line.strip())
                if m and "rps=" not in line:
                    cmd = m.group(1).split()[0].upper()
                    out.setdefault(cmd, {})[f"P{p}"] = float(m.group(2))
    return out


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(int(mem) / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def versions(names: list[str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for name in names:
        py = str(VENVS[ADAPTER_VENV.get(name, "peers")])
        code = (
            "import sys, importlib.metadata as m, platform\n"
            "out = {'python': platform.python_version()}\n"
            "for p in sys.argv[1:]:\n"
            "    try: out[p] = m.version(p)\n"
            "    except Exception: out[p] = '-'\n"
            "print(repr(out))"
        )
        res = subprocess.run([py, "-c", code, *PACKAGES[name]], capture_output=True, text=True)
        out[name] = eval(res.stdout) if res.returncode == 0 else {"error": res.stderr[-200:]}
    return out


def available(name: str) -> str | None:
    """Why an adapter cannot run here, or None."""
    py = VENVS[ADAPTER_VENV.get(name, "peers")]
    if not py.exists():
        return f"interpreter {py.relative_to(ROOT)} missing (run `make bench-deps`)"
    res = subprocess.run(
        [str(py), "-c", f"import benches.adapters.{name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if res.returncode != 0:
        return f"adapter import failed: {res.stderr.strip().splitlines()[-1]}"
    return None


# ---- main ----------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--quick", action="store_true", help="asyncq (metrics off and on) + floor, small N, 1 rep"
    )
    ap.add_argument("--adapters", default=",".join(NAMES))
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--cap", type=float, default=20.0, help="seconds before a run is cut off")
    ap.add_argument("--no-account", action="store_true", help="skip the MONITOR accounting run")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", default=str(BENCHES / "RESULTS.md"))
    args = ap.parse_args()
    if args.quick:
        args.adapters, args.reps, args.n = "asyncq,asyncq_metrics,floor", 1, min(args.n, 5000)
        args.no_write = args.no_write or args.out == str(BENCHES / "RESULTS.md")
    names = [n for n in args.adapters.split(",") if n]
    workloads = [w for w in args.workloads.split(",") if w]
    skipped = {n: why for n in names if (why := available(n))}
    for n, why in skipped.items():
        log(f"skipping {n}: {why}")
    names = [n for n in names if n not in skipped]
    if not shutil.which("redis-server"):
        sys.exit("redis-server not found")

    bench = Bench(args)
    started = time.time()
    data: dict[str, Any] = {
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "redis": bench.redis.version,
        "n": args.n,
        "cap": args.cap,
        "reps": args.reps,
        "load_start": loadavg(),
        "skipped": skipped,
        "versions": versions(names),
        "runs": [],
        "order": [],
        "notes": {},
    }
    try:
        log(f"redis {bench.redis.version} on port {bench.redis.port}; adapters {names}")
        data["ceiling"] = redis_ceiling(bench.redis.port, 200_000 if not args.quick else 50_000)
        log(f"ceiling: {data['ceiling']}")
        for rep in range(args.reps):
            order = names[rep % len(names) :] + names[: rep % len(names)]
            data["order"].append(order)
            data.setdefault("load_reps", []).append(loadavg())
            for name in order:
                for w in workloads:
                    t0 = time.time()
                    try:
                        res = bench.run_one(name, w)
                    except Exception as exc:  # a broken adapter must not sink the table
                        res = {"valid": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
                    data["runs"].append({"rep": rep, "adapter": name, "workload": w, **res})
                    log(f"rep {rep} {name:8} {w:3} {time.time() - t0:5.1f}s {summarize(w, res)}")
        if not args.no_account and "asyncq" in names:
            for name in ("asyncq", "floor"):
                if name in names:
                    for w, body, key in (
                        ("W1", "incr", "bench:count"),
                        ("W1n", "noop", "bench:final"),
                    ):
                        res = bench.drain(name, body, args.n, 100, 8, key, account=True)
                        data.setdefault("accounting", {}).setdefault(name, {})[w] = res
                        log(
                            f"accounting {name} {w}: {res.get('monitor', {}).get('top_per_job')}"
                            f" top-level/job, {res.get('calls_per_job')} calls/job"
                        )
    finally:
        bench.redis.stop()
    data["load_end"] = loadavg()
    data["elapsed_s"] = time.time() - started
    from benches.report import render

    notes = {}
    for name in names:
        res = subprocess.run(
            [
                bench.python(name),
                "-c",
                f"from benches.drive import load; print(load('{name}').notes)",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        notes[name] = res.stdout.strip()
    data["notes"] = notes
    text = render(data)
    if args.no_write:
        print(text)
    else:
        Path(args.out).write_text(text)
        Path(args.out).with_name("results.json").write_text(json.dumps(data, indent=1))
        log(f"wrote {args.out}")
    log(f"total {data['elapsed_s']:.0f}s")


def summarize(w: str, res: dict[str, Any]) -> str:
    if w == "W2":
        return " ".join(
            f"{m}={v.get('rate', 0) or 0:,.0f}/s{'' if v.get('valid') else '!'}"
            for m, v in res.items()
        )
    if "p50" in res:
        return f"p50={res['p50']:.1f}ms p99={res['p99']:.1f}ms {'ok' if res['valid'] else res}"
    if res.get("rate"):
        return (
            f"{res['rate']:,.0f} jobs/s cpu={res['worker_cpu_us']:.0f}us "
            f"redis={res['redis_cpu_us']:.0f}us calls={res.get('calls_per_job', 0):.2f} "
            f"{'ok' if res['valid'] else res.get('error')}"
        )
    return str(res.get("error") or res)[:200]


if __name__ == "__main__":
    main()
