"""No value a peer or a workload chooses can crash the agent or make it crash-loop: reasons
are clipped wherever they are built, numbers are fitted to the wire, and state on disk that
no longer loads is quarantined rather than fatal."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from orrery.natsserver import NatsServer
from orrery.wire import SlicePhase, decode
from orrery.wire.messages import MAX_REASON, Heartbeat
from orrery_spoke_agent.executor import Outcome
from orrery_spoke_agent.executor.fake import FakeExecutor
from orrery_spoke_agent.executor.local import LocalExecutor
from tests.spoke.test_agent import assign, setup


class HostileExecutor(FakeExecutor):
    """Ends slices with what a hostile workload could write into its exit record."""

    def end(self, key: object, outcome: Outcome) -> None:
        fut = self._future(self._k(key))  # type: ignore[arg-type]
        if not fut.done():
            fut.set_result(outcome)


async def test_absurd_outcomes_never_stop_the_heartbeat(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    ex = HostileExecutor()
    async with setup(nats_server, tmp_path, executor=ex) as (hub, agent, _):
        for i, (code, reason) in enumerate(
            [(2**70, "x" * 10_000), (-(2**80), "9" * 2100), (3, "ok")]
        ):
            a = assign(job=f"j{i}", gpus=[i])
            await hub.order(a)
            await hub.until(lambda a=a: a in ex.launched, "launched")
            ex.end(a.key, Outcome(exit_code=code, reason=reason, finished_at=time.time()))
        n = len(hub.heartbeats)
        await hub.until(lambda: len(hub.heartbeats) > n + 3, "heartbeats go on")
        reported = {s.job: s for s in hub.heartbeats[-1].slices}
        assert set(reported) == {"j0", "j1", "j2"}
        for s in reported.values():
            assert s.phase == SlicePhase.FAILED
            assert s.reason is not None and len(s.reason) <= MAX_REASON
        assert reported["j2"].exit_code == 3 and reported["j2"].reason == "ok"
        assert agent.heartbeat_ok.is_set()


async def test_an_epoch_of_2100_digits_never_reaches_the_agent(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with setup(nats_server, tmp_path) as (hub, agent, ex):
        first = assign(job="j")
        await hub.order(first)
        await hub.until(lambda: len(ex.launched) == 1, "the first epoch starts")
        raw = json.loads(first.model_dump_json())
        raw["epoch"] = int("9" * 2100)
        import sys

        sys.set_int_max_str_digits(10_000)
        try:
            payload = json.dumps(raw).encode()
        finally:
            sys.set_int_max_str_digits(4300)
        await hub.nc.publish(hub.subjects.orders, payload)
        await hub.nc.flush()
        n = len(hub.heartbeats)
        await hub.until(lambda: len(hub.heartbeats) > n + 3, "heartbeats go on")
        assert ex.terminated == []  # the running epoch is not "superseded"
        assert [s.phase for s in hub.heartbeats[-1].slices] == [SlicePhase.RUNNING]


async def test_unloadable_attempt_state_is_quarantined(tmp_path: Path) -> None:
    folder = tmp_path / "slices" / "j" / "0" / "1"
    folder.mkdir(parents=True)
    (folder / "assignment.json").write_text('{"epoch": 100000000000000000000000}')
    good_dir = tmp_path / "slices" / "k" / "0" / "1"
    good_dir.mkdir(parents=True)
    a = assign(job="k")
    (good_dir / "assignment.json").write_text(a.model_dump_json())
    (good_dir / "exit.json").write_text('{"code": "not a number", "finished_at": []}')
    found = await LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.2).discover()
    assert [f.assignment.job for f in found] == ["k"]
    assert found[0].outcome is not None and found[0].outcome.exit_code is None
    assert not (folder / "assignment.json").exists()
    assert (folder / "assignment.json.quarantined").exists()
    # A second start finds nothing to trip on.
    again = await LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.2).discover()
    assert [f.assignment.job for f in again] == ["k"]


def test_heartbeats_with_clipped_values_decode() -> None:
    hb = Heartbeat(sender="s", seq=2**63 - 1, cluster="c", incarnation="i", lease_s=1.0)
    assert decode(hb.model_dump_json().encode(), Heartbeat).seq == 2**63 - 1


_ = asyncio
