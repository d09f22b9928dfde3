"""A manifest as a job's row stores it: ``model_dump`` (JSON mode, by alias, without
nulls), and that encoded as the ``manifest`` column's JSON type encodes it (``json.dumps``).

Admission stores a thousand manifests a transaction, and those submitted together mostly
share one spec (a sweep: other names, the same command, image and resources). Dumping
and encoding a manifest is ~7 µs, most of it the spec; so ``ManifestDumps`` dumps and
encodes each distinct spec once. Specs are told apart by pydantic's own JSON of them
(~1 µs): equal text, equal values of equal types in equal order (a Python ``==`` would
take ``{"a": 1, "b": 2}`` for ``{"b": 2, "a": 1}``). The text is composed as
``json.dumps`` writes a mapping: ``{"key": value, ...}`` in the mapping's order.

Called by ``store.jobs.new_job`` for admission (``admission.admit``).
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

from orrery.manifest import JobManifest

_REMEMBERED = 64  # distinct specs in one transaction; past that they start again


class ManifestDumps:
    """One admission transaction's dumps; the spec part is shared between jobs (read it,
    never change it)."""

    def __init__(self) -> None:
        self._specs: dict[str, tuple[dict[str, Any], str]] = {}

    def dump(self, manifest: JobManifest) -> tuple[dict[str, Any], str]:
        """``manifest.model_dump(mode="json", by_alias=True, exclude_none=True)`` and
        ``json.dumps`` of it."""
        spec = manifest.spec
        key = spec.model_dump_json(by_alias=True, exclude_none=True)
        hit = self._specs.get(key)
        if hit is None:
            dumped = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
            hit = (dumped, json.dumps(dumped))
            if len(self._specs) >= _REMEMBERED:
                self._specs.clear()
            self._specs[key] = hit
        meta = manifest.metadata
        metadata = {"name": meta.name, "labels": dict(meta.labels)}
        data = {
            "apiVersion": manifest.api_version,
            "kind": manifest.kind,
            "metadata": metadata,
            "spec": hit[0],
        }
        # json.dumps makes an encoder each call (~3 µs); strings go straight to its
        # string encoder, and most jobs have no labels.
        labels = json.dumps(metadata["labels"]) if metadata["labels"] else "{}"
        text = (
            f'{{"apiVersion": {_string(manifest.api_version)}, '
            f'"kind": {_string(manifest.kind)}, '
            f'"metadata": {{"name": {_string(meta.name)}, "labels": {labels}}}, '
            f'"spec": {hit[1]}}}'
        )
        return data, text


def _string(s: str) -> str:
    return encode_basestring_ascii(s)  # what json.dumps writes for a str
