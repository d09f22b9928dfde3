"""Policies end to end: three spokes in three regions, a data-residency job that waits for
its region (saying why) while the others idle, a budget-breaking job refused with the policy
named, and usage that matches the attempts' real durations × price to the cent."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from e2e.conftest import final, wait_for
from orrery.errors import Forbidden
from orrery.federation import SpokeSpec

pytestmark = pytest.mark.e2e

POLICIES = """
apiVersion: orrery/v1
kind: Placement
metadata: {name: eu-residency}
spec:
  match: {labels: {data-residency: eu}}
  require: {clusterLabels: {region: "eu-*"}}
---
apiVersion: orrery/v1
kind: Cost
metadata: {name: prices}
spec:
  prices:
    - {cluster: eu-west, gpuType: H100, perGpuHour: 3.60}
    - {cluster: us-east, gpuType: H100, perGpuHour: 2.00}
    - {cluster: ap-south, gpuType: H100, perGpuHour: 1.00}
  budgets:
    - {team: nlp, period: month, limit: 10, action: deny}
"""

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def job(
    name: str,
    *,
    labels: dict[str, str],
    gpus: int = 4,
    runtime: str = "1h",
    command: list[str] = SLEEP,
) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "gpusPerSlice": gpus,
                "gpuType": "H100",
                "maxRuntime": runtime,
                "command": command,
            },
        }
    )


def test_residency_budget_and_usage(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "fleet.yaml").write_text(POLICIES)
    fed = federation(
        [
            SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4),
            SpokeSpec("us-east", "us-east-1", "H100", 1, 4),
            SpokeSpec("ap-south", "ap-south-1", "H100", 1, 4),
        ],
        policies=folder,
    )
    with fed.client() as c:
        # eu-west is full with one EU job ...
        first = c.submit(job("eu-one", labels={"data-residency": "eu", "team": "search"}))
        j = wait_for(c, first.id, lambda j: j.status.phase == "Running", 20, "eu-one running")
        assert j.status.slices[0].cluster == "eu-west"
        # ... so the next EU job waits, though us-east and ap-south are idle, and says why.
        second = c.submit(job("eu-two", labels={"data-residency": "eu", "team": "search"}))
        j = wait_for(
            c,
            second.id,
            lambda j: j.status.waiting is not None and len(j.status.waiting.clusters) == 3,
            20,
            "a per-cluster reason",
        )
        why = j.status.waiting
        assert why is not None
        assert "placement/eu-residency" in why.clusters["us-east"]
        assert "placement/eu-residency" in why.clusters["ap-south"]
        assert why.clusters["eu-west"].startswith("0 of 1 slices fit")
        assert {x.name: x.running_slices for x in c.clusters()}["us-east"] == 0

        # A job whose cheapest placement (4 GPUs × 3 h × $1.00 = $12) breaks nlp's $10 budget.
        with pytest.raises(Forbidden) as refused:
            c.submit(job("pricey", labels={"team": "nlp"}, runtime="3h"))
        assert "prices" in refused.value.message and "budget" in refused.value.message
        assert "pricey" not in [x.metadata["name"] for x in c.jobs()]
        audit = c.audit()
        assert any(a["decision"] == "denied" and "prices" in " ".join(a["policies"]) for a in audit)

        # Usage: a short job on a priced cluster; cost = attempts' durations × GPUs × price.
        short = c.submit(
            job(
                "short",
                labels={"team": "vision"},
                runtime="10m",
                command=[sys.executable, "-c", "import time; time.sleep(1.5)"],
            )
        )
        done = final(c, short.id, timeout=30)
        assert done.status.phase == "Succeeded"
        attempts = c.attempts(short.id)
        price = {"us-east": 2.00, "ap-south": 1.00, "eu-west": 3.60}
        expected = sum(
            (a.ended_at - a.started_at) * len(a.gpus) / 3600 * price[a.cluster]
            for a in attempts
            if a.started_at and a.ended_at
        )
        usage = c.usage(team="vision")
        line = next(x for x in usage["jobs"] if x["job"] == short.id)
        assert round(line["cost"], 2) == round(expected, 2)
        assert (
            abs(
                line["gpuSeconds"]
                - sum((a.ended_at or 0) - (a.started_at or 0) for a in attempts) * 4
            )
            < 0.01
        )
        assert usage["teams"]["vision"]["cost"] == pytest.approx(expected, abs=0.005)

        # When eu-west frees up, the waiting EU job runs there.
        c.cancel(first.id)
        j = wait_for(c, second.id, lambda j: j.status.phase == "Running", 20, "eu-two running")
        assert j.status.slices[0].cluster == "eu-west"
        policies = c.policies()
        assert [e["name"] for e in policies["entries"]] == ["eu-residency", "prices"]
        c.cancel(second.id)


def test_sighup_reloads_and_a_broken_file_keeps_the_old_set(federation, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import time

    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "a.yaml").write_text(POLICIES)
    fed = federation([SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4)], policies=folder)
    assert fed.hub is not None and fed.api_url is not None
    with fed.client() as c:
        before = c.policies()["digest"]
        (folder / "a.yaml").write_text(POLICIES.replace("limit: 10,", "limit: 20,"))
        fed.hub.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while c.policies()["digest"] == before:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.05)
        good = c.policies()["digest"]
        (folder / "a.yaml").write_text("apiVersion: orrery/v1\nkind: Cost\n  broken: [\n")
        fed.hub.send_signal(signal.SIGHUP)
        while not any(a["kind"] == "reload" and a["decision"] == "refused" for a in c.audit()):
            assert time.monotonic() < deadline + 10, "the refused reload was not audited"
            time.sleep(0.05)
        assert c.policies()["digest"] == good
        # The usage command prints the teams (none ran anything yet) without error.
        p = subprocess.run([sys.executable, "-m", "orrery.cli.main", "usage", "--hub", fed.api_url,
                            "--since", "7d", "--token", fed.admin_token], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "By team (last 7d)" in p.stdout
