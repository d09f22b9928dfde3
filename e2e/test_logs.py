"""``orrery logs``, end to end: the hub, NATS (TLS, a user per cluster) and the spokes as
separate processes, the CLI as a user runs it. A running attempt's output, followed to its
end; after a spoke is SIGKILLed and the job moves, the lost cluster's logs reported as
unreachable; once that spoke is back, each epoch's output in order under its header."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from e2e.conftest import final, spokes, wait_for
from orrery.federation import Federation

pytestmark = pytest.mark.e2e

WORKLOAD = Path(__file__).parent / "workloads" / "chatty.py"


def job_yaml(steps: int, step_time: float, finish_from_epoch: int = 0, hold_at: int = 0) -> str:
    return yaml.safe_dump({
        "apiVersion": "orrery/v1", "kind": "TrainingJob", "metadata": {"name": "chatty"},
        "spec": {"slices": 1, "gpusPerSlice": 4, "maxRetries": 3, "command": [
            sys.executable, str(WORKLOAD), "--steps", str(steps), "--step-time", str(step_time),
            "--finish-from-epoch", str(finish_from_epoch), "--hold-at", str(hold_at)]},
    })  # fmt: skip


def logs_cmd(fed: Federation, *args: str) -> list[str]:
    assert fed.api_url is not None
    return [sys.executable, "-m", "orrery.cli.main", "logs", *args,
            "--hub", fed.api_url, "--token", fed.admin_token]  # fmt: skip


def logs(fed: Federation, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(logs_cmd(fed, *args), capture_output=True, text=True, timeout=120)


def until_logs(fed: Federation, want: str, *args: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        p = logs(fed, *args)
        if p.returncode == 0 and want in p.stdout:
            return p.stdout
        assert time.monotonic() < deadline, f"no {want!r} in: {p.stdout[-500:]} {p.stderr}"
        time.sleep(0.2)


def test_running_finished_and_each_epoch_after_a_failover(federation) -> None:  # type: ignore[no-untyped-def]
    fed: Federation = federation(spokes("eu-west", "us-east"))
    with fed.client() as c:
        # The first epoch never ends by itself (it waits at step 30 to be killed below,
        # however long the checks before the kill take on a loaded machine); the next one
        # resumes from its checkpoint and runs to the end.
        job = c.submit(job_yaml(steps=60, step_time=0.1, finish_from_epoch=2, hold_at=30)).id
        # Followed from submission for the job's whole life: through its placement, the
        # first epoch, the failover, and the next epoch to its end.
        follower = subprocess.Popen(logs_cmd(fed, job, "-f"), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
        j = wait_for(c, job, lambda j: (j.status.checkpoint_step or 0) >= 9, 60, "a checkpoint")
        first = j.status.slices[0]
        victim, e1 = first.cluster, first.epoch
        assert e1 == 1
        assert victim is not None
        # Running: what it printed so far, stdout and stderr together, without a header.
        out = until_logs(fed, f"epoch {e1} slice 0 step 5", job)
        assert out.startswith(f"epoch {e1} slice 0: starting at step 0\n")  # its stderr
        assert f"epoch {e1} slice 0 step 0\nepoch {e1} slice 0 step 1\n" in out
        assert "==>" not in out
        assert logs(fed, job, "--tail", "1").stdout.count("\n") == 1

        fed.kill_spoke(victim)
        moved = wait_for(c, job, lambda j: j.status.slices[0].epoch > e1
                         and j.status.slices[0].phase == "Running", 60, "the slice to move")
        e2 = moved.status.slices[0].epoch
        # The lost cluster's epoch: the error names the cluster and what may be lost.
        p = logs(fed, job, "--epoch", str(e1))
        said = " ".join(p.stderr.split())  # however the terminal wrapped it
        assert p.returncode == 1 and p.stdout == ""
        assert f"cluster {victim} did not answer for the output of slice 0 epoch {e1}" in said
        assert "the logs of a lost cluster may be gone" in said
        # Follow the new epoch until it ends: the command returns by itself, exit 0.
        follow = subprocess.run(logs_cmd(fed, job, "--epoch", str(e2), "-f"),
                                capture_output=True, text=True, timeout=120)
        assert follow.returncode == 0, follow.stderr
        assert follow.stdout.endswith(f"epoch {e2} slice 0: done\n")
        resumed = int(follow.stdout.split("starting at step ", 1)[1].split()[0])
        assert resumed >= 10  # from its checkpoint
        assert final(c, job).status.phase == "Succeeded"
        followed, said = follower.communicate(timeout=120)
        assert follower.returncode == 0, said
        assert followed.endswith(f"epoch {e2} slice 0: done\n"), followed[-300:]
        at_f = followed.index
        assert at_f(f"epoch {e1} slice 0 step 9\n") < at_f(f"==> slice 0 · epoch {e2} ·")
        assert at_f(f"==> slice 0 · epoch {e2} ·") < at_f(f"epoch {e2} slice 0 step {resumed}")
        assert "Traceback" not in said

    # The killed spoke comes back, with its folder: each epoch's output, in order.
    fed.start_spoke(victim)
    fed.wait_ready(names=[victim])
    out = until_logs(fed, f"epoch {e2} slice 0: done", job)
    h1, h2 = f"==> slice 0 · epoch {e1} · {victim} ·", f"==> slice 0 · epoch {e2} ·"
    assert out.startswith(h1), out[:300]
    at = out.index
    assert at(h1) < at(f"epoch {e1} slice 0 step 9") < at(h2)
    assert at(h2) < at(f"epoch {e2} slice 0 step {resumed}") < at(f"epoch {e2} slice 0: done")
    assert f"epoch {e2}" not in out[: at(h2)] and f"epoch {e1} slice" not in out[at(h2) :]
