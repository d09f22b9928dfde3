"""Prometheus metrics, one registry per hub (never the global one: tests run several hubs)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_submitted = Counter("orrery_jobs_submitted", "Jobs accepted", registry=r)
        self.jobs_denied = Counter("orrery_jobs_denied", "Jobs refused by policy", registry=r)
        self.jobs = Gauge("orrery_jobs", "Jobs by phase", ["phase"], registry=r)
        self.clusters = Gauge("orrery_clusters", "Clusters by state", ["state"], registry=r)
        self.gpus = Gauge(
            "orrery_gpus",
            "GPUs by cluster, type and state",
            ["cluster", "gpu_type", "state"],
            registry=r,
        )
        self.heartbeats = Counter("orrery_heartbeats", "Heartbeats received", registry=r)
        self.api_denied = Counter(
            "orrery_api_denied", "API calls refused (401, 403)", ["status"], registry=r
        )
        self.api_denied_unaudited = Counter(
            "orrery_api_denied_unaudited",
            "Refused API calls past the per-client audit rate, counted but not audited",
            registry=r,
        )
        self.bad_messages = Counter(
            "orrery_bad_messages", "Messages dropped as invalid", registry=r
        )
        self.ack_seconds = Histogram(
            "orrery_heartbeat_ack_seconds",
            "From a heartbeat's arrival to its reply (bounded by the ack wait)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.orders = Counter("orrery_orders", "Orders published", ["kind"], registry=r)
        self.placements = Counter("orrery_slices_placed", "Slices placed", registry=r)
        self.pass_seconds = Histogram(
            "orrery_schedule_pass_seconds",
            "Scheduling pass duration (gather, plan, commit)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.admissions = Counter(
            "orrery_admission_decisions",
            "Submissions by admission decision (admitted, denied)",
            ["decision"],
            registry=r,
        )
        self.placement_seconds = Histogram(
            "orrery_placement_latency_seconds",
            "From a job's submission to its first placement",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=r,
        )
        self.failovers = Counter(
            "orrery_cluster_failovers",
            "Clusters declared Lost (silent past the failover timeout; their slices move)",
            ["cluster"],
            registry=r,
        )
        self.preemptions = Counter(
            "orrery_preemptions", "Slices preempted for a higher-priority job", registry=r
        )
        # Read from the store at scrape time (orrery_hub.runtime.scrape).
        self.queue_pending = Gauge(
            "orrery_queue_pending_jobs", "Jobs waiting, by queue", ["queue"], registry=r
        )
        self.queue_gpus = Gauge(
            "orrery_queue_gpus_in_use", "GPUs held by the queue's slices", ["queue"], registry=r
        )
        self.team_spend = Gauge(
            "orrery_team_spend",
            "Cost so far per team, all time, in the price unit of the Cost policies",
            ["team"],
            registry=r,
        )
        self.team_gpu_seconds = Gauge(
            "orrery_team_gpu_seconds", "GPU time used per team, all time", ["team"], registry=r
        )
