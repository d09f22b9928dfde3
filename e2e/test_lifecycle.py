"""Never twice, never stuck (issue 10), end to end with real processes.

- A heartbeat from a "new incarnation" of a spoke that omits a running slice (forged here,
  with the spoke's own credentials from its state folder) used to close the attempt at
  once: the next epoch started elsewhere while the first still ran (two epochs overlapped
  for 522 ms). Now the attempt's fate is unknown, it is held for lease + kill grace +
  drift, and the real agent's next report lifts the hold.
- ``command: [/no/such/trainer]`` with ``maxRetries: 1`` used to make 254 attempts in 20 s
  (the supervisor died before writing an exit record, read as a platform failure). Now the
  launch failure is the workload's: 2 attempts, then Failed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from e2e.conftest import TIMINGS, assert_never_twice, final, manifest, spokes, wait_for
from orrery.clusterid import SpokeIdentity, inbox_prefix
from orrery.wire import Heartbeat, HeartbeatAck, Subjects, decode, encode

pytestmark = pytest.mark.e2e


async def _forge(
    nats_url: str, cluster: str, state: Path, *, times: int, every: float
) -> list[bool]:
    """Heartbeats claiming ``cluster`` restarted and runs nothing: sent with the spoke's own
    credentials (from its state folder) where it enrolled, else on the plain NATS."""
    identity = SpokeIdentity.under(state)
    secure: dict[str, Any] = {}
    if identity.exists():
        secure = {"tls": identity.ssl_context(), "inbox_prefix": inbox_prefix(cluster)}
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0, **secure)
    accepted = []
    try:
        for i in range(times):
            hb = Heartbeat(
                sender=f"spoke/{cluster}",
                seq=10**6 + i,
                cluster=cluster,
                incarnation="forged",
                lease_s=TIMINGS.lease_s,
                nodes=[],
                slices=[],
            )
            reply = await nc.request(Subjects(cluster).heartbeat, encode(hb), timeout=2)
            accepted.append(decode(reply.data, HeartbeatAck).accepted)
            await asyncio.sleep(every)
    finally:
        await nc.close()
    return accepted


def test_a_forged_new_incarnation_heartbeat_never_starts_a_second_epoch(  # type: ignore[no-untyped-def]
    federation, tmp_path: Path
) -> None:
    fed = federation(spokes("eu-west", "us-east"))
    out = tmp_path / "out"
    run = ["--steps", "60", "--step-time", "0.1", "--checkpoint-every", "5"]
    with fed.client() as c:
        job = c.submit(manifest("forged", out, slices=1, args=run))
        j = wait_for(c, job.id, lambda j: j.status.phase == "Running", 30, "Running")
        cluster = j.status.slices[0].cluster
        assert cluster is not None and fed.nats is not None
        wait_for(c, job.id, lambda j: (j.status.checkpoint_step or 0) >= 4, 30, "progress")
        # Several forged beats, spread over more than the hold (lease + grace + drift).
        spoke_state = fed.state / "spokes" / cluster
        accepted = asyncio.run(_forge(fed.nats.url, cluster, spoke_state, times=12, every=0.3))
        done = final(c, job.id, timeout=60)
        attempts = c.attempts(job.id)
        events = [e.kind for e in c.events(job.id)]
    assert all(accepted)  # the hub took them for the spoke's own
    assert "FateUnknown" in events
    assert done.status.phase == "Succeeded", done.status.reason
    assert [(a.epoch, a.phase) for a in attempts] == [(1, "Succeeded")]
    assert_never_twice(out)


def test_a_command_that_cannot_exec_fails_after_max_retries(  # type: ignore[no-untyped-def]
    federation,
) -> None:
    fed = federation(spokes("eu-west"))
    text = yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": "noexec"},
            "spec": {
                "gpusPerSlice": 1,
                "restartPolicy": "Slice",
                "maxRetries": 1,
                "command": ["/no/such/trainer"],
            },
        }
    )
    t0 = time.monotonic()
    with fed.client() as c:
        job = c.submit(text)
        done = final(c, job.id, timeout=30)
        attempts = c.attempts(job.id)
    assert done.status.phase == "Failed"
    assert done.status.reason is not None and "maxRetries 1" in done.status.reason
    assert len(attempts) == 2, [(a.epoch, a.phase, a.reason) for a in attempts]
    assert all(a.exit_code == 127 for a in attempts)
    assert all("launch failed" in (a.reason or "") for a in attempts)
    assert time.monotonic() - t0 < 30
