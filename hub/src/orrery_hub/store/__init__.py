"""The hub's desired state, in SQLModel tables: SQLite by default, any SQLAlchemy URL
(PostgreSQL included) where a team outgrows one machine.

- ``models``   the tables (jobs, slices, attempts, clusters, events)
- ``database`` the engine and sessions
- ``jobs``     submit, read and cancel jobs
"""

from orrery_hub.store.database import Database

__all__ = ["Database"]
