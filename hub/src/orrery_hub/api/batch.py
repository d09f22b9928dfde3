"""``POST /v1/jobs:batch``: many manifests in one request, each admitted or refused on
its own (all or nothing per manifest), with a status for each.

The body is a JSON array of manifests (or ``{"items": [...]}``), or YAML documents
separated by ``---`` (what ``orrery submit`` reads from a multi-document file or stdin).
The answer is 200 with one item per manifest, in order: ``201`` and the job, or the
status and problem that manifest alone would have got from ``POST /v1/jobs``. They are
admitted in one transaction (group commit), so a batch costs about one commit.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response

from orrery.document import json_items, load_documents
from orrery.errors import InvalidInput, OrreryError
from orrery.manifest import JobManifest, all_valid, manifest_from_data
from orrery.resources import JobBatch, JobBatchItem, Problem
from orrery_hub.admission.answer import Admitted
from orrery_hub.api.problems import problem_of, read_text, status_of
from orrery_hub.api.protocol import HubApi
from orrery_hub.api.scope import bind_team
from orrery_hub.auth import Permission, Principal, require

MAX_BATCH = 1000  # manifests per request


def batch_routes(hub: HubApi, denied: dict[int | str, dict[str, Any]]) -> APIRouter:
    r = APIRouter()

    @r.post(
        "/v1/jobs:batch",
        response_model=JobBatch,
        response_model_by_alias=True,
        responses={**denied, 413: {"model": Problem}, 422: {"model": Problem}},
        summary=f"Submit up to {MAX_BATCH} manifests; each is admitted or refused on its own",
    )
    async def submit_batch(
        request: Request, who: Annotated[Principal, require(Permission.JOBS_SUBMIT)]
    ) -> Response:
        text = await read_text(request)
        valid = _all_valid(text)
        manifests: list[JobManifest | OrreryError] = []
        for i, doc in enumerate(_documents(text) if valid is None else valid):
            try:
                m = manifest_from_data(doc, source=f"item {i}") if valid is None else doc
                manifests.append(bind_team(m, who))
            except OrreryError as exc:
                manifests.append(exc)
        outcomes = await hub.submit_many(manifests)
        return Response(batch_json(outcomes), media_type="application/json")

    return r


def _all_valid(text: str) -> list[JobManifest] | None:
    """A JSON batch of valid manifests (what clients send), validated in one call and not
    measured: a valid manifest is within ``orrery.document``'s limits. None: anything
    else, which goes the way that names each problem (``_documents``)."""
    items = json_items(text)
    if items is None or not 0 < len(items) <= MAX_BATCH:
        return None
    return all_valid(items)


def _documents(text: str) -> list[Any]:
    docs = load_documents(text)
    if not docs:
        raise InvalidInput("body: no manifests; send a JSON array or YAML documents")
    if len(docs) > MAX_BATCH:
        raise InvalidInput(f"body: {len(docs)} manifests, at most {MAX_BATCH} per batch")
    return docs


def batch_json(outcomes: list[Admitted | OrreryError]) -> str:
    """``JobBatch`` as JSON: each admitted job's text composed (``admission.answer``), each
    refusal's dumped by its model. Parses to what ``JobBatch.model_dump_json`` writes."""
    items = [
        f'{{"status": 201, "job": {o.json()}, "error": null}}'
        if isinstance(o, Admitted)
        else JobBatchItem(status=status_of(o), error=problem_of(o)).model_dump_json(by_alias=True)
        for o in outcomes
    ]
    return '{"items": [' + ", ".join(items) + "]}"
