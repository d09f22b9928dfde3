"""Local executor: each slice a process group under a supervisor (see ``supervise``).

Attempts live in ``STATE/slices/<job>/<index>/<epoch>/`` with their markers and log, so a
restarted agent can adopt what still runs and report what ended while it was away.
``CUDA_VISIBLE_DEVICES`` carries the GPU indices the hub chose.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from orrery.wire import Assignment, NodeReport, Progress, SliceKey
from orrery_spoke_agent.executor.base import Found, LaunchError, Outcome

log = logging.getLogger("orrery.spoke.local")
SUPERVISOR = str(Path(__file__).resolve().parent.parent / "supervise.py")
ADOPTED_POLL_S = 0.2


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as dead: it ran its course and waits to be reaped.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


class LocalExecutor:
    name = "local"

    def __init__(self, state_dir: Path, *, lease_s: float, kill_grace_s: float) -> None:
        self.root = state_dir / "slices"
        self.root.mkdir(parents=True, exist_ok=True)
        self.lease_file = state_dir / "lease"
        self.lease_s = lease_s
        self.kill_grace_s = kill_grace_s
        self._procs: dict[tuple[str, int, int], asyncio.subprocess.Process] = {}
        self._pids: dict[tuple[str, int, int], int] = {}  # adopted supervisors

    def _dir(self, key: SliceKey) -> Path:
        return self.root / key.job / str(key.index) / str(key.epoch)

    @staticmethod
    def _k(key: SliceKey) -> tuple[str, int, int]:
        return (key.job, key.index, key.epoch)

    async def launch(self, a: Assignment, env: Mapping[str, str]) -> float:
        folder = self._dir(a.key)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in ("exit.json", "stop.json", "started.json", "released"):
            (folder / stale).unlink(missing_ok=True)
        full = dict(os.environ)
        full.update(env)
        # `python` in a command means the Python this agent runs on, so the workload
        # helper (orrery.workload) is importable without further setup.
        full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{full.get('PATH', '')}"
        full["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in a.gpus)
        full["ORRERY_PROGRESS_FILE"] = str(folder / "progress.json")
        full["PYTHONUNBUFFERED"] = "1"
        launch = {
            "command": a.command,
            "env": full,
            "lease_file": str(self.lease_file),
            "lease_s": self.lease_s,
            "grace_s": self.kill_grace_s,
            "max_runtime_s": a.max_runtime_s,
            "cwd": os.getcwd(),
        }
        (folder / "assignment.json").write_text(a.model_dump_json())
        (folder / "launch.json").write_text(json.dumps(launch))
        started = time.time()
        err_fd = os.open(folder / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
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

    def _outcome(self, folder: Path, fallback: str) -> Outcome:
        try:
            data = json.loads((folder / "exit.json").read_text())
        except (OSError, ValueError):
            return Outcome(exit_code=None, reason=fallback, finished_at=time.time())
        return Outcome(
            exit_code=int(data["code"]),
            reason=data.get("reason"),
            finished_at=float(data["finished_at"]),
            killed=bool(data.get("killed")),
        )

    async def wait(self, key: SliceKey) -> Outcome:
        k = self._k(key)
        folder = self._dir(key)
        proc = self._procs.get(k)
        if proc is not None:
            await proc.wait()
            self._procs.pop(k, None)
            return self._outcome(folder, "vanished: its supervisor died")
        pid = self._pids.get(k)
        # Not our child (adopted after a restart): there is no wait() to block on, so poll.
        while pid is not None and _alive(pid) and not (folder / "exit.json").exists():  # noqa: ASYNC110
            await asyncio.sleep(ADOPTED_POLL_S)
        self._pids.pop(k, None)
        return self._outcome(folder, "vanished: its supervisor died")

    async def terminate(self, key: SliceKey, grace_s: float, reason: str) -> None:
        k = self._k(key)
        folder = self._dir(key)
        from orrery_spoke_agent.supervise import write_json

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
            raw = (self._dir(key) / "progress.json").read_text()
            data = json.loads(raw)
            data.pop("_written", None)
            return Progress.model_validate(data)
        except (OSError, ValueError, ValidationError):
            return None

    def capacity(self) -> list[NodeReport] | None:
        return None  # declared nodes; the agent subtracts its own slices

    async def discover(self) -> list[Found]:
        found: list[Found] = []
        for a_file in sorted(self.root.glob("*/*/*/assignment.json")):
            folder = a_file.parent
            if (folder / "released").exists():
                continue
            try:
                a = Assignment.model_validate_json(a_file.read_text())
            except (OSError, ValidationError):
                log.warning("unreadable attempt markers in %s; ignoring", folder)
                continue
            started_at = None
            sup_pid = None
            try:
                st = json.loads((folder / "started.json").read_text())
                started_at = float(st["started_at"])
                sup_pid = int(st["supervisor"])
            except (OSError, ValueError, KeyError):
                pass
            if (folder / "exit.json").exists():
                found.append(Found(a, started_at, self._outcome(folder, "")))
            elif sup_pid is not None and _alive(sup_pid) and str(folder) in _cmdline(sup_pid):
                self._pids[self._k(a.key)] = sup_pid
                found.append(Found(a, started_at, None))
            else:
                found.append(
                    Found(
                        a,
                        started_at,
                        Outcome(
                            exit_code=None,
                            reason="vanished: gone when the agent restarted",
                            finished_at=time.time(),
                        ),
                    )
                )
        return found

    async def release(self, key: SliceKey) -> None:
        folder = self._dir(key)
        if folder.exists():
            (folder / "released").touch()

    async def renew_lease(self, now: float) -> None:
        self.lease_file.touch()
        os.utime(self.lease_file, (now, now))

    async def close(self) -> None:
        return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
