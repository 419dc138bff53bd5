"""COCO evaluation: batched inference over a dataset split, COCO results JSON, pycocotools COCOeval.

`evaluate_model` is what training-time validation and `cornernet eval` call; `evaluate` adds loading the
checkpoint and writing results.json / metrics.json. Metrics (`cornernet_cli.engine.coco_metrics`; fractions in
0..1, -1 where COCOeval finds no ground truth for them): AP (IoU .50:.95), AP50, AP75, APs, APm, APl, AR1,
AR10, AR100, ARs, ARm, ARl, plus per-class AP and the time per image split into pre-processing, network,
decoding and NMS; the pictures come from `cornernet_cli.engine.eval_plots`.

Oracles (the paper's error analysis, section 4.5; `cornernet_cli.engine.oracle`): `oracle="heatmaps"` replaces
the predicted heatmaps by the ground-truth training targets, `"heatmaps+offsets"` the offsets too. Embeddings
are replaced as well (one distinct value per object), so grouping is exact; unlike the paper's 73.1 / 86.1 AP,
which keeps the trained embeddings, the oracle here measures the decoder, the rescaling, the category mapping
and the JSON on their own: with heatmaps+offsets it must reach AP ~ 1. `oracle_embeddings="trained"` (`evaluate`; the
`oracle_gt_embeddings=False` of `evaluate_model`) keeps the network's embeddings, the paper's setting: the gap
between the two measures how much AP the grouping loses.

Sharded (`torchrun --nproc_per_node N -m cornernet_cli.cli eval ...`): each process runs every N-th batch of
images, the COCO results are gathered to rank 0, which alone computes the metrics (sent back to every rank) and
writes the files; gloo on CPUs, NCCL on GPUs (each process on cuda:LOCAL_RANK). Same detections, so the same
metrics, as one process; time_ms is then compute time per image summed over the processes, not wall time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import Progress
from rich.table import Table
from torch import nn

from cornernet_cli.atomic import write_json
from cornernet_cli.config import DecodeConfig, preset_test_settings
from cornernet_cli.data.coco import CocoDetection, Sample
from cornernet_cli.data.letterbox import Padding
from cornernet_cli.decoder import Decoder
from cornernet_cli.engine.checkpoint import test_scales
from cornernet_cli.engine.coco_metrics import METRICS, run_cocoeval, summary_metrics
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.distributed import init_distributed
from cornernet_cli.engine.eval_plots import write_analysis
from cornernet_cli.engine.inference import StageTimer, detect_images
from cornernet_cli.engine.onnx_runner import check_amp, load_network, network_decoder, resolve_network
from cornernet_cli.engine.oracle import ORACLES, detect_with_oracle
from cornernet_cli.engine.precision import amp_dtype
from cornernet_cli.engine.rundir import claim_output
from cornernet_cli.errors import CornerNetError, SettingError
from cornernet_cli.postprocess import to_coco_results


def class_mapping(model_classes: Sequence[str], dataset: CocoDetection, *, source: str = "the model") -> list[int]:
    """Dataset category id of each model class (model class i -> returned[i]), matched by name.

    The two class lists must hold the same names (order may differ); otherwise CornerNetError naming both
    lists. Identical lists map positionally to the dataset's category ids.
    """
    model_classes, data_classes = list(model_classes), list(dataset.class_names)
    if model_classes == data_classes:
        return list(dataset.category_ids)
    if sorted(model_classes) != sorted(data_classes) or len(set(data_classes)) != len(data_classes):
        raise CornerNetError(
            f"{source} has {len(model_classes)} classes {model_classes} but {dataset.ann_path} has "
            f"{len(data_classes)} classes {data_classes}; evaluate on data with the checkpoint's classes")
    by_name = dict(zip(data_classes, dataset.category_ids))
    return [by_name[name] for name in model_classes]


def _batches(dataset: CocoDetection, count: int, batch_size: int, padding: Padding) -> list[list[int]]:
    """Indices 0..count-1 grouped into batches of images with the same padded input size (less padding)."""
    def key(i: int) -> tuple[int, int]:
        h, w = dataset.image_size(i)
        return padding.size(h), padding.size(w)

    order = sorted(range(count), key=lambda i: (key(i), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _gather_shards(results: list[dict], timer: StageTimer, world_size: int) -> list[dict]:
    """Every rank's COCO results, concatenated in rank order (a collective: every rank calls it); `timer` then
    holds the seconds and image counts of all ranks."""
    if world_size <= 1:
        return results
    shards: list[Any] = [None] * world_size
    dist.all_gather_object(shards, (results, timer.seconds, timer.images))
    timer.seconds = {s: sum(sec[s] for _, sec, _ in shards) for s in timer.seconds}
    timer.images = sum(n for _, _, n in shards)
    return [r for part, _, _ in shards for r in part]


def _from_rank0(value: Any, rank: int, world_size: int) -> Any:
    """Rank 0's `value` on every rank (a collective when world_size > 1)."""
    if world_size <= 1:
        return value
    box = [value if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _has_centre_head(model: nn.Module | None) -> bool:
    config = getattr(model, "config", None)
    return bool(getattr(config, "centre_head", False))


def evaluate_model(
    model: nn.Module | None,
    data_dir: str | Path,
    split: str,
    *,
    device: torch.device | str = "cpu",
    class_names: Sequence[str] | None = None,
    category_ids: Sequence[int] | None = None,
    flip: bool = False,
    scales: Sequence[float] = (1.0,),
    max_images: int | None = None,
    progress: bool = False,
    batch_size: int = 1,
    oracle: str | None = None,
    oracle_gt_embeddings: bool = True,
    params: DecodeConfig = DecodeConfig(),
    results_path: str | Path | None = None,
    amp: str = "off",
    plots_dir: str | Path | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """COCO metrics of `model` on split `split` of the dataset folder `data_dir`.

    model: a CornerNet (left in the mode it came in), or None with oracle="heatmaps+offsets" (then the
    dataset's classes are used). class_names: the model's classes in head order (matched to the dataset by
    name, see `class_mapping`; the dataset's category ids are written, so `category_ids` is only a fallback
    and may be None). flip / scales: test-time augmentation; max_images: evaluate the first N images only;
    batch_size: images per forward pass; results_path: also write the COCO results JSON there; amp: the
    network's autocast (off | bf16 | fp16, see `cornernet_cli.engine.precision`); plots_dir: also write the
    evaluation's pictures there (`write_analysis`; adds "best_f1" and "plots" to the result). rank / world_size:
    run only every world_size-th batch from the rank-th on, in an initialised torch.distributed group of that
    size; results are gathered, rank 0 computes the metrics and writes results_path and the pictures, every
    rank returns the metrics.

    Returns {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"
    (floats in 0..1, -1 where undefined), "per_class": {name: AP}, "time_ms": {preprocess, network, decode,
    nms, total} per image, "images": N, "detections": count, "split", "flip", "scales", "oracle", "centre_check"
    (whether boxes were checked against a centre head)}.
    """
    _check_settings(model, oracle=oracle, oracle_gt_embeddings=oracle_gt_embeddings, scales=scales, rank=rank,
                    world_size=world_size)
    dataset = CocoDetection.from_folder(data_dir, split)
    if class_names is None:
        if model is not None:
            raise ValueError("class_names is required with a model")
        class_names = dataset.class_names
    cat_ids = class_mapping(class_names, dataset, source="the checkpoint")
    del category_ids  # the dataset's ids are authoritative for its own annotation file
    count = len(dataset) if max_images is None else min(len(dataset), max(0, int(max_images)))
    timer = StageTimer()
    decoder = Decoder.for_network(params, getattr(model, "config", None))
    common = dict(decoder=decoder, device=torch.device(device), scales=scales, flip=flip, amp=amp, timer=timer)

    def detect(samples: list[Sample]) -> list[np.ndarray]:
        images = [s.image for s in samples]
        if oracle is None:
            return detect_images(model, images, **common)
        return detect_with_oracle(model, images, [(s.boxes, s.labels) for s in samples], mode=oracle,
                                  gt_embeddings=oracle_gt_embeddings, num_classes=len(class_names), **common)

    # Shard whole batches (already grouped by input size) so that each rank pads as little as one process.
    batches = _batches(dataset, count, max(1, batch_size), decoder.padding)[rank::world_size]
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    try:
        results = _coco_results(dataset, batches, detect, cat_ids, progress=progress, label=f"eval {split}")
    finally:
        if model is not None:
            model.train(was_training)
    results = _gather_shards(results, timer, world_size)
    metrics = _rank0_metrics(dataset, results, count, plots_dir=plots_dir, rank=rank, world_size=world_size)
    metrics.update({"time_ms": timer.per_image_ms(), "images": count, "detections": len(results),
                    "split": split, "flip": bool(flip), "scales": [float(s) for s in scales], "oracle": oracle,
                    "oracle_embeddings": ("gt" if oracle_gt_embeddings else "trained") if oracle else None,
                    "amp": amp, "centre_check": bool(params.centre_check and _has_centre_head(model))})
    if results_path is not None and rank == 0:
        write_json(results_path, results)
    return metrics


def _check_settings(model: nn.Module | None, *, oracle: str | None, oracle_gt_embeddings: bool,
                    scales: Sequence[float], rank: int, world_size: int) -> None:
    """SettingError (ValueError for rank) for settings of `evaluate_model` that cannot run together."""
    if oracle is not None and oracle not in ORACLES:
        raise SettingError(f"oracle must be one of {', '.join(ORACLES)}, got {oracle!r}")
    if model is None and oracle != "heatmaps+offsets":
        raise SettingError("a checkpoint is needed unless oracle is heatmaps+offsets")
    if model is None and not oracle_gt_embeddings:
        raise SettingError("oracle_embeddings trained needs a checkpoint (its embeddings are used)")
    if not scales or any(s <= 0 for s in scales):
        raise SettingError(f"scales must be positive numbers, got {list(scales)}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of world_size {world_size}")


def _coco_results(dataset: CocoDetection, batches: list[list[int]], detect: Callable[[list[Sample]], list],
                  cat_ids: Sequence[int], *, progress: bool, label: str) -> list[dict]:
    """COCO result entries of every image in `batches` (dataset indices), detected a batch at a time by
    `detect` (samples -> one [N, 6] array per sample), with a progress bar when `progress`."""
    results: list[dict] = []
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(label, total=sum(map(len, batches)))
        for batch in batches:
            samples = [dataset[i] for i in batch]
            for sample, dets in zip(samples, detect(samples)):
                results.extend(to_coco_results(dets, sample.image_id, cat_ids))
            bar.advance(task, len(batch))
    return results


def _rank0_metrics(dataset: CocoDetection, results: list[dict], count: int, *, plots_dir: str | Path | None,
                   rank: int, world_size: int) -> dict[str, Any]:
    """The metrics of `results` over the first `count` images (and the pictures in plots_dir), computed once
    on rank 0 and sent to every rank (a collective when world_size > 1)."""
    metrics: dict[str, Any] | None = None
    if rank == 0:
        metrics = {m: -1.0 for m in METRICS}
        if count:
            ev = run_cocoeval(dataset.coco, results, [dataset.image_ids[i] for i in range(count)])
            metrics = summary_metrics(ev)
            if plots_dir is not None:
                metrics.update(write_analysis(ev, dataset, plots_dir))
    return _from_rank0(metrics, rank, world_size)


def evaluate(
    *,
    checkpoint: str | Path | None,
    data_dir: str | Path,
    split: str = "val",
    device: str = "cpu",
    flip: bool | None = None,
    scales: Sequence[float] | None = None,
    batch_size: int = 1,
    max_images: int | None = None,
    oracle: str | None = None,
    oracle_embeddings: str = "gt",
    out: str | Path = "results.json",
    params: DecodeConfig = DecodeConfig(),
    progress: bool = True,
    amp: str = "off",
    offline: bool = False,
    exist_ok: bool = False,
) -> dict[str, Any]:
    """`cornernet eval`: load `checkpoint` (a checkpoint file, original / mmdetection weights, a named model, see
    `cornernet_cli.hub`, or an exported .onnx graph run by onnxruntime; offline: never download one), evaluate,
    write the COCO results JSON to `out`, the metrics to metrics.json next to it (both atomically) and the
    pictures of `write_analysis` there too. Returns the metrics (see `evaluate_model`) plus "results",
    "metrics_file", "rank" and "world_size". scales: test scales; None: the one the checkpoint was trained for
    (1 without a checkpoint). flip None: the checkpoint's preset's test procedure (`preset_test_settings`: on for
    the paper's hourglass; off for small, small-fast and squeeze). Launched by torchrun, the images are sharded
    across the processes (module docstring); only rank 0 shows progress, claims `out` and writes files.

    metrics.json records the job (checkpoint, data, split and test-time settings): results of another job
    at `out` are not replaced unless `exist_ok`; the same job writes them again. While it runs, `out` is
    locked against a second process (`cornernet_cli.engine.rundir`)."""
    # Under torchrun, "cuda" is this process's GPU (cuda:LOCAL_RANK).
    device = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    amp_dtype(amp, device)  # a bad amp fails before any work
    if oracle_embeddings not in ("gt", "trained"):
        raise SettingError(f"oracle_embeddings must be gt or trained, got {oracle_embeddings!r}")
    if oracle is None and oracle_embeddings != "gt":
        raise SettingError("oracle_embeddings only applies with oracle heatmaps or heatmaps+offsets")
    env = init_distributed(device)
    progress = progress and env.is_main
    out = Path(out)
    metrics_file = out.with_name("metrics.json")
    source = str(checkpoint) if checkpoint is not None else "the dataset"
    if checkpoint is not None:
        checkpoint = resolve_network(checkpoint, offline=offline, progress=progress)
    # The network first: the job records the flip and scales it resolves to, so a job that left them to the
    # checkpoint and one that named the same values are the same job.
    model, names = None, None
    if checkpoint is not None:
        model, meta = load_network(checkpoint, device=device)
        check_amp(model, amp)
        params = network_decoder(model, params).settings
        names = meta["class_names"]
        scales = test_scales(meta, scales)
    else:
        scales = scales or (1.0,)
    if flip is None:
        flip = preset_test_settings(model.config if model is not None else None)["flip"]
    job = {"command": "eval", "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
           "data": str(Path(data_dir).resolve()), "split": split, "flip": flip,
           "scales": [float(s) for s in scales] if scales else None, "max_images": max_images, "oracle": oracle,
           "oracle_embeddings": oracle_embeddings, "amp": amp, "centre_check": bool(params.centre_check)}
    # Only rank 0 writes, so only it holds the output lock and checks the earlier job.
    claim = (claim_output(out.parent, job=job, record_file=metrics_file, exist_ok=exist_ok, output=out,
                          lock_name=f".{out.name}.lock") if env.is_main else contextlib.nullcontext())
    with claim:
        try:
            metrics = evaluate_model(model, data_dir, split, device=device, class_names=names, flip=flip,
                                     scales=scales, max_images=max_images, progress=progress, batch_size=batch_size,
                                     oracle=oracle, oracle_gt_embeddings=oracle_embeddings == "gt", params=params,
                                     results_path=out, amp=amp, plots_dir=out.parent, rank=env.rank,
                                     world_size=env.world_size)
        except SettingError:
            raise
        except CornerNetError as e:
            raise CornerNetError(str(e).replace("the checkpoint", source, 1), e.exit_code) from None
        metrics.update({"checkpoint": source if checkpoint is not None else None, "data": str(data_dir),
                        "results": str(out), "metrics_file": str(metrics_file), "job": job,
                        "world_size": env.world_size})
        if env.is_main:
            write_json(metrics_file, metrics, indent=2)
    metrics["rank"] = env.rank
    return metrics


def metrics_tables(metrics: dict[str, Any]) -> list:
    """Rich tables: the summary metrics, per-class AP and the time per image."""
    summary = Table(title=f"COCO bbox metrics ({metrics.get('images', '?')} images, split {metrics.get('split')})")
    for name in METRICS[:9]:
        summary.add_column(name, justify="right")
    summary.add_row(*(_fmt(metrics.get(m, -1.0)) for m in METRICS[:9]))

    per_class = Table(title="AP per class")
    per_class.add_column("class")
    per_class.add_column("AP", justify="right")
    per_class.add_column("AP50", justify="right")
    ap50 = metrics.get("per_class_AP50", {})
    for name, ap in sorted(metrics.get("per_class", {}).items(), key=lambda kv: -kv[1]):
        per_class.add_row(name, _fmt(ap), _fmt(ap50.get(name, -1.0)))

    timing = Table(title="time per image (ms)")
    t = metrics.get("time_ms", {})
    for stage in ("preprocess", "network", "decode", "nms", "total"):
        timing.add_column(stage, justify="right")
    timing.add_row(*(f"{t.get(s, 0.0):.1f}" for s in ("preprocess", "network", "decode", "nms", "total")))
    return [summary, per_class, timing]


def _fmt(value: float) -> str:
    return "-" if value is None or value < 0 else f"{100 * value:.1f}"


def summary_line(metrics: dict[str, Any]) -> str:
    """One line: AP, AP50, AP75 in percent."""
    return " ".join(f"{m} {_fmt(metrics.get(m, -1.0))}" for m in ("AP", "AP50", "AP75"))


__all__ = ["class_mapping", "evaluate", "evaluate_model", "metrics_tables", "summary_line"]
