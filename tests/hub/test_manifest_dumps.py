"""``store.manifests.ManifestDumps``: each manifest's stored dump and text are what
``model_dump`` and ``json.dumps`` make of it, though specs alike are dumped once."""

from __future__ import annotations

import json
from typing import Any

from orrery.manifest import manifest_from_data
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
