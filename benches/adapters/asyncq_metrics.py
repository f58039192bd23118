"""asyncq with Prometheus metrics on: the cost of counting them.

The same app, tasks and CLI-default worker as the ``asyncq`` adapter, started with
``--metrics-port 0`` (a free port; its metrics are counted for every job). Nothing scrapes it
during the run: a scrape costs one counts and one limits call per queue per second at most,
outside the job path; what this row measures is the counting itself.
"""

from __future__ import annotations

from benches.adapters.asyncq import TASKS, AsyncqAdapter
from benches.adapters.asyncq import app as _app
from benches.adapters.base import WorkerSpec


class MetricsAdapter(AsyncqAdapter):
    name = "asyncq_metrics"
    notes = (
        "`asyncq-worker benches.adapters.asyncq:app ... --metrics-port 0`, as the asyncq row "
        "with Prometheus metrics counted for every job."
    )
    app, tasks, target = _app, TASKS, "benches.adapters.asyncq:app"

    def worker_argv(self, spec: WorkerSpec) -> list[str] | None:
        argv = super().worker_argv(spec)
        return None if argv is None else [*argv, "--metrics-port", "0"]


ADAPTER = MetricsAdapter()
