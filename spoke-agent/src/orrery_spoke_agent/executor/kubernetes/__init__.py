"""The Kubernetes executor: each slice a Job, watched through reflectors.

``executor`` (the ``Executor`` itself and ``build``), ``jobs`` (the Job a slice becomes and
how its state is judged), ``capacity`` (free GPUs from the watched Nodes and Pods),
``config`` (the executor's settings and API client), ``watch`` (the reflectors),
``progress`` (the endpoint slices report their progress to).
"""

from orrery_spoke_agent.executor.kubernetes.executor import (
    CONFIG_ENV,
    KubeConfig,
    KubeExecutor,
    api_client,
    build,
    load_config,
)

__all__ = ["CONFIG_ENV", "KubeConfig", "KubeExecutor", "api_client", "build", "load_config"]
