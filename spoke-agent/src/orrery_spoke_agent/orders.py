"""The gate every order passes before the agent acts on it: size, decode, signature,
replay and expiry. What fails is dropped, counted per reason and logged — never raised:
nothing a peer sends on the orders subject can stop the agent.

Reasons: ``oversized``, ``malformed`` (not a valid order), and the signing verdicts
``unsigned``, ``forged``, ``replayed``, ``expired`` (see ``orrery.wire.signing``). The agent
counts a heartbeat reply that does not decode here too, as ``bad_reply``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from orrery.errors import InvalidInput
from orrery.wire import Assignment, Kill, Prefetch, WireError, decode_order
from orrery.wire.signing import OrderVerifier, Verdict, load_public_key
from orrery_spoke_agent.settings import SpokeSettings

log = logging.getLogger("orrery.spoke")

# NATS's default max_payload: the hub never sends an order larger (its admission keeps
# every assignment well inside it), so anything bigger is not from the hub.
MAX_ORDER_BYTES = 1024 * 1024
# A flood must not become a flood of log lines: the first few of each reason, then a line
# every so many (the counter has the full figure).
LOG_FIRST = 20
LOG_EVERY = 1000


def load_verifier(settings: SpokeSettings, clock: Callable[[], float]) -> OrderVerifier | None:
    """The verifier for the pinned hub key; None only in insecure mode with no key."""
    path = settings.pinned_key_file()
    if path is None:
        if settings.insecure:
            log.warning(
                "orders are not verified: no hub key pinned (--insecure, development only)",
                extra={"cluster": settings.cluster},
            )
            return None
        raise InvalidInput(
            "--hub-key: no pinned hub order key; enroll this spoke (--join HUB --token T) or "
            "pass the hub's orders.pub, or run with --insecure for development"
        )
    return OrderVerifier(
        _read_key(path),
        clock,
        settings.order_max_skew_s,
        floor=_read_horizon(horizon_file(settings)),
    )


def horizon_file(settings: SpokeSettings) -> Path:
    """Where the agent keeps the expiry horizon of the orders it accepted: a restarted agent
    refuses everything issued before it, so its empty replay cache is no replay window."""
    return settings.state_dir / "orders-horizon"


def _read_horizon(path: Path) -> float:
    try:
        value = float(path.read_text().strip())
    except (OSError, ValueError):
        return float("-inf")  # none yet (or unreadable: the expiry check still applies)
    return value if math.isfinite(value) else float("-inf")


def _write_horizon(path: Path, value: float) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(repr(value))
        tmp.replace(path)
    except OSError as exc:
        log.warning(
            "could not save the order horizon", extra={"path": str(path), "error": str(exc)}
        )


def _read_key(path: Path) -> Ed25519PublicKey:
    try:
        return load_public_key(path.read_bytes())
    except OSError as exc:
        raise InvalidInput(f"--hub-key: cannot read {path}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"--hub-key: {path} is not an Ed25519 public key PEM ({exc})") from None


class OrderGate:
    def __init__(
        self,
        cluster: str,
        verifier: OrderVerifier | None,
        max_bytes: int = MAX_ORDER_BYTES,
        *,
        horizon_file: Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.verifier = verifier
        self.horizon_file = horizon_file
        self._saved_horizon = verifier.horizon if verifier is not None else float("-inf")
        self.max_bytes = max_bytes
        self.refused: Counter[str] = Counter()  # reason -> orders dropped for it
        self.accepted = 0

    def admit(self, data: bytes) -> Assignment | Kill | Prefetch | None:
        """The order to act on, or None when it was dropped (counted and logged)."""
        if len(data) > self.max_bytes:
            self._refuse("oversized", None, size=len(data), limit=self.max_bytes)
            return None
        try:
            order = decode_order(data)
        except WireError as exc:
            self._refuse("malformed", None, error=str(exc)[:512])
            return None
        except Exception as exc:  # a decoder bug must not let a peer stop us either
            self._refuse("malformed", None, error=type(exc).__name__)
            return None
        if self.verifier is not None:
            verdict = self.verifier.check(order)
            if verdict is not Verdict.OK:
                self._refuse(verdict.value, order)
                return None
            if self.horizon_file is not None and self.verifier.horizon > self._saved_horizon:
                _write_horizon(self.horizon_file, self.verifier.horizon)
                self._saved_horizon = self.verifier.horizon
        self.accepted += 1
        return order

    def _refuse(
        self, reason: str, order: Assignment | Kill | Prefetch | None, **detail: object
    ) -> None:
        self.refused[reason] += 1
        n = self.refused[reason]
        if n > LOG_FIRST and n % LOG_EVERY:
            return
        extra: dict[str, object] = {"cluster": self.cluster, "reason": reason, "count": n}
        if order is not None:
            extra |= {
                "kind": order.kind,
                "job": order.job,
                "slice": getattr(order, "index", None),
                "epoch": getattr(order, "epoch", None),
                "sender": order.sender,
                "seq": order.seq,
            }
        log.warning(f"refused order: {reason}", extra=extra | detail)


__all__ = ["MAX_ORDER_BYTES", "OrderGate", "horizon_file", "load_verifier"]
