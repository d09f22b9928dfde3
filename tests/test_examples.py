"""Every example in examples/ is a valid manifest (they are what the README tells users to run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orrery.manifest import parse_manifest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_valid_manifest(path: Path) -> None:
    m = parse_manifest(path.read_text(), source=str(path))
    assert m.spec.command


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2
