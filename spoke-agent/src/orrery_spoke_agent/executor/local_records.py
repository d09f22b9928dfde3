"""A local attempt's records, read back: how it ended, whether its supervisor lives, what
is left of a supervisor that vanished, and the folders of ended attempts past retention.

The supervisor (``supervise``) writes the records into the attempt's folder
(``STATE/slices/<job>/<index>/<epoch>/``): ``launch.json``, ``started.json``,
``exit.json``; the agent adds ``released`` once the hub has recorded the end. The
``LocalExecutor`` reads them here when it waits, adopts and sweeps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import time
from pathlib import Path

from orrery.wire.messages import MAX_REASON
from orrery_spoke_agent.executor.base import Outcome
from orrery_spoke_agent.executor.outputtail import failure_reason
from orrery_spoke_agent.supervise import Track, remove_cgroup, write_json

log = logging.getLogger("orrery.spoke.local")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as dead: it ran its course and waits to be reaped.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def outcome(folder: Path) -> Outcome | None:
    """How the attempt ended, from its exit record; None while it has none (or a
    malformed one)."""
    try:
        data = json.loads((folder / "exit.json").read_text())
        # The workload can write its own folder: every value is checked, none trusted.
        code, reason = data["code"], data.get("reason")
        if reason is None and code not in (None, 0):
            # A failed workload's own last words (stdout and stderr, merged).
            reason = failure_reason(folder / "output.log")
        return Outcome(
            exit_code=None if code is None else int(code),
            reason=str(reason)[:MAX_REASON] if reason is not None else None,
            finished_at=float(data["finished_at"]),
            killed=bool(data.get("killed")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError):
        return None


def track(folder: Path) -> Track:
    """The orphaned process tree of an attempt whose supervisor is gone."""
    cfg = json.loads((folder / "launch.json").read_text())
    leader = None
    try:
        leader = int(json.loads((folder / "started.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        pass
    return Track(marker=cfg["marker"], cgroup=cfg.get("cgroup"), leader=leader)


async def vanished(folder: Path, why: str) -> Outcome:
    """The supervisor died without an exit record (OOM killer, the workload killed it):
    kill every process of the attempt that may still run, and only then call it ended."""
    try:
        tree: Track | None = track(folder)
    except (OSError, ValueError, KeyError):
        tree = None
    most = 0
    while tree is not None and (n := tree.signal(signal.SIGKILL)):
        most = max(most, n)
        await asyncio.sleep(0.02)
    if tree is not None:
        remove_cgroup(tree.cgroup)
    reason = f"vanished: {why}"
    if most:
        reason += f"; killed {most} leftover process(es)"
        log.warning("%s in %s", reason, folder)
    ended = Outcome(exit_code=None, reason=reason, finished_at=time.time())
    write_json(
        folder / "exit.json",
        {"code": None, "reason": reason, "finished_at": ended.finished_at, "vanished": True},
    )
    return ended


def remove_expired(root: Path, work: Path, cgroups: Path | None, retention_s: float,
                   now: float) -> None:
    """Remove attempts the hub recorded as ended more than ``retention_s`` ago: their
    folder under ``root``, the workload's under ``work``, and their cgroup (if left, empty)."""
    for marker in root.glob("*/*/*/released"):
        folder = marker.parent
        try:
            at = float(json.loads(marker.read_text())["at"])
        except (OSError, ValueError, KeyError, TypeError):
            at = marker.stat().st_mtime if marker.exists() else now
        if now - at < retention_s:
            continue
        epoch, index, job = folder.name, folder.parent.name, folder.parent.parent.name
        shutil.rmtree(work / f"{job}.{index}.{epoch}", ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        if cgroups is not None:
            remove_cgroup(str(cgroups / f"{job}.{index}.{epoch}"))  # if left, empty
        for empty in (folder.parent, folder.parent.parent):
            try:
                empty.rmdir()
            except OSError:
                break  # other attempts still there
