"""A small, real training loop for the demo: linear regression by SGD, in plain Python.

Every rank computes the same model from the same seeded data (a stand-in for data-parallel
training with an all-reduce), reports progress through ``orrery.workload``, and rank 0
writes a checkpoint every ``--checkpoint-every`` steps. Started again with a checkpoint, it
resumes from the step after it, and ends with exactly the model an uninterrupted run gets.

    python -m orrery.demo_train --steps 60 --step-time 0.1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from orrery import workload


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--step-time", type=float, default=0.1)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args()
    ctx = workload.context()

    rng = random.Random(1234)
    data = [
        (x, 3.0 * x + 2.0 + rng.gauss(0, 0.1)) for x in (rng.uniform(-1, 1) for _ in range(256))
    ]
    w, b, start = 0.0, 0.0, 0
    if ctx.checkpoint:
        state = json.loads(Path(ctx.checkpoint).read_text())
        w, b, start = state["w"], state["b"], state["step"] + 1
        print(f"rank {ctx.rank}: resuming from {ctx.checkpoint} at step {start}", flush=True)
    else:
        print(f"rank {ctx.rank}: starting from scratch", flush=True)

    loss = 0.0
    for step in range(start, args.steps):
        batch = data[(step * 32) % len(data) :][:32]
        gw = sum(2 * (w * x + b - y) * x for x, y in batch) / len(batch)
        gb = sum(2 * (w * x + b - y) for x, y in batch) / len(batch)
        w, b = w - args.lr * gw, b - args.lr * gb
        loss = sum((w * x + b - y) ** 2 for x, y in batch) / len(batch)
        time.sleep(args.step_time)
        workload.report(step=step, total_steps=args.steps, metrics={"loss": loss})
        if ctx.rank == 0 and ctx.checkpoint_dir and (step + 1) % args.checkpoint_every == 0:
            folder = Path(ctx.checkpoint_dir)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"ckpt-{step:06d}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"step": step, "w": w, "b": b}))
            os.replace(tmp, path)  # complete before it is recorded
            workload.checkpoint(str(path), step=step)
    print(f"rank {ctx.rank}: done, w={w:.4f} b={b:.4f} loss={loss:.5f}", flush=True)


if __name__ == "__main__":
    main()
