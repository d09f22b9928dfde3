"""A local federation's child processes: started with their log, awaited until ready,
and, when one exits, why (from its log).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from orrery.errors import Unavailable


def spawn(args: list[str], log: Path, *, env: Mapping[str, str], cwd: Path
          ) -> subprocess.Popen[bytes]:
    """Start ``args`` in a session of its own, its output appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def why_exited(log: Path, code: int | None) -> str:
    """Why a child exited, from its log: its own one-line error (``orrery ...: why``)
    when it printed one, else its last line; the log's path for the rest."""
    if code is not None and code < 0:  # a signal: its log's last line is not why
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name} (full log: {log})"
    try:
        lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        lines = []
    mine = [x for x in lines if x.startswith("orrery")]
    reason = (mine or lines or [f"exit code {code}"])[-1]
    return f"{reason[:500]} (exit code {code}; full log: {log})"


def wait_ready_file(proc: subprocess.Popen[bytes], ready: Path, log: Path, *, what: str,
                    timeout: float) -> None:
    """Until ``proc`` writes ``ready``; Unavailable, saying why, if it exits first or
    ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            raise Unavailable(f"{what} did not start: {why_exited(log, proc.returncode)}")
        if time.monotonic() > deadline:
            raise Unavailable(f"{what} did not become ready in time")
        time.sleep(0.05)
