"""Which epoch ``orrery logs -f`` follows next, read from the job alone (a slice waiting to
be placed again already carries its next epoch, with no cluster)."""

from __future__ import annotations

from typing import Any

import pytest

from orrery.cli.follow import placed_epoch
from orrery.resources import JobPublic


def job(phase: str, *slices: dict[str, Any]) -> JobPublic:
    return JobPublic.model_validate(
        {
            "id": "j",
            "metadata": {"name": "j"},
            "spec": {"slices": len(slices)},
            "status": {
                "phase": phase,
                "created_at": 0.0,
                "slices": [
                    {"index": i, "phase": "Pending", "epoch": 1, "attempts": 0, **s}
                    for i, s in enumerate(slices)
                ],
            },
        }
    )


@pytest.mark.parametrize(
    ("j", "slice_", "want"),
    [
        (job("Pending", {}), None, 0),  # never placed
        (job("Running", {"phase": "Running", "cluster": "a", "attempts": 1}), None, 1),
        # lost, waiting to be placed again: epoch 2 is next, epoch 1 was the last placed
        (job("Pending", {"epoch": 2, "attempts": 1}), None, 1),
        (job("Running", {"epoch": 2, "attempts": 2, "cluster": "b", "phase": "Running"}), 0, 2),
        # a gang: the newest of the chosen slices
        (
            job(
                "Running",
                {"epoch": 3, "attempts": 3, "cluster": "a"},
                {"epoch": 4, "attempts": 2},
            ),
            None,
            3,
        ),
        (job("Running", {"epoch": 3, "attempts": 3, "cluster": "a"}, {"epoch": 1}), 1, 0),
        (job("Succeeded", {"epoch": 2, "attempts": 2, "cluster": "b"}), None, 2),
    ],
)
def test_the_epoch_placed_last(j: JobPublic, slice_: int | None, want: int) -> None:
    assert placed_epoch(j, slice_) == want
