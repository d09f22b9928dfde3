"""The policy documents users write: pydantic models, ``extra="forbid"`` everywhere.

This is the boundary: a document that passes these models is well formed. Meaning (which
jobs a policy matches, which clusters it allows) lives in ``placement``, ``guardrail`` and
``cost``; ``policies/schema.json`` is generated from :func:`json_schema`.

Field names are camelCase in YAML, as in job manifests.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator
from pydantic.alias_generators import to_camel

from orrery.duration import parse_duration
from orrery.names import check_dns_label

API_VERSION = "orrery/v1"
KINDS = ("Placement", "Guardrail", "Cost")


Glob = Annotated[
    str,
    Field(min_length=1, max_length=253, description="a value or a glob: * ? [abc]"),
]
Globs = Glob | list[Glob]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class PolicyMetadata(_Model):
    name: str = Field(description="DNS-style name, unique per kind in the policy set")
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dns_label(v)


class JobMatch(_Model):
    """Which jobs a policy applies to. Every field given must match; empty matches all."""

    labels: dict[str, Globs] = Field(
        default_factory=dict,
        description="job label -> value glob(s); a missing label never matches",
    )
    queue: Globs | None = None
    team: Globs | None = Field(default=None, description="the job's `team` label")


class ClusterSelector(_Model):
    """A cluster matches when it is named in ``clusters`` or carries all ``clusterLabels``."""

    cluster_labels: dict[str, Globs] = Field(default_factory=dict)
    clusters: list[Glob] = Field(default_factory=list, description="cluster names or globs")

    @model_validator(mode="after")
    def _not_empty(self) -> ClusterSelector:
        if not self.cluster_labels and not self.clusters:
            raise ValueError("give clusterLabels, clusters, or both")
        return self


class Preference(ClusterSelector):
    weight: float = Field(default=1.0, ge=-1000, le=1000, description="added to the score")


class PlacementSpec(_Model):
    match: JobMatch = Field(default_factory=JobMatch)
    require: ClusterSelector | None = None
    forbid: ClusterSelector | None = None
    prefer: list[Preference] = Field(default_factory=list)

    @model_validator(mode="after")
    def _says_something(self) -> PlacementSpec:
        if self.require is None and self.forbid is None and not self.prefer:
            raise ValueError("a Placement needs require, forbid or prefer")
        return self


class Quota(_Model):
    gpus: int = Field(ge=0, le=1_000_000, description="GPUs in use at once")
    per: Literal["team", "queue"] = Field(
        default="team", description="each team (or queue) the guardrail matches gets this much"
    )


class GuardrailSpec(_Model):
    match: JobMatch = Field(default_factory=JobMatch)
    max_gpus_per_job: int | None = Field(default=None, ge=0, le=1_000_000)
    max_slices: int | None = Field(default=None, ge=1, le=1_000_000)
    allowed_gpu_types: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, min_length=1
    )
    max_runtime: str | float | None = Field(default=None, description="e.g. 24h")
    quota: Quota | None = None
    max_priority: int | None = Field(
        default=None,
        ge=-1_000_000,
        le=1_000_000,
        description="the highest spec.priority a matching job may ask for",
    )
    queues: list[Annotated[str, Field(min_length=1, max_length=63)]] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="the queues a matching job may use (e.g. the ones a team is bound to)",
    )

    @field_validator("max_runtime")
    @classmethod
    def _runtime(cls, v: str | float | None) -> str | float | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError("must be positive")
        return v

    @model_validator(mode="after")
    def _limits_something(self) -> GuardrailSpec:
        if (
            self.max_gpus_per_job is None
            and self.max_slices is None
            and self.allowed_gpu_types is None
            and self.max_runtime is None
            and self.quota is None
            and self.max_priority is None
            and self.queues is None
        ):
            raise ValueError(
                "a Guardrail needs at least one of maxGpusPerJob, maxSlices, "
                "allowedGpuTypes, maxRuntime, quota, maxPriority, queues"
            )
        return self

    @property
    def max_runtime_s(self) -> float | None:
        return None if self.max_runtime is None else parse_duration(self.max_runtime)


class Price(_Model):
    cluster: Glob
    gpu_type: str = Field(min_length=1)
    per_gpu_hour: float = Field(ge=0, le=1_000_000)
    spot: bool = False


class Budget(_Model):
    team: Glob = Field(description="a team, or a glob: each matching team gets this budget")
    period: Literal["day", "month"]
    limit: float = Field(ge=0)
    action: Literal["deny", "hold"] = Field(
        default="deny", description="deny: refuse at submit (403); hold: queue it, it waits"
    )


class Egress(_Model):
    """What moving data between two regions costs (globs: ``eu-*``); either direction
    unless the other is listed too."""

    source: Glob = Field(alias="from", description="the region the data leaves")
    dest: Glob = Field(alias="to", description="the region it goes to")
    per_gb: float = Field(alias="perGB", ge=0, le=1_000_000, description="dollars per GB")


class LinkSpec(_Model):
    """The bandwidth between two regions (globs), for the time to stage a dataset."""

    source: Glob = Field(alias="from")
    dest: Glob = Field(alias="to")
    gbps: float = Field(gt=0, le=1_000_000, description="gigabits per second")


class CostSpec(_Model):
    prices: list[Price] = Field(default_factory=list)
    budgets: list[Budget] = Field(default_factory=list)
    egress: list[Egress] = Field(
        default_factory=list, description="prices of moving data between regions"
    )
    links: list[LinkSpec] = Field(
        default_factory=list, description="bandwidth between regions, for staging data"
    )
    delay_cost_per_gpu_hour: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description="what an hour a job waits costs per GPU, weighed against egress when "
        "placing on data (default 2.0)",
    )
    placement_weight: float = Field(
        default=0.0,
        ge=0,
        le=1000,
        description="how strongly the scheduler prefers cheaper clusters (0: not at all)",
    )

    @model_validator(mode="after")
    def _says_something(self) -> CostSpec:
        if not (self.prices or self.budgets or self.egress or self.links):
            raise ValueError("a Cost policy needs prices, budgets, egress or links")
        return self


class _Document(_Model):
    api_version: Literal["orrery/v1"] = Field(alias="apiVersion")
    metadata: PolicyMetadata


class PlacementDocument(_Document):
    kind: Literal["Placement"]
    spec: PlacementSpec


class GuardrailDocument(_Document):
    kind: Literal["Guardrail"]
    spec: GuardrailSpec


class CostDocument(_Document):
    kind: Literal["Cost"]
    spec: CostSpec


PolicyDocument = PlacementDocument | GuardrailDocument | CostDocument

MODEL_OF_KIND: dict[str, type[PlacementDocument | GuardrailDocument | CostDocument]] = {
    "Placement": PlacementDocument,
    "Guardrail": GuardrailDocument,
    "Cost": CostDocument,
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one policy document (committed as ``policies/schema.json``)."""
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[PolicyDocument, Field(discriminator="kind")]
    )
    schema = adapter.json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Orrery policy document"
    return schema


def schema_text() -> str:
    """``policies/schema.json`` exactly as committed (a test compares the two). Regenerate:
    ``python -c "from orrery_hub.policy.schema import schema_text as s; print(s(), end='')"
    > policies/schema.json``"""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"

