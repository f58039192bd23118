"""Partitioned queues: one logical queue stored in several partitions, each a hash slot of its
own (``asyncq:{orders#3}:...``), so on a Redis Cluster one busy queue spreads over several
primaries (docs/scaling.md).

``App(partitions={"orders": 8})`` makes ``orders`` a queue of partitions ``orders#0`` to
``orders#7``. Every partition is a queue of its own to the core (its scripts, keys, reaper
claim and wake list); this module decides which partition a job goes to, and where a job id
is to be found:

- A job's id names its partition. Ids made for a partitioned queue end in ``.p<n>``
  (``3f2a...c1.p5``); a schedule's jobs (``sched:<name>:<ms>``) are in partition 0; any other
  id (one the caller chose with ``options(job_id=...)``) belongs to partition
  ``crc32(id) % n``. So ``app.job(id, "orders")`` finds the job without asking
  every partition, and resending an id reaches the partition that holds it.
- Jobs that must meet in one partition go to the partition of what they share: an idempotency
  key (``key=``, ``unique``, ``throttle``, ``debounce``: deduplication holds), a
  ``partition_key`` (one key's jobs stay in order), a group (a limit's key, a fair key or an
  ordered key: the limiter and the order live in that partition, so they hold exactly).
- Other jobs go round-robin.

Schedules and flows of a partitioned queue use its partition 0; workers serve every partition
with one concurrency budget for the queue.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence

from ._core import new_job_ids

__all__ = ["MAX_PARTITIONS", "Partitions", "logical", "physical"]

# As the core's keys.rs: partition numbers stay below this.
MAX_PARTITIONS = 1024

#: An id made here: the core's fresh id (``ids.rs``: an optional ``<prefix>_``, 20 characters
#: of base32) and the partition it names.
_MADE = re.compile(r"(?:[A-Za-z0-9-]{1,24}_)?[0-9a-hjkmnp-tv-z]{20}\.p(\d+)")


def physical(queue: str, partition: int) -> str:
    """The core's name of one partition: ``orders#3``."""
    return f"{queue}#{partition}"


def logical(queue: str) -> str:
    """The queue a partition belongs to (a plain queue name stays as it is)."""
    return queue.partition("#")[0]


def _index(key: str, n: int) -> int:
    return zlib.crc32(key.encode()) % n


class Partitions:
    """The partition counts of an app's queues, and where each job goes."""

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        self.counts: dict[str, int] = {}
        for queue, n in (counts or {}).items():
            if "#" in queue or not queue:
                raise ValueError(f"partitions: {queue!r} is not a queue name")
            if not isinstance(n, int) or not 1 <= n <= MAX_PARTITIONS:
                raise ValueError(
                    f"partitions: {queue!r} needs 1 to {MAX_PARTITIONS} partitions, got {n!r}"
                )
            if n > 1:
                self.counts[queue] = n
        self._turns: dict[str, Iterator[int]] = {q: itertools.count() for q in self.counts}

    def count(self, queue: str) -> int:
        """How many partitions ``queue`` has (1 when it is not partitioned)."""
        return self.counts.get(queue, 1)

    def names(self, queue: str) -> list[str]:
        """The core's names of every partition of ``queue`` (``[queue]`` when not partitioned)."""
        n = self.counts.get(queue)
        return [physical(queue, p) for p in range(n)] if n else [queue]

    def of_id(self, queue: str, job_id: str) -> str:
        """The partition that holds (or would hold) job ``job_id`` of ``queue``."""
        n = self.counts.get(logical(queue))
        if n is None or "#" in queue:
            return queue
        made = _MADE.fullmatch(job_id)
        if made and int(made.group(1)) < n:
            return physical(queue, int(made.group(1)))
        if job_id.startswith("sched:"):  # a schedule fires into partition 0
            return physical(queue, 0)
        return physical(queue, _index(job_id, n))

    def route(
        self,
        queue: str,
        count: int,
        *,
        job_id: str | None,
        key: str | None,
        partition_key: object,
        groups: Sequence[str] | None,
        id_prefix: str | None = None,
    ) -> tuple[list[str], list[str] | None]:
        """The partition of each of ``count`` new jobs of ``queue``, and their ids (None when
        ``job_id`` names the one job: it decides the partition)."""
        n = self.counts[queue]
        if job_id is not None:
            return [self.of_id(queue, job_id)] * count, None
        if key is not None:
            fixed: int | None = _index(key, n)
        elif partition_key is not None:
            fixed = _index(str(partition_key), n)
        else:
            fixed = None
        parts: list[int] = []
        for i in range(count):
            if fixed is not None:
                parts.append(fixed)
            elif groups is not None and groups[i]:
                parts.append(_index(groups[i].partition("\t")[0], n))
            else:
                parts.append(next(self._turns[queue]) % n)
        fresh = new_job_ids(len(parts), id_prefix)
        ids = [f"{made}.p{p}" for made, p in zip(fresh, parts, strict=True)]
        return [physical(queue, p) for p in parts], ids
