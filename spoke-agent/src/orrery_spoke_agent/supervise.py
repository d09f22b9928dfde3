"""The small supervisor each local slice runs under: ``python -S -E supervise.py DIR``.

It holds the spoke's lease on the slice's behalf. The agent touches a lease file each time
the hub answers a heartbeat; if the file goes stale for longer than the lease — the agent
was SIGKILLed, or is cut off from the hub — the supervisor stops the workload itself. So a
slice never outlives its lease, whatever happens to the agent, and the hub (whose failover
timeout is longer than lease + kill grace) only places it elsewhere after it has stopped.

Every process of the slice is tracked, not just the one it started (see ``Track``): in a
cgroup (v2) of its own where the host offers one, else by process group, session, an
environment marker and descent from this supervisor, which makes itself a child subreaper so
that orphans (a ``setsid`` daemon, a double fork) re-parent to it rather than to init. The
exit record is written only once none of them is left, so its ``finished_at`` is a true
upper bound; if this supervisor dies first, the agent kills what remains by the same track.

It leaves the markers a restarted agent adopts slices by:

    DIR/launch.json    what to run, as whom, how to track it (written by the agent)
    DIR/started.json   workload pid and start time
    DIR/stop.json      the agent's stop order (reason, grace), followed by SIGTERM
    DIR/exit.json      exit code, reason, start and end times
    DIR/output.log     the workload's stdout and stderr

Stdlib only: it starts in a few milliseconds and depends on nothing that could break.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POLL_S = 0.05
PR_SET_CHILD_SUBREAPER = 36


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data))
    os.replace(tmp, path)


# ---- tracking every process of a slice --------------------------------------------------


def _stat(pid: int) -> tuple[int, int, int, str] | None:
    """(ppid, process group, session, state) of a live process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), int(rest[2]), int(rest[3]), rest[0]


def _environ_has(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def _all_pids() -> list[int]:
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


@dataclass(frozen=True)
class Track:
    """How to find every live process of one attempt.

    ``cgroup``: the slice's own cgroup folder; its ``cgroup.procs`` is the whole answer.
    Otherwise: processes whose environment holds ``marker``, those in the workload's
    process group or session (``leader``), and descendants of ``supervisor``."""

    marker: str
    cgroup: str | None = None
    leader: int | None = None
    supervisor: int | None = None

    def members(self) -> set[int]:
        me = os.getpid()
        if self.cgroup is not None:
            try:
                raw = Path(self.cgroup, "cgroup.procs").read_text()
            except OSError:
                return set()  # removed: nothing can be in it
            return {p for p in map(int, raw.split()) if p != me and _alive(p)}
        table = {p: s for p in _all_pids() if (s := _stat(p)) is not None}
        found: set[int] = set()
        if self.supervisor is not None:
            frontier = [self.supervisor]
            while frontier:
                parent = frontier.pop()
                kids = [p for p, s in table.items() if s[0] == parent and p not in found]
                found.update(kids)
                frontier.extend(kids)
        marker = self.marker.encode()
        for p, (_, pgrp, sid, _) in table.items():
            in_group = self.leader is not None and self.leader in (pgrp, sid)
            if in_group or (p not in found and _environ_has(p, marker)):
                found.add(p)
        return {p for p in found if p not in (me, self.supervisor) and table[p][3] != "Z"}

    def signal(self, sig: int) -> int:
        """Send ``sig`` to every member; how many there were."""
        pids = self.members()
        if sig == signal.SIGKILL and self.cgroup is not None and pids:
            try:
                Path(self.cgroup, "cgroup.kill").write_text("1")
                return len(pids)
            except OSError:
                pass  # a kernel before 5.14: one by one
        for p in pids:
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        return len(pids)


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[3] != "Z"  # a zombie ran its course


def remove_cgroup(path: str | None) -> None:
    if path is not None:
        try:
            os.rmdir(path)
        except OSError:
            pass  # still populated (the caller checked) or already gone


def make_subreaper() -> bool:
    """Orphans of the workload re-parent to this process instead of init."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


# ---- the supervisor ----------------------------------------------------------------------


class Supervisor:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cfg = json.loads((folder / "launch.json").read_text())
        self.track = Track(marker=self.cfg["marker"], cgroup=self.cfg.get("cgroup"))
        self.main_pid = 0
        self.main_rc: int | None = None

    def _preexec(self) -> None:
        """In the child, before exec: join the slice's cgroup, then drop to the slice user."""
        if self.track.cgroup is not None:
            with open(os.path.join(self.track.cgroup, "cgroup.procs"), "w") as f:
                f.write("0")
        os.umask(0o077)
        user = self.cfg.get("user")
        if user is not None:
            os.setgroups(user["groups"])
            os.setgid(user["gid"])
            os.setuid(user["uid"])

    def start(self) -> None:
        fd = os.open(self.folder / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as log:
            proc = subprocess.Popen(
                self.cfg["command"],
                env=self.cfg["env"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.cfg.get("cwd"),
                preexec_fn=self._preexec,
            )
        self.main_pid = proc.pid
        self.track = Track(
            marker=self.track.marker,
            cgroup=self.track.cgroup,
            leader=proc.pid,
            supervisor=os.getpid(),
        )

    def reap(self) -> None:
        """Collect every exited child: the workload's own status, and re-parented orphans."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main_pid:
                self.main_rc = os.waitstatus_to_exitcode(status)

    def wait_main(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.reap()
            if self.main_rc is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)

    def stop(self, grace: float) -> None:
        """SIGTERM every process of the slice; SIGKILL what is left after ``grace``."""
        self.track.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.track.members():
            self.reap()
            time.sleep(POLL_S)

    def kill_rest(self) -> None:
        """Whatever the workload left behind (a setsid child, a daemon) dies with it."""
        while self.track.signal(signal.SIGKILL):
            self.reap()
            time.sleep(POLL_S / 5)
        self.reap()
        remove_cgroup(self.track.cgroup)


def _exit_record(folder: Path, data: dict[str, Any]) -> None:
    write_json(folder / "exit.json", {**data, "finished_at": time.time()})


def run(folder: Path) -> int:
    sup = Supervisor(folder)
    cfg = sup.cfg
    lease_file = Path(cfg["lease_file"])
    lease_s = float(cfg["lease_s"])
    grace = float(cfg.get("grace_s", 2.0))
    max_runtime = cfg.get("max_runtime_s")
    stop_requested = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    make_subreaper()
    started = time.time()
    try:
        sup.start()
    except (OSError, subprocess.SubprocessError) as exc:
        # The command cannot start (no such file, permission denied, exec format error, a
        # working folder the slice user cannot enter): the workload's fault, which no retry
        # mends. Say so in the exit record (127/126, as a shell would); dying here instead
        # would read as a supervisor that vanished.
        sup.kill_rest()
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        _exit_record(
            folder,
            {
                "code": 127 if isinstance(exc, FileNotFoundError) else 126,
                "reason": f"launch failed: cannot exec {cfg['command'][0]!r}: {detail}"[:500],
                "killed": False,
                "launch_failed": True,
                "started_at": started,
            },
        )
        return 0
    write_json(
        folder / "started.json",
        {"pid": sup.main_pid, "started_at": started, "supervisor": os.getpid()},
    )
    reason: str | None = None
    killed = False
    while not sup.wait_main(POLL_S):
        now = time.time()
        if stop_requested:
            try:
                stop = json.loads((folder / "stop.json").read_text())
            except (OSError, ValueError):
                stop = {}
            stop = stop if isinstance(stop, dict) else {}
            reason = str(stop.get("reason") or "stopped by the agent")[:2048]
            try:
                stop_grace = min(max(float(stop.get("grace_s", grace)), 0.0), 3600.0)
            except (TypeError, ValueError):
                stop_grace = grace
            if stop_grace != stop_grace:  # nan
                stop_grace = grace
            sup.stop(stop_grace)
            killed = True
            break
        try:
            age = now - lease_file.stat().st_mtime
        except OSError:
            age = float("inf")
        if age > lease_s:
            reason = f"lease lapsed: no word from the hub for {age:.1f}s (lease {lease_s}s)"
            sup.stop(grace)
            killed = True
            break
        if max_runtime is not None and now - started > float(max_runtime):
            reason = f"maxRuntime exceeded ({max_runtime}s)"
            sup.stop(grace)
            break
    sup.kill_rest()
    rc = sup.main_rc if sup.main_rc is not None else -signal.SIGKILL
    code = rc if rc >= 0 else 128 - rc
    if rc < 0 and reason is None:
        reason = f"killed by signal {signal.Signals(-rc).name}"
    _exit_record(folder, {"code": code, "reason": reason, "killed": killed, "started_at": started})
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
