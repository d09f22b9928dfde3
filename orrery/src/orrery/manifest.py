"""The job manifest users submit: YAML or JSON, Kubernetes style.

``parse_manifest(text)`` is the one way in: it returns a validated :class:`JobManifest` or
raises :class:`~orrery.errors.ManifestError` naming every bad field (``spec.gpusPerSlice``)
and why. The hub, the CLI and the policy checker all go through it, so a manifest means the
same thing everywhere.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel

from orrery.document import load_document
from orrery.duration import parse_duration
from orrery.errors import ManifestError
from orrery.names import check_dns_label

API_VERSION = "orrery/v1"
MAX_SLICES = 4096
MAX_GPUS_PER_SLICE = 64
DEFAULT_MAX_RUNTIME_S = 24 * 3600.0
# Declared limits: past any of them the manifest is refused, naming the field. They keep
# one job's Assignment well inside a NATS message (see orrery.wire.codec.MAX_ORDER_BYTES).
MAX_LABELS = 64
MAX_LABEL_VALUE = 63
MAX_ENV = 256
MAX_ENV_KEY = 256
MAX_ENV_VALUE = 32 * 1024
MAX_COMMAND_ARGS = 1024
MAX_ARG = 32 * 1024
MAX_GPU_TYPES = 32
MAX_PATH = 4096
MAX_MAX_RUNTIME_S = 366 * 24 * 3600.0

_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_LABEL_KEY = re.compile(r"([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

GpuTypeName = Annotated[str, Field(max_length=128)]
Arg = Annotated[str, Field(max_length=MAX_ARG)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        allow_inf_nan=False,
    )


class RestartPolicy(StrEnum):
    GANG = "Gang"  # tightly coupled: one slice fails, the whole gang restarts from checkpoint
    SLICE = "Slice"  # independent shards: only the failed slice reruns


class Metadata(_Model):
    name: str = Field(description="DNS-style name: lowercase letters, digits and '-'")
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dns_label(v)

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _LABEL_KEY.fullmatch(key):
                raise ValueError(f"label key {key[:80]!r} is not a valid label name")
            if len(value) > MAX_LABEL_VALUE:
                raise ValueError(f"label {key!r}: value longer than {MAX_LABEL_VALUE} characters")
        return v


class SecretRef(_Model):
    """``{secretRef: NAME}`` (optionally ``key: K``) in ``spec.env``: the value lives on each
    cluster, not in the manifest — a Kubernetes Secret ``NAME`` (its key ``K``, default the
    variable's name), or on a plain host the file ``<spoke --secrets-dir>/NAME`` (``NAME/K``
    with a key). The hub stores, returns and sends the reference only."""

    secret_ref: str = Field(alias="secretRef", description="the secret's name on the cluster")
    key: str | None = Field(default=None, description="a key within it")

    @field_validator("secret_ref")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dns_label(v)

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and (not _SECRET_KEY.fullmatch(v) or v in (".", "..")):
            raise ValueError("a secret key is 1-253 letters, digits, '-', '_' or '.'")
        return v


class DatasetRef(_Model):
    """An input the job reads: a Dataset by name, and where its slices find it."""

    name: str = Field(description="a Dataset's name")
    mount_path: str = Field(
        max_length=MAX_PATH, description="where slices find it (Kubernetes: the volume's path)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dns_label(v)

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, v: str) -> str:
        if not v.startswith("/") or "\0" in v or ".." in v.split("/"):
            raise ValueError("must be an absolute path without '..'")
        return v


class JobSpec(_Model):
    queue: str = Field(default="default", min_length=1, max_length=63)
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000)
    slices: int = Field(default=1, ge=1, le=MAX_SLICES)
    gpus_per_slice: int = Field(default=1, ge=0, le=MAX_GPUS_PER_SLICE)
    gpu_type: GpuTypeName | Annotated[list[GpuTypeName], Field(max_length=MAX_GPU_TYPES)] | None = (
        Field(default=None, description="one GPU type, or a list meaning any of them")
    )
    restart_policy: RestartPolicy = RestartPolicy.GANG
    max_retries: int = Field(default=3, ge=0, le=100)
    max_runtime: str | float | None = Field(
        default=None, description="e.g. 12h; for cost estimates and guardrails"
    )
    image: str | None = Field(
        default=None, max_length=1024, description="container image, for Kubernetes spokes"
    )
    command: list[Arg] = Field(min_length=1, max_length=MAX_COMMAND_ARGS)
    env: dict[
        Annotated[str, Field(max_length=MAX_ENV_KEY)],
        Annotated[str, Field(max_length=MAX_ENV_VALUE)] | SecretRef,
    ] = Field(
        default_factory=dict,
        max_length=MAX_ENV,
        description="plain values, or {secretRef: NAME} for a secret held on the cluster",
    )
    checkpoint_dir: str | None = Field(
        default=None,
        max_length=MAX_PATH,
        description="where the job keeps checkpoints (path or URI); the hub picks one if unset",
    )
    datasets: Annotated[list[DatasetRef], Field(max_length=16)] | None = Field(
        default=None, description="Datasets the slices read, staged to the cluster first"
    )

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: list[DatasetRef] | None) -> list[DatasetRef] | None:
        if v is not None:
            names = [d.name for d in v]
            if len(set(names)) != len(names):
                raise ValueError("a dataset is listed twice")
        return v

    @field_validator("gpu_type")
    @classmethod
    def _gpu_type(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if not v:
                raise ValueError("an empty list allows no GPU type; omit gpuType to allow any")
            if any(not t.strip() for t in v):
                raise ValueError("GPU type names cannot be empty")
        elif isinstance(v, str) and not v.strip():
            raise ValueError("GPU type name cannot be empty")
        return v

    @field_validator("max_runtime", mode="before")
    @classmethod
    def _max_runtime(cls, v: Any) -> Any:
        # Before the union: else `.nan` fails as "not a string" rather than as what it is.
        if isinstance(v, str) and len(v) > 64:
            raise ValueError("longer than 64 characters; use e.g. 12h")
        if isinstance(v, bool):
            raise ValueError("must be a duration such as 12h, or seconds")
        if isinstance(v, int | float | str):
            seconds = parse_duration(v)
            if not math.isfinite(seconds) or seconds <= 0:
                raise ValueError("must be a positive, finite duration")
            if seconds > MAX_MAX_RUNTIME_S:
                raise ValueError(f"must be at most {MAX_MAX_RUNTIME_S / 86400:.0f} days")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str | SecretRef]) -> dict[str, str | SecretRef]:
        for key in v:
            if not _ENV_KEY.fullmatch(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return v

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise ValueError("the program to run cannot be empty")
        return v

    @property
    def gpu_types(self) -> frozenset[str] | None:
        """The allowed GPU types; None allows any."""
        if self.gpu_type is None:
            return None
        if isinstance(self.gpu_type, str):
            return frozenset([self.gpu_type])
        return frozenset(self.gpu_type)

    @property
    def max_runtime_s(self) -> float:
        return (
            parse_duration(self.max_runtime)
            if self.max_runtime is not None
            else (DEFAULT_MAX_RUNTIME_S)
        )

    @property
    def total_gpus(self) -> int:
        return self.slices * self.gpus_per_slice


class JobManifest(_Model):
    api_version: Literal["orrery/v1"] = Field(alias="apiVersion")
    kind: Literal["TrainingJob"]
    metadata: Metadata
    spec: JobSpec

    @property
    def team(self) -> str | None:
        return self.metadata.labels.get("team")


def _loc(parts: tuple[int | str, ...]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


_TAGS = {"str", "float", "int", "list[str]", "constrained-str", "list[constrained-str]"}


def _union_tag(part: int | str) -> bool:
    """pydantic names the union member that failed inside an error's location."""
    return isinstance(part, str) and (part in _TAGS or part.startswith("function-"))


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The names a manifest may use at ``loc`` (the place of an unknown field), walking
    the models by their fields' names; [] where ``loc`` leads to no model."""
    for part in loc:
        f = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
        if f is None:
            continue  # a list index, a mapping's key, or the name of a union's member
        inner = _model_in(f.annotation)
        if inner is None:
            return []
        model = inner
    return [f.alias or n for n, f in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def unknown_field(model: type[BaseModel], loc: tuple[int | str, ...]) -> str:
    """"unknown field", and the known field it resembles (``gpuPerSlice`` → did you mean
    ``gpusPerSlice``?), by difflib's ratio; case alone is a near miss too."""
    if not loc or not isinstance(loc[-1], str):
        return "unknown field"
    known = _fields_at(model, loc[:-1])
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(loc[-1].lower(), list(by_lower), n=1, cutoff=0.6)
    if not close:
        return "unknown field"
    return f"unknown field; did you mean {by_lower[close[0]]!r}?"


def problems_of(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> list[tuple[str, str]]:
    """(location, reason) pairs from a pydantic error, using the manifest's field names;
    an unknown field names the known one of ``model`` it resembles."""
    out = []
    errors = exc.errors(include_url=False)
    # Where a union fails on every branch, the branch of the right type says the most:
    # prefer a limit ("at most 32 items") to "Input should be a valid string".
    errors.sort(key=lambda e: e["type"].endswith("_type"))
    for err in errors:
        loc = tuple(p for p in err["loc"] if not _union_tag(p))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = unknown_field(model, loc) if model is not None else "unknown field"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append((_loc(loc), msg))
    # One field may fail several union branches; keep the first reason per location.
    seen: dict[str, str] = {}
    for where, why in out:
        seen.setdefault(where, why)
    return list(seen.items())


def manifest_from_data(data: Any, *, source: str = "manifest") -> JobManifest:
    if not isinstance(data, dict):
        raise ManifestError(
            [("", "must be a mapping with apiVersion, kind, metadata and spec")], source=source
        )
    try:
        return JobManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(problems_of(exc, JobManifest), source=source) from None


_MANY: TypeAdapter[list[JobManifest]] = TypeAdapter(list[JobManifest])


def all_valid(items: list[Any]) -> list[JobManifest] | None:
    """Every item as ``manifest_from_data`` makes it, in one validator call; None where
    any item fails (``manifest_from_data`` on each then names what is wrong, and where)."""
    try:
        return _MANY.validate_python(items)
    except ValidationError:
        return None


def parse_manifest(text: str, *, source: str = "manifest") -> JobManifest:
    """Validate a manifest given as YAML or JSON text."""
    return manifest_from_data(load_document(text, source=source), source=source)


def manifest_to_json(manifest: JobManifest) -> str:
    return json.dumps(manifest.model_dump(mode="json", by_alias=True, exclude_none=True))


__all__ = ["JobManifest", "JobSpec", "Metadata", "load_document", "parse_manifest"]
