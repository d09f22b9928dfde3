"""Gateway syncs: what the hub answers a gateway's load report with (every service's
routes), over NATS (``orrery.v1.gateway.<id>.sync``, answered by the leading hub only, like
the spokes' reports) or over REST (``POST /v1/gateway/sync``, the fallback).

A request that is too large, not a GatewayReport, or that names another gateway than its
subject is answered ``{"error": ...}`` and logged; it never reaches the controller.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from nats.aio.msg import Msg
from pydantic import ValidationError
from sqlmodel import select

from orrery.service_manifest import ServiceManifest
from orrery.service_resources import MAX_SYNC_BYTES, GatewayReport, GatewayRoutes, ServiceRoutes
from orrery.wire.subjects import gateway_of
from orrery_hub.serving.rows import ServiceRow

if TYPE_CHECKING:
    from orrery_hub.api.protocol import HubApi

log = logging.getLogger("orrery.hub.gateway")


async def sync(hub: HubApi, report: GatewayReport) -> GatewayRoutes:
    """Take one gateway's load; every service's routes as they stand now."""
    ctl = hub.serving
    now = hub.clock()
    ctl.gateway_report(report, now)
    rows: list[ServiceRow] = await hub.store.tx(lambda s: list(s.exec(select(ServiceRow))))
    out = []
    for row in rows:
        m = ServiceManifest.model_validate(row.manifest)
        out.append(
            ServiceRoutes(
                name=row.name,
                readiness_path=m.spec.readiness_path,
                scale_to_zero=m.spec.autoscale.scale_to_zero,
                routes=ctl.routes(row.name, now),
            )
        )
    return GatewayRoutes(services=out)


def _error(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


async def answer(hub: HubApi, msg: Msg) -> None:
    """One NATS sync request; any failure is a logged refusal, never an exception."""
    gateway = gateway_of(msg.subject)
    reply: bytes
    try:
        if gateway is None:
            raise _Refused(f"subject {msg.subject!r} names no gateway")
        if len(msg.data) > MAX_SYNC_BYTES:
            raise _Refused(f"report of {len(msg.data)} bytes exceeds {MAX_SYNC_BYTES}")
        try:
            report = GatewayReport.model_validate_json(msg.data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "body"
            raise _Refused(f"not a GatewayReport: {field}: {first['msg']}") from None
        if report.gateway != gateway:
            # Only gateway-<id>'s certificate may publish on this subject (secure mode): the
            # subject, not the body, says who reports.
            raise _Refused(f"report names gateway {report.gateway!r}, its subject {gateway!r}")
        reply = (await sync(hub, report)).model_dump_json(by_alias=True).encode()
    except _Refused as exc:
        log.warning(
            "gateway sync refused: %s", exc, extra={"gateway": gateway, "reason": str(exc)}
        )
        reply = _error(str(exc))
    except Exception as exc:  # the store or the controller failed: the next sync retries
        log.exception("gateway sync failed", extra={"gateway": gateway})
        reply = _error(f"the hub could not answer: {type(exc).__name__}")
    if msg.reply:
        try:
            await msg.respond(reply)
        except Exception as exc:  # NATS gone: the gateway retries at its next interval
            log.debug("gateway sync reply lost: %r", exc)


class _Refused(Exception):
    """A sync request the hub will not take (the message says why)."""
