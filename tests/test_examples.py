"""Every example in examples/ is a valid manifest (they are what the README tells users to
run), and the example policies price the clusters `orrery up` starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from orrery.document import load_documents
from orrery.federation import CATALOG
from orrery.manifest import manifest_from_data
from orrery_hub.admission.policyfiles import load_policies
from orrery_hub.policy import price_of

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_valid_manifest(path: Path) -> None:
    docs = load_documents(path.read_text(), source=str(path))
    assert docs
    for doc in docs:  # a file of several documents is a batch (`orrery submit` sends it)
        assert manifest_from_data(doc, source=str(path)).spec.command


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize(
    ("cluster", "gpu_type"), [(c[0], c[2]) for c in CATALOG], ids=lambda x: str(x)
)
def test_the_example_prices_cover_every_cluster_orrery_up_starts(
    cluster: str, gpu_type: str
) -> None:
    """policies/cost.yaml once priced `eu-west-1` while `orrery up` names the cluster
    `eu-west`: every job there cost 0.00."""
    policies = load_policies(REPO / "policies")
    assert price_of(policies, cluster, gpu_type) is not None, (cluster, gpu_type)
