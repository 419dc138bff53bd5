"""COCO evaluation: batched inference over a dataset split, COCO results JSON, pycocotools COCOeval.

`evaluate_model` is what training-time validation and `cornernet eval` call; `evaluate` adds loading the
checkpoint and writing results.json / metrics.json. Metrics (fractions in 0..1, -1 where COCOeval finds
no ground truth for them): AP (IoU .50:.95), AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl,
plus per-class AP and the time per image split into pre-processing, network, decoding and NMS.

Oracles (the paper's error analysis, section 4.5): `oracle="heatmaps"` replaces the predicted heatmaps by
the ground-truth training targets, `"heatmaps+offsets"` the offsets too. Embeddings are replaced as well
(one distinct value per object), so grouping is exact; unlike the paper's 73.1 / 86.1 AP, which keeps the
trained embeddings, the oracle here measures the decoder, the rescaling, the category mapping and the JSON
on their own: with heatmaps+offsets it must reach AP ~ 1. `oracle_embeddings="trained"` (`evaluate`; the
`oracle_gt_embeddings=False` of `evaluate_model`) keeps the network's embeddings, the paper's setting: the gap
between the two measures how much AP the grouping loses.

Sharded (`torchrun --nproc_per_node N -m cornernet_cli.cli eval ...`): each process runs every N-th batch of
images, the COCO results are gathered to rank 0, which alone computes the metrics (sent back to every rank) and
writes the files; gloo on CPUs, NCCL on GPUs (each process on cuda:LOCAL_RANK). Same detections, so the same
metrics, as one process; time_ms is then compute time per image summed over the processes, not wall time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cornernet_cli.atomic import write_json
from cornernet_cli.config import DecodeConfig, preset_test_settings
from cornernet_cli.data.coco import CocoDetection
from cornernet_cli.data.letterbox import padded_size
from cornernet_cli.engine.distributed import init_distributed
from cornernet_cli.engine.inference import ORACLES, StageTimer, detect_images
from cornernet_cli.errors import CornerNetError, SettingError
from cornernet_cli.postprocess import to_coco_results

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


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


def _empty_results(coco_gt):
    """A COCO results object with no detections (pycocotools' loadRes refuses an empty list)."""
    from pycocotools.coco import COCO

    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset.get("images", [])),
                   "categories": list(coco_gt.dataset.get("categories", [])), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        res.createIndex()
    return res


def run_cocoeval(coco_gt, results: list[dict], image_ids: Sequence[int]):
    """pycocotools COCOeval (bbox) of `results` (COCO result entries) over `image_ids` of `coco_gt`, evaluated,
    accumulated and summarised (quietly)."""
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes adds keys to the dicts it gets (id, area, ...): give it copies.
        copies = [dict(r, bbox=list(r["bbox"])) for r in results]
        coco_dt = coco_gt.loadRes(copies) if results else _empty_results(coco_gt)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = list(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_metrics(coco_gt, results: list[dict], image_ids: Sequence[int]) -> dict[str, Any]:
    """Run COCOeval (bbox) on `results` (COCO result entries) over `image_ids` of `coco_gt`.

    Returns the 12 summary metrics (METRICS, floats, -1 where undefined) and per_class: {class name: AP}
    (AP at IoU .50:.95, all areas, 100 detections; -1 for classes without ground truth in these images).
    """
    return summary_metrics(run_cocoeval(coco_gt, results, image_ids))


def summary_metrics(ev) -> dict[str, Any]:
    """The metrics of `coco_metrics` from an accumulated COCOeval."""
    out: dict[str, Any] = {name: float(v) for name, v in zip(METRICS, ev.stats)}
    precision = ev.eval["precision"]  # [T, R, K, A, M]; T: IoU thresholds .50, .55, ..., .95
    per_class, per_class50 = {}, {}
    for k, cat_id in enumerate(ev.params.catIds):
        name = ev.cocoGt.cats[cat_id]["name"]
        for table, p in ((per_class, precision[:, :, k, 0, -1]), (per_class50, precision[0, :, k, 0, -1])):
            p = p[p > -1]
            table[name] = float(p.mean()) if p.size else -1.0
    out["per_class"] = per_class
    out["per_class_AP50"] = per_class50
    return out


# Files `write_analysis` writes next to the results (plots_dir).
PLOT_FILES = {"pr_curve": "pr_curve.png", "threshold_curves": "threshold_curves.png",
              "confusion_matrix": "confusion_matrix.png", "confusion_json": "confusion_matrix.json",
              "errors": "errors.jpg", "curves_json": "curves.json"}


def write_analysis(ev, dataset: CocoDetection, out_dir: str | Path, *, gallery: int = 9) -> dict[str, Any]:
    """The pictures of an evaluation, from the accumulated COCOeval `ev` (see cornernet_cli.engine.analysis),
    written into `out_dir`: PLOT_FILES. The confusion matrix and the error gallery use the best pooled-F1
    score threshold; the gallery shows the `gallery` images with the most errors.

    Returns {"best_f1": {threshold, f1, precision, recall, tp, fp, fn}, "plots": {key: path}}.
    """
    from cornernet_cli import plots
    from cornernet_cli.engine import analysis

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {k: out_dir / v for k, v in PLOT_FILES.items()}
    matches = analysis.class_matches(ev)
    best = analysis.best_f1(analysis.pooled(matches))
    threshold = best["threshold"]
    curves = {"pr": analysis.pr_curves(ev), "threshold": analysis.threshold_curves(matches), "best_f1": best}
    files["curves_json"].write_text(json.dumps(curves))
    plots.pr_curve(curves["pr"], files["pr_curve"])
    plots.threshold_curves(curves["threshold"], best, files["threshold_curves"])
    outcomes = analysis.image_outcomes(ev, threshold if threshold is not None else math.inf)
    confusion = analysis.confusion_matrix(outcomes, [ev.cocoGt.cats[c]["name"] for c in ev.params.catIds])
    files["confusion_json"].write_text(json.dumps({**confusion, "threshold": threshold}, indent=1))
    plots.confusion_matrix(confusion, files["confusion_matrix"], threshold=threshold)
    index_of = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    worst = sorted(outcomes.values(), key=lambda o: (-o.errors, o.image_id))[:gallery]
    tiles = [(dataset[index_of[o.image_id]].image, o,
              f"{dataset.image_path(index_of[o.image_id]).name}: {len(o.false_positives)} FP, {len(o.misses)} missed")
             for o in worst]
    if tiles:
        plots.error_gallery(tiles, files["errors"], threshold=threshold)
    else:
        del files["errors"]
    return {"best_f1": best, "plots": {k: str(v) for k, v in files.items()}}


def _batches(dataset: CocoDetection, count: int, batch_size: int) -> list[list[int]]:
    """Indices 0..count-1 grouped into batches of images with the same padded input size (less padding)."""
    def key(i: int) -> tuple[int, int]:
        h, w = dataset.image_size(i)
        return padded_size(h), padded_size(w)

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
    dataset = CocoDetection.from_folder(data_dir, split)
    if class_names is None:
        if model is not None:
            raise ValueError("class_names is required with a model")
        class_names = dataset.class_names
    cat_ids = class_mapping(class_names, dataset, source="the checkpoint")
    del category_ids  # the dataset's ids are authoritative for its own annotation file
    device = torch.device(device)
    count = len(dataset) if max_images is None else min(len(dataset), max(0, int(max_images)))
    timer = StageTimer()
    results: list[dict] = []
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    try:
        from rich.progress import Progress

        with Progress(transient=True, disable=not progress) as bar:
            # Shard whole batches (already grouped by input size) so that each rank pads as little as one process.
            batches = _batches(dataset, count, max(1, batch_size))[rank::world_size]
            task = bar.add_task(f"eval {split}", total=sum(map(len, batches)))
            for batch in batches:
                samples = [dataset[i] for i in batch]
                gt = [(s.boxes, s.labels) for s in samples] if oracle else None
                dets = detect_images(model, [s.image for s in samples], device=device, num_classes=len(class_names),
                                     scales=scales, flip=flip, params=params, oracle=oracle, gt=gt, timer=timer,
                                     oracle_gt_embeddings=oracle_gt_embeddings, amp=amp)
                for s, d in zip(samples, dets):
                    results.extend(to_coco_results(d, s.image_id, cat_ids))
                bar.advance(task, len(batch))
    finally:
        if model is not None:
            model.train(was_training)
    results = _gather_shards(results, timer, world_size)
    image_ids = [dataset.image_ids[i] for i in range(count)]
    metrics: dict[str, Any] | None = None
    if rank == 0:  # COCOeval (and the pictures) once, not once per process
        metrics = {m: -1.0 for m in METRICS}
        if count:
            ev = run_cocoeval(dataset.coco, results, image_ids)
            metrics = summary_metrics(ev)
            if plots_dir is not None:
                metrics.update(write_analysis(ev, dataset, plots_dir))
    metrics = _from_rank0(metrics, rank, world_size)
    metrics.update({"time_ms": timer.per_image_ms(), "images": count, "detections": len(results),
                    "split": split, "flip": bool(flip), "scales": [float(s) for s in scales], "oracle": oracle,
                    "oracle_embeddings": ("gt" if oracle_gt_embeddings else "trained") if oracle else None,
                    "amp": amp, "centre_check": bool(params.centre_check and _has_centre_head(model))})
    if results_path is not None and rank == 0:
        write_json(results_path, results)
    return metrics


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
    (1 without a checkpoint). flip None: the checkpoint's preset's test procedure (`preset_test_settings`: on;
    off for squeeze). Launched by torchrun, the images are sharded across the processes (module docstring);
    only rank 0 shows progress, claims `out` and writes files.

    metrics.json records the job (checkpoint, data, split and test-time settings): results of another job
    at `out` are not replaced unless `exist_ok`; the same job writes them again. While it runs, `out` is
    locked against a second process (`cornernet_cli.engine.rundir`)."""
    from cornernet_cli.engine.checkpoint import test_scales
    from cornernet_cli.engine.device import resolve_device
    from cornernet_cli.engine.onnx_runner import check_amp, fit_max_side, load_network, resolve_network
    from cornernet_cli.engine.precision import amp_dtype
    from cornernet_cli.engine.rundir import claim_output

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
        params = dataclasses.replace(params, max_side=fit_max_side(model, params.max_side))
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
    from rich.table import Table

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


__all__ = ["METRICS", "PLOT_FILES", "class_mapping", "coco_metrics", "evaluate", "evaluate_model", "metrics_tables",
           "run_cocoeval", "summary_line", "summary_metrics", "write_analysis"]
