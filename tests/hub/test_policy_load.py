"""Loading policy files: schema errors with file and line, all-or-nothing sets, reloads that
keep the old set, the listing and its digest, the committed JSON Schema, the examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from orrery.errors import NotFound
from orrery_hub.admission.policyfiles import PolicyHolder, load_policies
from orrery_hub.policy import PolicyError, build_policy_set
from orrery_hub.policy.schema import schema_text

REPO = Path(__file__).resolve().parents[2]

GOOD = """\
apiVersion: orrery/v1
kind: Placement
metadata: {name: eu-residency}
spec:
  match: {labels: {data-residency: eu}}
  require: {clusterLabels: {region: "eu-*"}}
"""

GUARD = """\
# a comment first
apiVersion: orrery/v1
kind: Guardrail
metadata: {name: nlp}
spec: {match: {team: nlp}, maxGpusPerJob: 64}
"""


def issues_of(files: list[tuple[str, str]]) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        build_policy_set(files)
    return [f"{i.where()}: {i.reason}" for i in exc.value.issues]


BAD_CASES = [
    pytest.param(GOOD.replace("  require: {clusterLabels: {region: \"eu-*\"}}\n", ""),
                 ["f.yaml:4: spec: a Placement needs require, forbid or prefer"],
                 id="says-nothing"),
    pytest.param(GOOD.replace('{region: "eu-*"}', "{}"),
                 ["f.yaml:6: spec.require: give clusterLabels, clusters, or both"],
                 id="empty-selector"),
    pytest.param(GOOD.replace("kind: Placement", "kind: Placment"),
                 ["f.yaml:2: kind: must be one of Placement, Guardrail, Cost (got 'Placment')"],
                 id="unknown-kind"),
    pytest.param(GOOD.replace("  require:", "  requires:"),
                 ["f.yaml:6: spec.requires: unknown field"],
                 id="typo-field"),
    pytest.param(GOOD.replace("orrery/v1", "orrery/v2"),
                 ["f.yaml:1: apiVersion: Input should be 'orrery/v1'"], id="api-version"),
    pytest.param(GOOD.replace("eu-residency", "EU_residency"),
                 ["f.yaml:3: metadata.name: must be 1-63 lowercase letters, digits or '-', "
                  "starting and ending with a letter or digit"], id="bad-name"),
    pytest.param(GUARD.replace("64", "-1"),
                 ["f.yaml:5: spec.maxGpusPerJob: Input should be greater than or equal to 0"],
                 id="negative-limit"),
    pytest.param(GUARD.replace("maxGpusPerJob: 64", "maxRuntime: soon"),
                 ["f.yaml:5: spec.maxRuntime: 'soon' is not a duration (use e.g. 90s, 15m, "
                  "12h, 1h30m, 2d)"], id="bad-duration"),
    pytest.param("apiVersion: orrery/v1\nkind: Cost\nmetadata: {name: c}\nspec:\n  prices:\n"
                 "    - {cluster: a, gpuType: H100, perGpuHour: cheap}\n",
                 ["f.yaml:6: spec.prices[0].perGpuHour: Input should be a valid number, "
                  "unable to parse string as a number"], id="nested-list-line"),
    pytest.param(GOOD + "  forbid: [oops\n",
                 ["f.yaml:8: not valid YAML: expected ',' or ']', but got '<stream end>'"],
                 id="yaml-syntax"),
    pytest.param("- just\n- a list\n",
                 ["f.yaml:1: document 1 must be a mapping with apiVersion, kind, metadata "
                  "and spec"], id="not-a-mapping"),
    pytest.param(GOOD + "---\n" + GOOD,
                 ["f.yaml:10: metadata.name: Placement 'eu-residency' is already defined at "
                  "f.yaml:1"], id="duplicate-name"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CASES)
def test_bad_documents_name_file_line_field_and_reason(text: str, expected: list[str]) -> None:
    assert issues_of([("f.yaml", text)]) == expected


def test_every_problem_in_every_file_is_reported_at_once() -> None:
    got = issues_of([("a.yaml", GOOD.replace("require:", "requir:")),
                     ("b.yaml", GUARD.replace("64", "lots")), ("c.yaml", GOOD)])
    assert [g.split(":")[0] for g in got] == ["a.yaml", "b.yaml"]


def test_the_same_price_twice_is_refused() -> None:
    cost = ("apiVersion: orrery/v1\nkind: Cost\nmetadata: {name: %s}\nspec:\n  prices:\n"
            "    - {cluster: a, gpuType: H100, perGpuHour: 1}\n")
    got = issues_of([("a.yaml", cost % "one"), ("b.yaml", cost % "two")])
    assert got == ["b.yaml:6: spec.prices[0]: cluster a H100 (spot: false) already has a price "
                   "in cost/one"]


def test_sources_entries_and_digest(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(GUARD)
    (tmp_path / "a.yml").write_text(GOOD + "---\n")  # a trailing empty document is fine
    (tmp_path / "README.md").write_text("not a policy")
    (tmp_path / "schema.json").write_text("{}")
    (tmp_path / ".hidden.yaml").write_text("broken: [")
    ps = load_policies(tmp_path)
    assert [Path(s.path).name for s in ps.sources] == ["a.yml", "b.yaml"]
    assert ps.sources[1].policies == ("guardrail/nlp",)
    assert [(e.kind, e.name, e.origin.line) for e in ps.entries] == [
        ("Placement", "eu-residency", 1), ("Guardrail", "nlp", 2)]
    assert len(ps.digest) == 64
    assert load_policies(tmp_path).digest == ps.digest
    (tmp_path / "b.yaml").write_text(GUARD.replace("64", "32"))
    assert load_policies(tmp_path).digest != ps.digest


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such folder"):
        load_policies(tmp_path / "nope")


def test_reload_with_a_broken_file_keeps_the_old_set(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD)
    holder = PolicyHolder(tmp_path)
    before = holder.current
    assert [e.name for e in before.entries] == ["eu-residency"]

    (tmp_path / "q.yaml").write_text(GUARD)
    (tmp_path / "p.yaml").write_text(GOOD.replace("require", "requrie"))
    r = holder.reload()
    assert not r.changed
    assert r.error is not None
    assert "p.yaml:6: spec.requrie" in r.error.message
    assert holder.current is before  # not even the good new file q.yaml was taken

    (tmp_path / "p.yaml").write_text(GOOD)
    r = holder.reload()
    assert r.changed
    assert r.error is None
    assert [e.name for e in holder.current.entries] == ["eu-residency", "nlp"]
    assert not holder.reload().changed  # same files, same digest


def test_reload_of_a_vanished_folder_keeps_the_old_set(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "p.yaml").write_text(GOOD)
    holder = PolicyHolder(folder)
    before = holder.current
    (folder / "p.yaml").unlink()
    folder.rmdir()
    r = holder.reload()
    assert isinstance(r.error, NotFound)
    assert holder.current is before


def test_committed_schema_equals_the_generated_one() -> None:
    assert (REPO / "policies" / "schema.json").read_text() == schema_text(), (
        "regenerate: python -c \"from orrery_hub.policy.schema import schema_text as s; "
        "print(s(), end='')\" > policies/schema.json"
    )


def test_example_policies_load() -> None:
    ps = load_policies(REPO / "policies")
    kinds = {e.kind for e in ps.entries}
    assert kinds == {"Placement", "Guardrail", "Cost"}
    assert "placement/eu-residency" in {f"{e.kind.lower()}/{e.name}" for e in ps.entries}
