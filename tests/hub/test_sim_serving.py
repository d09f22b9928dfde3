"""The serving simulator: the hub's autoscaler (``serving.autoscale.desired``, unchanged)
replayed on request-rate traces against a fixed count and a CPU-style rule. Traces are
hand-made (known answers) or the seeded synthetic one; every figure asserted is
deterministic for its seed."""

from __future__ import annotations

import json
from array import array
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from orrery.service_manifest import Autoscale, Replicas
from orrery_hub.sim.cli import command
from orrery_hub.sim.rates import RateTrace, arrivals, read_rates, synthetic_day
from orrery_hub.sim.scalers import Fixed, Kpa, Utilisation
from orrery_hub.sim.serving import Model, replay
from orrery_hub.sim.trace import TraceError

MODEL = Model()  # 0.5 s a request, 10 slots a replica, 30 s cold start
BOUNDS = Replicas(min=1, max=16)


def auto(**kw: object) -> Autoscale:
    base: dict[str, object] = {"targetConcurrency": 7, "stableWindow": "60s",
                               "panicWindow": "6s", "scaleDownDelay": "300s"}
    return Autoscale.model_validate({**base, **kw})


def steps(*segments: tuple[float, int]) -> RateTrace:
    """(rps, seconds) segments one after the other."""
    rps = array("d")
    for rate, seconds in segments:
        rps.extend([rate] * seconds)
    return RateTrace(rps=rps, source="hand-made")


def test_the_synthetic_trace_is_seeded() -> None:
    a = synthetic_day(seed=3, seconds=7200, start_s=12 * 3600, bursts_per_day=48)
    b = synthetic_day(seed=3, seconds=7200, start_s=12 * 3600, bursts_per_day=48)
    c = synthetic_day(seed=4, seconds=7200, start_s=12 * 3600, bursts_per_day=48)
    assert a.rps == b.rps and a.bursts == b.bursts
    assert a.rps != c.rps
    assert arrivals(a, 0.1, 3) == arrivals(b, 0.1, 3) != arrivals(a, 0.1, 4)
    assert a.bursts, "48 a day over two hours: some bursts"


def test_the_synthetic_day_is_diurnal() -> None:
    day = synthetic_day(seed=1, bursts_per_day=0)
    night = sum(day.rps[3 * 3600:5 * 3600]) / 7200
    afternoon = sum(day.rps[15 * 3600:17 * 3600]) / 7200
    assert night < 0.2 * 100 < 0.8 * 100 < afternoon  # trough 10%, peak 100 rps (+-15%)


def test_every_request_is_served_or_dropped() -> None:
    tr = synthetic_day(seed=2, seconds=3 * 3600, start_s=13 * 3600, bursts_per_day=24)
    arr = arrivals(tr, MODEL.step_s, 2)
    for scaler in (Fixed(2), Kpa(auto(), BOUNDS), Utilisation(BOUNDS)):
        r = replay(arr, MODEL, scaler)
        assert r.served + r.dropped == sum(arr), scaler.name


def test_enough_fixed_replicas_serve_everything_at_the_service_time() -> None:
    arr = arrivals(steps((50.0, 600)), MODEL.step_s, 1)  # 25 in flight; 40 slots
    r = replay(arr, MODEL, Fixed(4))
    assert r.dropped == 0
    assert r.latency(0.99) == pytest.approx(MODEL.service_time_s)
    assert r.replica_seconds == pytest.approx(4 * 600)


def test_an_overloaded_replica_queues_then_refuses() -> None:
    arr = arrivals(steps((100.0, 300)), MODEL.step_s, 1)  # 50 in flight for 10 slots
    r = replay(arr, MODEL, Fixed(1))
    assert r.refused > 0.5 * sum(arr)
    # The 20 queued wait 1 s before a slot frees: served requests wait at most that.
    lat = r.latency(0.99)
    assert lat is not None and 1.0 < lat <= 1.0 + MODEL.service_time_s + 0.2


def test_kpa_uses_far_fewer_replica_hours_than_fixed_max_with_p95_bounded() -> None:
    tr = synthetic_day(seed=1, seconds=6 * 3600, start_s=12 * 3600, bursts_per_day=16)
    arr = arrivals(tr, MODEL.step_s, 1)
    fixed = replay(arr, MODEL, Fixed(BOUNDS.max))
    kpa = replay(arr, MODEL, Kpa(auto(), BOUNDS))
    assert fixed.dropped == 0
    assert kpa.replica_seconds < 0.6 * fixed.replica_seconds
    p95 = kpa.latency(0.95)
    assert p95 is not None and p95 <= 2 * MODEL.service_time_s
    assert kpa.dropped < 0.02 * sum(arr)


def test_kpa_panics_and_drops_fewer_than_the_cpu_rule_under_a_burst() -> None:
    # 20 rps for 15 min (2 replicas), then 150 rps for 3 min, then back.
    arr = arrivals(steps((20.0, 900), (150.0, 180), (20.0, 600)), MODEL.step_s, 7)
    k = Kpa(auto(), BOUNDS)
    kpa = replay(arr, MODEL, k)
    cpu = replay(arr, MODEL, Utilisation(BOUNDS))
    assert k.reasons.get("panic", 0) > 0
    assert cpu.dropped > 0
    assert kpa.dropped < 0.7 * cpu.dropped
    assert max(kpa.replicas) >= 11  # 150 rps x 0.5 s / 7 per replica


def test_the_seeded_day_kpa_drops_fewer_than_cpu_and_stays_under_fixed_hours() -> None:
    """The figures the README quotes come from the full day (benchmarks/
    bench_serving_sim.py); this is six hours of the same kind, seed 1."""
    tr = synthetic_day(seed=1, seconds=6 * 3600, start_s=12 * 3600, bursts_per_day=16)
    arr = arrivals(tr, MODEL.step_s, 1)
    kpa = replay(arr, MODEL, Kpa(auto(), BOUNDS))
    cpu = replay(arr, MODEL, Utilisation(BOUNDS))
    assert kpa.dropped < cpu.dropped


def test_scale_to_zero_holds_the_first_requests_through_the_cold_start() -> None:
    # A cold start shorter than the gateway's hold (30 s): a longer one drops the first.
    model = Model(cold_start_s=20.0)
    arr = arrivals(steps((5.0, 300), (0.0, 1200), (5.0, 300)), model.step_s, 1)
    k = Kpa(auto(scaleToZero=True), Replicas(min=0, max=4))
    r = replay(arr, model, k)
    assert 0 in r.replicas  # the quiet 20 minutes went to zero
    assert r.replicas[-1] >= 1  # and came back
    assert r.dropped == 0  # the gateway held them (about 100 < --max-held 1000)
    worst = r.latency(1.0)
    assert worst is not None and worst >= model.cold_start_s  # held through a cold start
    slow = replay(arr, MODEL, Kpa(auto(scaleToZero=True), Replicas(min=0, max=4)))
    assert slow.timed_out > 0  # 30 s cold start + the tick: the first ones waited > 30 s
    at_zero = r.replicas.count(0) * model.sample_s
    # The quiet 20 minutes less the 60 s stable window and 300 s scale-down delay.
    assert 1200 - 360 - 2 * model.sample_s <= at_zero <= 1200 - 360 + 2 * model.sample_s


def test_a_rate_csv_is_read_piecewise(tmp_path: Path) -> None:
    p = tmp_path / "rates.csv"
    p.write_text("t,rps\n0,10\n5,0\n8,2.5\n")
    tr = read_rates(p)
    assert list(tr.rps) == [10.0] * 5 + [0.0] * 3 + [2.5]


@pytest.mark.parametrize(("body", "why"), [
    ("t,rps\n0,1\n0,2\n", "line 3: t must increase"),
    ("0,1,2\n", "line 1: want two columns"),
    ("0,1\n1,x\n", "line 2: t and rps must be numbers"),
    ("0,-1\n", "line 1: t and rps must be finite and not negative"),
    ("t,rps\n", "no rows"),
])
def test_a_bad_rate_csv_names_the_line(tmp_path: Path, body: str, why: str) -> None:
    p = tmp_path / "rates.csv"
    p.write_text(body)
    with pytest.raises(TraceError, match=why):
        read_rates(p)


SERVICE = """apiVersion: orrery/v1
kind: InferenceService
metadata: {name: chat}
spec:
  replicas: {min: 1, max: 8}
  autoscale: {targetConcurrency: 7, scaleDownDelay: 60s}
  command: [python, serve.py]
"""


def cli() -> typer.Typer:
    app = typer.Typer()
    command(app)
    app.command("other")(lambda: None)  # two commands: typer keeps the names
    return app


def test_the_cli_compares_the_three_rules(tmp_path: Path) -> None:
    svc = tmp_path / "svc.yaml"
    svc.write_text(SERVICE)
    rates = tmp_path / "rates.csv"
    rates.write_text("t,rps\n0,20\n600,120\n780,20\n1200,20\n")
    res = CliRunner().invoke(cli(), ["sim", "--serving", str(svc), str(rates),
                                     "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert [ln.split()[0] for ln in lines[2:5]] == ["fixed-8", "kpa", "cpu"]
    body = json.loads((tmp_path / "out" / "serving.json").read_text())
    assert body["trace"] == str(rates) and body["seconds"] == 1201
    assert [p["policy"] for p in body["policies"]] == ["fixed-8", "kpa", "cpu"]
    assert body["policies"][0]["replica_hours"] == pytest.approx(8 * 1201 / 3600, abs=0.01)


@pytest.mark.parametrize(("args", "why"), [
    (["--hours", "0"], "--hours must be in"),
    (["--slots", "0"], "slots must be at least 1"),
    (["--service-time", "-1"], "service_time_s must be positive"),
])
def test_the_cli_refuses_bad_settings(tmp_path: Path, args: list[str], why: str) -> None:
    svc = tmp_path / "svc.yaml"
    svc.write_text(SERVICE)
    res = CliRunner().invoke(cli(), ["sim", "--serving", str(svc), *args])
    assert res.exit_code == 2
    assert why in res.output


def test_the_cli_names_a_bad_service_field(tmp_path: Path) -> None:
    svc = tmp_path / "svc.yaml"
    svc.write_text(SERVICE.replace("max: 8", "max: 0"))
    res = CliRunner().invoke(cli(), ["sim", "--serving", str(svc)])
    assert res.exit_code == 2
    assert "replicas" in res.output and "Traceback" not in res.output
