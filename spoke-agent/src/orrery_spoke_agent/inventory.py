"""What GPUs this cluster has.

- A declared file (YAML), which is how ``orrery up`` simulates clusters::

      nodes:
        - {name: gpu-0, gpuType: H100, gpus: 8, gpuMemoryMiB: 81920}
        - {name: gpu-1, gpuType: A100, gpus: 4, count: 2}   # gpu-1-0, gpu-1-1

- NVML (``nvidia-ml-py``), where real GPUs are present: one node, this host.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from orrery.errors import InvalidInput, ManifestError
from orrery.manifest import load_document, problems_of


@dataclass(frozen=True)
class Node:
    name: str
    gpu_type: str | None
    gpus: int
    gpu_memory_mib: int = 0


class _DeclaredNode(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)
    name: str = Field(min_length=1, max_length=253)
    gpu_type: str | None = Field(default=None, min_length=1, max_length=128)
    gpus: int = Field(default=0, ge=0, le=64)
    gpu_memory_mib: int = Field(default=0, ge=0, alias="gpuMemoryMiB")
    count: int = Field(default=1, ge=1, le=10_000)


class _Declared(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[_DeclaredNode] = Field(min_length=1)


def parse_declared(text: str, *, source: str = "inventory") -> list[Node]:
    data = load_document(text, source=source)
    try:
        declared = _Declared.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(problems_of(exc), source=source) from None
    nodes: list[Node] = []
    for d in declared.nodes:
        names = [d.name] if d.count == 1 else [f"{d.name}-{i}" for i in range(d.count)]
        for name in names:
            nodes.append(Node(name, d.gpu_type if d.gpus else None, d.gpus, d.gpu_memory_mib))
    seen: set[str] = set()
    for n in nodes:
        if n.name in seen:
            raise ManifestError([("nodes", f"node name {n.name!r} appears twice")], source=source)
        seen.add(n.name)
    return nodes


def load_declared(path: Path) -> list[Node]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInput(f"--inventory: cannot read {path}: {exc.strerror}") from None
    return parse_declared(text, source=f"inventory {path}")


def from_nvml() -> list[Node] | None:
    """This host's GPUs through NVML, or None where there is no NVIDIA driver."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None  # no driver, no GPUs: not an error for a spoke that declares its nodes
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        if isinstance(name, bytes):
            name = name.decode()
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)
        return [Node(socket.gethostname(), gpu_type_of(name), count, int(memory))]
    finally:
        pynvml.nvmlShutdown()


def gpu_type_of(product: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100', 'NVIDIA A100-SXM4-80GB' -> 'A100': the family
    name manifests and policies use (memory size is reported separately)."""
    words = product.replace("NVIDIA", "").replace("Tesla", "").split()
    return words[0].split("-")[0] if words else product
