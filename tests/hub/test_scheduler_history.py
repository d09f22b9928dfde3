"""Runtimes learned per queue/team from finished jobs (by the hub's applier, from the
store), and least expected service first reading them for jobs that declare no
maxRuntime."""

from __future__ import annotations

from pathlib import Path

from orrery.manifest import parse_manifest
from orrery_hub.apply.applier import HISTORY_REFRESH_S, Applier
from orrery_hub.scheduler import Policy, Snapshot, plan
from orrery_hub.scheduler.history import runtime_history
from orrery_hub.store import Database
from orrery_hub.store import jobs as jobstore
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


def test_the_applier_learns_runtimes_from_finished_jobs(tmp_path: Path) -> None:
    # Real SQLite: three jobs of team "nlp" in queue "default" finished in 100, 300 and
    # 200 s; one failed (not a runtime to learn from); one still waits.
    db = Database.connect(f"sqlite:///{tmp_path / 'hub.db'}")
    manifest = ("apiVersion: orrery/v1\nkind: TrainingJob\n"
                "metadata: {name: %s, labels: {team: nlp}}\nspec: {command: [x]}\n")
    with db.session() as s:
        for i, (phase, took) in enumerate([("Succeeded", 100), ("Succeeded", 300),
                                           ("Failed", 5), ("Succeeded", 200)]):
            row = jobstore.submit(s, parse_manifest(manifest % f"done{i}"), now=0,
                                  checkpoint_root=tmp_path)
            row.phase, row.started_at, row.finished_at = phase, 10.0 * i, 10.0 * i + took
            s.add(row)
        jobstore.submit(s, parse_manifest(manifest % "next"), now=50, checkpoint_root=tmp_path)
    applier = Applier()
    with db.session() as s:
        h = applier.history(s, now=1000)
    assert h == {"default/nlp": 200.0, "default": 200.0}
    with db.session() as s:  # a later finish is read only once the refresh interval passed
        row = jobstore.submit(s, parse_manifest(manifest % "late"), now=1000,
                              checkpoint_root=tmp_path)
        row.phase, row.started_at, row.finished_at = "Succeeded", 1000.0, 1001.0
        s.add(row)
    with db.session() as s:
        assert applier.history(s, now=1010)["default"] == 200.0
        assert applier.history(s, now=1000 + HISTORY_REFRESH_S)["default"] == 150.0
