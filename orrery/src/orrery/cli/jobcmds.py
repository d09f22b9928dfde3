"""``orrery submit``, ``orrery jobs`` and ``orrery cancel``.

A job is named by its ID or, where exactly one job has it, by its name. Lists filter by
phase (any case), queue, team, name (a glob) and labels (``-l k=v``), and print in any
``-o`` format; ``cancel`` takes several jobs, or a selector.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.text import Text

from orrery.cli import datasets as datasets_cli
from orrery.cli import views
from orrery.cli.columns import render
from orrery.cli.output import Output, OutputOpt, dump, emit_list, width
from orrery.cli.progress import RETRY_FOR_S, Patient, follow
from orrery.cli.select import JobFilter
from orrery.cli.tables import JOB_COLUMNS, JOB_WIDE, job_row, progress
from orrery.cli.term import console, err
from orrery.client import HubClient
from orrery.config import connect
from orrery.document import load_documents
from orrery.duration import parse_duration
from orrery.errors import InvalidInput, OrreryError, TooManyRequests
from orrery.hubtransport import NotSent
from orrery.manifest import manifest_from_data, parse_manifest
from orrery.resources import JobPublic
from orrery.textfile import read_text

BATCH = 1000  # manifests per request (the hub's limit for /v1/jobs:batch)

HubOpt = Annotated[str | None, typer.Option("--hub", envvar="ORRERY_HUB", help="hub URL")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="ORRERY_TOKEN", help="API token", show_default=False),
]
PhaseOpt = Annotated[
    str | None, typer.Option(envvar="ORRERY_PHASE", help="only this phase (any case)")
]
QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="only this queue")]
TeamOpt = Annotated[str | None, typer.Option("--team", help="only this team")]
NameOpt = Annotated[
    str | None, typer.Option("--name", help="only jobs of this name (a glob: 'llama-*')")
]
LabelOpt = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", help="only jobs with these labels: k=v[,k=v] (repeatable)"),
]
EventsOpt = Annotated[
    int, typer.Option("--events", min=0, help="show this many of the last events (0: all)")
]
RetryOpt = Annotated[
    str,
    typer.Option(
        "--retry-for",
        envvar="ORRERY_RETRY_FOR",
        help="with --wait/--watch: how long the hub may be unreachable before giving up",
    ),
]


def _seconds(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InvalidInput(f"--retry-for: {exc}") from None


def submit(
    file: Annotated[
        Path,
        typer.Argument(
            help="job manifest, YAML or JSON; several documents (separated by ---) are "
            "submitted as one batch; - reads standard input"
        ),
    ],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", envvar="ORRERY_WAIT", help="wait until it ends; exit 0 only if it succeeds"
        ),
    ] = False,
    retry_for: RetryOpt = f"{RETRY_FOR_S:.0f}s",
    output: OutputOpt = Output.table,
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a job manifest, or many (a multi-document file, or - for stdin)."""
    source = "stdin" if str(file) == "-" else str(file)
    text = sys.stdin.read() if source == "stdin" else read_text(file, what="manifest file")
    docs = load_documents(text, source=source)
    if not docs:
        raise InvalidInput(f"{source}: no manifest in it")
    if len(docs) == 1 and isinstance(docs[0], dict) and docs[0].get("kind") == "Dataset":
        datasets_cli.apply_text(text, source, hub, token)  # a kind: Dataset is applied
        return
    if len(docs) > 1:
        if wait:
            raise InvalidInput("--wait: follows one job; submit a single manifest to use it")
        _submit_many(docs, source, output, hub, token)
        return
    parse_manifest(text, source=source)  # refuse locally first, with the same messages
    patient = Patient(err, _seconds(retry_for))
    with connect(hub, token) as c:
        # With --wait, a submit that never left is sent again through a blip; one that
        # reached the hub may have been stored, and a second would run the job twice.
        job = patient.call(lambda: _submit_once(c, text)) if wait else c.submit(text)
        if output in (Output.json, Output.yaml):
            typer.echo(dump(job, output))
        elif output is Output.name:
            typer.echo(job.id)
        else:
            console.print(f"submitted [bold]{job.id}[/bold] ({job.status.phase})")
        if wait:
            final = follow(c, job.id, live=sys.stdout.isatty(), console=console, patient=patient)
            console.print(
                f"{final.id}: {final.status.phase}"
                + (f" ({final.status.reason})" if final.status.reason else ""),
                markup=False,
            )
            raise typer.Exit(0 if final.status.phase == "Succeeded" else 1)


def _submit_many(
    docs: list[Any], source: str, output: Output, hub: str | None, token: str | None
) -> None:
    """Several manifests: all checked here first (nothing is sent if one is bad), then
    sent as batches; a line per job, and exit 1 if the hub refused any."""
    for i, doc in enumerate(docs):
        manifest_from_data(doc, source=f"{source}: document {i + 1}")
    failed = 0
    with connect(hub, token) as c:
        for start in range(0, len(docs), BATCH):
            for n, item in enumerate(c.submit_batch(docs[start : start + BATCH]).items):
                if item.job is None:
                    failed += 1
                    why = item.error.detail if item.error is not None else f"HTTP {item.status}"
                    err.print(f"document {start + n + 1}: {why}", markup=False)
                elif output in (Output.json, Output.yaml):
                    typer.echo(dump(item.job, output))
                elif output is Output.name:
                    typer.echo(item.job.id)
                else:
                    console.print(f"submitted [bold]{item.job.id}[/bold] ({item.job.status.phase})")
    if failed:
        raise typer.Exit(1)


def _submit_once(c: HubClient, text: str) -> JobPublic:
    try:
        return c.submit(text)
    except (NotSent, TooManyRequests):
        raise
    except OrreryError as exc:
        if exc.retryable:  # sent, maybe stored: never retried (see submit)
            raise OrreryError(exc.message) from None
        raise


def jobs(
    ref: Annotated[str | None, typer.Argument(help="a job's ID or name: show it")] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", envvar="ORRERY_WATCH", help="follow until it ends")
    ] = False,
    phase: PhaseOpt = None,
    queue: QueueOpt = None,
    team: TeamOpt = None,
    name: NameOpt = None,
    label: LabelOpt = None,
    output: OutputOpt = Output.table,
    events: EventsOpt = 10,
    retry_for: RetryOpt = f"{RETRY_FOR_S:.0f}s",
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """List jobs (filtered), or show one with its slices, why it waits and its events."""
    filt = JobFilter.of(phase=phase, queue=queue, team=team, name=name, labels=label)
    with connect(hub, token) as c:
        if ref is not None:
            j = c.find_job(ref)
            if watch:
                patient = Patient(err, _seconds(retry_for))
                live = sys.stdout.isatty()
                follow(c, j.id, live=live, console=console, patient=patient, last=events)
            elif output in (Output.json, Output.yaml):
                typer.echo(dump(j, output))
            elif output is Output.name:
                typer.echo(j.id)
            else:
                console.print(views.job_detail(j, c.all_events(j.id), last=events))
            return
        if watch:
            _watch_list(c, filt, Patient(err, _seconds(retry_for)))
            return
        items = _list(c, filt)
        if not items and output in (Output.table, Output.wide):
            err.print("no jobs" + ("" if filt.empty else " match"), markup=False)
            return
        emit_list(
            items,
            output,
            columns=JOB_COLUMNS,
            wide=JOB_WIDE,
            row=job_row,
            name=lambda j: j.id,
        )


def _list(c: HubClient, filt: JobFilter) -> list[JobPublic]:
    return [j for j in c.jobs(phase=filt.phase, filters=filt.query()) if filt.match(j)]


def _watch_list(c: HubClient, filt: JobFilter, patient: Patient) -> None:
    """Until Ctrl-C: the table redrawn on a terminal; elsewhere, a line per job whose
    phase or progress changed."""
    if sys.stdout.isatty():
        with Live(console=console, refresh_per_second=2) as lv:
            while True:
                rows = [job_row(j, False) for j in patient.call(lambda: _list(c, filt))]
                lv.update(Text(render(JOB_COLUMNS, rows, width())))
                time.sleep(1)
    seen: dict[str, str] = {}
    while True:
        for j in reversed(patient.call(lambda: _list(c, filt))):
            note = progress(j)
            line = f"phase {j.status.phase}" + (f", {note}" if note != "-" else "")
            if seen.get(j.id) != line:
                typer.echo(f"{time.strftime('%H:%M:%S')}  {j.id}  {line}")
                seen[j.id] = line
        time.sleep(1)


def cancel(
    refs: Annotated[
        list[str] | None, typer.Argument(help="jobs to cancel: IDs or names (several)")
    ] = None,
    phase: PhaseOpt = None,
    queue: QueueOpt = None,
    team: TeamOpt = None,
    name: NameOpt = None,
    label: LabelOpt = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Cancel jobs, by ID or name, or every unfinished job a selector matches
    (``-l team=nlp``, ``--queue``, ...): their slices are stopped wherever they run."""
    filt = JobFilter.of(phase=phase, queue=queue, team=team, name=name, labels=label)
    if not refs and filt.empty:
        raise InvalidInput("cancel: give job IDs or names, or a selector (-l k=v, --queue Q, ...)")
    if refs and not filt.empty:
        raise InvalidInput("cancel: give job IDs or a selector, not both")
    with connect(hub, token) as c:
        if refs and len(refs) == 1:
            j = c.cancel(c.find_job(refs[0]).id)  # one job: its error is the command's
            console.print(f"{j.id}: {j.status.phase}", markup=False)
            return
        targets: list[str] = list(refs or [])
        if not refs:
            targets = [j.id for j in _list(c, filt) if not j.final]
            if not targets:
                err.print("orrery: no unfinished job matches; nothing cancelled", markup=False)
                return
        failed = 0
        for ref in targets:
            try:
                j = c.cancel(c.find_job(ref).id)
            except OrreryError as exc:
                failed += 1
                err.print(f"orrery: {ref}: {exc.message}", markup=False)
                continue
            console.print(f"{j.id}: {j.status.phase}", markup=False)
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(submit)
    app.command()(jobs)
    app.command()(cancel)
