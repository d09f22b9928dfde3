"""The one naming rule Orrery uses for jobs, clusters and policies: a DNS label.

A name that fits is safe as a NATS subject token, a Kubernetes object name and a URL path
segment, so the same rule serves manifests, policy documents and cluster names."""

from __future__ import annotations

import re

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_LABEL_RULE = (
    "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
)


def is_dns_label(name: str) -> bool:
    return DNS_LABEL.fullmatch(name) is not None  # fullmatch: "$" would allow "a\n"


def check_dns_label(name: str) -> str:
    """``name`` unchanged, or ValueError saying the rule (for pydantic validators)."""
    if not is_dns_label(name):
        raise ValueError(DNS_LABEL_RULE)
    return name
