"""Local executor: each slice a tracked process tree under a supervisor (see ``supervise``).

Attempts live in ``STATE/slices/<job>/<index>/<epoch>/`` (0700, the agent's: markers, the
launch record, the log) with the workload's own folder (its HOME, where it reports
progress) in ``STATE/work/<job>.<index>.<epoch>/`` (0700, the slice user's). A restarted
agent adopts what still runs and reports what ended while it was away. Slices run as the
configured slice user with an allow-listed environment; ``CUDA_VISIBLE_DEVICES`` carries
the GPU indices the hub chose. Both folders are removed ``retention_s`` after the hub has
recorded the attempt's end. Reading those folders back (how an attempt ended, a vanished
supervisor's leftovers, retention) is ``local_records``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from orrery.natsserver import free_port
from orrery.service_manifest import SERVICE_ENV
from orrery.wire import Assignment, NodeReport, Progress, SliceKey
from orrery_spoke_agent.executor import local_records as records
from orrery_spoke_agent.executor import secrets
from orrery_spoke_agent.executor.base import Found, LaunchError, LogMissing, LogStream, Outcome
from orrery_spoke_agent.executor.local_host import (
    SliceUser,
    UnsafeKey,
    attempt_name,
    cgroup_parent,
    private_dir,
    read_small,
)
from orrery_spoke_agent.executor.logfile import FileLog
from orrery_spoke_agent.supervise import remove_cgroup, write_json

log = logging.getLogger("orrery.spoke.local")
SUPERVISOR = str(Path(__file__).resolve().parent.parent / "supervise.py")
ADOPTED_POLL_S = 0.2
SWEEP_EVERY_S = 30.0
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# The only variables of the agent's own environment a slice sees (besides the contract's
# and the manifest's): credentials the agent holds never leak into workloads.
PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ")


class LocalExecutor:
    name = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        lease_s: float,
        kill_grace_s: float,
        user: SliceUser | None = None,
        tracking: str = "auto",
        retention_s: float = 86400.0,
        secrets_dir: Path | None = None,
    ) -> None:
        self.secrets_dir = secrets_dir
        self.state_dir = state_dir
        self.root = state_dir / "slices"
        self.work = state_dir / "work"
        private_dir(self.root)
        self.work.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self.work, 0o711)  # the slice user may pass through to its own folder only
        self.lease_file = state_dir / "lease"
        self.lease_s = lease_s
        self.kill_grace_s = kill_grace_s
        self.user = user
        self.retention_s = retention_s
        self.cgroups = cgroup_parent(state_dir, tracking)
        self.tracking = "cgroup" if self.cgroups is not None else "pgroup"
        self._procs: dict[tuple[str, int, int], asyncio.subprocess.Process] = {}
        self._pids: dict[tuple[str, int, int], int] = {}  # adopted supervisors
        self._swept = 0.0
        log.info(
            "local slices: tracked by %s, run as %s",
            self.tracking,
            user.name if user else f"uid {os.geteuid()}",
        )

    def _dir(self, key: SliceKey) -> Path:
        job, index, epoch = attempt_name(key)
        return self.root / job / index / epoch

    def _work(self, key: SliceKey) -> Path:
        return self.work / ".".join(attempt_name(key))

    @staticmethod
    def _k(key: SliceKey) -> tuple[str, int, int]:
        return (key.job, key.index, key.epoch)

    def _env(
        self, a: Assignment, env: Mapping[str, str], work: Path, marker: str
    ) -> dict[str, str]:
        full = {k: os.environ[k] for k in PASSED_THROUGH if k in os.environ}
        # `python` in a command means the Python this agent runs on, so the workload
        # helper (orrery.workload) is importable without further setup.
        full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full.get('PATH', DEFAULT_PATH)}"
        full["HOME"] = str(work)
        if self.user is not None and self.user.switch:
            full["USER"] = full["LOGNAME"] = self.user.name
        full.update(env)
        full["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in a.gpus)
        full["ORRERY_PROGRESS_FILE"] = str(work / "progress.json")
        full["PYTHONUNBUFFERED"] = "1"
        name, value = marker.split("=", 1)
        full[name] = value
        return full

    async def launch(self, a: Assignment, env: Mapping[str, str]) -> float:
        try:
            folder, work = self._dir(a.key), self._work(a.key)
        except UnsafeKey as exc:
            raise LaunchError(f"refused: {exc}", retryable=False) from None
        try:
            env = {**env, **secrets.resolve(a, self.secrets_dir)}
        except secrets.MissingSecret as exc:
            # The job's configuration, not this host's health: it counts against maxRetries.
            raise LaunchError(exc.reason, retryable=False) from None
        private_dir(folder.parent.parent)
        private_dir(folder.parent)
        private_dir(folder)
        private_dir(work, self.user)
        if SERVICE_ENV in a.env:
            # A serving replica listens on a port this host has free, named in $PORT and
            # reported to the hub (its endpoint) so gateways can reach it.
            port = free_port("0.0.0.0")
            env = {**env, "PORT": str(port)}
            (folder / "port").write_text(str(port))
        for stale in ("exit.json", "stop.json", "started.json", "released"):
            (folder / stale).unlink(missing_ok=True)
        cgroup = None
        if self.cgroups is not None:
            cg = self.cgroups / ".".join(attempt_name(a.key))
            try:
                cg.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LaunchError(f"cannot create the slice's cgroup {cg}: {exc}") from None
            cgroup = str(cg)
        marker = f"ORRERY_ATTEMPT={self.state_dir.resolve()}:{'.'.join(attempt_name(a.key))}"
        switch = self.user is not None and self.user.switch
        launch = {
            "command": a.command,
            "env": self._env(a, env, work, marker),
            "lease_file": str(self.lease_file),
            "lease_s": self.lease_s,
            "grace_s": self.kill_grace_s,
            "max_runtime_s": a.max_runtime_s,
            # As another user the agent's own folder may be closed to it: start at home.
            "cwd": str(work) if switch else os.getcwd(),
            "marker": marker,
            "cgroup": cgroup,
            "user": (
                {"uid": self.user.uid, "gid": self.user.gid, "groups": list(self.user.groups)}
                if self.user is not None and switch
                else None
            ),
        }
        write_json(folder / "assignment.json", json.loads(a.model_dump_json()))
        write_json(folder / "launch.json", launch)
        started = time.time()
        err_fd = os.open(folder / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # The supervisor is stdlib only: run its file with -S -E (no site, no PYTHON*
            # variables), which halves its start-up. Eight slices start eight of them.
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-S",
                "-E",
                SUPERVISOR,
                str(folder),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=err_fd,
                start_new_session=True,  # not in the agent's group: survives its crash
            )
        except OSError as exc:
            raise LaunchError(f"cannot start supervisor: {exc}") from None
        finally:
            os.close(err_fd)  # the child has its own copy
        self._procs[self._k(a.key)] = proc
        return started

    async def wait(self, key: SliceKey) -> Outcome:
        k = self._k(key)
        folder = self._dir(key)
        proc = self._procs.get(k)
        if proc is not None:
            await proc.wait()
            self._procs.pop(k, None)
        else:
            pid = self._pids.get(k)
            # Not our child (adopted after a restart): there is no wait() to block on, so poll.
            while pid is not None and records.alive(pid) and not (folder / "exit.json").exists():  # noqa: ASYNC110
                await asyncio.sleep(ADOPTED_POLL_S)
            self._pids.pop(k, None)
        return records.outcome(folder) or await records.vanished(folder, "its supervisor died")

    async def terminate(self, key: SliceKey, grace_s: float, reason: str) -> None:
        k = self._k(key)
        try:
            folder = self._dir(key)
        except UnsafeKey:
            return  # never launched here
        if folder.exists():
            write_json(folder / "stop.json", {"reason": reason, "grace_s": grace_s})
        proc = self._procs.get(k)
        pid = proc.pid if proc is not None else self._pids.get(k)
        if pid is not None:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass

    def progress(self, key: SliceKey) -> Progress | None:
        try:
            raw = read_small(self._work(key) / "progress.json")
            if raw is None:
                return None
            data = json.loads(raw)
            data.pop("_written", None)
            return Progress.model_validate(data)
        except (UnsafeKey, ValueError, ValidationError, AttributeError):
            return None

    async def open_log(self, key: SliceKey, *, tail_lines: int | None, follow: bool) -> LogStream:
        try:
            folder = self._dir(key)
        except UnsafeKey:
            raise LogMissing("no such attempt") from None
        if not (folder / "assignment.json").exists():
            raise LogMissing("its files are not on this cluster (removed after retention)")
        done = folder / "exit.json"
        return FileLog(folder / "output.log", tail_lines=tail_lines, follow=follow,
                       ended=done.exists)

    def listen_port(self, key: SliceKey) -> int | None:
        try:
            return int((self._dir(key) / "port").read_text())
        except (UnsafeKey, OSError, ValueError):
            return None

    def capacity(self) -> list[NodeReport] | None:
        return None  # declared nodes; the agent subtracts its own slices

    async def discover(self) -> list[Found]:
        self._sweep(time.time())
        found: list[Found] = []
        for a_file in sorted(self.root.glob("*/*/*/assignment.json")):
            folder = a_file.parent
            if (folder / "released").exists():
                continue
            try:
                a = Assignment.model_validate_json(a_file.read_text())
                if self._dir(a.key) != folder:
                    raise UnsafeKey(f"{folder} does not match its assignment")
            except (OSError, ValueError, UnsafeKey):
                # Quarantined, not fatal and not retried on every start: the file is kept
                # beside its old name for a person to read.
                log.warning("unreadable attempt markers in %s; quarantined", folder)
                with contextlib.suppress(OSError):
                    a_file.rename(a_file.with_name("assignment.json.quarantined"))
                continue
            started_at = None
            sup_pid = None
            try:
                st = json.loads((folder / "started.json").read_text())
                started_at = float(st["started_at"])
                sup_pid = int(st["supervisor"])
            except (OSError, ValueError, KeyError):
                pass
            outcome = records.outcome(folder)
            if outcome is not None:
                found.append(Found(a, started_at, outcome))
            elif (sup_pid is not None and records.alive(sup_pid)
                  and str(folder) in records.cmdline(sup_pid)):
                self._pids[self._k(a.key)] = sup_pid
                found.append(Found(a, started_at, None))
            else:
                gone = await records.vanished(folder, "gone when the agent restarted")
                found.append(Found(a, started_at, gone))
        return found

    async def release(self, key: SliceKey) -> None:
        try:
            folder = self._dir(key)
        except UnsafeKey:
            return
        if folder.exists():
            write_json(folder / "released", {"at": time.time()})
        self._sweep(time.time(), force=True)

    def _sweep(self, now: float, *, force: bool = False) -> None:
        """Remove attempts the hub recorded as ended more than ``retention_s`` ago."""
        if not force and now - self._swept < SWEEP_EVERY_S:
            return
        self._swept = now
        records.remove_expired(self.root, self.work, self.cgroups, self.retention_s, now)

    async def renew_lease(self, now: float) -> None:
        if not self.lease_file.exists():
            # The agent's, 0600: a slice running as another user cannot keep itself alive.
            os.close(os.open(self.lease_file, os.O_WRONLY | os.O_CREAT, 0o600))
        os.utime(self.lease_file, (now, now))
        self._sweep(now)

    async def close(self) -> None:
        remove_cgroup(str(self.cgroups) if self.cgroups is not None else None)  # if empty
