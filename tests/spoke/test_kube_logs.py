"""A Kubernetes slice's output: its pod's log read through the emulated API's real wire
protocol (``GET .../pods/NAME/log`` with ``follow`` and ``tailLines``), and the copy the
executor keeps when it deletes the Job, so a finished or killed attempt's output outlives
its pod."""

from __future__ import annotations

import asyncio

import pytest

from orrery_spoke_agent.executor import LogMissing, LogStream, slice_env
from orrery_spoke_agent.executor.kubernetes import jobs as kj
from tests.spoke.test_kube_executor import NS, Cluster, assignment, cluster, eventually

__all__ = ["cluster"]  # the fixture, shared with the executor's tests


async def read_all(src: LogStream, wait_s: float = 5.0) -> bytes:
    out = b""
    for _ in range(1000):
        data, eof = await src.read(1024, wait_s)
        out += data
        if eof:
            await src.close()
            return out
    raise AssertionError("the log never ended")


async def test_a_running_pod_is_followed_until_its_container_ends(cluster: Cluster) -> None:
    ex = await cluster.executor()
    a = assignment()
    await ex.launch(a, slice_env(a))
    job = cluster.job(a)
    pod = f"{job['metadata']['name']}-x1y2z"
    await cluster.ctl.start_pod(job)
    await cluster.api.write_log(NS, pod, "epoch 1 loss 0.9\nepoch 2 loss 0.5\n")
    await eventually(lambda: ex._pods_of(kj.job_name(a.key)))  # the watch has seen it
    # Without follow: what there is now; the last line alone with a tail.
    assert await read_all(await ex.open_log(a.key, tail_lines=None, follow=False)) == (
        b"epoch 1 loss 0.9\nepoch 2 loss 0.5\n"
    )
    assert await read_all(await ex.open_log(a.key, tail_lines=1, follow=False)) == (
        b"epoch 2 loss 0.5\n"
    )
    src = await ex.open_log(a.key, tail_lines=1, follow=True)
    seen = b""
    while b"epoch 3" not in seen:
        data, eof = await src.read(1024, 5.0)
        assert not eof
        seen += data
        if seen == b"epoch 2 loss 0.5\n":
            await cluster.api.write_log(NS, pod, "epoch 3 loss 0.1\n")
    await cluster.api.write_log(NS, pod, "CUDA out of memory\n")
    await cluster.ctl.finish(job["metadata"]["name"], 3)
    assert seen + await read_all(src) == b"epoch 2 loss 0.5\nepoch 3 loss 0.1\nCUDA out of memory\n"


async def test_a_container_still_waiting_has_no_log_yet(cluster: Cluster) -> None:
    ex = await cluster.executor()
    a = assignment()
    await ex.launch(a, slice_env(a))
    await cluster.ctl.start_pod(cluster.job(a), phase="Pending", waiting="ContainerCreating")
    await eventually(lambda: ex._pods_of(kj.job_name(a.key)))
    with pytest.raises(LogMissing, match=r"has not started yet.*ContainerCreating"):
        await ex.open_log(a.key, tail_lines=None, follow=True)


@pytest.mark.parametrize("how", ["released", "killed"])
async def test_the_output_outlives_the_deleted_job(cluster: Cluster, how: str) -> None:
    ex = await cluster.executor()
    a = assignment()
    await ex.launch(a, slice_env(a))
    job = cluster.job(a)
    name = job["metadata"]["name"]
    await cluster.ctl.start_pod(job)
    await cluster.api.write_log(NS, f"{name}-x1y2z", "".join(f"line {i}\n" for i in range(50)))
    await eventually(lambda: ex._pods_of(name))
    waiter = asyncio.create_task(ex.wait(a.key))
    if how == "released":
        await cluster.ctl.finish(name, 0)
        await asyncio.wait_for(waiter, 10)
        await ex.release(a.key)  # the hub recorded its end: the Job is deleted
    else:
        await ex.terminate(a.key, 1.0, "killed by hub: moved")
        await asyncio.wait_for(waiter, 10)
    await eventually(lambda: cluster.api.stored("jobs", NS, name) is None)
    await eventually(lambda: not ex._pods_of(name))
    assert await read_all(await ex.open_log(a.key, tail_lines=2, follow=True)) == (
        b"line 48\nline 49\n"
    )
    assert (
        ex.log_dir is not None
        and oct((ex.log_dir / f"{name}.log").stat().st_mode & 0o777) == "0o600"
    )
    with pytest.raises(LogMissing, match="no pod"):
        await ex.open_log(assignment(epoch=9).key, tail_lines=None, follow=False)
