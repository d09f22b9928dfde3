"""``orrery logs JOB``: a job's output (its slices' stdout and stderr), which the hub
fetches from the clusters where they ran. Written to stdout as it arrives, byte for byte."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from orrery.cli.follow import follow as follow_job
from orrery.config import connect

# --slice and --epoch have no ORRERY_ variable: ORRERY_SLICE and ORRERY_EPOCH are in every
# slice's environment, and would silently filter an `orrery logs` run from inside a slice.
HubOpt = Annotated[str | None, typer.Option("--hub", envvar="ORRERY_HUB", help="hub URL")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="ORRERY_TOKEN", help="your API token", show_default=False),
]


def logs(
    job_ref: Annotated[str, typer.Argument(help="the job: its ID, or its name where unique")],
    slice_: Annotated[
        int | None,
        typer.Option("--slice", min=0, help="only this slice (rank)"),
    ] = None,
    epoch: Annotated[
        int | None,
        typer.Option("--epoch", min=0, help="only this epoch (attempt)"),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            envvar="ORRERY_FOLLOW",
            help="keep printing until the job ends: wait for its placement, and carry on into "
            "each next epoch (with --epoch: until that attempt ends)",
        ),
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option(
            "--tail", min=0, max=100_000, envvar="ORRERY_TAIL", help="the last N lines of each"
        ),
    ] = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """A job's output: every slice and epoch in order, each under a header line, or one of
    them alone (--slice, --epoch). After a failover, each epoch's output comes in turn."""
    out = sys.stdout.buffer
    with connect(hub, token) as c:
        job_id = c.find_job(job_ref).id
        try:
            if follow and epoch is None:
                follow_job(c, job_id, slice_=slice_, tail=tail, out=out)
            else:
                for chunk in c.logs(job_id, slice=slice_, epoch=epoch, follow=follow, tail=tail):
                    out.write(chunk)
                    out.flush()
        except BrokenPipeError:
            # `orrery logs JOB | head`: the reader has all it wanted.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
