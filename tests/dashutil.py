"""Helpers shared by the dashboard tests."""

from __future__ import annotations

import threading

import uvicorn
from starlette.applications import Starlette

from tests.conftest import free_port
from tests.procutil import wait_until


class Served:
    """A dashboard served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app: Starlette) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 15, "uvicorn to start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
