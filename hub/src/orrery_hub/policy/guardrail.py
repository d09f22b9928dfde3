"""Guardrails: limits on a job's size, GPU types and runtime, and GPU quotas per team/queue.

Precedence (also in ``policies/README.md``): every Guardrail whose ``match`` fits the job
applies, and each is checked on its own, so the tightest limit decides and a denial names
every guardrail the job breaks. ``allowedGpuTypes`` of several guardrails intersect. A job
that allows any GPU type (no ``gpuType``) is narrowed to the allowed types rather than
denied; a job that names only disallowed types is denied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from orrery.duration import format_duration
from orrery_hub.policy.facts import JobFacts, team_text
from orrery_hub.policy.policyset import GuardrailRule

Denial = tuple[str, str]  # (policy, reason), e.g. ("guardrail/nlp-limits", "asks for 96 GPUs…")


def _types(types: frozenset[str]) -> str:
    return ", ".join(sorted(types))


def allowed_gpu_types(
    job: JobFacts, rules: Sequence[GuardrailRule]
) -> tuple[frozenset[str] | None, list[str]]:
    """The GPU types the job may use after every guardrail, and the guardrails that narrowed
    them. An empty set means no type is left (the job is denied)."""
    types = job.gpu_types
    narrowed_by: list[str] = []
    for r in rules:
        if r.allowed_gpu_types is None:
            continue
        new = r.allowed_gpu_types if types is None else types & r.allowed_gpu_types
        if new != types:
            narrowed_by.append(r.ref)
        types = new
    return types, narrowed_by


def admission_denials(job: JobFacts, rules: Sequence[GuardrailRule]) -> list[Denial]:
    """Every guardrail the job breaks on its own, whatever else is running."""
    out: list[Denial] = []
    for r in rules:
        if r.max_gpus_per_job is not None and job.total_gpus > r.max_gpus_per_job:
            out.append((r.ref, f"asks for {job.total_gpus} GPUs; at most "
                               f"{r.max_gpus_per_job} per job"))
        if r.max_slices is not None and job.slices > r.max_slices:
            out.append((r.ref, f"asks for {job.slices} slices; at most {r.max_slices}"))
        if (
            r.allowed_gpu_types is not None
            and job.gpus_per_slice > 0
            and job.gpu_types is not None
            and not job.gpu_types & r.allowed_gpu_types
        ):
            out.append((r.ref, f"asks for {_types(job.gpu_types)} GPUs; allowed: "
                               f"{_types(r.allowed_gpu_types)}"))
        if (
            r.max_runtime_s is not None
            and job.max_runtime_s is not None
            and job.max_runtime_s > r.max_runtime_s
        ):
            out.append((r.ref, f"declares maxRuntime {format_duration(job.max_runtime_s)}; "
                               f"at most {format_duration(r.max_runtime_s)}"))
        if r.quota_gpus is not None and job.total_gpus > r.quota_gpus:
            who = team_text(job.team) if r.quota_per == "team" else f"queue {job.queue}"
            out.append((r.ref, f"asks for {job.total_gpus} GPUs; {who} quota is "
                               f"{r.quota_gpus} GPUs at once, so it could never run"))
        if r.max_priority is not None and job.priority > r.max_priority:
            out.append((r.ref, f"asks for priority {job.priority}; at most {r.max_priority}"))
        if r.queues is not None and job.queue not in r.queues:
            out.append((r.ref, f"uses queue {job.queue}; {team_text(job.team)} may use "
                               f"{', '.join(sorted(r.queues))}"))
    if job.gpus_per_slice > 0:
        types, _ = allowed_gpu_types(job, rules)
        if types is not None and not types and not any("GPUs; allowed" in d[1] for d in out):
            # Each guardrail alone allowed some type, but together they allow none.
            refs = [r.ref for r in rules if r.allowed_gpu_types is not None]
            out.append((" and ".join(refs), "together allow no GPU type"))
    return out


@dataclass(frozen=True, slots=True)
class RuntimeLimit:
    seconds: float
    source: str  # "guardrail/nlp-limits", or "the job's maxRuntime"


def runtime_limit(job: JobFacts, rules: Sequence[GuardrailRule]) -> RuntimeLimit | None:
    """The shortest of the job's own maxRuntime and every applying guardrail's."""
    best: RuntimeLimit | None = None
    if job.max_runtime_s is not None:
        best = RuntimeLimit(job.max_runtime_s, "the job's maxRuntime")
    for r in rules:
        if r.max_runtime_s is not None and (best is None or r.max_runtime_s < best.seconds):
            best = RuntimeLimit(r.max_runtime_s, r.ref)
    return best


QuotaKey = tuple[Literal["team", "queue"], str]


def quota_reason(rule: GuardrailRule, key: QuotaKey, used: int, need: int) -> str:
    """Why a job does not fit a quota now, as ``orrery jobs`` shows it on every cluster."""
    who = team_text(key[1]) if key[0] == "team" else f"queue {key[1]}"
    return f"{who} quota {used}/{rule.quota_gpus} GPUs in use, job needs {need} ({rule.ref})"
