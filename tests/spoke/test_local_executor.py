"""The local executor and its supervisor: real processes, real signals, real files."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from orrery.wire import Assignment
from orrery_spoke_agent.executor import slice_env
from orrery_spoke_agent.executor.local import LocalExecutor
from orrery_spoke_agent.executor.local_host import cgroup_path
from orrery_spoke_agent.executor.local_records import alive


def assignment(
    cmd: list[str], *, epoch: int = 1, index: int = 0, runtime: float | None = None
) -> Assignment:
    return Assignment(
        sender="hub",
        seq=1,
        job="job-1",
        job_name="job",
        index=index,
        epoch=epoch,
        world_size=2,
        node="n0",
        gpus=[2, 3],
        master_addr="127.0.0.1",
        master_port=29555,
        command=cmd,
        checkpoint_dir="/tmp/ck",
        checkpoint="/tmp/ck/3.json",
        env={"USER_VAR": "x"},
        max_runtime_s=runtime,
    )


@pytest.fixture(autouse=True)
def _no_cgroups_left(tmp_path: Path) -> Iterator[None]:
    """Executors a test drops without close() leave their (empty) cgroup parent behind."""
    yield
    parent = cgroup_path(tmp_path)
    if parent is not None and parent.exists():
        parent.rmdir()


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[LocalExecutor]:
    e = LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.5)
    await e.renew_lease(time.time())
    yield e
    await e.close()


async def test_environment_exit_code_and_log(ex: LocalExecutor, tmp_path: Path) -> None:
    code = (
        "import os, json; print(json.dumps({k: os.environ.get(k) for k in ["
        "'RANK','WORLD_SIZE','MASTER_ADDR','MASTER_PORT','CUDA_VISIBLE_DEVICES','ORRERY_JOB',"
        "'ORRERY_SLICE','ORRERY_EPOCH','ORRERY_CHECKPOINT_DIR','ORRERY_CHECKPOINT','USER_VAR']}));"
        "raise SystemExit(7)"
    )
    a = assignment(py(code))
    await ex.launch(a, slice_env(a))
    outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    assert outcome.exit_code == 7
    assert not outcome.killed
    log = (tmp_path / "slices" / "job-1" / "0" / "1" / "output.log").read_text()
    import json

    env = json.loads(log.strip().splitlines()[-1])
    assert env == {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29555",
        "CUDA_VISIBLE_DEVICES": "2,3",
        "ORRERY_JOB": "job-1",
        "ORRERY_SLICE": "0",
        "ORRERY_EPOCH": "1",
        "ORRERY_CHECKPOINT_DIR": "/tmp/ck",
        "ORRERY_CHECKPOINT": "/tmp/ck/3.json",
        "USER_VAR": "x",
    }


async def test_terminate_kills_the_whole_process_group(ex: LocalExecutor, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # The workload forks a grandchild that ignores SIGTERM; the group kill must still end it.
    code = (
        f"import os, signal, time, subprocess, sys\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        f"signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        f"time.sleep(60)\n"
    )
    a = assignment(py(code))
    await ex.launch(a, slice_env(a))
    deadline = time.monotonic() + 20
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "workload did not start"
        await asyncio.sleep(0.05)
    grandchild = int(pidfile.read_text())
    await ex.terminate(a.key, 0.3, "test says stop")
    outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    assert outcome.killed
    assert outcome.reason == "test says stop"
    assert not alive(grandchild), "a process of the slice's group survived"


async def test_a_lapsed_lease_stops_the_slice_without_the_agent(tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path, lease_s=0.5, kill_grace_s=0.2)
    await ex.renew_lease(time.time())
    a = assignment(py("import time; time.sleep(60)"))
    started = time.time()
    await ex.launch(a, slice_env(a))
    # Nobody renews the lease: the supervisor must stop the workload by itself.
    outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    assert outcome.killed
    assert outcome.reason is not None and outcome.reason.startswith("lease lapsed")
    assert outcome.finished_at - started < 0.5 + 0.2 + 2.0


async def test_max_runtime_stops_the_slice_as_a_failure(ex: LocalExecutor) -> None:
    a = assignment(py("import time; time.sleep(60)"), runtime=0.3)
    await ex.launch(a, slice_env(a))
    outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    assert not outcome.killed
    assert outcome.exit_code != 0
    assert outcome.reason == "maxRuntime exceeded (0.3s)"


async def test_a_restarted_agent_adopts_running_and_reports_ended(tmp_path: Path) -> None:
    first = LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.2)
    await first.renew_lease(time.time())
    running = assignment(py("import time; time.sleep(60)"), index=0)
    ended = assignment(py("raise SystemExit(4)"), index=1)
    await first.launch(running, slice_env(running))
    await first.launch(ended, slice_env(ended))
    assert (await asyncio.wait_for(first.wait(ended.key), 20)).exit_code == 4
    # A new executor on the same state folder: what an agent restarted after SIGKILL sees.
    second = LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.2)
    found = {f.assignment.index: f for f in await second.discover()}
    assert found[0].outcome is None, "the running slice was not adopted"
    assert found[0].started_at is not None
    assert found[1].outcome is not None and found[1].outcome.exit_code == 4
    await second.terminate(running.key, 0.2, "done with it")
    outcome = await asyncio.wait_for(second.wait(running.key), 20)
    assert outcome.killed
    await second.release(ended.key)
    assert 1 not in {
        f.assignment.index
        for f in await LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.2).discover()
    }


async def test_progress_is_read_from_the_workload_helper(ex: LocalExecutor) -> None:
    code = (
        "from orrery import workload\n"
        "workload.report(step=4, total_steps=10, metrics={'loss': 0.25})\n"
        "workload.checkpoint('/ck/4.json', step=4)\n"
    )
    a = assignment(py(code))
    await ex.launch(a, slice_env(a))
    await asyncio.wait_for(ex.wait(a.key), 20)
    p = ex.progress(a.key)
    assert p is not None
    assert (p.step, p.total_steps, p.metrics, p.checkpoint, p.checkpoint_step) == (
        4,
        10,
        {"loss": 0.25},
        "/ck/4.json",
        4,
    )


def test_alive_is_false_for_unknown_pids() -> None:
    assert not alive(2**22 + 12345)
    assert alive(os.getpid())


async def test_a_serving_replica_gets_a_free_port_and_reports_load(
    ex: LocalExecutor, tmp_path: Path
) -> None:
    code = (
        "import os, socket; from orrery import workload; "
        "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); "
        "workload.load(queue_depth=3, kv_cache=0.5, tokens_per_s=120); print(os.environ['PORT'])"
    )
    base = assignment(py(code))
    a = base.model_copy(update={"env": {**base.env, "ORRERY_SERVICE": "chat"}})
    plain = assignment(py("pass"), index=1)
    await ex.launch(a, slice_env(a))
    await ex.launch(plain, slice_env(plain))
    assert (await asyncio.wait_for(ex.wait(a.key), 20)).exit_code == 0
    port = ex.listen_port(a.key)
    assert port is not None
    log = (tmp_path / "slices" / "job-1" / "0" / "1" / "output.log").read_text()
    assert log.strip().splitlines()[-1] == str(port)
    progress = ex.progress(a.key)
    assert progress is not None
    assert progress.metrics == {
        "load.queueDepth": 3.0, "load.kvCache": 0.5, "load.tokensPerS": 120.0
    }
    await asyncio.wait_for(ex.wait(plain.key), 20)
    assert ex.listen_port(plain.key) is None  # not a replica: no port chosen
