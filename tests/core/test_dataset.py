"""The Dataset manifest and the job's `spec.datasets`: what parses, what is refused and why,
and the shard split every slice's ORRERY_DATA_SHARDS comes from."""

from __future__ import annotations

import pytest

from orrery.dataset import env_name, parse_dataset, parse_size, shard_range
from orrery.errors import ManifestError
from orrery.manifest import parse_manifest

C4 = """
apiVersion: orrery/v1
kind: Dataset
metadata: {name: c4-en, labels: {data-residency: eu}}
spec:
  size: 2.1TiB
  format: jsonl
  shards: 1024
  locations:
    - {uri: "s3://corpora/c4/en", endpoint: "http://10.0.0.9:8333", region: eu-west-1}
    - {cluster: eu-west, path: /mnt/c4}
"""


def test_a_dataset_parses_with_its_size_in_bytes_and_locations() -> None:
    d = parse_dataset(C4)
    assert d.name == "c4-en" and d.metadata.labels == {"data-residency": "eu"}
    assert d.spec.size_bytes == int(2.1 * 2**40)
    assert d.spec.shards == 1024 and d.spec.version == "1"
    s3 = d.spec.locations[0]
    assert (s3.bucket, s3.prefix, s3.region) == ("corpora", "c4/en", "eu-west-1")
    assert d.spec.locations[1].cluster == "eu-west"


@pytest.mark.parametrize(
    ("change", "where", "why"),
    [
        ("size: lots", "spec.size", "not a size"),
        ("shards: 0", "spec.shards", "greater than or equal to 1"),
        ("colour: blue", "spec.colour", "unknown field"),
        ("locations: []", "spec.locations", "at least 1"),
        ("locations: [{uri: 'http://x/y', region: r}]", "spec.locations[0].uri", "s3://"),
        ("locations: [{uri: 's3://abc/y'}]", "spec.locations[0]", "needs its region"),
        ("locations: [{cluster: a}]", "spec.locations[0]", "needs its path"),
        ("locations: [{uri: 's3://abc/y', region: r, cluster: a}]", "spec.locations[0]", "either"),
    ],
)
def test_a_bad_dataset_is_refused_naming_the_field(change: str, where: str, why: str) -> None:
    key = change.split(":")[0]
    lines = [ln for ln in C4.splitlines() if not ln.strip().startswith(("- ", key + ":"))]
    if key == "locations":
        lines = [ln for ln in lines if "locations" not in ln]
    text = "\n".join(lines) + "\n  " + change + "\n"
    if key != "locations":
        text += "  locations: [{cluster: a, path: /x}]\n"
    with pytest.raises(ManifestError) as err:
        parse_dataset(text)
    problems = dict(err.value.problems)
    assert where in problems, problems
    assert why in problems[where]


@pytest.mark.parametrize(
    ("text", "n"),
    [("1024", 1024), ("2KiB", 2048), ("1.5GB", 1_500_000_000), ("3 TiB", 3 * 2**40), (7, 7)],
)
def test_sizes(text: str | int, n: int) -> None:
    assert parse_size(text) == n


def test_shards_split_evenly_with_none_shared_and_none_left_out() -> None:
    for shards in (1, 7, 1024):
        for slices in (1, 3, 8):
            ranges = [shard_range(shards, slices, i) for i in range(slices)]
            covered = [s for a, b in ranges for s in range(a, b)]
            assert covered == list(range(shards))
            assert max(b - a for a, b in ranges) - min(b - a for a, b in ranges) <= 1
    assert env_name("c4-en") == "ORRERY_DATA_C4_EN"


JOB = """
apiVersion: orrery/v1
kind: TrainingJob
metadata: {name: t}
spec:
  command: [python, train.py]
  datasets: %s
"""


def test_a_job_lists_its_datasets_with_mount_paths() -> None:
    m = parse_manifest(JOB % "[{name: c4-en, mountPath: /data/c4}]")
    assert m.spec.datasets is not None
    assert (m.spec.datasets[0].name, m.spec.datasets[0].mount_path) == ("c4-en", "/data/c4")
    assert parse_manifest(JOB % "null").spec.datasets is None


@pytest.mark.parametrize(
    ("value", "where", "why"),
    [
        ("[{name: c4-en, mountPath: data}]", "spec.datasets[0].mountPath", "absolute"),
        ("[{name: c4-en, mountPath: /a/../b}]", "spec.datasets[0].mountPath", "absolute"),
        ("[{name: C4, mountPath: /d}]", "spec.datasets[0].name", ""),
        ("[{name: a, mountPath: /d}, {name: a, mountPath: /e}]", "spec.datasets", "twice"),
        ("[{name: a}]", "spec.datasets[0].mountPath", "required"),
    ],
)
def test_bad_job_datasets_are_refused(value: str, where: str, why: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_manifest(JOB % value)
    problems = dict(err.value.problems)
    assert where in problems, problems
    assert why.lower() in problems[where].lower()
