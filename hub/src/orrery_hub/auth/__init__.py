"""Users of the REST API: roles and permissions (``roles``), API tokens (``tokens``),
authentication (``authn``) and the FastAPI dependency every route declares (``deps``)."""

from orrery_hub.auth import admin
from orrery_hub.auth.authn import ADMIN_FILE, Authenticator, bootstrap_admin, write_secret_file
from orrery_hub.auth.deps import Guard, require
from orrery_hub.auth.roles import ROLE_PERMISSIONS, TEAM_SCOPED, Permission, Principal, Role

__all__ = [
    "ADMIN_FILE",
    "ROLE_PERMISSIONS",
    "TEAM_SCOPED",
    "Authenticator",
    "Guard",
    "Permission",
    "Principal",
    "Role",
    "admin",
    "bootstrap_admin",
    "require",
    "write_secret_file",
]
