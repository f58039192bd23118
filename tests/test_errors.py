"""asyncq's exceptions live in ``asyncq`` and survive pickling (results and errors cross
process boundaries: process pools, multiprocessing callers, task frameworks that pickle)."""

from __future__ import annotations

import pickle

import pytest

import asyncq


@pytest.mark.parametrize(
    "cls",
    [
        asyncq.AsyncqError,
        asyncq.BrokerError,
        asyncq.PayloadError,
        asyncq.JobFailed,
        asyncq.JobCancelled,
        asyncq.JobNotFound,
        asyncq.ResultTimeout,
    ],
)
def test_exceptions_are_public_in_asyncq(cls: type[BaseException]) -> None:
    assert cls.__module__ == "asyncq"
    assert getattr(asyncq, cls.__name__) is cls


def test_job_failed_pickles_with_its_fields() -> None:
    err = asyncq.JobFailed("j1", "ValueError", "boom", "Traceback ...", "exception")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is asyncq.JobFailed and str(back) == str(err)
    assert (back.job_id, back.type, back.message, back.traceback, back.reason) == (
        "j1",
        "ValueError",
        "boom",
        "Traceback ...",
        "exception",
    )


def test_broker_error_pickles_with_its_attributes() -> None:
    err = asyncq.BrokerError("enqueue timed out")
    err.outcome_unknown = True
    err.job_ids = ["a", "b"]
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is asyncq.BrokerError and str(back) == "enqueue timed out"
    assert back.outcome_unknown is True and back.job_ids == ["a", "b"]
    plain = pickle.loads(pickle.dumps(asyncq.BrokerError("down")))
    assert plain.outcome_unknown is False and plain.job_ids == []


def test_simple_errors_pickle() -> None:
    for err in (asyncq.JobCancelled("c"), asyncq.JobNotFound("n"), asyncq.ResultTimeout("t")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
