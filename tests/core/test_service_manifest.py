"""The InferenceService manifest: the issue's example parses, bad fields are named."""

from __future__ import annotations

import pytest

from orrery.errors import ManifestError
from orrery.service_manifest import (
    REPLICA_LABEL,
    SERVICE_ENV,
    SERVICE_LABEL,
    parse_service_manifest,
    replica_job,
)

EXAMPLE = """
apiVersion: orrery/v1
kind: InferenceService
metadata: {name: chat, labels: {team: nlp, data-residency: eu}}
spec:
  gpusPerReplica: 1
  gpuType: [H100, A100]
  replicas: {min: 1, max: 16}
  autoscale:
    targetConcurrency: 8
    stableWindow: 60s
    panicWindow: 6s
    scaleDownDelay: 300s
    scaleToZero: false
  spread: {regions: 2}
  readinessPath: /healthz
  command: [python, serve.py]
"""


def test_the_issue_example_parses_with_durations_in_seconds() -> None:
    m = parse_service_manifest(EXAMPLE)
    assert m.name == "chat" and m.team == "nlp"
    a = m.spec.autoscale
    assert (a.stable_s, a.panic_s, a.scale_down_delay_s) == (60.0, 6.0, 300.0)
    assert m.spec.replicas.max == 16 and m.spec.spread.regions == 2
    assert m.spec.priority > 0  # above batch jobs of the default priority


def test_a_replica_is_a_one_slice_job_with_the_services_labels() -> None:
    m = parse_service_manifest(EXAMPLE)
    job = replica_job(m, 3, job_name="chat-r3")
    assert job.spec.slices == 1 and job.spec.gpus_per_slice == 1
    assert job.metadata.labels["data-residency"] == "eu"  # residency applies to replicas
    assert job.metadata.labels[SERVICE_LABEL] == "chat"
    assert job.metadata.labels[REPLICA_LABEL] == "3"
    assert job.spec.env[SERVICE_ENV] == "chat"
    assert job.spec.priority == m.spec.priority


@pytest.mark.parametrize(
    ("patch", "where", "why"),
    [
        ("  replicas: {min: 5, max: 2}", "spec.replicas", "above max"),
        ("  replicas: {min: 0, max: 2}", "spec", "scaleToZero"),
        ("  readinessPath: healthz", "spec.readinessPath", "absolute"),
        ("  autoscale: {panicWindow: 90s}", "spec.autoscale", "panicWindow"),
        ("  autoscale: {targetConcurrency: 0}", "spec.autoscale.targetConcurrency", "greater"),
        ("  autoscale: {stableWindow: forever}", "spec.autoscale.stableWindow", "duration"),
        ("  autoscale: {kvCacheUtilization: 1.5}", "spec.autoscale.kvCacheUtilization", "1"),
        ("  spread: {regions: 0}", "spec.spread.regions", "greater"),
        ("  replica: 3", "spec.replica", "unknown field"),
    ],
)
def test_a_bad_field_is_named_with_the_reason(patch: str, where: str, why: str) -> None:
    text = (
        "apiVersion: orrery/v1\nkind: InferenceService\nmetadata: {name: s}\nspec:\n"
        "  command: [python, serve.py]\n" + patch + "\n"
    )
    with pytest.raises(ManifestError) as err:
        parse_service_manifest(text)
    problems = dict(err.value.problems)
    assert where in problems, problems
    assert why in problems[where], problems


def test_a_job_manifest_is_refused_naming_the_kind() -> None:
    text = "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: s}\nspec: {command: [x]}\n"
    with pytest.raises(ManifestError, match="kind: expected InferenceService"):
        parse_service_manifest(text)


def test_a_changed_command_changes_the_template_and_a_changed_scale_does_not() -> None:
    m = parse_service_manifest(EXAMPLE)
    other = parse_service_manifest(EXAMPLE.replace("serve.py", "serve2.py"))
    rescaled = parse_service_manifest(EXAMPLE.replace("max: 16", "max: 8"))
    assert m.spec.template_hash() != other.spec.template_hash()
    assert m.spec.template_hash() == rescaled.spec.template_hash()
