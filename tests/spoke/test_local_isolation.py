"""Local slices on a plain host: every process tracked (cgroup v2 or process group +
subreaper), a supervisor's death seen, the slice user, environment, folders and ids."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from orrery.errors import InvalidInput
from orrery.wire import SliceKey
from orrery_spoke_agent.executor import LaunchError, slice_env
from orrery_spoke_agent.executor.local import LocalExecutor
from orrery_spoke_agent.executor.local_host import (
    UnsafeKey,
    attempt_name,
    cgroup_parent,
    check_reachable,
    resolve_slice_user,
)
from orrery_spoke_agent.executor.local_records import alive
from tests.spoke.test_local_executor import _no_cgroups_left, assignment, py

ROOT = os.geteuid() == 0


def _has_cgroup() -> bool:
    parent = cgroup_parent(Path(tempfile.gettempdir()) / "orrery-probe", "auto")
    if parent is not None:
        parent.rmdir()
    return parent is not None


HAS_CGROUP = _has_cgroup()
MODES = ["pgroup", pytest.param("cgroup", marks=pytest.mark.skipif(not HAS_CGROUP, reason="no v2"))]
SYSTEM_PYTHON = "/usr/bin/python3"
PROGRESS = "ORRERY_PROGRESS_FILE"
__all__ = ["_no_cgroups_left"]  # autouse, from the executor's tests


@pytest.fixture(params=MODES)
async def ex(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LocalExecutor]:
    e = LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.3, tracking=request.param)
    assert e.tracking == request.param
    await e.renew_lease(time.time())
    yield e
    await e.close()


async def until(pred: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def pid_in(path: Path) -> int:
    return int(path.read_text()) if path.exists() and path.read_text() else 0


SETSID_CHILD = (
    "import subprocess, sys\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
    " start_new_session=True)\n"
    "open({out!r}, 'w').write(str(p.pid))\n"
)


async def test_a_setsid_child_dies_before_the_slice_is_reported_ended(
    ex: LocalExecutor, tmp_path: Path
) -> None:
    out = tmp_path / "child.pid"
    a = assignment(py(SETSID_CHILD.format(out=str(out))))  # the workload exits at once
    await ex.launch(a, slice_env(a))
    outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    assert outcome.exit_code == 0
    child = pid_in(out)
    assert child and not alive(child), "the setsid child outlived its slice"


async def test_a_workload_that_kills_its_supervisor_is_killed_before_it_is_reported(
    ex: LocalExecutor, tmp_path: Path
) -> None:
    out = tmp_path / "child.pid"
    code = (
        SETSID_CHILD.format(out=str(out)) + "import os, signal, time\n"
        "open({me!r}, 'w').write(str(os.getpid()))\n"
        "os.kill(os.getppid(), signal.SIGKILL)\n"
        "time.sleep(60)\n"
    ).format(me=str(tmp_path / "main.pid"))
    a = assignment(py(code))
    await ex.launch(a, slice_env(a))
    outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    main, child = pid_in(tmp_path / "main.pid"), pid_in(out)
    assert main and child
    assert not alive(main) and not alive(child), "a process outlived its dead supervisor"
    assert outcome.exit_code is None
    assert outcome.reason is not None and outcome.reason.startswith("vanished: its supervisor")
    assert "killed 2 leftover" in outcome.reason
    # A restarted agent reads the same end, not a second "vanished".
    again = {
        f.assignment.index: f
        for f in await LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.3).discover()
    }
    assert again[0].outcome is not None and again[0].outcome.reason == outcome.reason


async def test_a_restarted_agent_kills_the_leftovers_of_a_dead_supervisor(
    ex: LocalExecutor, tmp_path: Path
) -> None:
    out = tmp_path / "child.pid"
    a = assignment(py(SETSID_CHILD.format(out=str(out)) + "import time; time.sleep(60)\n"))
    await ex.launch(a, slice_env(a))
    await until(lambda: pid_in(out), "the setsid child")
    started = json.loads((ex.root / "job-1" / "0" / "1" / "started.json").read_text())
    # The agent is gone (SIGKILL: nobody waits on the slice), then its supervisor dies.
    os.kill(started["supervisor"], 9)
    await until(lambda: not alive(started["supervisor"]), "the supervisor to die")
    assert alive(started["pid"]) and alive(pid_in(out))
    again = LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.3, tracking=ex.tracking)
    (found,) = await again.discover()
    assert found.outcome is not None and found.outcome.reason is not None
    assert found.outcome.reason.startswith("vanished: gone when the agent restarted; killed 2")
    assert not alive(started["pid"]) and not alive(pid_in(out))
    await ex.wait(a.key)  # the first executor's child, reaped


async def test_a_stop_reaches_a_setsid_grandchild_that_ignores_sigterm(
    ex: LocalExecutor, tmp_path: Path
) -> None:
    out = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'], start_new_session=True)\n"
        f"open({str(out)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    a = assignment(py(code))
    await ex.launch(a, slice_env(a))
    await until(lambda: pid_in(out), "the grandchild")
    await ex.terminate(a.key, 0.3, "stop")
    outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    assert outcome.killed
    assert not alive(pid_in(out))


@pytest.mark.skipif(not HAS_CGROUP, reason="this host offers no writable cgroup v2")
async def test_cgroup_tracking_puts_the_workload_in_its_own_cgroup(tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.3, tracking="cgroup")
    await ex.renew_lease(time.time())
    a = assignment(py("print(open('/proc/self/cgroup').read())"))
    await ex.launch(a, slice_env(a))
    await asyncio.wait_for(ex.wait(a.key), 20)
    log = (tmp_path / "slices" / "job-1" / "0" / "1" / "output.log").read_text()
    assert "/orrery-" in log and log.strip().endswith("/job-1.0.1")
    assert ex.cgroups is not None and not (ex.cgroups / "job-1.0.1").exists(), "cgroup left"
    await ex.close()
    assert not ex.cgroups.exists()


async def test_paths_come_from_validated_ids_only(ex: LocalExecutor, tmp_path: Path) -> None:
    for job in ("../../etc/cron.d", "job-1\n", "a/b", "."):
        a = assignment(py("print(1)"), epoch=1).model_copy(update={"job": job})
        with pytest.raises(LaunchError) as err:
            await ex.launch(a, slice_env(a))
        assert not err.value.retryable
        assert "refused" in err.value.reason
    assert not list((tmp_path / "slices").iterdir()), "a refused slice left a folder"
    assert not (tmp_path.parent / "etc").exists()
    # Numbers the wire would refuse too, should one ever get past it.
    for index, epoch in ((0, 2**70), (2**40, 1), (-1, 1)):
        with pytest.raises(UnsafeKey):
            attempt_name(SliceKey.model_construct(job="job-1", index=index, epoch=epoch))


async def test_folders_and_files_are_private_and_removed_after_retention(
    tmp_path: Path,
) -> None:
    ex = LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.3, retention_s=3600)
    await ex.renew_lease(time.time())
    a = assignment(py("from orrery import workload; workload.report(step=1)"))
    await ex.launch(a, slice_env(a))
    await asyncio.wait_for(ex.wait(a.key), 20)
    folder, work = tmp_path / "slices" / "job-1" / "0" / "1", tmp_path / "work" / "job-1.0.1"
    for d in (tmp_path / "slices", folder, work):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in folder.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stat.S_IMODE((tmp_path / "lease").stat().st_mode) == 0o600
    assert ex.progress(a.key) is not None
    await ex.release(a.key)
    assert folder.exists() and work.exists(), "removed before its retention"
    ex.retention_s = 0
    await ex.release(a.key)
    assert not folder.exists() and not work.exists()
    assert not (tmp_path / "slices" / "job-1").exists()


async def test_progress_is_not_read_through_a_link(ex: LocalExecutor, tmp_path: Path) -> None:
    a = assignment(
        py(f"import os; os.symlink({str(tmp_path / 'secret')!r}, os.environ[{PROGRESS!r}])")
    )
    (tmp_path / "secret").write_text(json.dumps({"step": 99}))
    await ex.launch(a, slice_env(a))
    await asyncio.wait_for(ex.wait(a.key), 20)
    assert ex.progress(a.key) is None


async def test_a_command_that_cannot_start_is_a_workload_failure(ex: LocalExecutor) -> None:
    a = assignment(["/no/such/trainer"])
    await ex.launch(a, slice_env(a))
    outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    assert outcome.exit_code == 127
    assert outcome.reason is not None and "/no/such/trainer" in outcome.reason


async def test_the_environment_is_allow_listed(
    ex: LocalExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORRERY_TOKEN", "agent-secret")
    a = assignment(py("import os, json; print(json.dumps(dict(os.environ)))"))
    await ex.launch(a, slice_env(a))
    await asyncio.wait_for(ex.wait(a.key), 20)
    log = (ex.root / "job-1" / "0" / "1" / "output.log").read_text()
    env = json.loads(log.strip().splitlines()[-1])
    assert "ORRERY_TOKEN" not in env
    assert env["HOME"] == str(ex.work / "job-1.0.1")
    assert env["USER_VAR"] == "x" and env["ORRERY_JOB"] == "job-1"
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "TZ", "CUDA_VISIBLE_DEVICES", "USER_VAR"}
    extra = {k for k in env if k not in allowed and not k.startswith("ORRERY_")}
    assert extra <= {
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "PYTHONUNBUFFERED",
        "LC_CTYPE",
    }, extra


def test_root_slices_are_refused_unless_allowed() -> None:
    if not ROOT:
        pytest.skip("the agent is not root here")
    with pytest.raises(InvalidInput, match="--run-as: slices would run as root"):
        resolve_slice_user(None, allow_root=False)
    with pytest.raises(InvalidInput, match="--run-as: slices would run as root"):
        resolve_slice_user("root", allow_root=False)
    assert not resolve_slice_user(None, allow_root=True).switch
    with pytest.raises(InvalidInput, match="no such user"):
        resolve_slice_user("no-such-user-here", allow_root=False)
    nobody = resolve_slice_user("nobody", allow_root=False)
    assert nobody.switch and nobody.uid != 0


@pytest.fixture
def open_state() -> Iterator[Path]:
    """A state folder the slice user can reach (pytest's tmp_path is closed to it)."""
    d = Path(tempfile.mkdtemp(prefix="orrery-iso-"))
    os.chmod(d, 0o711)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(not ROOT or not os.path.exists(SYSTEM_PYTHON), reason="needs root")
async def test_slices_run_as_the_slice_user_and_cannot_touch_the_lease(open_state: Path) -> None:
    user = resolve_slice_user("nobody", allow_root=False)
    ex = LocalExecutor(open_state, lease_s=30, kill_grace_s=0.3, user=user)
    check_reachable(ex.work, user)
    await ex.renew_lease(time.time())
    code = (
        "import os, json\n"
        "r = {'uid': os.getuid(), 'gid': os.getgid(), 'cwd': os.getcwd()}\n"
        f"for name, path in [('lease', {str(open_state / 'lease')!r}),"
        f" ('slices', {str(open_state / 'slices')!r})]:\n"
        "    try:\n"
        "        os.utime(path); r[name] = 'writable'\n"
        "    except OSError as e:\n"
        "        r[name] = type(e).__name__\n"
        "print(json.dumps(r))\n"
    )
    a = assignment([SYSTEM_PYTHON, "-c", code])
    await ex.launch(a, slice_env(a))
    outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    assert outcome.exit_code == 0
    log = (ex.root / "job-1" / "0" / "1" / "output.log").read_text()
    r = json.loads(log.strip().splitlines()[-1])
    assert (r["uid"], r["gid"]) == (user.uid, user.gid)
    assert r["cwd"] == str(ex.work / "job-1.0.1")
    assert r["lease"] == "PermissionError" and r["slices"] == "PermissionError"
    assert (ex.work / "job-1.0.1").stat().st_uid == user.uid
    await ex.close()


@pytest.mark.skipif(not ROOT, reason="needs root")
def test_a_state_folder_the_slice_user_cannot_reach_is_a_clear_error(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(InvalidInput, match="--state: slice user 'nobody' cannot reach"):
        check_reachable(closed, resolve_slice_user("nobody", allow_root=False))


def test_unknown_tracking_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--slice-tracking"):
        LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.3, tracking="magic")
