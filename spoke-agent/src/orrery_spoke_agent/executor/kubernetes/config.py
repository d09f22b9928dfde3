"""The kubernetes executor's settings file and API client: what ``kubernetes.build`` reads.

The settings beyond the CLI flags come from the YAML file named by
``ORRERY_KUBE_EXECUTOR_CONFIG`` (the spoke's Helm chart renders it into a ConfigMap);
the client comes from a kubeconfig (and context) or, inside a pod, its service account.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from orrery.errors import InvalidInput, ManifestError
from orrery.manifest import problems_of

CONFIG_ENV = "ORRERY_KUBE_EXECUTOR_CONFIG"


class KubeConfig(BaseModel):
    """The executor's settings file (YAML, camelCase keys)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True,
                              frozen=True)
    gpu_resources: list[str] = Field(default=["nvidia.com/gpu", "amd.com/gpu"], min_length=1)
    default_image: str | None = None  # for assignments without spec.image
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    service_account: str | None = None  # the slices' pods' service account
    image_pull_secrets: list[str] = Field(default_factory=list)
    volumes: list[dict[str, Any]] = Field(default_factory=list)  # e.g. a checkpoint PVC
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    pending_timeout_s: float = Field(default=300.0, gt=0)  # unschedulable / image pull
    watch_timeout_s: float = Field(default=60.0, ge=1)  # server-side watch timeout
    api_workers: int = Field(default=4, ge=1, le=64)
    # Where the agent listens for slices' progress reports (HOST:PORT), and the URL pods
    # reach it at (the chart's Service). Unset: Kubernetes slices report no progress.
    progress_listen: str | None = Field(default=None, pattern=r"^[^\s:]*:[0-9]{1,5}$")
    progress_url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=512)


def load_config(path: Path | None) -> KubeConfig:
    if path is None:
        return KubeConfig()
    source = f"{CONFIG_ENV} {path}"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{source}: cannot read: {exc}") from None
    try:
        return KubeConfig.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(problems_of(exc), source=source) from None


def api_client(kubeconfig: Path | None, context: str | None) -> Any:
    """A client from a kubeconfig (and context), or the pod's service account."""
    from kubernetes import client, config

    try:
        if kubeconfig is not None:
            return config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), context=context)
        conf = client.Configuration()
        config.load_incluster_config(client_configuration=conf)  # type: ignore[no-untyped-call]
        return client.ApiClient(conf)
    except config.ConfigException as exc:
        where = f"--kubeconfig {kubeconfig}" if kubeconfig else "in-cluster config"
        raise InvalidInput(f"{where}: {exc}") from None
    except OSError as exc:
        raise InvalidInput(f"--kubeconfig {kubeconfig}: {exc.strerror}") from None
