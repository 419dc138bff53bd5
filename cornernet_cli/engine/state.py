"""The state of a training run, saved to its run folder and read back by --resume.

    last.safetensors   the model (the weight average with --ema) as a cornernet checkpoint
    best.safetensors   the same, at the best validation AP so far
    state.safetensors  the resume state: weights, optimiser, GradScaler, weight average, step, best AP,
                       clocks, the settings that shape the run, RNG states. Self-contained, so that one atomic
                       write holds everything --resume needs (engine.checkpoint.save_train_state: no pickle)

Resuming restores all of it, so the resumed run continues bit-identically to a straight one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cornernet_cli.config import DataConfig, ModelConfig, TrainConfig
from cornernet_cli.engine.build import TrainParts
from cornernet_cli.engine.checkpoint import (
    load_state,
    load_train_state,
    read_checkpoint,
    save_checkpoint,
    save_train_state,
)
from cornernet_cli.errors import CornerNetError


@dataclass
class RunState:
    """Where the run is: steps done, the best validation AP (None before the first validation), and the time
    the training steps took so far, across resumes (seconds: wall-clock and process CPU, threads summed)."""

    step: int = 0
    best_ap: float | None = None
    train_s: float = 0.0
    cpu_s: float = 0.0


def trajectory_settings(tc: TrainConfig, data_cfg: DataConfig) -> dict[str, Any]:
    """Settings a resumed run must share with the saved one to continue it exactly (stored in the resume
    state). `iters` is among them only for the cosine schedule, whose shape it sets; a step-schedule run may
    be extended."""
    settings: dict[str, Any] = {"lr_schedule": tc.lr_schedule, "ema": tc.ema, "pull_weight": tc.pull_weight,
                                "push_weight": tc.push_weight, "offset_weight": tc.offset_weight,
                                "vflip": data_cfg.vflip, "transpose": data_cfg.transpose,
                                "time_budget": tc.time_budget, "time_clock": tc.time_clock, "freeze": tc.freeze,
                                "lr": tc.lr, "weights": tc.weights}
    if tc.lr_schedule == "cosine" and not tc.time_budget:
        settings["iters"] = tc.iters
    return settings


def rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) generator states, as tensors and JSON values."""
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class Checkpointer:
    """Writes the run's checkpoints into `out_dir` on rank 0 (`enabled`; a no-op on the other ranks).

    meta: what each checkpoint's metadata "extra" holds besides the step (dataset, input size, test scale);
    settings: trajectory_settings of the run, stored in the resume state.
    """

    out_dir: Path
    parts: TrainParts
    class_names: list[str]
    category_ids: list[int]
    meta: dict[str, Any]
    settings: dict[str, Any]
    enabled: bool = True

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.safetensors"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.safetensors"

    @property
    def state_path(self) -> Path:
        return self.out_dir / "state.safetensors"

    def save(self, state: RunState, *, best: bool = False) -> None:
        """Write last.safetensors and the resume state at `state.step`; with `best` also best.safetensors."""
        if not self.enabled:
            return
        parts, meta = self.parts, {**self.meta, "step": state.step}
        save_checkpoint(self.last_path, parts.eval_model, class_names=self.class_names,
                        category_ids=self.category_ids, extra=meta)
        ema_state = {"ema": parts.ema.module.state_dict(), "ema_n": int(parts.ema.n_averaged)} \
            if parts.ema is not None else {}
        save_train_state(self.state_path, {
            "model": parts.model.state_dict(),  # the resume state is self-contained: one atomic file
            **ema_state,
            "optimizer": parts.optimizer.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler.is_enabled() else {}, "step": state.step,
            "best_ap": state.best_ap, "train_s": state.train_s, "cpu_s": state.cpu_s,
            "settings": self.settings,
            "rng": rng_state(),
        })
        if best:
            save_checkpoint(self.best_path, parts.eval_model, class_names=self.class_names,
                            category_ids=self.category_ids, extra=meta)


def _read_resumable(out_dir: Path, *, model_cfg: ModelConfig, averaged: bool, settings: dict[str, Any]
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """The resume state of the run in `out_dir`, refused unless this run can continue it: the same model
    configuration, `ema` on or off as it was, and the same trajectory `settings`. Returns the state, the
    weights to resume from and the file that holds them."""
    state_path, last_path = out_dir / "state.safetensors", out_dir / "last.safetensors"
    if not state_path.is_file() or not last_path.is_file():
        raise CornerNetError(f"resume: {out_dir} holds no saved state (expected state.safetensors and "
                             f"last.safetensors); start without resume", params=("resume",))
    ckpt_state, meta = read_checkpoint(last_path)
    if meta["model_config"] != model_cfg:
        raise CornerNetError(f"resume: {last_path} was trained with a different model configuration "
                             f"({meta['model_config']}) than asked for ({model_cfg})", params=("resume",))
    st = load_train_state(state_path)
    if not averaged and "ema" in st:
        raise CornerNetError(f"resume: {state_path} was saved with ema; resume with the same ema",
                             params=("resume", "ema"))
    if averaged and "ema" not in st:
        raise CornerNetError(f"resume: {state_path} was saved without ema; resume without it",
                             params=("resume", "ema"))
    saved = st.get("settings")  # absent in older resume states
    changed = [f"{k} {saved[k]!r} -> {v!r}" for k, v in settings.items()
               if saved is not None and k in saved and saved[k] != v]
    if changed:
        raise CornerNetError(f"resume: {state_path} was saved with other settings ({'; '.join(changed)}); "
                             f"resume with the run's own settings (see {out_dir / 'config.json'})",
                             params=("resume",))
    # The weights saved with the optimiser state, so a kill between writing last.safetensors and
    # state.safetensors cannot pair weights and optimiser moments from different steps.
    if "model" in st:
        return st, st["model"], state_path
    return st, ckpt_state, last_path


def resume_run(out_dir: Path, *, parts: TrainParts, model_cfg: ModelConfig, settings: dict[str, Any],
               device: torch.device) -> RunState:
    """Load the resume state of the run in `out_dir` into `parts` and the global RNGs (see `_read_resumable`
    for what is refused) and return where the run stopped."""
    st, weights, source = _read_resumable(out_dir, model_cfg=model_cfg, averaged=parts.ema is not None,
                                          settings=settings)
    load_state(parts.model, {k: v.to(device) for k, v in weights.items()}, source)
    parts.optimizer.load_state_dict(st["optimizer"])
    for param, state in parts.optimizer.state.items():  # moments in the parameter's memory format, as in a straight run
        for key, value in state.items():
            if torch.is_tensor(value) and value.shape == param.shape:
                state[key] = torch.empty_like(param).copy_(value)
    if parts.ema is not None:
        load_state(parts.ema.module, {k: v.to(device) for k, v in st["ema"].items()}, out_dir / "state.safetensors")
        parts.ema.n_averaged.fill_(int(st["ema_n"]))
    if st.get("scaler"):
        parts.scaler.load_state_dict(st["scaler"])
    set_rng_state(st["rng"])
    return RunState(step=int(st["step"]), best_ap=st.get("best_ap"), train_s=float(st.get("train_s", 0.0)),
                    cpu_s=float(st.get("cpu_s", 0.0)))


def earlier_transfer(out_dir: Path) -> dict[str, Any] | None:
    """What a resumed run's fresh start transferred from its weights, as its config.json recorded it."""
    try:
        return json.loads((out_dir / "config.json").read_text()).get("weights_transfer")
    except (OSError, ValueError, AttributeError):
        return None


__all__ = ["Checkpointer", "RunState", "earlier_transfer", "resume_run", "rng_state", "set_rng_state",
           "trajectory_settings"]
