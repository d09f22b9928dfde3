"""The hub's settings, and the one rule among them that keeps a slice from running twice.

Timing, from a spoke's point of view::

    heartbeat_interval   how often a spoke reports (the spoke's own setting; hub default 1 s)
    lease                a spoke that has had no reply from the hub for this long stops its
                         slices itself (the hub dictates it in every heartbeat reply)
    kill_grace           SIGTERM, then this long before SIGKILL
    failover_timeout     the hub declares a silent cluster Lost after this long and places
                         its slices elsewhere

    lease + kill_grace + max_clock_drift < failover_timeout

so by the time the hub moves a slice, the partitioned spoke has already stopped it. The
hub refuses to start with settings that break this order. The defaults and the rule live
in ``orrery.timing``, shared with the spoke and ``orrery up``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from orrery import timing
from orrery.errors import InvalidInput
from orrery_hub.auth.oidc import OidcSettings
from orrery_hub.scheduler import Policy, QueueConfig


@dataclass(frozen=True)
class Timing:
    heartbeat_interval_s: float = timing.HEARTBEAT_S
    lease_s: float = timing.LEASE_S
    kill_grace_s: float = timing.KILL_GRACE_S
    failover_timeout_s: float = timing.FAILOVER_S
    # between hub and spoke rate of time, over one lease
    max_clock_drift_s: float = timing.MAX_CLOCK_DRIFT_S
    # An assignment its spoke has not confirmed after this long is fenced (killed) and placed
    # again, without using a retry. None: 3 heartbeat intervals + the lease.
    assign_timeout_s: float | None = None
    # A heartbeat is answered within this long whatever the hub is busy with: the reply
    # waits at most this for the report to be processed, then goes out anyway.
    ack_wait_s: float = 0.25

    @property
    def assign_timeout(self) -> float:
        if self.assign_timeout_s is not None:
            return self.assign_timeout_s
        return 3 * self.heartbeat_interval_s + self.lease_s

    def fate_bound(self, lease_s: float | None = None) -> float:
        """How long an attempt whose end is unknown is held before the next epoch may
        start: by then the spoke's lease has stopped it, kill grace and drift included."""
        lease = max(self.lease_s, lease_s or 0.0)
        return timing.worst_stop_s(lease, self.kill_grace_s, self.max_clock_drift_s)

    def check(self) -> None:
        for name in ("heartbeat_interval_s", "lease_s", "failover_timeout_s"):
            if getattr(self, name) <= 0:
                raise InvalidInput(f"--{name[:-2].replace('_', '-')}: must be positive")
        if self.kill_grace_s < 0:
            raise InvalidInput("--kill-grace: cannot be negative")
        if not self.max_clock_drift_s >= 0:
            raise InvalidInput("--max-clock-drift: cannot be negative")
        if self.assign_timeout_s is not None and self.assign_timeout_s <= 0:
            raise InvalidInput("--assign-timeout: must be positive")
        if not 0 <= self.ack_wait_s <= self.lease_s / 4:
            raise InvalidInput(
                f"ack wait ({self.ack_wait_s}s) must be between 0 and a quarter of the lease "
                f"({self.lease_s}s), or a busy hub lets spokes' leases lapse"
            )
        if self.lease_s < 2 * self.heartbeat_interval_s:
            raise InvalidInput(
                f"--lease ({self.lease_s}s) must be at least twice the heartbeat interval "
                f"({self.heartbeat_interval_s}s), or one lost heartbeat stops every slice"
            )
        problem = timing.fencing_problem(
            self.lease_s, self.kill_grace_s, self.max_clock_drift_s, self.failover_timeout_s
        )
        if problem:
            raise InvalidInput(problem)


@dataclass(frozen=True)
class HubSettings:
    state_dir: Path
    db_url: str | None = None  # default: SQLite in state_dir
    nats_url: str | None = None  # None: start an embedded nats-server
    host: str = "127.0.0.1"
    port: int = 8080
    policies_dir: Path | None = None
    checkpoint_root: Path | None = None  # default: state_dir/checkpoints
    timing: Timing = field(default_factory=Timing)
    reconcile_interval_s: float = 0.5
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    # Which stages a scheduling pass runs (fair share, quotas, preemption, backfill, GPU-type
    # awareness: all on by default), and the queues' weights, quotas and cohorts.
    scheduling: Policy = field(default_factory=lambda: replace(Policy.full(), min_run_s=60.0))
    queues: tuple[QueueConfig, ...] = ()
    # Development only: a plain NATS without TLS, and heartbeats from clusters that never
    # enrolled (labels as they report them). Off by default: identity is required.
    insecure: bool = False
    # An admin API token (tests, ``orrery up``). Without one, the hub's first start makes
    # one and writes it to ``<state_dir>/admin.token`` (0600).
    admin_token: str | None = field(default=None, repr=False)
    metrics_open: bool = False  # /metrics without a token (a scraper inside the perimeter)
    # Writes per API token (token bucket): this many per second, bursts up to write_burst.
    # 0 turns the limit off.
    write_rate_per_s: float = 20.0
    write_burst: int = 100
    oidc: OidcSettings | None = None  # also accept JWTs from this identity provider
    # How long a signed order stays valid; None: five heartbeat intervals. Short, because
    # orders are level-triggered (the hub sends again what a spoke still lacks), and an
    # order is only replayable by a spoke that restarted within this window (plus skew).
    order_ttl_s: float | None = None
    # Hub standby: several hubs on one database, one leader by a lease this long (renewed
    # every third of it). 0: this hub is the only one (no lease, no fence). advertise_url:
    # where clients reach this hub's API, for a standby's redirect (default: its own URL).
    leader_lease_s: float = 0.0
    advertise_url: str | None = None
    # Events and audit rows of jobs finished more than this many days ago are pruned
    # (store.retention); None or 0 keeps them forever.
    retention_days: float | None = 30.0

    @property
    def order_ttl(self) -> float:
        if self.order_ttl_s is not None:
            return self.order_ttl_s
        return 5 * self.timing.heartbeat_interval_s

    # Cluster identity (secure mode). The CA: <state>/identity/ca.{crt,key} unless given.
    ca_cert: Path | None = None
    ca_key: Path | None = None
    # A NATS the hub did not start: the CA that signed its server certificate, and the hub's
    # client certificate there (default: the hub's own CA and hub-nats.{crt,key}).
    nats_ca: Path | None = None
    nats_cert: Path | None = None
    nats_key: Path | None = None
    # The hub writes <state>/identity/nats-users.conf and reloads nats-server on every
    # enrollment change: always for its embedded server, and for one started from the
    # configuration `python -m orrery_hub.identity init` wrote (the local federation).
    manage_nats: bool = False
    require_approval: bool = False
    cert_ttl_s: float = 30 * 86400.0
    # Serve the API over HTTPS (PEM files): join tokens and API tokens then never cross the
    # network in plain text. Clients trust it through the context's CA (config.yaml `ca:`).
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.state_dir / 'hub.db'}"

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_root or self.state_dir / "checkpoints"

    def check(self) -> None:
        self.timing.check()
        if not self.leader_lease_s >= 0:
            raise InvalidInput("--leader-lease: must be >= 0 (0: a lone hub)")
        handover = self.leader_lease_s * 4 / 3 + self.timing.heartbeat_interval_s
        if self.leader_lease_s > 0 and handover >= self.timing.lease_s:
            raise InvalidInput(
                f"--leader-lease ({self.leader_lease_s}s): a handover takes up to the leader "
                f"lease, a third of it more and a heartbeat ({handover:.2f}s), which must stay "
                f"below the spokes' lease ({self.timing.lease_s}s), or their slices stop while "
                "the hubs hand over"
            )
        if not self.reconcile_interval_s > 0:
            raise InvalidInput("--reconcile-interval: must be positive")
        if not 0 <= self.port <= 65535:
            raise InvalidInput(f"--port: {self.port} is not a TCP port")
        if self.cert_ttl_s < 10:
            raise InvalidInput("--cert-ttl: at least 10 seconds")
        if (self.ca_cert is None) != (self.ca_key is None):
            raise InvalidInput("--ca-cert and --ca-key: give both or neither")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise InvalidInput("--tls-cert and --tls-key: give both or neither")
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key)):
            if path is not None and not path.is_file():
                raise InvalidInput(f"{flag}: {path} is not a readable file")
        if self.backoff_base_s < 0 or self.backoff_max_s < self.backoff_base_s:
            raise InvalidInput("backoff: base must be >= 0 and max >= base")
        if not self.write_rate_per_s >= 0:
            raise InvalidInput("--write-rate: must be >= 0 (0: no limit)")
        if self.write_burst < 1:
            raise InvalidInput("--write-burst: must be at least 1")
        if self.order_ttl <= 0:
            raise InvalidInput("--order-ttl: must be positive")
        if self.retention_days is not None and not 0 <= self.retention_days < 1e6:
            raise InvalidInput("--retention-days: must be >= 0 (0: keep forever)")
