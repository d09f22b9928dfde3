"""``orrery up`` keeps its federation alive: a child that dies (nats-server, the hub, a
spoke) is noticed within a second, said so on stderr with its own reason, and started
again — at most ``MAX_RESTARTS`` times per child in ``WINDOW_S``; past that, ``up`` stops
everything and says which child kept dying, instead of serving a federation that is
silently half dead.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console

from orrery.errors import Unavailable
from orrery.federation import Federation

MAX_RESTARTS = 3
WINDOW_S = 300.0


@dataclass
class RestartBudget:
    """How many restarts a child has left: ``limit`` within a sliding ``window_s``."""

    limit: int = MAX_RESTARTS
    window_s: float = WINDOW_S
    times: deque[float] = field(default_factory=deque)

    def take(self, now: float) -> bool:
        while self.times and now - self.times[0] > self.window_s:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


class Watchdog:
    def __init__(
        self,
        fed: Federation,
        err: Console,
        *,
        limit: int = MAX_RESTARTS,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fed = fed
        self.err = err
        self.clock = clock
        self.limit, self.window_s = limit, window_s
        self.budgets: dict[str, RestartBudget] = {}
        self.restarts = 0

    def _say(self, text: str) -> None:
        self.err.print(f"orrery up: {text}", markup=False, highlight=False)

    def _restart(self, what: str, why: str, start: Callable[[], None]) -> None:
        budget = self.budgets.setdefault(what, RestartBudget(self.limit, self.window_s))
        if not budget.take(self.clock()):
            raise Unavailable(
                f"{what} exited {self.limit} times in {self.window_s:.0f}s, the last time: "
                f"{why}; stopping the federation"
            )
        self._say(f"{what} exited: {why}; starting it again")
        start()
        self.restarts += 1
        self._say(f"{what} is running again")

    def check(self) -> None:
        """One look at every child; restarts the dead ones (raises Unavailable when one
        is out of restarts, or does not start again)."""
        fed = self.fed
        nats = fed.nats
        if nats is not None and nats.proc is not None and nats.proc.poll() is not None:
            code = nats.proc.returncode
            self._restart(
                "nats-server", fed.why_exited("nats-server.log", code), lambda: _start_nats(fed)
            )
        if fed.hub is not None and fed.hub.poll() is not None:
            code = fed.hub.returncode
            self._restart("the hub", fed.why_exited("hub.log", code), fed.start_hub)
        for name, p in list(fed.spokes.items()):
            if p.poll() is not None:
                why = fed.why_exited(f"spoke-{name}.log", p.returncode)
                self._restart(f"the spoke {name}", why, functools.partial(fed.start_spoke, name))


def _start_nats(fed: Federation) -> None:
    assert fed.nats is not None
    fed.nats.start()
