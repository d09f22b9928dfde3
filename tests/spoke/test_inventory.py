"""Declared inventories (what `orrery up` simulates clusters with) and NVML naming."""

from __future__ import annotations

from pathlib import Path

import pytest

from orrery.errors import InvalidInput, ManifestError
from orrery_spoke_agent.inventory import (
    Node,
    from_nvml,
    gpu_type_of,
    load_declared,
    parse_declared,
)


def test_declared_nodes_with_counts() -> None:
    nodes = parse_declared(
        "nodes:\n"
        "  - {name: big, gpuType: H100, gpus: 8, gpuMemoryMiB: 81920}\n"
        "  - {name: small, gpuType: L4, gpus: 2, count: 3}\n"
        "  - {name: cpu}\n"
    )
    assert nodes == [
        Node("big", "H100", 8, 81920),
        Node("small-0", "L4", 2, 0),
        Node("small-1", "L4", 2, 0),
        Node("small-2", "L4", 2, 0),
        Node("cpu", None, 0, 0),
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("nodes: []", "nodes"),
        ("nodes:\n  - {name: a, gpus: 65}", "nodes[0].gpus"),
        ("nodes:\n  - {name: a, gpus: 1, colour: red}", "unknown field"),
        ("nodes:\n  - {name: a}\n  - {name: a}", "appears twice"),
        ("nodes: [", "not valid YAML"),
    ],
)
def test_bad_inventories_say_why(text: str, words: str) -> None:
    with pytest.raises(ManifestError) as exc:
        parse_declared(text)
    assert words in exc.value.message


def test_missing_inventory_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read"):
        load_declared(tmp_path / "nope.yaml")


def test_nvml_without_a_driver_is_none_not_an_error() -> None:
    # This machine has no NVIDIA driver: NVML cannot start, and that is not a failure.
    assert from_nvml() is None


@pytest.mark.parametrize(
    ("product", "family"),
    [
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("Tesla V100-SXM2-32GB", "V100"),
        ("NVIDIA L4", "L4"),
    ],
)
def test_gpu_type_from_the_product_name(product: str, family: str) -> None:
    assert gpu_type_of(product) == family
