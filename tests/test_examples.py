"""The runnable examples the docs show run, and print what the docs say they print."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.procutil import ROOT


def run_example(module: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ASYNCQ_URL"}  # memory:// in-process
    out = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # seconds of real work; the margin is for a loaded machine
        check=True,
    )
    return out.stdout


def test_the_progress_example_follows_a_job_and_its_queue() -> None:
    out = run_example("examples.progress")
    lines = [line.strip() for line in out.splitlines()]
    assert "100%  300 of 300 rows" in lines
    assert lines[lines.index("100%  300 of 300 rows") + 1] == "succeeded"
    assert "latest report: JobProgress(fraction=1.0, message='300 of 300 rows'" in out
    assert lines[-1].startswith("queue saw: queued running")
    assert lines[-1].endswith("queued running progress succeeded")


def test_the_flows_example_prints_its_total() -> None:
    assert run_example("examples.flows").strip().endswith("#prices: 20.75")


def test_the_flow_control_example_snoozes_dedups_throttles_and_debounces() -> None:
    lines = run_example("examples.flow_control").splitlines()
    assert lines == [
        "order 7 sent after 2 snoozes",
        "unique: True True",
        "throttle: 1 job for 5 enqueues",
        "debounce: index rebuilt (change 3)",
    ]


def test_the_limits_example_keeps_its_limits_and_takes_turns() -> None:
    rate, at_once, turns = run_example("examples.limits").splitlines()
    # Counts, not exact figures: a late start on a loaded machine makes a second hold fewer.
    assert rate.startswith("rate: at most ") and int(rate.split()[3]) <= 10, rate
    assert at_once.startswith("at once per tenant, at most: ") and int(at_once.split()[6]) <= 2
    # Round-robin: small's 3 calls alternate with big's first ones (7: big, big, small, ...
    # when the first fetch comes before small's group; 6 when after).
    first = int(turns.removeprefix("turns: small's 3 calls started among the first ").split()[0])
    assert first <= 7, turns


def test_the_partitions_example_spreads_emails_and_keeps_each_account_together() -> None:
    spread, *accounts = run_example("examples.partitions").splitlines()
    assert spread == "emails per partition: work#0 2, work#1 2, work#2 2, work#3 2"
    assert len(accounts) == 3
    for line in accounts:
        assert line.endswith("ran in order [0, 1, 2, 3, 4]"), line
        assert ": all in work#" in line, line


def test_the_metrics_example_prints_what_a_scrape_counted() -> None:
    lines = run_example("examples.metrics").splitlines()
    assert lines[:3] == ["3", "7", "failed"]
    assert sorted(lines[3:]) == [
        'asyncq_jobs_total{queue="default",task="example:add",outcome="succeeded"} 2',
        'asyncq_jobs_total{queue="default",task="example:fail",outcome="failed"} 1',
    ]


def test_the_tracing_example_prints_one_trace() -> None:
    rows = [line.split() for line in run_example("examples.tracing").splitlines()]
    # The request's span, its two sends (a job, a chain), the chain's two creates, four runs.
    assert (
        sorted(row[0] for row in rows) == ["POST"] + ["create"] * 2 + ["process"] * 4 + ["send"] * 2
    )
    assert len({field for row in rows for field in row if field.startswith("trace=")}) == 1
    process = [row for row in rows if row[0] == "process"]
    outcomes = sorted(
        " ".join(f for f in row if f.startswith(("attempt=", "outcome="))) for row in process
    )
    assert outcomes == [
        "attempt=1 outcome=retrying",
        "attempt=1 outcome=succeeded",
        "attempt=1 outcome=succeeded",
        "attempt=2 outcome=succeeded",
    ]
    spans = {field for row in rows for field in row if field.startswith("span=")}
    assert all(f"span={row[5].removeprefix('parent=')}" in spans for row in process)
