"""Runtimes learned from finished jobs: what ``Policy.shortest_first`` reads for a job that
declares no ``maxRuntime`` (``Snapshot.runtime_history``). Pure: the hub's applier
(``orrery_hub.apply.applier``) feeds it the recently finished jobs it reads from the store.

Helios (Hu et al., SC'21) orders by *queued* service predicted from each user's history
(QSSF); Orrery keys history by queue and team, the identities a job carries, and takes
the median of the most recent runs, which one runaway job does not move.
"""

from __future__ import annotations

from collections.abc import Iterable
from statistics import median

# Runs kept per key: recent enough to follow a team's changing work, enough to be stable.
RECENT = 50


def history_key(queue: str, team: str) -> str:
    return f"{queue}/{team}"


def runtime_history(
    finished: Iterable[tuple[str, str, float]], recent: int = RECENT
) -> dict[str, float]:
    """Median runtime in seconds per "queue/team" and per "queue", over the ``recent``
    newest of ``finished`` — (queue, team, seconds) tuples, newest first."""
    runs: dict[str, list[float]] = {}
    for queue, team, seconds in finished:
        if seconds < 0:
            continue
        for key in (history_key(queue, team), queue):
            got = runs.setdefault(key, [])
            if len(got) < recent:
                got.append(seconds)
    return {k: float(median(v)) for k, v in runs.items()}
