"""The command line of each process a local federation starts (``federation.Federation``).

The hub (``python -m orrery_hub``), a spoke agent (``python -m orrery_spoke_agent``), the
inference gateway and the hub's identity init, each with the federation's timings, state
folders and security mode. Pure: building a command starts nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orrery.federation import Federation


def identity_init(fed: Federation, ports: list[int], routes: list[int]) -> list[str]:
    """``orrery_hub.identity init``: the CA, certificates and nats-server configuration."""
    return [
        fed.python,
        "-m",
        "orrery_hub.identity",
        "init",
        "--state",
        str(fed.state / "hub"),
        *(a for p in ports for a in ("--listen", f"{fed.nats_host}:{p}")),
        *(a for r in routes for a in ("--route-port", str(r))),
    ]


def gateway(fed: Federation, ready: Path, interval: float | None) -> list[str]:
    """The inference gateway, reporting to the first hub; it syncs routes once per
    heartbeat interval unless told otherwise."""
    assert fed.api_url is not None
    return [
        fed.python, "-m", "orrery_hub.gateway",
        "--hub", fed.api_url,
        "--port", "0",
        "--name", "gateway-1",
        "--state", str(fed.state / "gateway"),
        "--interval", str(interval or min(0.5, fed.timings.heartbeat_s)),
        "--ready-file", str(ready),
    ]


def hub(fed: Federation, port: int, ready: Path) -> list[str]:
    """A hub on ``port`` (0: any), writing ``ready`` once it serves."""
    t = fed.timings
    args = [
        fed.python,
        "-m",
        "orrery_hub",
        "--port",
        str(port),
        "--nats",
        fed.nats_url,
        "--state",
        str(fed.state / "hub"),
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
        str(fed.admin_token_file),
    ]
    if fed.insecure:
        args.append("--insecure")
    else:
        args.append("--manage-nats")  # nats-server runs from the config init wrote
    if fed.policies:
        args += ["--policies", str(fed.policies)]
    if fed.hub_count > 1:
        args += ["--leader-lease", str(fed.leader_lease_s)]
    if fed.db_url:
        args += ["--db", fed.db_url]
    return args + fed.hub_args


def spoke(fed: Federation, name: str, inventory: Path) -> list[str]:
    """Spoke agent ``name``, its GPUs simulated from ``inventory``, behind the federation's
    prefix for it (a network namespace, say)."""
    s, t = fed.spec[name], fed.timings
    args = [
        *fed.spoke_prefix.get(name, []),
        fed.python,
        "-m",
        "orrery_spoke_agent",
        "--nats",
        fed.nats_url,
        "--cluster",
        name,
        "--region",
        s.region,
        "--inventory",
        str(inventory),
        "--state",
        str(fed.state / "spokes" / name),
        "--heartbeat-interval",
        str(t.heartbeat_s),
        "--lease",
        str(t.lease_s),
        "--kill-grace",
        str(t.kill_grace_s),
    ]
    if fed.insecure:
        args.append("--insecure")
    if fed.run_as is not None:
        args += ["--run-as", fed.run_as]
    elif os.geteuid() == 0:
        args.append("--allow-root-slices")
    # Plain NATS, but orders still verified: the spoke pins the key the hub made.
    # (Enrolled spokes pin the key enrollment gave them.)
    hub_key = fed.state / "hub" / "identity" / "orders.pub"
    if fed.insecure and fed.verify_orders and hub_key.exists():
        args += ["--hub-key", str(hub_key)]
    for k, v in s.labels.items():
        args += ["--label", f"{k}={v}"]
    return args
