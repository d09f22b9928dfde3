"""The CLI a kubectl, squeue or sky user expects (issue 17 item 8, issue 16's rough edges):
``-o wide|json|yaml|name``, filters, jobs by name, cancel several or by selector,
``--version``, elapsed and end columns, the events note, IDs never cut on 80 columns,
unknown fields that say which field they meant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orrery.cli.columns import Column, render
from orrery.cli.select import JobFilter, parse_selector, phase_name
from orrery.errors import InvalidInput
from orrery.federation import Federation, SpokeSpec
from orrery.manifest import parse_manifest
from tests.clirunner import cli

ORRERY = [sys.executable, "-m", "orrery.cli.main"]


def run(
    *args: str, env: dict[str, str] | None = None, columns: int = 200, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORRERY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **os.environ,
            "COLUMNS": str(columns),
            "ORRERY_CONFIG": os.devnull,
            **(env or {}),
        },
    )


# ---- without a hub -------------------------------------------------------------------------


def test_an_id_is_never_cut_on_80_columns() -> None:
    """`orrery jobs` once printed `demo-train…`: the ID a user must type next."""
    long_id = "llama-finetune-with-a-rather-long-descriptive-name-3f2a1c"
    cols = [Column("ID"), Column("PHASE"), Column("QUEUE", drop=2), Column("AGE", drop=3),
            Column("WHY", drop=1, wrap=True)]
    row = [long_id, "Pending", "research", "5m",
           "needs 4 slices × 8 H100; largest fit: eu-west 1 slice(s), and more words here"]
    out = render(cols, [row], 80)
    assert long_id in out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "AGE" not in out  # dropped before anything is cut
    assert "…" not in out
    # Not a terminal: every column, whole.
    assert "AGE" in render(cols, [row], None)


def test_a_reason_wraps_rather_than_widening_the_table() -> None:
    cols = [Column("ID"), Column("WHY", wrap=True)]
    out = render(cols, [["j-1", "word " * 30]], 40)
    assert len(out.splitlines()) > 2 and all(len(x) <= 40 for x in out.splitlines())


def test_filters_and_selectors() -> None:
    assert phase_name("running") == "Running" and phase_name(" PENDING ") == "Pending"
    with pytest.raises(InvalidInput, match="--phase: 'runing' is not a phase"):
        phase_name("runing")
    assert parse_selector(["team=nlp,tier=a", "x==y"]) == {"team": "nlp", "tier": "a", "x": "y"}
    with pytest.raises(InvalidInput, match="-l/--label: 'team' is not KEY=VALUE"):
        parse_selector(["team"])
    f = JobFilter.of(name="llama-*", labels=["team=nlp"])
    assert f.query() == {"label": "team=nlp"}  # a glob is matched here, not by the hub


def test_version() -> None:
    p = run("--version")
    assert p.returncode == 0 and p.stdout.startswith("orrery "), p.stdout + p.stderr


def test_an_unknown_field_names_the_one_it_resembles(tmp_path: Path) -> None:
    f = tmp_path / "job.yaml"
    f.write_text(
        "apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {name: x, lables: {a: b}}\n"
        "spec: {gpuPerSlice: 8, command: [a], frobnicate: 1}\n"
    )
    p = run("submit", str(f))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "spec.gpuPerSlice: unknown field; did you mean 'gpusPerSlice'?" in p.stderr, p.stderr
    assert "metadata.lables: unknown field; did you mean 'labels'?" in p.stderr
    assert "spec.frobnicate: unknown field\n" in p.stderr  # nothing close: no guess
    # The API says the same (the hub parses with the same function).
    with pytest.raises(Exception, match="did you mean 'gpusPerSlice'"):
        parse_manifest(f.read_text())


def test_stderr_messages_are_not_wrapped_mid_sentence(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("a: [\n")
    p = run("submit", str(f), columns=60)
    line = next(x for x in p.stderr.splitlines() if "not valid YAML" in x)
    assert line.rstrip().endswith("'<stream end>'"), p.stderr


def test_cancel_needs_ids_or_a_selector() -> None:
    p = run("cancel", "--hub", "http://127.0.0.1:1")
    assert p.returncode == 2 and "give job IDs or names, or a selector" in p.stderr, p.stderr


# ---- against a real federation --------------------------------------------------------------


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    from e2e.conftest import TIMINGS

    tmp = tmp_path_factory.mktemp("kubectl")
    (tmp / "policies").mkdir()
    (tmp / "policies" / "cost.yaml").write_text(
        "apiVersion: orrery/v1\nkind: Cost\nmetadata: {name: prices}\n"
        "spec: {prices: [{cluster: eu-west, gpuType: H100, perGpuHour: 3.60}]}\n"
    )
    f = Federation(
        tmp / "fed",
        spokes=[SpokeSpec("eu-west", "eu-west-1", "H100", 1, 4),
                SpokeSpec("ap-south", "ap-south-1", "A100", 1, 2)],
        timings=TIMINGS,
        policies=tmp / "policies",
    )
    with f:
        yield f


def _env(fed: Federation) -> dict[str, str]:
    assert fed.api_url is not None
    return {"ORRERY_HUB": fed.api_url, "ORRERY_TOKEN": fed.admin_token}


def _manifest(tmp: Path, name: str, *, labels: str = "{}", queue: str = "default",
              gpus: int = 4, seconds: float = 600, gpu_type: str = "H100") -> Path:
    f = tmp / f"{name}.yaml"
    f.write_text(
        f"apiVersion: orrery/v1\nkind: TrainingJob\nmetadata: {{name: {name}, labels: {labels}}}\n"
        f"spec: {{queue: {queue}, gpusPerSlice: {gpus}, gpuType: {gpu_type}, command: "
        f"[{sys.executable!r}, -c, 'import time; time.sleep({seconds})']}}\n"
    )
    return f


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_lists_filter_and_print_in_every_format(fed: Federation, tmp_path: Path) -> None:
    from e2e.conftest import wait_for

    env = _env(fed)
    long = "a-job-with-a-long-name-that-a-user-must-be-able-to-copy-x"[:50]
    rc, out, err = cli("submit", str(_manifest(tmp_path, long, labels="{team: nlp, tier: gold}",
                                               queue="research")), "-o", "name", env=env)
    assert rc == 0, err
    runner = out.strip()
    with fed.client() as c:
        wait_for(c, runner, lambda j: j.status.phase == "Running", 60, "Running")
    ids = []
    for _ in range(2):  # two jobs of one name, waiting behind it
        rc, out, err = cli("submit", str(_manifest(tmp_path, "twin", labels="{team: cv}")),
                           "-o", "json", env=env)
        ids.append(json.loads(out)["id"])
    try:
        listed = {j["id"]: j for j in json.loads(cli("jobs", "-o", "json", env=env)[1])["items"]}
        assert {runner, *ids} <= set(listed)
        assert listed[runner]["status"]["phase"] == "Running"
        out = cli("jobs", "-o", "yaml", env=env)[1]
        assert {runner, *ids} <= {j["id"] for j in yaml.safe_load(out)["items"]}
        assert {runner, *ids} <= set(cli("jobs", "-o", "name", env=env)[1].split())
        head = cli("jobs", "-o", "wide", env=env)[1].splitlines()[0]
        assert all(c in head for c in ("NAME", "TEAM", "STARTED", "ENDED", "ELAPSED"))

        def names(*args: str) -> set[str]:
            rc, out, err = cli("jobs", "-o", "name", *args, env=env)
            assert rc == 0, err
            return set(out.split())

        assert runner in names("--phase", "running") and not set(ids) & names("--phase", "RUNNING")
        assert set(ids) <= names("--phase", "pending")
        assert names("--queue", "research") & {runner, *ids} == {runner}
        assert names("--team", "cv") & {runner, *ids} == set(ids)
        assert names("-l", "team=nlp,tier=gold") & {runner, *ids} == {runner}
        assert names("--name", "twi*") & {runner, *ids} == set(ids)

        # 80 columns: every ID whole, no line longer than the terminal.
        out = cli("jobs", env=env, columns=80)[1]
        assert all(i in out for i in (runner, *ids)), out
        assert all(len(x) <= 80 for x in out.splitlines()), out
        assert "ELAPSED" in out.splitlines()[0]

        # By name: unique works, ambiguous says which IDs.
        rc, out, err = cli("jobs", long, env=env)
        assert rc == 0 and runner in out and "elapsed" in out, err
        p = run("jobs", "twin", env=env)  # the console script: its one line and exit code
        assert p.returncode == 2 and "'twin' names 2 jobs" in p.stderr, p.stderr
        assert all(i in p.stderr for i in ids)
        assert json.loads(cli("jobs", runner, "-o", "json", env=env)[1])["id"] == runner

        # The events note: only the last N are shown, and it says so.
        out = cli("jobs", runner, "--events", "1", env=env)[1]
        assert "Events: the last 1 of " in out, out

        # Cancel by selector: the two twins, not the runner.
        rc, out, err = cli("cancel", "-l", "team=cv", env=env)
        assert rc == 0, err
        assert all(f"{i}: Cancelled" in out for i in ids) and runner not in out
        # Several at once: one unknown is reported, the other is cancelled, exit 1.
        p = run("cancel", "no-such-job", long, env=env)
        assert p.returncode == 1 and "no-such-job" in p.stderr, p.stderr
        assert f"{runner}: Cancelled" in p.stdout
        out = cli("jobs", runner, "-o", "json", env=env)[1]
        assert json.loads(out)["status"]["finishedAt"] is not None
        out = cli("jobs", "--phase", "cancelled", env=env)[1]
        ended = next(x for x in out.splitlines() if x.startswith(runner))
        assert ended.count(":") >= 2  # the ENDED column holds a time
    finally:
        with fed.client() as c:
            for j in c.jobs():
                if not j.final:
                    c.cancel(j.id)


@pytest.mark.e2e
def test_clusters_in_every_format(fed: Federation) -> None:
    env = _env(fed)
    out = cli("clusters", "-o", "json", env=env)[1]
    assert [c["name"] for c in json.loads(out)["items"]] == ["ap-south", "eu-west"]
    assert cli("clusters", "-o", "name", env=env)[1].split() == ["ap-south", "eu-west"]
    out = cli("clusters", "-o", "wide", env=env)[1]
    assert "EXECUTOR" in out and "LABELS" in out
    assert "teams" in json.loads(cli("usage", "-o", "json", env=env)[1])


def test_sim_errors_are_said_as_the_rest_of_the_cli_says_them(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    p = run("sim", str(missing), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and p.stderr.strip() == f"orrery: {missing}: no such file", p.stderr
    p = run("submit", str(tmp_path / "nope.yaml"))  # the same words elsewhere
    assert p.stderr.strip() == f"orrery: {tmp_path / 'nope.yaml'}: no such file"
    bad = tmp_path / "fleet.yaml"
    bad.write_text("clusters: [\n")
    trace = Path(__file__).parent / "data" / "openb_pod_list_gpuspec33.slice2000.csv"
    p = run("sim", str(trace), "--fleet", str(bad), "--out", str(tmp_path / "o"))
    assert p.returncode == 2 and "Errno" not in p.stderr and "Traceback" not in p.stderr
    assert f"orrery: {bad} refused:" in p.stderr and "not valid YAML at line 2" in p.stderr
    p = run("sim")
    assert p.returncode == 2 and "orrery: sim: give a TRACE" in p.stderr, p.stderr


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_usage_says_no_price_where_no_price_applies(fed: Federation, tmp_path: Path) -> None:
    """A cluster the Cost policies do not price shows "no price", never a cost of 0.00."""
    env = _env(fed)
    ids = {}
    for gpu_type in ("H100", "A100"):
        f = _manifest(tmp_path, f"paid-{gpu_type.lower()}", gpus=1, seconds=1.5,
                      gpu_type=gpu_type)
        rc, out, err = cli("submit", str(f), "--wait", env=env)
        assert rc == 0, out + err
        ids[gpu_type] = out.splitlines()[-1].split(":")[0]
    out = cli("usage", env=env)[1]
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert rows[ids["A100"]].rstrip().endswith("no price"), out
    priced = rows[ids["H100"]].split()[-1]
    assert float(priced) > 0, out  # 1 GPU x >= 1.5 s x 3.60 per hour
    data = json.loads(cli("usage", "-o", "json", env=env)[1])
    by_job = {j["job"]: j for j in data["jobs"]}
    assert by_job[ids["A100"]]["unpricedGpuSeconds"] == by_job[ids["A100"]]["gpuSeconds"] > 0
    assert by_job[ids["H100"]]["unpricedGpuSeconds"] == 0
