"""Queue configuration: weights for fair share, guaranteed GPUs, cohorts that lend idle
capacity to each other (as Kueue does). Read from the file ``orrery hub --queues`` names::

    queues:
      - {name: research, weight: 2, guaranteed: 64, cohort: ml}
      - {name: batch, weight: 1, guaranteed: 16, cohort: ml, borrowLimit: 32}

A queue not listed gets weight 1 and no quota.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from orrery.errors import InvalidInput, ManifestError
from orrery.manifest import load_document, problems_of
from orrery_hub.scheduler import QueueConfig


class _Queue(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)
    name: str = Field(min_length=1, max_length=63)
    weight: float = Field(default=1.0, gt=0)
    guaranteed: int | None = Field(default=None, ge=0)
    cohort: str | None = Field(default=None, min_length=1, max_length=63)
    borrow_limit: int | None = Field(default=None, ge=0)


class _Queues(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queues: list[_Queue]


def parse_queues(text: str, *, source: str = "queues") -> tuple[QueueConfig, ...]:
    data = load_document(text, source=source)
    try:
        parsed = _Queues.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(problems_of(exc, _Queues), source=source) from None
    names = [q.name for q in parsed.queues]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ManifestError([("queues", f"queue {dup[0]!r} is listed twice")], source=source)
    return tuple(
        QueueConfig(
            name=q.name,
            weight=q.weight,
            guaranteed=q.guaranteed,
            cohort=q.cohort,
            borrow_limit=q.borrow_limit,
        )
        for q in parsed.queues
    )


def load_queues(path: Path) -> tuple[QueueConfig, ...]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"--queues: cannot read {path}: {exc.strerror}") from None
    return parse_queues(text, source=f"queues {path}")
