"""The CLI as a user meets it: one clear line and a non-zero exit for every mistake, never a
traceback; and the happy path against a real hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orrery.natsserver import free_port

ORRERY = [sys.executable, "-m", "orrery.cli.main"]


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORRERY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        # No config file of contexts from the machine: each test says what it uses.
        env={**os.environ, "COLUMNS": "200", "ORRERY_CONFIG": os.devnull, **(env or {})},
    )


def assert_clean_failure(p: subprocess.CompletedProcess[str], words: str) -> None:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr + p.stdout
    assert words in p.stderr, p.stderr


def test_missing_file(tmp_path: Path) -> None:
    assert_clean_failure(run("submit", str(tmp_path / "nope.yaml")), "no such file")


def test_invalid_manifest_names_each_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: x}\n"
        "spec: {slices: 0, gpusPerSlice: many, command: [a]}\n"
    )
    p = run("submit", str(f))
    assert_clean_failure(p, "spec.slices")
    assert "spec.gpusPerSlice" in p.stderr
    assert p.returncode == 2


def test_unreachable_hub(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert_clean_failure(run("jobs", "--hub", url), "cannot reach the hub")
    assert_clean_failure(run("clusters", env={"ORRERY_HUB": url}), "cannot reach the hub")


def test_unknown_command_and_bad_flag() -> None:
    p = run("frobnicate")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = run("up", "--spokes", "0")
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_hub_refuses_unsafe_timing_in_one_line(tmp_path: Path) -> None:
    p = run("hub", "--lease", "20", "--failover-timeout", "15", "--state", str(tmp_path))
    assert_clean_failure(p, "--failover-timeout")


def test_spoke_with_a_bad_inventory(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yaml"
    inv.write_text("nodes:\n  - {name: a, gpus: 99}\n")
    p = run(
        "spoke",
        "--nats",
        "nats://127.0.0.1:1",
        "--cluster",
        "c1",
        "--inventory",
        str(inv),
        "--state",
        str(tmp_path / "s"),
        "--insecure",  # no enrolled identity here: the inventory is what is checked
        "--allow-root-slices",
    )
    assert_clean_failure(p, "nodes[0].gpus")
    p = run(
        "spoke",
        "--nats",
        "nats://127.0.0.1:1",
        "--cluster",
        "Bad_Name",
        "--inventory",
        str(inv),
        "--state",
        str(tmp_path / "s"),
    )
    assert_clean_failure(p, "--cluster")


@pytest.mark.e2e
def test_submit_wait_jobs_cancel_clusters_against_a_real_federation(tmp_path: Path) -> None:
    from e2e.conftest import TIMINGS

    from orrery.federation import Federation, SpokeSpec

    fed = Federation(
        tmp_path / "fed", spokes=[SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4)], timings=TIMINGS
    )
    with fed:
        assert fed.api_url is not None
        env = {"ORRERY_HUB": fed.api_url, "ORRERY_TOKEN": fed.admin_token}
        ok = tmp_path / "ok.yaml"
        ok.write_text(
            "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: ok}\n"
            f"spec: {{gpusPerSlice: 1, command: [{sys.executable!r}, -c, 'print(1)']}}\n"
        )
        p = run("submit", str(ok), "--wait", env=env)
        assert p.returncode == 0, p.stderr
        assert "Succeeded" in p.stdout
        job_id = p.stdout.split()[1]
        p = run("jobs", job_id, env=env)
        assert p.returncode == 0 and "Succeeded" in p.stdout and "eu-west" in p.stdout
        p = run("jobs", env=env)
        assert job_id in p.stdout
        p = run("clusters", env=env)
        assert "eu-west" in p.stdout and "Ready" in p.stdout and "H100" in p.stdout
        assert_clean_failure(run("cancel", job_id, env=env), "already Succeeded")
        assert_clean_failure(run("jobs", "no-such-job", env=env), "not found")
        big = tmp_path / "big.yaml"
        big.write_text(
            "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: big}\n"
            "spec: {gpusPerSlice: 64, gpuType: H100, command: [x]}\n"
        )
        p = run("submit", str(big), env=env)
        big_id = p.stdout.split()[1]
        from e2e.conftest import wait_for

        with fed.client() as c:
            wait_for(c, big_id, lambda j: j.status.reason is not None, 10, "a reason")
        p = run("jobs", big_id, env=env)
        assert "needs 1 slice × 64 H100" in p.stdout
        assert "eu-west" in p.stdout  # the per-cluster table
        p = run("cancel", big_id, env=env)
        assert p.returncode == 0 and "Cancelled" in p.stdout
