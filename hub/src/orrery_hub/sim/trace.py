"""Reading the Alibaba GPU trace (cluster-trace-gpu-v2023, Weng et al., ATC'23) into jobs.
Called by ``engine`` and ``cli``.

Rules (the trace's provenance and checksums: tests/data/README.md in the repository):

* one pod is one job of one slice; arrival = ``creation_time``;
* GPUs = ``num_gpu``; a fractional share (``gpu_milli`` < 1000) is rounded up to one whole
  GPU, because Orrery hands out whole GPUs (the report counts how many were rounded);
* allowed GPU models = ``gpu_spec`` split on ``|`` (empty: any);
* service time = ``deletion_time - scheduled_time``; rows never scheduled (``Pending``,
  no ``scheduled_time``) have no service time and are left out; CPU-only rows too;
* rows whose ``deletion_time`` is the trace end are right-censored: replayed (they hold
  GPUs) but left out of completion-time statistics.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TRACE_END = 12_902_960.0


class TraceError(ValueError):
    """A trace or node file that cannot be read; the message names the row and column."""


@dataclass(frozen=True, slots=True)
class TraceJob:
    name: str
    submit: float
    gpus: int
    fractional: bool
    gpu_types: frozenset[str] | None
    qos: str
    duration: float
    censored: bool


@dataclass(frozen=True, slots=True)
class TraceNode:
    name: str
    gpus: int
    model: str


@dataclass(frozen=True, slots=True)
class Trace:
    jobs: tuple[TraceJob, ...]
    skipped: dict[str, int]  # why rows were left out -> how many


def _num(row: dict[str, str], col: str, line: int, path: Path) -> float:
    try:
        return float(row[col])
    except (KeyError, ValueError):
        raise TraceError(f"{path}:{line}: column {col!r}: not a number: {row.get(col)!r}") from None


def read_pods(path: Path, limit: int | None = None) -> Trace:
    jobs: list[TraceJob] = []
    skipped: Counter[str] = Counter()
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if limit is not None and line - 1 > limit:
                break
            gpus = int(_num(row, "num_gpu", line, path))
            if gpus == 0:
                skipped["cpu-only"] += 1
                continue
            if not row.get("scheduled_time"):
                skipped["never scheduled"] += 1
                continue
            start = _num(row, "scheduled_time", line, path)
            end = _num(row, "deletion_time", line, path)
            milli = _num(row, "gpu_milli", line, path)
            spec = row.get("gpu_spec") or ""
            jobs.append(
                TraceJob(
                    name=row["name"],
                    submit=_num(row, "creation_time", line, path),
                    gpus=gpus,
                    fractional=milli < 1000,
                    gpu_types=frozenset(spec.split("|")) if spec else None,
                    qos=row.get("qos") or "default",
                    duration=max(1.0, end - start),
                    censored=end >= TRACE_END,
                )
            )
    jobs.sort(key=lambda j: (j.submit, j.name))
    return Trace(tuple(jobs), dict(skipped))


def read_nodes(path: Path) -> tuple[TraceNode, ...]:
    out: list[TraceNode] = []
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            gpus = int(_num(row, "gpu", line, path))
            model = row.get("model") or ""
            if not model or gpus <= 0:
                raise TraceError(f"{path}:{line}: a GPU node needs 'gpu' > 0 and a 'model'")
            out.append(TraceNode(row["sn"], gpus, model))
    return tuple(out)
