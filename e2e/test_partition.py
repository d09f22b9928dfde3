"""A spoke cut off from the hub by a real network partition: it sits in its own network
namespace, joined to the host by a veth pair, and the test takes the link down.

Needs root and `ip netns` (iproute2). Where they are missing the test says so and skips:
CI here runs as root with iproute2 installed by .ci/run."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.conftest import (
    TIMINGS,
    assert_never_twice,
    final,
    intervals,
    manifest,
    spokes,
    steps,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.netns]


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


@pytest.fixture
def netns() -> Iterator[tuple[str, str, str]]:
    """(namespace, host-side link, host address) for a fresh namespace at 10.213.N.2."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (`ip netns`) to build a network partition")
    tag = uuid.uuid4().hex[:6]
    ns, host_if, ns_if = f"orr-{tag}", f"orh{tag}", f"orn{tag}"
    octet = int(tag[:2], 16) % 200 + 20
    host_ip, ns_ip = f"10.213.{octet}.1", f"10.213.{octet}.2"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ns_ip}/24", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        yield ns, host_if, host_ip
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=20)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def test_a_partitioned_spoke_stops_its_slices_before_they_run_elsewhere(  # type: ignore[no-untyped-def]
    netns: tuple[str, str, str], federation, tmp_path: Path
) -> None:
    # netns comes first so that it is torn down last: the federation stops while the island
    # can still reach NATS, instead of each process waiting out its stop timeout.
    ns, host_if, host_ip = netns
    out = tmp_path / "out"
    fed = federation(
        spokes("island", "mainland"),
        nats_host=host_ip,
        spoke_prefix={"island": ["ip", "netns", "exec", ns]},
    )
    with fed.client() as c:
        island = {x.name: x for x in c.clusters()}["island"]
        assert island.state == "Ready"
        # Both clusters fit the slice equally; ties go by name, so "island" gets it.
        job = c.submit(
            manifest(
                "castaway",
                out,
                slices=1,
                restart="Slice",
                args=["--steps", "80", "--step-time", "0.1", "--checkpoint-every", "5"],
            )
        )
        wait_for(c, job.id, lambda j: (j.status.checkpoint_step or 0) >= 4, 20, "a checkpoint")
        assert c.job(job.id).status.slices[0].cluster == "island"

        cut_at = time.time()
        sh("ip", "link", "set", host_if, "down")
        moved = wait_for(
            c,
            job.id,
            lambda j: j.status.slices[0].epoch >= 2 and j.status.slices[0].phase == "Running",
            30,
            "the move",
        )
        assert moved.status.slices[0].cluster == "mainland"
        assert {x.name: x.state for x in c.clusters()}["island"] == "Lost"
        # The island stopped its slice within its lease (+ grace, + one supervisor poll),
        # before the hub's failover timeout let it start elsewhere.
        deadline = time.monotonic() + 20
        while 2 not in intervals(out).get(0, {}):  # the hub knows before the workload writes
            assert time.monotonic() < deadline, "epoch 2 recorded no step"
            time.sleep(0.05)
        epoch1_end = intervals(out)[0][1][1]
        assert epoch1_end - cut_at < TIMINGS.lease_s + TIMINGS.kill_grace_s + 0.5
        epoch2_start = intervals(out)[0][2][0]
        assert epoch2_start - cut_at >= TIMINGS.failover_s - 0.5

        sh("ip", "link", "set", host_if, "up")
        wait_for(c, job.id, lambda j: True, 1, "")  # the hub still answers
        deadline = time.monotonic() + 30
        while {x.name: x.state for x in c.clusters()}["island"] != "Ready":
            assert time.monotonic() < deadline, "the island did not rejoin"
            time.sleep(0.2)
        done = final(c, job.id, timeout=60)
    assert done.status.phase == "Succeeded", done.status.reason
    assert_never_twice(out)
    resumed = {r["resumed_from"] for r in steps(out) if r.get("epoch") == 2 and "step" in r}
    assert min(resumed) >= 5
