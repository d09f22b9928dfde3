"""The executor seam: what the agent needs from whatever runs a slice."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from orrery.wire import Assignment, NodeReport, Progress, SliceKey


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended. ``exit_code`` None: it did not exit on its own (see reason)."""

    exit_code: int | None
    reason: str | None
    finished_at: float
    killed: bool = False


@dataclass(frozen=True)
class Found:
    """An attempt a previous agent incarnation left behind."""

    assignment: Assignment
    started_at: float | None
    outcome: Outcome | None  # None: still running, adopt it


class LaunchError(Exception):
    """The executor could not start a slice. ``retryable``: the hub may try elsewhere."""

    def __init__(self, reason: str, *, retryable: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class LogMissing(Exception):
    """The executor holds no output for that attempt (never ran here, or removed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LogStream(Protocol):
    """One reading of an attempt's output, from where it was opened (see ``open_log``)."""

    async def read(self, max_bytes: int, wait_s: float) -> tuple[bytes, bool]:
        """Up to ``max_bytes`` of output; waits up to ``wait_s`` for some when following.
        The bool: the stream has ended (nothing more will come)."""
        ...

    async def close(self) -> None: ...


class Executor(Protocol):
    name: str

    async def launch(self, a: Assignment, env: Mapping[str, str]) -> float:
        """Start the slice; returns its start time. Raises LaunchError."""
        ...

    async def wait(self, key: SliceKey) -> Outcome:
        """Return when the slice has ended."""
        ...

    async def terminate(self, key: SliceKey, grace_s: float, reason: str) -> None:
        """Stop the slice: SIGTERM (or equivalent), then force after ``grace_s``."""
        ...

    def progress(self, key: SliceKey) -> Progress | None: ...

    def listen_port(self, key: SliceKey) -> int | None:
        """The port a serving replica was given ($PORT), where the executor chose one."""
        ...

    def capacity(self) -> list[NodeReport] | None:
        """Nodes with their free GPUs, where the executor knows better than the agent (a
        Kubernetes cluster shared with other tenants). None: the agent derives free GPUs
        from its declared nodes minus its own running slices."""
        ...

    async def discover(self) -> list[Found]:
        """Attempts left by an earlier incarnation of this agent, by their markers."""
        ...

    async def release(self, key: SliceKey) -> None:
        """The hub has recorded the attempt's end: drop what the executor keeps for it."""
        ...

    async def renew_lease(self, now: float) -> None:
        """The hub answered: slices may keep running for another lease."""
        ...

    async def open_log(self, key: SliceKey, *, tail_lines: int | None, follow: bool) -> LogStream:
        """The attempt's output (stdout and stderr), from ``tail_lines`` lines before its
        end (None: the start). Without ``follow`` it ends at the end of what exists now;
        with it, when the attempt has ended. Raises LogMissing."""
        ...

    async def close(self) -> None: ...


def slice_env(a: Assignment) -> dict[str, str]:
    """The environment every slice gets, whatever runs it (DESIGN.md contract)."""
    env = dict(a.env)
    env.update(
        {
            "ORRERY_JOB": a.job,
            "ORRERY_JOB_NAME": a.job_name,
            "ORRERY_SLICE": str(a.index),
            "ORRERY_EPOCH": str(a.epoch),
            "RANK": str(a.index),
            "WORLD_SIZE": str(a.world_size),
            "LOCAL_RANK": "0",
            "MASTER_ADDR": a.master_addr,
            "MASTER_PORT": str(a.master_port),
            "ORRERY_CHECKPOINT_DIR": a.checkpoint_dir,
        }
    )
    if a.checkpoint:
        env["ORRERY_CHECKPOINT"] = a.checkpoint
    return env
