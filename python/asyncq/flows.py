"""Workflows: chains, groups and chords of task calls (see docs/workflows.md).

A flow is written to Redis whole when it is enqueued: every member becomes a job at once, those
that follow others in state ``waiting``. What a finished member hands on (its result, or its
failure) is recorded by the same atomic script that records its end, so a worker dying between
"done" and "next" can neither drop nor double a step; members in other queues are reached
through an outbox that the engine relays. Nothing polls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union

from ._core import BrokerError, new_job_ids
from .errors import BatchFinished
from .job import JobHandle
from .task import BoundTask, EnqueueOptions

if TYPE_CHECKING:
    from .app import App
    from .task import Task

__all__ = [
    "Batch",
    "BatchHandle",
    "Chain",
    "Chord",
    "Failed",
    "Flow",
    "FlowJobHandle",
    "Group",
    "GroupHandle",
    "Progress",
    "Signature",
    "batch",
    "chain",
    "chord",
    "group",
]

R = TypeVar("R")
Policy = Literal["fail", "continue", "ignore"]
_POLICIES = ("fail", "continue", "ignore")
#: Marker key of a failed member's value in a flow input (written by lib/common.lua).
_FAILED = "__asyncq_failed__"


@dataclasses.dataclass(frozen=True)
class Failed:
    """What a member gets in a failed member's place under ``on_failure="continue"``.

    Attributes:
        job_id: The failed member's job id.
        type: Its exception's class name (``UpstreamFailed`` if it never ran).
        message: The exception's message.
        reason: Why it failed (``error``, ``timeout``, ``cancelled``, ``upstream_failed``...).
    """

    job_id: str
    type: str
    message: str
    reason: str


def _input(value: Any) -> Any:
    """A flow member's input as its task receives it: failed-member markers become
    :class:`Failed` (called by the Rust core, for flow members only)."""
    if isinstance(value, dict) and value.get(_FAILED) is True:
        return Failed(
            str(value.get("job_id", "")),
            str(value.get("type", "")),
            str(value.get("message", "")),
            str(value.get("reason", "")),
        )
    if isinstance(value, list):
        return [_input(v) if isinstance(v, dict) else v for v in value]
    return value


class Flow:
    """Something that can be enqueued as a flow: a signature, chain, group or chord."""

    on_failure: Policy | None = None

    async def enqueue(self) -> JobHandle[Any] | GroupHandle | BatchHandle:
        """Write every member of the flow; returns the handle of its end (see subclasses)."""
        nodes, out = _compile(self)
        return await self._write(_app_of(nodes), nodes, out)

    def enqueue_sync(self) -> JobHandle[Any] | GroupHandle | BatchHandle:
        """:meth:`enqueue` for synchronous callers (any thread)."""
        nodes, out = _compile(self)
        app = _app_of(nodes)
        make = lambda: self._write(app, nodes, out)  # noqa: E731
        if app._tracing is not None:
            make = app._tracing.carry(make)  # the caller's span stays the parent
        return app._run_blocking(make)

    async def _write(
        self, app: App, nodes: list[_Node], out: _Out
    ) -> JobHandle[Any] | GroupHandle | BatchHandle:
        await _write(app, nodes)
        return _handle(app, out, nodes, self)


@dataclasses.dataclass(frozen=True)
class Signature(Flow, Generic[R]):
    """One task call inside a flow, made by ``task.s(*args, **kwargs)``.

    A signature that follows another member gets that member's result (or, after a group,
    the list of the group's results) as its first positional argument, before ``args``.
    """

    task: Task[Any, R]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None
    opts: EnqueueOptions = dataclasses.field(default_factory=EnqueueOptions)
    on_failure: Policy | None = None

    def options(
        self,
        *,
        delay: float | None = None,
        priority: int | None = None,
        queue: str | None = None,
        job_id: str | None = None,
        on_failure: Policy | None = None,
    ) -> Signature[R]:
        """A copy with these options (as :meth:`Task.options`; ``on_failure`` says what this
        member's failure does to what follows it)."""
        bound = self.task.options(
            delay=delay if delay is not None else self.opts.delay,
            priority=priority if priority is not None else self.opts.priority,
            queue=queue or self.opts.queue,
            job_id=job_id or self.opts.job_id,
        )
        return dataclasses.replace(
            self, opts=bound.opts, on_failure=_policy(on_failure) or self.on_failure
        )

    async def enqueue(self) -> JobHandle[R]:
        """Enqueue this one call (a flow of one member)."""
        handle = await Flow.enqueue(self)
        assert isinstance(handle, JobHandle)
        return handle


@dataclasses.dataclass(frozen=True)
class Chain(Flow):
    """Steps run one after the other, each getting the previous one's result first."""

    steps: tuple[Flow, ...]
    on_failure: Policy | None = None


@dataclasses.dataclass(frozen=True)
class Group(Flow):
    """Members run in parallel; what follows a group gets the list of their results."""

    members: tuple[Flow, ...]
    on_failure: Policy | None = None

    async def enqueue(self) -> GroupHandle:
        """Enqueue every member; returns a :class:`GroupHandle`."""
        handle = await Flow.enqueue(self)
        assert isinstance(handle, GroupHandle)
        return handle


@dataclasses.dataclass(frozen=True)
class Chord(Flow):
    """A group, then a callback run once with the list of the group's results in order."""

    header: Group
    callback: Flow
    on_failure: Policy | None = None

    async def enqueue(self) -> JobHandle[Any]:
        """Enqueue the header and the callback; returns the callback's handle."""
        handle = await Flow.enqueue(self)
        assert isinstance(handle, JobHandle)
        return handle


@dataclasses.dataclass(frozen=True)
class Batch(Flow):
    """Jobs that run independently, with callbacks once all of them have finished."""

    jobs: tuple[Signature[Any], ...]
    on_complete: Signature[Any] | None = None
    on_success: Signature[Any] | None = None

    async def enqueue(self) -> BatchHandle:
        """Enqueue the jobs and the callbacks; returns a :class:`BatchHandle`."""
        handle = await Flow.enqueue(self)
        assert isinstance(handle, BatchHandle)
        return handle


def batch(
    jobs: Iterable[Signature[Any]],
    *,
    on_complete: Signature[Any] | None = None,
    on_success: Signature[Any] | None = None,
) -> Batch:
    """Jobs that run independently, and callbacks that run once when all have finished.

    Args:
        jobs: The batch's first jobs (more may be added with :meth:`BatchHandle.add` while it
            is open, that is until every job has finished).
        on_complete: Runs once every job has finished, failed ones included; gets the list
            of results in job order, an :class:`asyncq.Failed` for each failed job.
        on_success: Runs once every job has succeeded, with the list of their results; never
            runs (it ends ``upstream_failed``) if one fails for good.

    Raises:
        ValueError: No jobs, or both callbacks in different queues.
    """
    items = tuple(jobs)
    if not items:
        raise ValueError("batch() needs at least one job")
    for j in items:
        if not isinstance(j, Signature):
            raise TypeError(f"a batch's jobs are task signatures (task.s(...)), got {j!r}")
    callbacks = [c for c in (on_complete, on_success) if c is not None]
    queues = {c.opts.queue or c.task.config.queue for c in callbacks}
    if len(queues) > 1:
        raise ValueError("a batch's callbacks must be in the same queue")
    return Batch(items, on_complete, on_success)


def chain(*steps: Flow, on_failure: Policy | None = None) -> Chain:
    """Run ``steps`` one after the other; each gets the previous step's result first.

    Args:
        steps: Signatures, groups, chords or chains.
        on_failure: What a failed step does to the rest (default ``"fail"``: nothing after
            it runs); a member's own ``on_failure`` wins.

    Raises:
        ValueError: No steps, or a bad policy.
    """
    if not steps:
        raise ValueError("chain() needs at least one step")
    return Chain(tuple(_flow(s) for s in steps), _policy(on_failure))


def group(members: Iterable[Flow], *, on_failure: Policy | None = None) -> Group:
    """Run ``members`` in parallel; what follows gets the list of their results in order.

    A group inside a group adds its members to the outer one.

    Raises:
        ValueError: No members, or a bad policy.
    """
    items = tuple(_flow(m) for m in members)
    if not items:
        raise ValueError("group() needs at least one member")
    return Group(items, _policy(on_failure))


def chord(
    header: Group | Iterable[Flow], callback: Flow, *, on_failure: Policy | None = None
) -> Chord:
    """Run ``header`` in parallel, then ``callback`` once with the list of its results.

    Args:
        header: A group, or the members of one.
        callback: What runs when every member has ended (its first argument: the results).
        on_failure: What a failed member does (default ``"fail"``: the callback never runs
            and ends failed with reason ``upstream_failed``; ``"continue"``: it gets a
            :class:`Failed` in that member's place; ``"ignore"``: that member is left out).
    """
    head = header if isinstance(header, Group) else group(header)
    return Chord(head, _flow(callback), _policy(on_failure))


def _flow(item: Any) -> Flow:
    if not isinstance(item, Flow):
        raise TypeError(f"expected a task signature (task.s(...)) or a flow, got {item!r}")
    return item


def _policy(p: str | None) -> Policy | None:
    if p is not None and p not in _POLICIES:
        raise ValueError(f"on_failure must be one of {', '.join(_POLICIES)}, got {p!r}")
    return p  # type: ignore[return-value]


# ---- compiling a flow into members ---------------------------------------------------------


def _fresh_id(sig: Signature[Any]) -> str:
    """A new member id; on a partitioned queue it names partition 0, where flows go."""
    queue = sig.opts.queue or sig.task.config.queue
    partitioned = sig.task.app.partitions.count(queue) > 1
    made = new_job_ids(1, sig.task.config.id_prefix)[0]
    return f"{made}.p0" if partitioned else made


class _Node:
    """One member: a signature with its id, the members it waits on and those waiting on it."""

    __slots__ = ("children", "id", "mode", "parents", "policy", "sig")

    def __init__(
        self,
        sig: Signature[Any],
        parents: list[_Node],
        mode: str,
        policy: Policy,
        edge_policy: Policy | None = None,
    ) -> None:
        self.sig = sig
        self.id = sig.opts.job_id or _fresh_id(sig)
        self.parents = parents
        self.mode = mode
        self.policy = policy
        # (child, position among its parents, what this member's failure does to it): the
        # failed member's policy, unless the child says (a batch's callbacks do).
        self.children: list[tuple[_Node | _Stub, int, Policy]] = []
        for i, p in enumerate(parents):
            p.children.append((self, i, edge_policy or p.policy))

    @property
    def queue(self) -> str:
        return self.sig.opts.queue or self.sig.task.config.queue


@dataclasses.dataclass(frozen=True)
class _Stub:
    """A member written earlier, known by its queue and id (a batch's callbacks)."""

    queue: str
    id: str


@dataclasses.dataclass
class _Out:
    """Where a compiled flow ends: its last members, and whether they form a group."""

    terminals: list[_Node]
    group: bool


def _compile(flow: Flow) -> tuple[list[_Node], _Out]:
    nodes: list[_Node] = []
    out = _walk(flow, [], "one", "fail", nodes)
    return nodes, out


def _walk(flow: Flow, parents: list[_Node], mode: str, policy: Policy, nodes: list[_Node]) -> _Out:
    policy = flow.on_failure or policy
    if isinstance(flow, Signature):
        _check(flow, with_input=bool(parents))
        node = _Node(flow, parents, mode, policy)
        nodes.append(node)
        return _Out([node], group=False)
    if isinstance(flow, Chain):
        out: _Out | None = None
        for step in flow.steps:
            if out is None:
                out = _walk(step, parents, mode, policy, nodes)
            else:
                out = _walk(step, out.terminals, "list" if out.group else "one", policy, nodes)
        assert out is not None
        return out
    if isinstance(flow, Group):
        terminals: list[_Node] = []
        for member in flow.members:
            terminals.extend(_walk(member, parents, mode, policy, nodes).terminals)
        return _Out(terminals, group=True)
    if isinstance(flow, Chord):
        return _walk(Chain((flow.header, flow.callback)), parents, mode, policy, nodes)
    if isinstance(flow, Batch):
        if parents or nodes:
            raise TypeError("a batch cannot be part of another flow; enqueue it by itself")
        jobs = [_walk(j, [], "one", "fail", nodes).terminals[0] for j in flow.jobs]
        # on_complete hears every job, failures as Failed values; on_success runs only if
        # every job succeeded (a failure ends it upstream_failed).
        callbacks: list[tuple[Signature[Any] | None, Policy]] = [
            (flow.on_complete, "continue"),
            (flow.on_success, "fail"),
        ]
        for cb, edge in callbacks:
            if cb is not None:
                _check(cb, with_input=True)
                nodes.append(_Node(cb, jobs, "list", "fail", edge_policy=edge))
        return _Out(jobs, group=True)
    raise TypeError(f"not a flow: {flow!r}")


def _check(sig: Signature[Any], *, with_input: bool) -> None:
    if sig.opts.key is not None:
        raise ValueError("flow members cannot carry an idempotency key (options(key=...))")
    check = sig.task._check_args
    if check is not None:
        # A member after others gets their result(s) first: check with a stand-in.
        check(*((None,) if with_input else ()), *sig.args, **(sig.kwargs or {}))


def _app_of(nodes: Sequence[_Node]) -> App:
    app = nodes[0].sig.task.app
    if any(n.sig.task.app is not app for n in nodes):
        raise ValueError("every member of a flow must be a task of the same App")
    return app


async def _write(app: App, nodes: list[_Node]) -> None:
    """Write the members: first every waiting one, queue by queue, then the ready ones, so no
    member can end before what waits on it exists. Resent with the same ids after a broker
    failure (a member is written once), within the app's enqueue timeout."""
    if app._tracing is None:
        await _write_phases(app, nodes, [None] * len(nodes))
        return
    index = {id(n): i for i, n in enumerate(nodes)}
    traced = [(n.queue, n.sig.task.name, n.id, [index[id(p)] for p in n.parents]) for n in nodes]
    with app._tracing.sending_flow(traced) as headers:
        await _write_phases(app, nodes, headers)


async def _write_phases(
    app: App, nodes: list[_Node], headers: Sequence[dict[str, str] | None]
) -> None:
    if app.eager:
        raise RuntimeError(
            "flows do not run in eager mode (App(eager=True)): test them with app.drain()"
            " on memory:// (docs/testing.md)"
        )
    phases: list[dict[str, list[Any]]] = [{}, {}]
    for n, carrier in zip(nodes, headers, strict=True):
        task = n.sig.task
        opts = dataclasses.replace(n.sig.opts, job_id=n.id, queue=None)
        core = BoundTask(task, opts)._core_options([(n.sig.args, n.sig.kwargs)], carrier)
        follow = [(c.queue, c.id, i, policy) for c, i, policy in n.children]
        args, kwargs = n.sig.args, n.sig.kwargs
        if task._codec is not None:
            # A member after others gets their result(s) first, at the worker: position 0.
            args, kwargs = task._codec.encode_call(args, kwargs, 1 if n.parents else 0)
        spec = (task.name, task._arg_names, args, kwargs, core, len(n.parents))
        member = (*spec, n.mode, follow)
        phases[0 if n.parents else 1].setdefault(n.queue, []).append(member)
    deadline = None if app.enqueue_timeout is None else time.monotonic() + app.enqueue_timeout
    for phase in phases:
        for queue, members in phase.items():
            delay = 0.05
            while True:
                try:
                    await app.broker.enqueue_flow(queue, members)
                    break
                except BrokerError:
                    if deadline is not None and time.monotonic() + delay > deadline:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)


def _handle(
    app: App, out: _Out, nodes: list[_Node], flow: Flow | None = None
) -> JobHandle[Any] | GroupHandle | BatchHandle:
    broker = app.broker
    every: list[JobHandle[Any]] = [JobHandle(broker, n.queue, n.id, True) for n in nodes]
    if isinstance(flow, Batch):
        jobs: list[JobHandle[Any]] = [JobHandle(broker, n.queue, n.id, True) for n in out.terminals]
        callbacks = nodes[len(jobs) :]
        complete: FlowJobHandle[Any] | None = None
        success: FlowJobHandle[Any] | None = None
        if flow.on_complete is not None:
            complete = FlowJobHandle(broker, callbacks[0].queue, callbacks[0].id, every)
        if flow.on_success is not None:
            cb = callbacks[-1]
            success = FlowJobHandle(broker, cb.queue, cb.id, every)
        return BatchHandle(app, jobs, complete, success)
    if not out.group and len(out.terminals) == 1:
        last = out.terminals[0]
        return FlowJobHandle(broker, last.queue, last.id, every)
    members: list[JobHandle[Any]] = [JobHandle(broker, n.queue, n.id, True) for n in out.terminals]
    return GroupHandle(members, every)


class FlowJobHandle(JobHandle[R]):
    """The handle of a flow's last job (a chain's last step, a chord's callback): a
    :class:`JobHandle`, plus the flow's other members.

    Attributes:
        flow: Every member of the flow, in the order they were declared.
    """

    __slots__ = ("flow",)

    def __init__(self, broker: Any, queue: str, id: str, every: list[JobHandle[Any]]) -> None:
        super().__init__(broker, queue, id, True)
        self.flow = every

    async def cancel_flow(self) -> int:
        """Cancel every member of the flow not finished yet; returns how many were cancelled
        or asked to stop."""
        return await _cancel_all(self.flow)


async def _cancel_all(members: list[JobHandle[Any]]) -> int:
    """Cancel members last first: what waits is cancelled before what it waits on, so it
    ends cancelled rather than failed by its parent's cancellation."""
    n = 0
    for h in reversed(members):
        n += await h.cancel()
    return n


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far a group got: members ``done`` (succeeded), ``failed`` (dead or cancelled, or
    never run because of a failure before them), of ``total``."""

    done: int
    failed: int
    total: int


class GroupHandle:
    """The members of an enqueued group (``await asyncq.group([...]).enqueue()``)."""

    def __init__(self, members: list[JobHandle[Any]], every: list[JobHandle[Any]]) -> None:
        self.members = members
        self._every = every

    def __repr__(self) -> str:
        return f"GroupHandle({len(self.members)} members)"

    @property
    def ids(self) -> list[str]:
        """The members' job ids, in member order."""
        return [h.id for h in self.members]

    async def results(self, timeout: float | None = None) -> list[Any]:
        """Every member's result, in member order.

        Raises:
            JobFailed: A member failed (the first one in member order).
            ResultTimeout: Not every member ended within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for h in self.members:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            out.append(await h.result(timeout=left))
        return out

    async def result(self, timeout: float | None = None) -> list[Any]:
        """The same as :meth:`results` (so a chain's handle reads alike whatever its end)."""
        return await self.results(timeout)

    async def progress(self) -> Progress:
        """How many members succeeded, how many failed, of how many."""
        done = failed = 0
        for h in self.members:
            state = await h.status()
            done += state == "succeeded"
            failed += state in ("dead", "cancelled")
        return Progress(done, failed, len(self.members))

    async def cancel(self) -> int:
        """Cancel every member of the group's flow not finished yet (and so what waits on
        them); returns how many were cancelled or asked to stop."""
        return await _cancel_all(self._every)


class BatchHandle:
    """An enqueued batch: its jobs, its callbacks, and :meth:`add` while it is open.

    Attributes:
        jobs: The jobs' handles, in the order they were added.
        on_complete: The on_complete callback's handle, or None.
        on_success: The on_success callback's handle, or None.
    """

    def __init__(
        self,
        app: App,
        jobs: list[JobHandle[Any]],
        on_complete: FlowJobHandle[Any] | None,
        on_success: FlowJobHandle[Any] | None,
    ) -> None:
        self._app = app
        self.jobs = jobs
        self.on_complete = on_complete
        self.on_success = on_success

    def __repr__(self) -> str:
        return f"BatchHandle({len(self.jobs)} jobs)"

    async def add(self, jobs: Iterable[Signature[Any]]) -> list[JobHandle[Any]]:
        """Add jobs to the batch; its callbacks then also wait for them.

        Returns:
            The new jobs' handles.

        Raises:
            BatchFinished: Every job had finished already (the callbacks were released).
        """
        sigs = list(jobs)
        callbacks = [h for h in (self.on_complete, self.on_success) if h is not None]
        if not sigs:
            return []
        nodes = []
        for sig in sigs:
            if not isinstance(sig, Signature):
                raise TypeError(f"a batch's jobs are task signatures (task.s(...)), got {sig!r}")
            _check(sig, with_input=False)
            nodes.append(_Node(sig, [], "one", "fail"))
        if callbacks:
            queue = callbacks[0].queue
            ids = [h.id for h in callbacks]
            first = await self._app.broker.batch_add(queue, ids, len(nodes))
            if first is None:
                raise BatchFinished("the batch has finished: its callbacks were released")
            for i, node in enumerate(nodes):
                for h, edge in zip(callbacks, self._edges(), strict=True):
                    node.children.append((_Stub(h.queue, h.id), first + i, edge))
        await _write(self._app, nodes)
        added: list[JobHandle[Any]] = [
            JobHandle(self._app.broker, n.queue, n.id, True) for n in nodes
        ]
        self.jobs.extend(added)
        return added

    def _edges(self) -> list[Policy]:
        out: list[Policy] = []
        if self.on_complete is not None:
            out.append("continue")
        if self.on_success is not None:
            out.append("fail")
        return out

    async def progress(self) -> Progress:
        """How many jobs succeeded, how many failed, of how many."""
        return await GroupHandle(self.jobs, self.jobs).progress()


FlowHandle = Union[JobHandle[Any], GroupHandle]  # noqa: UP007 (a runtime alias on 3.10)
