"""How slices run. ``Executor`` is the seam; ``local`` and ``kubernetes`` implement it, and
``fake`` stands in for tests of the agent alone."""

from orrery_spoke_agent.executor.base import (
    Executor,
    Found,
    LaunchError,
    LogMissing,
    LogStream,
    Outcome,
    slice_env,
)

__all__ = ["Executor", "Found", "LaunchError", "LogMissing", "LogStream", "Outcome", "slice_env"]
