"""Test workload: counts steps, records each one it really ran, checkpoints, resumes.

Every step appends one line to OUT/steps.jsonl: {"slice", "epoch", "step", "t", "pid"}
(an O_APPEND write of one short line is atomic), so a test can rebuild exactly what ran,
where and when — across SIGKILLs — and check that no slice index ever ran two epochs at once.

    python steps.py --out DIR [--steps N] [--step-time S] [--checkpoint-every K]
                    [--fail-code C] [--once-marker]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from orrery import workload


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--step-time", type=float, default=0.1)
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument("--fail-code", type=int, default=0, help="exit with this code at step 0")
    p.add_argument(
        "--once-marker",
        action="store_true",
        help="create OUT/ran-<slice> exclusively: a second run of a slice fails",
    )
    args = p.parse_args()
    ctx = workload.context()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.once_marker:
        fd = os.open(out / f"ran-{ctx.slice}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, f"{ctx.job} {ctx.epoch} {os.getpid()}\n".encode())
        os.close(fd)
    start = 0
    if ctx.checkpoint:
        start = json.loads(Path(ctx.checkpoint).read_text())["step"] + 1
    log = os.open(out / "steps.jsonl", os.O_CREAT | os.O_APPEND | os.O_WRONLY)
    for step in range(start, args.steps):
        line = json.dumps(
            {
                "slice": ctx.slice,
                "epoch": ctx.epoch,
                "step": step,
                "t": time.time(),
                "pid": os.getpid(),
                "resumed_from": start,
            }
        )
        os.write(log, (line + "\n").encode())
        if args.fail_code:
            return args.fail_code
        time.sleep(args.step_time)
        workload.report(step=step, total_steps=args.steps)
        if ctx.rank == 0 and ctx.checkpoint_dir and (step + 1) % args.checkpoint_every == 0:
            folder = Path(ctx.checkpoint_dir)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"ckpt-{step}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": step}))
            os.replace(tmp, path)
            workload.checkpoint(str(path), step=step)
    os.write(
        log,
        (
            json.dumps({"slice": ctx.slice, "epoch": ctx.epoch, "done": True, "t": time.time()})
            + "\n"
        ).encode(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
