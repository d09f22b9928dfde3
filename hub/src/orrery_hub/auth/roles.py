"""Who may do what: roles, the permissions each grants, and the caller a request acts as.

Pure data (no IO), so the table below is the one place a permission is granted::

    viewer    read its team's jobs and their output (logs); see clusters and policies
    member    + submit to its team, cancel its team's jobs
    operator  every team's jobs (read, cancel), usage, audit
    admin     everything: policies, clusters, tokens, secrets
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    MEMBER = "member"
    VIEWER = "viewer"


class Permission(StrEnum):
    JOBS_SUBMIT = "jobs:submit"
    JOBS_READ = "jobs:read"
    # Its own permission, though every role has it today: output may hold what a job's
    # description does not, and a deployment may want to withhold it (as Kubernetes'
    # pods/log is a resource of its own).
    JOBS_LOGS = "jobs:logs"
    JOBS_CANCEL = "jobs:cancel"
    CLUSTERS_READ = "clusters:read"
    CLUSTERS_ADMIN = "clusters:admin"
    POLICIES_READ = "policies:read"
    POLICIES_ADMIN = "policies:admin"
    USAGE_READ = "usage:read"
    AUDIT_READ = "audit:read"
    TOKENS_ADMIN = "tokens:admin"
    SECRETS_ADMIN = "secrets:admin"
    GATEWAY_SYNC = "gateway:sync"  # an inference gateway reports load and reads routes
    DATASETS_READ = "datasets:read"
    DATASETS_WRITE = "datasets:write"


_VIEWER = frozenset(
    {
        Permission.JOBS_READ,
        Permission.JOBS_LOGS,
        Permission.CLUSTERS_READ,
        Permission.POLICIES_READ,
        Permission.DATASETS_READ,
    }
)
_MEMBER = _VIEWER | {Permission.JOBS_SUBMIT, Permission.JOBS_CANCEL}
_OPERATOR = _MEMBER | {
    Permission.USAGE_READ,
    Permission.AUDIT_READ,
    Permission.GATEWAY_SYNC,
    Permission.DATASETS_WRITE,
}

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.MEMBER: frozenset(_MEMBER),
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.ADMIN: frozenset(Permission),
}

# Roles whose reach is one team: what they read, submit and cancel is scoped to it.
TEAM_SCOPED = frozenset({Role.MEMBER, Role.VIEWER})


@dataclass(frozen=True)
class Principal:
    """The caller a request acts as. ``team`` is None for fleet-wide roles (admin,
    operator) and always set for team-scoped ones (member, viewer)."""

    token_id: str
    role: Role
    team: str | None
    subject: str  # who, for the audit log: a token's name, an OIDC subject

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    @property
    def team_scoped(self) -> bool:
        return self.role in TEAM_SCOPED

    def sees_team(self, team: str | None) -> bool:
        """Whether a job of ``team`` is visible to this caller (others get 404)."""
        return not self.team_scoped or team == self.team
