"""Runtimes learned per queue/team from finished jobs, and least expected service first
reading them for jobs that declare no maxRuntime."""

from __future__ import annotations

from orrery_hub.scheduler import Policy, Snapshot, plan
from orrery_hub.scheduler.history import runtime_history
from tests.hub.test_scheduler_helpers import fleet, job, placed


def test_history_is_the_median_of_recent_runs_per_queue_team_and_queue() -> None:
    finished = [("A", "nlp", 10.0), ("A", "nlp", 30.0), ("A", "cv", 1000.0),
                ("A", "nlp", 20.0), ("B", "nlp", 5.0)]
    h = runtime_history(finished)
    assert h["A/nlp"] == 20.0  # one runaway job elsewhere in the queue does not move it
    assert h["A/cv"] == 1000.0
    assert h["A"] == 25.0
    assert h["B"] == 5.0
    assert runtime_history(finished, recent=1)["A/nlp"] == 10.0  # newest first


def test_shortest_first_orders_undeclared_jobs_by_their_history() -> None:
    clusters, _ = fleet({"c1": [1]})
    # Neither declares maxRuntime; team "quick" finishes in a minute, "slow" in a day.
    slow = job("slow", queue="Q", team="slow")
    quick = job("quick", queue="Q", team="quick")
    history = runtime_history([("Q", "slow", 86400.0), ("Q", "quick", 60.0)])
    snap = Snapshot(clusters, (slow, quick), policy=Policy(shortest_first=True),
                    runtime_history=history)
    assert placed(plan(snap, 0.0)) == {"quick"}
    # Without history both are unknown: submission order.
    assert placed(plan(Snapshot(clusters, (slow, quick),
                                policy=Policy(shortest_first=True)), 0.0)) == {"slow"}
