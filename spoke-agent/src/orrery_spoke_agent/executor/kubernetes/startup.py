"""Building the kubernetes executor at spoke start-up: ``build`` and the cluster's topology.

``orrery spoke --executor kubernetes`` calls ``build``: the settings file
(``ORRERY_KUBE_EXECUTOR_CONFIG``), the Job template, the API client, a bounded wait for the
reflectors' first lists, and region and zone read from the nodes' labels.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orrery.errors import InvalidInput
from orrery_spoke_agent.executor.base import Executor
from orrery_spoke_agent.executor.kubernetes import capacity as capa
from orrery_spoke_agent.executor.kubernetes import jobs as kj
from orrery_spoke_agent.executor.kubernetes.config import CONFIG_ENV, api_client, load_config
from orrery_spoke_agent.executor.kubernetes.executor import KubeExecutor
from orrery_spoke_agent.inventory import Node
from orrery_spoke_agent.settings import SpokeSettings

log = logging.getLogger("orrery.spoke.kubernetes")

SYNC_WAIT_S = 10.0  # build() waits this long for the first lists


def topology(nodes: Iterable[dict[str, Any]], gpu_resources: Iterable[str]) -> dict[str, str]:
    """Region and zone, where the GPU nodes that carry the well-known labels agree."""
    infos = [capa.node_info(n, gpu_resources) for n in nodes]
    out = {}
    for label, values in (("region", {i.region for i in infos if i.gpus}),
                          ("zone", {i.zone for i in infos if i.gpus})):
        values.discard(None)
        if len(values) == 1:
            out[label] = str(values.pop())
    return out


def build(settings: SpokeSettings, *, kubeconfig: Path | None, context: str | None,
          namespace: str) -> tuple[Executor, list[Node]]:
    """The executor ``orrery spoke --executor kubernetes`` runs. No declared nodes: its
    ``capacity()`` reports the cluster's live nodes."""
    env_path = os.environ.get(CONFIG_ENV)
    cfg = load_config(Path(env_path) if env_path else None)
    if (cfg.progress_listen is None) != (cfg.progress_url is None):
        raise InvalidInput(f"{CONFIG_ENV}: progressListen and progressUrl go together "
                           "(where the agent listens, and where slices reach it)")
    template = kj.JobTemplate(
        namespace=namespace, cluster=settings.cluster, default_image=cfg.default_image,
        tolerations=tuple(cfg.tolerations), service_account=cfg.service_account,
        image_pull_secrets=tuple(cfg.image_pull_secrets), volumes=tuple(cfg.volumes),
        volume_mounts=tuple(cfg.volume_mounts), kill_grace_s=settings.kill_grace_s,
        lease_s=settings.lease_s)
    ex = KubeExecutor(api_client(kubeconfig, context), cfg, template).start()
    ex.log_dir, ex.log_retention_s = settings.state_dir / "pod-logs", settings.slice_retention_s
    # Before the agent's first heartbeat, so its first report is the cluster's real
    # capacity rather than none (bounded: an API still unreachable is retried by the
    # reflectors, and the report fills in once they have listed).
    deadline = time.monotonic() + SYNC_WAIT_S
    synced = all(r.synced.wait(max(0.0, deadline - time.monotonic()))
                 for r in (ex.nodes, ex.pods, ex.jobs))
    if not synced:
        log.warning("the API has not answered within %.0fs; carrying on", SYNC_WAIT_S,
                    extra={"cluster": settings.cluster})
    # Region and zone from the nodes' topology labels, unless given: the labels dict is the
    # one the agent reports (the settings object itself is frozen).
    for label, value in topology(ex.nodes.items(), cfg.gpu_resources).items():
        if label == "region" and settings.region:
            continue
        settings.labels.setdefault(label, value)
    return ex, []
