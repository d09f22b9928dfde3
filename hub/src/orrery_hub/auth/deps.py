"""The FastAPI side of auth: ``require(Permission.X)``, used on every route but /healthz::

    @app.get("/v1/things")
    async def things(who: Annotated[Principal, require(Permission.JOBS_READ)]) -> ...

401 (with ``WWW-Authenticate: Bearer``) for no, unknown, expired or revoked token; 403
naming the missing permission. Each denial is reported to ``Guard.on_denied`` (the hub
writes it to the audit log: who, what, why — never the token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from orrery.errors import Forbidden, TooManyRequests, Unauthenticated
from orrery_hub.auth.authn import SETTINGS_ADMIN_ID, Authenticator
from orrery_hub.auth.ratelimit import RateLimiter
from orrery_hub.auth.roles import Permission, Principal

_READS = frozenset({"GET", "HEAD", "OPTIONS"})

# (status, principal or None, "METHOD /path", reason, client address) -> the audit log
DenialSink = Callable[[int, Principal | None, str, str, str], Awaitable[None]]


@dataclass
class Guard:
    """What ``require`` finds on ``app.state.guard``."""

    authenticator: Authenticator
    on_denied: DenialSink | None = None
    # Writes (any method but GET/HEAD/OPTIONS) per token; None: unlimited.
    writes: RateLimiter | None = None
    clock: Callable[[], float] | None = None

    async def check(self, request: Request, permission: Permission) -> Principal:
        try:
            principal = await self.authenticator.authenticate(request.headers.get("authorization"))
        except Unauthenticated as exc:
            await self._denied(401, None, request, exc.message)
            raise
        except Forbidden as exc:  # known, but granted nothing (an OIDC user in no group)
            await self._denied(403, None, request, exc.message)
            raise
        if not principal.can(permission):
            reason = (
                f"permission {permission.value} required: role {principal.role.value} "
                "does not have it"
            )
            await self._denied(403, principal, request, reason)
            raise Forbidden(reason)
        if (
            self.writes is not None
            and self.clock is not None
            and request.method not in _READS
            # The hub's configured admin token is the operator's own (benchmarks, `orrery
            # up`); the limit is for the tokens handed to users and automation.
            and principal.token_id != SETTINGS_ADMIN_ID
        ):
            wait = self.writes.take(principal.token_id, self.clock())
            if wait > 0:
                reason = (
                    f"write rate limit of {self.writes.rate:g}/s (burst "
                    f"{self.writes.burst:g}) reached for token {principal.token_id}; "
                    f"retry in {wait:.1f}s"
                )
                raise TooManyRequests(reason, retry_after_s=wait)
        request.state.principal = principal
        return principal

    async def _denied(
        self, status: int, p: Principal | None, request: Request, reason: str
    ) -> None:
        # What was asked and from where, made only for a denial: ``request.url`` builds a
        # whole URL (~2% of an admitted job's time when made for every request).
        if self.on_denied is not None:
            what = f"{request.method} {request.url.path}"
            source = request.client.host if request.client else "?"
            await self.on_denied(status, p, what, reason, source)


def require(permission: Permission) -> Any:
    """A dependency giving the calling ``Principal`` if it holds ``permission``."""

    async def dep(request: Request) -> Principal:
        guard: Guard = request.app.state.guard
        return await guard.check(request, permission)

    return Depends(dep)
