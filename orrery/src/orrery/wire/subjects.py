"""NATS subjects, scoped per cluster so a spoke's credentials can later allow exactly its own.

    orrery.v1.cluster.<name>.report.heartbeat   spoke -> hub   request; the hub replies HeartbeatAck
    orrery.v1.cluster.<name>.report.status      spoke -> hub   a slice changed phase (a hint)
    orrery.v1.cluster.<name>.report.renew       spoke -> hub   a CSR; the hub replies a certificate
    orrery.v1.cluster.<name>.orders             hub -> spoke   Assignment or Kill (idempotent)
    orrery.v1.cluster.<name>.logs               hub -> spoke   request; the spoke replies a chunk
                                                               of a slice's output (wire.logs)
    orrery.v1.gateway.<id>.sync                 gateway -> hub request: its GatewayReport; the
                                                               leading hub replies GatewayRoutes

The hub reads every report through one subscription (``ALL_REPORTS``), so the reports of
one spoke are handled in the order it sent them.
"""

from __future__ import annotations

from orrery.names import is_dns_label

PREFIX = "orrery.v1.cluster"
GATEWAY_PREFIX = "orrery.v1.gateway"
# What the leading hub subscribes to: every gateway's sync requests.
ALL_GATEWAY_SYNCS = f"{GATEWAY_PREFIX}.*.sync"


def valid_cluster_name(name: str) -> bool:
    """A cluster name must be usable as one NATS subject token (and a DNS label)."""
    return is_dns_label(name)


class Subjects:
    """Subjects for one cluster, or the hub's wildcards."""

    def __init__(self, cluster: str) -> None:
        if not valid_cluster_name(cluster):
            raise ValueError(
                f"cluster name {cluster!r} must be 1-63 lowercase letters, digits or '-'"
            )
        self.cluster = cluster
        base = f"{PREFIX}.{cluster}"
        self.heartbeat = f"{base}.report.heartbeat"
        self.status = f"{base}.report.status"
        self.renew = f"{base}.report.renew"
        self.orders = f"{base}.orders"
        self.logs = f"{base}.logs"

    # What the hub subscribes to.
    ALL_REPORTS = f"{PREFIX}.*.report.*"

    @staticmethod
    def cluster_of(subject: str) -> str | None:
        """The cluster a report's subject names, or None if it is not one of ours."""
        parts = subject.split(".")
        if len(parts) != 6 or ".".join(parts[:3]) != PREFIX or parts[4] != "report":
            return None
        return parts[3]


def gateway_sync(gateway: str) -> str:
    """The one subject a gateway publishes on (its certificate allows no other)."""
    if not is_dns_label(gateway):
        raise ValueError(f"gateway id {gateway!r} must be 1-63 lowercase letters, digits or '-'")
    return f"{GATEWAY_PREFIX}.{gateway}.sync"


def gateway_of(subject: str) -> str | None:
    """The gateway a sync subject names, or None if it is not one."""
    parts = subject.split(".")
    if len(parts) != 5 or ".".join(parts[:3]) != GATEWAY_PREFIX or parts[4] != "sync":
        return None
    return parts[3] if is_dns_label(parts[3]) else None
