"""Team scoping of jobs: what a member or viewer may see and submit.

- A job's team is its ``team`` label, bound at submission: a team-scoped caller's label is
  set to its own team (a different one is refused, 403); admin and operator may submit for
  any team.
- A job of another team is, to a team-scoped caller, a job that does not exist: the same
  404 with the same words as an unknown id, so ids cannot be probed.
"""

from __future__ import annotations

from orrery.errors import Forbidden, NotFound
from orrery.manifest import JobManifest
from orrery.resources import JobPublic
from orrery_hub.auth import Principal


def bind_team(manifest: JobManifest, who: Principal) -> JobManifest:
    if not who.team_scoped:
        return manifest
    label = manifest.team
    if label is not None and label != who.team:
        raise Forbidden(
            f"metadata.labels.team: {label!r} is not your team; your token submits for team "
            f"{who.team!r} (leave the label out, or set it to that)"
        )
    assert who.team is not None
    labels = {**manifest.metadata.labels, "team": who.team}
    return manifest.model_copy(
        update={"metadata": manifest.metadata.model_copy(update={"labels": labels})}
    )


def job_team(job: JobPublic) -> str | None:
    labels = job.metadata.get("labels") or {}
    team = labels.get("team") if isinstance(labels, dict) else None
    return team if isinstance(team, str) else None


def visible(job: JobPublic, who: Principal) -> JobPublic:
    if not who.sees_team(job_team(job)):
        raise NotFound(f"job {job.id!r} not found")
    return job
