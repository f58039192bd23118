"""The CI smoke tier of the chaos suite (cases 1, 2, 4, 6 at small scale): ``make chaos-smoke``.

Marked ``chaos`` and left out of the default run; ``make chaos`` runs every case at full scale
and prints the table (``python -m tests.chaos.run``).
"""

from __future__ import annotations

import pytest

from tests.chaos.cases import CASES
from tests.chaos.harness import table

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(300)]


async def _run(name: str) -> None:
    r = await CASES[name]("smoke")
    print(table([r]))
    assert r.passed, table([r])


async def test_worker_sigkill_under_load() -> None:
    await _run("1")


async def test_sigterm_drain_under_load() -> None:
    await _run("2")


async def test_connection_faults_through_proxy() -> None:
    await _run("4")


async def test_poison_messages() -> None:
    await _run("6")
