"""Data-parallel training across processes started by `torchrun` (one process without it).

torchrun describes the job in the environment: RANK (this process, 0 ... WORLD_SIZE - 1), WORLD_SIZE and
LOCAL_RANK (this process's GPU on its node). NCCL joins GPU processes, gloo CPU ones. Every function here
that takes a `DistEnv` is a collective when the job has more than one process: every rank calls it, in
the same order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from cornernet_cli.engine.checkpoint import unwrap
from cornernet_cli.engine.device import resolve_device


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs and writes files."""
        return self.rank == 0


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group that `torchrun` describes in the environment (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return env


def setup_distributed(device: str) -> tuple[torch.device, DistEnv]:
    """This process's device (`device` as --device takes it; `auto` and `cuda` pick cuda:LOCAL_RANK) and its
    place in the job, with the process group joined."""
    dev = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    return dev, init_distributed(dev)


def wrap_ddp(model: nn.Module, env: DistEnv, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel (gradients averaged over the ranks in backward), or `model` itself
    for one process. The optimiser, EMA and checkpoints keep working on the plain model."""
    if not env.enabled:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def any_rank(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True if `flag` is true on any rank."""
    if not env.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_over_ranks(value: float, env: DistEnv, device: torch.device) -> float:
    """The largest `value` over the ranks (float64, so a fraction keeps its precision)."""
    if not env.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def barrier(env: DistEnv) -> None:
    """Wait until every rank gets here (while rank 0 validates or writes, say)."""
    if env.enabled:
        dist.barrier()


def param_checksums(model: nn.Module, env: DistEnv, device: torch.device) -> list[float]:
    """Sum of |w| over all parameters, one per rank (gathered), to check that the replicas agree."""
    total = torch.stack([p.detach().double().abs().sum() for p in unwrap(model).parameters()]).sum()
    total = total.to(device).reshape(1)
    if not env.enabled:
        return [float(total)]
    gathered = [torch.zeros_like(total) for _ in range(env.world_size)]
    dist.all_gather(gathered, total)
    return [float(t) for t in gathered]


def shutdown_distributed(env: DistEnv) -> None:
    """Wait for every rank, then leave the process group (no-op for one process)."""
    if env.enabled:
        dist.barrier()
        dist.destroy_process_group()


__all__ = ["DistEnv", "any_rank", "barrier", "init_distributed", "max_over_ranks", "param_checksums",
           "setup_distributed", "shutdown_distributed", "wrap_ddp"]
