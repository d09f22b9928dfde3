"""Test workload that talks: one stdout line per step naming its epoch, a line on stderr
at the start, ``done`` at the end; resumes from its checkpoint like a training script.

    python chatty.py --steps N [--step-time S] [--finish-from-epoch E --hold-at K]

With ``--finish-from-epoch E``, an attempt of an earlier epoch never ends by itself: it
waits at step K (``--hold-at``) until it is stopped, so a test that kills it while it runs
does not race its end however slowly a loaded machine runs the test's own checks.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

from orrery import workload


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--step-time", type=float, default=0.1)
    p.add_argument("--finish-from-epoch", type=int, default=0)
    p.add_argument("--hold-at", type=int, default=0)
    args = p.parse_args()
    ctx = workload.context()
    start = json.loads(Path(ctx.checkpoint).read_text())["step"] + 1 if ctx.checkpoint else 0
    print(f"epoch {ctx.epoch} slice {ctx.slice}: starting at step {start}", file=sys.stderr)
    for step in range(start, args.steps):
        if ctx.epoch < args.finish_from_epoch and step >= args.hold_at:
            threading.Event().wait()  # until stopped: this epoch is meant to be killed
        print(f"epoch {ctx.epoch} slice {ctx.slice} step {step}", flush=True)
        time.sleep(args.step_time)
        workload.report(step=step, total_steps=args.steps)
        if ctx.checkpoint_dir and step % 5 == 4:
            folder = Path(ctx.checkpoint_dir)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"ckpt-{step}.json"
            path.with_suffix(".tmp").write_text(json.dumps({"step": step}))
            path.with_suffix(".tmp").replace(path)
            workload.checkpoint(str(path), step=step)
    print(f"epoch {ctx.epoch} slice {ctx.slice}: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
