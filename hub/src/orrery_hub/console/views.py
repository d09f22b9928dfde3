"""Pure views for the console's read-only routes: queues with positions, budgets with spend.

Kept apart from the routes so they are tested without a hub. Positions follow the
scheduler's default offer order (priority, then submission); with fair share on, the
order between queues changes pass by pass, so a position is within its queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from orrery.resources import JobPublic
from orrery_hub.policy.policyset import BudgetRule
from orrery_hub.scheduler import QueueConfig

DEFAULT_QUEUE = "default"
HELD = frozenset({"Assigned", "Starting", "Running"})


def queue_of(job: JobPublic) -> str:
    q = job.spec.get("queue")
    return q if isinstance(q, str) and q else DEFAULT_QUEUE


def gpus_held(job: JobPublic) -> int:
    return sum(len(s.gpus) for s in job.status.slices if s.phase in HELD)


def queues_view(
    configs: Iterable[QueueConfig], pending: list[JobPublic], running: list[JobPublic]
) -> list[dict[str, Any]]:
    by_name: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        if name not in by_name:
            by_name[name] = {
                "name": name,
                "weight": 1.0,
                "guaranteed": None,
                "cohort": None,
                "borrowLimit": None,
                "configured": False,
                "gpusInUse": 0,
                "borrowing": 0,
                "pending": [],
            }
        return by_name[name]

    for c in configs:
        e = entry(c.name)
        e.update(
            weight=c.weight,
            guaranteed=c.guaranteed,
            cohort=c.cohort,
            borrowLimit=c.borrow_limit,
            configured=True,
        )
    for j in running:
        entry(queue_of(j))["gpusInUse"] += gpus_held(j)
    order = sorted(pending, key=lambda j: (-int(j.spec.get("priority") or 0), j.status.created_at))
    for j in order:
        e = entry(queue_of(j))
        e["pending"].append(
            {
                "id": j.id,
                "position": len(e["pending"]) + 1,
                "priority": int(j.spec.get("priority") or 0),
                "gpus": int(j.spec.get("slices") or 1) * int(j.spec.get("gpusPerSlice") or 0),
                "createdAt": j.status.created_at,
                "waiting": j.status.waiting.summary if j.status.waiting else j.status.reason,
            }
        )
    total = sum(e["gpusInUse"] for e in by_name.values())
    weights = sum(e["weight"] for e in by_name.values()) or 1.0
    for e in by_name.values():
        g = e["guaranteed"]
        e["borrowing"] = max(0, e["gpusInUse"] - g) if g is not None else 0
        # The share a queue would get of what is in use now, by weight (what fair share
        # steers towards), beside what it holds.
        e["fairShareGpus"] = round(total * e["weight"] / weights, 2)
    return sorted(by_name.values(), key=lambda e: e["name"])


def budgets_view(
    rules: Iterable[BudgetRule], spend: Mapping[tuple[str, str], float], teams: Iterable[str]
) -> list[dict[str, Any]]:
    """One row per (budget, matching team): spend in the current period against the limit.

    ``spend`` maps (period, team) to the cost so far in that period.
    """
    rows: list[dict[str, Any]] = []
    known = sorted(set(teams))
    for r in rules:
        globs = [g.text for g in r.team.globs]
        matched = [t for t in known if r.team.matches(t)] or [
            g for g in globs if not any(ch in g for ch in "*?[")
        ]
        for team in matched:
            spent = spend.get((r.period, team), 0.0)
            rows.append(
                {
                    "policy": r.policy,
                    "team": team,
                    "period": r.period,
                    "limit": r.limit,
                    "action": r.action,
                    "spent": round(spent, 4),
                    "fraction": round(spent / r.limit, 4) if r.limit > 0 else None,
                }
            )
    return rows
