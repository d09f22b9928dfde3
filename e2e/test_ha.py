"""No single point of failure, end to end, with real processes on PostgreSQL: two hubs (one
leads by a lease), three clustered nats-servers (TLS, per-cluster users), three spokes.

While jobs are submitted in a steady stream and long slices run, the leader hub is
SIGKILLed: the standby leads within the spokes' lease, no accepted submission is lost, no
slice restarts, nothing runs twice (each slice creates a marker file exclusively: a second
run of it fails its job), and the CLI keeps working against either hub. Then a nats-server
is SIGKILLed: nothing is lost. Then the old leader comes back: it stands by and cannot
write.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tests.conftest import scratch_pg

from e2e.conftest import WORKLOAD, assert_never_twice, spokes
from orrery.client import HubClient
from orrery.errors import OrreryError
from orrery.federation import Federation, Timings

pytestmark = pytest.mark.e2e

# The spokes' lease (5 s) outlasts a handover: the leader lease (2 s), a standby's poll
# (a third of it) and the new leader's first heartbeat reply, with room for a loaded machine.
TIMINGS = Timings(
    heartbeat_s=0.25, lease_s=5.0, failover_s=7.0, kill_grace_s=0.5, backoff_s=0.1, reconcile_s=0.25
)
LEADER_LEASE_S = 2.0


def job(name: str, out: Path, *, slices: int, steps: int) -> str:
    run = ["--once-marker", "--steps", str(steps), "--step-time", "0.1", "--checkpoint-every", "5"]
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "slices": slices,
                "gpusPerSlice": 1,
                "restartPolicy": "Gang",
                "command": [sys.executable, str(WORKLOAD), "--out", str(out), *run],
            },
        }
    )


class Stream:
    """Submits a short job every ``every`` seconds through a client of both hubs; keeps
    the id of every submission the hubs accepted (a 201), and what went wrong otherwise."""

    def __init__(self, fed: Federation, outs: Path, every: float = 0.5) -> None:
        self.fed, self.outs, self.every = fed, outs, every
        self.accepted: dict[str, Path] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        with self.fed.client() as c:
            while not self._stop.wait(self.every):
                n += 1
                out = self.outs / f"s{n}"
                try:
                    self.accepted[c.submit(job(f"s{n}", out, slices=1, steps=15)).id] = out
                except OrreryError as exc:  # a submission in flight when its hub died
                    self.errors.append(exc.message)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def cli(*args: str, hub: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orrery.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "ORRERY_CONFIG": os.devnull,
            "ORRERY_HUB": hub,
            "ORRERY_TOKEN": token,
            "COLUMNS": "200",
        },
    )


def test_leader_hub_and_a_nats_server_sigkilled_lose_nothing_and_restart_nothing(
    tmp_path: Path,
) -> None:
    with scratch_pg() as db:
        fed = Federation(
            tmp_path / "fed",
            spokes=spokes("eu-west", "us-east", "ap-south"),
            timings=TIMINGS,
            hubs=2,
            nats_servers=3,
            db_url=db,
            leader_lease_s=LEADER_LEASE_S,
        )
        try:
            fed.start()
            _scenario(fed, tmp_path)
        finally:
            fed.stop()


def _scenario(fed: Federation, tmp: Path) -> None:
    assert fed.role(0) == "leader" and fed.role(1) == "standby"
    hub0, hub1 = fed.api_urls[0], fed.api_urls[1]
    long_out = tmp / "long"
    with fed.client() as c, Stream(fed, tmp / "stream") as stream:
        # Long slices that run through every fault below.
        long = c.submit(job("long", long_out, slices=2, steps=250))
        deadline = time.monotonic() + 60
        while not all(s.phase == "Running" for s in c.job(long.id).status.slices):
            assert time.monotonic() < deadline, c.job(long.id)
            time.sleep(0.1)
        time.sleep(2)  # a few stream jobs in flight

        # 1. SIGKILL the leader hub: the standby leads within the spokes' lease.
        fed.kill_hub(0)
        t0 = time.monotonic()
        assert fed.wait_leader(1, timeout=30) == 1
        handover = time.monotonic() - t0
        assert handover < TIMINGS.lease_s, f"the standby took {handover:.1f}s to lead"

        # The CLI works against the new leader, and against both URLs with the dead one first.
        for hubs in (hub1, f"{hub0},{hub1}"):
            p = cli("jobs", hub=hubs, token=fed.admin_token)
            assert p.returncode == 0, p.stderr
            assert "long" in p.stdout
        f = tmp / "cli-job.yaml"
        f.write_text(job("by-cli", tmp / "cli-out", slices=1, steps=5))
        p = cli("submit", str(f), "--wait", hub=f"{hub0},{hub1}", token=fed.admin_token)
        assert p.returncode == 0, p.stdout + p.stderr
        time.sleep(2)

        # 2. SIGKILL a nats-server (the one every client lists first): nothing is lost.
        fed.nats_servers[0].kill()
        time.sleep(3)

        # 3. The old leader comes back: it stands by, and refuses writes naming the leader.
        fed.start_hub(0)
        assert fed.role(0) == "standby"
        r = httpx.post(
            f"{hub0}/v1/jobs",
            content=job("refused", tmp / "refused", slices=1, steps=1),
            headers={
                "content-type": "application/yaml",
                "authorization": f"Bearer {fed.admin_token}",
            },
        )
        assert r.status_code == 503, r.text
        assert r.headers["x-orrery-leader"] == hub1
        # It serves reads, from the shared database.
        with HubClient(hub0, token=fed.admin_token) as standby:
            assert long.id in {j.id for j in standby.jobs()}
        time.sleep(2)

    assert stream.accepted, stream.errors
    assert len(stream.errors) <= 2, stream.errors  # at most the requests cut by the SIGKILL
    with fed.client() as c:
        # Every accepted submission is there, and succeeds, each slice run exactly once.
        listed = {j.id for j in c.jobs()}
        assert set(stream.accepted) <= listed, set(stream.accepted) - listed
        assert "refused" not in {j.metadata["name"] for j in c.jobs()}
        for job_id in [*stream.accepted, long.id]:
            deadline = time.monotonic() + 120
            while not (j := c.job(job_id)).final:
                assert time.monotonic() < deadline, j
                time.sleep(0.2)
            assert j.status.phase == "Succeeded", (j.metadata["name"], j.status.reason)
            attempts = c.attempts(job_id)
            assert {a.epoch for a in attempts} == {1}, (j.metadata["name"], attempts)
    for out in [*stream.accepted.values(), long_out]:
        assert_never_twice(out)
