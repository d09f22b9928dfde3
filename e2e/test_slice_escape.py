"""Never twice, with real processes and no attacker: a workload that kills its own
supervisor, and one that leaves a ``setsid`` child running. In both, epoch 2 must not start
while any process of epoch 1 lives — checked from the steps the processes recorded. And a
federation whose local slices run as ``nobody``."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import orrery
from e2e.conftest import TIMINGS, assert_never_twice, final, intervals, spokes, steps
from orrery.federation import Federation

pytestmark = pytest.mark.e2e

WORKLOADS = Path(__file__).parent / "workloads"
RUN = ["--steps", "50", "--step-time", "0.1", "--checkpoint-every", "1000"]
SYSTEM_PYTHON = "/usr/bin/python3"


def job(name: str, command: list[str], env: dict[str, str] | None = None) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": name},
            "spec": {
                "slices": 1,
                "gpusPerSlice": 1,
                "maxRetries": 3,
                "command": command,
                **({"env": env} if env else {}),
            },
        }
    )


@pytest.mark.parametrize("tracking", ["auto", "pgroup"])
@pytest.mark.parametrize("mode", ["kill-supervisor", "setsid-child"])
def test_an_escaping_workload_never_runs_two_epochs_at_once(
    federation, tmp_path: Path, mode: str, tracking: str
) -> None:  # type: ignore[no-untyped-def]
    # auto: a cgroup (v2) per slice where this host offers one; pgroup: process group,
    # session, environment marker and the supervisor as subreaper.
    fed = federation(spokes("eu-west"), extra_env={"ORRERY_SLICE_TRACKING": tracking})
    out = tmp_path / "out"
    cmd = [sys.executable, str(WORKLOADS / "escape.py"), mode, "--out", str(out), *RUN]
    with fed.client() as c:
        submitted = c.submit(job(f"escape-{mode}", cmd))
        done = final(c, submitted.id, timeout=90)
        attempts = c.attempts(submitted.id)
    assert done.status.phase == "Succeeded", done.status.reason
    by_epoch = intervals(out)[0]
    assert set(by_epoch) == {1, 2}, f"epochs that ran: {sorted(by_epoch)}"
    assert_never_twice(out)
    first = next(a for a in attempts if a.epoch == 1)
    if mode == "kill-supervisor":
        assert first.reason is not None and "vanished" in first.reason, first.reason
    else:
        assert first.exit_code == 3


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder ``nobody`` can reach (pytest's own tmp folders are root's, mode 0700)."""
    d = Path(tempfile.mkdtemp(prefix="orrery-e2e-"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.path.exists(SYSTEM_PYTHON), reason="needs root and python3"
)
def test_local_slices_run_as_an_unprivileged_user(open_dir: Path) -> None:
    out = open_dir / "out"
    out.mkdir(mode=0o777)
    os.chmod(out, 0o777)
    fed = Federation(open_dir / "fed", spokes=spokes("eu-west"), timings=TIMINGS, run_as="nobody")
    try:
        fed.start()
        # The agent's Python lives under /root; the slice user runs the system one, with
        # the stdlib-only workload helper on its path.
        src = str(Path(orrery.__file__).resolve().parent.parent)
        cmd = [SYSTEM_PYTHON, str(WORKLOADS / "steps.py"), "--out", str(out), *RUN]
        with fed.client() as c:
            submitted = c.submit(job("unprivileged", cmd, env={"PYTHONPATH": src}))
            done = final(c, submitted.id, timeout=60)
    finally:
        fed.stop()
    assert done.status.phase == "Succeeded", done.status.reason
    assert (out / "steps.jsonl").stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert len([r for r in steps(out) if "step" in r]) == 50
    state = open_dir / "fed" / "spokes" / "eu-west"
    lease = (state / "lease").stat()
    assert lease.st_uid == 0 and stat.S_IMODE(lease.st_mode) == 0o600
    assert stat.S_IMODE((state / "slices").stat().st_mode) == 0o700
