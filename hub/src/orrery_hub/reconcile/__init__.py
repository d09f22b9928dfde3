"""Compare what a spoke reports with what the hub wants, and decide what to do about it.

Level-triggered (DESIGN.md principle 1): every function here takes the current truth —
a spoke's complete report, or "this cluster is Lost" — and the desired state in the store,
and returns the orders that close the gap. Orders are idempotent, so deciding the same
thing twice is harmless, and a lost message is repaired by the next heartbeat.

Called by the runtime (``runtime.intake``, ``runtime.loop``) inside one store transaction
per report or step. Modules: ``lifecycle`` (an attempt ends: what its slice and job
become), ``reports`` (a spoke's reports folded in), ``failover`` (clusters, nodes and
unknown fates), ``assignment`` (the order as sent), ``outbox`` (what a step publishes).
"""

from orrery_hub.lifecycle import ACTIVE, INFRA_REASONS, platform_failure
from orrery_hub.reconcile.assignment import assignment_for, master_port, split_env
from orrery_hub.reconcile.failover import fail_cluster, fail_nodes, settle_unknown
from orrery_hub.reconcile.lifecycle import close_attempt, fail_job, hold_unknown
from orrery_hub.reconcile.outbox import Outbox, kill_order
from orrery_hub.reconcile.reports import apply_reports, settles

__all__ = [
    "ACTIVE",
    "INFRA_REASONS",
    "Outbox",
    "apply_reports",
    "assignment_for",
    "close_attempt",
    "fail_cluster",
    "fail_job",
    "fail_nodes",
    "hold_unknown",
    "kill_order",
    "master_port",
    "platform_failure",
    "settle_unknown",
    "settles",
    "split_env",
]
