"""The dataset manifest: ``kind: Dataset``, a named, sized, sharded input that jobs read.

``parse_dataset(text)`` validates one (YAML or JSON) or raises
:class:`~orrery.errors.ManifestError` naming each bad field. A dataset lives in one or more
*locations*: an object-store prefix (``s3://bucket/prefix`` with its ``endpoint`` and the
``region`` it is stored in), or a path already present on a named cluster. Its labels are
matched by Placement policies like a job's, so ``data-residency: eu`` keeps the data (and
every job that reads it) on clusters the policy allows.

Shards are the objects under the prefix in name order; a job's slices split them evenly
(:func:`shard_range`).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from orrery.document import load_document
from orrery.errors import ManifestError
from orrery.manifest import MAX_PATH, Metadata, _Model, problems_of

MAX_LOCATIONS = 32
MAX_SHARDS = 10_000_000
MAX_SIZE_BYTES = 2**62
MAX_DATASETS_PER_JOB = 16

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "p": 10**15,
    "pb": 10**15,
    "ki": 2**10,
    "kib": 2**10,
    "mi": 2**20,
    "mib": 2**20,
    "gi": 2**30,
    "gib": 2**30,
    "ti": 2**40,
    "tib": 2**40,
    "pi": 2**50,
    "pib": 2**50,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")
_S3 = re.compile(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[^\s]*)?")


def parse_size(value: str | int | float) -> int:
    """Bytes in ``value``: an integer, or a number with a unit (``2.1TiB``, ``500GB``)."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 2TiB, or bytes")
    if isinstance(value, int | float):
        n = float(value)
    else:
        m = _SIZE.fullmatch(value)
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"{value[:40]!r} is not a size (e.g. 2.1TiB, 500GB, 1048576)")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not 0 <= n <= MAX_SIZE_BYTES:
        raise ValueError("must be between 0 and 4 EiB")
    return int(n)


def human_bytes(n: float) -> str:
    """``2.1 TiB``: sizes as the explanations and the CLI print them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


class Location(_Model):
    """Where a copy of the dataset lives: an object-store prefix, or a cluster's path."""

    uri: str | None = Field(default=None, max_length=MAX_PATH, description="s3://bucket/prefix")
    endpoint: str | None = Field(
        default=None, max_length=1024, description="the S3 endpoint URL (default: AWS)"
    )
    region: str | None = Field(
        default=None, max_length=63, description="the region the object store is in"
    )
    cluster: str | None = Field(default=None, max_length=253, description="a cluster holding it")
    path: str | None = Field(default=None, max_length=MAX_PATH, description="its path there")

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and not _S3.fullmatch(v):
            raise ValueError("must be s3://bucket/prefix (a bucket name of 3-63 characters)")
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"https?://[^\s/]+(/[^\s]*)?", v):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> Location:
        if (self.uri is None) == (self.cluster is None):
            raise ValueError("give either uri (with region) or cluster (with path)")
        if self.uri is not None and self.region is None:
            raise ValueError("an object-store location needs its region")
        if self.cluster is not None and not self.path:
            raise ValueError("a cluster location needs its path")
        return self

    @property
    def bucket(self) -> str:
        m = _S3.fullmatch(self.uri or "")
        assert m is not None
        return m.group(1)

    @property
    def prefix(self) -> str:
        m = _S3.fullmatch(self.uri or "")
        assert m is not None
        return (m.group(2) or "/").strip("/")


class DatasetSpec(_Model):
    size: str | int | float = Field(description="e.g. 2.1TiB, or bytes")
    format: str = Field(default="files", min_length=1, max_length=63)
    shards: int = Field(default=1, ge=1, le=MAX_SHARDS)
    version: str = Field(
        default="1",
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$",
        description="a cache holding another version stages this one afresh",
    )
    locations: list[Location] = Field(min_length=1, max_length=MAX_LOCATIONS)

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        if isinstance(v, str) and len(v) > 40:
            raise ValueError("longer than 40 characters; use e.g. 2.1TiB")
        if isinstance(v, str | int | float):
            parse_size(v)
        return v

    @property
    def size_bytes(self) -> int:
        return parse_size(self.size)


class DatasetManifest(_Model):
    api_version: Literal["orrery/v1"] = Field(alias="apiVersion")
    kind: Literal["Dataset"]
    metadata: Metadata
    spec: DatasetSpec

    @property
    def name(self) -> str:
        return self.metadata.name


def dataset_from_data(data: Any, *, source: str = "dataset") -> DatasetManifest:
    if not isinstance(data, dict):
        raise ManifestError(
            [("", "must be a mapping with apiVersion, kind, metadata and spec")], source=source
        )
    try:
        return DatasetManifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(problems_of(exc, DatasetManifest), source=source) from None


def parse_dataset(text: str, *, source: str = "dataset") -> DatasetManifest:
    return dataset_from_data(load_document(text, source=source), source=source)


def dataset_to_json(d: DatasetManifest) -> str:
    return json.dumps(d.model_dump(mode="json", by_alias=True, exclude_none=True))


def shard_range(shards: int, slices: int, index: int) -> tuple[int, int]:
    """Slice ``index`` of ``slices`` reads shards ``[start, end)``: an even split, the
    remainder spread over the first slices, so no two slices share a shard and none is
    left out."""
    return index * shards // slices, (index + 1) * shards // slices


def env_name(dataset: str) -> str:
    """``ORRERY_DATA_C4_EN`` for ``c4-en``: the variable holding its path in a slice."""
    return "ORRERY_DATA_" + re.sub(r"[^A-Z0-9]", "_", dataset.upper())


__all__ = [
    "DatasetManifest",
    "DatasetSpec",
    "Location",
    "env_name",
    "human_bytes",
    "parse_dataset",
    "parse_size",
    "shard_range",
]
