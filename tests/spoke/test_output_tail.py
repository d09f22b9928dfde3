"""A failed slice carries the last lines of its output (issue 17): the user sees
``CUDA out of memory``, not only ``exit code 3``; nothing the workload plants leaks."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from orrery.wire import Assignment
from orrery_spoke_agent.executor import slice_env
from orrery_spoke_agent.executor.local import LocalExecutor
from orrery_spoke_agent.executor.outputtail import MAX_CHARS, PREFIX, failure_reason, tail_lines


def _assignment(code: str, tmp_path: Path) -> Assignment:
    return Assignment(
        sender="hub",
        seq=1,
        job="job-1",
        job_name="job",
        index=0,
        epoch=1,
        world_size=1,
        node="n0",
        gpus=[0],
        master_addr="127.0.0.1",
        master_port=29555,
        command=[sys.executable, "-c", code],
        checkpoint_dir=str(tmp_path / "ck"),
        env={},
    )


async def test_a_failed_slice_reports_the_last_lines_of_its_stderr(tmp_path: Path) -> None:
    ex = LocalExecutor(tmp_path, lease_s=30, kill_grace_s=0.5)
    await ex.renew_lease(time.time())
    try:
        a = _assignment(
            "import sys\nprint('step 1')\n"
            "print('RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB', "
            "file=sys.stderr)\nraise SystemExit(3)",
            tmp_path,
        )
        await ex.launch(a, slice_env(a))
        outcome = await asyncio.wait_for(ex.wait(a.key), 20)
    finally:
        await ex.close()
    assert outcome.exit_code == 3
    assert outcome.reason is not None and outcome.reason.startswith(PREFIX)
    assert "CUDA out of memory" in outcome.reason and "step 1" in outcome.reason


def test_the_tail_is_bounded_and_skips_blank_lines(tmp_path: Path) -> None:
    log = tmp_path / "output.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)) + "\n\n" + "x" * 5000 + "\n")
    kept = tail_lines(log)
    assert len(kept) <= 5 and kept[-1].endswith("xxx") and "line" not in kept[-1]
    why = failure_reason(log)
    assert why is not None and len(why) <= len(PREFIX) + MAX_CHARS
    assert failure_reason(tmp_path / "missing.log") is None
    (tmp_path / "empty.log").write_text("\n\n")
    assert failure_reason(tmp_path / "empty.log") is None


def test_a_planted_link_or_fifo_is_not_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("root:SECRET-HASH\n")
    link = tmp_path / "output.log"
    link.symlink_to(secret)
    assert failure_reason(link) is None  # the link is not followed
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    assert failure_reason(fifo) is None  # and a FIFO does not block the agent
