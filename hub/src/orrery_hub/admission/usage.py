"""Accounting: GPU-seconds and cost per attempt, job, team and period, from the attempts'
real start and end (the spoke's clock) and the prices in the Cost policies in force.

Called by the applier (what teams hold and have spent, for quotas and budgets) and by the
API (``GET /v1/usage``). An attempt still running counts up to ``now``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlmodel import Session, col, select

from orrery_hub.policy import PolicySet, price_of
from orrery_hub.policy.cost import period_start
from orrery_hub.policy.facts import NO_TEAM, Period
from orrery_hub.store.models import AttemptRow, JobRow


@dataclass(frozen=True, slots=True)
class AttemptCost:
    job_id: str
    gpus: int
    seconds: float  # wall time the attempt ran, within the window asked for
    price: float | None  # per GPU-hour; None: no Cost policy prices it

    @property
    def gpu_seconds(self) -> float:
        return self.gpus * self.seconds

    @property
    def cost(self) -> float:
        return self.gpu_seconds / 3600 * (self.price or 0.0)


def attempt_cost(
    a: AttemptRow, policies: PolicySet, *, now: float, since: float | None = None
) -> AttemptCost:
    start = a.started_at
    if start is None:
        return AttemptCost(a.job_id, len(a.gpus), 0.0, None)
    end = a.ended_at if a.ended_at is not None else now
    if since is not None:
        start = max(start, since)
    price = price_of(policies, a.cluster, a.gpu_type, spot=False) if a.gpu_type else None
    return AttemptCost(a.job_id, len(a.gpus), max(0.0, end - start), price)


def _attempts_since(s: Session, since: float | None) -> Iterable[AttemptRow]:
    q = select(AttemptRow).where(col(AttemptRow.started_at).is_not(None))
    if since is not None:  # ended before the window: nothing of it counts
        q = q.where((col(AttemptRow.ended_at).is_(None)) | (col(AttemptRow.ended_at) >= since))
    return s.exec(q)


def team_map(s: Session, job_ids: set[str]) -> dict[str, tuple[str, str]]:
    """job -> (team, queue)."""
    out: dict[str, tuple[str, str]] = {}
    ids = list(job_ids)
    for i in range(0, len(ids), 500):
        for jid, team, queue in s.exec(
            select(JobRow.id, JobRow.team, JobRow.queue).where(col(JobRow.id).in_(ids[i : i + 500]))
        ):
            out[jid] = (team or NO_TEAM, queue)
    return out


def spend(
    s: Session,
    policies: PolicySet,
    *,
    now: float,
    periods: Iterable[Period],
    runtime_limit: Callable[[str], float | None],
) -> dict[tuple[str, Period], float]:
    """Money per (team, period) in the current period of each kind: what attempts have
    cost so far, plus what each running attempt may still cost up to its job's runtime
    limit — so back-to-back admissions cannot overrun a budget while the first jobs run."""
    out: dict[tuple[str, Period], float] = defaultdict(float)
    for period in set(periods):
        since = period_start(period, now)
        attempts = list(_attempts_since(s, since))
        teams = team_map(s, {a.job_id for a in attempts})
        for a in attempts:
            c = attempt_cost(a, policies, now=now, since=since)
            team = teams.get(a.job_id, (NO_TEAM, ""))[0]
            out[(team, period)] += c.cost
            limit = runtime_limit(a.job_id) if a.ended_at is None else None
            if limit is not None and a.started_at is not None and c.price:
                left = max(0.0, limit - (now - a.started_at))
                out[(team, period)] += c.gpus * left / 3600 * c.price
    return dict(out)


@dataclass(frozen=True, slots=True)
class UsageLine:
    team: str
    queue: str
    job: str
    attempts: int
    gpu_seconds: float
    cost: float
    # GPU-seconds no Cost policy prices: "no price", which 0.00 would misstate as free.
    unpriced_gpu_seconds: float = 0.0


def report(
    s: Session, policies: PolicySet, *, now: float, since: float | None, team: str | None
) -> list[UsageLine]:
    """Per job: GPU-seconds and cost since ``since`` (all time if None)."""
    per_job: dict[str, list[AttemptCost]] = defaultdict(list)
    for a in _attempts_since(s, since):
        per_job[a.job_id].append(attempt_cost(a, policies, now=now, since=since))
    teams = team_map(s, set(per_job))
    lines = []
    for jid, costs in sorted(per_job.items()):
        t, q = teams.get(jid, (NO_TEAM, ""))
        if team is not None and t != team:
            continue
        lines.append(
            UsageLine(
                t,
                q,
                jid,
                len(costs),
                sum(c.gpu_seconds for c in costs),
                sum(c.cost for c in costs),
                sum(c.gpu_seconds for c in costs if c.price is None),
            )
        )
    return lines
