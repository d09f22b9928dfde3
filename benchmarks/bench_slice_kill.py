"""Time from a local slice's supervisor dying (SIGKILL, as the OOM killer would) to the
executor reporting the slice ended — after it has killed the workload and the ``setsid``
child it left — in each tracking mode, over 10 trials.

    ./dev bench -k slice_kill
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from benchmarks.conftest import percentile, record
from orrery.wire import Assignment
from orrery_spoke_agent.executor import slice_env
from orrery_spoke_agent.executor.local import LocalExecutor
from orrery_spoke_agent.executor.local_host import cgroup_parent

pytestmark = pytest.mark.benchmark

TRIALS = 10
WORKLOAD = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
    " start_new_session=True)\n"
    "time.sleep(60)\n"
)


def _assignment() -> Assignment:
    return Assignment(sender="hub", seq=1, job="bench-1", job_name="bench", index=0, epoch=1,
                      world_size=1, node="n0", gpus=[0], master_addr="127.0.0.1",
                      master_port=29555, command=[sys.executable, "-c", WORKLOAD],
                      checkpoint_dir="/tmp/ck")


async def _trial(state: Path, mode: str) -> float:
    ex = LocalExecutor(state, lease_s=30, kill_grace_s=0.3, tracking=mode)
    await ex.renew_lease(time.time())
    a = _assignment()
    await ex.launch(a, slice_env(a))
    started = state / "slices" / "bench-1" / "0" / "1" / "started.json"
    deadline = time.monotonic() + 20
    while not started.exists():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # the setsid child is up
    t0 = time.monotonic()
    os.kill(json.loads(started.read_text())["supervisor"], 9)
    outcome = await ex.wait(a.key)
    took = time.monotonic() - t0
    assert outcome.reason is not None and "killed 2 leftover" in outcome.reason
    await ex.close()
    return took


@pytest.mark.parametrize("mode", ["cgroup", "pgroup"])
def test_supervisor_death_to_reported_end(tmp_path: Path, mode: str) -> None:
    probe = cgroup_parent(tmp_path / "probe", "auto")
    if probe is not None:
        probe.rmdir()
    elif mode == "cgroup":
        pytest.skip("no writable cgroup v2 here")
    times = [asyncio.run(_trial(tmp_path / f"s{i}", mode)) for i in range(TRIALS)]
    figures = {"mode": mode, "p50_ms": round(percentile(times, 50) * 1000, 1),
               "max_ms": round(max(times) * 1000, 1), "trials": TRIALS}
    print(f"\nsupervisor death -> leftovers killed -> reported ended: {figures}")
    record("slice_kill", figures)
    assert max(times) < 2.0
