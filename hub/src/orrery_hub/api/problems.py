"""Domain errors as HTTP: the status each error class maps to, and its problem body (and
``model_response``, a model sent as it is).

    InvalidInput / ManifestError -> 422 (each bad field named)     NotFound -> 404
    Gone -> 410 (a slice's output removed after its spoke's retention)
    Conflict -> 409                                                Unavailable -> 503
    Unauthenticated -> 401 (WWW-Authenticate: Bearer)              Forbidden -> 403
    TooLarge -> 413 (the body limit, enforced while streaming: ``api.limits``)
    TooManyRequests -> 429 (Retry-After)
    NotLeader -> 503 (X-Orrery-Standby, and X-Orrery-Leader where known: hub standby)
"""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from orrery.errors import (
    Conflict,
    Forbidden,
    Gone,
    InvalidInput,
    ManifestError,
    NotFound,
    NotLeader,
    OrreryError,
    TooLarge,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
)
from orrery.resources import Problem
from orrery_hub.api.limits import MAX_BODY
from orrery_hub.auth.ratelimit import retry_after_header
from orrery_hub.leader.http import standby_headers

_STATUS: dict[type[OrreryError], int] = {
    TooLarge: 413,
    Unauthenticated: 401,
    TooManyRequests: 429,
    ManifestError: 422,
    InvalidInput: 422,
    Forbidden: 403,
    Gone: 410,  # before NotFound: a Gone is a NotFound too
    NotFound: 404,
    Conflict: 409,
    Unavailable: 503,
}


def status_of(exc: OrreryError) -> int:
    return next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)


def problem_of(exc: OrreryError) -> Problem:
    fields = None
    if isinstance(exc, ManifestError):
        fields = [{"field": loc or "<document>", "reason": why} for loc, why in exc.problems]
    return Problem(
        error=type(exc).__name__, detail=exc.message, retryable=exc.retryable, fields=fields
    )


def problem_response(exc: OrreryError) -> JSONResponse:
    status = status_of(exc)
    body = problem_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": retry_after_header(exc.retry_after_s)}
    if isinstance(exc, NotLeader):
        headers = standby_headers(exc)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


async def read_text(request: Request) -> str:
    body = await request.body()  # BodyLimit has stopped anything past MAX_BODY
    if len(body) > MAX_BODY:
        raise TooLarge(f"manifest larger than {MAX_BODY} bytes")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise ManifestError([("", "manifest is not UTF-8 text")]) from None
    if not text.strip():
        raise ManifestError([("", "empty request body; send a manifest")])
    return text


def model_response(model: BaseModel, status: int = 200) -> Response:
    """A model the hub built itself, as JSON. Returning the model would have FastAPI
    validate it again against the route's response model: for a batch of a thousand jobs,
    most of the request's time."""
    return Response(
        model.model_dump_json(by_alias=True), status_code=status, media_type="application/json"
    )
