"""``orrery logs JOB -f`` for the life of the job, not one attempt: it waits for the job's
first placement, follows the running attempt, and when that attempt ends while the job goes
on (a failover, a retry) it carries on with the next epoch under a header line, until the
job ends or the user stops it.

The hub streams one attempt at a time and knows nothing of who follows; this loop asks the
job between streams (every POLL_S while nothing runs), so the hub keeps no follow state.
"""

from __future__ import annotations

import time
from typing import BinaryIO

from orrery.cli.term import err
from orrery.client import HubClient
from orrery.errors import Conflict
from orrery.resources import JobPublic

POLL_S = 1.0  # how often a job between attempts is asked again (a person is waiting)


def placed_epoch(job: JobPublic, slice_: int | None) -> int:
    """The newest epoch that has been placed for the chosen slices (0: none yet). A slice
    that waits to be placed again already carries its next epoch, with no cluster."""
    newest = 0
    for s in job.status.slices:
        if slice_ is not None and s.index != slice_:
            continue
        if s.cluster is not None:
            newest = max(newest, s.epoch)
        elif s.attempts > 0:
            newest = max(newest, s.epoch - 1)
    return newest


def _header(job: JobPublic, epoch: int, slice_: int | None) -> bytes | None:
    """The line before an epoch followed on from the last, unless the hub writes its own
    (it heads each attempt when it streams several)."""
    mine = [
        s
        for s in job.status.slices
        if (slice_ is None or s.index == slice_) and s.epoch == epoch and s.cluster
    ]
    if len(mine) != 1:
        return None
    s = mine[0]
    return f"==> slice {s.index} · epoch {epoch} · {s.cluster} · {s.phase} <==\n".encode()


def follow(
    c: HubClient, job_id: str, *, slice_: int | None, tail: int | None, out: BinaryIO
) -> None:
    shown: int | None = None  # the newest epoch streamed so far
    waiting_said = False
    while True:
        job = c.job(job_id)
        newest = placed_epoch(job, slice_)
        if newest == 0 or newest == shown:
            if job.final:
                return
            if not waiting_said and job.status.phase == "Pending":
                why = f" ({job.status.reason})" if job.status.reason else ""
                again = " again" if shown else ""
                err.print(
                    f"orrery: job {job_id} is {job.status.phase}{why}; waiting for it to be "
                    f"placed{again} (Ctrl-C stops)",
                    markup=False,
                    highlight=False,
                )
                waiting_said = True
            time.sleep(POLL_S)
            continue
        waiting_said = False
        if shown is None:
            epoch = None  # the first stream: every earlier attempt whole, then the running one
        else:
            epoch = newest
            head = _header(job, newest, slice_)
            if head is not None:
                out.write(head)
        try:
            for chunk in c.logs(
                job_id, slice=slice_, epoch=epoch, follow=not job.final, tail=tail
            ):
                out.write(chunk)
                out.flush()
        except Conflict:
            continue  # placed just now, its attempt not yet recorded: ask again
        # The job may have moved on while that stream ran; the next turn asks the job.
        shown = newest


__all__ = ["follow", "placed_epoch"]
