"""The manifest: what is accepted, and that every refusal names the field and the reason."""

from __future__ import annotations

import pytest

from orrery.duration import format_duration, parse_duration
from orrery.errors import ManifestError
from orrery.manifest import parse_manifest

GOOD = """
apiVersion: orrery/v1
kind: TrainingJob
metadata:
  name: llama-finetune
  labels: {team: nlp, data-residency: eu}
spec:
  queue: research
  priority: 100
  slices: 4
  gpusPerSlice: 8
  gpuType: [H100, A100]
  restartPolicy: Slice
  maxRetries: 3
  maxRuntime: 12h
  image: ghcr.io/acme/train:1.4
  command: [python, train.py]
  env: {EPOCHS: "3"}
"""


def test_the_design_example_parses() -> None:
    m = parse_manifest(GOOD)
    assert m.metadata.name == "llama-finetune"
    assert m.team == "nlp"
    assert m.spec.slices == 4
    assert m.spec.gpus_per_slice == 8
    assert m.spec.gpu_types == frozenset({"H100", "A100"})
    assert m.spec.restart_policy.value == "Slice"
    assert m.spec.max_runtime_s == 12 * 3600
    assert m.spec.total_gpus == 32


def test_defaults() -> None:
    m = parse_manifest(
        '{"apiVersion": "orrery/v1", "kind": "TrainingJob", "metadata": {"name": "a"},'
        ' "spec": {"command": ["true"]}}'
    )
    assert (m.spec.queue, m.spec.slices, m.spec.gpus_per_slice) == ("default", 1, 1)
    assert m.spec.gpu_types is None
    assert m.spec.restart_policy.value == "Gang"
    assert m.spec.max_retries == 3


def _problems(text: str) -> dict[str, str]:
    with pytest.raises(ManifestError) as exc:
        parse_manifest(text)
    return dict(exc.value.problems)


def _with(spec_line: str, *, drop: str | None = None) -> str:
    lines = [ln for ln in GOOD.splitlines() if drop is None or not ln.strip().startswith(drop)]
    return "\n".join(lines) + "\n" + spec_line


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        (GOOD.replace("gpusPerSlice: 8", "gpusPerSlice: eight"), "spec.gpusPerSlice", "integer"),
        (GOOD.replace("gpusPerSlice: 8", "gpusPerSlice: 65"), "spec.gpusPerSlice", "less than"),
        (GOOD.replace("slices: 4", "slices: 0"), "spec.slices", "greater than"),
        (
            GOOD.replace("restartPolicy: Slice", "restartPolicy: Sometimes"),
            "spec.restartPolicy",
            "Gang",
        ),
        (GOOD.replace("maxRuntime: 12h", "maxRuntime: soon"), "spec.maxRuntime", "not a duration"),
        (
            GOOD.replace("name: llama-finetune", "name: Llama_Finetune"),
            "metadata.name",
            "lowercase",
        ),
        (GOOD.replace("command: [python, train.py]", "command: []"), "spec.command", "at least 1"),
        (GOOD.replace("gpuType: [H100, A100]", "gpuType: []"), "spec.gpuType", "empty list"),
        (GOOD.replace("EPOCHS", "1EPOCHS"), "spec.env", "environment variable"),
        (
            GOOD.replace("queue: research", "queue: research\n  gpus: 3"),
            "spec.gpus",
            "unknown field",
        ),
        (GOOD.replace("apiVersion: orrery/v1", "apiVersion: orrery/v2"), "apiVersion", "orrery/v1"),
        (GOOD.replace("kind: TrainingJob", "kind: Pod"), "kind", "TrainingJob"),
    ],
)
def test_bad_fields_are_named_with_a_reason(text: str, field: str, words: str) -> None:
    problems = _problems(text)
    assert field in problems, problems
    assert words.lower() in problems[field].lower()


def test_missing_command_is_named() -> None:
    problems = _problems(GOOD.replace("  command: [python, train.py]\n", ""))
    assert problems["spec.command"] == "Field required"


def test_every_problem_is_reported_at_once() -> None:
    text = GOOD.replace("slices: 4", "slices: -1").replace("gpusPerSlice: 8", "gpusPerSlice: x")
    assert {"spec.slices", "spec.gpusPerSlice"} <= set(_problems(text))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("spec: [unclosed", "line 1"),
        ("- just\n- a list\n", "mapping"),
        ("", "mapping"),
        (
            "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: a}\n"
            "spec:\n  slices: 2\n\tbad: tab\n",
            "line",
        ),
    ],
)
def test_documents_that_are_not_manifests(text: str, words: str) -> None:
    with pytest.raises(ManifestError) as exc:
        parse_manifest(text)
    assert words in exc.value.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("1h30m", 5400),
        ("2d", 172800),
        ("45", 45),
        (7.5, 7.5),
    ],
)
def test_durations(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "5x", "-3", "1h-5m", "m5"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_round_trips_common_values() -> None:
    for s in (5, 90, 3600, 5400):
        assert parse_duration(format_duration(s)) == s
