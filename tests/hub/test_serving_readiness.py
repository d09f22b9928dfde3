"""``serving.readiness``: when the hub counts a replica ready, as a table."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from orrery.service_resources import GatewayReport, ReplicaLoad, ServiceLoad
from orrery_hub.gateway.hublink import REQUEST_TIMEOUT_S
from orrery_hub.serving.controller import Endpoint, ServiceController, ServiceState
from orrery_hub.serving.readiness import READY_FRESH_S, counted_ready
from orrery_hub.serving.rows import ServiceRow


@pytest.mark.parametrize(
    ("endpoint", "seen_ago", "gateways", "ready"),
    [
        (False, 0.0, True, False),  # no endpoint: never, whatever a gateway said
        (True, None, False, True),  # no gateway at all: running with an endpoint is enough
        (True, None, True, False),  # gateways, none found it ready
        (True, 0.1, True, True),
        # One exchange unanswered holds a gateway's next report for its whole request
        # timeout: the "ready" before it still counts (5 s, the old window, did not).
        (True, REQUEST_TIMEOUT_S + 0.5, True, True),
        (True, READY_FRESH_S + 0.1, True, False),  # silent past the window: not ready
        # No gateway heard from lately (all forgotten): what one said long ago is no news.
        (True, READY_FRESH_S + 0.1, False, True),
    ],
)
def test_a_replica_is_counted_ready(
    endpoint: bool, seen_ago: float | None, gateways: bool, ready: bool
) -> None:
    now = 1000.0
    seen = None if seen_ago is None else now - seen_ago
    assert counted_ready(endpoint, seen, gateways, now) is ready


# ---- the controller's judgement over time --------------------------------------------------


@dataclass
class _Job:
    status: Any


@dataclass
class _Hub:
    inventory: Any = field(default_factory=lambda: SimpleNamespace(clusters={}))

    async def get_job(self, job_id: str) -> Any:
        return _Job(SimpleNamespace(phase="Running", slices=[]))


def _report_on(t: float, ctl: ServiceController, ready: dict[str, bool]) -> None:
    """One gateway report on service "chat" listing these replicas (job -> ready)."""
    reps = [ReplicaLoad(job=j, concurrency=0.0, requests=0, ready=r) for j, r in ready.items()]
    load = ServiceLoad(name="chat", concurrency=0.0, requests=0, replicas=reps)
    ctl.gateway_report(GatewayReport(gateway="gw", interval_s=0.5, services=[load]), t)


def _report(t: float, ctl: ServiceController, ready: bool) -> None:
    _report_on(t, ctl, {"chat-r0": ready})


def _judge(ctl: ServiceController, now: float, jobs: list[str]) -> dict[str, bool]:
    """The controller's judgement of these replicas (all running) at ``now``."""
    row = ServiceRow(
        name="chat",
        manifest={},
        template="t",
        created_at=0.0,
        replicas=[{"index": i, "job": j, "template": "t"} for i, j in enumerate(jobs)],
    )
    reps = asyncio.run(ctl._replicas(row, ctl.state["chat"], now))
    return {r.job: r.ready for r in reps}


def _ready_at(ctl: ServiceController, now: float) -> bool:
    return _judge(ctl, now, ["chat-r0"])["chat-r0"]


def _controller() -> ServiceController:
    ctl = ServiceController(_Hub(), lambda f: None, clock=lambda: 0.0, heartbeat_s=1.0)  # type: ignore[arg-type]
    ctl.state["chat"] = ServiceState()
    ctl.endpoints["chat-r0"] = Endpoint("127.0.0.1:9", "c1", 1, 0.0)
    return ctl


def test_a_hub_that_heard_nothing_for_a_while_keeps_its_replicas_ready() -> None:
    # The last report (ready) came 13 s ago and none since: the hub could not take reports
    # (its store stalled). That is no news about the replica: it stays Ready, and the
    # silent gateway is forgotten. Judged against that report, it left Ready for a tick.
    ctl = _controller()
    _report(100.0, ctl, ready=True)
    assert _ready_at(ctl, 100.5)
    assert _ready_at(ctl, 100.0 + READY_FRESH_S + 1.0)
    assert ctl.state["chat"].gateways == {}


def test_a_gateway_that_keeps_reporting_it_unready_takes_it_out_after_the_window() -> None:
    ctl = _controller()
    _report(100.0, ctl, ready=True)
    t = 100.0
    while t < 100.0 + READY_FRESH_S + 1.0:  # a report every interval, each "not ready"
        t += 0.5
        _report(t, ctl, ready=False)
        assert _ready_at(ctl, t) is (t - 100.0 < READY_FRESH_S)
    assert not _ready_at(ctl, t)


def test_a_gateway_that_starts_reporting_does_not_take_replicas_out_before_probing() -> None:
    # No gateway yet: a running replica with an endpoint counts. A gateway's first report
    # on a service lists no replica (it learns the routes from the answer to it). Taken as
    # "none ready", it dropped a Ready service to 0 ready for a tick (the CI roll flake).
    ctl = _controller()
    assert _judge(ctl, 100.0, ["chat-r0"]) == {"chat-r0": True}
    _report_on(100.2, ctl, {})
    assert _judge(ctl, 100.25, ["chat-r0"]) == {"chat-r0": True}
    # A replica that appears while a gateway reports (a surge replica) waits for its probe.
    ctl.endpoints["chat-r1"] = Endpoint("127.0.0.1:10", "c1", 1, 100.3)
    both = ["chat-r0", "chat-r1"]
    assert _judge(ctl, 100.3, both) == {"chat-r0": True, "chat-r1": False}
    _report_on(100.7, ctl, {"chat-r0": True, "chat-r1": True})
    assert _judge(ctl, 100.75, both) == {"chat-r0": True, "chat-r1": True}
    # The record is no blank cheque: a gateway that keeps finding it unready wins.
    t = 100.75
    while t < 100.7 + READY_FRESH_S + 1.0:
        t += 0.5
        _report_on(t, ctl, {"chat-r0": False, "chat-r1": True})
        assert _judge(ctl, t, both)["chat-r0"] is (t - 100.7 < READY_FRESH_S)
    # A replica that left the service leaves no record behind.
    _judge(ctl, t, ["chat-r1"])
    assert set(ctl.state["chat"].ready_at) == {"chat-r1"}


def test_gaps_in_reports_do_not_keep_a_replica_the_gateway_finds_broken_ready() -> None:
    # The gateway has reported the replica unready for longer than the window; its reports
    # reach the hub ~2.5 s apart (store slow), so between them it counts as forgotten.
    # Only a service no gateway has reported on yet records replicas as seen ready.
    ctl = _controller()
    _report(100.0, ctl, ready=True)
    t = 100.0
    while t < 100.0 + 3 * READY_FRESH_S:
        t += 2.5
        assert _ready_at(ctl, t)  # no fresh gateway: running with an endpoint counts
        t += 0.1
        _report(t, ctl, ready=False)
        assert _ready_at(ctl, t + 0.05) is (t - 100.0 < READY_FRESH_S)
