"""The in-memory job database stays what the store says, whatever happens to the jobs.

After each step of a job's life — admitted (single and batch), placed, running, failed
and requeued, cancelled, succeeded — the hub's ``JobDb`` equals one rebuilt from the
store right then."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from orrery.natsserver import NatsServer
from orrery.wire import SlicePhase
from orrery_hub.apply.jobdb import JobDb, JobEntry
from orrery_hub.config.settings import HubSettings
from orrery_hub.main import Hub
from tests.conftest import ADMIN_TOKEN, FAST, running_hub
from tests.hub.test_reconcile import JOB, Spoke, running, spoke  # noqa: F401  (a fixture)


@pytest.fixture
async def hub(tmp_path: Path, nats_server: NatsServer) -> AsyncIterator[Hub]:
    # The scripted spoke beats only when a step says so: with the suite's 2 s failover a
    # loaded machine lost the cluster between two steps and nothing was placed. Nothing
    # here is about failover, so the cluster may stay silent for a minute.
    settings = HubSettings(
        state_dir=tmp_path / "hub",
        nats_url=nats_server.url,
        port=0,
        timing=dataclasses.replace(FAST, failover_timeout_s=60.0),
        backoff_base_s=0.05,
        backoff_max_s=0.2,
        insecure=True,
        admin_token=ADMIN_TOKEN,
    )
    async with running_hub(settings) as h:
        yield h

GANG = JOB.replace("restartPolicy: Slice", "restartPolicy: Gang, slices: 2").replace(
    "slices: 1, ", ""
)


async def rebuilt(hub: Hub) -> dict[str, JobEntry]:
    fresh = JobDb()
    fresh.apply(await hub.store.tx(fresh.load))
    return fresh.jobs


async def in_step(hub: Hub) -> None:
    want = await rebuilt(hub)
    assert hub.jobdb.jobs == want
    assert hub.jobdb.holding == {j: e for j, e in want.items() if e.attempts}


async def test_the_job_database_follows_every_commit(hub: Hub, spoke: Spoke) -> None:  # noqa: F811
    await in_step(hub)
    one = await spoke.submit()
    r = await spoke.api.post("/v1/jobs:batch", content="\n---\n".join([JOB, GANG, JOB]))
    batch = [i["job"]["id"] for i in r.json()["items"]]
    await spoke.until(lambda: len(spoke.assignments()) >= 2, "assignments")
    await hub.reconcile_once()
    await in_step(hub)
    assert one in hub.jobdb.jobs and all(j in hub.jobdb.jobs for j in batch)

    a = spoke.assignments()[0]
    await spoke.beat([running(a)])
    await in_step(hub)
    # A workload failure: the slice is requeued at the next epoch, after a backoff.
    failed = running(a, SlicePhase.FAILED, exit_code=3, finished_at=time.time(), cause="workload")
    await spoke.beat([failed])
    await in_step(hub)
    entry = hub.jobdb.jobs[a.job]
    assert [s.epoch for s in entry.slices] == [a.epoch + 1] and not entry.attempts

    cancelled = next(j for j in [one, *batch] if j != a.job)
    assert (await spoke.api.delete(f"/v1/jobs/{cancelled}")).status_code == 200
    await in_step(hub)

    await spoke.until(lambda: len(spoke.assignments()) >= 3, "the requeued slice placed")
    await hub.reconcile_once()
    b = spoke.assignments()[-1]
    done = running(b, SlicePhase.SUCCEEDED, exit_code=0, finished_at=time.time())
    await spoke.beat([running(b)])
    await spoke.beat([done])
    await hub.reconcile_once()
    await in_step(hub)
    if (await spoke.job(b.job))["status"]["phase"] == "Succeeded":
        assert b.job not in hub.jobdb.jobs  # neither waiting nor holding anything
