"""Datasets and links in the simulator: jobs reading a dataset run near it when they can,
and the GPU-hours spent holding GPUs while data stages are reported."""

from __future__ import annotations

from pathlib import Path

from orrery_hub.sim.engine import simulate
from orrery_hub.sim.fleet import load_fleet
from orrery_hub.sim.report import summary
from orrery_hub.sim.trace import read_pods
from tests.hub.test_sim import fleet_file, write_trace

NODES = ["n1,96000,512000,8,V100M16", "n2,96000,512000,8,G2"]
ROWS = [f"j{i},4,1000,LS,{i * 10},{i * 10},{i * 10 + 3600}" for i in range(8)]


def run(tmp: Path, **data: object) -> dict[str, object]:
    trace = write_trace(tmp, ROWS, NODES)
    fleet = load_fleet(
        fleet_file(
            tmp,
            clusters=[{"name": "eu", "models": ["V100M16", "G2"]}],
            **data,
        ),
        trace,
    )
    return summary(simulate(read_pods(trace).jobs, fleet, "fifo"))


def test_jobs_reading_a_remote_dataset_wait_for_it_and_it_is_reported(tmp_path: Path) -> None:
    plain = run(tmp_path)
    assert "data_wait_gpu_hours" not in plain
    # All jobs read 1 TB held in another region over a 1 Gbps link: the first job on the
    # cluster stages it (~2.2 h x 4 GPUs), the others find it cached.
    got = run(
        tmp_path,
        regions={"eu": "eu-west-1"},
        datasets=[{"name": "corpus", "size": "1TB", "region": "us-east-1", "readers": 1.0}],
        links=[{"from": "us-*", "to": "eu-*", "gbps": 1}],
    )
    assert got["jobs_finished"] == plain["jobs_finished"] == 8
    assert got["data_wait_gpu_hours"] == round(8000 / 3600 * 4, 3)
    assert float(got["makespan"]) > float(plain["makespan"])  # type: ignore[arg-type]
