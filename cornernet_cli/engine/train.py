"""The one training loop: Adam, warm-up and step decay, clipping, AMP, DDP, atomic checkpoints, exact resume.

Run folder (`out_dir`):
    config.json          the resolved configuration (model, data, optimisation, paths)
    metrics.jsonl        one JSON object per logged step and per validation (engine/runlog.py)
    last.safetensors     the latest model checkpoint (cornernet checkpoint format)
    best.safetensors     the best model by validation AP (the final model when there is no validation split)
    state.safetensors    the resume state: weights, optimiser, GradScaler, step, clocks, RNG states (no pickle),
                         self-contained so that one atomic write holds everything --resume needs (engine/state.py)
    curves.png           loss terms, learning rate and validation AP over steps (cornernet_cli.plots), every run
    tensorboard/         with tensorboard=True: the same numbers as TensorBoard event files (engine/board.py)
    summary.json         how the run ended: status, step, best AP, images/s, per-rank weight checksums

Distributed: launched by `torchrun`, the loop reads RANK / WORLD_SIZE / LOCAL_RANK, uses NCCL on GPUs and
gloo on CPUs, shards every global batch across ranks, and only rank 0 logs and writes files
(engine/distributed.py).

Exact resume: the data order and every sample's augmentation are functions of the seed and the sample's
position in the stream, not of the worker that loads them (cornernet_cli.data.loader), so resuming at
step s replays exactly what a straight run does from step s (on the same machine and thread count).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from cornernet_cli.config import DataConfig, ModelConfig, TrainConfig
from cornernet_cli.data.loader import build_train_loader, next_batch
from cornernet_cli.engine.build import TrainParts, build_parts, check_writable, load_train_split, seed_everything
from cornernet_cli.engine.distributed import (
    DistEnv,
    any_rank,
    barrier,
    param_checksums,
    setup_distributed,
    shutdown_distributed,
    wrap_ddp,
)
from cornernet_cli.engine.finetune import TransferReport, keep_frozen_statistics
from cornernet_cli.engine.precision import amp_dtype, autocast
from cornernet_cli.engine.progress import TrainProgress
from cornernet_cli.engine.rundir import claims_run_folder
from cornernet_cli.engine.runlog import RunLog, Throughput, train_row, write_summary
from cornernet_cli.engine.schedule import budget_spent, budget_used, expected_steps, lr_factor
from cornernet_cli.engine.state import Checkpointer, RunState, earlier_transfer, resume_run, trajectory_settings
from cornernet_cli.engine.validation import Validator, validate_and_save
from cornernet_cli.errors import CornerNetError


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    status: str  # finished | interrupted | stopped | time limit
    best_ap: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    images_per_s: float = 0.0
    param_checksums: list[float] = field(default_factory=list)


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
    the same way once that much wall-clock time has passed (status "time limit"; `resume` continues);
    `max_cpu_minutes` once the training steps have used that much CPU time in this process (threads summed,
    validation excluded; with workers=0 that is all the training work), a budget that a shared machine's
    load does not distort. metrics.jsonl records both clocks: train_min (wall) and cpu_min, cumulative
    over resumes. `tensorboard`: also write the metrics as TensorBoard event files into out_dir/tensorboard.
    """
    # Here, not at the top: matplotlib takes about a second to import, which `import cornernet_cli` and the
    # CLI's start-up must not pay. At the start of the run, not its end, so that a run never meets plotting
    # code changed under it (a reinstall, an edit).
    from cornernet_cli.plots import training_curves

    out_dir, tc = Path(out_dir), train_cfg
    run = _set_up(data_dir=data_dir, out_dir=out_dir, model_cfg=model_cfg, data_cfg=data_cfg, tc=tc,
                  train_split=train_split, val_dir=val_dir, val_split=val_split, device=device, resume=resume,
                  val_max_images=val_max_images, tensorboard=tensorboard)
    env, dev, parts, state, log = run.env, run.device, run.parts, run.state, run.log
    end_step = tc.iters if stop_at_step is None else min(tc.iters, stop_at_step)
    used = budget_used(state, time_budget=tc.time_budget, time_clock=tc.time_clock, env=env, device=dev)
    status, last_metrics = "finished", {}
    parts.model.train()
    keep_frozen_statistics(parts.model, tc.freeze)
    with _StopFlag() as stop, TrainProgress(total=None if tc.time_budget > 0 else tc.iters, start=state.step,
                                            enabled=progress and env.is_main) as bar:
        if run.transfer_report is not None:
            bar.note(run.transfer_report.describe())
        batches, throughput, t_start = iter(run.loader), Throughput(), time.perf_counter()
        while state.step < end_step and not budget_spent(used):  # a resumed run may have spent its budget
            lr = tc.lr * lr_factor(state.step, warmup_iters=tc.warmup_iters, lr_steps=tuple(tc.lr_steps),
                                   gamma=tc.lr_gamma, schedule=tc.lr_schedule, total=tc.iters, progress=used)
            loss_value, terms, images = _train_step(run, batches, tc=tc, lr=lr)
            used = budget_used(state, time_budget=tc.time_budget, time_clock=tc.time_clock, env=env, device=dev)

            images_per_s = throughput.update(images * env.world_size)
            values = {k: float(v) for k, v in terms.items()}
            bar.update(state.step, loss=loss_value, terms=values, lr=lr, images_per_s=images_per_s,
                       total=expected_steps(state.step, used))
            finished = state.step == tc.iters or budget_spent(used)
            if log.enabled and (state.step % log_every == 0 or state.step == end_step or finished):
                last_metrics = train_row(state, loss=loss_value, terms=values, lr=lr, images_per_s=images_per_s)
                log.write(last_metrics)
            _validate_or_save(run, validate=finished or bool(val_every and state.step % val_every == 0),
                              save=state.step % save_every == 0, bar=bar)
            if budget_spent(used):
                break
            reason = _stop_reason(signalled=stop.signum is not None, wall_s=time.perf_counter() - t_start,
                                  cpu_s=state.cpu_s, max_minutes=max_minutes, max_cpu_minutes=max_cpu_minutes,
                                  env=env, device=dev)
            if reason is not None:
                status = reason
                break
    if status == "finished" and state.step < tc.iters and not budget_spent(used):
        status = "stopped"
    return _finish(run, out_dir=out_dir, tc=tc, status=status, throughput=throughput, last_metrics=last_metrics,
                   training_curves=training_curves)


def _train_step(run: _Run, batches: Iterator[dict[str, torch.Tensor]], *, tc: TrainConfig, lr: float
                ) -> tuple[float, dict[str, torch.Tensor], int]:
    """One optimiser step at learning rate `lr` on the next batch, counted in run.state (step, and the step's
    wall-clock and CPU seconds). Returns the loss, its weighted terms and the images in this rank's batch; a
    non-finite loss on any rank stops the run."""
    parts, state = run.parts, run.state
    for group in parts.optimizer.param_groups:
        group["lr"] = lr
    w0, c0 = time.perf_counter(), time.process_time()
    batch = _next_batch(batches, state=state, saver=run.saver)
    loss, terms, images = _forward(run.ddp_model, parts.criterion, batch, device=run.device, dtype=run.amp_dtype,
                                   channels_last=tc.channels_last)
    loss_value = float(loss.detach())
    if any_rank(not math.isfinite(loss_value), run.env, run.device):
        raise _non_finite_loss(state, terms, parts=parts, saver=run.saver)
    _optimise(loss, parts, grad_clip=tc.grad_clip)
    state.step += 1
    state.train_s += time.perf_counter() - w0
    state.cpu_s += time.process_time() - c0
    return loss_value, terms, images


def _validate_or_save(run: _Run, *, validate: bool, save: bool, bar: TrainProgress) -> None:
    """After a step: validate (rank 0; the others wait) and save the checkpoints with the result, else save
    them when `save` is due. Without a validation split every due save is a plain save."""
    if run.validator is not None and validate:
        if run.env.is_main:
            validate_and_save(run.state, validator=run.validator, parts=run.parts, saver=run.saver, log=run.log,
                              bar=bar)
        barrier(run.env)
    elif save:
        run.saver.save(run.state)


def _finish(run: _Run, *, out_dir: Path, tc: TrainConfig, status: str, throughput: Throughput,
            last_metrics: dict[str, Any], training_curves: Callable[[Path, Path], Any]) -> TrainResult:
    """The last save (best.safetensors too when nothing was validated and the run finished), summary.json and
    curves.png (rank 0), the per-rank weight checksums, and the end of the distributed job."""
    env, state, saver = run.env, run.state, run.saver
    saver.save(state, best=(run.validator is None or not saver.best_path.exists()) and status == "finished")
    run.log.close()

    checksums = param_checksums(run.parts.model, env, run.device)
    if env.is_main:
        write_summary(out_dir / "summary.json", status=status, state=state, iters=tc.iters,
                      time_budget=tc.time_budget, time_clock=tc.time_clock, images_per_s=throughput.images_per_s,
                      world_size=env.world_size, checksums=checksums, last_metrics=last_metrics)
        training_curves(out_dir / "metrics.jsonl", out_dir / "curves.png")
    shutdown_distributed(env)
    return TrainResult(out_dir=out_dir, step=state.step, status=status, best_ap=state.best_ap, metrics=last_metrics,
                       images_per_s=throughput.images_per_s, param_checksums=checksums)


@dataclass(frozen=True)
class _Run:
    """A training run, set up and ready for its first step (rank `env.rank` of the job)."""

    env: DistEnv
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype; None: fp32
    parts: TrainParts
    ddp_model: nn.Module  # parts.model, in DDP when distributed
    loader: DataLoader  # endless, from the resumed position
    state: RunState
    saver: Checkpointer
    log: RunLog
    validator: Validator | None  # None without a validation split
    transfer_report: TransferReport | None  # what a fresh fine-tuning run took from its weights


def _set_up(*, data_dir: str | Path, out_dir: Path, model_cfg: ModelConfig, data_cfg: DataConfig, tc: TrainConfig,
            train_split: str, val_dir: str | Path | None, val_split: str, device: str, resume: bool,
            val_max_images: int | None, tensorboard: bool) -> _Run:
    """Everything `train` needs before its first step (arguments as train's), in the order that keeps a
    resumed run exact: the seeds before the model, the resume state (RNG states included) before the data.
    Writes config.json."""
    dev, env = setup_distributed(device)
    dtype = amp_dtype(tc.amp, dev)  # bf16 also on the CPU (opt-in); fp16 needs CUDA
    base = load_train_split(data_dir, train_split)
    class_names, category_ids = list(base.class_names), list(base.category_ids)
    model_cfg = dataclasses.replace(model_cfg, num_classes=len(class_names))
    if env.is_main:
        check_writable(out_dir)
    seed_everything(tc.seed)
    parts, report = build_parts(model_cfg, device=dev, weights="" if resume else tc.weights, freeze_part=tc.freeze,
                                channels_last=tc.channels_last, lr=tc.lr, weight_decay=tc.weight_decay, amp=tc.amp,
                                ema=tc.ema, pull_weight=tc.pull_weight, push_weight=tc.push_weight,
                                offset_weight=tc.offset_weight)
    settings = trajectory_settings(tc, data_cfg)
    if resume:
        state = resume_run(out_dir, parts=parts, model_cfg=model_cfg, settings=settings, device=dev)
        transfer = earlier_transfer(out_dir)
    else:
        state, transfer = RunState(), report.to_dict() if report else None
    if env.is_main:
        (out_dir / "config.json").write_text(json.dumps({
            "model": model_cfg.to_dict(), "data": dataclasses.asdict(data_cfg), "train": dataclasses.asdict(tc),
            "data_dir": str(data_dir), "train_split": train_split, "val_dir": str(val_dir) if val_dir else None,
            "val_split": val_split, "device": str(dev), "world_size": env.world_size, "amp": tc.amp,
            "class_names": class_names, "category_ids": category_ids, "weights_transfer": transfer,
        }, indent=2))
    ddp_model = wrap_ddp(parts.model, env, dev)
    loader = build_train_loader(
        data_dir, train_split, input_size=data_cfg.input_size, batch_size=tc.batch_size, workers=tc.workers,
        seed=tc.seed, radius_mode=data_cfg.radius_mode, rank=env.rank, world_size=env.world_size,
        start=state.step * tc.batch_size, data_cfg=data_cfg, pin_memory=dev.type == "cuda", base=base,
        centres=model_cfg.centre_head, output_stride=model_cfg.output_stride)
    meta = {"data_dir": str(data_dir), "input_size": data_cfg.input_size, "test_scale": data_cfg.test_scale,
            **({"weights_transfer": transfer} if transfer else {})}
    saver = Checkpointer(out_dir=out_dir, parts=parts, class_names=class_names, category_ids=category_ids,
                         meta=meta, settings=settings, enabled=env.is_main)
    validator = None if val_dir is None else Validator(
        val_dir=val_dir, split=val_split, device=dev, class_names=class_names, category_ids=category_ids,
        scales=tuple(tc.val_scales), max_images=val_max_images, amp=tc.amp, freeze=tc.freeze)
    log = RunLog(out_dir, resumed_at=state.step if resume else None, tensorboard=tensorboard, enabled=env.is_main)
    return _Run(env=env, device=dev, amp_dtype=dtype, parts=parts, ddp_model=ddp_model, loader=loader, state=state,
                saver=saver, log=log, validator=validator, transfer_report=report)


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


def _next_batch(batches: Iterator[dict[str, torch.Tensor]], *, state: RunState, saver: Checkpointer
                ) -> dict[str, torch.Tensor]:
    """The next training batch (data.loader.BATCH_KEYS, on the CPU). A data error, such as an image changed
    or removed while the run reads it, saves the state before it stops the run, so that `resume` continues
    once the data is fixed."""
    try:
        return next_batch(batches)
    except CornerNetError as e:
        saver.save(state)
        raise CornerNetError(f"{e}; stopped at step {state.step} with the state saved: fix the data, then "
                             f"resume continues", params=(*e.params, "resume")) from None


def _forward(model: nn.Module, criterion: nn.Module, batch: dict[str, torch.Tensor], *, device: torch.device,
             dtype: torch.dtype | None, channels_last: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """The loss of one batch: `batch["image"]` [B, 3, H, W] normalised, and the targets. The network runs
    under autocast to `dtype` (None: fp32); its heads are cast back to fp32 for the loss. Returns the loss
    (a scalar with gradient), its weighted terms (detached scalars) and B."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    images = batch["image"]
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, dtype):
        outputs = model(images)
    outputs = [o.map(torch.Tensor.float) for o in outputs]
    loss, terms = criterion(outputs, batch)
    return loss, terms, images.shape[0]


def _non_finite_loss(state: RunState, terms: dict[str, torch.Tensor], *, parts: TrainParts, saver: Checkpointer
                     ) -> CornerNetError:
    """The error that stops a run whose loss is NaN or infinite at `state.step`, naming the loss terms. The
    state is saved first while the weights are still finite, so last.safetensors holds the last good ones."""
    if all(torch.isfinite(p).all() for p in parts.model.parameters()):
        saver.save(state)
    detail = ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
    return CornerNetError(f"non-finite loss at step {state.step} ({detail}); stopped. The last good weights are in "
                          f"{saver.last_path}; try a lower lr, amp off or a larger grad_clip",
                          params=("lr", "amp", "grad_clip"))


def _optimise(loss: torch.Tensor, parts: TrainParts, *, grad_clip: float) -> None:
    """One optimiser step on `loss`: backward through the GradScaler (gradients averaged over the ranks by
    DDP), the gradient norm clipped to `grad_clip` (0: not clipped), Adam, then the weight average."""
    parts.optimizer.zero_grad(set_to_none=True)
    parts.scaler.scale(loss).backward()
    if grad_clip > 0:
        parts.scaler.unscale_(parts.optimizer)
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), grad_clip)
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    if parts.ema is not None:
        parts.ema.update_parameters(parts.model)


def _stop_reason(*, signalled: bool, wall_s: float, cpu_s: float, max_minutes: float | None,
                 max_cpu_minutes: float | None, env: DistEnv, device: torch.device) -> str | None:
    """Why the run stops after this step, the same on every rank (collectives: every rank asks at every step):
    "interrupted" (Ctrl-C or SIGTERM), "time limit" (`wall_s` seconds since the start past `max_minutes`, or
    the training steps' `cpu_s` past `max_cpu_minutes`), or None to go on."""
    if any_rank(signalled, env, device):
        return "interrupted"
    if max_minutes is not None and any_rank(wall_s > 60 * max_minutes, env, device):
        return "time limit"
    if max_cpu_minutes is not None and any_rank(cpu_s > 60 * max_cpu_minutes, env, device):
        return "time limit"
    return None
