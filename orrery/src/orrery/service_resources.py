"""What the hub's service API returns, and what gateways and the hub exchange.

``ServicePublic`` is ``GET /v1/services[/{name}]``. ``GatewayReport`` is what a gateway
sends the hub on each sync (a NATS request on ``orrery.v1.gateway.<id>.sync``, or
``POST /v1/gateway/sync`` as a fallback): the load it measured per service and replica;
``GatewayRoutes`` is the hub's answer: every service's routable replicas. One exchange
both reports and refreshes. ``GatewayEnrollRequest``/``GatewayEnrollment`` are
``POST /v1/gateways:enroll``: the gateway's NATS identity. Shared by the hub (builds
them), the gateway and the CLI (read them).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

MAX_SERVICES = 10_000
MAX_REPLICAS_REPORTED = 4096
Name = Annotated[str, Field(min_length=1, max_length=253)]
Seconds = Annotated[float, Field(ge=0, le=1e9)]
Load = Annotated[float, Field(ge=0, le=1e9)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        allow_inf_nan=False,
    )


# ---- GET /v1/services ------------------------------------------------------------------


class ReplicaView(_Model):
    replica: int
    job: str
    phase: str  # Pending, Starting, Running, Stopping
    cluster: str | None = None
    region: str | None = None
    endpoint: str | None = None  # host:port the replica listens on
    template: str  # the spec template hash it runs (a rolling update replaces old ones)
    load: dict[str, float] = Field(default_factory=dict)  # its own reports


class ServiceStatus(_Model):
    phase: str  # Pending, Ready, Scaling, Updating, ScaledToZero, Deleting
    desired: int
    ready: int
    reason: str = ""
    concurrency: float = 0.0  # in flight at the gateways, all of them together
    latency_p95_s: float | None = None
    requests_per_s: float = 0.0
    cold_start_s: float | None = None  # the last scale-from-zero, first request to ready
    panic: bool = False
    replicas: list[ReplicaView] = Field(default_factory=list)
    created_at: float
    template: str


class ServicePublic(_Model):
    name: str
    metadata: dict[str, object]
    spec: dict[str, object]
    status: ServiceStatus


# ---- gateway <-> hub --------------------------------------------------------------------


class ReplicaLoad(_Model):
    job: Name
    concurrency: Load  # mean in flight over the interval
    requests: int = Field(ge=0, le=10**12)
    errors: int = Field(default=0, ge=0, le=10**12)
    latency_p95_s: Seconds | None = None
    ready: bool = False  # answered its readiness path at the last probe


class ServiceLoad(_Model):
    name: Name
    concurrency: Load  # mean in flight over the interval, held requests included
    held: int = Field(default=0, ge=0, le=10**9)  # waiting for a replica right now
    requests: int = Field(ge=0, le=10**12)
    errors: int = Field(default=0, ge=0, le=10**12)
    latency_p50_s: Seconds | None = None
    latency_p95_s: Seconds | None = None
    cold_start_s: Seconds | None = None
    replicas: list[ReplicaLoad] = Field(default_factory=list, max_length=MAX_REPLICAS_REPORTED)


class GatewayReport(_Model):
    gateway: Name  # a name unique among gateways (several may run)
    region: str | None = Field(default=None, max_length=253)
    interval_s: float = Field(gt=0, le=3600)
    services: list[ServiceLoad] = Field(default_factory=list, max_length=MAX_SERVICES)


class Route(_Model):
    job: str
    endpoint: str  # host:port
    cluster: str
    region: str | None = None
    # The replica's cluster missed its heartbeat: route elsewhere while any other is ready.
    stale: bool = False


class ServiceRoutes(_Model):
    name: str
    readiness_path: str
    scale_to_zero: bool
    routes: list[Route] = Field(default_factory=list)


class GatewayRoutes(_Model):
    services: list[ServiceRoutes] = Field(default_factory=list)


# ---- POST /v1/gateways:enroll -------------------------------------------------------------

# A sync request larger than this is refused unread (below nats-server's 1 MiB max_payload).
MAX_SYNC_BYTES = 1_000_000


class GatewayEnrollRequest(_Model):
    gateway: str = Field(min_length=1, max_length=63)  # its id: one NATS subject token
    csr: str = Field(max_length=8192)  # PEM; only its public key is used


class GatewayEnrollment(_Model):
    gateway: str
    nats_urls: list[str]
    subject: str  # where to send GatewayReport requests
    inbox_prefix: str | None = None  # the only inbox its NATS user may read (secure mode)
    certificate: str | None = None  # PEM, for gateway-<id>; None: the hub runs --insecure
    ca: str | None = None  # PEM: the CA nats-server's certificate chains to
