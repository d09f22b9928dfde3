"""Which jobs a command means: filters by phase, queue, team, name and labels, as
``kubectl get -l`` and ``squeue -p/-A/-n`` take them.

Phases are matched whatever their case (``running`` is ``Running``); names may be globs
(``llama-*``); ``-l k=v`` may repeat, or join pairs with commas, and all must hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from orrery.errors import InvalidInput
from orrery.resources import JOB_PHASES, JobPublic


def phase_name(text: str) -> str:
    """``running`` → ``Running``; anything else is refused naming the phases."""
    for p in JOB_PHASES:
        if p.lower() == text.strip().lower():
            return p
    raise InvalidInput(f"--phase: {text!r} is not a phase; one of {', '.join(JOB_PHASES)}")


def parse_selector(parts: list[str]) -> dict[str, str]:
    """``["team=nlp,tier=a", "x=y"]`` → ``{"team": "nlp", "tier": "a", "x": "y"}``."""
    out: dict[str, str] = {}
    for item in parts:
        for pair in filter(None, (p.strip() for p in item.split(","))):
            k, sep, v = pair.partition("=")
            k = k.strip()
            if not sep or not k:
                raise InvalidInput(f"-l/--label: {pair!r} is not KEY=VALUE")
            out[k] = v.strip().removeprefix("=")  # k==v, as kubectl also accepts
    return out


@dataclass(frozen=True)
class JobFilter:
    phase: str | None = None
    queue: str | None = None
    team: str | None = None
    name: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        *,
        phase: str | None = None,
        queue: str | None = None,
        team: str | None = None,
        name: str | None = None,
        labels: list[str] | None = None,
    ) -> JobFilter:
        return cls(
            phase=phase_name(phase) if phase else None,
            queue=queue or None,
            team=team or None,
            name=name or None,
            labels=parse_selector(labels or []),
        )

    @property
    def empty(self) -> bool:
        return not (self.phase or self.queue or self.team or self.name or self.labels)

    def query(self) -> dict[str, str]:
        """What a hub that filters is asked for (an older one ignores it; see ``match``)."""
        q = {"queue": self.queue, "team": self.team}
        if self.name and not any(ch in self.name for ch in "*?["):
            q["name"] = self.name
        if self.labels:
            q["label"] = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return {k: v for k, v in q.items() if v}

    def match(self, j: JobPublic) -> bool:
        labels = j.metadata.get("labels") or {}
        if self.phase and j.status.phase != self.phase:
            return False
        if self.queue and j.spec.get("queue", "default") != self.queue:
            return False
        if self.team and labels.get("team") != self.team:
            return False
        if self.name and not fnmatchcase(str(j.metadata.get("name", "")), self.name):
            return False
        return all(labels.get(k) == v for k, v in self.labels.items())
