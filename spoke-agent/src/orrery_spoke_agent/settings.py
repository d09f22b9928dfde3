"""Spoke settings. The lease must stay shorter than the hub's failover timeout; the hub
refuses heartbeats from a spoke whose lease breaks that order (see orrery.timing)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orrery import timing
from orrery.errors import InvalidInput
from orrery.wire.subjects import valid_cluster_name


@dataclass(frozen=True)
class SpokeSettings:
    nats_url: str
    cluster: str
    state_dir: Path
    region: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    executor: str = "local"
    inventory_file: Path | None = None
    address: str | None = None  # where this cluster's slices are reachable (MASTER_ADDR)
    heartbeat_interval_s: float = timing.HEARTBEAT_S
    lease_s: float = timing.LEASE_S
    kill_grace_s: float = timing.KILL_GRACE_S
    # Development only: connect to a plain NATS without an enrolled identity. Off by default.
    insecure: bool = False
    # Local slices: the account they run as (default: the agent's, refused if that is root
    # unless allow_root_slices), how their processes are tracked, how long the folders of
    # ended attempts are kept once the hub has recorded their end.
    run_as: str | None = None
    allow_root_slices: bool = False
    slice_tracking: str = "auto"
    slice_retention_s: float = 86400.0
    # The hub's order-signing public key (SPKI PEM), pinned at enrollment. None: the
    # enrolled one under the state folder, if there is one.
    hub_key_file: Path | None = None
    # How far the hub's clock may be from ours when judging an order's expiry.
    order_max_skew_s: float = 10.0
    # Local slices' secrets by reference: {secretRef: NAME} reads the file NAME here.
    secrets_dir: Path | None = None
    # Datasets staged before the slices that read them start (default: STATE/datasets), and
    # the cache's size limit in bytes (None: none).
    data_cache_dir: Path | None = None
    data_cache_limit_bytes: int | None = None

    def check(self) -> None:
        if not valid_cluster_name(self.cluster):
            raise InvalidInput(
                f"--cluster: {self.cluster!r} must be 1-63 lowercase letters, digits or '-'"
            )
        if self.heartbeat_interval_s <= 0:
            raise InvalidInput("--heartbeat-interval: must be positive")
        if self.lease_s < 2 * self.heartbeat_interval_s:
            raise InvalidInput(
                f"--lease ({self.lease_s}s) must be at least twice --heartbeat-interval "
                f"({self.heartbeat_interval_s}s)"
            )
        if not self.slice_retention_s >= 0:
            raise InvalidInput("--slice-retention: must be zero or more seconds")
        if self.executor not in ("local", "kubernetes"):
            raise InvalidInput(f"--executor: {self.executor!r} is not one of local, kubernetes")

    @property
    def data_cache(self) -> Path:
        return self.data_cache_dir or self.state_dir / "datasets"

    def pinned_key_file(self) -> Path | None:
        if self.hub_key_file is not None:
            return self.hub_key_file
        enrolled = self.state_dir / "identity" / "hub-orders.pub"
        return enrolled if enrolled.exists() else None

    @property
    def all_labels(self) -> dict[str, str]:
        out = dict(self.labels)
        if self.region:
            out["region"] = self.region
        return out
