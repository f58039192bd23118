"""The asyncq web dashboard (docs/dashboard.md): queues, jobs, workers and schedules, with
actions, live updates and "why is this job still waiting?".

Run it with ``asyncq dashboard --url redis://...`` or mount it into an ASGI app of your own::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from asyncq.dashboard import create_app

    app = Starlette(routes=[Mount("/asyncq", create_app(my_app, token="s3cret"))])

Needs the ``web`` extra (``pip install asyncq[web]``: Starlette and uvicorn).
"""

from __future__ import annotations

try:
    from starlette.applications import Starlette
except ImportError as exc:  # pragma: no cover (the extra is missing)
    raise ImportError("the asyncq dashboard needs Starlette: pip install 'asyncq[web]'") from exc

from ..app import App
from ._data import Source, Unreachable
from ._live import Hub
from ._security import Auth, Guard, is_loopback
from ._web import build

__all__ = ["Auth", "Unreachable", "check_bind", "create_app", "serve"]


def create_app(
    url_or_app: str | App,
    token: str | None = None,
    auth: Auth | None = None,
    *,
    show_args: bool = False,
    refresh: float = 2.0,
) -> Starlette:
    """The dashboard as a Starlette app, to serve or mount.

    Args:
        url_or_app: A broker URL, or your App (then the dashboard knows your tasks: which are
            sensitive, their redact hooks, partitioned queues).
        token: A secret every request must carry (``Authorization: Bearer``, or the login
            form's cookie). None: no token.
        auth: ``auth(request) -> bool`` (or awaitable): your own check; true lets a request
            in. With neither ``token`` nor ``auth``, only loopback clients are answered.
        show_args: With a bare URL, show every job's arguments (the dashboard cannot know
            which tasks are sensitive). Without it they are hidden; with an App, its tasks'
            ``sensitive=`` and ``redact=`` decide.
        refresh: Seconds between the samples behind live updates and throughput.

    Returns:
        The app.

    Raises:
        ValueError: A malformed URL, an empty token, or ``refresh`` not positive.
    """
    if not refresh > 0:
        raise ValueError(f"refresh must be > 0 seconds, got {refresh!r}")
    source = Source(url_or_app, show_args=show_args)
    return build(source, Guard(token, auth), Hub(source, every=refresh))


def check_bind(host: str, token: str | None, auth: Auth | None = None) -> None:
    """Refuse to listen beyond loopback without a token or an auth callable.

    Raises:
        ValueError: ``host`` is not loopback and neither is given.
    """
    if token is None and auth is None and not is_loopback(host):
        raise ValueError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            "retry, cancel and purge jobs; pass --token (or listen on 127.0.0.1)"
        )


def serve(
    url_or_app: str | App,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    token: str | None = None,
    auth: Auth | None = None,
    show_args: bool = False,
) -> None:
    """Run the dashboard with uvicorn until interrupted.

    Raises:
        ValueError: A non-loopback ``host`` without ``token`` or ``auth`` (see
            :func:`check_bind`), or a malformed URL.
    """
    import uvicorn  # noqa: PLC0415 (only serving needs it)

    check_bind(host, token, auth)
    app = create_app(url_or_app, token, auth, show_args=show_args)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
