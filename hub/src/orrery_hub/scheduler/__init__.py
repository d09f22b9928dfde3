"""The scheduler: a pure function from a snapshot to a plan. See README.md in this folder.

    plan(snapshot, now) -> Plan

No asyncio, no database, no NATS, no clock: the hub's reconcile loop, the simulator and
the tests all call the same function.
"""

from orrery_hub.scheduler.cycle import order, plan
from orrery_hub.scheduler.plan import Plan, Preemption, Reservation, SlicePlacement, WaitReason
from orrery_hub.scheduler.snapshot import (
    ClusterCapacity,
    JobRequest,
    NodeCapacity,
    Policy,
    QueueConfig,
    RunningJob,
    RunningSlice,
    Snapshot,
)

__all__ = [
    "ClusterCapacity",
    "JobRequest",
    "NodeCapacity",
    "Plan",
    "Policy",
    "Preemption",
    "QueueConfig",
    "Reservation",
    "RunningJob",
    "RunningSlice",
    "SlicePlacement",
    "Snapshot",
    "WaitReason",
    "order",
    "plan",
]
