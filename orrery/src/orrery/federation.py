"""A whole federation on this machine: an embedded nats-server, the hub on SQLite, and N
spoke agents simulating GPU clusters in different regions — each a separate process.

What ``orrery up`` and ``orrery demo`` run, and what the end-to-end tests drive (they kill
and restart its processes). The hub and spokes are started as ``python -m orrery_hub`` and
``python -m orrery_spoke_agent``, so this module never imports either. Their command lines
are ``fedcommands``'s; starting a child, awaiting its ready file and saying why it exited,
``childprocess``'s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from orrery import childprocess, fedcommands, hubrole
from orrery.client import HubClient
from orrery.clusterid import SpokeIdentity
from orrery.errors import InvalidInput, Unavailable
from orrery.fleetspec import CATALOG, SpokeSpec, Timings, admin_token, default_spokes
from orrery.natsserver import NatsServer, free_port, free_ports, wait_for_port

__all__ = ["CATALOG", "Federation", "SpokeSpec", "Timings", "default_spokes"]

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
        hubs: int = 1,
        nats_servers: int = 1,
        db_url: str | None = None,
        leader_lease_s: float | None = None,
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
        self.want_gateway = gateway  # an inference gateway beside the hub (orrery up)
        self.gateway: subprocess.Popen[bytes] | None = None
        self.gateway_url: str | None = None
        # High availability (orrery up --ha): several hubs on one database (the state
        # folder's SQLite, or db_url), one leading by a lease; several nats-servers in a
        # cluster, every hub and spoke given all of their URLs.
        self.hub_count = hubs
        self.nats_count = nats_servers
        self.db_url = db_url
        self.leader_lease_s = leader_lease_s or min(
            3.0, (self.timings.lease_s - self.timings.heartbeat_s) * 0.6
        )
        if hubs > 1 and self.leader_lease_s < 1.0:
            raise InvalidInput(
                f"--ha: a spokes' lease of {self.timings.lease_s}s leaves a hub handover only "
                f"{self.leader_lease_s:.2f}s of leader lease, which one slow database reply "
                "would lapse; use --timing default or fast (or a longer --lease)"
            )
        self.nats_servers: list[NatsServer] = []
        self.nats: NatsServer | None = None  # the first of them
        self.hubs: dict[int, subprocess.Popen[bytes]] = {}
        self.api_urls: dict[int, str] = {}
        self.spokes: dict[str, subprocess.Popen[bytes]] = {}
        self.api_url: str | None = None  # the first hub's
        self.admin_token_file = self.state / "admin.token"
        self.admin_token = admin_token(self.admin_token_file)

    # ---- processes -------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Federation:
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "logs").mkdir(exist_ok=True)
        host, n = self.nats_host, self.nats_count
        chosen = free_ports(2 * n if n > 1 else n, host)
        ports, routes = chosen[:n], chosen[n:]
        configs: list[Path | None] = [None] * n
        if not self.insecure:
            configs = list(self._identity_init(ports, routes))
        for i in range(n):
            others = tuple(f"{host}:{r}" for j, r in enumerate(routes) if j != i)
            plain_cluster = self.insecure and n > 1
            log = f"nats-{i}.log" if n > 1 else "nats-server.log"
            self.nats_servers.append(
                NatsServer(
                    host=host,
                    port=ports[i],
                    log_file=self.state / "logs" / log,
                    config=configs[i],
                    cluster_port=routes[i] if plain_cluster else None,
                    routes=others if plain_cluster else (),
                ).start()
            )
        self.nats = self.nats_servers[0]
        for r in routes:  # bound before any other port is picked (free_port could repeat it)
            if not wait_for_port(host, r, timeout):
                raise Unavailable(f"nats-server's cluster port {host}:{r} did not open")
        for i in range(self.hub_count):
            self.start_hub(i, timeout=timeout)
            if i == 0 and self.hub_count > 1:
                self.wait_leader(0, timeout=timeout)  # the first leads, the others stand by
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
        args = fedcommands.gateway(self, ready, interval)
        env_token = {"ORRERY_TOKEN": self.admin_token}
        self.gateway = childprocess.spawn(args, self.state / "logs" / "gateway.log",
                                          env={**self.env, **env_token}, cwd=self.state)
        childprocess.wait_ready_file(self.gateway, ready, self.state / "logs" / "gateway.log",
                                     what="the gateway", timeout=timeout)
        self.gateway_url = json.loads(ready.read_text())["url"]

    @property
    def nats_url(self) -> str:
        """Every nats-server's URL, comma-separated (what hubs and spokes are given)."""
        return ",".join(x.url for x in self.nats_servers)

    @property
    def hub(self) -> subprocess.Popen[bytes] | None:
        """The first hub's process."""
        return self.hubs.get(0)

    def _identity_init(self, ports: list[int], routes: list[int]) -> list[Path]:
        """The hub's CA, certificates and the nats-server configuration (TLS, a user per
        enrolled cluster), made before nats-server starts; the hub keeps the users current."""
        out = subprocess.run(
            fedcommands.identity_init(self, ports, routes),
            capture_output=True,
            text=True,
            env=self.env,
            check=False,
        )
        if out.returncode != 0:
            raise Unavailable(f"hub identity init failed: {out.stderr.strip()}")
        return [Path(x) for x in out.stdout.split()]

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
            ident.join(self.leader_url(), self.join_token(name, labels), name)

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        return childprocess.spawn(args, self.state / "logs" / log_name, env=self.env,
                                  cwd=self.state)

    def why_exited(self, log_name: str, code: int | None) -> str:
        """Why a child exited, from its log (``childprocess.why_exited``)."""
        return childprocess.why_exited(self.state / "logs" / log_name, code)

    def start_hub(self, index: int = 0, timeout: float = 60.0) -> None:
        """Start hub ``index`` (0 unless HA); a restart keeps its port."""
        assert self.nats_servers
        name = "hub" if index == 0 else f"hub-{index}"
        ready = self.state / f"{name}-ready.json"
        ready.unlink(missing_ok=True)
        known = self.api_urls.get(index)
        port = (self.port + index if self.port else 0) or (
            free_port() if known is None else int(known.rsplit(":", 1)[1])
        )
        proc = self.hubs[index] = self._spawn(fedcommands.hub(self, port, ready), f"{name}.log")
        childprocess.wait_ready_file(proc, ready, self.state / "logs" / f"{name}.log",
                                     what="the hub", timeout=timeout)
        self.api_urls[index] = json.loads(ready.read_text())["api"]
        self.api_url = self.api_urls.get(0)

    def role(self, index: int) -> str | None:
        """``leader`` or ``standby``, as hub ``index`` says; None if down or alone."""
        url = self.api_urls.get(index)
        return None if url is None else hubrole.role(url)

    def wait_leader(self, index: int | None = None, timeout: float = 60.0) -> int:
        """Until hub ``index`` (or any hub) leads; returns which does."""
        urls = self.api_urls if index is None else {index: self.api_urls[index]}
        return hubrole.wait_leader(urls, timeout=timeout)

    def leader_url(self) -> str:
        if self.hub_count == 1:
            assert self.api_url is not None
            return self.api_url
        return self.api_urls[self.wait_leader()]

    def start_spoke(self, name: str) -> None:
        assert self.nats_servers
        s = self.spec[name]
        inv = self.state / "inventories" / f"{name}.yaml"
        inv.parent.mkdir(exist_ok=True)
        inv.write_text(yaml.safe_dump(s.inventory()))
        if not self.insecure:
            self.enroll(name, {"region": s.region, **s.labels}, self.state / "spokes" / name)
        self.spokes[name] = self._spawn(fedcommands.spoke(self, name, inv), f"spoke-{name}.log")

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

    def kill_hub(self, index: int = 0) -> None:
        p = self.hubs.get(index)
        if p and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()

    def client(self) -> HubClient:
        """A client of every hub (it follows to the leader)."""
        assert self.api_url is not None
        urls = ",".join(self.api_urls[i] for i in sorted(self.api_urls))
        return HubClient(urls, token=self.admin_token)

    def stop(self) -> None:
        procs = [self.gateway, *self.spokes.values(), *self.hubs.values()]
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
        for server in self.nats_servers:
            server.stop()

    def __enter__(self) -> Federation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
