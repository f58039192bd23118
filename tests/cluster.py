"""A real Redis Cluster on loopback: three primaries and three replicas, each a redis-server
process with ``--cluster-enabled yes``, joined by ``redis-cli --cluster create``.

``make test-cluster`` runs the behaviour suites on it (``ASYNCQ_TEST_CLUSTER=1`` makes the
``broker_url`` fixture's Redis case a ``redis+cluster://`` URL); tests/test_cluster.py adds what
only a cluster has (slots on several nodes, a primary killed, a slot migration).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# As in conftest: ASYNCQ_TEST_SERVER runs another server binary (valkey-server).
REDIS = shutil.which(os.environ.get("ASYNCQ_TEST_SERVER", "redis-server"))

# A node listens on its port and on port + 10000 (the cluster bus): both must be free.
BUS_OFFSET = 10000


def slot_of(key: str) -> int:
    """The cluster slot of ``key`` (CRC16/XMODEM of its hash tag, as CLUSTER KEYSLOT)."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc % 16384


def cluster_port(taken: set[int]) -> int:
    """A free port below 55536 whose bus port is free too."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + BUS_OFFSET > 65535 or port in taken or port + BUS_OFFSET in taken:
            # Ephemeral ports are mostly too high: pick one of the low range instead.
            port = 20000 + (port % 20000)
        if port in taken or port + BUS_OFFSET in taken:
            continue
        if all(_free(p) for p in (port, port + BUS_OFFSET)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def make_certs(into: Path) -> None:
    """A throwaway authority (``ca.pem``) and a certificate it signed for 127.0.0.1
    (``server.pem``, ``server.key``), made with the ``openssl`` command."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=into, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    (into / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n", encoding="utf-8")
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=asyncq test CA",
    )
    run("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=asyncq node")
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )


# Set by a TLS cluster (RedisCluster(tls=True)) for the redis-cli calls made on it.
_TLS_ARGS: dict[int, list[str]] = {}


def cli(port: int, *args: str, timeout: float = 10) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *_TLS_ARGS.get(port, []), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout.strip()


class RedisCluster:
    """Six nodes; ``url`` names three of them as seeds."""

    def __init__(self, primaries: int = 3, replicas: int = 1, tls: bool = False) -> None:
        if REDIS is None:
            raise RuntimeError("redis-server is not installed")
        self.dir = Path(tempfile.mkdtemp(prefix="asyncq-cluster-"))
        self.tls = tls
        if tls:  # every connection, the cluster bus and replication over TLS
            make_certs(self.dir)
        self.ports: list[int] = []
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        taken: set[int] = set()
        for _ in range(primaries * (1 + replicas)):
            for _attempt in range(4):
                port = cluster_port(taken)
                taken |= {port, port + BUS_OFFSET}
                self.start(port)
                if self._wait_up(port):
                    self.ports.append(port)
                    break
                self.procs.pop(port).wait()  # its port was taken meanwhile: another one
            else:
                self.stop()
                raise RuntimeError(f"cluster nodes would not start; see {self.dir}")
        if primaries < 3:  # redis-cli --cluster create wants three: join them by hand
            self._join_by_hand(primaries, replicas)
            return
        out = subprocess.run(
            [
                "redis-cli",
                *self.tls_args,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        self.wait_ok()
        if replicas:
            self.wait_synced()

    def _join_by_hand(self, primaries: int, replicas: int) -> None:
        """One or two primaries without replicas (benchmarks): slots split evenly."""
        if replicas:
            self.stop()
            raise ValueError("fewer than three primaries: no replicas")
        step = 16384 // primaries
        for i, port in enumerate(self.ports):
            last = 16383 if i == primaries - 1 else (i + 1) * step - 1
            cli(port, "CLUSTER", "ADDSLOTSRANGE", str(i * step), str(last))
            if i:
                cli(port, "CLUSTER", "MEET", "127.0.0.1", str(self.ports[0]))
        self.wait_ok()

    @property
    def tls_args(self) -> list[str]:
        return ["--tls", "--cacert", str(self.dir / "ca.pem")] if self.tls else []

    def start(self, port: int) -> None:
        assert REDIS is not None
        listen = ["--port", str(port)]
        if self.tls:
            d = self.dir
            listen = [
                "--port",
                "0",
                "--tls-port",
                str(port),
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
                "--tls-cert-file",
                str(d / "server.pem"),
                "--tls-key-file",
                str(d / "server.key"),
                "--tls-ca-cert-file",
                str(d / "ca.pem"),
                "--tls-auth-clients",
                "no",
            ]
            _TLS_ARGS[port] = self.tls_args
        node_dir = self.dir / str(port)
        node_dir.mkdir(exist_ok=True)
        log = open(node_dir / "log", "ab")  # noqa: SIM115 (the process holds it)
        self.procs[port] = subprocess.Popen(
            [
                REDIS,
                *listen,
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                # A node alone (a one-primary benchmark cluster) knows its address only when
                # told: otherwise CLUSTER SLOTS names it "".
                "--cluster-announce-ip",
                "127.0.0.1",
                # A primary silent for 2 s is failed over to its replica.
                "--cluster-node-timeout",
                "2000",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(node_dir),
            ],
            stdout=log,
            stderr=log,
        )
        log.close()

    def _wait_up(self, port: int, timeout: float = 10) -> bool:
        """Whether the node came up (False: it exited, its port was taken)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[port].poll() is not None:
                return False
            if self.tls:
                if cli(port, "PING") == "PONG":
                    return self.procs[port].poll() is None
                time.sleep(0.05)
                continue
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    time.sleep(0.02)  # a failed bind of the bus port exits at once
                    return self.procs[port].poll() is None
            time.sleep(0.05)
        raise RuntimeError(f"cluster node {port} did not start; see {self.dir}")

    @property
    def live_ports(self) -> list[int]:
        return [p for p in self.ports if p in self.procs]

    @property
    def url(self) -> str:
        seeds = ",".join(f"127.0.0.1:{p}" for p in self.live_ports[:3])
        if self.tls:
            return f"rediss+cluster://{seeds}/?tls_ca={self.dir / 'ca.pem'}"
        return f"redis+cluster://{seeds}/"

    def primaries(self) -> list[int]:
        """Ports of the primaries that serve slots now."""
        out = cli(self.live_ports[0], "CLUSTER", "NODES")
        ports = []
        for line in out.splitlines():
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2] and len(parts) > 8:
                ports.append(int(parts[1].split("@")[0].rsplit(":", 1)[1]))
        return sorted(ports)

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node reports ``cluster_state:ok`` and agrees on the slots."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [cli(p, "CLUSTER", "INFO") for p in self.live_ports]
            if all("cluster_state:ok" in i and "cluster_slots_ok:16384" in i for i in infos):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster did not come up; see {self.dir}")

    def wait_synced(self, timeout: float = 30) -> None:
        """Until every replica's link to its primary is up (a WAIT counts only those)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [cli(p, "INFO", "replication") for p in self.live_ports]
            replicas = [i for i in infos if "role:slave" in i]
            if replicas and all("master_link_status:up" in i for i in replicas):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the cluster's replicas did not sync; see {self.dir}")

    def slots_of(self, port: int) -> list[tuple[int, int]]:
        """The slot ranges the primary at ``port`` serves."""
        line = next(ln for ln in cli(port, "CLUSTER", "NODES").splitlines() if "myself" in ln)
        ranges = []
        for part in line.split()[8:]:
            if part.startswith("["):
                continue  # a slot being migrated
            first, _, last = part.partition("-")
            ranges.append((int(first), int(last or first)))
        return sorted(ranges)

    def replica_of(self, port: int) -> int:
        """The port of a replica of the primary at ``port``."""
        primary = cli(port, "CLUSTER", "MYID")
        for line in cli(port, "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "slave" in parts[2] and parts[3] == primary:
                return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        raise RuntimeError(f"{port} has no replica")

    def kill(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for port in self.ports:
            _TLS_ARGS.pop(port, None)
        for proc in self.procs.values():
            proc.kill()
            proc.wait()
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
