"""The spoke agent's decisions, with no IO: what it knows of each attempt, and what to do
when an order, a heartbeat reply, an ending or a tick arrives. Every handler takes the
time as an argument and returns the effects the shell (``agent.py``) carries out, in order.

Fencing: only the newest epoch of a slice runs. An assignment older than one already held
is ignored; a newer one supersedes (terminates) the older. A kill leaves a tombstone, so a
late, older assignment never starts; a kill for an attempt never held is answered with a
Killed report so the hub can close it.

Lease: each acknowledged heartbeat renews it, dated from when that heartbeat was *sent*
(never later than when the hub received it and started its failover clock). With no ack
for longer than the lease while a slice runs, every slice is stopped, and assignments are
ignored (the hub resends them) until acks come back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from orrery.wire import Assignment, HeartbeatAck, Kill, SliceKey, SlicePhase
from orrery.wire.messages import clip
from orrery_spoke_agent.executor.base import Outcome
from orrery_spoke_agent.inventory import Node

Cause = Literal["workload", "platform"]


@dataclass(frozen=True)
class SliceId:
    """A slice across its epochs: what a tombstone fences."""

    job: str
    index: int

    @classmethod
    def of(cls, key: SliceKey) -> SliceId:
        return cls(key.job, key.index)


@dataclass
class Attempt:
    a: Assignment
    phase: SlicePhase
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    cause: Cause | None = None  # why it failed, where known

    @property
    def key(self) -> SliceKey:
        return self.a.key


# ---- effects: what the shell does, in the order given ------------------------------------


@dataclass(frozen=True)
class Launch:
    assignment: Assignment


@dataclass(frozen=True)
class Watch:
    """Wait for the attempt's end (then call ``on_outcome``)."""

    key: SliceKey


@dataclass(frozen=True)
class Terminate:
    key: SliceKey
    grace_s: float
    reason: str


@dataclass(frozen=True)
class StopAll:
    """The lease lapsed: terminate every attempt still running."""

    reason: str
    keys: tuple[SliceKey, ...]
    grace_s: float


@dataclass(frozen=True)
class Release:
    """The hub recorded the attempt's end: the executor may drop what it keeps of it."""

    key: SliceKey


@dataclass(frozen=True)
class SendStatus:
    key: SliceKey


@dataclass(frozen=True)
class RenewLease:
    sent_at: float


@dataclass(frozen=True)
class Note:
    """A line for the log (the state decides what is worth saying; the shell says it)."""

    level: Literal["info", "warning", "error"]
    message: str
    key: SliceKey | None = None
    fields: tuple[tuple[str, object], ...] = ()


Effect = Launch | Watch | Terminate | StopAll | Release | SendStatus | RenewLease | Note


def ghost(k: Kill) -> Assignment:
    """The assignment standing in for a killed attempt this spoke never had."""
    return Assignment(
        sender="hub",
        seq=0,
        job=k.job,
        job_name=k.job,
        index=k.index,
        epoch=k.epoch,
        world_size=1,
        node="-",
        master_addr="-",
        master_port=1,
        command=["-"],
        checkpoint_dir="-",
    )


class SpokeState:
    def __init__(
        self,
        cluster: str,
        nodes: Collection[Node],
        *,
        lease_s: float,
        kill_grace_s: float,
        started_at: float,
    ) -> None:
        self.cluster = cluster
        self.nodes: dict[str, Node] = {n.name: n for n in nodes}
        self.lease_s = lease_s
        self.kill_grace_s = kill_grace_s
        self.attempts: dict[SliceKey, Attempt] = {}
        self.tombstones: dict[SliceId, int] = {}  # slice -> newest epoch killed
        self.started_at = started_at
        self.last_ack: float | None = None  # the send time of the newest acked heartbeat
        self.lease_lapsed = False

    # ---- queries ------------------------------------------------------------------------

    def running(self) -> list[Attempt]:
        return [at for at in self.attempts.values() if not at.phase.terminal]

    def used_gpus(self) -> Mapping[str, set[int]]:
        used: dict[str, set[int]] = {}
        for at in self.running():
            used.setdefault(at.a.node, set()).update(at.a.gpus)
        return used

    def silent_for(self, now: float) -> float:
        return now - (self.last_ack if self.last_ack is not None else self.started_at)

    # ---- events -------------------------------------------------------------------------

    def on_adopted(
        self,
        a: Assignment,
        started_at: float | None,
        outcome: Outcome | None,
    ) -> list[Effect]:
        """An attempt an earlier incarnation left behind (running, or ended unreported)."""
        at = Attempt(a, SlicePhase.RUNNING, started_at=started_at)
        self.attempts[a.key] = at
        if outcome is None:
            return [Note("info", "adopted running slice", a.key), Watch(a.key)]
        self._finish(at, outcome)
        return [Note("info", "found ended slice", a.key, (("phase", at.phase.value),))]

    def on_assignment(
        self, a: Assignment, now: float, *, known_nodes: Collection[str] | None = None
    ) -> list[Effect]:
        """``known_nodes``: the executor's own view of the cluster's nodes, where it has one
        (Kubernetes); else the declared nodes and this agent's GPU bookkeeping decide."""
        key = a.key
        if self.tombstones.get(SliceId.of(key), -1) >= a.epoch:
            return []  # killed before it arrived: never start it
        if key in self.attempts:
            return []  # a resend: already have it
        same = [at for k, at in self.attempts.items() if SliceId.of(k) == SliceId.of(key)]
        if any(at.a.epoch > a.epoch for at in same):
            return []  # a newer epoch is held already
        out: list[Effect] = [
            Terminate(old.key, self.kill_grace_s, clip(f"superseded by epoch {a.epoch}"))
            for old in same
            if not old.phase.terminal
        ]
        if self.lease_lapsed:
            return out  # the hub will resend once it hears from us again
        problem = self._misfit(a, known_nodes)
        if problem:
            self.attempts[key] = Attempt(
                a,
                SlicePhase.FAILED,
                finished_at=now,
                reason=clip(problem),
                cause="platform",  # this spoke's state, not the workload
            )
            return [
                *out,
                Note("info", "refused assignment", key, (("reason", problem),)),
                SendStatus(key),
            ]
        self.attempts[key] = Attempt(a, SlicePhase.STARTING)
        return [*out, Launch(a)]

    def on_launched(self, key: SliceKey, started_at: float) -> list[Effect]:
        at = self.attempts.get(key)
        if at is None or at.phase is not SlicePhase.STARTING:
            return []
        at.started_at, at.phase = started_at, SlicePhase.RUNNING
        fields = (("node", at.a.node), ("gpus", ",".join(map(str, at.a.gpus))))
        return [Note("info", "slice started", key, fields), Watch(key), SendStatus(key)]

    def on_launch_failed(
        self, key: SliceKey, reason: str, retryable: bool, now: float
    ) -> list[Effect]:
        at = self.attempts.get(key)
        if at is None:
            return []
        at.phase, at.reason, at.finished_at = SlicePhase.FAILED, clip(reason), now
        # Retryable: the platform failed (try again, elsewhere); not: the job never can.
        at.cause = "platform" if retryable else "workload"
        return [Note("info", "launch failed", key, (("reason", reason),)), SendStatus(key)]

    def on_kill(self, k: Kill, now: float) -> list[Effect]:
        sid = SliceId(k.job, k.index)
        self.tombstones[sid] = max(self.tombstones.get(sid, -1), k.epoch)
        out: list[Effect] = []
        hit = False
        for key, at in list(self.attempts.items()):
            if SliceId.of(key) == sid and key.epoch <= k.epoch:
                hit = hit or key.epoch == k.epoch
                if not at.phase.terminal:
                    out += [
                        Note("info", "killing slice", key, (("reason", k.reason),)),
                        Terminate(key, k.grace_s, k.reason or "killed by hub"),
                    ]
        if not hit:
            # Never had it: say so, so the hub can close that attempt.
            a = ghost(k)
            self.attempts[a.key] = Attempt(
                a,
                SlicePhase.KILLED,
                finished_at=now,
                reason="killed before it started",
                cause="platform",
            )
            out.append(SendStatus(a.key))
        return out

    def on_outcome(self, key: SliceKey, outcome: Outcome) -> list[Effect]:
        at = self.attempts.get(key)
        if at is None:
            return []
        self._finish(at, outcome)
        fields = (("phase", at.phase.value), ("exit_code", at.exit_code), ("reason", at.reason))
        return [Note("info", "slice ended", key, fields), SendStatus(key)]

    def on_ack(self, ack: HeartbeatAck, sent_at: float) -> list[Effect]:
        """A reply to the heartbeat sent at ``sent_at``."""
        if not ack.accepted:
            return [Note("error", f"hub refused this spoke: {ack.reason}")]
        out: list[Effect] = []
        if self.lease_lapsed:
            out.append(Note("info", "hub answers again; lease renewed"))
        self.lease_lapsed = False
        self.last_ack = sent_at if self.last_ack is None else max(self.last_ack, sent_at)
        out.append(RenewLease(sent_at))
        for key in ack.forget:
            at = self.attempts.get(key)
            if at is not None and at.phase.terminal:
                del self.attempts[key]
                out.append(Release(key))
        return out

    def on_tick(self, now: float) -> list[Effect]:
        """After each heartbeat: has the lease lapsed?"""
        since = self.silent_for(now)
        running = self.running()
        if since <= self.lease_s or not running or self.lease_lapsed:
            return []
        self.lease_lapsed = True
        return [
            Note(
                "warning",
                "lease lapsed: stopping every slice",
                None,
                (("silent_s", round(since, 1)),),
            ),
            StopAll(
                f"lease lapsed: no reply from the hub for {since:.1f}s",
                tuple(at.key for at in running),
                self.kill_grace_s,
            ),
        ]

    def on_shutdown(self) -> list[Effect]:
        running = tuple(at.key for at in self.running())
        return [StopAll("agent shutting down", running, self.kill_grace_s)] if running else []

    # ---- rules --------------------------------------------------------------------------

    def _misfit(self, a: Assignment, known_nodes: Collection[str] | None) -> str | None:
        lost = f"node lost: {a.node!r} is not a node of {self.cluster}"
        if known_nodes is not None:
            return None if a.node in known_nodes else lost
        node = self.nodes.get(a.node)
        if node is None:
            return lost
        bad = [g for g in a.gpus if not 0 <= g < node.gpus]
        if bad:
            return f"node lost: {a.node} has no GPU {bad}"
        busy = self.used_gpus().get(a.node, set()) & set(a.gpus)
        if busy:
            return f"gpus busy: {a.node} GPUs {sorted(busy)} are in use"
        return None

    @staticmethod
    def _finish(at: Attempt, o: Outcome) -> None:
        at.exit_code = o.exit_code
        at.reason = clip(o.reason) if o.reason is not None else None
        at.finished_at = o.finished_at
        if o.killed:
            at.phase = SlicePhase.KILLED
            at.cause = "platform"  # stopped on an order, a lapsed lease, a shutdown
        elif o.exit_code == 0:
            at.phase = SlicePhase.SUCCEEDED
        else:
            at.phase = SlicePhase.FAILED
            # Its own exit code (a launch that cannot exec included: 126/127) is the
            # workload's; with none, the executor lost track or the platform stopped it,
            # and the reason says which (the hub reads its prefix).
            at.cause = "workload" if o.exit_code is not None else None


__all__ = [
    "Attempt",
    "Effect",
    "Launch",
    "Note",
    "Release",
    "RenewLease",
    "SendStatus",
    "SliceId",
    "SpokeState",
    "StopAll",
    "Terminate",
    "Watch",
]
