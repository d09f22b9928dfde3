"""What a failed Kubernetes API call says: its HTTP status, and whether to try again."""

from __future__ import annotations


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a ``kubernetes`` ``ApiException``; None for any other error."""
    return getattr(exc, "status", None) if type(exc).__name__ == "ApiException" else None


def transient(exc: BaseException) -> bool:
    """Worth another try: the API was unreachable, overloaded or failing (not a 4xx)."""
    code = status_of(exc)
    if code is None:
        return not isinstance(exc, (ValueError, TypeError, KeyError, AssertionError))
    return code == 429 or code >= 500
