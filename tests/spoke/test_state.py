"""The spoke's decisions alone: fencing by epoch and the lease, as tables, with a fake clock
and no NATS, no executor, no event loop. Each row is a sequence of events and what the
state must answer."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from orrery.wire import Assignment, HeartbeatAck, Kill, SliceKey, SlicePhase
from orrery_spoke_agent.executor.base import Outcome
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.state import (
    Effect,
    Launch,
    Note,
    Release,
    RenewLease,
    SendStatus,
    SliceId,
    SpokeState,
    StopAll,
    Terminate,
    Watch,
)

LEASE = 10.0
GRACE = 2.0


@dataclass
class Clock:
    now: float = 1000.0

    def advance(self, s: float) -> float:
        self.now += s
        return self.now


@dataclass
class World:
    """A SpokeState driven the way the shell drives it: launches succeed at once."""

    clock: Clock = field(default_factory=Clock)
    state: SpokeState = field(init=False)
    launched: list[SliceKey] = field(default_factory=list)
    terminated: list[tuple[SliceKey, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = SpokeState(
            "c1",
            [Node("n0", "H100", 8, 81920)],
            lease_s=LEASE,
            kill_grace_s=GRACE,
            started_at=self.clock.now,
        )

    def run(self, effects: list[Effect]) -> list[Effect]:
        """Carry out Launch as a successful launch; record terminations."""
        out: list[Effect] = []
        for e in effects:
            out.append(e)
            if isinstance(e, Launch):
                self.launched.append(e.assignment.key)
                out += self.run(self.state.on_launched(e.assignment.key, self.clock.now))
            elif isinstance(e, Terminate):
                self.terminated.append((e.key, e.reason))
            elif isinstance(e, StopAll):
                self.terminated += [(k, e.reason) for k in e.keys]
        return out

    def assign(self, epoch: int, job: str = "j", gpus: tuple[int, ...] = (0,)) -> list[Effect]:
        return self.run(self.state.on_assignment(assign(job, epoch, gpus), self.clock.now))

    def kill(self, epoch: int, job: str = "j") -> list[Effect]:
        k = Kill(sender="hub", seq=1, job=job, index=0, epoch=epoch, reason="moved")
        return self.run(self.state.on_kill(k, self.clock.now))

    def phase(self, epoch: int, job: str = "j") -> SlicePhase | None:
        at = self.state.attempts.get(key(job, epoch))
        return at.phase if at is not None else None


def assign(job: str = "j", epoch: int = 1, gpus: tuple[int, ...] = (0,)) -> Assignment:
    return Assignment(
        sender="hub",
        seq=1,
        job=job,
        job_name=job,
        index=0,
        epoch=epoch,
        world_size=1,
        node="n0",
        gpus=list(gpus),
        master_addr="127.0.0.1",
        master_port=29500,
        command=["x"],
        checkpoint_dir="/ck",
    )


def key(job: str, epoch: int) -> SliceKey:
    return SliceKey(job=job, index=0, epoch=epoch)


def ack(*forget: SliceKey, accepted: bool = True) -> HeartbeatAck:
    return HeartbeatAck(sender="hub", seq=1, accepted=accepted, forget=list(forget))


# ---- fencing ----------------------------------------------------------------------------

# (events, epochs launched, epochs terminated). "aN": assignment of epoch N (on GPUs that
# never clash), "kN": kill of epoch N.
FENCING = [
    (["a1"], [1], []),
    (["a1", "a1"], [1], []),  # a resend is not a second launch
    (["a1", "a2"], [1, 2], [1]),  # a newer epoch supersedes the running one
    (["a2", "a1"], [2], []),  # an older epoch after a newer one never starts
    (["k2", "a2", "a1", "a3"], [3], []),  # the tombstone fences every epoch up to it
    (["a1", "k1", "a1"], [1], [1]),  # killed, then resent: not started again
    (["a1", "k2"], [1], [1]),  # a kill of a newer epoch stops older ones too
    (["a2", "k1"], [2], []),  # a kill of an older epoch leaves the newer one alone
    (["a1", "a3", "a2"], [1, 3], [1]),  # a late middle epoch never starts
]


@pytest.mark.parametrize(("events", "launched", "terminated"), FENCING)
def test_fencing(events: list[str], launched: list[int], terminated: list[int]) -> None:
    w = World()
    for ev in events:
        epoch = int(ev[1:])
        if ev[0] == "a":
            w.assign(epoch, gpus=(epoch,))
        else:
            w.kill(epoch)
    assert [k.epoch for k in w.launched] == launched
    assert [k.epoch for k, _ in w.terminated] == terminated


def test_superseding_terminates_before_it_launches_and_says_why() -> None:
    w = World()
    w.assign(1, gpus=(0,))
    out = w.assign(2, gpus=(1,))
    kinds = [type(e) for e in out if not isinstance(e, Note)]
    assert kinds == [Terminate, Launch, Watch, SendStatus]
    assert w.terminated == [(key("j", 1), "superseded by epoch 2")]


def test_a_kill_of_an_attempt_never_held_is_reported_killed() -> None:
    w = World()
    out = w.kill(4, job="ghost")
    assert out == [SendStatus(key("ghost", 4))]
    at = w.state.attempts[key("ghost", 4)]
    assert (at.phase, at.reason, at.cause) == (
        SlicePhase.KILLED,
        "killed before it started",
        "platform",
    )
    assert w.state.tombstones == {SliceId("ghost", 0): 4}


@pytest.mark.parametrize(
    ("node", "gpus", "reason"),
    [
        ("nope", (0,), "node lost: 'nope' is not a node of c1"),
        ("n0", (8,), "node lost: n0 has no GPU [8]"),
        ("n0", (0, 1), "gpus busy: n0 GPUs [0] are in use"),
    ],
)
def test_an_assignment_that_does_not_fit_fails_as_a_platform_failure(
    node: str, gpus: tuple[int, ...], reason: str
) -> None:
    w = World()
    w.assign(1, job="holder", gpus=(0,))
    a = assign("new", 1, gpus).model_copy(update={"node": node})
    out = w.state.on_assignment(a, w.clock.now)
    assert out[-1] == SendStatus(a.key) and not any(isinstance(e, Launch) for e in out)
    at = w.state.attempts[a.key]
    assert (at.phase, at.reason, at.cause) == (SlicePhase.FAILED, reason, "platform")


def test_the_executors_own_node_list_decides_where_it_has_one() -> None:
    w = World()
    a = assign("k8s", 1).model_copy(update={"node": "pool-a"})
    assert any(isinstance(e, Launch) for e in w.state.on_assignment(a, 0, known_nodes={"pool-a"}))
    b = assign("k8s", 2).model_copy(update={"node": "n0"})
    out = w.state.on_assignment(b, 0, known_nodes={"pool-a"})
    assert not any(isinstance(e, Launch) for e in out)


@pytest.mark.parametrize(
    ("outcome", "phase", "cause"),
    [
        (Outcome(exit_code=0, reason=None, finished_at=1), SlicePhase.SUCCEEDED, None),
        (Outcome(exit_code=3, reason="boom", finished_at=1), SlicePhase.FAILED, "workload"),
        (Outcome(exit_code=None, reason="vanished", finished_at=1), SlicePhase.FAILED, None),
        (Outcome(None, "killed", finished_at=1, killed=True), SlicePhase.KILLED, "platform"),
    ],
)
def test_an_outcome_sets_phase_and_cause(
    outcome: Outcome, phase: SlicePhase, cause: str | None
) -> None:
    w = World()
    w.assign(1)
    assert w.state.on_outcome(key("j", 1), outcome)[-1] == SendStatus(key("j", 1))
    at = w.state.attempts[key("j", 1)]
    assert (at.phase, at.cause) == (phase, cause)


@pytest.mark.parametrize(("retryable", "cause"), [(True, "platform"), (False, "workload")])
def test_a_failed_launch_is_reported_with_its_cause(retryable: bool, cause: str) -> None:
    w = World()
    a = assign("j", 1)
    assert w.state.on_assignment(a, w.clock.now)[-1] == Launch(a)
    out = w.state.on_launch_failed(a.key, "no such image", retryable, w.clock.now)
    assert out[-1] == SendStatus(a.key)
    at = w.state.attempts[a.key]
    assert (at.phase, at.cause, at.reason) == (SlicePhase.FAILED, cause, "no such image")


def test_an_ended_attempt_is_kept_until_the_hub_says_forget() -> None:
    w = World()
    w.assign(1)
    w.run(w.state.on_ack(ack(key("j", 1)), w.clock.now))  # still running: kept
    assert key("j", 1) in w.state.attempts
    w.state.on_outcome(key("j", 1), Outcome(exit_code=0, reason=None, finished_at=1))
    out = w.state.on_ack(ack(key("j", 1)), w.clock.now)
    assert Release(key("j", 1)) in out and key("j", 1) not in w.state.attempts


# ---- the lease ---------------------------------------------------------------------------

# Rows: (steps, lapsed at the end, slices stopped). A step is ("beat", sent_at offset, acked
# after) or ("tick", offset): times are seconds after the agent started.
LEASE_TABLE = [
    # Acked every second: never lapses.
    ([("ack", 0.0), ("tick", 1.0), ("ack", 9.0), ("tick", 18.0)], False, 0),
    # No ack at all: lapses once the lease has passed since the start, not before.
    ([("tick", LEASE)], False, 0),
    ([("tick", LEASE + 0.01)], True, 1),
    # Dated from the send time: an ack sent at 1 s, received at 8 s, leaves until 11 s.
    ([("ack", 1.0), ("tick", 11.0)], False, 0),
    ([("ack", 1.0), ("tick", 11.01)], True, 1),
    # An ack for an older heartbeat never moves the lease back.
    ([("ack", 5.0), ("ack", 1.0), ("tick", 14.9)], False, 0),
    # Lapsed, then acked again: renewed; a second silence lapses again.
    ([("tick", 10.5), ("ack", 11.0)], False, 1),
    ([("tick", 10.5), ("ack", 11.0), ("tick", 21.5)], True, 2),
    # Lapsing stops everything once, however many ticks follow.
    ([("tick", 10.5), ("tick", 12.0), ("tick", 30.0)], True, 1),
]


@pytest.mark.parametrize(("steps", "lapsed", "stops"), LEASE_TABLE)
def test_lease(steps: list[tuple[str, float]], lapsed: bool, stops: int) -> None:
    w = World()
    t0 = w.clock.now
    w.assign(1)
    stopped = 0
    epoch = 1
    for what, at in steps:
        if what == "ack":
            was_lapsed = w.state.lease_lapsed
            w.run(w.state.on_ack(ack(), t0 + at))
            if was_lapsed:
                # Resumed: the stopped slice ended, and what the hub sends next runs.
                w.state.on_outcome(key("j", epoch), Outcome(None, "lapsed", 0, killed=True))
                epoch += 1
                assert any(isinstance(e, Launch) for e in w.assign(epoch, gpus=(epoch,)))
        else:
            out = w.run(w.state.on_tick(t0 + at))
            stopped += sum(1 for e in out if isinstance(e, StopAll))
    assert w.state.lease_lapsed is lapsed
    assert stopped == stops


def test_a_lapse_stops_every_running_slice_and_refuses_work_until_acks_return() -> None:
    w = World()
    t0 = w.clock.now
    w.assign(1, job="a", gpus=(0,))
    w.assign(1, job="b", gpus=(1,))
    w.state.on_outcome(key("b", 1), Outcome(exit_code=0, reason=None, finished_at=t0))
    w.assign(1, job="c", gpus=(2,))
    (stop,) = [e for e in w.run(w.state.on_tick(t0 + 10.5)) if isinstance(e, StopAll)]
    assert set(stop.keys) == {key("a", 1), key("c", 1)}  # not the ended one
    assert stop.reason == "lease lapsed: no reply from the hub for 10.5s"
    assert stop.grace_s == GRACE
    # Cut off, new work is ignored (the hub resends it once it hears from the spoke).
    assert w.assign(1, job="later", gpus=(3,)) == []
    assert key("later", 1) not in w.state.attempts
    # Acked again: renewed (the lease dated from that heartbeat's send time), work resumes.
    out = w.state.on_ack(ack(), t0 + 11.0)
    assert RenewLease(t0 + 11.0) in out and not w.state.lease_lapsed
    assert any(isinstance(e, Launch) for e in w.assign(1, job="later", gpus=(3,)))


def test_no_running_slice_no_lapse() -> None:
    w = World()
    assert w.state.on_tick(w.clock.now + 100) == []
    assert not w.state.lease_lapsed


def test_a_refused_spoke_renews_nothing() -> None:
    w = World()
    out = w.state.on_ack(ack(accepted=False), w.clock.now)
    assert not any(isinstance(e, RenewLease) for e in out)
    assert w.state.last_ack is None


def test_shutdown_stops_what_runs() -> None:
    w = World()
    assert w.state.on_shutdown() == []
    w.assign(1)
    assert w.state.on_shutdown() == [StopAll("agent shutting down", (key("j", 1),), GRACE)]


def test_an_adopted_attempt_is_watched_or_reported() -> None:
    w = World()
    running = w.state.on_adopted(assign("r", 1), 5.0, None)
    assert Watch(key("r", 1)) in running
    ended = w.state.on_adopted(assign("e", 1), 5.0, Outcome(0, None, 6.0))
    assert not any(isinstance(e, Watch) for e in ended)
    assert w.state.attempts[key("e", 1)].phase is SlicePhase.SUCCEEDED
