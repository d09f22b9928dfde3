"""``orrery sim --serving SERVICE.yaml [RATES.csv]``: the service's autoscaler replayed on
a request-rate trace (a seeded synthetic day when none is given) against a fixed count of
``replicas.max`` and a CPU-style utilisation rule (``sim.scalers``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orrery.service_manifest import parse_service_manifest
from orrery_hub.sim.rates import RateTrace, arrivals, read_rates, synthetic_day
from orrery_hub.sim.scalers import Fixed, Kpa, Scaler, Utilisation
from orrery_hub.sim.serving import Model, compare
from orrery_hub.sim.trace import TraceError

MAX_HOURS = 24 * 31


def run_serving(
    service: Path,
    rates: Path | None,
    model: Model,
    *,
    seed: int = 1,
    hours: float = 24.0,
    out: Path | None = None,
) -> tuple[RateTrace, list[dict[str, Any]]]:
    """Every rule on the same arrivals; writes ``serving.json`` under ``out``."""
    svc = parse_service_manifest(service.read_text(), source=str(service))
    if not 0 < hours <= MAX_HOURS:
        raise TraceError(f"--hours must be in (0, {MAX_HOURS}], got {hours:g}")
    trace = read_rates(rates) if rates is not None else synthetic_day(
        seed=seed, seconds=int(hours * 3600))
    spec = svc.spec
    scalers: list[Scaler] = [
        Fixed(spec.replicas.max),
        Kpa(spec.autoscale, spec.replicas),
        Utilisation(spec.replicas),
    ]
    summaries = compare(arrivals(trace, model.step_s, seed), model, scalers)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        body = {"trace": trace.source, "seconds": trace.seconds, "seed": seed,
                "service": svc.name, "model": model_dict(model), "policies": summaries}
        (out / "serving.json").write_text(json.dumps(body, indent=2) + "\n")
    return trace, summaries


def model_dict(model: Model) -> dict[str, float]:
    return {k: getattr(model, k) for k in model.__dataclass_fields__}
