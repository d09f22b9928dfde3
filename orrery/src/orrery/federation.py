"""A whole federation on this machine: an embedded nats-server, the hub on SQLite, and N
spoke agents simulating GPU clusters in different regions — each a separate process.

What ``orrery up`` and ``orrery demo`` run, and what the end-to-end tests drive (they kill
and restart its processes). The hub and spokes are started as ``python -m orrery_hub`` and
``python -m orrery_spoke_agent``, so this module never imports either.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from orrery import timing
from orrery.client import HubClient
from orrery.clusterid import SpokeIdentity
from orrery.errors import InvalidInput, Unavailable
from orrery.natsserver import NatsServer, free_port

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


class Federation:
    def __init__(
        self,
        state_dir: Path,
        *,
        spokes: list[SpokeSpec],
        port: int = 0,
        timings: Timings | None = None,
        policies: Path | None = None,
        python: str = sys.executable,
        extra_env: dict[str, str] | None = None,
        nats_host: str = "127.0.0.1",
        spoke_prefix: dict[str, list[str]] | None = None,
        hub_args: list[str] | None = None,
        run_as: str | None = None,
        insecure: bool = False,
        verify_orders: bool = True,
        gateway: bool = False,
    ) -> None:
        self.state = state_dir.resolve()
        self.spec = {s.name: s for s in spokes}
        self.port = port
        self.timings = timings or Timings()
        self.timings.check()
        # A user's path means the folder where the user stands; the hub runs in the state
        # folder, where a relative one would name something else (or nothing).
        self.policies = policies.resolve() if policies is not None else None
        self.python = python
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        self.nats_host = nats_host
        # A command to wrap a spoke in, e.g. ["ip", "netns", "exec", NS] to cut it off later.
        self.spoke_prefix = spoke_prefix or {}
        self.hub_args = hub_args or []  # extra `orrery hub` flags
        # Local slices run as this user. Without one, a federation started as root (a
        # development machine, CI, this repository's e2e tests) lets them run as root: it is
        # the developer's own machine; a production spoke names an unprivileged user.
        self.run_as = run_as
        # Secure by default: TLS NATS with a user per enrolled cluster, spokes enrolled with
        # join tokens. insecure=True: plain NATS, no identity (development only).
        self.insecure = insecure
        # insecure only: pass the spokes the hub's orders.pub so they verify orders (default).
        # False measures the development mode without it (benchmarks/bench_security.py).
        self.verify_orders = verify_orders
        self.nats: NatsServer | None = None
        self.want_gateway = gateway  # an inference gateway beside the hub (orrery up)
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_url: str | None = None
        self.hub: subprocess.Popen[bytes] | None = None
        self.spokes: dict[str, subprocess.Popen[bytes]] = {}
        self.api_url: str | None = None
        self.admin_token_file = self.state / "admin.token"
        self.admin_token = self._admin_token()

    def _admin_token(self) -> str:
        """The federation's admin API token: kept in ``<state>/admin.token`` (0600), so a
        federation restarted on the same state keeps it."""
        try:
            token = self.admin_token_file.read_text().strip()
        except FileNotFoundError:
            token = ""
        if token:
            return token
        token = "orrery-admin-" + secrets.token_urlsafe(32)
        self.state.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.admin_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (token + "\n").encode())
        finally:
            os.close(fd)
        return token

    # ---- processes -------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Federation:
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "logs").mkdir(exist_ok=True)
        config = None
        port = free_port(self.nats_host)
        if not self.insecure:
            config = self._identity_init(port)
        self.nats = NatsServer(
            host=self.nats_host,
            port=port,
            log_file=self.state / "logs" / "nats-server.log",
            config=config,
        ).start()
        self.start_hub(timeout=timeout)
        for name in self.spec:
            self.start_spoke(name)
        if self.want_gateway:
            self.start_gateway(timeout=timeout)
        self.wait_ready(timeout=timeout)
        return self

    def start_gateway(self, timeout: float = 60.0, *, interval: float | None = None) -> None:
        """The inference gateway (``orrery gateway``), reporting to this hub with the admin
        token; it syncs routes once per heartbeat interval."""
        assert self.api_url is not None
        ready = self.state / "gateway-ready.json"
        ready.unlink(missing_ok=True)
        args = [
            self.python, "-m", "orrery_hub.gateway",
            "--hub", self.api_url,
            "--port", "0",
            "--name", "gateway-1",
            "--interval", str(interval or min(0.5, self.timings.heartbeat_s)),
            "--ready-file", str(ready),
        ]
        env_token = {"ORRERY_TOKEN": self.admin_token}
        with open(self.state / "logs" / "gateway.log", "ab") as log:
            self.gateway = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**self.env, **env_token}, cwd=self.state, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.gateway.poll() is not None:
                why = self.why_exited("gateway.log", self.gateway.returncode)
                raise Unavailable(f"the gateway did not start: {why}")
            if time.monotonic() > deadline:
                raise Unavailable("the gateway did not become ready in time")
            time.sleep(0.05)
        self.gateway_url = json.loads(ready.read_text())["url"]

    def _identity_init(self, port: int) -> Path:
        """The hub's CA, certificates and the nats-server configuration (TLS, a user per
        enrolled cluster), made before nats-server starts; the hub keeps the users current."""
        out = subprocess.run(
            [
                self.python,
                "-m",
                "orrery_hub.identity",
                "init",
                "--state",
                str(self.state / "hub"),
                "--listen",
                f"{self.nats_host}:{port}",
            ],
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        if out.returncode != 0:
            raise Unavailable(f"hub identity init failed: {out.stderr.strip()}")
        return Path(out.stdout.strip())

    def join_token(self, name: str, labels: dict[str, str]) -> str:
        """A one-time join token for cluster ``name`` with ``labels`` bound (admin API)."""
        with self.client() as c:
            r = c._request(
                "POST",
                "/v1/clusters/tokens",
                idempotent=False,
                json={"cluster": name, "ttl": "10m", "labels": labels},
            )
            c._raise_for(r)
            return str(r.json()["token"])

    def enroll(self, name: str, labels: dict[str, str], state: Path) -> None:
        """Enroll a spoke whose state folder is ``state``, unless it already has an identity.
        Done here rather than by the spoke's own ``--join`` so that a spoke in a network
        namespace (which cannot reach the API on 127.0.0.1) enrolls all the same."""
        ident = SpokeIdentity.under(state)
        if not ident.exists():
            assert self.api_url is not None
            ident.join(self.api_url, self.join_token(name, labels), name)

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.state / "logs" / log_name, "ab") as log:
            return subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.state,
                start_new_session=True,
            )

    def why_exited(self, log_name: str, code: int | None) -> str:
        """Why a child exited, from its log: its own one-line error (``orrery ...: why``)
        when it printed one, else its last line; the log's path for the rest."""
        log = self.state / "logs" / log_name
        if code is not None and code < 0:  # a signal: its log's last line is not why
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"killed by {name} (full log: {log})"
        try:
            lines = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            lines = []
        mine = [x for x in lines if x.startswith("orrery")]
        reason = (mine or lines or [f"exit code {code}"])[-1]
        return f"{reason[:500]} (exit code {code}; full log: {log})"

    def start_hub(self, timeout: float = 60.0) -> None:
        assert self.nats is not None
        t = self.timings
        ready = self.state / "hub-ready.json"
        ready.unlink(missing_ok=True)
        port = self.port or (
            free_port() if self.api_url is None else int(self.api_url.rsplit(":", 1)[1])
        )
        args = [
            self.python,
            "-m",
            "orrery_hub",
            "--port",
            str(port),
            "--nats",
            self.nats.url,
            "--state",
            str(self.state / "hub"),
            "--ready-file",
            str(ready),
            "--heartbeat-interval",
            str(t.heartbeat_s),
            "--lease",
            str(t.lease_s),
            "--failover-timeout",
            str(t.failover_s),
            "--kill-grace",
            str(t.kill_grace_s),
            "--backoff",
            str(t.backoff_s),
            "--max-clock-drift",
            str(t.drift_s),
            "--reconcile-interval",
            str(t.reconcile_s),
            "--admin-token-file",
            str(self.admin_token_file),
        ]
        if self.insecure:
            args.append("--insecure")
        else:
            args.append("--manage-nats")  # nats-server runs from the config init wrote
        if self.policies:
            args += ["--policies", str(self.policies)]
        args += self.hub_args
        self.hub = self._spawn(args, "hub.log")
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.hub.poll() is not None:
                raise Unavailable(
                    f"the hub did not start: {self.why_exited('hub.log', self.hub.returncode)}"
                )
            if time.monotonic() > deadline:
                raise Unavailable("the hub did not become ready in time")
            time.sleep(0.05)
        self.api_url = json.loads(ready.read_text())["api"]

    def start_spoke(self, name: str) -> None:
        assert self.nats is not None
        s, t = self.spec[name], self.timings
        inv = self.state / "inventories" / f"{name}.yaml"
        inv.parent.mkdir(exist_ok=True)
        inv.write_text(yaml.safe_dump(s.inventory()))
        args = [
            *self.spoke_prefix.get(name, []),
            self.python,
            "-m",
            "orrery_spoke_agent",
            "--nats",
            self.nats.url,
            "--cluster",
            name,
            "--region",
            s.region,
            "--inventory",
            str(inv),
            "--state",
            str(self.state / "spokes" / name),
            "--heartbeat-interval",
            str(t.heartbeat_s),
            "--lease",
            str(t.lease_s),
            "--kill-grace",
            str(t.kill_grace_s),
        ]
        if self.insecure:
            args.append("--insecure")
        else:
            self.enroll(name, {"region": s.region, **s.labels}, self.state / "spokes" / name)
        if self.run_as is not None:
            args += ["--run-as", self.run_as]
        elif os.geteuid() == 0:
            args.append("--allow-root-slices")
        # Plain NATS, but orders still verified: the spoke pins the key the hub made.
        # (Enrolled spokes pin the key enrollment gave them.)
        hub_key = self.state / "hub" / "identity" / "orders.pub"
        if self.insecure and self.verify_orders and hub_key.exists():
            args += ["--hub-key", str(hub_key)]
        for k, v in s.labels.items():
            args += ["--label", f"{k}={v}"]
        self.spokes[name] = self._spawn(args, f"spoke-{name}.log")

    def wait_ready(self, timeout: float = 60.0, names: list[str] | None = None) -> None:
        want = set(names or self.spec)
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while True:
                try:
                    ready = {x.name for x in c.clusters() if x.state == "Ready"}
                except Unavailable:
                    ready = set()
                if want <= ready:
                    return
                for name in sorted(want - ready):
                    p = self.spokes.get(name)
                    if p is not None and p.poll() is not None:
                        why = self.why_exited(f"spoke-{name}.log", p.returncode)
                        raise Unavailable(f"the spoke {name} did not start: {why}")
                if time.monotonic() > deadline:
                    raise Unavailable(f"clusters not Ready in time: {sorted(want - ready)}")
                time.sleep(0.1)

    def kill_spoke(self, name: str) -> None:
        """SIGKILL the agent, as a crash or OOM would; its slices keep their lease."""
        p = self.spokes.get(name)
        if p and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()

    def kill_hub(self) -> None:
        if self.hub and self.hub.poll() is None:
            os.kill(self.hub.pid, signal.SIGKILL)
            self.hub.wait()

    def client(self) -> HubClient:
        assert self.api_url is not None
        return HubClient(self.api_url, token=self.admin_token)

    def stop(self) -> None:
        procs = [self.gateway, *self.spokes.values(), self.hub]
        for p in procs:
            if p is not None and p.poll() is None:
                p.terminate()
        # One deadline for all: waiting 10 s for each in turn made a wedged federation take
        # half a minute to stop.
        deadline = time.monotonic() + 10
        for p in procs:
            if p is not None:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait()
        if self.nats:
            self.nats.stop()

    def __enter__(self) -> Federation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
