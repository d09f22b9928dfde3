"""What every role of the running hub shares: settings, clock, store, the policy gate, the
applier, the inventory, metrics, NATS, and the few helpers all of them call.

``HubParts`` only declares the state; ``orrery_hub.main.Hub`` (the composition root)
builds it. The roles are mixed into ``Hub`` on top of it: reports in
(``runtime.intake``), orders out (``runtime.orders``), the reconcile loop
(``runtime.loop``) and what the API calls (``runtime.service``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.aio.client import Client as NATS

from orrery.errors import OrreryError
from orrery.manifest import JobManifest
from orrery.wire import CachedDataset, NodeReport, SliceKey
from orrery_hub.admission.admit import Admitter
from orrery_hub.admission.answer import Admitted
from orrery_hub.admission.gate import ClusterShape, PolicyGate, cluster_facts
from orrery_hub.admission.groupcommit import AdmissionQueue
from orrery_hub.apply.applier import Applier
from orrery_hub.apply.jobdb import JobDb
from orrery_hub.auth import Authenticator
from orrery_hub.auth.ratelimit import RateLimiter
from orrery_hub.config.settings import HubSettings
from orrery_hub.identity.service import ClusterIdentity
from orrery_hub.leader import Elector
from orrery_hub.policy import ClusterFacts
from orrery_hub.runtime.inventory import Inventory, Seen
from orrery_hub.runtime.lanes import Lanes
from orrery_hub.runtime.metrics import HubMetrics
from orrery_hub.runtime.repeats import Repeats
from orrery_hub.runtime.rows import Rows
from orrery_hub.scheduler import ClusterCapacity
from orrery_hub.store.runner import StoreRunner

if TYPE_CHECKING:
    from orrery_hub.serving.controller import ServiceController

log = logging.getLogger("orrery.hub")


class HubParts:
    settings: HubSettings
    clock: Callable[[], float]
    inventory: Inventory
    metrics: HubMetrics
    gate: PolicyGate
    applier: Applier
    jobdb: JobDb  # what waits and what runs, in memory: passes plan from it
    admitter: Admitter
    admission: AdmissionQueue[JobManifest, Admitted | OrreryError]  # group commit
    store: StoreRunner
    auth: Authenticator
    identity: ClusterIdentity | None
    nc: NATS | None
    nats_url: str | None
    order_key: Ed25519PrivateKey
    lanes: Lanes[list[SliceKey]]
    serving: ServiceController
    repeats: Repeats  # heartbeats that say nothing new are not decoded again
    rows: Rows  # the clusters' rows: idle ones' refreshes, written together
    _wake: asyncio.Event
    _seq: itertools.count[int]
    _reload_requested: bool
    _connected: bool
    _denial_audit: RateLimiter
    _last_persist: dict[str, float]
    _last_prune: float
    _last_free: dict[str, list[tuple[str, tuple[int, ...]]]]
    _last_nodes: dict[str, list[NodeReport]]  # the list _last_free was made of
    _forget: dict[str, list[SliceKey]]
    # Each cluster's capacity as the last pass made it (``Inventory.capacity``).
    _capacity_memo: dict[str, tuple[Seen, ClusterCapacity]]
    # What ``_facts`` last made, and for which inventory at which version.
    _facts_memo: tuple[tuple[int, int], tuple[ClusterFacts, ...]] | None = None
    # Jobs that read datasets: the options the last pass weighed (datasets.status), and
    # the cluster each was told to stage ahead (datasets.orders).
    data_notes: dict[str, str]
    data_prefetched: dict[str, str]
    _answering: set[asyncio.Task[None]]
    # Hub standby (``orrery_hub.leader``): with a leader lease, this hub schedules, takes
    # reports and commits writes only while it leads. None: the only hub.
    elector: Elector | None

    @property
    def leading(self) -> bool:
        """Whether this hub acts: always, without a leader lease."""
        return self.elector is None or self.elector.leading

    def wake(self) -> None:
        self._wake.set()

    async def _restore(self, *, as_stored: bool = False) -> None:
        """The clusters the store knows into the inventory (``orrery_hub.main.Hub``)."""
        raise NotImplementedError

    def request_reload(self) -> None:
        """SIGHUP: reload the policy files at the next pass (on the store thread)."""
        self._reload_requested = True
        self.wake()

    def dataset_caches(self) -> dict[str, list[CachedDataset]]:
        """Per cluster, what its spoke last reported of its dataset cache."""
        return {v.name: list(v.datasets) for v in self.inventory.clusters.values()}

    def _facts(self) -> tuple[ClusterFacts, ...]:
        """``cluster_facts(self._shapes())``, made again only when the inventory's version
        moved (a Ready cluster joined, left, or changed its labels or node list). Each
        admission batch and every pass needs them: made afresh, 100,000 nodes cost ~15 ms
        of the event loop each time."""
        inv = self.inventory
        key = (id(inv), inv.version)
        memo = self._facts_memo
        if memo is not None and memo[0] == key:
            return memo[1]
        facts = cluster_facts(self._shapes())
        self._facts_memo = (key, facts)
        return facts

    def _shapes(self) -> tuple[ClusterShape, ...]:
        return tuple(
            ClusterShape(v.name, dict(v.labels), tuple(v.nodes))
            for v in self.inventory.clusters.values()
            if v.state == "Ready"
        )

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)
