"""The inference service manifest: ``kind: InferenceService``, in the job manifest's style.

``parse_service_manifest(text)`` returns a validated :class:`ServiceManifest` or raises
:class:`~orrery.errors.ManifestError` naming every bad field (``spec.replicas.max``) and
why. The hub (``POST /v1/services``), the CLI (``orrery serve``) and the gateway read a
service through it. A service's replicas run as one-slice jobs built from it
(:func:`replica_job`), so they meet the same scheduler and policies as any job.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from orrery.document import load_document
from orrery.duration import parse_duration
from orrery.errors import ManifestError
from orrery.manifest import (
    MAX_COMMAND_ARGS,
    MAX_ENV,
    MAX_ENV_KEY,
    MAX_ENV_VALUE,
    MAX_GPU_TYPES,
    MAX_GPUS_PER_SLICE,
    Arg,
    GpuTypeName,
    JobManifest,
    Metadata,
    SecretRef,
    _Model,
    problems_of,
)

MAX_REPLICAS = 256
DEFAULT_PRIORITY = 1000  # above batch jobs of the default priority: replicas may preempt them
SERVICE_QUEUE = "serving"
# Labels the hub puts on every replica job: what service, which replica.
SERVICE_LABEL = "orrery.io/service"
REPLICA_LABEL = "orrery.io/replica"
SERVICE_ENV = "ORRERY_SERVICE"  # tells the spoke to give the replica a $PORT


def _seconds(v: Any, *, field: str, low: float, high: float) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"{field} must be a duration such as 60s")
    if isinstance(v, str) and len(v) > 32:
        raise ValueError("longer than 32 characters; use e.g. 60s")
    s = parse_duration(v)
    if not low <= s <= high:
        raise ValueError(f"{field} must be between {low:g}s and {high:g}s")
    return s


class Replicas(_Model):
    min: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    max: int = Field(default=1, ge=1, le=MAX_REPLICAS)

    @model_validator(mode="after")
    def _order(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class Autoscale(_Model):
    """What drives the replica count. ``targetConcurrency`` (in-flight requests per replica,
    measured by the gateways) always does; each optional target adds a signal the replicas
    report themselves (``orrery.workload.load``), and the largest recommendation wins."""

    target_concurrency: float = Field(default=10.0, gt=0, le=100_000)
    queue_depth: float | None = Field(
        default=None, gt=0, le=1_000_000, description="waiting requests per replica"
    )
    kv_cache_utilization: float | None = Field(
        default=None, gt=0, le=1, description="fraction of the KV cache in use per replica"
    )
    ttft_p95: float | str | None = Field(
        default=None, description="time to first token, 95th percentile, e.g. 500ms as 0.5s"
    )
    stable_window: float | str = Field(default=60.0)
    panic_window: float | str = Field(default=6.0)
    scale_down_delay: float | str = Field(default=0.0)
    scale_to_zero: bool = False

    @field_validator("stable_window", mode="before")
    @classmethod
    def _stable(cls, v: Any) -> float:
        return _seconds(v, field="stableWindow", low=1, high=3600)

    @field_validator("panic_window", mode="before")
    @classmethod
    def _panic(cls, v: Any) -> float:
        return _seconds(v, field="panicWindow", low=0.5, high=3600)

    @field_validator("scale_down_delay", mode="before")
    @classmethod
    def _delay(cls, v: Any) -> float:
        return _seconds(v, field="scaleDownDelay", low=0, high=3600)

    @field_validator("ttft_p95", mode="before")
    @classmethod
    def _ttft(cls, v: Any) -> float | None:
        return None if v is None else _seconds(v, field="ttftP95", low=0.001, high=600)

    @model_validator(mode="after")
    def _windows(self) -> Autoscale:
        if float(self.panic_window) > float(self.stable_window):
            raise ValueError("panicWindow must not be longer than stableWindow")
        return self

    # Typed views: the validators above store seconds.
    @property
    def stable_s(self) -> float:
        return float(self.stable_window)

    @property
    def panic_s(self) -> float:
        return float(self.panic_window)

    @property
    def scale_down_delay_s(self) -> float:
        return float(self.scale_down_delay)

    @property
    def ttft_p95_s(self) -> float | None:
        return None if self.ttft_p95 is None else float(self.ttft_p95)


class Spread(_Model):
    regions: int = Field(default=1, ge=1, le=64)


class ServiceSpec(_Model):
    queue: str = Field(default=SERVICE_QUEUE, min_length=1, max_length=63)
    priority: int = Field(default=DEFAULT_PRIORITY, ge=-1_000_000, le=1_000_000)
    gpus_per_replica: int = Field(default=1, ge=0, le=MAX_GPUS_PER_SLICE)
    gpu_type: GpuTypeName | Annotated[list[GpuTypeName], Field(max_length=MAX_GPU_TYPES)] | None = (
        Field(default=None, description="one GPU type, or a list meaning any of them")
    )
    replicas: Replicas = Field(default_factory=Replicas)
    autoscale: Autoscale = Field(default_factory=Autoscale)
    spread: Spread = Field(default_factory=Spread)
    readiness_path: str = Field(default="/healthz", max_length=1024)
    image: str | None = Field(default=None, max_length=1024)
    command: list[Arg] = Field(min_length=1, max_length=MAX_COMMAND_ARGS)
    env: dict[
        Annotated[str, Field(max_length=MAX_ENV_KEY)],
        Annotated[str, Field(max_length=MAX_ENV_VALUE)] | SecretRef,
    ] = Field(default_factory=dict, max_length=MAX_ENV)

    @field_validator("readiness_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c in v for c in " \r\n\t#"):
            raise ValueError("must be an absolute URL path such as /healthz")
        return v

    @model_validator(mode="after")
    def _zero(self) -> ServiceSpec:
        if self.replicas.min == 0 and not self.autoscale.scale_to_zero:
            raise ValueError("replicas.min is 0 but autoscale.scaleToZero is false")
        return self

    def template(self) -> dict[str, Any]:
        """What a replica runs: a change here rolls the replicas (one surge at a time)."""
        return {
            "command": list(self.command),
            "image": self.image,
            "env": {k: v if isinstance(v, str) else v.model_dump(by_alias=True)
                    for k, v in sorted(self.env.items())},
            "gpusPerReplica": self.gpus_per_replica,
            "gpuType": self.gpu_type,
        }

    def template_hash(self) -> str:
        raw = json.dumps(self.template(), sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()[:12]


class ServiceManifest(_Model):
    api_version: Literal["orrery/v1"] = Field(alias="apiVersion")
    kind: Literal["InferenceService"]
    metadata: Metadata
    spec: ServiceSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def team(self) -> str | None:
        return self.metadata.labels.get("team")


def service_from_data(data: Any, *, source: str = "manifest") -> ServiceManifest:
    if not isinstance(data, dict):
        raise ManifestError(
            [("", "must be a mapping with apiVersion, kind, metadata and spec")], source=source
        )
    if data.get("kind") != "InferenceService":
        got = data.get("kind")
        raise ManifestError(
            [("kind", f"expected InferenceService, got {str(got)[:64]!r}")], source=source
        )
    try:
        return ServiceManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(problems_of(exc, ServiceManifest), source=source) from None


def parse_service_manifest(text: str, *, source: str = "manifest") -> ServiceManifest:
    """Validate an InferenceService given as YAML or JSON text."""
    return service_from_data(load_document(text, source=source), source=source)


def service_to_json(manifest: ServiceManifest) -> str:
    return json.dumps(manifest.model_dump(mode="json", by_alias=True, exclude_none=True))


def replica_job(svc: ServiceManifest, replica: int, *, job_name: str) -> JobManifest:
    """The one-slice job that runs replica ``replica`` of ``svc``: the service's labels (so
    residency, team guardrails and budgets apply), its queue and priority, and restarts
    on failure (a replica is meant to run until the service says otherwise)."""
    spec = svc.spec
    env: dict[str, Any] = {
        k: v if isinstance(v, str) else v.model_dump(by_alias=True) for k, v in spec.env.items()
    }
    env[SERVICE_ENV] = svc.name
    labels = {**svc.metadata.labels, SERVICE_LABEL: svc.name, REPLICA_LABEL: str(replica)}
    data = {
        "apiVersion": "orrery/v1",
        "kind": "TrainingJob",
        "metadata": {"name": job_name, "labels": labels},
        "spec": {
            "queue": spec.queue,
            "priority": spec.priority,
            "slices": 1,
            "gpusPerSlice": spec.gpus_per_replica,
            "gpuType": spec.gpu_type,
            "restartPolicy": "Slice",
            "maxRetries": 100,
            # No maxRuntime: a replica has no natural end, so none is enforced; cost
            # estimates and budgets count the default day, as for any job without one.
            "image": spec.image,
            "command": list(spec.command),
            "env": env,
        },
    }
    return JobManifest.model_validate({k: v for k, v in data.items() if v is not None})


__all__ = [
    "Autoscale",
    "Replicas",
    "ServiceManifest",
    "ServiceSpec",
    "Spread",
    "parse_service_manifest",
    "replica_job",
]
