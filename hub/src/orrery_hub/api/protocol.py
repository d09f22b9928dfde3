"""``HubApi``: everything the routes (and the console) ask of the running hub.

The routes depend on this Protocol, never on the hub itself: ``orrery_hub.runtime``
implements it and ``orrery_hub.main`` hands the implementation to ``create_app``, so the
API imports nothing of the runtime and a test can serve the routes over a fake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from orrery.errors import OrreryError
from orrery.manifest import JobManifest
from orrery.resources import AttemptView, ClusterPublic, EventView, JobPublic
from orrery.wire import CachedDataset
from orrery_hub.admission.answer import Admitted
from orrery_hub.api.models import AuditEntry, PolicyInfo, PolicyReload, UsageReport

if TYPE_CHECKING:
    from orrery_hub.admission.gate import PolicyGate
    from orrery_hub.auth import Authenticator, Principal
    from orrery_hub.config.settings import HubSettings
    from orrery_hub.identity.service import ClusterIdentity
    from orrery_hub.leader import Elector
    from orrery_hub.policy import CheckReport
    from orrery_hub.serving.controller import ServiceController
    from orrery_hub.store.runner import StoreRunner


class HubApi(Protocol):
    settings: HubSettings
    clock: Callable[[], float]
    auth: Authenticator
    store: StoreRunner
    gate: PolicyGate
    identity: ClusterIdentity | None
    nats_url: str | None
    serving: ServiceController
    elector: Elector | None  # one of several hubs: who leads (None: the only hub)

    @property
    def healthy(self) -> bool: ...

    def wake(self) -> None: ...

    # ---- jobs ----------------------------------------------------------------------------
    async def submit(self, manifest: JobManifest) -> JobPublic: ...

    async def submit_many(
        self, manifests: Sequence[JobManifest | OrreryError]
    ) -> list[Admitted | OrreryError]: ...

    async def get_job(self, job_id: str) -> JobPublic: ...

    async def list_jobs(
        self,
        phase: str | None,
        limit: int,
        *,
        team: str | None = None,
        queue: str | None = None,
        name: str | None = None,
    ) -> list[JobPublic]: ...

    async def cancel(self, job_id: str) -> JobPublic: ...

    async def events(
        self, job_id: str, *, after: int | None = None, limit: int = ...
    ) -> list[EventView]: ...

    async def attempts(
        self, job_id: str, *, after: int | None = None, limit: int = ...
    ) -> list[AttemptView]: ...

    async def logs(
        self,
        job_id: str,
        *,
        slice: int | None = None,
        epoch: int | None = None,
        follow: bool = False,
        tail: int | None = None,
    ) -> AsyncIterator[bytes]:
        """The job's output, its first piece fetched (errors before any output raise)."""
        ...

    async def job_counts(self) -> dict[str, int]: ...

    # ---- fleet, policies, usage, audit ---------------------------------------------------
    async def clusters(self) -> list[ClusterPublic]: ...

    def policies_info(self) -> PolicyInfo: ...

    async def reload_policies(self) -> PolicyReload: ...

    async def check_policy(self, manifest: JobManifest) -> CheckReport: ...

    async def usage(self, *, team: str | None, since: float | None) -> UsageReport: ...

    async def audit(
        self, *, job: str | None, limit: int, before: int | None = None
    ) -> list[AuditEntry]: ...

    async def record_denial(
        self, status: int, who: Principal | None, what: str, reason: str, source: str
    ) -> None: ...

    async def metrics_text(self) -> bytes: ...

    # ---- datasets ------------------------------------------------------------------------
    def dataset_caches(self) -> Mapping[str, Sequence[CachedDataset]]:
        """Per cluster, what its spoke last reported of its dataset cache."""
        ...
