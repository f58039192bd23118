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

MODELS = """
import dataclasses
import asyncq
from pydantic import BaseModel
app = asyncq.App("memory://")

class Order(BaseModel):
    id: int

@dataclasses.dataclass
class Receipt:
    order_id: int

@app.task
async def place(order: Order) -> Receipt:
    return Receipt(order.id)

async def main() -> None:
    job = await place.enqueue(Order(id=1))
    receipt: Receipt = await job.result(timeout=1)
    await place.enqueue(Receipt(1))
    wrong: Order = await job.result()
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


# Async tasks whose return type contains Any used to be typed Task[Any, Any] (an ambiguous
# overload match), which turned every argument check off. Each task below must stay checked.
TASKS = """
from typing import Any
from typing_extensions import assert_type
import asyncq
app = asyncq.App("memory://")

@app.task
async def fetch(url: str, retries: int = 1) -> dict[str, Any]:
    return {}

@app.task(queue="q", retries=2)
async def anything(key: str) -> Any:
    return key

@app.task
def blob(path: str) -> dict[str, Any]:
    return {}

@app.task(executor="process")
def crunch(n: int) -> Any:
    return n

@app.task
async def plain(n: int) -> int:
    return n
"""

GOOD_ANY = (
    TASKS
    + """
async def main() -> None:
    job = await fetch.enqueue("https://x", retries=3)
    assert_type(job, asyncq.JobHandle[dict[str, Any]])
    body: dict[str, Any] = await job.result(timeout=1)
    assert_type(await anything.options(delay=1).enqueue("k"), asyncq.JobHandle[Any])
    assert_type(blob.enqueue_sync("/x"), asyncq.JobHandle[dict[str, Any]])
    assert_type(crunch.enqueue_sync(3), asyncq.JobHandle[Any])
    many = await fetch.enqueue_many([fetch.call("a"), fetch.call("b", retries=2)])
    assert_type(many, list[asyncq.JobHandle[dict[str, Any]]])
    await plain.enqueue_many(plain.call(i) for i in range(3))
    await plain.options(priority=1).enqueue_many([plain.call(1), ((2,), {})])
    await plain.enqueue_many([((i,), {}) for i in range(3)])
"""
)

# Each line that must be rejected carries `# E: <part of mypy's message>`.
BAD_ANY = (
    TASKS
    + """
async def main() -> None:
    await fetch.enqueue(42)  # E: Argument 1 to "enqueue" of "Task" has incompatible type "int"
    await fetch.enqueue()  # E: Missing positional argument "url" in call to "enqueue"
    await fetch.enqueue("u", timeout=1)  # E: Unexpected keyword argument "timeout"
    fetch.enqueue_sync("u", "1")  # E: Argument 2 to "enqueue_sync" of "Task" has incompatible
    await anything.enqueue(1)  # E: Argument 1 to "enqueue" of "Task" has incompatible type
    await anything.enqueue()  # E: Missing positional argument "key" in call to "enqueue"
    await anything.enqueue("k", n=1)  # E: Unexpected keyword argument "n" for "enqueue"
    await anything.options(delay=1).enqueue(b"k")  # E: Argument 1 to "enqueue" of "BoundTask"
    crunch.enqueue_sync("3")  # E: Argument 1 to "enqueue_sync" of "Task" has incompatible
    await fetch.enqueue_many([fetch.call(1)])  # E: Argument 1 to "call" of "Task" has incompatible
    await fetch.enqueue_many([fetch.call()])  # E: Missing positional argument "url" in call
    await fetch.enqueue_many([fetch.call("u", n=1)])  # E: Unexpected keyword argument "n"
    await fetch.enqueue_many([plain.call(1)])  # E: List item 0 has incompatible type "Call[[int]]"
    await anything.enqueue_many([anything.call(2)])  # E: Argument 1 to "call" of "Task"
    app.task(executor="fork")(blob)  # E: No overload variant of "task" of "App" matches
"""
)


def expected_errors(source: str) -> dict[int, str]:
    lines = textwrap.dedent(source).splitlines()
    return {n: line.split("# E: ")[1] for n, line in enumerate(lines, 1) if "# E: " in line}


def errors_by_line(out: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for line in out.splitlines():
        parts = line.split(":", 3)
        if len(parts) == 4 and parts[2].strip() == "error":
            found.setdefault(int(parts[1]), []).append(parts[3].strip())
    return found


@pytest.mark.timeout(120)
def test_every_task_has_its_arguments_checked(tmp_path: Path) -> None:
    out, status = check(tmp_path, GOOD_ANY)
    assert status == 0, out
    out, status = check(tmp_path, BAD_ANY)
    assert status == 1, out
    found = errors_by_line(out)
    for line, fragment in expected_errors(BAD_ANY).items():
        assert any(fragment in e for e in found.get(line, [])), (line, fragment, out)
    assert set(found) == set(expected_errors(BAD_ANY)), out


@pytest.mark.timeout(120)
def test_typed_values_are_type_checked_as_arguments_and_results(tmp_path: Path) -> None:
    out, status = check(tmp_path, MODELS)
    assert status == 1
    errors = [line for line in out.splitlines() if ": error:" in line]
    # The model call and the Receipt result check; only the two wrong lines are errors.
    assert len(errors) == 2, out
    assert 'Argument 1 to "enqueue" of "Task" has incompatible type "Receipt"' in out
    assert 'Incompatible types in assignment (expression has type "Receipt"' in out
