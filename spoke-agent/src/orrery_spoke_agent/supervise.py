"""The small supervisor each local slice runs under: ``python -m orrery_spoke_agent.supervise DIR``.

It holds the spoke's lease on the slice's behalf. The agent touches a lease file each time
the hub answers a heartbeat; if the file goes stale for longer than the lease — the agent
was SIGKILLed, or is cut off from the hub — the supervisor stops the workload itself. So a
slice never outlives its lease, whatever happens to the agent, and the hub (whose failover
timeout is longer than lease + kill grace) only places it elsewhere after it has stopped.

It also leaves the markers a restarted agent adopts slices by:

    DIR/launch.json    what to run (written by the agent)
    DIR/started.json   workload pid and start time
    DIR/stop.json      the agent's stop order (reason, grace), followed by SIGTERM
    DIR/exit.json      exit code, reason, start and end times — written after the whole
                       process group is gone, so its ``finished_at`` is a true upper bound
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
from pathlib import Path
from typing import Any

POLL_S = 0.05


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> int:
    _killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def run(folder: Path) -> int:
    cfg = json.loads((folder / "launch.json").read_text())
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

    started = time.time()
    try:
        with open(folder / "output.log", "ab") as log:
            proc = subprocess.Popen(
                cfg["command"],
                env=cfg["env"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cfg.get("cwd"),
            )
    except OSError as exc:
        # The command cannot start (no such file, permission denied, exec format error):
        # the workload's fault, which no retry mends. Say so in the exit record (127/126,
        # as a shell would); dying here instead would read as a supervisor that vanished.
        write_json(
            folder / "exit.json",
            {
                "code": 127 if isinstance(exc, FileNotFoundError) else 126,
                "reason": f"launch failed: cannot exec {cfg['command'][0]!r}: "
                f"{exc.strerror or exc}",
                "killed": False,
                "launch_failed": True,
                "started_at": started,
                "finished_at": time.time(),
            },
        )
        return 0
    write_json(
        folder / "started.json", {"pid": proc.pid, "started_at": started, "supervisor": os.getpid()}
    )
    reason: str | None = None
    killed = False
    while True:
        try:
            rc = proc.wait(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        now = time.time()
        if stop_requested:
            try:
                stop = json.loads((folder / "stop.json").read_text())
            except (OSError, ValueError):
                stop = {}
            reason = stop.get("reason") or "stopped by the agent"
            rc = _stop_group(proc, float(stop.get("grace_s", grace)))
            killed = True
            break
        try:
            age = now - lease_file.stat().st_mtime
        except OSError:
            age = float("inf")
        if age > lease_s:
            reason = f"lease lapsed: no word from the hub for {age:.1f}s (lease {lease_s}s)"
            rc = _stop_group(proc, grace)
            killed = True
            break
        if max_runtime is not None and now - started > float(max_runtime):
            reason = f"maxRuntime exceeded ({max_runtime}s)"
            rc = _stop_group(proc, grace)
            break
    # Whatever the workload forked stays in its group: make sure none of it survives.
    _killpg(proc.pid, signal.SIGKILL)
    finished = time.time()
    code = rc if rc >= 0 else 128 - rc
    if rc < 0 and reason is None:
        reason = f"killed by signal {signal.Signals(-rc).name}"
    write_json(
        folder / "exit.json",
        {
            "code": code,
            "reason": reason,
            "killed": killed,
            "started_at": started,
            "finished_at": finished,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
