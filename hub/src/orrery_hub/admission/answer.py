"""What a just-admitted job is answered with: its API view, as a model or as JSON text.

``POST /v1/jobs:batch`` answers a thousand jobs at once. Building each job's ``JobPublic``
and having pydantic dump it cost ~15–20 µs a job (its manifest's dictionaries are ``Any`` to
the model: serialised value by value), a tenth of the batch's time. Admission has already
encoded each manifest for its row (``store.manifests``), and a new job's status is the
same for every job of as many slices but for three values. So the JSON is composed from
those: the manifest's text, and a template of the status dumped by the model itself, with
markers where the three values go. It parses to what ``view_new(...).model_dump_json(
by_alias=True)`` writes (``tests/hub/test_manifest_dumps.py`` checks); only the spacing
differs. In the batch benchmark's profile the answers went from 13% of the hub's time to 5%.
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
_MARKS = {  # each as its place in ``_template``'s format string
    to_json(_REASON).decode(): "{2}",
    to_json(_DIR).decode(): "{3}",
    to_json(_AT).decode(): "{4}",
}
_MARK_RE = re.compile("|".join(re.escape(m) for m in _MARKS))
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
        reason: str | None = j["reason"]
        if reason == "":  # no job is held for no reason; the model says what that would be
            return self.public().model_dump_json(by_alias=True)
        # The row's text is '{"apiVersion": .., "kind": .., "metadata": {..}, "spec": {..}}'
        # (store.manifests): from "metadata" to before the last brace are the view's two.
        return _template(len(self.new.slices), reason is not None).format(
            encode_basestring_ascii(j["id"]),
            text[text.index(_METADATA) : -1],
            encode_basestring_ascii(reason) if reason is not None else "",
            encode_basestring_ascii(j["checkpoint_dir"]),
            float.__repr__(float(j["created_at"])),
        )


def _template(slices: int, held: bool) -> str:
    """A new job's view as the model dumps its status, for ``str.format``: {0} the id,
    {1} the manifest's fields, {2} the reason, {3} the checkpoint directory, {4} when."""
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
        text = status.model_dump_json(by_alias=True).replace("{", "{{").replace("}", "}}")
        hit = '{{"id": {0}, {1}, "status": ' + _MARK_RE.sub(lambda m: _MARKS[m[0]], text) + "}}"
        if slices <= 64:  # as many as jobs have, mostly; a rare larger one is made afresh
            _TEMPLATES[key] = hit
    return hit


_TEMPLATES: dict[tuple[int, bool], str] = {}
