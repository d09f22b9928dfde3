"""What a just-admitted job is answered with: its API view, as a model or as JSON text.

``POST /v1/jobs:batch`` answers a thousand jobs at once. Building each job's ``JobPublic``
and having pydantic dump it cost ~15 µs a job (its manifest's dictionaries are ``Any`` to
the model: serialised value by value), a tenth of the batch's time. Admission has already
encoded each manifest for its row (``store.manifests``), and a new job's status is the
same for every job of as many slices but for three values. So the JSON is composed from
those: the manifest's text, and a template of the status dumped by the model itself, with
markers where the three values go. It parses to what ``view_new(...).model_dump_json(
by_alias=True)`` writes (``tests/hub/test_batch.py`` checks); only the spacing differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii

from pydantic_core import to_json

from orrery.resources import JobPublic, JobStatus, Waiting
from orrery_hub.store import jobs as jobstore

# Stand-ins for the three values, as the model writes them in JSON: nothing a real status
# holds (a string of control characters, a float no clock gives).
_REASON, _DIR, _AT = "\x01reason\x01", "\x01dir\x01", 7e-300
_MARKS = {
    to_json(_REASON).decode(): "reason",
    to_json(_DIR).decode(): "dir",
    to_json(_AT).decode(): "at",
}
_SPLIT = re.compile("|".join(re.escape(m) for m in _MARKS))
_METADATA = '"metadata": '  # where a row's manifest text has the view's fields (see json)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A job admission has just stored (``store.jobs.NewJob``)."""

    new: jobstore.NewJob

    @property
    def id(self) -> str:
        return str(self.new.job["id"])

    def public(self) -> JobPublic:
        return jobstore.view_new(self.new)

    def json(self) -> str:
        """``public()`` as JSON (``id``, ``metadata``, ``spec``, ``status``, in that order)."""
        j = self.new.job
        text = self.new.manifest_json
        # The row's text is '{"apiVersion": .., "kind": .., "metadata": {..}, "spec": {..}}'
        # (store.manifests): from "metadata" to before the last brace are the view's two.
        fields = text[text.index(_METADATA) : -1]
        reason: str | None = j["reason"]
        if reason == "":  # no job is held for no reason; the model says what that would be
            return self.public().model_dump_json(by_alias=True)
        values = {
            "reason": encode_basestring_ascii(reason) if reason is not None else "",
            "dir": encode_basestring_ascii(j["checkpoint_dir"]),
            "at": float.__repr__(float(j["created_at"])),
        }
        parts, order = _template(len(self.new.slices), reason is not None)
        out = [f'{{"id": {encode_basestring_ascii(j["id"])}, {fields}, "status": ', parts[0]]
        for name, part in zip(order, parts[1:], strict=True):
            out.append(values[name])
            out.append(part)
        out.append("}")
        return "".join(out)


def _template(slices: int, held: bool) -> tuple[list[str], list[str]]:
    """A new job's status as the model dumps it, cut at the markers: the texts between
    them, and which value goes in each cut."""
    key = (slices, held)
    hit = _TEMPLATES.get(key)
    if hit is None:
        status = JobStatus(
            phase="Pending",
            reason=_REASON if held else None,
            waiting=Waiting(summary=_REASON, clusters={}) if held else None,
            slices=jobstore.pending_views(slices),
            restarts=0,
            checkpoint_dir=_DIR,
            created_at=_AT,
        )
        text = status.model_dump_json(by_alias=True)
        hit = (_SPLIT.split(text), [_MARKS[m] for m in _SPLIT.findall(text)])
        if slices <= 64:  # as many as jobs have, mostly; a rare larger one is made afresh
            _TEMPLATES[key] = hit
    return hit


_TEMPLATES: dict[tuple[int, bool], tuple[list[str], list[str]]] = {}
