"""Slices waiting for their datasets: staged into the cluster's cache before they launch.

Staging may take hours, so each such slice waits in a task beside the agent and launches
when its data is in the cache. A kill (or a lapsed lease) meanwhile stops the wait, not
the copy, which other slices may share; the slice then ends as killed, never started.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from orrery.dataset import env_name
from orrery.wire import Assignment, SliceKey, SlicePhase
from orrery_spoke_agent.executor import Outcome
from orrery_spoke_agent.staging import Stager, StagingError
from orrery_spoke_agent.state import Effect, SliceId, SpokeState


class DataWaits:
    def __init__(
        self,
        stager: Stager,
        state: SpokeState,
        *,
        apply: Callable[[Iterable[Effect]], Awaitable[None]],
        launch: Callable[[Assignment, dict[str, str]], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self.stager = stager
        self.state = state
        self._apply = apply  # the agent's: carries out the state's effects
        self._launch = launch  # the agent's: launches a slice with its data's paths
        self.clock = clock
        self._tasks: dict[SliceKey, asyncio.Task[None]] = {}
        self._stopped: dict[SliceKey, str] = {}

    def start(self, tg: asyncio.TaskGroup, a: Assignment) -> None:
        """Stage ``a``'s datasets in a task of ``tg``, then launch it."""
        self._tasks[a.key] = tg.create_task(
            self._stage_then_launch(a), name=f"stage {a.job}/{a.index}/{a.epoch}"
        )

    def stop(self, key: SliceKey, reason: str) -> bool:
        """Stop ``key``'s wait, if it is waiting for its data (False: it is not)."""
        task = self._tasks.get(key)
        if task is None:
            return False
        self._stopped[key] = reason
        task.cancel()
        return True

    def stop_all(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()

    async def _stage_then_launch(self, a: Assignment) -> None:
        key = a.key
        assert a.datasets is not None
        try:
            try:
                paths = await self.stager.acquire(key, a.datasets)
            except StagingError as exc:
                await self._apply(self.state.on_launch_failed(key, exc.reason, True, self.clock()))
                return
            at = self.state.attempts.get(key)
            fenced = self.state.tombstones.get(SliceId.of(key), -1) >= key.epoch
            if at is None or at.phase is not SlicePhase.STARTING or fenced:
                await self.stager.release(key)
                return
            data = {env_name(name): str(path) for name, path in paths.items()}
        except asyncio.CancelledError:
            # Killed (or the lease lapsed) while its data was staging: it never started.
            reason = self._stopped.pop(key, "stopped while staging its data")
            await self._apply(
                self.state.on_outcome(
                    key,
                    Outcome(exit_code=None, reason=reason, finished_at=self.clock(), killed=True),
                )
            )
            return
        finally:
            self._tasks.pop(key, None)
        await self._launch(a, data)
