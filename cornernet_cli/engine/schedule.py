"""The learning-rate schedule, by steps or by a time budget.

With a time budget (minutes of training-step time, on the CPU clock or the wall clock) the schedule follows
the fraction of the budget used instead of the step count, so that a run ends decayed whatever the
machine's speed, through --resume as well.
"""

from __future__ import annotations

import math

import torch

from cornernet_cli.engine.distributed import DistEnv, max_over_ranks
from cornernet_cli.engine.state import RunState


def lr_factor(step: int, *, warmup_iters: int, lr_steps: tuple[int, ...], gamma: float,
              schedule: str = "step", total: int = 0, progress: float | None = None) -> float:
    """The learning-rate multiplier at `step`: a linear warm-up from 1/warmup to 1 over `warmup_iters`, times

    - `step` (the paper): gamma ** (number of `lr_steps` reached);
    - `cosine`: 0.5 * (1 + cos(pi * step / total)), from 1 at step 0 to 0 at `total` (`lr_steps` unused).

    With a time budget, `progress` is the fraction of it used before this step (0 ... 1) and replaces the
    step count: cosine runs along it, and the step schedule decays once, at 90 % of the budget. So the run
    ends decayed whatever the machine's speed.
    """
    warm = min(1.0, (step + 1) / warmup_iters) if warmup_iters > 0 else 1.0
    if schedule not in ("step", "cosine"):
        raise ValueError(f"lr schedule must be step or cosine, got {schedule!r}")
    if progress is not None:
        p = min(1.0, max(0.0, progress))
        return warm * (0.5 * (1.0 + math.cos(math.pi * p)) if schedule == "cosine" else gamma ** (p >= 0.9))
    if schedule == "cosine":
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, total))))
    return warm * gamma ** sum(step >= s for s in lr_steps)


def budget_used(state: RunState, *, time_budget: float, time_clock: str, env: DistEnv, device: torch.device
                ) -> float | None:
    """The fraction of the time budget (`time_budget` minutes on `time_clock`: cpu or wall) that the training
    steps have used so far, the largest over the ranks, so that every replica takes the same learning rate
    and stops at the same step; None without a budget (`time_budget` 0). A collective when distributed."""
    if time_budget <= 0:
        return None
    seconds = state.cpu_s if time_clock == "cpu" else state.train_s
    return max_over_ranks(seconds / (60.0 * time_budget), env, device)


def budget_spent(used: float | None) -> bool:
    """Whether a run with `used` of its budget (budget_used) must stop."""
    return used is not None and used >= 1.0


def expected_steps(step: int, used: float | None) -> int | None:
    """The step count a budgeted run is heading for, from the `step` reached with `used` of the budget
    (None while unknown: no budget, or none used yet)."""
    return round(step / max(used, 1e-9)) if used else None


__all__ = ["budget_spent", "budget_used", "expected_steps", "lr_factor"]
