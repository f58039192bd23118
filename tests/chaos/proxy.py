"""A small asyncio TCP fault proxy put between workers and Redis.

Faults (each applies to every connection, current and new, until healed):

- ``reset()``: abort every open connection with a TCP RST (SO_LINGER 0); new ones work.
- ``latency(ms)``: delay every chunk in both directions by ``ms``.
- ``blackhole(seconds)``: forward nothing for that long (connections stay open, new ones are
  accepted but not connected upstream), then carry on as if nothing happened.
- ``blackhole(seconds, forget=True)``: the same, except that every connection open during it
  (already open or accepted meanwhile) stays silent forever after the heal, as when a NAT or
  firewall dropped its flows while the route was down; connections opened afterwards work.
- ``half_open()``: every connection open now goes silent forever without being closed (as when
  a NAT or firewall forgets a flow); connections opened afterwards work normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


class _Pipe:
    def __init__(self, proxy: FaultProxy, cr: asyncio.StreamReader, cw: asyncio.StreamWriter):
        self.proxy = proxy
        self.cr, self.cw = cr, cw
        self.uw: asyncio.StreamWriter | None = None
        self.silent = False  # half-open: never forward again, never close
        self.tasks: list[asyncio.Task[None]] = []

    async def run(self) -> None:
        await self.proxy._gate()
        try:
            ur, uw = await asyncio.open_connection(
                self.proxy.upstream_host, self.proxy.upstream_port
            )
        except OSError:
            self.abort()
            return
        if self.proxy._closed:  # closed while this connection was being dialed upstream
            uw.close()
            self.abort()
            return
        self.uw = uw
        self.tasks = [
            asyncio.ensure_future(self._copy(self.cr, uw)),
            asyncio.ensure_future(self._copy(ur, self.cw)),
        ]
        await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        if not self.silent:
            self.close()

    async def _copy(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while True:
                data = await r.read(65536)
                if not data:
                    break
                await self.proxy._gate()
                if self.proxy.latency_s:
                    await asyncio.sleep(self.proxy.latency_s)
                while self.silent:
                    await asyncio.sleep(3600)
                w.write(data)
                await w.drain()

    def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        for w in (self.cw, self.uw):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.close()
        self.proxy._pipes.discard(self)
        self.proxy._closing.add(self)

    async def wait_closed(self) -> None:
        """Let both transports finish closing while the loop still runs (a transport closed
        just before the loop ends is reported unclosed when it is collected)."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for w in (self.cw, self.uw):
            if w is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(w.wait_closed(), 1)

    def abort(self) -> None:
        """Close the client side with a RST."""
        sock = self.cw.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.silent = False
        self.close()


class FaultProxy:
    """Listens on a free loopback port and forwards to ``upstream``; inject faults at will."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.port = 0
        self.latency_s = 0.0
        self._open = asyncio.Event()
        self._open.set()
        self._pipes: set[_Pipe] = set()
        # Pipes closed by a fault or their peer, whose transports close() still waits for.
        self._closing: set[_Pipe] = set()
        self._server: asyncio.Server | None = None
        self._forgetting = False  # a forgetful blackhole is on: new connections go silent too
        self._closed = False
        self.connections = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self._closed = True
        if self._server is not None:
            self._server.close()
        # A connection accepted just before the server closed gets its pipe only when its
        # handler runs, possibly after a first look: look until none is left (one left open
        # is reported unclosed when it is collected, which fails the test that owned it).
        while pipes := list(self._pipes | self._closing):
            for p in pipes:
                p.abort()
            await asyncio.gather(*(p.wait_closed() for p in pipes))
            self._closing.difference_update(pipes)
            await asyncio.sleep(0)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _accept(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self._closed:
            w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(w.wait_closed(), 1)
            return
        self.connections += 1
        pipe = _Pipe(self, r, w)
        pipe.silent = self._forgetting
        self._pipes.add(pipe)
        await pipe.run()

    async def _gate(self) -> None:
        await self._open.wait()

    # ---- faults ----------------------------------------------------------------------------

    def reset(self) -> int:
        """RST every open connection; returns how many."""
        pipes = list(self._pipes)
        for p in pipes:
            p.abort()
        return len(pipes)

    def latency(self, ms: float) -> None:
        self.latency_s = ms / 1000.0

    async def blackhole(self, seconds: float, forget: bool = False) -> None:
        """Forward nothing for ``seconds``, then heal; with ``forget``, every connection open
        meanwhile stays silent forever (see the module docstring)."""
        self._open.clear()
        if forget:
            self._forgetting = True
            self.half_open()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._forgetting = False
            self._open.set()

    def half_open(self) -> int:
        """Make every open connection silent forever (never closed); returns how many."""
        pipes = list(self._pipes)
        for p in pipes:
            p.silent = True
        return len(pipes)

    def heal(self) -> None:
        self.latency_s = 0.0
        self._forgetting = False
        self._open.set()
