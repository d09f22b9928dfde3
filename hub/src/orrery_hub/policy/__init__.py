"""The policy engine: placement, guardrails and cost, as pure functions of plain facts.

Who calls it: the hub at submit (``admit``), in each scheduling pass
(``constraints_for_pass``, whose output fills the scheduler's ``JobRequest`` fields), in
its reconcile loop (``runtime_exceeded``) and for accounting (``price_of``); the
``orrery policy check`` command (``admit`` + ``constraints``). Files are read by
``orrery_hub.admission.policyfiles``; this package parses text and decides, with no IO and no clock.

    build_policy_set([(path, text), ...]) -> PolicySet     or PolicyError (file:line: field)
    admit(job, policies, usage, now) -> Admission
    constraints(job, clusters, policies, usage) -> Constraints
    constraints_for_pass(jobs, clusters, policies, usage) -> {job id: Constraints}
    Evaluator(policies, clusters).constraints_for_pass(jobs, usage)
                                    the same, memoised across passes: keep one while
                                    ``evaluator.serves(policies, clusters)``
    runtime_exceeded(job, policies, started_at, now) -> RuntimeStop | None
    estimate_cost(...) / price_of(policies, cluster, gpu_type, spot=) / period_start(...)

Precedence rules are in ``policies/README.md`` and the docstrings of ``placement``,
``guardrail`` and ``cost``.
"""

from orrery_hub.policy.cost import CostEstimate, estimate_cost, period_end, period_start, price_of
from orrery_hub.policy.engine import (
    Admission,
    Constraints,
    RuntimeStop,
    admit,
    admit_key,
    constraints,
    constraints_for_pass,
    runtime_exceeded,
)
from orrery_hub.policy.facts import NO_TEAM, NO_USAGE, ClusterFacts, JobFacts, Usage
from orrery_hub.policy.ledger import Evaluator
from orrery_hub.policy.parse import EMPTY, Issue, PolicyError, build_policy_set
from orrery_hub.policy.policyset import PolicyEntry, PolicySet, Source
from orrery_hub.policy.report import CheckReport, CheckRequest, check_report
from orrery_hub.policy.schema import json_schema

__all__ = [
    "EMPTY",
    "NO_TEAM",
    "NO_USAGE",
    "Admission",
    "CheckReport",
    "CheckRequest",
    "ClusterFacts",
    "Constraints",
    "CostEstimate",
    "Evaluator",
    "Issue",
    "JobFacts",
    "PolicyEntry",
    "PolicyError",
    "PolicySet",
    "RuntimeStop",
    "Source",
    "Usage",
    "admit",
    "admit_key",
    "build_policy_set",
    "check_report",
    "constraints",
    "constraints_for_pass",
    "estimate_cost",
    "json_schema",
    "period_end",
    "period_start",
    "price_of",
    "runtime_exceeded",
]
