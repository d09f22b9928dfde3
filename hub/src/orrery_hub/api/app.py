"""Routes of the public REST contract (DESIGN.md), and the one handler that turns domain
errors into HTTP statuses:

    InvalidInput / ManifestError -> 422 (each bad field named)     NotFound -> 404
    Conflict -> 409                                                Unavailable -> 503
    Unauthenticated -> 401 (WWW-Authenticate: Bearer)              Forbidden -> 403
    TooLarge -> 413 (the body limit, enforced while streaming: ``api.limits``)

Every route but /healthz declares the permission it needs (``require``, orrery_hub.auth).
"""

from __future__ import annotations

import json
import math
import time
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from orrery import __version__
from orrery.duration import parse_duration
from orrery.errors import (
    InvalidInput,
    OrreryError,
)
from orrery.manifest import JobManifest, parse_manifest
from orrery.resources import (
    JOB_PHASES,
    AttemptView,
    ClusterList,
    EventView,
    JobList,
    JobPublic,
    Problem,
)
from orrery.wire.logs import MAX_TAIL_LINES
from orrery_hub.api.batch import batch_routes
from orrery_hub.api.fastsubmit import PATH as SUBMIT_PATH
from orrery_hub.api.fastsubmit import SubmitFastPath, submit_one
from orrery_hub.api.limits import MAX_BODY, BodyLimit
from orrery_hub.api.models import AuditEntry, PolicyInfo, PolicyReload, UsageReport
from orrery_hub.api.problems import problem_response, read_text
from orrery_hub.api.protocol import HubApi
from orrery_hub.api.scope import bind_team, visible
from orrery_hub.auth import Guard, Permission, Principal, require
from orrery_hub.auth.ratelimit import RateLimiter
from orrery_hub.leader.http import StandbyGuard
from orrery_hub.store import queries

INT64_MAX = 2**63 - 1
# What every route that needs a token may answer besides its own statuses.
DENIED: dict[int | str, dict[str, Any]] = {401: {"model": Problem}, 403: {"model": Problem}}
# Pagination of events and attempts: oldest first, ``after`` the last id of the page before.
Page = Annotated[int, Query(ge=1, le=queries.MAX_PAGE, description="at most this many rows")]
After = Annotated[
    int | None, Query(ge=0, le=INT64_MAX, description="the next page: rows after this id")
]


def _selector(text: str | None) -> dict[str, str]:
    """``team=nlp,tier=gold`` → pairs; a part that is not KEY=VALUE is refused, named."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        k, sep, v = part.partition("=")
        if not sep or not k.strip():
            raise InvalidInput(f"label: {part[:80]!r} is not KEY=VALUE")
        out[k.strip()] = v.strip()
    return out


def create_app(hub: HubApi) -> FastAPI:
    app = FastAPI(
        title="Orrery hub",
        version=__version__,
        description="GPU-first control plane across clusters: submit jobs, watch them, "
        "see the fleet. Every route but /healthz needs 'Authorization: Bearer <token>'.",
        # The schema is served below, behind a token like everything else; the docs UIs
        # would fetch it without one, so they are off.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # FastAPI's OpenTelemetry hooks: the hub exports no traces or metrics through them
        # (its metrics are /metrics), and left on they ask the global providers on every
        # request whether one was configured since (~4% of a job's admission).
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )

    rate = hub.settings.write_rate_per_s
    app.state.guard = Guard(
        hub.auth,
        on_denied=hub.record_denial,
        writes=RateLimiter(rate, hub.settings.write_burst) if rate > 0 else None,
        clock=hub.clock,
    )
    denied = DENIED

    @app.exception_handler(OrreryError)
    async def _domain(_: Request, exc: OrreryError) -> JSONResponse:
        return problem_response(exc)

    # Middleware added later wraps what was added before: the submit fast path runs inside
    # the body limit and the standby guard, as the route it stands in for would.
    app.add_middleware(SubmitFastPath, hub=hub, guard=app.state.guard)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY)
    if hub.elector is not None:
        app.add_middleware(StandbyGuard, role=hub.elector)  # a standby refuses writes

    # Routes are matched in the order they are declared, one by one: the probe asked most
    # often comes first (declared last, it had 28 routes to pass, most of its time).
    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = hub.healthy
        body: dict[str, Any] = {"status": "ok" if ok else "degraded", "nats": ok}
        if hub.elector is not None:  # one of several hubs: which leads
            body["role"] = "leader" if hub.elector.leading else "standby"
            body["leader"] = hub.elector.leader_address
        return JSONResponse(body, status_code=200 if ok else 503)

    manifest_schema = JobManifest.model_json_schema(by_alias=True)

    @app.post(
        SUBMIT_PATH,
        status_code=201,
        response_model=JobPublic,
        response_model_by_alias=True,
        responses={**denied, 422: {"model": Problem}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": manifest_schema},
                    "application/yaml": {"schema": manifest_schema},
                },
            }
        },
        summary="Submit a job manifest (JSON or YAML)",
    )
    async def submit(  # answered by ``api.fastsubmit`` in the app; declared for the schema
        request: Request, who: Annotated[Principal, require(Permission.JOBS_SUBMIT)]
    ) -> Response:
        return await submit_one(hub, request, who)

    @app.get("/v1/jobs", response_model=JobList, response_model_by_alias=True, responses=denied)
    async def list_jobs(
        who: Annotated[Principal, require(Permission.JOBS_READ)],
        phase: Annotated[str | None, Query(description="only jobs in this phase")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
        queue: Annotated[
            str | None, Query(max_length=63, description="only jobs in this queue")
        ] = None,
        team: Annotated[
            str | None, Query(max_length=63, description="only this team's jobs")
        ] = None,
        name: Annotated[
            str | None, Query(max_length=253, description="only jobs of this name")
        ] = None,
        label: Annotated[
            str | None,
            Query(max_length=4096, description="only jobs with these labels: k=v[,k=v]"),
        ] = None,
    ) -> JobList:
        if phase is not None and phase not in JOB_PHASES:
            raise InvalidInput(f"phase: must be one of {', '.join(JOB_PHASES)}")
        wanted = _selector(label)
        if who.team_scoped:  # its own team only, whatever it asks for
            if team is not None and team != who.team:
                return JobList(items=[])
            team = who.team
        # Labels are JSON in the store, matched here: read up to the largest page for them.
        scan = 10_000 if wanted else limit
        items = await hub.list_jobs(phase, scan, team=team, queue=queue, name=name)
        if wanted:
            items = [
                j
                for j in items
                if all((j.metadata.get("labels") or {}).get(k) == v for k, v in wanted.items())
            ]
        return JobList(items=items[:limit])

    @app.get(
        "/v1/jobs/{job_id}",
        response_model=JobPublic,
        response_model_by_alias=True,
        responses={**denied, 404: {"model": Problem}},
    )
    async def get_job(
        job_id: str, who: Annotated[Principal, require(Permission.JOBS_READ)]
    ) -> JobPublic:
        return visible(await hub.get_job(job_id), who)

    @app.delete(
        "/v1/jobs/{job_id}",
        response_model=JobPublic,
        response_model_by_alias=True,
        responses={**denied, 404: {"model": Problem}, 409: {"model": Problem}},
    )
    async def cancel_job(
        job_id: str, who: Annotated[Principal, require(Permission.JOBS_CANCEL)]
    ) -> JobPublic:
        visible(await hub.get_job(job_id), who)
        return await hub.cancel(job_id)

    @app.get(
        "/v1/jobs/{job_id}/events",
        response_model=list[EventView],
        response_model_by_alias=True,
        responses={**denied, 404: {"model": Problem}},
    )
    async def job_events(
        job_id: str,
        who: Annotated[Principal, require(Permission.JOBS_READ)],
        limit: Page = queries.PAGE,
        after: After = None,
    ) -> Any:
        visible(await hub.get_job(job_id), who)
        return await hub.events(job_id, after=after, limit=limit)

    @app.get(
        "/v1/jobs/{job_id}/attempts",
        response_model=list[AttemptView],
        response_model_by_alias=True,
        responses={**denied, 404: {"model": Problem}},
    )
    async def job_attempts(
        job_id: str,
        who: Annotated[Principal, require(Permission.JOBS_READ)],
        limit: Page = queries.PAGE,
        after: After = None,
    ) -> Any:
        visible(await hub.get_job(job_id), who)
        return await hub.attempts(job_id, after=after, limit=limit)

    @app.get(
        "/v1/jobs/{job_id}/logs",
        response_class=StreamingResponse,
        responses={
            **denied,
            200: {"content": {"text/plain": {}}, "description": "the output, as it comes"},
            404: {"model": Problem},
            409: {"model": Problem, "description": "no slice has been placed yet"},
            410: {"model": Problem, "description": "removed after the spoke's retention"},
            503: {"model": Problem, "description": "the cluster holding it did not answer"},
        },
        summary="A job's output (its slices' stdout and stderr), streamed from the clusters",
    )
    async def job_logs(
        job_id: str,
        who: Annotated[Principal, require(Permission.JOBS_LOGS)],
        slice_: Annotated[
            int | None, Query(alias="slice", ge=0, le=INT64_MAX, description="only this slice")
        ] = None,
        epoch: Annotated[
            int | None, Query(ge=0, le=INT64_MAX, description="only this epoch")
        ] = None,
        follow: Annotated[bool, Query(description="until the attempt ends")] = False,
        tail: Annotated[
            int | None,
            Query(ge=0, le=MAX_TAIL_LINES, description="the last lines of each attempt"),
        ] = None,
    ) -> StreamingResponse:
        visible(await hub.get_job(job_id), who)
        body = await hub.logs(job_id, slice=slice_, epoch=epoch, follow=follow, tail=tail)
        # No buffering on the way (a proxy honouring it): followed output arrives as written.
        return StreamingResponse(
            body, media_type="text/plain; charset=utf-8", headers={"X-Accel-Buffering": "no"}
        )

    @app.get(
        "/v1/clusters", response_model=ClusterList, response_model_by_alias=True, responses=denied
    )
    async def clusters(
        who: Annotated[Principal, require(Permission.CLUSTERS_READ)],
    ) -> ClusterList:
        return ClusterList(items=await hub.clusters())

    @app.get(
        "/v1/policies",
        responses=denied,
        summary="The policy set in force: sources, hashes, entries",
    )
    async def policies(
        who: Annotated[Principal, require(Permission.POLICIES_READ)],
    ) -> PolicyInfo:
        return hub.policies_info()

    @app.post(
        "/v1/policies:reload",
        responses={**denied, 422: {"model": Problem}},
        summary="Reload the policy folder; a bad file keeps the previous set in force",
    )
    async def reload_policies(
        who: Annotated[Principal, require(Permission.POLICIES_ADMIN)],
    ) -> PolicyReload:
        return await hub.reload_policies()

    @app.post(
        "/v1/policies:check",
        responses={**denied, 422: {"model": Problem}},
        summary="Evaluate a manifest against the policies and the fleet; submits nothing",
    )
    async def check_policy(
        request: Request, who: Annotated[Principal, require(Permission.POLICIES_READ)]
    ) -> Any:
        text = await read_text(request)
        # The body is {"manifest": "<text>"} (what `orrery policy check --hub` sends), or
        # the manifest itself.
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # not JSON (YAML?), or nested past the limit
            data = None
        if (
            isinstance(data, dict)
            and set(data) == {"manifest"}
            and isinstance(data["manifest"], str)
        ):
            text = data["manifest"]
        report = await hub.check_policy(bind_team(parse_manifest(text), who))
        return report.model_dump(mode="json", by_alias=True)

    @app.get(
        "/v1/usage",
        responses=denied,
        summary="GPU-seconds and cost per job and team; GPUs in use now",
    )
    async def usage(
        who: Annotated[Principal, require(Permission.USAGE_READ)],
        team: Annotated[str | None, Query(description="only this team")] = None,
        since: Annotated[
            str | None, Query(description="a duration back from now (e.g. 7d) or a Unix time")
        ] = None,
    ) -> UsageReport:
        start: float | None = None
        if since is not None:
            try:
                start = (
                    float(since)
                    if since.replace(".", "", 1).isdigit() and float(since) > 1e9
                    else time.time() - parse_duration(since)
                )
            except ValueError as exc:
                raise InvalidInput(f"since: {exc}") from None
            if not math.isfinite(start):
                raise InvalidInput("since: must be a finite time")
        return await hub.usage(team=team, since=start)

    @app.get(
        "/v1/audit", responses=denied, summary="Admit, deny, hold, placement and reload decisions"
    )
    async def audit(
        who: Annotated[Principal, require(Permission.AUDIT_READ)],
        job: Annotated[str | None, Query(description="only this job")] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
        before: Annotated[
            int | None,
            Query(ge=0, le=INT64_MAX, description="the next page: rows older than this id"),
        ] = None,
    ) -> list[AuditEntry]:
        return await hub.audit(job=job, limit=limit, before=before)

    from orrery_hub.api.tokens import token_routes

    app.include_router(batch_routes(hub, denied))
    app.include_router(token_routes(hub, denied))
    from orrery_hub.api.clusters import cluster_routes
    from orrery_hub.api.datasets import dataset_routes

    app.include_router(cluster_routes(hub, denied))
    app.include_router(dataset_routes(hub, denied))

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(
        who: Annotated[Principal, require(Permission.CLUSTERS_READ)],
    ) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        dependencies=[] if hub.settings.metrics_open else [require(Permission.CLUSTERS_READ)],
    )
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(await hub.metrics_text(), media_type=CONTENT_TYPE_LATEST)

    return app
