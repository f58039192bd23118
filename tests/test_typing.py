"""The task API is typed: mypy checks enqueue arguments against the task's signature."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api

GOOD = """
import asyncq
app = asyncq.App("memory://")

@app.task(retries=2)
async def send(to: str, n: int = 1) -> str:
    return to * n

@app.task
def resize(path: str) -> None: ...

async def main() -> None:
    job = await send.enqueue("a@b.c", n=2)
    text: str = await job.result(timeout=1)
    await send.options(delay=5, priority=9, key="k").enqueue("x")
    resize.enqueue_sync("/tmp/x.png")
"""

BAD = """
import asyncq
app = asyncq.App("memory://")

@app.task
async def send(to: str, n: int = 1) -> str:
    return to * n

async def main() -> None:
    await send.enqueue(42)
    await send.enqueue("a", n="two")
    job = await send.enqueue("a")
    number: int = await job.result()
"""


def check(tmp_path: Path, source: str) -> tuple[str, int]:
    path = tmp_path / "snippet.py"
    path.write_text(textwrap.dedent(source))
    out, _, status = api.run(["--strict", "--no-incremental", str(path)])
    return out, status


@pytest.mark.timeout(120)
def test_enqueue_arguments_are_type_checked(tmp_path: Path) -> None:
    out, status = check(tmp_path, GOOD)
    assert status == 0, out
    out, status = check(tmp_path, BAD)
    assert status == 1
    assert 'Argument 1 to "enqueue" of "Task" has incompatible type "int"' in out
    assert 'Argument "n" to "enqueue" of "Task" has incompatible type "str"' in out
    assert 'Incompatible types in assignment (expression has type "str"' in out
