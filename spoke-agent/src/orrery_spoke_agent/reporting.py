"""What a heartbeat says of one attempt: its phase, exit, reason, progress and, for a serving
replica, where it listens. Values a workload or a peer chose are fitted to the wire's limits
here, so nothing a slice does can make the heartbeat itself unsendable."""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlparse

from pydantic import ValidationError

from orrery.wire import NodeReport, SliceReport
from orrery.wire.messages import INT64_MAX, clip
from orrery_spoke_agent.executor import Executor
from orrery_spoke_agent.state import Attempt, SpokeState

log = logging.getLogger("orrery.spoke")


def slice_report(at: Attempt, executor: Executor, address: str) -> SliceReport:
    """One attempt as the heartbeat reports it."""
    # What a workload or a peer chose (an exit code, a reason) is fitted to the wire's
    # limits here, so no value can make the heartbeat itself unsendable.
    code = at.exit_code
    if code is not None and not -INT64_MAX - 1 <= code <= INT64_MAX:
        code = 255
    try:
        progress = executor.progress(at.key)
    except Exception:  # a workload's progress file is never worth a heartbeat
        progress = None
    report = dict(
        job=at.a.job,
        index=at.a.index,
        epoch=at.a.epoch,
        phase=at.phase,
        node=at.a.node,
        gpus=list(at.a.gpus),
        exit_code=code,
        reason=clip(at.reason) if at.reason is not None else None,
        started_at=at.started_at,
        finished_at=at.finished_at,
        cause=at.cause,
    )
    try:
        port = executor.listen_port(at.key)
    except Exception:  # a replica's port file is never worth a heartbeat
        port = None
    if port is not None and not at.phase.terminal:
        report["endpoint"] = f"{address}:{port}"
    try:
        return SliceReport.model_validate({**report, "progress": progress})
    except ValidationError as exc:
        log.warning("slice report did not fit the wire: %s", clip(str(exc), 512))
        report.update(started_at=None, finished_at=None, reason="unreportable values")
        return SliceReport.model_validate(report)


def current_nodes(executor: Executor, state: SpokeState) -> list[NodeReport]:
    """Capacity as reported: the executor's own view where it has one (Kubernetes),
    else the declared nodes minus the GPUs of this agent's running slices."""
    dynamic = executor.capacity()
    if dynamic is not None:
        return dynamic
    used = state.used_gpus()
    return [
        NodeReport(
            name=n.name,
            gpu_type=n.gpu_type,
            gpu_memory_mib=n.gpu_memory_mib,
            gpus=n.gpus,
            free=[i for i in range(n.gpus) if i not in used.get(n.name, set())],
        )
        for n in state.nodes.values()
    ]


def outbound_address(nats_url: str) -> str:
    """The local address that reaches the NATS server: where this cluster's slices listen."""
    host = urlparse(nats_url.split(",")[0].strip()).hostname or "127.0.0.1"  # a cluster: the first
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))  # UDP: sends nothing, only picks a route
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
