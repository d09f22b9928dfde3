"""What a local federation is made of: its simulated clusters (``SpokeSpec``, the
``CATALOG`` that ``orrery up`` draws from) and the timings its processes share
(``Timings``, with the presets of ``orrery up --timing``), and its admin token."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from orrery import timing
from orrery.errors import InvalidInput

# Simulated clusters: name, region, GPU type, nodes x GPUs per node, extra labels. As in
# most fleets, the newest type (H100) is the scarcer one: 16 H100, 24 A100 with 3 spokes.
# policies/cost.yaml prices these names.
CATALOG: list[tuple[str, str, str, int, int, dict[str, str]]] = [
    ("eu-west", "eu-west-1", "H100", 2, 4, {"tier": "reserved", "compliance": "gdpr"}),
    ("us-east", "us-east-1", "H100", 2, 4, {"tier": "spot"}),
    ("ap-south", "ap-south-1", "A100", 3, 8, {"tier": "on-demand"}),
    ("eu-north", "eu-north-1", "A100", 1, 8, {"tier": "on-demand"}),
    ("us-west", "us-west-2", "L4", 4, 2, {"tier": "spot"}),
]


@dataclass(frozen=True)
class Timings:
    heartbeat_s: float = timing.HEARTBEAT_S
    lease_s: float = timing.LEASE_S
    failover_s: float = timing.FAILOVER_S
    kill_grace_s: float = timing.KILL_GRACE_S
    backoff_s: float = 1.0
    drift_s: float = timing.MAX_CLOCK_DRIFT_S
    # How often the hub looks for silent clusters (and schedules, unless woken sooner): a
    # lost cluster is noticed up to this long after its failover timeout.
    reconcile_s: float = 0.5

    @classmethod
    def preset(cls, name: str) -> Timings:
        """``default``, ``fast`` or ``aggressive`` (``orrery.timing.PRESETS``)."""
        p = timing.PRESETS.get(name)
        if p is None:
            raise InvalidInput(
                f"--timing: {name!r} is not one of {', '.join(sorted(timing.PRESETS))}"
            )
        if name == "default":
            return cls()
        # Faster presets retry sooner and look for silent clusters more often, or the
        # reconcile tick would be most of the failover time.
        return cls(
            p.heartbeat_s,
            p.lease_s,
            p.failover_s,
            p.kill_grace_s,
            backoff_s=0.2 if name == "fast" else 0.1,
            drift_s=p.drift_s,
            reconcile_s=0.25 if name == "fast" else 0.1,
        )

    @classmethod
    def fast(cls) -> Timings:
        """For demos and tests: failures noticed in seconds (``orrery.timing.FAST``)."""
        return cls.preset("fast")

    @classmethod
    def aggressive(cls) -> Timings:
        """A lost host replaced in under two seconds (``orrery.timing.AGGRESSIVE``)."""
        return cls.preset("aggressive")

    def check(self) -> None:
        """The fencing rule, before any process starts (the hub would refuse it later)."""
        for flag, v in (
            ("--heartbeat-interval", self.heartbeat_s),
            ("--lease", self.lease_s),
            ("--failover-timeout", self.failover_s),
            ("--reconcile-interval", self.reconcile_s),
        ):
            if not v > 0:
                raise InvalidInput(f"{flag}: must be a positive number of seconds, not {v}")
        if not self.kill_grace_s >= 0:
            raise InvalidInput(f"--kill-grace: cannot be negative ({self.kill_grace_s})")
        if self.lease_s < 2 * self.heartbeat_s:
            raise InvalidInput(
                f"--lease ({self.lease_s}s) must be at least twice --heartbeat-interval "
                f"({self.heartbeat_s}s), or one lost heartbeat stops every slice"
            )
        problem = timing.fencing_problem(
            self.lease_s, self.kill_grace_s, self.drift_s, self.failover_s
        )
        if problem:
            raise InvalidInput(problem)


@dataclass
class SpokeSpec:
    name: str
    region: str
    gpu_type: str
    nodes: int
    gpus_per_node: int
    labels: dict[str, str] = field(default_factory=dict)

    def inventory(self) -> dict[str, object]:
        return {
            "nodes": [
                {
                    "name": f"{self.name}-node",
                    "gpuType": self.gpu_type,
                    "gpus": self.gpus_per_node,
                    "gpuMemoryMiB": 81920,
                    "count": self.nodes,
                }
            ]
        }


def default_spokes(n: int) -> list[SpokeSpec]:
    out = []
    for i in range(n):
        name, region, gpu, nodes, per, labels = CATALOG[i % len(CATALOG)]
        if i >= len(CATALOG):
            name = f"{name}-{i // len(CATALOG) + 1}"
        out.append(SpokeSpec(name, region, gpu, nodes, per, dict(labels)))
    return out


def admin_token(path: Path) -> str:
    """The federation's admin API token, kept in ``path`` (0600): a federation restarted on
    the same state keeps it."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    token = "orrery-admin-" + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return token


__all__ = ["CATALOG", "SpokeSpec", "Timings", "admin_token", "default_spokes"]
