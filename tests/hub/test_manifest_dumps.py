"""``store.manifests.ManifestDumps``: each manifest's stored dump and text are what
``model_dump`` and ``json.dumps`` make of it, though specs alike are dumped once."""

from __future__ import annotations

import json
from typing import Any

from orrery.errors import Forbidden, OrreryError
from orrery.manifest import manifest_from_data
from orrery.resources import JobBatch, JobBatchItem
from orrery_hub.admission.answer import Admitted
from orrery_hub.api.batch import batch_json
from orrery_hub.api.problems import problem_of, status_of
from orrery_hub.store import jobs as jobstore
from orrery_hub.store.manifests import ManifestDumps


def _m(name: str, labels: dict[str, str] | None = None, **spec: Any) -> Any:
    data = {
        "apiVersion": "orrery/v1",
        "kind": "TrainingJob",
        "metadata": {"name": name, **({"labels": labels} if labels is not None else {})},
        "spec": {"command": ["python", "train.py"], **spec},
    }
    return manifest_from_data(data)


SPECS: list[dict[str, Any]] = [
    {},
    {"env": {"A": "1", "B": "2"}},
    {"env": {"B": "2", "A": "1"}},  # equal as a dict to the one before; not as stored
    {"env": {"S": {"secretRef": "tok", "key": "k"}, "P": "é ☃"}},
    {"maxRuntime": 3600},
    {"maxRuntime": 3600.5},
    {"maxRuntime": "1h"},
    {"gpuType": ["H100", "A100"], "slices": 4, "gpusPerSlice": 8, "priority": -3},
    {"gpuType": "H100", "image": "img:1", "checkpointDir": "s3://b/c", "queue": "q"},
    {"datasets": [{"name": "d", "mountPath": "/data"}], "restartPolicy": "Slice"},
]


def test_dumps_are_model_dump_and_json_dumps_whatever_came_before() -> None:
    dumps = ManifestDumps()
    labels = [None, {}, {"team": "nlp", "x": "ü"}]
    for round_ in range(2):  # the second time every spec is remembered
        for i, spec in enumerate(SPECS):
            m = _m(f"j{round_}-{i}", labels[i % 3], **spec)
            data, text = dumps.dump(m)
            expected = m.model_dump(mode="json", by_alias=True, exclude_none=True)
            assert data == expected
            assert text == json.dumps(expected)
            assert json.loads(text) == expected


def test_an_admitted_jobs_answer_parses_to_what_its_model_dumps() -> None:
    """``admission.answer``: the batch answer is composed from the row's texts, not dumped
    by the model; parsed, each is the model's own JSON (held or not, any slices, labels,
    names and paths that need escaping), and so is a whole batch with refusals in it."""
    dumps = ManifestDumps()
    reasons = [None, "held: budget 'ml' is spent (100 of 100 GPU-hours)", "held: ☃ \"q\"\n"]
    outcomes: list[Admitted | OrreryError] = []
    for i, spec in enumerate(SPECS * 2):
        m = _m(f"j-{i}", [None, {}, {"team": "nlp", "x": "ü"}][i % 3], **spec)
        new = jobstore.new_job(
            m,
            job_id=f"j-{i}-0a1b2c",
            now=1_796_000_000.0 + i / 7,
            checkpoint_prefix='/ck/é "x"/',
            dumps=dumps,
            reason=reasons[i % 3],
        )
        admitted = Admitted(new)
        assert json.loads(admitted.json()) == json.loads(
            jobstore.view_new(new).model_dump_json(by_alias=True)
        )
        outcomes.append(admitted)
        if i % 4 == 0:
            outcomes.append(Forbidden(f"policy p{i} refuses it"))
    expected = JobBatch(
        items=[
            JobBatchItem(status=201, job=o.public())
            if isinstance(o, Admitted)
            else JobBatchItem(status=status_of(o), error=problem_of(o))
            for o in outcomes
        ]
    )
    assert json.loads(batch_json(outcomes)) == json.loads(expected.model_dump_json(by_alias=True))
