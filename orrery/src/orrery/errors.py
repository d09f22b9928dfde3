"""Errors shared by every Orrery component, and what each means for a retry.

    OrreryError                      base; ``retryable`` says whether trying again may help
    ├── InvalidInput                 a user's manifest, policy or flag is wrong: never retry
    │   ├── ManifestError            names the field (``loc``) and the reason
    │   └── TooLarge                 past a declared size limit (a 413 at the API)
    ├── Unauthenticated              no token, or one the hub does not accept (HTTP 401)
    ├── Forbidden                    policies or the caller's role refuse it: never retry
    ├── NotFound                     the thing asked for does not exist: never retry
    │   └── Gone                     it existed, and was removed (retention): HTTP 410
    ├── Conflict                     the request clashes with current state: never retry as is
    ├── TooManyRequests              over a rate limit: retry after ``retry_after_s``
    └── Unavailable                  a dependency (hub, NATS, database) cannot be reached:
        │                            retry with backoff
        └── NotLeader                this hub is a standby: retry at ``leader`` (when known)

The hub turns these into HTTP statuses in one exception handler; the CLI prints them as one
line and exits non-zero.
"""

from __future__ import annotations


class OrreryError(Exception):
    """Base of every error Orrery raises on purpose."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(OrreryError):
    """A user mistake: the input is wrong, and retrying the same input fails again."""


class ManifestError(InvalidInput):
    """A manifest or policy document does not validate.

    ``problems`` holds ``(location, reason)`` pairs, location like ``spec.gpusPerSlice``.
    """

    def __init__(self, problems: list[tuple[str, str]], *, source: str = "manifest") -> None:
        self.problems = problems
        self.source = source
        detail = "; ".join(f"{loc}: {reason}" if loc else reason for loc, reason in problems)
        super().__init__(f"invalid {source}: {detail}")


class TooLarge(InvalidInput):
    """A request or document past a declared size limit; the message names the limit."""


class Unauthenticated(OrreryError):
    """No credentials, or credentials the hub does not accept (unknown, expired, revoked).
    The message says which, never what was sent."""


class Forbidden(OrreryError):
    """Policies refuse the request; ``message`` names each denying policy and why."""


class NotFound(OrreryError):
    """The named job, cluster or file does not exist."""


class Gone(NotFound):
    """The thing asked for existed and was removed (a slice's output after retention)."""


class Conflict(OrreryError):
    """The request is valid but clashes with the current state (e.g. cancel a finished job)."""


class TooManyRequests(OrreryError):
    """Over a rate limit (HTTP 429): the same request may succeed after ``retry_after_s``."""

    retryable = True

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(OrreryError):
    """A dependency is down or unreachable; trying again later may succeed."""

    retryable = True


class NotLeader(Unavailable):
    """This hub is a standby (or was deposed): writes go to the leader, at ``leader`` where
    known (HTTP 503 with an ``X-Orrery-Leader`` header); retry there."""

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader
