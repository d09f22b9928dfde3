"""Following a job where a user runs it (issue 17 item 6): plain progress lines in a pipe
or a CI log, ``submit --wait`` riding out a hub restart, and ``orrery up`` noticing a dead
child and starting it again — or saying which one keeps dying."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from orrery.cli.upwatch import RestartBudget, Watchdog
from orrery.errors import Unavailable
from orrery.federation import Federation, SpokeSpec, Timings
from orrery.natsserver import free_port

ORRERY = [sys.executable, "-m", "orrery.cli.main"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "ORRERY_CONFIG": os.devnull, **(extra or {})}


def poll(what: str, cond: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_the_restart_budget_is_bounded_in_a_window() -> None:
    b = RestartBudget(limit=2, window_s=10)
    assert b.take(0) and b.take(1) and not b.take(2)
    assert b.take(11.5)  # the first restart left the window


def test_wait_gives_up_after_its_deadline_saying_why() -> None:
    """No hub at all: --wait retries (jittered backoff) for --retry-for, then one line."""
    url = f"http://127.0.0.1:{free_port()}"
    job = Path(__file__).parents[1] / "examples" / "shards.yaml"
    started = time.monotonic()
    p = subprocess.run(
        [*ORRERY, "submit", str(job), "--wait", "--retry-for", "2s", "--hub", url, "--token", "t"],
        capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "retrying for up to 2s" in p.stderr and "cannot reach the hub" in p.stderr, p.stderr
    assert time.monotonic() - started < 60  # bounded, not forever


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    # A lease well above a hub restart on a loaded machine (production's is 10 s): the
    # slice must ride the restart out, not lapse and run again at the next epoch.
    riding = Timings(heartbeat_s=0.25, lease_s=10.0, failover_s=14.0, kill_grace_s=0.5,
                     backoff_s=0.1)  # fmt: skip
    f = Federation(
        tmp_path_factory.mktemp("follow") / "fed",
        spokes=[SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4),
                SpokeSpec("spare", "spare-1", "L4", 1, 1)],
        timings=riding,
    )
    with f:
        yield f


def _job(tmp: Path, seconds: float) -> Path:
    f = tmp / "job.yaml"
    f.write_text(
        "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: follow}\n"
        f"spec: {{gpusPerSlice: 1, gpuType: H100, command: [{sys.executable!r}, -c, "
        f"'import time; time.sleep({seconds})']}}\n"
    )
    return f


@pytest.mark.e2e
def test_wait_in_a_pipe_prints_plain_progress_and_rides_out_a_hub_restart(
    fed: Federation, tmp_path: Path
) -> None:
    from e2e.conftest import wait_for

    assert fed.api_url is not None
    env = _env({"ORRERY_HUB": fed.api_url, "ORRERY_TOKEN": fed.admin_token})
    out, err = tmp_path / "out", tmp_path / "err"
    with open(out, "w") as o, open(err, "w") as e:
        cli = subprocess.Popen(
            [*ORRERY, "submit", str(_job(tmp_path, 10)), "--wait"], stdout=o, stderr=e, env=env
        )
    try:
        poll("the job's ID", lambda: "submitted" in out.read_text())
        job_id = out.read_text().split()[1]
        with fed.client() as c:
            wait_for(c, job_id, lambda j: j.status.phase == "Running", 60, "Running")
        # The hub goes once the CLI has said Running (else, on a loaded machine, its next
        # word could be the end, after the restart).
        poll("the CLI to print Running", lambda: f"{job_id}  phase Running" in out.read_text())
        fed.kill_hub()
        poll("the CLI to notice the hub is gone", lambda: "retrying for up to" in err.read_text())
        fed.start_hub()
        assert cli.wait(timeout=240) == 0, out.read_text() + err.read_text()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    text = out.read_text()
    assert "\x1b" not in text  # no terminal control in a log
    lines = text.splitlines()
    assert any(f"{job_id}  Submitted:" in x for x in lines), text
    assert any(f"{job_id}  phase Running" in x for x in lines), text
    assert lines[-1] == f"{job_id}: Succeeded", text
    assert "the hub answers again" in err.read_text()


@pytest.mark.e2e
def test_up_restarts_a_dead_hub_and_spoke_and_gives_up_on_one_that_keeps_dying(
    fed: Federation,
) -> None:
    buf = io.StringIO()
    dog = Watchdog(fed, Console(file=buf, width=300), limit=1)
    dog.check()
    assert dog.restarts == 0  # all alive: nothing done
    fed.kill_hub()
    dog.check()
    said = buf.getvalue()
    assert "orrery up: the hub exited: killed by SIGKILL" in said, said
    assert "the hub is running again" in said
    with fed.client() as c:
        poll("the hub to answer", c.healthy)
    fed.kill_spoke("spare")
    dog.check()
    assert "the spoke spare exited" in buf.getvalue()
    fed.wait_ready(timeout=90)
    fed.kill_spoke("spare")  # again, within the window: out of restarts
    with pytest.raises(Unavailable, match="the spoke spare exited 1 times in 300s"):
        dog.check()
    fed.start_spoke("spare")  # leave the federation whole for the other tests
    fed.wait_ready(timeout=90)
