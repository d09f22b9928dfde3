"""A real data-parallel training job: PyTorch, torch.distributed with gloo, on the CPU.

Deterministic by construction, so a run interrupted and resumed from its checkpoint ends
with bit-identical parameters to an uninterrupted one:
- every batch is generated from (seed, step, rank), so a resumed run sees the same data;
- gradients are averaged with all_reduce (two ranks: a + b, the same on both);
- the checkpoint holds model and optimizer state and the step, written by rank 0
  completely (temp file, then rename) before it is recorded with orrery.workload.

At the end rank 0 writes OUT/final-<tag>.json: each parameter as exact float hex.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from orrery import workload


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--step-time", type=float, default=0.1)
    p.add_argument("--checkpoint-every", type=int, default=5)
    args = p.parse_args()
    ctx = workload.context()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{ctx.master_addr}:{ctx.master_port}",
        rank=ctx.rank,
        world_size=ctx.world_size,
        timeout=timedelta(seconds=30),
    )
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    start = 0
    if ctx.checkpoint:
        state = torch.load(ctx.checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"]) + 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = os.open(out / "steps.jsonl", os.O_CREAT | os.O_APPEND | os.O_WRONLY)
    for step in range(start, args.steps):
        os.write(
            log,
            (
                json.dumps(
                    {
                        "slice": ctx.slice,
                        "epoch": ctx.epoch,
                        "step": step,
                        "t": time.time(),
                        "resumed_from": start,
                    }
                )
                + "\n"
            ).encode(),
        )
        g = torch.Generator().manual_seed(1000 * step + ctx.rank)
        x = torch.randn(64, 16, generator=g)
        y = x.sum(dim=1, keepdim=True).sin()
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        for prm in model.parameters():
            assert prm.grad is not None
            dist.all_reduce(prm.grad, op=dist.ReduceOp.SUM)
            prm.grad /= ctx.world_size
        opt.step()
        workload.report(step=step, total_steps=args.steps, metrics={"loss": float(loss)})
        time.sleep(args.step_time)
        if ctx.rank == 0 and ctx.checkpoint_dir and (step + 1) % args.checkpoint_every == 0:
            folder = Path(ctx.checkpoint_dir)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"ckpt-{step}.pt"
            tmp = folder / f".ckpt-{step}.tmp"
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step}, tmp)
            os.replace(tmp, path)
            workload.checkpoint(str(path), step=step)
    if ctx.rank == 0:
        params = {
            k: [float(v).hex() for v in t.flatten().tolist()] for k, t in model.state_dict().items()
        }
        (out / f"final-{args.tag}.json").write_text(json.dumps(params))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
