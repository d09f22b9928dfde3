"""Inference services end to end, continued: scale to zero and the rolling update, with real
nats-server, hub, spoke agent, gateway and replica processes (helpers in test_serving).

- A ``scaleToZero`` service starts at zero replicas; a request through the gateway is held,
  a replica is placed and started, the request succeeds, and the cold start (first held
  request to first ready replica) shows in the service's status and in
  ``orrery services NAME``. With no request for a stable window (8 s) it goes back to zero, and
  the next request is held and served the same way.
- Changing a service's command rolls it one surge replica at a time: the service never has
  fewer ready replicas than it asks for, and no request of a light load through the
  gateway fails; at the end every replica runs the new template.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from rich.console import Console

from e2e.test_serving import REPLICA, Load, apply, get, service, wait_service
from orrery.cli.services import detail
from orrery.federation import Federation, SpokeSpec
from orrery.service_resources import ServicePublic

pytestmark = pytest.mark.e2e
SERVICE_LABEL = "orrery.io/service"


def through_gateway(url: str, path: str, timeout: float = 60.0) -> httpx.Response:
    """GET through the gateway once it knows the service: its routes arrive with the next
    sync, and until then it answers 404 "no service" without holding or counting."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=60) as c:
        while True:
            r = c.get(path)
            if r.status_code != 404 or time.monotonic() > deadline:
                return r
            time.sleep(0.1)


def rendered(s: ServicePublic) -> str:
    out = io.StringIO()
    Console(width=200, file=out).print(detail(s))
    return out.getvalue()


def test_a_service_scales_from_zero_on_a_held_request_and_back_to_zero(
    federation: Callable[..., Federation],
) -> None:
    fed = federation([SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4)], gateway=True)
    assert fed.gateway_url is not None
    apply(
        fed,
        service(
            "idle",
            replicas={"min": 0, "max": 2},
            autoscale={"targetConcurrency": 4, "stableWindow": "8s", "panicWindow": "1s",
                       "scaleToZero": True},
        ),
    )
    s = wait_service(fed, "idle", lambda s: s.status.phase == "ScaledToZero", 30, "zero")
    assert s.status.replicas == [] and s.status.cold_start_s is None

    t0 = time.monotonic()
    r = through_gateway(fed.gateway_url, "/services/idle/work?ms=10")
    first = time.monotonic() - t0
    assert r.status_code == 200, r.text
    # The cold start arrives with the gateway's next report; the replica shows ready from
    # the controller's next tick after it.
    s = wait_service(fed, "idle",
                     lambda s: s.status.cold_start_s is not None and s.status.ready == 1, 30,
                     "the cold start reported and the replica ready")
    cold = s.status.cold_start_s
    assert cold is not None and 0 < cold <= first + 1.0, (cold, first)
    text = rendered(s)
    assert f"cold start {cold * 1000:.0f} ms" in text, text

    # Quiet for a stable window (8 s): back to zero, the replica's job cancelled.
    s = wait_service(fed, "idle", lambda s: s.status.phase == "ScaledToZero", 60,
                     "back to zero")
    assert s.status.desired == 0 and s.status.replicas == []
    with fed.client() as c:
        every = c.jobs()
    jobs = [j for j in every if (j.metadata.get("labels") or {}).get(SERVICE_LABEL) == "idle"]
    assert jobs and all(j.status.phase in {"Cancelled", "Succeeded"} for j in jobs), [
        (j.id, j.status.phase) for j in jobs
    ]

    # Held again, served again, by a new replica.
    r2 = through_gateway(fed.gateway_url, "/services/idle/work?ms=10")
    assert r2.status_code == 200, r2.text
    assert r2.json()["pid"] != r.json()["pid"]
    print(json.dumps({"first_request_s": round(first, 2), "cold_start_s": round(cold, 2)}))


def test_a_changed_command_rolls_without_losing_ready_replicas_or_requests(
    federation: Callable[..., Federation],
) -> None:
    fed = federation([SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4)], gateway=True)
    assert fed.gateway_url is not None
    steady = {"min": 2, "max": 2}
    auto = {"targetConcurrency": 100}  # load never moves the count: only the update does
    first = apply(fed, service("roll", replicas=steady, autoscale=auto))
    wait_service(fed, "roll", lambda s: s.status.ready == 2 and s.status.phase == "Ready", 60,
                 "two ready replicas")
    old_template = first.status.template

    polls: list[ServicePublic] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            polls.append(get(fed, "roll"))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    with Load(fed.gateway_url, 2, "/services/roll/work?ms=20") as load:
        through_gateway(fed.gateway_url, "/services/roll/work?ms=1")
        watcher.start()
        changed = service("roll", replicas=steady, autoscale=auto,
                          command=[sys.executable, str(REPLICA), "v2"])
        new = apply(fed, changed)
        assert new.status.template != old_template
        done = wait_service(
            fed, "roll",
            lambda s: s.status.phase == "Ready" and s.status.ready == 2
            and all(r.template == new.status.template for r in s.status.replicas),
            90, "every replica on the new template",
        )
        stop.set()
        watcher.join(timeout=10)
        after = time.monotonic()
        while len(load.since(after)) < 20:  # some requests after the roll, on new replicas
            assert time.monotonic() < after + 30, "no requests after the update"
            time.sleep(0.1)
    failed = [r for r in load.results if r[2] != 200]
    assert len(load.results) > 50
    assert not failed, f"{len(failed)} of {len(load.results)} requests failed: {failed[:5]}"
    updating = [p for p in polls if p.status.phase == "Updating"]
    assert updating, "never seen Updating: the roll was not observed"
    low = [(p.status.ready, [(r.job, r.phase, r.template) for r in p.status.replicas])
           for p in polls if p.status.ready < 2]
    assert not low, f"fewer than 2 ready during the roll: {low[:3]}"
    # The surge: at most one replica above the count at any time.
    assert max(len(p.status.replicas) for p in polls) <= 3
    new_jobs = {r.job for r in done.status.replicas}
    old_jobs = {r.job for r in first.status.replicas} | {
        r.job for p in polls for r in p.status.replicas if r.template == old_template
    }
    assert not new_jobs & old_jobs
    print(json.dumps({"requests": len(load.results), "failed": len(failed),
                      "updating_s": round(0.1 * len(updating), 1),
                      "min_ready": min(p.status.ready for p in polls)}))
