"""Following a job until it ends (``submit --wait``, ``jobs ID --watch``).

On a terminal: a live view, redrawn in place. Anywhere else (a pipe, a CI log): plain
lines, one per new event and one when the progress changes (at most every
``PLAIN_EVERY_S``), so a log shows what happened without control characters.

The hub may blip (a restart, a network hiccup): each poll retries with jittered
exponential backoff (tenacity) until the hub has been unreachable for ``retry_for``
seconds, saying so once on stderr, and once more when it is back.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console
from rich.live import Live
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_random_exponential,
)

from orrery.cli import views
from orrery.cli.tables import progress
from orrery.client import HubClient
from orrery.errors import TooManyRequests, Unavailable
from orrery.resources import FINAL_JOB_PHASES, JobPublic

PLAIN_EVERY_S = 10.0  # a progress line (step n/N) at most this often; phase changes at once
RETRY_FOR_S = 300.0  # default: how long a hub may stay unreachable before a wait gives up
BACKOFF_MAX_S = 10.0

T = TypeVar("T")


class Patient:
    """Calls to the hub that ride out a blip of up to ``retry_for`` seconds."""

    def __init__(self, err: Console, retry_for: float = RETRY_FOR_S) -> None:
        self.err = err
        self.retry_for = retry_for
        self.down = False

    def _note(self, state: RetryCallState) -> None:
        if not self.down:
            exc = state.outcome.exception() if state.outcome else None
            self.err.print(
                f"orrery: {exc}; retrying for up to {self.retry_for:.0f}s",
                markup=False,
                highlight=False,
            )
        self.down = True

    def call(self, fn: Callable[[], T]) -> T:
        out = Retrying(
            stop=stop_after_delay(self.retry_for),
            wait=wait_random_exponential(multiplier=0.5, max=BACKOFF_MAX_S),
            retry=retry_if_exception_type((Unavailable, TooManyRequests)),
            before_sleep=self._note,
            reraise=True,
        )(fn)
        if self.down:
            self.err.print("orrery: the hub answers again", markup=False, highlight=False)
            self.down = False
        return out


def follow(
    c: HubClient,
    job_id: str,
    *,
    live: bool,
    console: Console,
    patient: Patient,
    interval: float = 0.5,
    last: int = 10,
) -> JobPublic:
    """Poll the job until it ends; show it live or as plain lines. Returns the final job."""
    if live:
        with Live(console=console, refresh_per_second=4) as lv:
            while True:
                j = patient.call(lambda: c.job(job_id))
                events = patient.call(lambda: c.all_events(job_id))
                lv.update(views.job_detail(j, events, last=last))
                if j.status.phase in FINAL_JOB_PHASES:
                    return j
                time.sleep(interval)
    after: int | None = None
    said, said_at = "", 0.0
    while True:
        j = patient.call(lambda: c.job(job_id))
        for ev in patient.call(functools.partial(c.events, job_id, after=after)):
            stamp = time.strftime("%H:%M:%S", time.localtime(ev.at))
            typer.echo(f"{stamp}  {job_id}  {ev.kind}: {ev.message}")
            after = ev.id if ev.id is not None else after
        note = progress(j)
        line = f"phase {j.status.phase}" + (f", {note}" if note != "-" else "")
        now = time.monotonic()
        changed_phase = line.split(",", 1)[0] != said.split(",", 1)[0]
        if line != said and (changed_phase or now - said_at >= PLAIN_EVERY_S):
            typer.echo(f"{time.strftime('%H:%M:%S')}  {job_id}  {line}")
            said, said_at = line, now
        if j.status.phase in FINAL_JOB_PHASES:
            return j
        time.sleep(interval)
