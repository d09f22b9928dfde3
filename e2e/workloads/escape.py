"""Test workload that tries to outlive its slice, in its first epoch only; later epochs run
``steps.py`` plainly. Either way the steps are recorded by ``steps.py`` in OUT/steps.jsonl,
so ``assert_never_twice`` sees any epoch-1 process that kept running.

    python escape.py kill-supervisor --out DIR [steps.py args]
        runs steps.py as a child, then SIGKILLs its own supervisor (as the OOM killer
        might) and waits: the orphans keep recording steps unless the agent kills them.
    python escape.py setsid-child --out DIR [steps.py args]
        starts steps.py in a session of its own (``setsid``) and exits 3 (a failure, so
        the hub starts epoch 2): the child keeps recording steps unless it is tracked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from orrery import workload

STEPS = str(Path(__file__).with_name("steps.py"))


def main() -> int:
    mode, args = sys.argv[1], sys.argv[2:]
    if workload.context().epoch != 1:
        os.execv(sys.executable, [sys.executable, STEPS, *args])
    out = Path(args[args.index("--out") + 1])
    log = out / "steps.jsonl"
    child = subprocess.Popen(
        [sys.executable, STEPS, *args], start_new_session=(mode == "setsid-child")
    )
    deadline = time.monotonic() + 30
    while not log.exists() or log.read_text().count('"step"') < 3:  # running for a while
        if time.monotonic() > deadline or child.poll() is not None:
            return 2
        time.sleep(0.05)
    if mode == "setsid-child":
        return 3
    os.kill(os.getppid(), signal.SIGKILL)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
