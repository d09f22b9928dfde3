"""Orrery's shared core: what the hub, the spoke agents and users all speak.

- :mod:`orrery.manifest` — the job manifest users submit (YAML or JSON, Kubernetes style).
- :mod:`orrery.wire` — NATS subjects and messages between hub and spokes (sans-IO).
- :mod:`orrery.client` — the HTTP client for the hub's REST API (over
  :mod:`orrery.hubtransport`; the hub's address in :mod:`orrery.hubaddress`).
- :mod:`orrery.workload` — the helper a training script calls to report progress.
- :mod:`orrery.cli` — the ``orrery`` command.
"""

__version__ = "0.1.0"
