"""The job ledger: what the chaos tasks wrote, and the figures the cases report.

Every task appends ``start|done <job id> <attempt> <pid> <monotonic t>`` to a local file (see
``tests/apps/chaos.py``). The file is never behind the fault proxy, so it is the truth the broker's
own view is checked against.
"""

from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    what: str
    job_id: str
    attempt: int
    pid: int
    t: float


def read(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue  # a line cut by a kill: the task had not got going
        what, job_id, attempt, pid, t = parts
        out.append(Entry(what, job_id, int(attempt), int(pid), float(t)))
    return out


@dataclass
class Tally:
    """Per-job view of a ledger."""

    starts: dict[str, list[Entry]] = field(default_factory=lambda: collections.defaultdict(list))
    dones: dict[str, list[Entry]] = field(default_factory=lambda: collections.defaultdict(list))

    @classmethod
    def of(cls, entries: list[Entry]) -> Tally:
        t = cls()
        for e in entries:
            (t.starts if e.what == "start" else t.dones)[e.job_id].append(e)
        return t

    def lost(self, ids: list[str]) -> list[str]:
        """Jobs that never finished a run."""
        return [i for i in ids if not self.dones.get(i)]

    def duplicated(self, ids: list[str]) -> list[str]:
        """Jobs whose body ran to completion more than once."""
        return [i for i in ids if len(self.dones.get(i, ())) > 1]

    def rerun(self, ids: list[str]) -> list[str]:
        """Jobs started more than once, or first seen on a later attempt (leased, lost, re-run)."""
        return [
            i
            for i in ids
            if len(self.starts.get(i, ())) > 1 or any(e.attempt > 1 for e in self.starts.get(i, ()))
        ]


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
