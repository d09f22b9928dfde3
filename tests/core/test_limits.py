"""The declared limits of user documents and manifests, as properties (hypothesis): every
value past a limit is refused with a ManifestError naming the field, never a crash, and
every value within the limits is accepted."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orrery.document import MAX_DEPTH, MAX_NODES, load_document
from orrery.duration import parse_duration
from orrery.errors import ManifestError
from orrery.manifest import (
    MAX_COMMAND_ARGS,
    MAX_ENV,
    MAX_LABELS,
    manifest_from_data,
    parse_manifest,
)
from orrery.names import is_dns_label

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def doc(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "orrery/v1",
        "kind": "TrainingJob",
        "metadata": {"name": "j"},
        "spec": {"command": ["x"], **spec},
    }


def refused(data: object) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as exc:
        manifest_from_data(data)
    return exc.value.problems


@FAST
@given(st.sampled_from([math.nan, math.inf, -math.inf]), st.booleans())
def test_max_runtime_is_never_non_finite(value: float, as_text: bool) -> None:
    problems = refused(doc(maxRuntime=str(value) if as_text else value))
    assert problems[0][0] == "spec.maxRuntime"


@FAST
@given(st.floats(min_value=1e-3, max_value=365 * 86400.0))
def test_finite_positive_max_runtimes_are_accepted(seconds: float) -> None:
    m = manifest_from_data(doc(maxRuntime=seconds))
    assert m.spec.max_runtime_s == seconds


@FAST
@given(st.text(max_size=80))
def test_durations_parse_finite_or_raise_value_error(text: str) -> None:
    try:
        value = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(value) and value >= 0


@FAST
@given(st.text(max_size=70))
def test_dns_labels_match_whole_names_only(name: str) -> None:
    ok = is_dns_label(name)
    assert ok == (
        1 <= len(name) <= 63
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in name)
        and name[0] != "-"
        and name[-1] != "-"
    )
    assert not is_dns_label(name + "\n")


@FAST
@given(st.integers(min_value=0, max_value=3), st.sampled_from(["labels", "env", "command"]))
def test_collections_past_their_limit_are_refused(extra: int, which: str) -> None:
    if which == "labels":
        data = doc()
        data["metadata"] = {
            "name": "j",
            "labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1 + extra)},
        }
        where = "metadata.labels"
    elif which == "env":
        data = doc(env={f"K{i}": "v" for i in range(MAX_ENV + 1 + extra)})
        where = "spec.env"
    else:
        data = doc(command=["x"] * (MAX_COMMAND_ARGS + 1 + extra))
        where = "spec.command"
    assert refused(data)[0][0] == where


@FAST
@given(st.integers(min_value=2**63, max_value=2**200))
def test_huge_integers_are_refused_not_overflowed(n: int) -> None:
    assert refused(doc(priority=n))[0][0] == "spec.priority"
    assert refused(doc(slices=n))[0][0] == "spec.slices"


def test_label_and_env_keys_match_whole() -> None:
    assert refused(doc(env={"A\n": "1"}))[0][0] == "spec.env"
    data = doc()
    data["metadata"] = {"name": "j", "labels": {"team\n": "x"}}
    assert refused(data)[0][0] == "metadata.labels"


@FAST
@given(st.integers(min_value=MAX_DEPTH + 1, max_value=5000), st.sampled_from("[{-"))
def test_deep_documents_are_refused(depth: int, style: str) -> None:
    if style == "[":
        text = "[" * depth + "]" * depth
    elif style == "{":
        text = "{a: " * depth + "1" + "}" * depth
    else:
        text = "".join(" " * i + "-\n" for i in range(min(depth, 1200)))
    with pytest.raises(ManifestError, match=r"nested deeper|not valid YAML"):
        load_document(text)


@FAST
@given(st.integers(min_value=3, max_value=12), st.integers(min_value=4, max_value=12))
def test_alias_expansion_is_bounded(levels: int, fanout: int) -> None:
    lines = ["l0: &l0 [" + ", ".join(["x"] * fanout) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]")
    text = "\n".join(lines)
    size = 1 + fanout  # l0 and its scalars; each level holds `fanout` copies of the last
    expanded = 1 + 2 * levels + size  # the root mapping, its keys, l0
    for _ in range(1, levels):
        size = 1 + fanout * size
        expanded += size
    if expanded > MAX_NODES:
        with pytest.raises(ManifestError, match="expands to more than"):
            load_document(text)
    else:
        assert len(load_document(text)) == levels


def test_recursive_aliases_are_refused() -> None:
    with pytest.raises(ManifestError, match="contains it"):
        load_document("a: &a [1, *a]")


@FAST
@given(st.text(max_size=300))
def test_any_text_parses_or_is_a_manifest_error(text: str) -> None:
    try:
        parse_manifest(text)
    except ManifestError:
        pass


def test_the_largest_valid_manifest_is_within_the_document_limits() -> None:
    # POST /v1/jobs:batch skips measuring a JSON batch whose items all validate
    # (``orrery.document.json_items``): sound only while no valid manifest can be past a
    # document limit. Every collection here is at its limit, every value a collection.
    from orrery.document import measure_data
    from orrery.manifest import MAX_GPU_TYPES

    env: dict[str, object] = {f"K{i}": {"secretRef": "s", "key": "k"} for i in range(MAX_ENV)}
    data = doc(
        command=["x"] * MAX_COMMAND_ARGS,
        env=env,
        gpuType=[f"t{i}" for i in range(MAX_GPU_TYPES)],
        datasets=[{"name": f"d{i}", "mountPath": f"/d{i}"} for i in range(16)],
        maxRuntime="1h",
        image="i",
        checkpointDir="/c",
    )
    data["metadata"] = {"name": "j", "labels": {f"k{i}": "v" for i in range(MAX_LABELS)}}
    manifest_from_data(data)  # valid
    measure_data(data)  # within MAX_NODES and MAX_DEPTH, as sent
