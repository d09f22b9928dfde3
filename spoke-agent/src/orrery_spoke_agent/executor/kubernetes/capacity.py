"""A Kubernetes cluster's GPU capacity, from Node and Pod objects (plain JSON dicts).

Pure functions over what the watches in ``watch`` keep: no client, no IO, so the
rules below are tested with dicts alone.

- A node's GPUs are its allocatable extended resources (``nvidia.com/gpu`` by default; a
  config may name others such as ``amd.com/gpu``). Product and memory come from the GPU
  Feature Discovery labels (``nvidia.com/gpu.product``, ``nvidia.com/gpu.memory``).
- GPUs other tenants' pods request on a node are not offered; a pod counts while it is not
  Succeeded or Failed and is bound to the node.
- A cordoned (``spec.unschedulable``) or NotReady node offers nothing. Only NotReady is
  reported as not ready: the hub moves the slices of a node not ready past its failover
  timeout, and a cordon alone (maintenance ahead) must not kill what runs there.
- Free GPU *indices* are what the hub reasons in. Kubernetes picks the devices itself, so
  the indices are bookkeeping: the ones this spoke's own slices were assigned stay taken
  (the hub subtracts them too, so they must match), and other tenants' usage removes more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orrery.wire import NodeReport
from orrery.wire.messages import MAX_GPUS_PER_NODE
from orrery_spoke_agent.inventory import gpu_type_of

Obj = Mapping[str, Any]

PRODUCT_LABELS = ("nvidia.com/gpu.product", "amd.com/gpu.product-name")
MEMORY_LABEL = "nvidia.com/gpu.memory"
COUNT_LABEL = "nvidia.com/gpu.count"
REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class NodeInfo:
    name: str
    resource: str | None  # the extended resource its GPUs are, None: a CPU-only node
    gpus: int
    product: str | None  # the raw product label, for the Job's node selector
    gpu_type: str | None  # the family name manifests and policies use ("H100")
    gpu_memory_mib: int
    ready: bool  # the Ready condition is True
    cordoned: bool  # spec.unschedulable: no new pods
    region: str | None
    zone: str | None


def quantity(value: object) -> int:
    """An extended-resource quantity as a whole count ("4", 4, "4000m" -> 4)."""
    text = str(value).strip()
    try:
        if text.endswith("m"):
            return int(text[:-1]) // 1000
        return int(float(text))
    except ValueError:
        return 0


def product_type(product: str) -> str:
    """GFD writes 'NVIDIA-H100-80GB-HBM3'; policies say 'H100'."""
    return gpu_type_of(product.replace("-", " ").replace("_", " "))


def node_info(node: Obj, resources: Iterable[str]) -> NodeInfo:
    meta = node.get("metadata") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    status = node.get("status") or {}
    allocatable: Mapping[str, object] = status.get("allocatable") or {}
    resource, gpus = None, 0
    for r in resources:
        n = quantity(allocatable.get(r, 0))
        if n > 0:
            resource, gpus = r, min(n, MAX_GPUS_PER_NODE)
            break
    product = next((labels[k] for k in PRODUCT_LABELS if labels.get(k)), None)
    ready_cond = any(c.get("type") == "Ready" and c.get("status") == "True"
                     for c in status.get("conditions") or [])
    cordoned = bool((node.get("spec") or {}).get("unschedulable"))
    return NodeInfo(
        name=str(meta.get("name", "")), resource=resource, gpus=gpus, product=product,
        gpu_type=(product_type(product) if product else "GPU") if gpus else None,
        gpu_memory_mib=quantity(labels.get(MEMORY_LABEL, 0)) if gpus else 0,
        ready=ready_cond, cordoned=cordoned,
        region=labels.get(REGION_LABEL), zone=labels.get(ZONE_LABEL),
    )


def pod_gpu_request(pod: Obj, resource: str) -> int:
    """GPUs a pod holds on its node: the larger of its containers' sum and any init
    container's (the scheduler's rule), counting limits where requests are absent."""
    spec = pod.get("spec") or {}

    def of(c: Obj) -> int:
        res = c.get("resources") or {}
        req = (res.get("requests") or {}).get(resource)
        if req is None:
            req = (res.get("limits") or {}).get(resource, 0)
        return quantity(req)

    main = sum(of(c) for c in spec.get("containers") or [])
    init = max((of(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def pod_holds(pod: Obj) -> bool:
    """A pod holds its resources while it is bound and has not ended."""
    phase = (pod.get("status") or {}).get("phase")
    return bool((pod.get("spec") or {}).get("nodeName")) and phase not in ("Succeeded", "Failed")


def free_indices(node: NodeInfo, own: set[int], others: int) -> list[int]:
    """The indices the hub may use on ``node``: not ``own`` (held by this spoke's slices,
    which the hub subtracts itself), and ``others`` fewer for other tenants' pods."""
    if not node.ready or node.cordoned or node.gpus == 0:
        return []
    candidates = [i for i in range(node.gpus) if i not in own]
    room = max(0, node.gpus - len(own & set(range(node.gpus))) - others)
    return candidates[:room]


def reports(nodes: Iterable[NodeInfo], other_use: Mapping[str, int],
            own: Mapping[str, set[int]]) -> list[NodeReport]:
    """What the agent sends the hub: every GPU node with the indices still free."""
    out = []
    for n in sorted(nodes, key=lambda n: n.name):
        if n.gpus == 0:
            continue  # a CPU-only node: nothing for the hub to place on
        out.append(NodeReport(
            name=n.name, gpu_type=n.gpu_type, gpu_memory_mib=n.gpu_memory_mib, gpus=n.gpus,
            free=free_indices(n, own.get(n.name, set()), other_use.get(n.name, 0)),
            ready=n.ready,
        ))
    return out
