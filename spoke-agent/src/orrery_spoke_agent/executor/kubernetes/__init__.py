"""The Kubernetes executor: each slice a Job, watched through reflectors.

``executor`` (the ``Executor`` itself), ``lease`` (each Job's deadline renewed, and pods
that escaped it), ``adopt`` (Jobs an earlier agent left), ``startup`` (``build``, and the
cluster's region and zone), ``jobs`` (the Job a slice becomes and how its state is
judged), ``apierrors`` (which failed API calls to retry), ``capacity`` (free GPUs from the
watched Nodes and Pods), ``config`` (the executor's settings and API client), ``watch``
(the reflectors), ``progress`` (the endpoint slices report their progress to).
"""

from orrery_spoke_agent.executor.kubernetes.config import (
    CONFIG_ENV,
    KubeConfig,
    api_client,
    load_config,
)
from orrery_spoke_agent.executor.kubernetes.executor import KubeExecutor
from orrery_spoke_agent.executor.kubernetes.startup import build

__all__ = ["CONFIG_ENV", "KubeConfig", "KubeExecutor", "api_client", "build", "load_config"]
