"""The timing every part of a federation shares, and the one rule among it that keeps a
slice from running twice.

From a spoke's point of view::

    heartbeat   how often a spoke reports
    lease       a spoke that has had no reply from the hub for this long stops its slices
                itself (the hub dictates it in every heartbeat reply)
    kill_grace  SIGTERM, then this long before SIGKILL
    failover    the hub declares a silent cluster Lost after this long and places its
                slices elsewhere
    drift       how far the hub's and the spoke's rate of time may differ over one lease

    lease + kill_grace + drift < failover

so by the time the hub moves a slice, the partitioned spoke has already stopped it. The hub,
the spoke agent and ``orrery up`` take their defaults from here, and the hub refuses
settings (and spokes' leases) that break the rule.
"""

from __future__ import annotations

from dataclasses import dataclass

HEARTBEAT_S = 1.0
LEASE_S = 10.0
KILL_GRACE_S = 2.0
FAILOVER_S = 15.0
MAX_CLOCK_DRIFT_S = 0.5


@dataclass(frozen=True)
class Preset:
    """A consistent set of the shared timings."""

    heartbeat_s: float = HEARTBEAT_S
    lease_s: float = LEASE_S
    kill_grace_s: float = KILL_GRACE_S
    failover_s: float = FAILOVER_S
    drift_s: float = MAX_CLOCK_DRIFT_S

    def fencing_problem(self) -> str | None:
        return fencing_problem(self.lease_s, self.kill_grace_s, self.drift_s, self.failover_s)


DEFAULT = Preset()
# For demos and tests: failures noticed in seconds.
FAST = Preset(heartbeat_s=0.25, lease_s=2.0, kill_grace_s=0.5, failover_s=3.5)
# A lost host replaced in under two seconds. The price: a spoke cut off from the hub for
# three heartbeats (0.75 s) stops its slices, so the hub, NATS and the network must answer
# within that, always; and drift is what the hub may notice a heartbeat late and a slice's
# supervisor may look at its lease late (it polls every 50 ms), not a clock's rate error.
AGGRESSIVE = Preset(heartbeat_s=0.25, lease_s=0.75, kill_grace_s=0.2, failover_s=1.3, drift_s=0.25)

PRESETS: dict[str, Preset] = {"default": DEFAULT, "fast": FAST, "aggressive": AGGRESSIVE}


def worst_stop_s(lease_s: float, kill_grace_s: float, drift_s: float) -> float:
    """How long after its last acknowledged heartbeat a cut-off spoke may still run a slice."""
    return lease_s + kill_grace_s + drift_s


def fences(lease_s: float, kill_grace_s: float, drift_s: float, failover_s: float) -> bool:
    """The fencing rule: a partitioned spoke has stopped its slices before failover."""
    return worst_stop_s(lease_s, kill_grace_s, drift_s) < failover_s


def fencing_problem(
    lease_s: float, kill_grace_s: float, drift_s: float, failover_s: float
) -> str | None:
    """None when the rule holds; else one line saying why it does not."""
    if fences(lease_s, kill_grace_s, drift_s, failover_s):
        return None
    worst = worst_stop_s(lease_s, kill_grace_s, drift_s)
    return (
        f"--failover-timeout ({failover_s}s) must exceed lease + kill grace + clock drift "
        f"({lease_s} + {kill_grace_s} + {drift_s} = {worst}s): otherwise a partitioned "
        "cluster's slices could still run when the hub places them elsewhere"
    )


__all__ = [
    "AGGRESSIVE",
    "DEFAULT",
    "FAILOVER_S",
    "FAST",
    "HEARTBEAT_S",
    "KILL_GRACE_S",
    "LEASE_S",
    "MAX_CLOCK_DRIFT_S",
    "PRESETS",
    "Preset",
    "fences",
    "fencing_problem",
    "worst_stop_s",
]
