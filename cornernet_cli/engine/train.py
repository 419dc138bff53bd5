"""The one training loop: Adam, warm-up and step decay, clipping, AMP, DDP, atomic checkpoints, exact resume.

Run folder (`out_dir`):
    config.json          the resolved configuration (model, data, optimisation, paths)
    metrics.jsonl        one JSON object per logged step and per validation
    last.safetensors     the latest model checkpoint (cornernet checkpoint format)
    best.safetensors     the best model by validation AP (the final model when there is no validation split)
    state.safetensors    the resume state: weights, optimiser, GradScaler, step, clocks, RNG states (no pickle),
                         self-contained so that one atomic write holds everything --resume needs
    curves.png           loss terms, learning rate and validation AP over steps (cornernet_cli.plots), every run
    tensorboard/         with tensorboard=True: the same numbers as TensorBoard event files (engine/board.py)
    summary.json         how the run ended: status, step, best AP, images/s, per-rank weight checksums

Distributed: launched by `torchrun`, the loop reads RANK / WORLD_SIZE / LOCAL_RANK, uses NCCL on GPUs and
gloo on CPUs, shards every global batch across ranks, and only rank 0 logs and writes files.

Exact resume: the data order and every sample's augmentation are functions of the seed and the sample's
position in the stream, not of the worker that loads them (cornernet_cli.data.loader), so resuming at
step s replays exactly what a straight run does from step s (on the same machine and thread count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cornernet_cli.config import DataConfig, ModelConfig, TrainConfig
from cornernet_cli.engine.checkpoint import (
    load_state,
    load_train_state,
    read_checkpoint,
    save_checkpoint,
    save_train_state,
    unwrap,
)
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.finetune import freeze, keep_frozen_statistics, transfer_weights
from cornernet_cli.engine.rundir import claims_run_folder
from cornernet_cli.errors import CornerNetError

# ---- distributed ---------------------------------------------------------------------------------------


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


def _any_rank(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True if `flag` is true on any rank (a collective: every rank must call it)."""
    if not env.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


# ---- schedule ------------------------------------------------------------------------------------------


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


def _budget_used(clock: dict[str, float], tc: TrainConfig, env: DistEnv, device: torch.device) -> float:
    """The fraction of the time budget used so far, the largest over the ranks (so every replica takes the
    same learning rate and stops at the same step). A collective when distributed."""
    used = clock["cpu_s" if tc.time_clock == "cpu" else "train_s"] / (60.0 * tc.time_budget)
    if env.enabled:
        t = torch.tensor([used], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        used = float(t.item())
    return used


# ---- run folder and resume -----------------------------------------------------------------------------


def _open_metrics(path: Path, resumed_at: int | None):
    """metrics.jsonl for appending: a fresh run starts it empty; a resumed one keeps the rows up to the step
    it resumes from (rows logged after the last save are logged again by the replay)."""
    if resumed_at is None or not path.is_file():
        return path.open("w")
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= resumed_at:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    path.write_text("".join(f"{line}\n" for line in kept))
    return path.open("a")


def _trajectory_settings(tc: TrainConfig, data_cfg: DataConfig) -> dict[str, Any]:
    """Settings a resumed run must share with the saved one to continue it exactly (stored in the resume
    state). --iters is among them only for the cosine schedule, whose shape it sets; a step-schedule run may
    be extended."""
    settings: dict[str, Any] = {"lr_schedule": tc.lr_schedule, "ema": tc.ema, "pull_weight": tc.pull_weight,
                                "push_weight": tc.push_weight, "offset_weight": tc.offset_weight,
                                "vflip": data_cfg.vflip, "transpose": data_cfg.transpose,
                                "time_budget": tc.time_budget, "time_clock": tc.time_clock, "freeze": tc.freeze,
                                "lr": tc.lr, "weights": tc.weights}
    if tc.lr_schedule == "cosine" and not tc.time_budget:
        settings["iters"] = tc.iters
    return settings


def _earlier_transfer(out_dir: Path) -> dict[str, Any] | None:
    """What a resumed run's fresh start transferred from its weights, as its config.json recorded it."""
    try:
        return json.loads((out_dir / "config.json").read_text()).get("weights_transfer")
    except (OSError, ValueError, AttributeError):
        return None


# ---- the loop ------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    status: str  # finished | interrupted | stopped | time limit
    best_ap: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    images_per_s: float = 0.0
    param_checksums: list[float] = field(default_factory=list)


class _StopFlag:
    """Ctrl-C / SIGTERM set a flag; the loop saves and leaves at the next step boundary."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:  # second Ctrl-C: leave now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@claims_run_folder
def train(
    *,
    data_dir: str | Path,
    out_dir: str | Path,
    model_cfg: ModelConfig,
    data_cfg: DataConfig = DataConfig(),
    train_cfg: TrainConfig = TrainConfig(),
    train_split: str = "train",
    val_dir: str | Path | None = None,
    val_split: str = "val",
    device: str = "auto",
    resume: bool = False,
    exist_ok: bool = False,
    log_every: int = 10,
    val_every: int = 0,
    save_every: int = 500,
    val_max_images: int | None = None,
    stop_at_step: int | None = None,
    max_minutes: float | None = None,
    max_cpu_minutes: float | None = None,
    progress: bool = True,
    tensorboard: bool = False,
) -> TrainResult:
    """Train CornerNet on a COCO-format dataset folder; see the module docstring for the run folder.

    model_cfg.num_classes is replaced by the dataset's class count. A folder that holds an earlier run is
    refused unless `resume` (continue it) or `exist_ok` (replace it), and the folder is locked against a
    second process while this one runs (`cornernet_cli.engine.rundir`). `stop_at_step` ends the run early
    (as an interruption would: resume state saved) and exists for tests and tooling. `max_minutes` ends it
    the same way once that much wall-clock time has passed (status "time limit"; --resume continues);
    `max_cpu_minutes` once the training steps have used that much CPU time in this process (threads summed,
    validation excluded; with workers=0 that is all the training work), a budget that a shared machine's
    load does not distort. metrics.jsonl records both clocks: train_min (wall) and cpu_min, cumulative
    over resumes. `tensorboard`: also write the metrics as TensorBoard event files into out_dir/tensorboard.
    """
    from cornernet_cli.data.coco import CocoDetection
    from cornernet_cli.data.loader import build_train_loader, next_batch
    from cornernet_cli.losses import CornerNetLoss
    from cornernet_cli.model.cornernet import CornerNet

    out_dir = Path(out_dir)
    env0 = DistEnv(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                   int(os.environ.get("LOCAL_RANK", "0")))
    dev = resolve_device(device, env0.local_rank)
    env = init_distributed(dev)
    tc = train_cfg
    from cornernet_cli.engine.precision import amp_dtype as _amp_dtype
    from cornernet_cli.engine.precision import autocast

    amp = tc.amp
    amp_dtype = _amp_dtype(amp, dev)  # bf16 also on the CPU (opt-in); fp16 needs CUDA

    base = CocoDetection.from_folder(data_dir, train_split)
    class_names, category_ids = list(base.class_names), list(base.category_ids)
    if not class_names:
        raise CornerNetError(f"{data_dir}: the {train_split} split has no categories")
    model_cfg = dataclasses.replace(model_cfg, num_classes=len(class_names))
    if len(base) == 0:
        raise CornerNetError(f"{data_dir}: the {train_split} split has no images")
    if base.num_boxes == 0:
        raise CornerNetError(f"{base.ann_path}: the {train_split} split has {len(base)} images but no boxes to "
                             f"train on (crowd and zero-size boxes are left out)")

    if env.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe = out_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise CornerNetError(f"cannot write to output folder {out_dir}: {e.strerror or e}") from None

    torch.manual_seed(tc.seed)
    random.seed(tc.seed)
    np.random.seed(tc.seed)
    model = CornerNet.from_config(model_cfg)
    report = transfer_weights(model, tc.weights) if tc.weights and not resume else None
    transfer = report.to_dict() if report else None
    freeze(model, tc.freeze)
    model = model.to(dev)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    criterion = CornerNetLoss(pull_weight=tc.pull_weight, push_weight=tc.push_weight,
                              offset_weight=tc.offset_weight)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=tc.lr,
                                 weight_decay=tc.weight_decay)
    scaler = torch.amp.GradScaler(dev.type, enabled=(amp == "fp16"))
    ema = None
    if tc.ema > 0:
        from cornernet_cli.engine.ema import build_ema

        ema = build_ema(model, tc.ema)
    # What validation, last.safetensors and best.safetensors hold: the averaged weights when --ema is on.
    eval_model = ema.module if ema is not None else model

    start_step, best_ap = 0, None
    clock = {"train_s": 0.0, "cpu_s": 0.0}  # training steps only: wall and process CPU seconds
    state_path, last_path, best_path = out_dir / "state.safetensors", out_dir / "last.safetensors", \
        out_dir / "best.safetensors"
    if resume:
        if not state_path.is_file() or not last_path.is_file():
            raise CornerNetError(f"--resume: no resume state in {out_dir} (expected state.safetensors and "
                                 f"last.safetensors); start without --resume")
        ckpt_state, meta = read_checkpoint(last_path)
        if meta["model_config"] != model_cfg:
            raise CornerNetError(f"--resume: {last_path} was trained with a different model configuration "
                                 f"({meta['model_config']}) than asked for ({model_cfg})")
        st = load_train_state(state_path)
        if ema is None and "ema" in st:
            raise CornerNetError(f"--resume: {state_path} was saved with --ema; resume with the same --ema")
        if ema is not None and "ema" not in st:
            raise CornerNetError(f"--resume: {state_path} was saved without --ema; resume without it")
        saved = st.get("settings")  # absent in older resume states
        changed = [f"{k} {saved[k]!r} -> {v!r}" for k, v in _trajectory_settings(tc, data_cfg).items()
                   if saved is not None and k in saved and saved[k] != v]
        if changed:
            raise CornerNetError(f"--resume: {state_path} was saved with other settings ({'; '.join(changed)}); "
                                 f"resume with the run's own settings (see {out_dir / 'config.json'})")
        # The weights saved with the optimiser state, so a kill between writing last.safetensors and
        # state.safetensors cannot pair weights and optimiser moments from different steps.
        weights = st.get("model", ckpt_state)
        load_state(model, {k: v.to(dev) for k, v in weights.items()}, state_path if "model" in st else last_path)
        optimizer.load_state_dict(st["optimizer"])
        for param, state in optimizer.state.items():  # moments in the parameter's memory format, as in a straight run
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape:
                    state[key] = torch.empty_like(param).copy_(value)
        if ema is not None:
            load_state(ema.module, {k: v.to(dev) for k, v in st["ema"].items()}, state_path)
            ema.n_averaged.fill_(int(st["ema_n"]))
        if st.get("scaler"):
            scaler.load_state_dict(st["scaler"])
        start_step, best_ap = int(st["step"]), st.get("best_ap")
        clock = {"train_s": float(st.get("train_s", 0.0)), "cpu_s": float(st.get("cpu_s", 0.0))}
        _set_rng_state(st["rng"])
        transfer = _earlier_transfer(out_dir)

    run_config = {
        "model": model_cfg.to_dict(), "data": dataclasses.asdict(data_cfg), "train": dataclasses.asdict(tc),
        "data_dir": str(data_dir), "train_split": train_split, "val_dir": str(val_dir) if val_dir else None,
        "val_split": val_split, "device": str(dev), "world_size": env.world_size, "amp": amp,
        "class_names": class_names, "category_ids": category_ids, "weights_transfer": transfer,
    }
    if env.is_main:
        (out_dir / "config.json").write_text(json.dumps(run_config, indent=2))

    ddp_model = model
    if env.enabled:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)

    loader = build_train_loader(
        data_dir, train_split, input_size=data_cfg.input_size, batch_size=tc.batch_size, workers=tc.workers,
        seed=tc.seed, radius_mode=data_cfg.radius_mode, rank=env.rank, world_size=env.world_size,
        start=start_step * tc.batch_size, data_cfg=data_cfg, pin_memory=dev.type == "cuda", base=base,
        centres=model_cfg.centre_head, output_stride=model_cfg.output_stride)

    has_val = val_dir is not None
    total = tc.iters
    end_step = total if stop_at_step is None else min(total, stop_at_step)
    board = None
    if tensorboard and env.is_main:
        from cornernet_cli.engine.board import Board

        board = Board(out_dir / "tensorboard", purge_step=start_step if resume else None)
    metrics_file = _open_metrics(out_dir / "metrics.jsonl", start_step if resume else None) if env.is_main else None
    extra_meta = {"data_dir": str(data_dir), "input_size": data_cfg.input_size, "test_scale": data_cfg.test_scale,
                  **({"weights_transfer": transfer} if transfer else {})}

    def save(step: int, *, best: bool = False) -> None:
        if not env.is_main:
            return
        meta_extra = {**extra_meta, "step": step}
        save_checkpoint(last_path, eval_model, class_names=class_names, category_ids=category_ids,
                        extra=meta_extra)
        ema_state = {"ema": ema.module.state_dict(), "ema_n": int(ema.n_averaged)} if ema is not None else {}
        save_train_state(state_path, {
            "model": model.state_dict(),  # the resume state is self-contained: one atomic file
            **ema_state,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "step": step, "best_ap": best_ap,
            "train_s": clock["train_s"], "cpu_s": clock["cpu_s"],
            "settings": _trajectory_settings(tc, data_cfg),
            "rng": _rng_state(),
        })
        if best:
            save_checkpoint(best_path, eval_model, class_names=class_names, category_ids=category_ids,
                            extra=meta_extra)

    # Loaded now, not at the first validation: a run must not pick up code changed under it (a reinstall, an
    # edit) halfway through, where the new evaluation code would meet this process's old model classes.
    from cornernet_cli.engine.evaluate import evaluate_model
    from cornernet_cli.plots import training_curves

    def validate(step: int) -> dict[str, Any]:
        eval_model.eval()
        result = evaluate_model(eval_model, val_dir, val_split, device=dev, class_names=class_names,
                                category_ids=category_ids, flip=False, scales=tuple(tc.val_scales),
                                max_images=val_max_images, amp=amp,
                                progress=False)
        model.train()
        keep_frozen_statistics(model, tc.freeze)
        return result

    from cornernet_cli.engine.progress import TrainProgress

    status, step, imgs_per_s, budget_done = "finished", start_step, 0.0, False
    window: list[tuple[float, int]] = []
    last_metrics: dict[str, Any] = {}
    model.train()
    keep_frozen_statistics(model, tc.freeze)
    budgeted = tc.time_budget > 0
    used = _budget_used(clock, tc, env, dev) if budgeted else None
    budget_done = budgeted and used >= 1.0  # a resumed run that had used its whole budget trains no more
    with _StopFlag() as stop, TrainProgress(total=None if budgeted else total, start=start_step,
                                            enabled=progress and env.is_main) as bar:
        if report is not None:
            bar.note(report.describe())
        batches = iter(loader)
        t_start = t_last = time.perf_counter()
        while step < end_step and not budget_done:
            lr = tc.lr * lr_factor(step, warmup_iters=tc.warmup_iters, lr_steps=tuple(tc.lr_steps),
                                   gamma=tc.lr_gamma, schedule=tc.lr_schedule, total=tc.iters, progress=used)
            for group in optimizer.param_groups:
                group["lr"] = lr
            w0, c0 = time.perf_counter(), time.process_time()
            try:
                batch = next_batch(batches)
            except CornerNetError as e:  # e.g. an image changed or removed while the run reads it
                save(step)
                raise CornerNetError(f"{e}; stopped at step {step} with the state saved: fix the data, then "
                                     f"--resume continues") from None
            batch = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
            images = batch["image"]
            if tc.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast(dev, amp_dtype):
                outputs = ddp_model(images)
            outputs = [o.map(torch.Tensor.float) for o in outputs]
            loss, terms = criterion(outputs, batch)
            loss_value = float(loss.detach())
            if _any_rank(not math.isfinite(loss_value), env, dev):
                finite = all(torch.isfinite(p).all() for p in model.parameters())
                if finite:
                    save(step)
                detail = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
                raise CornerNetError(
                    f"non-finite loss at step {step} ({detail}); stopped. The last good weights are in "
                    f"{last_path}; try a lower --lr, --amp off or a larger --grad-clip")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if tc.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            clock["train_s"] += time.perf_counter() - w0
            clock["cpu_s"] += time.process_time() - c0
            if budgeted:
                used = _budget_used(clock, tc, env, dev)
                budget_done = used >= 1.0

            now = time.perf_counter()
            window.append((now - t_last, images.shape[0] * env.world_size))
            t_last = now
            window = window[-20:]
            imgs_per_s = sum(n for _, n in window) / max(1e-9, sum(t for t, _ in window))
            values = {k: float(v) for k, v in terms.items()}
            bar.update(step, loss=loss_value, terms=values, lr=lr, images_per_s=imgs_per_s,
                       total=round(step / max(used, 1e-9)) if budgeted and used > 0 else None)
            finished = step == total or budget_done
            if metrics_file and (step % log_every == 0 or step == end_step or finished):
                last_metrics = {"step": step, "loss": loss_value, **values, "lr": lr,
                                "images_per_s": round(imgs_per_s, 3), "time": time.time(),
                                "train_min": round(clock["train_s"] / 60, 3), "cpu_min": round(clock["cpu_s"] / 60, 3)}
                metrics_file.write(json.dumps(last_metrics) + "\n")
                metrics_file.flush()
                if board:
                    board.write(last_metrics)
            if has_val and (finished or (val_every and step % val_every == 0)):
                if env.is_main:
                    try:
                        result = validate(step)
                    except BaseException:
                        save(step)  # a failing validation must not lose the training done so far
                        raise
                    ap = float(result.get("AP", -1.0))
                    improved = best_ap is None or ap > best_ap
                    best_ap = ap if improved else best_ap
                    row = {"step": step, "train_min": round(clock["train_s"] / 60, 3),
                           "cpu_min": round(clock["cpu_s"] / 60, 3), "val": result}
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    if board:
                        board.write(row)
                    bar.note(f"step {step}: val AP {ap:.4f} AP50 {float(result.get('AP50', -1)):.4f}"
                             + (" (best)" if improved else ""))
                    save(step, best=improved)
                if env.enabled:
                    dist.barrier()
            elif step % save_every == 0:
                save(step)
            if budget_done:
                break
            if _any_rank(stop.signum is not None, env, dev):
                status = "interrupted"
                break
            if max_minutes is not None and _any_rank(time.perf_counter() - t_start > 60 * max_minutes, env, dev):
                status = "time limit"
                break
            if max_cpu_minutes is not None and _any_rank(clock["cpu_s"] > 60 * max_cpu_minutes, env, dev):
                status = "time limit"
                break
    if status == "finished" and step < total and not budget_done:
        status = "stopped"
    save(step, best=(not has_val or not best_path.exists()) and status == "finished")
    if metrics_file:
        metrics_file.close()
    if board:
        board.close()

    checksums = _param_checksums(model, env, dev)
    if env.is_main:
        summary = {"status": status, "step": step, "iters": None if budgeted else total, "best_ap": best_ap,
                   "time_budget": tc.time_budget or None, "time_clock": tc.time_clock if budgeted else None,
                   "images_per_s": round(imgs_per_s, 3), "world_size": env.world_size,
                   "param_checksums": checksums, "last_metrics": last_metrics,
                   "train_min": round(clock["train_s"] / 60, 3), "cpu_min": round(clock["cpu_s"] / 60, 3)}
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        training_curves(out_dir / "metrics.jsonl", out_dir / "curves.png")
    if env.enabled:
        dist.barrier()
        dist.destroy_process_group()
    return TrainResult(out_dir=out_dir, step=step, status=status, best_ap=best_ap, metrics=last_metrics,
                       images_per_s=imgs_per_s, param_checksums=checksums)


def _param_checksums(model: torch.nn.Module, env: DistEnv, device: torch.device) -> list[float]:
    """Sum of |w| over all parameters on every rank (gathered), to check replicas agree."""
    total = torch.stack([p.detach().double().abs().sum() for p in unwrap(model).parameters()]).sum()
    total = total.to(device).reshape(1)
    if not env.enabled:
        return [float(total)]
    gathered = [torch.zeros_like(total) for _ in range(env.world_size)]
    dist.all_gather(gathered, total)
    return [float(t) for t in gathered]
