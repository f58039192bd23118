"""A real Sentinel deployment on loopback: one primary, one replica and three sentinels, each a
redis-server process (``--sentinel`` for the sentinels), with passwords on the data servers
and on the sentinels. Used by tests/test_sentinel.py.

``Sentinels(tls=True)`` speaks TLS on every server: the data servers replicate over it, the
sentinels watch them and talk to each other over it, and clients must present a certificate
(``tls-auth-clients yes``), all signed by a throwaway authority the fixture makes. Each process
also keeps a plain loopback port for the fixture's own redis-cli calls; what the sentinels name
is the TLS port.

Failover is tuned for tests: a primary unreachable for 1 s is down (``down-after-milliseconds``)
and the quorum is 2 of 3, so killing the primary promotes the replica within a few seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.cluster import make_certs
from tests.conftest import REDIS, RedisServer, free_port

SERVICE = "mymaster"
DATA_PASSWORD = "data-pw"
SENTINEL_PASSWORD = "sentinel-pw"
DOWN_AFTER_MS = 1000


def cli(port: int, password: str, *args: str, timeout: float = 5) -> str:
    """One redis-cli command; its output, stripped ('' when the server cannot be reached)."""
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "--no-auth-warning", "-a", password, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout.strip()


class Sentinels:
    """The deployment; ``url`` names its primary through the sentinels."""

    def __init__(self, tls: bool = False) -> None:
        self.tls = tls
        self.dir = Path(tempfile.mkdtemp(prefix="asyncq-sentinel-"))
        if tls:
            make_certs(self.dir)
        # A data server's port as the sentinels name it (its TLS port under TLS), by plain port.
        self.named: dict[int, int] = {}
        auth = ["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD]
        self.primary: RedisServer | None = self._data_server(*auth)
        self.replica: RedisServer | None = self._data_server(
            *auth, "--replicaof", "127.0.0.1", str(self.port_of(self.primary))
        )
        self.ports: list[int] = []
        self.tls_ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(3):
            self._start_sentinel(i)
        self.wait_ready()

    def _tls_files(self) -> list[tuple[str, str]]:
        d = self.dir
        return [
            ("tls-cert-file", str(d / "server.pem")),
            ("tls-key-file", str(d / "server.key")),
            ("tls-ca-cert-file", str(d / "ca.pem")),
            ("tls-auth-clients", "yes"),
            ("tls-replication", "yes"),
        ]

    def _data_server(self, *args: str) -> RedisServer:
        tls_port = free_port() if self.tls else None
        extra = list(args)
        if tls_port is not None:
            extra += ["--tls-port", str(tls_port)]
            for name, value in self._tls_files():
                extra += [f"--{name}", value]
        server = RedisServer(*extra)
        self.named[server.port] = tls_port or server.port
        return server

    def port_of(self, server: RedisServer) -> int:
        """``server``'s port as the sentinels name it."""
        return self.named[server.port]

    def _start_sentinel(self, i: int) -> None:
        assert self.primary is not None
        port = free_port()
        tls: list[str] = []
        if self.tls:
            tls_port = free_port()
            self.tls_ports.append(tls_port)
            tls = [f"tls-port {tls_port}", *(f"{k} {v}" for k, v in self._tls_files())]
        conf = self.dir / f"sentinel-{i}.conf"
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    *tls,
                    "bind 127.0.0.1",
                    f"dir {self.dir}",
                    f"requirepass {SENTINEL_PASSWORD}",
                    f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.port_of(self.primary)} 2",
                    f"sentinel auth-pass {SERVICE} {DATA_PASSWORD}",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} 10000",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        assert REDIS is not None
        log = open(self.dir / f"sentinel-{i}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([REDIS, str(conf), "--sentinel"], stdout=log, stderr=log)
        log.close()
        self.ports.append(port)
        self.procs.append(proc)

    @property
    def url(self) -> str:
        if self.tls:
            hosts = ",".join(f"127.0.0.1:{p}" for p in self.tls_ports)
            d = self.dir
            # The server certificate serves as the client's too (it names no key usage).
            files = f"&tls_ca={d}/ca.pem&tls_cert={d}/server.pem&tls_key={d}/server.key"
            return (
                f"rediss+sentinel://:{DATA_PASSWORD}@{hosts}/{SERVICE}/0"
                f"?sentinel_password={SENTINEL_PASSWORD}{files}"
            )
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.ports)
        return f"redis+sentinel://:{DATA_PASSWORD}@{hosts}/{SERVICE}/0?sentinel_password={SENTINEL_PASSWORD}"

    def sentinel(self, i: int, *args: str) -> str:
        return cli(self.ports[i], SENTINEL_PASSWORD, *args)

    def named_primary(self, i: int = 0) -> int | None:
        """The primary's port as sentinel ``i`` names it (see ``port_of``)."""
        out = self.sentinel(i, "SENTINEL", "get-master-addr-by-name", SERVICE).split()
        return int(out[1]) if len(out) == 2 else None

    def wait_ready(self, timeout: float = 30) -> None:
        """Until the replica is in sync and every sentinel knows the replica and both other
        sentinels (they find each other through the primary's hello channel, every 2 s): a
        failover needs all of that."""
        assert self.primary is not None and self.replica is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            link = cli(self.replica.port, DATA_PASSWORD, "INFO", "replication")
            infos = [self._master_info(i) for i in range(3)]
            if "master_link_status:up" in link and all(
                info.get("num-slaves") == "1" and info.get("num-other-sentinels") == "2"
                for info in infos
            ):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the sentinel deployment did not come up; see {self.dir}")

    def _master_info(self, i: int) -> dict[str, str]:
        words = self.sentinel(i, "SENTINEL", "master", SERVICE).split("\n")
        return dict(zip(words[::2], words[1::2], strict=False))

    def kill_primary(self) -> int:
        """SIGKILL the primary; returns the port (as named) of the replica that should take
        over."""
        assert self.primary is not None and self.replica is not None
        self.primary.stop()
        self.primary = None
        return self.port_of(self.replica)

    def wait_failover(self, new_port: int, timeout: float = 30) -> float:
        """Seconds until every sentinel names ``new_port`` as the primary."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if all(self.named_primary(i) == new_port for i in range(3)):
                return time.monotonic() - start
            time.sleep(0.1)
        raise RuntimeError("the sentinels did not fail over")

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for server in (self.primary, self.replica):
            if server is not None:
                server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
