"""The hub's reconcile paths, one at a time, against a scripted spoke over real NATS.

Each heartbeat here is built by hand, so each test states exactly what the spoke claims
and checks exactly what the hub orders in reply."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import nats
import pytest
from nats.aio.msg import Msg

from orrery.wire import (
    Assignment,
    Heartbeat,
    HeartbeatAck,
    Kill,
    NodeReport,
    SlicePhase,
    SliceReport,
    Subjects,
    decode,
    decode_order,
    encode,
)
from orrery_hub.main import Hub
from tests.conftest import ADMIN

JOB = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: rec}
spec: {slices: 1, gpusPerSlice: 4, restartPolicy: Slice, command: ["true"]}
"""


class Spoke:
    def __init__(self, nc: nats.NATS, api: httpx.AsyncClient) -> None:
        self.nc = nc
        self.api = api
        self.name = f"s-{uuid.uuid4().hex[:6]}"
        self.subjects = Subjects(self.name)
        self.incarnation = "inc-1"
        self.seq = 0
        self.orders: list[Assignment | Kill] = []
        self.nodes = [
            NodeReport(name="n0", gpu_type="H100", gpus=8, free=list(range(8))),
            NodeReport(name="n1", gpu_type="H100", gpus=8, free=list(range(8))),
        ]

    async def on_order(self, msg: Msg) -> None:
        self.orders.append(decode_order(msg.data))

    async def beat(
        self,
        slices: list[SliceReport] | None = None,
        *,
        lease: float = 1.0,
        nodes: list[NodeReport] | None = None,
    ) -> HeartbeatAck:
        self.seq += 1
        hb = Heartbeat(
            sender=self.name,
            seq=self.seq,
            cluster=self.name,
            incarnation=self.incarnation,
            lease_s=lease,
            nodes=self.nodes if nodes is None else nodes,
            slices=slices or [],
        )
        reply = await self.nc.request(self.subjects.heartbeat, encode(hb), timeout=5)
        return decode(reply.data, HeartbeatAck)

    async def until(self, pred: Callable[[], bool], what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.orders}"
            await asyncio.sleep(0.02)

    def assignments(self) -> list[Assignment]:
        return [o for o in self.orders if isinstance(o, Assignment)]

    def kills(self) -> list[Kill]:
        return [o for o in self.orders if isinstance(o, Kill)]

    async def job(self, job_id: str) -> dict:  # type: ignore[type-arg]
        r = await self.api.get(f"/v1/jobs/{job_id}")
        return r.json()  # type: ignore[no-any-return]

    async def submit(self, text: str = JOB) -> str:
        r = await self.api.post("/v1/jobs", content=text)
        assert r.status_code == 201, r.text
        return r.json()["id"]  # type: ignore[no-any-return]


def running(a: Assignment, phase: SlicePhase = SlicePhase.RUNNING, **kw: object) -> SliceReport:
    return SliceReport(
        job=a.job,
        index=a.index,
        epoch=a.epoch,
        phase=phase,
        node=a.node,
        gpus=a.gpus,
        started_at=time.time(),
        **kw,
    )  # type: ignore[arg-type]


@pytest.fixture
async def spoke(hub: Hub) -> AsyncIterator[Spoke]:
    assert hub.endpoints is not None
    nc = await nats.connect(hub.endpoints.nats_url)
    async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
        s = Spoke(nc, api)
        await nc.subscribe(s.subjects.orders, cb=s.on_order)
        ack = await s.beat()
        assert ack.accepted
        yield s
    await nc.close()


async def test_placement_resend_running_success_and_forget(spoke: Spoke) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    a = spoke.assignments()[0]
    assert (a.job, a.index, a.epoch, len(a.gpus)) == (job_id, 0, 1, 4)
    assert a.node in ("n0", "n1")
    # The spoke never got it (its report lacks it): the hub sends it again.
    await spoke.beat()
    await spoke.until(lambda: len(spoke.assignments()) == 2, "the resend")
    again = spoke.assignments()[1]
    # The same order, freshly signed (its own seq, expiry and signature).
    assert again == a.model_copy(
        update={"seq": again.seq, "expires_at": again.expires_at, "sig": again.sig}
    )
    await spoke.beat([running(a)])
    assert (await spoke.job(job_id))["status"]["phase"] == "Running"
    ack = await spoke.beat([running(a, SlicePhase.SUCCEEDED, exit_code=0, finished_at=time.time())])
    assert [(k.job, k.index, k.epoch) for k in ack.forget] == [(job_id, 0, 1)]
    assert (await spoke.job(job_id))["status"]["phase"] == "Succeeded"


async def test_a_slice_the_hub_never_gave_is_ordered_killed(spoke: Spoke) -> None:
    ghost = SliceReport(
        job="ghost-000000", index=0, epoch=3, phase=SlicePhase.RUNNING, node="n0", gpus=[0]
    )
    await spoke.beat([ghost])
    await spoke.until(lambda: bool(spoke.kills()), "a kill order")
    k = spoke.kills()[0]
    assert (k.job, k.index, k.epoch) == ("ghost-000000", 0, 3)


async def test_a_slice_that_vanishes_in_a_new_incarnation_is_placed_again(spoke: Spoke) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    a = spoke.assignments()[0]
    await spoke.beat([running(a)])
    spoke.incarnation = "inc-2"  # the agent restarted and found nothing of its slice
    await spoke.beat([])
    await spoke.until(lambda: any(x.epoch == 2 for x in spoke.assignments()), "epoch 2")
    job = await spoke.job(job_id)
    assert job["status"]["slices"][0]["epoch"] == 2
    assert job["status"]["slices"][0]["attempts"] == 2
    attempts = (await spoke.api.get(f"/v1/jobs/{job_id}/attempts")).json()
    assert attempts[0]["phase"] == "Lost" and "vanished" in attempts[0]["reason"]


async def test_a_node_gone_past_the_failover_timeout_moves_its_slices(
    spoke: Spoke, hub: Hub
) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    a = spoke.assignments()[0]
    other = "n1" if a.node == "n0" else "n0"
    survivors = [n for n in spoke.nodes if n.name == other]
    await spoke.beat([running(a)])
    gone_at = time.monotonic()
    while not any(x.epoch == 2 for x in spoke.assignments()):
        assert time.monotonic() - gone_at < 10, "the slice did not move"
        await spoke.beat([running(a)], nodes=survivors)
        await asyncio.sleep(0.1)
    assert time.monotonic() - gone_at >= hub.settings.timing.failover_timeout_s - 0.2
    moved = next(x for x in spoke.assignments() if x.epoch == 2)
    assert moved.node == other
    assert any(k.epoch == 1 and k.reason == "node lost" for k in spoke.kills())
    assert (await spoke.job(job_id))["status"]["slices"][0]["node"] == other


async def test_a_spoke_with_an_unsafe_lease_is_refused(spoke: Spoke, hub: Hub) -> None:
    ack = await spoke.beat(lease=hub.settings.timing.failover_timeout_s)
    assert not ack.accepted
    assert ack.reason is not None and "shorter --lease" in ack.reason


async def test_junk_on_report_subjects_is_dropped(spoke: Spoke, hub: Hub) -> None:
    before = hub.metrics.bad_messages._value.get()
    for junk in (
        b"{",
        b'{"kind":"heartbeat"}',
        encode(spoke.assignments()[0]) if spoke.assignments() else b'{"kind":"kill"}',
    ):
        await spoke.nc.publish(spoke.subjects.status, junk)
    other = Subjects("someone-else")
    hb = Heartbeat(sender="x", seq=1, cluster=spoke.name, incarnation="i", lease_s=1, nodes=[])
    await spoke.nc.publish(other.heartbeat, encode(hb))  # subject and body disagree
    await spoke.until(lambda: hub.metrics.bad_messages._value.get() >= before + 4, "4 drops")
    assert (await spoke.beat()).accepted  # and the hub carries on


# ---- issue 10: never twice, never stuck ---------------------------------------------------

FAILING = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: launchfail}
spec: {slices: 1, gpusPerSlice: 4, restartPolicy: Slice, maxRetries: 1, command: ["/no/such"]}
"""


def ended(a: Assignment, phase: SlicePhase, **kw: object) -> SliceReport:
    return running(a, phase, finished_at=time.time(), **kw)


async def keep_beating(
    spoke: Spoke, slices: Callable[[], list[SliceReport]], until: Callable[[], bool], limit: float
) -> float:
    """Heartbeat every 0.1 s (the cluster stays Ready) until ``until()``; returns the time."""
    t0 = time.monotonic()
    while not until():
        assert time.monotonic() - t0 < limit, f"timed out; orders: {spoke.orders}"
        await spoke.beat(slices())
        await asyncio.sleep(0.1)
    return time.monotonic() - t0


async def epoch_of(spoke: Spoke, job_id: str) -> tuple[int, str]:
    sl = (await spoke.job(job_id))["status"]["slices"][0]
    return sl["epoch"], sl["phase"]


async def test_a_new_incarnation_omitting_a_running_slice_holds_it_for_the_lease_bound(
    spoke: Spoke, hub: Hub
) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    a = spoke.assignments()[0]
    await spoke.beat([running(a)])
    bound = hub.settings.timing.fate_bound(1.0)
    spoke.incarnation = "inc-2"  # claims a restart that lost the slice: its fate is unknown
    t0 = time.monotonic()
    await spoke.beat([])
    # A restarted agent answering a kill it never had is no proof either.
    await spoke.beat([ended(a, SlicePhase.KILLED, reason="killed before it started")])
    await spoke.until(lambda: any(x.epoch == 2 for x in spoke.assignments()), "epoch 2")
    waited = time.monotonic() - t0
    assert waited >= bound - 0.05, f"epoch 2 placed {waited:.2f}s after, bound {bound}s"
    attempts = (await spoke.api.get(f"/v1/jobs/{job_id}/attempts")).json()
    assert attempts[0]["phase"] == "Lost" and "vanished" in attempts[0]["reason"]
    job = await spoke.job(job_id)
    assert job["status"]["restarts"] == 0
    events = (await spoke.api.get(f"/v1/jobs/{job_id}/events")).json()
    assert "FateUnknown" in [e["kind"] for e in events]


async def test_held_gpus_stay_taken_and_a_report_of_life_lifts_the_hold(
    spoke: Spoke, hub: Hub
) -> None:
    # A forged (or confused) heartbeat from another incarnation omits the running slice;
    # the real agent keeps reporting it: it keeps running, nothing else starts.
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    a = spoke.assignments()[0]
    await spoke.beat([running(a)])
    spoke.incarnation = "forged"
    await spoke.beat([])
    clusters = (await spoke.api.get("/v1/clusters")).json()["items"]
    mine = next(c for c in clusters if c["name"] == spoke.name)
    assert mine["gpus"]["H100"]["free"] == 12  # the held attempt's 4 GPUs stay taken
    spoke.incarnation = "inc-1"
    bound = hub.settings.timing.fate_bound(1.0)
    t0 = time.monotonic()
    while time.monotonic() - t0 < bound + 1.0:
        await spoke.beat([running(a)])
        await asyncio.sleep(0.1)
    assert [x.epoch for x in spoke.assignments()] == [1]
    assert await epoch_of(spoke, job_id) == (1, "Running")
    attempts = (await spoke.api.get(f"/v1/jobs/{job_id}/attempts")).json()
    assert [(x["epoch"], x["phase"]) for x in attempts] == [(1, "Running")]
    assert attempts[0].get("reason") is None  # the lifted hold left no ending behind


async def test_a_vanished_report_is_held_not_forgotten_until_the_bound(
    spoke: Spoke, hub: Hub
) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    a = spoke.assignments()[0]
    await spoke.beat([running(a)])
    gone = ended(a, SlicePhase.FAILED, reason="vanished: its supervisor died")
    t0 = time.monotonic()
    ack = await spoke.beat([gone])
    assert ack.forget == []  # not recorded as ended: the spoke must keep reporting it
    forgotten: list[object] = []

    async def beat() -> None:
        forgotten.extend((await spoke.beat([gone])).forget)

    while not any(x.epoch == 2 for x in spoke.assignments()):
        assert time.monotonic() - t0 < 10, "epoch 2 never placed"
        await beat()
        await asyncio.sleep(0.1)
    assert time.monotonic() - t0 >= hub.settings.timing.fate_bound(1.0) - 0.05
    await beat()
    await beat()
    assert [(k.job, k.epoch) for k in forgotten] == [(job_id, 1)] * len(forgotten) != []
    job = await spoke.job(job_id)
    assert job["status"]["slices"][0]["attempts"] == 2
    assert job["status"]["restarts"] == 0


async def test_a_launch_failure_counts_against_max_retries(spoke: Spoke) -> None:
    job_id = await spoke.submit(FAILING)
    for epoch in (1, 2):
        await spoke.until(lambda e=epoch: any(x.epoch == e for x in spoke.assignments()), "epoch")
        a = next(x for x in spoke.assignments() if x.epoch == epoch)
        await spoke.beat(
            [
                ended(
                    a,
                    SlicePhase.FAILED,
                    exit_code=127,
                    reason="launch failed: cannot exec '/no/such': No such file or directory",
                    cause="workload",
                )
            ]
        )
    deadline = time.monotonic() + 5
    while (job := await spoke.job(job_id))["status"]["phase"] != "Failed":
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
    assert "failed 2 times (maxRetries 1)" in job["status"]["reason"]
    assert [x.epoch for x in spoke.assignments() if x.job == job_id] == [1, 2]


@pytest.mark.parametrize(
    ("phase", "reason", "cause", "platform"),
    [
        ("Failed", "exit 1", "workload", False),
        ("Failed", "launch failed: cannot exec", "workload", False),
        ("Failed", "vanished: its supervisor died", "workload", False),  # the spoke knows
        ("Failed", "cannot create Job: 500", "platform", True),
        ("Killed", "preempted", "platform", True),
        # A spoke one version behind sends no cause: the phase and reason prefix decide.
        ("Failed", "vanished: its supervisor died", None, True),
        ("Failed", "gpus busy: n0", None, True),
        ("Failed", None, None, False),
        ("Killed", None, None, True),
        ("Lost", "cluster lost", None, True),
    ],
)
def test_which_endings_use_a_retry(
    phase: str, reason: str | None, cause: str | None, platform: bool
) -> None:
    from orrery_hub.reconcile import platform_failure

    assert platform_failure(phase, reason, cause) is platform


def test_which_terminal_reports_prove_an_end() -> None:
    from orrery_hub.reconcile import settles
    from orrery_hub.store.models import AttemptRow

    seen = AttemptRow(
        job_id="j", index=0, epoch=1, cluster="c", node="n0", assigned_at=0, seen_by="inc-1"
    )
    never = seen.model_copy(update={"seen_by": None})

    def r(phase: SlicePhase, reason: str | None = None, code: int | None = None) -> SliceReport:
        return SliceReport(job="j", index=0, epoch=1, phase=phase, reason=reason, exit_code=code)

    assert settles(r(SlicePhase.SUCCEEDED, code=0), seen, "inc-2")
    assert settles(r(SlicePhase.FAILED, "exit", 1), seen, "inc-2")  # its exit record
    assert settles(r(SlicePhase.KILLED, "lease lapsed"), seen, "inc-1")
    assert not settles(r(SlicePhase.FAILED, "vanished: its supervisor died"), seen, "inc-1")
    assert not settles(r(SlicePhase.KILLED, "killed before it started"), seen, "inc-2")
    assert settles(r(SlicePhase.KILLED, "killed before it started"), never, "inc-2")


async def test_an_assignment_never_confirmed_is_fenced_and_placed_again(
    spoke: Spoke, hub: Hub
) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    t = hub.settings.timing
    # The spoke never gets it (say the message is too large to deliver): it lists nothing.
    took = await keep_beating(
        spoke, list, lambda: any(x.epoch == 2 for x in spoke.assignments()), limit=15
    )
    assert took >= t.assign_timeout - 0.1
    fence = [k for k in spoke.kills() if k.epoch == 1]
    assert fence and fence[0].reason == "assignment timed out"
    first_kill = spoke.orders.index(fence[0])
    assert not any(  # never resent once fenced
        isinstance(o, Assignment) and o.epoch == 1 for o in spoke.orders[first_kill:]
    )
    job = await spoke.job(job_id)
    assert job["status"]["restarts"] == 0
    attempts = (await spoke.api.get(f"/v1/jobs/{job_id}/attempts")).json()
    assert attempts[0]["phase"] in ("Lost", "Killed")
    assert "not confirmed" in attempts[0]["reason"] or "killed" in attempts[0]["reason"]


async def test_a_fenced_assignment_answered_by_the_spoke_is_placed_again_at_once(
    spoke: Spoke, hub: Hub
) -> None:
    job_id = await spoke.submit()
    await spoke.until(lambda: len(spoke.assignments()) == 1, "an assignment")
    await keep_beating(spoke, list, lambda: bool(spoke.kills()), limit=10)
    k = spoke.kills()[0]
    a = spoke.assignments()[0]
    answer = ended(a, SlicePhase.KILLED, reason="killed before it started", cause="platform")
    await keep_beating(
        spoke, lambda: [answer], lambda: any(x.epoch == 2 for x in spoke.assignments()), limit=10
    )
    assert (k.epoch, k.reason) == (1, "assignment timed out")
    # Closed by the spoke's answer (Killed), not by the hold running out (Lost).
    attempts = (await spoke.api.get(f"/v1/jobs/{job_id}/attempts")).json()
    assert (attempts[0]["epoch"], attempts[0]["phase"]) == (1, "Killed")
    assert (await spoke.job(job_id))["status"]["restarts"] == 0


PREEMPTIBLE = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: %s}
spec: {slices: 2, gpusPerSlice: 8, priority: %d, restartPolicy: Gang, command: ["true"]}
"""


async def test_a_lost_preemption_kill_is_resent_from_heartbeats(tmp_path, nats_server) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from orrery_hub.config.settings import HubSettings
    from tests.conftest import ADMIN_TOKEN, FAST, running_hub

    settings = HubSettings(
        state_dir=tmp_path / "hub",
        nats_url=nats_server.url,
        port=0,
        timing=FAST,
        insecure=True,
        admin_token=ADMIN_TOKEN,
        scheduling=replace(HubSettings(tmp_path).scheduling, min_run_s=0.0, grace_s=5.0),
    )
    async with running_hub(settings) as hub:
        assert hub.endpoints is not None
        nc = await nats.connect(hub.endpoints.nats_url)
        async with httpx.AsyncClient(base_url=hub.endpoints.api_url, headers=ADMIN) as api:
            s = Spoke(nc, api)
            await nc.subscribe(s.subjects.orders, cb=s.on_order)
            await s.beat()
            low = await s.submit(PREEMPTIBLE % ("low", 0))
            await s.until(lambda: len(s.assignments()) == 2, "the low job placed")
            mine = list(s.assignments())
            await s.beat([running(x) for x in mine])
            high = await s.submit(PREEMPTIBLE % ("high", 100))
            await s.until(lambda: bool(s.kills()), "a preemption kill")
            # The spoke never got it: it keeps reporting both slices running.
            await keep_beating(
                s, lambda: [running(x) for x in mine], lambda: len(s.kills()) >= 6, limit=10
            )
            assert {(k.job, k.epoch) for k in s.kills()} == {(low, 1)}
            assert all(k.reason.startswith("preempted") and k.grace_s == 5.0 for k in s.kills())
            # Once they stop, the preemptor is placed.
            stopped = [
                ended(x, SlicePhase.KILLED, reason="preempted", cause="platform") for x in mine
            ]
            await keep_beating(
                s, lambda: stopped, lambda: any(x.job == high for x in s.assignments()), limit=10
            )
            assert (await s.job(low))["status"]["restarts"] == 0
        await nc.close()
