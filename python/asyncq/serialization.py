"""Serializers other than the native msgpack codec, and typed values (pydantic models,
dataclasses) as task arguments and results. See docs/serialization.md.

The native codec (the default, ``"msgpack"``) is written in Rust and takes plain Python values:
None, bool, int, float, str, bytes, list, tuple, dict, datetime, date, UUID and Decimal. A task
(or a whole app) may name another serializer: each argument and the result are then turned into
bytes by it, carried as a :class:`Serialized` value (msgpack ext type 7, which names the
serializer), and the envelope says which serializer encoded the arguments, so a worker that does
not know it refuses the job (dead-lettered with reason ``unknown_serializer``) instead of
guessing.

A serializer is any object with a ``name`` and ``dumps``/``loads``::

    class Orjson:
        name = "orjson"

        def dumps(self, value: object) -> bytes:
            return orjson.dumps(value)

        def loads(self, data: bytes) -> object:
            return orjson.loads(data)

    app = asyncq.App(url, serializer=Orjson())

``pickle`` is built in but refused unless the app both asks for it (``serializer="pickle"`` on
the app or a task) and signs its messages (``signing_keys``): unpickling runs code chosen by
whoever wrote the bytes, so a worker must only unpickle what a key holder produced.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import typing
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "JSON",
    "PICKLE",
    "Serialized",
    "Serializer",
    "UnknownSerializer",
    "lookup",
    "register",
]


class Serialized(NamedTuple):
    """A value another serializer encoded: its name and bytes (msgpack ext type 7)."""

    serializer: str
    data: bytes


@runtime_checkable
class Serializer(Protocol):
    """What a serializer provides. ``name`` travels in every envelope it encodes (any
    non-empty string without NUL; ``msgpack`` names the native codec)."""

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class UnknownSerializer(LookupError):
    """A value names a serializer this process does not know (or does not accept)."""


class _Json:
    name = "json"

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class _Pickle:
    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        # Only with signing: see the module docstring.
        return pickle.loads(data)


JSON: Serializer = _Json()
PICKLE: Serializer = _Pickle()
NATIVE = "msgpack"

# Serializers this process can read results with (JobHandle.result): those an App or task named.
_known: dict[str, Serializer] = {JSON.name: JSON}


def register(serializer: Serializer) -> Serializer:
    """Make ``serializer`` known to this process by its name (an App or task naming it does
    this too); a different object under a known name is refused."""
    name = getattr(serializer, "name", None)
    if not isinstance(name, str) or not name or "\0" in name or name == NATIVE:
        raise ValueError(f"a serializer needs a name (a non-empty str, not {NATIVE!r}): {name!r}")
    if not callable(getattr(serializer, "dumps", None)) or not callable(
        getattr(serializer, "loads", None)
    ):
        raise TypeError(f"serializer {name!r} needs dumps(value) -> bytes and loads(bytes)")
    known = _known.get(name)
    if known is not None and known is not serializer:
        raise ValueError(f"another serializer is registered as {name!r}")
    _known[name] = serializer
    return serializer


def lookup(name: str) -> Serializer:
    """The registered serializer called ``name``."""
    try:
        return _known[name]
    except KeyError:
        raise UnknownSerializer(f"no serializer {name!r} is registered in this process") from None


def resolve(spec: str | Serializer | None, *, signed: bool) -> Serializer | None:
    """An App's or task's ``serializer=`` as a serializer (None: native msgpack)."""
    if spec is None or spec == NATIVE:
        return None
    if spec == "json":
        return JSON
    if spec == "pickle" or spec is PICKLE:
        if not signed:
            raise ValueError(
                "serializer='pickle' needs signing_keys: a worker must unpickle only what a key"
                " holder wrote (unpickling runs code of the writer's choosing)"
            )
        return register(PICKLE)
    if isinstance(spec, str):
        return lookup(spec)
    return register(spec)


def _loads(value: Any, accept: Callable[[str], Serializer]) -> Any:
    """``value``, decoded by the serializer ``accept`` gives for its name when it is a
    :class:`Serialized` one; as it is otherwise."""
    if isinstance(value, Serialized):
        return accept(value.serializer).loads(value.data)
    return value


def decode_result(value: Any) -> Any:
    """A stored result as the task returned it (a :class:`Serialized` one decoded)."""
    return _loads(value, lookup)


def describe(value: Any) -> Any:
    """``value`` (a stored result or arguments) for tools that show jobs without running their
    tasks' code: the CLI and the dashboard. JSON-encoded values are decoded (JSON is only data);
    any other serializer's bytes are shown as ``{"serializer": name, "bytes": size}`` and never
    decoded, since decoding pickle, say, would run code of the writer's choosing."""
    if isinstance(value, Serialized):
        if value.serializer == JSON.name:
            try:
                return JSON.loads(value.data)
            except ValueError:
                pass
        return {"serializer": value.serializer, "bytes": len(value.data)}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    return value


# ---- typed values: pydantic models and dataclasses -----------------------------------------


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and (
        dataclasses.is_dataclass(tp) or hasattr(tp, "__pydantic_core_schema__")
    )


def _involves_model(tp: Any, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if _is_model(tp):
        return True
    return any(_involves_model(a, depth + 1) for a in typing.get_args(tp))


class Adapter(NamedTuple):
    """How one annotated value travels: ``dump`` to plain values at the producer (or after a
    run), ``load`` back to the annotated type (validated) at the worker (or reader)."""

    dump: Callable[[Any], Any]
    load: Callable[[Any], Any]


def adapter_for(annotation: Any) -> Adapter | None:
    """The adapter for values annotated ``annotation``, or None when it needs none (it names
    no pydantic model and no dataclass)."""
    if annotation is None or not _involves_model(annotation):
        return None
    try:
        from pydantic import TypeAdapter  # noqa: PLC0415 - optional
    except ImportError:
        if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
            cls = annotation
            return Adapter(dump=_dataclass_dump, load=lambda v: _dataclass_load(cls, v))
        raise TypeError(
            f"{annotation!r} needs pydantic to travel as a task argument or result"
            " (pip install pydantic), or use a plain dataclass"
        ) from None
    ta: Any = TypeAdapter(annotation)
    # JSON mode: plain values the native codec and any serializer take. A value that is not
    # of the annotated type goes as it is (no warning): the worker's validation judges it.
    return Adapter(
        dump=lambda v: ta.dump_python(v, mode="json", warnings=False),
        load=ta.validate_python,
    )


def _dataclass_dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _dataclass_load(cls: type, value: Any) -> Any:
    if isinstance(value, cls) or not isinstance(value, dict):
        return value
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            v = value[f.name]
            tp = hints.get(f.name)
            if isinstance(tp, type) and dataclasses.is_dataclass(tp):
                v = _dataclass_load(tp, v)
            fields[f.name] = v
    return cls(**fields)


class Codec:
    """How one task's arguments and result travel when they are not plain native values:
    per-argument adapters (typed values) and/or a serializer. Tasks that need neither have
    no codec, so the common path pays nothing."""

    __slots__ = ("arg_names", "args", "result", "serializer")

    def __init__(
        self,
        arg_names: list[str],
        args: dict[str, Adapter],
        result: Adapter | None,
        serializer: Serializer | None,
    ) -> None:
        self.arg_names = arg_names
        self.args = args
        self.result = result
        self.serializer = serializer

    @classmethod
    def build(cls, fn: Callable[..., Any], serializer: Serializer | None) -> Codec | None:
        import inspect  # noqa: PLC0415

        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # unresolvable annotations: no typed values
            hints = {}
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            params = []
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        adapters: dict[str, Adapter] = {}
        for p in params:
            adapter = adapter_for(hints.get(p.name))
            if adapter is not None:
                adapters[p.name] = adapter
        result = adapter_for(hints.get("return"))
        if not adapters and result is None and serializer is None:
            return None
        return cls(names, adapters, result, serializer)

    def _name_of(self, i: int, offset: int) -> str | None:
        j = i + offset
        return self.arg_names[j] if j < len(self.arg_names) else None

    def _out(self, name: str | None, value: Any, where: str) -> Any:
        adapter = self.args.get(name) if name is not None else None
        if adapter is not None:
            value = adapter.dump(value)
        s = self.serializer
        if s is None:
            return value
        try:
            return Serialized(s.name, s.dumps(value))
        except Exception as exc:
            raise TypeError(f"{where} cannot be serialized with {s.name!r}: {exc}") from exc

    def encode_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any] | None, offset: int = 0
    ) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        """The call's arguments as they travel; ``offset`` positions are filled at the worker
        first (a flow member's input)."""
        out_args = tuple(
            self._out(
                self._name_of(i, offset),
                a,
                f"argument {self._name_of(i, offset) or f'#{i + offset}'!r}",
            )
            for i, a in enumerate(args)
        )
        out_kwargs = (
            {k: self._out(k, v, f"argument {k!r}") for k, v in kwargs.items()} if kwargs else None
        )
        return out_args, out_kwargs

    def _in(self, name: str | None, value: Any, accept: Callable[[str], Serializer]) -> Any:
        value = _loads(value, accept)
        adapter = self.args.get(name) if name is not None else None
        return adapter.load(value) if adapter is not None else value

    def decode_call(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        accept: Callable[[str], Serializer],
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The arguments of a fetched job as the function takes them: serialized values
        decoded by a serializer ``accept`` returns for their name, typed ones validated."""
        return (
            tuple(self._in(self._name_of(i, 0), a, accept) for i, a in enumerate(args)),
            {k: self._in(k, v, accept) for k, v in kwargs.items()},
        )

    def encode_result(self, value: Any) -> Any:
        if self.result is not None:
            value = self.result.dump(value)
        s = self.serializer
        return value if s is None else Serialized(s.name, s.dumps(value))

    def decode_result(self, value: Any) -> Any:
        value = decode_result(value)
        return self.result.load(value) if self.result is not None else value


def decode_arguments(
    codec: Codec | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    accept: Callable[[str], Serializer],
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A job's arguments as its function takes them, through the task's ``codec``; a task
    with none still gets serialized values decoded (its producer named a serializer this
    worker's task does not)."""
    if codec is not None:
        return codec.decode_call(args, kwargs, accept)
    return tuple(_loads(a, accept) for a in args), {k: _loads(v, accept) for k, v in kwargs.items()}
