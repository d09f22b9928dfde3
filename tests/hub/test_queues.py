"""The queue file `orrery hub --queues` reads: weights, quotas, cohorts; clear refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orrery.errors import InvalidInput, ManifestError
from orrery_hub.config.queues import load_queues, parse_queues
from orrery_hub.scheduler import QueueConfig


def test_queues_parse() -> None:
    qs = parse_queues(
        "queues:\n"
        "  - {name: research, weight: 2, guaranteed: 64, cohort: ml}\n"
        "  - {name: batch, guaranteed: 16, cohort: ml, borrowLimit: 32}\n"
    )
    assert qs == (
        QueueConfig("research", 2.0, 64, "ml", None),
        QueueConfig("batch", 1.0, 16, "ml", 32),
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("queues:\n  - {name: a, weight: 0}", "queues[0].weight"),
        ("queues:\n  - {name: a, guaranteed: -1}", "queues[0].guaranteed"),
        ("queues:\n  - {name: a, colour: red}", "unknown field"),
        ("queues:\n  - {name: a}\n  - {name: a}", "listed twice"),
        ("queues: [", "not valid YAML"),
    ],
)
def test_bad_queue_files_say_why(text: str, words: str) -> None:
    with pytest.raises(ManifestError) as exc:
        parse_queues(text)
    assert words in exc.value.message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--queues"):
        load_queues(tmp_path / "nope.yaml")


def test_the_hub_refuses_a_bad_queue_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "q.yaml"
    bad.write_text("queues:\n  - {name: a, weight: -3}\n")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "orrery.cli.main",
            "hub",
            "--queues",
            str(bad),
            "--state",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert "queues[0].weight" in p.stderr and "Traceback" not in p.stderr
