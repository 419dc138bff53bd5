"""`cornernet demo`: the embedded default, end to end with no data to download.

1. generate the seeded synthetic shapes dataset (train + val) into OUT/data;
2. train the `small-fast` preset on it (CPU by default) into OUT/train;
3. evaluate the best checkpoint on the validation split (COCO AP with pycocotools) into OUT/eval;
4. run detection on a few validation images into OUT/detections, keeping the boxes above the evaluation's
   best-F1 score threshold and drawing on the images enlarged 4x (the shapes are 128-pixel images).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from cornernet_cli.config import DataConfig
from cornernet_cli.data.synthetic import write_synthetic_dataset
from cornernet_cli.detect import detect
from cornernet_cli.engine import train as engine_train
from cornernet_cli.engine.device import resolve_device
from cornernet_cli.engine.evaluate import evaluate
from cornernet_cli.engine.settings import TrainSettings, step_schedule, train_settings

# The demo's settings: small images so that a CPU trains the `small-fast` preset in minutes. The synthetic shapes
# do not overlap (max_iou 0) and training uses flips only (train and val come from one distribution); a cosine
# learning rate and weight averaging (EMA) make a short run converge. Measured (docs/recipes.md): AP50 0.91 on
# the val split (with flip) after 450 steps, under 5 minutes on 2 idle AVX2 cores. Data loading in the main
# process (workers 0) is faster here than one worker process competing for the two cores.
DEMO = dict(image_size=128, sizes=(20, 120), max_iou=0.0, num_train=1000, num_val=100, input_size=128,
            batch_size=8, iters=450, lr=2e-3, warmup_iters=50, grad_clip=10.0, augment=False, amp="off",
            workers=0, num_detect=4, preset="small-fast", lr_schedule="cosine", ema=0.999, draw_min_side=512)


@dataclass
class DemoResult:
    out_dir: Path
    data_dir: Path
    checkpoint: Path
    metrics: dict[str, Any]
    detections: list[Path] = field(default_factory=list)
    minutes: dict[str, float] = field(default_factory=dict)


def _same_synthetic_data(data_dir: Path, gen: dict, num_train: int, num_val: int) -> bool:
    """True when data_dir holds the synthetic train/val splits these settings would generate."""
    for split, count in (("train", num_train), ("val", num_val)):
        try:
            doc = json.loads((data_dir / "annotations" / f"{split}.json").read_text())
            info = doc["info"]
            same = (len(doc["images"]) == count and info.get("seed") == gen["seed"]
                    and info.get("image_size") == gen["image_size"]
                    and info.get("sizes") == [float(v) for v in gen["sizes"]]
                    and info.get("max_iou") == float(gen["max_iou"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if not same:
            return False
    return True


def _same_run(run_dir: Path, model_cfg, train_cfg) -> bool:
    """True when run_dir/config.json records this model and these training settings."""
    try:
        saved = json.loads((run_dir / "config.json").read_text())
        model = {k: v for k, v in json.loads(json.dumps(model_cfg.to_dict())).items() if k != "num_classes"}
        return (all(saved["model"].get(k) == v for k, v in model.items())  # the classes come from the data
                and saved["train"] == json.loads(json.dumps(dataclasses.asdict(train_cfg))))
    except (OSError, ValueError, KeyError, TypeError):
        return False


def demo_settings(data_dir: Path, *, cfg: Mapping[str, Any], seed: int, iters: int | None) -> TrainSettings:
    """The demo's training run (`train_settings` of cfg's preset): cfg's fixed step schedule (`iters` steps,
    default cfg["iters"]) and optimisation, its crop size at the paper's crop scales and test scale 1 (not
    chosen from the data), no centre head; with cfg["augment"] False flips only, as the synthetic train and
    val images come from one distribution."""
    steps = iters or cfg["iters"]
    crops = {"input_size": cfg["input_size"], "random_scales": DataConfig().random_scales, "test_scale": 1.0}
    if not cfg["augment"]:
        crops.update(random_scales=(1.0,), color_jitter=0.0, lighting=0.0)
    overrides = {**step_schedule(steps, warmup_iters=cfg["warmup_iters"]), **crops, "centre_head": False,
                 "seed": seed, **{k: cfg[k] for k in ("batch_size", "lr", "grad_clip", "workers", "amp",
                                                      "lr_schedule", "ema")}}
    return train_settings(data_dir=data_dir, preset=cfg["preset"], overrides=overrides)


def run_demo(out_dir: str | Path = "runs/demo", *, seed: int = 0, device: str = "cpu", iters: int | None = None,
             console: Console | None = None, **overrides) -> DemoResult:
    """Run the four steps above; reuses OUT/data when it is already there. Returns paths and metrics.

    `overrides` replace entries of DEMO (e.g. num_train=16 for a quick check); unknown names are an error.
    """
    unknown = set(overrides) - set(DEMO)
    if unknown:
        raise ValueError(f"unknown demo settings: {', '.join(sorted(unknown))}")
    cfg = {**DEMO, **overrides}
    resolve_device(device)  # an unavailable device fails before the data is generated
    console = console or Console(stderr=True)
    out = Path(out_dir)
    data_dir, run_dir = out / "data", out / "train"
    minutes: dict[str, float] = {}

    t0 = time.perf_counter()
    gen = dict(image_size=cfg["image_size"], seed=seed, sizes=tuple(cfg["sizes"]), max_iou=cfg["max_iou"])
    regenerated = not _same_synthetic_data(data_dir, gen, cfg["num_train"], cfg["num_val"])
    if not regenerated:
        console.print(f"[bold]1/4[/] reusing the synthetic dataset in {data_dir}")
    else:
        console.print(f"[bold]1/4[/] generating {cfg['num_train']} + {cfg['num_val']} synthetic images "
                      f"in {data_dir}")
        write_synthetic_dataset(data_dir, num_train=cfg["num_train"], num_val=cfg["num_val"], **gen)
    minutes["data"] = (time.perf_counter() - t0) / 60

    run = demo_settings(data_dir, cfg=cfg, seed=seed, iters=iters)
    console.print(f"[bold]2/4[/] training the {cfg['preset']} preset for {run.train.iters} steps on {device} "
                  f"into {run_dir}")
    t0 = time.perf_counter()
    # an interrupted demo continues, unless its data was just (re)generated or it was started with other
    # settings (e.g. by an older version of the demo): then it starts afresh
    resume = (not regenerated and (run_dir / "state.safetensors").is_file()
              and not (run_dir / "summary.json").is_file() and _same_run(run_dir, run.model, run.train))
    # the demo owns OUT: what it does not resume it deliberately replaces; it validates once, in step 3
    engine_train.train(data_dir=data_dir, out_dir=run_dir, model_cfg=run.model, data_cfg=run.data,
                       train_cfg=run.train, device=device, resume=resume, exist_ok=not resume, log_every=25,
                       save_every=200)
    minutes["train"] = (time.perf_counter() - t0) / 60
    checkpoint = run_dir / "best.safetensors"

    console.print(f"[bold]3/4[/] evaluating {checkpoint} on the validation split")
    t0 = time.perf_counter()
    metrics = evaluate(checkpoint=checkpoint, data_dir=data_dir, split="val", device=device, flip=True,
                       out=out / "eval" / "results.json", progress=False, exist_ok=True)
    minutes["eval"] = (time.perf_counter() - t0) / 60

    console.print(f"[bold]4/4[/] detecting objects in {cfg['num_detect']} validation images")
    t0 = time.perf_counter()
    images = sorted((data_dir / "images" / "val").glob("*.jpg"))[: cfg["num_detect"]]
    # The threshold that balances misses against false positives on the validation split (eval's best F1)
    # shows what the model really finds; detect's fixed default would draw low-scoring duplicates too.
    threshold = (metrics.get("best_f1") or {}).get("threshold")
    report = detect(images, checkpoint=checkpoint, out=out / "detections", device=device,
                    threshold=0.3 if threshold is None else threshold, draw_min_side=cfg["draw_min_side"],
                    exist_ok=True)
    minutes["detect"] = (time.perf_counter() - t0) / 60
    return DemoResult(out_dir=out, data_dir=data_dir, checkpoint=checkpoint, metrics=metrics,
                      detections=list(report.outputs), minutes=minutes)
